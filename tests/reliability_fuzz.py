"""Fuzz the paired-embedding loader and the upload check under an address-space cap (a child process).

``tests/test_reliability_upload.py`` runs ``python tests/reliability_fuzz.py EXAMPLES``. After its
imports this process caps its own address space (``RLIMIT_AS``) at what it uses plus
:data:`HEADROOM`, then lets hypothesis throw small random files at
``workbench.data.userdata.load_paired_embeddings`` and ``app.common.validate_upload``; a file that
passes the upload check also goes through what the upload page computes (frozen PCA and the geometry
report). Each must end in a result or a ``ValueError``: anything else (a ``MemoryError`` above all)
fails the run with hypothesis's minimal example. Exit status 0 means every example behaved.

The files: well-formed archives with random shapes, dtypes, labels and captions; ``.npz`` members
whose headers declare huge shapes over a few bytes of data; parquet files with random column layouts;
valid files with random bytes flipped, cut off or inserted; plain random bytes.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import zipfile
from pathlib import Path

# Few threads, few malloc arenas: each would reserve address space of its own.
for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(name, "1")
os.environ.setdefault("MALLOC_ARENA_MAX", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from app.common import validate_upload  # noqa: E402
from workbench.data.userdata import load_paired_embeddings  # noqa: E402
from workbench.metrics.geometry import geometry_report  # noqa: E402
from workbench.viz.projection import fit_projection  # noqa: E402

#: Address space allowed on top of what the imports took.
HEADROOM = 1536 * 2**20
#: The loader's decoded-bytes limit here: every legitimate example fits well within the headroom.
MAX_BYTES = 256 * 2**20

NUMERIC = ["<f4", "<f8", "<f2", "<i4", "<i8", "|u1", "|b1"]
ODD = ["<c8", "|O", "<U3", "|S2", "<M8[s]", "|V4"]
LABELS = ["<i8", "<u4", "<f8", "<U4", "|S3", "|b1"]


def _address_space() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def _cap() -> int:
    import resource

    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    limit = _address_space() + HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return limit


# --------------------------------------------------------------------------------------------- files
def _npy(shape: tuple[int, ...], descr: str, payload: bytes) -> bytes:
    """An .npy member whose header declares ``shape`` and ``descr``, followed by ``payload`` only."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue() + payload


def _zip(members: dict[str, bytes], compress: bool) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@st.composite
def arrays(draw, dtypes: list[str], ndim: int | None = None, rows: int | None = None) -> np.ndarray:
    dtype = draw(st.sampled_from(dtypes))
    n = rows if rows is not None else draw(st.integers(0, 6))
    shape = (n, draw(st.integers(0, 5))) if (ndim or draw(st.sampled_from([1, 2, 2, 2]))) == 2 else (n,)
    count = int(np.prod(shape))
    if dtype == "|O":
        return np.array([draw(st.text(max_size=3)) for _ in range(count)], dtype=object).reshape(shape)
    if dtype in ("<U3", "<U4", "|S2", "|S3"):
        texts = [draw(st.text(alphabet="abc\u00e9", max_size=3)) for _ in range(count)]
        if dtype.startswith("|S"):
            texts = [t.encode("utf-8")[:2] for t in texts]
        return np.array(texts, dtype=dtype).reshape(shape)
    if dtype == "<M8[s]":
        return np.zeros(shape, dtype=dtype)
    if dtype == "|V4":
        return np.zeros(shape, dtype="V4")
    values = draw(
        st.lists(
            st.one_of(
                st.floats(-1e6, 1e6),
                st.sampled_from([0.0, np.nan, np.inf, -np.inf, 1e300, 2.0**62, -3.0, 1e9]),
            ),
            min_size=count,
            max_size=count,
        )
    )
    with np.errstate(all="ignore"):
        return np.array(values, dtype=np.float64).astype(dtype).reshape(shape)


