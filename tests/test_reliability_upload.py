"""Bounded memory for any uploaded or user file: sized before decoding, labels through np.unique, fuzzed.

The fuzz and the O(d^2)/O(n^2) checks run in a child process whose address space is capped
(``tests/reliability_fuzz.py``): a path that allocated what a file's header declares, or a d x d
covariance, would die there with a MemoryError and fail the test.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from workbench.data.userdata import MAX_DIM, load_paired_embeddings, user_embeddings

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
from app.binding import exposure, is_loopback  # noqa: E402
from app.common import MAX_UPLOAD_ROWS, validate_upload  # noqa: E402

FUZZ = REPO / "tests" / "reliability_fuzz.py"


def _npy(shape: tuple[int, ...], descr: str = "<f4", payload: bytes = b"") -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue() + payload


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _pairs(n: int = 50, d: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, d)).astype(np.float32), rng.normal(size=(n, d)).astype(np.float32)


# --------------------------------------------------------------------------------------------- labels
def test_a_huge_integer_label_costs_nothing(tmp_path):
    x, y = _pairs()
    labels = np.zeros(50, dtype=np.int64)
    labels[3], labels[7] = 10**9, 2 * 10**7
    path = tmp_path / "labels.npz"
    np.savez_compressed(path, image_emb=x, text_emb=y, labels=labels)
    tracemalloc.start()
    data = load_paired_embeddings(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2 * 2**20  # was 12.6 GB (one class name per integer up to the largest label)
    assert data["class_names"] == ["0", "20000000", "1000000000"]
    assert data["labels"][[0, 3, 7]].tolist() == [0, 2, 1]
    dataset = user_embeddings(path)
    assert dataset.class_names == data["class_names"] and dataset.labels.max() == 2


def test_labels_are_indices_into_their_sorted_distinct_values(tmp_path):
    x, y = _pairs(6, 3)
    for labels, names, index in [
        (np.array([7, 3, 3, 7, 11, 3]), ["3", "7", "11"], [1, 0, 0, 1, 2, 0]),
        (np.array([b"b", b"a", b"b", b"c", b"a", b"a"]), ["a", "b", "c"], [1, 0, 1, 2, 0, 0]),
        (np.array([2.0, 0.0, 2.0, 0.0, 2.0, 0.0]), ["0", "2"], [1, 0, 1, 0, 1, 0]),
    ]:
        np.savez(tmp_path / "l.npz", image_emb=x, text_emb=y, labels=labels)
        data = load_paired_embeddings(tmp_path / "l.npz")
        assert data["class_names"] == names and data["labels"].tolist() == index
    frame = pd.DataFrame(
        {"image_emb": list(x), "text_emb": list(y), "labels": ["a", None, "b", "a", "a", "b"]}
    )
    frame.to_parquet(tmp_path / "null.parquet")
    with pytest.raises(ValueError, match=r"labels is empty \(null\) in row 1"):
        load_paired_embeddings(tmp_path / "null.parquet")


# --------------------------------------------------------------------------------------------- sizing
@pytest.mark.parametrize(
    ("members", "message"),
    [
        # Headers declaring far more than the file holds: refused for what they declare.
        ({"image_emb.npy": _npy((10**6, 10**4)), "text_emb.npy": _npy((10**6, 10**4))}, "max_bytes"),
        ({"image_emb.npy": _npy((3, 10**6)), "text_emb.npy": _npy((3, 4))}, r"d = 1000000 .*max_dim"),
        ({"image_emb.npy": _npy((2**40, 2)), "text_emb.npy": _npy((2**40, 2))}, "max_bytes"),
        ({"image_emb.npy": _npy((4, 2), "|O"), "text_emb.npy": _npy((4, 2))}, "pickle"),
        ({"image_emb.npy": _npy((4, 2), "<c8"), "text_emb.npy": _npy((4, 2))}, "must hold numbers"),
        (
            {
                "image_emb.npy": _npy((40, 2)),
                "text_emb.npy": _npy((40, 2)),
                "labels.npy": _npy((40,), "<U99999999"),  # 16 GB of 40 strings
            },
            "max_bytes",
        ),
        (
            {"image_emb.npy": _npy((4, 2)), "text_emb.npy": _npy((4, 2), payload=b"\0" * 8)},
            "cannot be decoded",
        ),
        ({f"m{i}.npy": b"" for i in range(300)}, "at most 256"),
    ],
)
def test_npz_headers_are_checked_before_decoding(tmp_path, members, message):
    path = tmp_path / "lie.npz"
    path.write_bytes(_zip(members))
    tracemalloc.start()
    with pytest.raises(ValueError, match=message) as info:
        load_paired_embeddings(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert str(info.value).startswith(str(path)) and peak < 8 * 2**20


def test_a_parquet_file_is_sized_from_its_footer(tmp_path):
    d = MAX_DIM + 1
    column = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(3 * d, dtype=np.float32)), d)
    table = pa.table({"image_emb": column.cast(pa.list_(pa.float32())), "text_emb": column})
    pq.write_table(table, tmp_path / "wide.parquet", compression="zstd")
    assert (tmp_path / "wide.parquet").stat().st_size < 100_000
    with pytest.raises(ValueError, match=rf"image_emb has d = {d} columns, over the limit of {MAX_DIM}"):
        load_paired_embeddings(tmp_path / "wide.parquet")
    assert load_paired_embeddings(tmp_path / "wide.parquet", max_dim=d)["image_emb"].shape == (3, d)
    with pytest.raises(ValueError, match=r"decoding it needs about .* over the limit of 1\.0 MB"):
        load_paired_embeddings(tmp_path / "wide.parquet", max_dim=d, max_bytes=2**20)
    x, y = _pairs(60, 2)
    pd.DataFrame({"image_emb": list(x), "text_emb": list(y)}).to_parquet(tmp_path / "rows.parquet")
    with pytest.raises(ValueError, match="60 rows is over the limit of 10"):
        load_paired_embeddings(tmp_path / "rows.parquet", max_rows=10)
    ragged = pd.DataFrame({"image_emb": [[1.0, 2.0], [1.0], [3.0, 4.0]], "text_emb": [[1.0]] * 3})
    ragged.to_parquet(tmp_path / "ragged.parquet")
    with pytest.raises(ValueError, match="image_emb row 1 has 1 values but row 0 has 2"):
        load_paired_embeddings(tmp_path / "ragged.parquet")
    with pytest.raises(ValueError, match="max_dim must be >= 1"):
        load_paired_embeddings(tmp_path / "rows.parquet", max_dim=0)


def test_uploads_have_tighter_limits_checked_before_decoding():
    with pytest.raises(ValueError, match=r"^big\.npz: decoding it needs about 3\.0 GB"):
        validate_upload(
            "big.npz", _zip({"image_emb.npy": _npy((20000, 20000)), "text_emb.npy": _npy((20000, 10))})
        )
    many = MAX_UPLOAD_ROWS + 1
    with pytest.raises(ValueError, match=rf"^rows\.npz: {many} rows is over the limit of {MAX_UPLOAD_ROWS}"):
        validate_upload("rows.npz", _zip({"image_emb.npy": _npy((many, 2)), "text_emb.npy": _npy((many, 2))}))
    huge_d = {"image_emb.npy": _npy((3, 5_000_000)), "text_emb.npy": _npy((3, 5_000_000))}
    with pytest.raises(ValueError, match=r"^d\.npz: image_emb has d = 5000000 columns"):
        validate_upload("d.npz", _zip(huge_d))


# --------------------------------------------------------------------------------------------- fuzz
def _child(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, str(FUZZ), *args], env=env, capture_output=True, text=True, timeout=900
    )


def test_fuzzed_files_end_in_a_result_or_a_value_error_under_a_memory_cap():
    done = _child("200")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    assert "fuzz: 200 examples" in done.stdout and "'accepted'" in done.stdout and "'refused'" in done.stdout


def test_large_d_and_large_n_paths_stay_within_a_memory_cap():
    done = _child("bounded")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    assert "bounded: ok" in done.stdout


# --------------------------------------------------------------------------------------------- binding
def test_pages_are_only_served_on_this_machine():
    assert (
        is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("[::1]")
    )
    assert not is_loopback("0.0.0.0") and not is_loopback("") and not is_loopback(None)
    assert not is_loopback("192.168.1.4") and not is_loopback("example.org")
    assert exposure("127.0.0.1", None, public=False) is None
    assert "every network interface" in exposure(None, None, public=False)
    assert "address 0.0.0.0" in exposure("0.0.0.0", None, public=False)
    assert "from 10.0.0.7" in exposure("127.0.0.1", "10.0.0.7", public=False)
    assert exposure("0.0.0.0", "10.0.0.7", public=True) is None
    assert exposure("localhost", object(), public=False) is None  # AppTest's stand-in client address
