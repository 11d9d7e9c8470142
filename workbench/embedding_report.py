"""The geometry report of a file of paired embeddings, stored as a run so the dashboard can show it.

:func:`embedding_report` reads a ``.npz`` / ``.parquet`` of paired image/text embeddings (layouts and
checks in ``workbench.data.userdata``), measures its geometry (``workbench.geometry``) and retrieval
(``workbench.evaluate.retrieval_recall``), and writes one run:

* ``config.json``: ``kind="embeddings"``, the file's path, size and SHA-256, n, d and the settings;
* ``metrics.csv``: one row at step 0 with every scalar of the geometry report and the recalls;
* ``snapshots/step_00000000.npz``: ``a`` (image) and ``b`` (text) as L2-normalised float32 rows,
  ``ids`` (row numbers in the file), and ``labels`` / ``captions`` when the file has them; the same
  keys a training run's snapshots use;
* tables ``geometry`` (measure, value), ``per_dimension_gap`` (dimension, gap, abs_gap, rank; signed
  mean image minus mean text per dimension) and ``spectrum`` (index, image, text, joint: normalised
  singular values, NaN past each one's length);
* ``summary.json``: the scalars again, with n and d.

The run id is derived from the settings and the file's content hash, so reporting the same file twice
returns the stored run instead of recomputing it.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.data.userdata import load_paired_embeddings
from workbench.evaluate import retrieval_recall
from workbench.geometry import gap_vector, geometry_report, singular_spectrum
from workbench.runs import Run, RunWriter, config_run_id, load_run, runs_root

__all__ = ["embedding_report", "report_config", "subsample_rows"]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def report_config(path: str | Path, seed: int = 0, max_pairs: int = 2000) -> dict:
    """The config of the report run for ``path`` (which identifies the file by its content hash).

    Raises:
        ValueError: ``seed`` < 0 or ``max_pairs`` < 2.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if isinstance(max_pairs, bool) or not isinstance(max_pairs, int) or max_pairs < 2:
        raise ValueError(f"max_pairs must be an integer >= 2, got {max_pairs!r}")
    path = Path(path).expanduser().resolve()
    return {
        "kind": "embeddings",
        "source": str(path),
        "bytes": path.stat().st_size,
        "sha256": _sha256(path),
        "seed": seed,
        "max_pairs": max_pairs,
    }


def subsample_rows(
    n: int, max_points: int, seed: int = 0, name: str = "max_points", minimum: int = 2
) -> np.ndarray:
    """Sorted row indices of a seeded subset of at most ``max_points`` of ``n`` rows (all when n is smaller).

    Figures draw a subset so that the browser stays responsive; the measures use every row.

    Raises:
        ValueError: ``max_points`` < ``minimum`` (the message calls it ``name``) or ``seed`` < 0.
    """
    if isinstance(max_points, bool) or not isinstance(max_points, (int, np.integer)) or max_points < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {max_points!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=int(max_points), replace=False))


def _normalised(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def _spectrum_table(x: np.ndarray, y: np.ndarray) -> pd.DataFrame:
    spectra = singular_spectrum(x, y)
    length = max(len(v) for v in spectra.values())

    def padded(values: np.ndarray) -> np.ndarray:
        return np.concatenate([values, np.full(length - len(values), math.nan)])

    return pd.DataFrame(
        {
            "index": np.arange(length),
            "image": padded(spectra["x"]),
            "text": padded(spectra["y"]),
            "joint": padded(spectra["joint"]),
        }
    )


def embedding_report(
    path: str | Path,
    run_id: str | None = None,
    root: str | Path | None = None,
    seed: int = 0,
    max_pairs: int = 2000,
) -> Run:
    """Measure the geometry of a file of paired embeddings and store it as a run (layout above).

    Args:
        path: a ``.npz`` or ``.parquet`` file readable by ``load_paired_embeddings``.
        run_id: the run's id; default ``embeddings-<file stem>-<hash of the config>``.
        root: run-store root (default ``$WORKBENCH_HOME/runs`` or ``data/runs``).
        seed: seed of the subsample and split used by the O(n^2) and fitted measures.
        max_pairs: cap on the pairs used by those measures (see ``geometry_report``).

    Returns:
        The complete run (an existing complete run with the same config is returned as is).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file fails the checks of ``load_paired_embeddings``, or its image and text
            embeddings have different dimensions (the geometry needs one shared space).
    """
    data = load_paired_embeddings(path)
    a, b = data["image_emb"], data["text_emb"]
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"{data['path']}: image_emb has dimension {a.shape[1]} but text_emb has {b.shape[1]}; the "
            "geometry report needs both in one shared embedding space (the same dimension)"
        )
    n, d = a.shape
    config = {**report_config(path, seed=seed, max_pairs=max_pairs), "n": n, "dim": d}
    run_id = run_id or config_run_id(f"embeddings-{Path(path).stem}", config)
    existing = runs_root(root) / run_id
    if (existing / "status.json").exists():
        run = load_run(existing)
        if run.is_complete and run.config == config:
            return run
    report = geometry_report(a, b, seed=seed, max_pairs=max_pairs)
    report.update(retrieval_recall(a, b))
    gap = gap_vector(a, b)
    order = np.argsort(-np.abs(gap), kind="stable")
    rank = np.empty(d, dtype=np.int64)
    rank[order] = np.arange(d)
    snapshot = {"a": _normalised(a), "b": _normalised(b), "ids": np.arange(n)}
    if data["labels"] is not None:
        snapshot["labels"] = data["labels"]
    if data["captions"] is not None:
        snapshot["captions"] = np.asarray(data["captions"], dtype=str)
    with RunWriter.create(config, run_id=run_id, root=root) as writer:
        writer.log_metrics(0, report)
        writer.save_snapshot(0, snapshot)
        writer.save_table("geometry", pd.DataFrame({"measure": list(report), "value": list(report.values())}))
        writer.save_table(
            "per_dimension_gap",
            pd.DataFrame({"dimension": np.arange(d), "gap": gap, "abs_gap": np.abs(gap), "rank": rank}),
        )
        writer.save_table("spectrum", _spectrum_table(a, b))
        if data["class_names"] is not None:
            writer.write_json("class_names.json", data["class_names"])
        writer.finish({**report, "n": n, "dim": d})
    return load_run(writer.path)
