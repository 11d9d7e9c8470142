"""Paired-embedding files (``.npz``, ``.parquet``) sized from their headers before anything is decoded.

Both formats say what they hold ahead of their data: every ``.npy`` member of an ``.npz`` starts
with a header (shape, dtype) and a parquet file ends with a footer (rows, column types, value counts
per column chunk). :func:`open_embedding_file` parses only those, so the caller can check rows,
dimension, dtype and decoded size against its limits first, then decode just the arrays it needs
with :meth:`EmbeddingFile.read`. A file whose header lies (a tiny ``.npz`` declaring a 10^12-element
array) is then refused for its declared size instead of being allocated; a decoder that finds the
data disagreeing with the header fails with a ``ValueError``.

Every error is a ``ValueError`` whose message starts with the file's path.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# A paired-embedding .npz holds a handful of arrays; a central directory bigger than this is not one,
# and parsing it (one Python object per member) would itself cost memory.
MAX_MEMBERS = 256
MAX_CENTRAL_DIRECTORY = 1 << 20
# .npy headers are a few hundred bytes; numpy's own default limit.
MAX_HEADER = 10_000
# Decoded bytes counted for each Python string made from a row (object header + pointer).
PY_STRING_OVERHEAD = 64


@dataclass(frozen=True)
class Entry:
    """What a file's header says about one array.

    Attributes:
        shape: ``(n, d)`` for a 2-D array (a parquet list column or a set of wide columns), ``(n,)``
            for a column; for ``.npz`` whatever the header says.
        kind: ``"number"``, ``"string"``, ``"object"`` (would need pickle) or ``"other"``.
        dtype: The type as the file names it (for messages).
        nbytes: Bytes the decoded array takes (strings: an estimate including the Python objects).
    """

    shape: tuple[int, ...]
    kind: str
    dtype: str
    nbytes: int


class EmbeddingFile:
    """Headers of a paired-embedding file; :meth:`read` decodes one array."""

    def __init__(self, path: Path, keys: list[str], entries: dict[str, Entry], reader: Callable) -> None:
        self.path = path
        self.keys = keys
        self.entries = entries
        self._reader = reader

    def read(self, key: str) -> np.ndarray:
        """Decode ``key`` (rows x dims for the embeddings, a 1-D array for the others)."""
        try:
            return self._reader(key)
        except MemoryError:
            raise
        except _Refused as err:
            raise ValueError(f"{self.path}: {err}") from None
        except Exception as err:  # numpy's EOF, zlib.error, BadZipFile, pyarrow's errors ...
            raise ValueError(f"{self.path}: {key} cannot be decoded ({type(err).__name__}: {err})") from None


class _Refused(ValueError):
    """The data of an array contradicts its header or the layout (raised by the readers here)."""


def _kind(dtype: np.dtype) -> str:
    if dtype.hasobject:
        return "object"
    if dtype.kind in "biuf":
        return "number"
    if dtype.kind in "US":
        return "string"
    return "other"


# --------------------------------------------------------------------------------------------- npz


def _check_central_directory(path: Path) -> None:
    """Refuse a zip whose central directory is too big before zipfile parses all of it."""
    with open(path, "rb") as fh:
        end = zipfile._EndRecData(fh)  # the end-of-central-directory record, ZIP64 aware
    if end is None:
        raise ValueError(f"{path}: not a .npz file (no zip directory found)")
    members, size = end[zipfile._ECD_ENTRIES_TOTAL], end[zipfile._ECD_SIZE]
    if members > MAX_MEMBERS or size > MAX_CENTRAL_DIRECTORY:
        raise ValueError(
            f"{path}: the archive lists {members} members ({size} bytes of directory); a paired-embedding "
            f".npz holds a few arrays (at most {MAX_MEMBERS})"
        )


def _npy_header(fh) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fh, max_header_size=MAX_HEADER)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(fh, max_header_size=MAX_HEADER)
    return np.lib.format._read_array_header(fh, version, max_header_size=MAX_HEADER)


def _open_npz(path: Path, wanted: tuple[str, ...]) -> EmbeddingFile:
    try:
        _check_central_directory(path)
    except (ValueError, MemoryError):
        raise
    except Exception as err:  # OSError, struct.error from a damaged end record
        raise ValueError(f"{path}: not a readable .npz file ({type(err).__name__}: {err})") from None
    try:
        archive = zipfile.ZipFile(path)
    except MemoryError:
        raise
    except Exception as err:  # BadZipFile, OSError, EOFError, ValueError from a damaged directory
        raise ValueError(f"{path}: not a readable .npz file ({type(err).__name__}: {err})") from None
    with archive:
        names = archive.namelist()
    # The names np.load shows: a member "x.npy" is array "x"; an exact name wins, as in np.load.
    members: dict[str, str] = {}
    for name in names:
        members.setdefault(name.removesuffix(".npy"), name)
    for name in names:
        if not name.endswith(".npy"):
            members[name] = name
    keys = list(dict.fromkeys(name.removesuffix(".npy") for name in names))
    entries: dict[str, Entry] = {}
    for key in wanted:
        if key not in members:
            continue
        try:
            with zipfile.ZipFile(path) as archive, archive.open(members[key]) as fh:
                shape, _fortran, dtype = _npy_header(fh)
        except MemoryError:
            raise
        except Exception as err:  # a damaged header: ValueError, BadZipFile, zlib.error, EOFError ...
            raise ValueError(
                f"{path}: {key} is not a readable .npy array ({type(err).__name__}: {err})"
            ) from None
        count = math.prod(int(s) for s in shape)
        nbytes = count * dtype.itemsize + (count * PY_STRING_OVERHEAD if dtype.kind in "US" else 0)
        entries[key] = Entry(tuple(int(s) for s in shape), _kind(dtype), str(dtype), nbytes)

    def read(key: str) -> np.ndarray:
        with zipfile.ZipFile(path) as archive, archive.open(members[key]) as fh:
            array = np.lib.format.read_array(fh, allow_pickle=False, max_header_size=MAX_HEADER)
        if array.shape != entries[key].shape:
            raise ValueError(
                f"{key} decoded to shape {array.shape}, not the {entries[key].shape} of its header"
            )
        return array

    return EmbeddingFile(path, keys, entries, read)


# --------------------------------------------------------------------------------------------- parquet


def _arrow_kind(arrow_type) -> str:
    import pyarrow as pa

    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type) or pa.types.is_boolean(arrow_type):
        return "number"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "string"
    return "other"


def _width(arrow_type) -> int:
    """Bytes per decoded value of a numeric arrow type (8 for anything else: a safe upper bound)."""
    try:
        return max(1, arrow_type.bit_width // 8)
    except (ValueError, AttributeError):
        return 8


def _open_parquet(
    path: Path, wanted: tuple[str, ...], matrices: tuple[str, ...], aliases: dict[str, str]
) -> EmbeddingFile:
    import re

    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        schema = pf.schema_arrow
        meta = pf.metadata
    except MemoryError:
        raise
    except Exception as err:  # ArrowInvalid, OSError, thrift limits ...
        raise ValueError(f"{path}: not a readable parquet file ({type(err).__name__}: {err})") from None
    n = int(meta.num_rows)
    keys = [str(name) for name in schema.names]
    if len(set(keys)) != len(keys):
        raise ValueError(
            f"{path}: some columns share a name: {sorted({k for k in keys if keys.count(k) > 1})}"
        )
    # The column holding each wanted array: its own name, else its alias ("label" for "labels").
    source = {k: k if k in keys else aliases[k] for k in wanted if k in keys or aliases.get(k) in keys}
    # Values stored per top-level column (leaf value counts, nulls and list markers included).
    leaf_values: dict[str, int] = {}
    leaf_bytes: dict[str, int] = {}
    for i in range(meta.num_columns):
        leaf = meta.schema.column(i).path
        top = next((k for k in source.values() if leaf == k or leaf.startswith(f"{k}.")), None)
        if top is None:
            continue
        for r in range(meta.num_row_groups):
            chunk = meta.row_group(r).column(i)
            leaf_values[top] = leaf_values.get(top, 0) + int(chunk.num_values)
            leaf_bytes[top] = leaf_bytes.get(top, 0) + int(chunk.total_uncompressed_size)
    entries: dict[str, Entry] = {}
    columns: dict[str, list[str]] = {}
    for key in wanted:
        if key in source:
            name = source[key]
            arrow_type = schema.field(name).type
            is_list = (
                pa.types.is_list(arrow_type)
                or pa.types.is_large_list(arrow_type)
                or pa.types.is_fixed_size_list(arrow_type)
            )
            if key in matrices and is_list:
                value_type = arrow_type.value_type
                values = leaf_values.get(name, 0)
                if pa.types.is_fixed_size_list(arrow_type):
                    d = arrow_type.list_size
                else:
                    d = values // n if n else 0
                kind = _arrow_kind(value_type)
                # Decoded by arrow, plus a numpy copy when nulls or bools make one necessary.
                nbytes = 2 * max(values, n * d) * _width(value_type) + 8 * (n + 1)
                entries[key] = Entry((n, d), kind, f"list<{value_type}>", nbytes)
            else:
                kind = _arrow_kind(arrow_type) if not is_list else "other"
                per_row = _width(arrow_type) if kind == "number" else PY_STRING_OVERHEAD
                nbytes = n * per_row + (leaf_bytes.get(name, 0) if kind != "number" else 0)
                entries[key] = Entry((n,), kind, str(arrow_type), nbytes)
            columns[key] = [name]
        elif key in matrices:
            wide = {int(m.group(1)): name for name in keys if (m := re.fullmatch(rf"{key}_(\d+)", name))}
            if not wide:
                continue
            if sorted(wide) != list(range(len(wide))):
                gap = next(i for i in range(len(wide) + 1) if i not in wide)
                raise ValueError(f"{path}: wide columns {key}_0.. have a gap at {key}_{gap}")
            names = [wide[i] for i in range(len(wide))]
            kinds = {_arrow_kind(schema.field(name).type) for name in names}
            kind = "number" if kinds == {"number"} else "other"
            dtype = ", ".join(sorted({str(schema.field(name).type) for name in names}))
            # Each column decoded (float64 with nulls as NaN), then stacked into one array.
            entries[key] = Entry((n, len(names)), kind, dtype, 2 * 8 * n * len(names))
            columns[key] = names

    def read(key: str) -> np.ndarray:
        table = pf.read(columns=columns[key], use_threads=False)
        if key in matrices and columns[key] != [key]:
            return np.column_stack([_column_numbers(table.column(c)) for c in columns[key]])
        if key in matrices and len(entries[key].shape) == 2:
            return _list_matrix(table.column(key), key, n)
        column = table.column(columns[key][0]).combine_chunks()
        if pa.types.is_dictionary(column.type):
            column = column.dictionary_decode()
        return column.to_numpy(zero_copy_only=False)

    return EmbeddingFile(path, keys, entries, read)


def _column_numbers(column) -> np.ndarray:
    # Nulls become NaN, which the finiteness check then reports with its row.
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)


def _list_matrix(column, key: str, n: int) -> np.ndarray:
    """A list column as an (n, d) array; every row must hold the same number of values."""
    import pyarrow as pa

    array = column.combine_chunks()
    if array.null_count:
        row = int(np.flatnonzero(~np.asarray(array.is_valid().to_numpy(zero_copy_only=False)))[0])
        raise _Refused(f"{key} is empty (null) in row {row}")
    if pa.types.is_fixed_size_list(array.type):
        d = array.type.list_size
    else:
        offsets = np.asarray(array.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
        lengths = np.diff(offsets)
        d = int(lengths[0]) if len(lengths) else 0
        if (lengths != d).any():
            row = int(np.flatnonzero(lengths != d)[0])
            raise _Refused(f"{key} row {row} has {int(lengths[row])} values but row 0 has {d}")
    values = array.flatten()
    flat = values.to_numpy(zero_copy_only=False)
    if flat.dtype.kind == "b" or flat.dtype.hasobject:
        flat = np.asarray(flat, dtype=np.float64)
    return flat.reshape(n, d)


# --------------------------------------------------------------------------------------------- entry point


def open_embedding_file(
    path: Path,
    wanted: tuple[str, ...],
    matrices: tuple[str, ...] = (),
    aliases: dict[str, str] | None = None,
) -> EmbeddingFile:
    """Parse the headers of ``path`` (``.npz`` or ``.parquet``/``.pq``) for the arrays ``wanted``.

    Args:
        path: An existing file.
        wanted: Array names to size (missing ones are simply absent from ``entries``).
        matrices: The names among ``wanted`` that are 2-D: parquet reads them from a list column or
            from wide columns ``<name>_0, <name>_1, ...``.
        aliases: Parquet only: another column name to read an array from when its own is absent.

    Raises:
        ValueError: Unsupported suffix, or a file whose container or headers cannot be read.
    """
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _open_npz(path, wanted)
    if suffix in (".parquet", ".pq"):
        return _open_parquet(path, wanted, matrices, dict(aliases or {}))
    raise ValueError(f"{path}: unsupported file type {suffix!r}; use .npz or .parquet")