@st.composite
def npz_files(draw) -> tuple[str, bytes]:
    n = draw(st.integers(0, 6))
    members: dict[str, bytes] = {}
    for key in draw(
        st.lists(st.sampled_from(["image_emb", "text_emb", "labels", "captions", "x"]), unique=True)
    ):
        kind = draw(st.sampled_from(["array", "array", "array", "lie"]))
        if kind == "lie":  # the header promises far more than the file holds
            shape = tuple(draw(st.lists(st.integers(0, 2**40), min_size=1, max_size=3)))
            descr = draw(st.sampled_from([*NUMERIC, "<U100000", "|O"]))
            members[f"{key}.npy"] = _npy(shape, descr, draw(st.binary(max_size=64)))
            continue
        if key in ("image_emb", "text_emb"):
            value = draw(arrays(NUMERIC + ODD, ndim=draw(st.sampled_from([2, 2, 2, 1])), rows=n))
        elif key == "labels":
            value = draw(arrays(LABELS, ndim=1, rows=draw(st.sampled_from([n, n, n + 1]))))
        else:
            value = draw(arrays(["<U4", "<i4", "|O"], ndim=1, rows=n))
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, value, allow_pickle=True)
        members[f"{key}.npy"] = buffer.getvalue()
    return "f.npz", _zip(members, draw(st.booleans()))


