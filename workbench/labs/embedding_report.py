"""The geometry report of a file of paired embeddings, stored as a run so the dashboard can show it.

:func:`embedding_report` reads a ``.npz`` / ``.parquet`` of paired image/text embeddings (layouts and
checks in ``workbench.data.userdata``), measures its geometry (``workbench.metrics.geometry``) and retrieval
(``workbench.metrics.downstream.retrieval_recall``), and writes one run:

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
import torch

from workbench.data import step_generator
from workbench.data.multimodal import resolve_text_encoder
from workbench.data.userdata import check_int, load_paired_embeddings, save_paired_embeddings
from workbench.metrics.downstream import retrieval_recall
from workbench.metrics.geometry import gap_vector, geometry_report, singular_spectrum
from workbench.store.runs import Run, RunWriter, config_run_id, data_home, load_run, runs_root
from workbench.training.trainer import TrainConfig, Trainer

__all__ = [
    "embedding_report",
    "example_embeddings_path",
    "make_example_embeddings",
    "report_config",
    "resolve_embeddings_path",
    "subsample_rows",
]


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


# ---------------------------------------------------------------------------------------- example file

EXAMPLE_STEPS = 300


def example_embeddings_path(steps: int = EXAMPLE_STEPS, seed: int = 0, text_encoder: str = "auto") -> Path:
    """Where :func:`make_example_embeddings` writes: ``<data home>/examples/digits_captions-clip-...npz``."""
    encoder = resolve_text_encoder(text_encoder)
    return data_home() / "examples" / f"digits_captions-clip-{encoder}-{steps}steps-s{seed}.npz"


def make_example_embeddings(
    path=None, steps: int = EXAMPLE_STEPS, seed: int = 0, text_encoder: str = "auto", overwrite: bool = False
) -> Path:
    """An example file of paired embeddings, made offline: a small CLIP model on captioned digits.

    Trains a two-tower model (MLP towers, 64-d shared space, symmetric CLIP loss with a learnable
    temperature, batch 128, Adam) on the training split of ``digits_captions`` for ``steps`` steps, then
    writes the L2-normalised image and caption embeddings of all 1,797 digits, with their labels and
    canonical captions, as an ``.npz`` in the layout of :func:`load_paired_embeddings`. Takes a few
    seconds on a CPU (plus the one-off caption encoding). An existing file is reused unless
    ``overwrite``.

    Args:
        path: output file; default :func:`example_embeddings_path`.
        steps: training steps (>= 1).
        seed: model and caption seed (>= 0).
        text_encoder: "auto", "minilm" or "tokens" (see ``digits_captions``).
        overwrite: retrain and rewrite an existing file.

    Returns:
        The file's path.
    """
    check_int("steps", steps, 1)
    check_int("seed", seed, 0)
    if path is None:
        path = example_embeddings_path(steps, seed, text_encoder)
    path = Path(path).expanduser()
    if path.is_file() and not overwrite:
        return path
    tower = {"hidden": 128, "depth": 2, "out_dim": 64}
    config = TrainConfig.from_dict(dict(
        dataset="digits_captions",
        dataset_params={"text_encoder": text_encoder, "seed": seed},
        loss="clip",
        learn_scale=True,
        batch_size=128,
        steps=steps,
        seed=seed,
        device="cpu",
        image_tower=tower,
        text_tower=tower,
    ))
    trainer = Trainer(config)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small is fastest on one thread, and a busy CPU punishes more
    try:
        for step in range(steps):
            trainer.train_step(step)
        dataset = trainer.dataset
        batch = dataset.batch(torch.arange(len(dataset)), step_generator(seed, 0), augment=False)
        trainer.model.eval()
        with torch.no_grad():
            out = trainer.model(batch, {"img", "txt"})
    finally:
        torch.set_num_threads(threads)
    image = torch.nn.functional.normalize(out["img"], dim=1).numpy()
    text = torch.nn.functional.normalize(out["txt"], dim=1).numpy()
    captions = [row[0] for row in dataset.captions]
    return save_paired_embeddings(path, image, text, labels=dataset.labels, captions=captions)


def resolve_embeddings_path(value: str, name: str = "embeddings_path") -> Path:
    """The paired-embeddings file a notebook parameter names; ``""`` means the offline example.

    Args:
        value: a path to a ``.npz`` / ``.parquet`` file, or "" for :func:`make_example_embeddings`.
        name: the parameter's name, for error messages.

    Raises:
        ValueError: not a string, the file is missing, or its suffix is not .npz / .parquet (the
            message names the parameter and what it accepts).
    """
    if not isinstance(value, (str, Path)):
        raise ValueError(f"{name} must be a path string (or empty for the example), got {value!r}")
    if str(value).strip() == "":
        return make_example_embeddings()
    path = Path(value).expanduser()
    if path.suffix.lower() not in (".npz", ".parquet", ".pq"):
        raise ValueError(
            f"{name} must be a .npz or .parquet file (or empty for the example), got {str(value)!r}"
        )
    if not path.is_file():
        raise ValueError(
            f"{name} {str(value)!r}: no such file; give a .npz or .parquet of paired embeddings "
            "(keys image_emb, text_emb), or leave it empty for the example"
        )
    return path