@st.composite
def parquet_files(draw) -> tuple[str, bytes]:
    n = draw(st.integers(0, 6))
    columns: dict[str, pa.Array] = {}
    for key in ("image_emb", "text_emb"):
        layout = draw(st.sampled_from(["list", "list", "wide", "fixed", "flat", "none", "strings"]))
        d = draw(st.integers(0, 4))
        lengths = [draw(st.sampled_from([d, d, d, d + 1])) for _ in range(n)]
        values = [
            [draw(st.sampled_from([0.5, -1.0, 3.0, np.nan, np.inf])) for _ in range(k)] for k in lengths
        ]
        if layout == "list":
            nulls = [draw(st.booleans()) and draw(st.booleans()) for _ in range(n)]
            columns[key] = pa.array([None if z else v for v, z in zip(values, nulls, strict=True)])
        elif layout == "fixed" and n:
            flat = pa.array(np.zeros(n * d, dtype=np.float32))
            columns[key] = pa.FixedSizeListArray.from_arrays(flat, d) if d else pa.array([[]] * n)
        elif layout == "wide":
            skip = draw(st.sampled_from([None, None, 0, 1]))
            for j in range(d):
                if j != skip:
                    columns[f"{key}_{j}"] = pa.array(np.full(n, float(j)))
        elif layout == "flat":
            columns[key] = pa.array(np.ones(n))
        elif layout == "strings":
            columns[key] = pa.array(["a"] * n)
    if draw(st.booleans()):
        kind = draw(st.sampled_from(["int", "huge", "str", "null", "float", "dict"]))
        name = draw(st.sampled_from(["labels", "label"]))
        data = {
            "int": lambda: pa.array(np.arange(n) % 2),
            "huge": lambda: pa.array([10**9 * (i + 1) for i in range(n)]),
            "str": lambda: pa.array(["cat", "dog"] * (n // 2) + ["eel"] * (n % 2)),
            "null": lambda: pa.array([None] + ["a"] * (n - 1)) if n else pa.array([], pa.string()),
            "float": lambda: pa.array([0.5] * n),
            "dict": lambda: pa.array(["x", "y"] * (n // 2) + ["x"] * (n % 2)).dictionary_encode(),
        }[kind]()
        columns[name] = data
    if draw(st.booleans()):
        columns[draw(st.sampled_from(["captions", "caption"]))] = pa.array([f"c{i}" for i in range(n)])
    columns = {k: v for k, v in columns.items() if len(v) == n}
    buffer = io.BytesIO()
    table = pa.table(columns) if columns else pa.table({"other": pa.array(np.zeros(n))})
    pq.write_table(table, buffer, compression=draw(st.sampled_from(["none", "snappy", "zstd"])))
    return "f.parquet", buffer.getvalue()


@st.composite
def mutated(draw, source) -> tuple[str, bytes]:
    name, data = draw(source)
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if action == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del data[at:]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
    return name, bytes(data)


@st.composite
def good_files(draw) -> tuple[str, bytes]:
    """Files the loader should accept: n >= 2 pairs of finite, non-zero rows, optional labels/captions."""
    n, d = draw(st.integers(2, 8)), draw(st.integers(1, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    image, text = rng.normal(size=(n, d)) + 0.1, rng.normal(size=(n, d)) - 0.1
    labels = draw(
        st.sampled_from(
            [
                None,
                np.arange(n) % 3,
                np.array([10**9, 2 * 10**7] * n)[:n],  # huge integer labels
                np.array(["cat", "dog"] * n)[:n],
            ]
        )
    )
    captions = draw(st.sampled_from([None, [f"pair {i}" for i in range(n)]]))
    if draw(st.booleans()):
        arrays = {"image_emb": image.astype(draw(st.sampled_from(["<f4", "<f8", "<f2"]))), "text_emb": text}
        if labels is not None:
            arrays["labels"] = labels
        if captions is not None:
            arrays["captions"] = np.array(captions)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays) if draw(st.booleans()) else np.savez(buffer, **arrays)
        return "f.npz", buffer.getvalue()
    frame = pd.DataFrame({"image_emb": list(image), "text_emb": list(text)})
    if labels is not None:
        frame["labels"] = labels
    if captions is not None:
        frame["caption"] = captions
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    return "f.parquet", buffer.getvalue()


files = st.one_of(
    good_files(),
    npz_files(),
    parquet_files(),
    mutated(good_files()),
    mutated(npz_files()),
    mutated(parquet_files()),
    st.tuples(st.sampled_from(["f.npz", "f.parquet"]), st.binary(max_size=256)),
)


# --------------------------------------------------------------------------------------------- checks
def _exercise(folder: Path, name: str, data: bytes) -> str:
    path = folder / name
    path.write_bytes(data)
    try:
        loaded = load_paired_embeddings(path, max_bytes=MAX_BYTES)
    except ValueError:
        pass
    else:
        assert loaded["image_emb"].dtype == np.float32 and np.isfinite(loaded["image_emb"]).all()
        if loaded["labels"] is not None:
            assert len(loaded["class_names"]) == len(np.unique(loaded["labels"])) <= len(loaded["labels"])
    try:
        upload = validate_upload(name, data)
    except ValueError as err:
        assert str(err).startswith(name), err
        return "refused"
    arrays = upload["arrays"]
    fit_projection([arrays], [0], "frozen_pca", 2)
    geometry_report(arrays["a"], arrays["b"])
    return "accepted"


def main(examples: int) -> int:
    limit = _cap()
    outcomes: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="workbench-fuzz-") as folder:

        @settings(
            max_examples=examples,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(files)
        def check(case: tuple[str, bytes]) -> None:
            outcome = _exercise(Path(folder), *case)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1

        check()
    print(f"fuzz: {examples} examples under an address-space cap of {limit / 2**30:.2f} GiB: {outcomes}")
    return 0


def bounded_large_inputs() -> None:
    """Inputs whose O(d^2) / O(n^2) work would blow the cap: a d = 150,000 projection and geometry."""
    _cap()
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 150_000)), rng.normal(size=(3, 150_000))  # d x d would be 180 GB
    projection = fit_projection([{"a": a, "b": b}], [0], "frozen_pca", 2)
    assert projection.components.shape == (1, 2, 150_000)
    assert np.isfinite(geometry_report(a, b)["effective_rank"])
    many = rng.normal(size=(12000, 8)).astype(np.float32)  # n x n: 1.2 GB a matrix, unless chunked
    assert np.isfinite(geometry_report(many, many + 0.1, max_pairs=12000)["uniformity"])
    print("bounded: ok")


if __name__ == "__main__":
    if sys.argv[1] == "bounded":
        bounded_large_inputs()
        raise SystemExit(0)
    raise SystemExit(main(int(sys.argv[1])))
