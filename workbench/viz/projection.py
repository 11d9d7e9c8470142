"""Low-dimensional projections of a run's snapshots, cached on disk inside the run folder.

A snapshot holds the probe embeddings of a run at one step (``a`` images, ``b`` texts, ``a_aug``
augmented images for two-tower runs; rows paired, same probe rows at every step). This module maps
them to 2-D or 3-D for plotting:

* ``"pca"``: one PCA per checkpoint. Component signs are aligned with the previous checkpoint so
  the picture does not flip from one step to the next, but the axes still differ between steps.
* ``"frozen_pca"``: one PCA basis for every checkpoint, fitted on all selected snapshots together
  (``fit_on="all"``) or on the last one (``fit_on="last"``). Points move smoothly across steps and
  distances are comparable between steps; any other vector of the embedding space (a centroid, a
  bridge path) projects exactly with :meth:`Projection.place`.
* ``"umap"``: one UMAP per checkpoint (umap-learn, cosine metric).
* ``"aligned_umap"``: umap-learn's ``AlignedUMAP`` over the checkpoints with the identity relation
  between the rows of consecutive snapshots, so points move smoothly.

Rows are L2-normalised before fitting (the geometry measures are defined on the unit sphere). Points
that were not fitted are placed exactly by the PCA bases, and for UMAP by inverse-distance weighting of
their ``k`` nearest fitted points (cosine distance), an approximation documented on
:meth:`Projection.place`.

:func:`run_projection` caches each result in ``<run>/cache/projections/<key>.npz`` (written
atomically). The key hashes the method, the dims, the arrays and steps projected, the seed, the
parameters and the size and modification time of every snapshot file used, so a rewritten snapshot
invalidates its projections. :func:`snapshot_geometry` caches the geometry measures of snapshots
the same way, for runs whose trainer did not log them.

>>> run = load_run("ablation-digits_captions-bridge-s0")            # doctest: +SKIP
>>> proj = run_projection(run, method="frozen_pca", dims=2)         # doctest: +SKIP
>>> proj.at(proj.steps[-1])["a"].shape                              # doctest: +SKIP
(449, 2)
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from workbench.metrics.gap import unit_rows
from workbench.metrics.geometry import geometry_report
from workbench.store.runs import Run, _atomic_write

__all__ = [
    "CACHE_VERSION",
    "METHODS",
    "Projection",
    "clear_cache",
    "fit_projection",
    "load_snapshots",
    "normalise_rows",
    "projection_cache_path",
    "run_projection",
    "snapshot_geometry",
]

METHODS = ("pca", "frozen_pca", "umap", "aligned_umap")
FIT_ON = ("all", "last")
#: Bumped whenever the cached content changes meaning, so old cache files are ignored.
CACHE_VERSION = 1
DEFAULT_KEYS = ("a", "b")
# Neighbours used to place points that UMAP did not see (see Projection.place).
PLACE_NEIGHBOURS = 10


# --------------------------------------------------------------------------------------------- helpers
def normalise_rows(z: np.ndarray, name: str = "z") -> np.ndarray:
    """L2-normalise the rows of a finite 2-D array (float32 result); see ``metrics.gap.unit_rows``."""
    return unit_rows(z, name).astype(np.float32)


def _check_args(method: str, dims: int, fit_on: str, keys: Sequence[str]) -> tuple[str, ...]:
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if isinstance(dims, bool) or dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims!r}")
    if fit_on not in FIT_ON:
        raise ValueError(f"fit_on must be one of {', '.join(FIT_ON)}; got {fit_on!r}")
    keys = tuple(keys)
    if not keys or len(set(keys)) != len(keys) or not all(isinstance(k, str) and k for k in keys):
        raise ValueError(f"keys must be distinct non-empty array names, got {keys!r}")
    return keys


def _stack(snapshot: Mapping[str, np.ndarray], keys: tuple[str, ...], step: int) -> tuple[np.ndarray, int]:
    """Rows of ``keys`` stacked in order, normalised; also the rows per key."""
    missing = [k for k in keys if k not in snapshot]
    if missing:
        raise ValueError(f"snapshot at step {step} lacks array(s) {missing}; it has {sorted(snapshot)}")
    shapes = {k: np.shape(snapshot[k]) for k in keys}
    if len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 2:
        raise ValueError(f"arrays {list(keys)} at step {step} must be 2-D with one shape, got {shapes}")
    rows = shapes[keys[0]][0]
    return np.concatenate([normalise_rows(snapshot[k], f"{k} (step {step})") for k in keys]), rows


# --------------------------------------------------------------------------------------------- result
@dataclass(frozen=True)
class Projection:
    """Projected coordinates of several arrays at several checkpoints.

    Attributes:
        method: One of :data:`METHODS`.
        dims: 2 or 3.
        steps: The checkpoints, ascending.
        keys: The projected arrays, e.g. ``("a", "b")``.
        coords: ``(len(steps), len(keys) * n, dims)`` float32: at each step the rows of ``keys[0]``,
            then those of ``keys[1]``, ...
        n: Rows per array.
        mean: PCA methods: ``(len(steps), d)`` centre of each step's basis; None for UMAP.
        components: PCA methods: ``(len(steps), dims, d)`` orthonormal rows; None for UMAP.
        explained: PCA methods: ``(len(steps), dims)`` explained-variance ratios; None for UMAP.
    """

    method: str
    dims: int
    steps: tuple[int, ...]
    keys: tuple[str, ...]
    coords: np.ndarray
    n: int
    mean: np.ndarray | None = None
    components: np.ndarray | None = None
    explained: np.ndarray | None = None

    def index(self, step: int) -> int:
        """Position of ``step`` in :attr:`steps`.

        Raises:
            ValueError: ``step`` was not projected; the message lists the projected steps.
        """
        try:
            return self.steps.index(int(step))
        except ValueError:
            raise ValueError(f"step {step} was not projected; projected steps: {list(self.steps)}") from None

    def at(self, step: int) -> dict[str, np.ndarray]:
        """``{key: (n, dims)}`` coordinates at ``step``."""
        block = self.coords[self.index(step)]
        return {key: block[i * self.n : (i + 1) * self.n] for i, key in enumerate(self.keys)}

    def subset(self, keys: Sequence[str]) -> Projection:
        """The same fit restricted to some of its arrays (e.g. a UMAP fitted with ``a_aug``, drawn
        without it): coordinates are not recomputed, so every page shares one fit.

        Raises:
            ValueError: A key that was not projected.
        """
        keys = tuple(keys)
        missing = [k for k in keys if k not in self.keys]
        if missing or not keys:
            raise ValueError(f"keys must be a non-empty subset of {list(self.keys)}, got {list(keys)}")
        if keys == self.keys:
            return self
        where = {k: self.keys.index(k) * self.n for k in keys}
        blocks = [self.coords[:, where[k] : where[k] + self.n] for k in keys]
        return Projection(
            self.method, self.dims, self.steps, keys, np.concatenate(blocks, axis=1), self.n,
            self.mean, self.components, self.explained,
        )  # fmt: skip

    def bounds(self, pad: float = 0.05) -> np.ndarray:
        """``(dims, 2)`` [low, high] over every step, padded by ``pad`` of the range: fixed plot axes."""
        low, high = self.coords.min(axis=(0, 1)), self.coords.max(axis=(0, 1))
        span = np.maximum(high - low, 1e-9)
        return np.stack([low - pad * span, high + pad * span], axis=1)

    def place(self, step: int, points: np.ndarray, fitted: np.ndarray | None = None) -> np.ndarray:
        """Map other vectors of the embedding space into this projection at ``step``.

        PCA methods project exactly: ``(points - mean) @ components.T`` (points are NOT normalised,
        so a centroid of unit vectors lands on the centroid of the projected points). UMAP has no
        stored model: a point is placed at the inverse-cosine-distance-weighted mean of the projected
        positions of its :data:`PLACE_NEIGHBOURS` nearest fitted rows (the way umap-learn initialises
        its own ``transform``), which keeps a path between two fitted points between their positions.

        Args:
            step: A projected step.
            points: ``(m, d)`` vectors, or ``(..., d)`` (the leading shape is kept).
            fitted: UMAP only: the ``(len(keys) * n, d)`` rows that were fitted at ``step`` (the
                stacked snapshot arrays, as from ``np.concatenate([snap[k] for k in keys])``).

        Returns:
            ``(..., dims)`` float32 coordinates.

        Raises:
            ValueError: Unknown step, wrong dimension, or UMAP without ``fitted``.
        """
        i = self.index(step)
        pts = np.asarray(points, dtype=np.float64)
        lead = pts.shape[:-1]
        if pts.ndim < 1:
            raise ValueError("points must have shape (..., d), got a scalar")
        flat = pts.reshape(-1, pts.shape[-1])
        if self.components is not None and self.mean is not None:
            if flat.shape[-1] != self.mean.shape[1]:
                raise ValueError(f"points must have d={self.mean.shape[1]} columns, got {flat.shape[-1]}")
            out = (flat - self.mean[i]) @ self.components[i].T
            return out.reshape(*lead, self.dims).astype(np.float32)
        if fitted is None:
            raise ValueError(f"method {self.method!r} needs the fitted rows (fitted=...) to place points")
        ref = normalise_rows(fitted, "fitted")
        if ref.shape[0] != self.coords.shape[1]:
            raise ValueError(f"fitted must have {self.coords.shape[1]} rows, got {ref.shape[0]}")
        if flat.shape[-1] != ref.shape[1]:
            raise ValueError(f"points must have d={ref.shape[1]} columns, got {flat.shape[-1]}")
        out = np.empty((flat.shape[0], self.dims))
        k = min(PLACE_NEIGHBOURS, ref.shape[0])
        norms = np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)
        for start in range(0, flat.shape[0], 4096):  # bounded memory for many path points
            sims = (flat[start : start + 4096] / norms[start : start + 4096]) @ ref.T
            near = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            dist = 1.0 - np.take_along_axis(sims, near, axis=1)
            weight = 1.0 / np.maximum(dist, 1e-6)
            weight /= weight.sum(axis=1, keepdims=True)
            out[start : start + 4096] = np.einsum("mk,mkc->mc", weight, self.coords[i][near])
        return out.reshape(*lead, self.dims).astype(np.float32)

    # -- (de)serialisation for the cache
    def _arrays(self) -> dict[str, np.ndarray]:
        arrays = {
            "coords": self.coords,
            "steps": np.asarray(self.steps, dtype=np.int64),
            "keys": np.asarray(self.keys, dtype=str),
            "meta": np.asarray(json.dumps({"method": self.method, "dims": self.dims, "n": self.n})),
        }
        for name in ("mean", "components", "explained"):
            value = getattr(self, name)
            if value is not None:
                arrays[name] = value
        return arrays

    @classmethod
    def _from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> Projection:
        meta = json.loads(str(arrays["meta"]))
        return cls(
            method=meta["method"],
            dims=int(meta["dims"]),
            steps=tuple(int(s) for s in arrays["steps"]),
            keys=tuple(str(k) for k in arrays["keys"]),
            coords=arrays["coords"],
            n=int(meta["n"]),
            mean=arrays.get("mean"),
            components=arrays.get("components"),
            explained=arrays.get("explained"),
        )


# --------------------------------------------------------------------------------------------- fitting
#: Largest d whose d x d covariance is formed; past it PCA works from the n x n Gram matrix or by
#: subspace iteration, so memory stays linear in the data (an uploaded d = 65,536 would need 34 GB).
DENSE_PCA_MAX = 2048
# Rows per block when the centred data is multiplied without being materialised.
_ROW_BLOCK = 4096


def _signed(comps: np.ndarray, ratio: np.ndarray, dims: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    if comps.shape[0] < dims:  # fewer axes than dims: pad with zero axes so the coordinates keep their shape
        comps = np.vstack([comps, np.zeros((dims - comps.shape[0], d))])
        ratio = np.concatenate([ratio, np.zeros(dims - ratio.shape[0])])
    # Deterministic signs: the largest-magnitude loading of each axis is positive.
    signs = np.sign(comps[np.arange(dims), np.abs(comps).argmax(axis=1)])
    signs[signs == 0] = 1.0
    return comps * signs[:, None], ratio


def _pca_basis(cov: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``dims`` eigenvectors (rows) of a covariance and their explained-variance ratios."""
    eigval, eigvec = np.linalg.eigh(cov)
    order = np.argsort(eigval)[::-1]
    eigval, eigvec = np.clip(eigval[order], 0, None), eigvec[:, order]
    total = eigval.sum()
    ratio = eigval[:dims] / total if total > 0 else np.zeros(min(dims, eigval.size))
    return _signed(eigvec[:, :dims].T, ratio, dims, cov.shape[0])


def _covariance(blocks: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of the rows of all blocks, accumulated so no concatenation is held."""
    count = sum(b.shape[0] for b in blocks)
    mean = sum(b.astype(np.float64).sum(axis=0) for b in blocks) / count
    cov = sum((b.astype(np.float64) - mean).T @ (b.astype(np.float64) - mean) for b in blocks) / count
    return mean, cov


def _centred(blocks: Sequence[np.ndarray], mean: np.ndarray):
    """The centred rows of all blocks, ``_ROW_BLOCK`` at a time (float64)."""
    for block in blocks:
        for start in range(0, block.shape[0], _ROW_BLOCK):
            yield block[start : start + _ROW_BLOCK].astype(np.float64) - mean


def _large_pca(blocks: Sequence[np.ndarray], dims: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, top ``dims`` axes and explained ratios without a d x d matrix (for d > DENSE_PCA_MAX).

    Few rows (n <= DENSE_PCA_MAX): exact, from the eigenvectors u of the n x n Gram matrix of the
    centred rows X (the axes are X^T u / sqrt(lambda)). Many rows too: subspace iteration on
    X^T X / n with ``dims + 16`` vectors, 16 rounds from a seeded start, then Rayleigh-Ritz; memory
    O((n + d) (dims + 10)) and deterministic.
    """
    count = sum(b.shape[0] for b in blocks)
    d = blocks[0].shape[1]
    mean = sum(b.astype(np.float64).sum(axis=0) for b in blocks) / count
    total = sum(float((x * x).sum()) for x in _centred(blocks, mean)) / count
    if count <= DENSE_PCA_MAX:
        rows = np.concatenate(list(_centred(blocks, mean)))
        eigval, eigvec = np.linalg.eigh(rows @ rows.T / count)
        order = np.argsort(eigval)[::-1][:dims]
        eigval, eigvec = np.clip(eigval[order], 0, None), eigvec[:, order]
        keep = eigval > eigval.max(initial=0.0) * count * np.finfo(np.float64).eps
        # Axes of (numerically) zero variance carry no direction: they stay zero, as padding does.
        comps = np.zeros((eigval.size, d))
        comps[keep] = (rows.T @ eigvec[:, keep] / np.sqrt(eigval[keep] * count)).T
    else:
        k = min(dims + 16, d)
        basis = np.linalg.qr(np.random.default_rng(0).standard_normal((d, k)))[0]
        for _ in range(16):
            product = np.zeros((d, k))
            for x in _centred(blocks, mean):
                product += x.T @ (x @ basis)
            basis = np.linalg.qr(product / count)[0]
        small = np.zeros((k, k))
        for x in _centred(blocks, mean):
            projected = x @ basis
            small += projected.T @ projected
        eigval, eigvec = np.linalg.eigh(small / count)
        order = np.argsort(eigval)[::-1][:dims]
        eigval = np.clip(eigval[order], 0, None)
        comps = (basis @ eigvec[:, order]).T
    ratio = eigval / total if total > 0 else np.zeros(eigval.size)
    comps, ratio = _signed(comps, ratio, dims, d)
    return mean, comps, ratio


def _basis(blocks: Sequence[np.ndarray], dims: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, PCA axes and explained ratios of the rows of ``blocks`` (memory linear in the data)."""
    if blocks[0].shape[1] > DENSE_PCA_MAX:
        return _large_pca(blocks, dims)
    mean, cov = _covariance(blocks)
    return (mean, *_pca_basis(cov, dims))


def _fit_pca(blocks: list[np.ndarray], dims: int, frozen: bool, fit_on: str) -> dict[str, np.ndarray]:
    t, d = len(blocks), blocks[0].shape[1]
    means, comps, ratios = np.empty((t, d)), np.empty((t, dims, d)), np.empty((t, dims))
    if frozen:
        mean, basis, ratio = _basis(blocks if fit_on == "all" else blocks[-1:], dims)
        means[:], comps[:], ratios[:] = mean, basis, ratio
    else:
        for i, block in enumerate(blocks):
            mean, basis, ratio = _basis([block], dims)
            if i > 0:  # keep the orientation of the previous step's axes
                flip = np.sign((basis * comps[i - 1]).sum(axis=1))
                basis = basis * np.where(flip == 0, 1.0, flip)[:, None]
            means[i], comps[i], ratios[i] = mean, basis, ratio
    coords = np.stack([(b - means[i]) @ comps[i].T for i, b in enumerate(blocks)])
    return {"coords": coords.astype(np.float32), "mean": means, "components": comps, "explained": ratios}


def _umap_kwargs(rows: int, dims: int, seed: int, params: Mapping[str, Any]) -> dict[str, Any]:
    if rows <= dims + 1:
        raise ValueError(f"UMAP needs more than {dims + 1} points to embed in {dims}-D, got {rows}")
    kwargs: dict[str, Any] = {
        "n_components": dims,
        "n_neighbors": min(15, rows - 1),
        "metric": "cosine",
        "random_state": seed,
        "min_dist": 0.1,
    }
    kwargs.update(params)
    return kwargs


def _fit_umap(
    blocks: list[np.ndarray], dims: int, seed: int, aligned: bool, params: Mapping[str, Any]
) -> np.ndarray:
    import warnings

    import umap  # deferred: importing umap-learn compiles numba code for seconds

    kwargs = _umap_kwargs(blocks[0].shape[0], dims, seed, params)
    with warnings.catch_warnings():
        # random_state disables umap's parallelism and it says so on every fit; that is the intent.
        warnings.filterwarnings("ignore", message=".*n_jobs.*", category=UserWarning)
        if aligned and len(blocks) > 1:
            relations = [{j: j for j in range(blocks[0].shape[0])} for _ in blocks[1:]]
            mapper = umap.AlignedUMAP(**kwargs).fit(blocks, relations=relations)
            return np.stack([np.asarray(e, dtype=np.float32) for e in mapper.embeddings_])
        return np.stack([umap.UMAP(**kwargs).fit_transform(b).astype(np.float32) for b in blocks])


def fit_projection(
    snapshots: Sequence[Mapping[str, np.ndarray]],
    steps: Sequence[int],
    method: str = "frozen_pca",
    dims: int = 2,
    keys: Sequence[str] = DEFAULT_KEYS,
    seed: int = 0,
    fit_on: str = "all",
    umap_params: Mapping[str, Any] | None = None,
) -> Projection:
    """Project snapshots held in memory (no cache; see :func:`run_projection` for runs).

    Args:
        snapshots: One mapping of arrays per checkpoint; each holds every name in ``keys`` as an
            ``(n, d)`` array, with the same n and d at every checkpoint (rows are the same items).
        steps: The checkpoint of each snapshot, strictly increasing.
        method: One of :data:`METHODS` (see the module docstring).
        dims: 2 or 3.
        keys: Arrays to project together, e.g. ``("a", "b")`` or ``("a", "b", "a_aug")``.
        seed: UMAP's random state (PCA is deterministic).
        fit_on: ``"all"`` or ``"last"``: the snapshots the frozen PCA basis is fitted on.
        umap_params: Extra keyword arguments for ``umap.UMAP`` / ``umap.AlignedUMAP``.

    Returns:
        A :class:`Projection`.

    Raises:
        ValueError: Bad method, dims, fit_on or keys; no snapshots; steps not increasing or of the
            wrong length; arrays missing, of mismatched shapes or with NaN/inf/zero rows.
    """
    keys = _check_args(method, dims, fit_on, keys)
    steps = tuple(int(s) for s in steps)
    if not snapshots:
        raise ValueError("snapshots must hold at least one snapshot")
    if len(steps) != len(snapshots):
        raise ValueError(
            f"steps must have one entry per snapshot: {len(steps)} steps, {len(snapshots)} snapshots"
        )
    if any(b <= a for a, b in pairwise(steps)):
        raise ValueError(f"steps must be strictly increasing, got {list(steps)}")
    stacked = [_stack(snap, keys, step) for snap, step in zip(snapshots, steps, strict=True)]
    blocks = [block for block, _ in stacked]
    n = stacked[0][1]
    shapes = {block.shape for block in blocks}
    if len(shapes) != 1:
        raise ValueError(f"every snapshot must have the same rows and dimension, got shapes {sorted(shapes)}")
    if n < 2:
        raise ValueError(f"snapshots must have at least 2 rows per array, got {n}")
    if method in ("pca", "frozen_pca"):
        fit = _fit_pca(blocks, dims, method == "frozen_pca", fit_on)
        return Projection(method, dims, steps, keys, n=n, **fit)
    coords = _fit_umap(blocks, dims, seed, method == "aligned_umap", dict(umap_params or {}))
    return Projection(method, dims, steps, keys, coords=coords, n=n)


# --------------------------------------------------------------------------------------------- runs + cache
def load_snapshots(
    run: Run, steps: Sequence[int] | None = None
) -> tuple[list[int], list[dict[str, np.ndarray]]]:
    """The snapshots of ``run`` at ``steps`` (all of them when None), in ascending step order.

    Raises:
        ValueError: The run has no snapshots, or a requested step has none.
    """
    available = run.snapshot_steps
    if not available:
        raise ValueError(f"run {run.run_id!r} has no snapshots")
    wanted = available if steps is None else sorted({int(s) for s in steps})
    if not wanted:
        raise ValueError("steps must name at least one step")
    return wanted, [run.snapshot(s) for s in wanted]


def _snapshot_signature(run: Run, steps: Sequence[int]) -> list[list[int]]:
    out = []
    for step in steps:
        stat = (run.path / "snapshots" / f"step_{step:08d}.npz").stat()
        out.append([int(step), int(stat.st_size), int(stat.st_mtime_ns)])
    return out


def _cache_key(kind: str, run: Run, steps: Sequence[int], params: Mapping[str, Any]) -> str:
    spec = {"version": CACHE_VERSION, "kind": kind, "snapshots": _snapshot_signature(run, steps), **params}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:24]


def projection_cache_path(run: Run, key: str) -> Path:
    """``<run>/cache/projections/<key>.npz``; ``key`` must be hexadecimal (it is a hash)."""
    if not key or any(c not in "0123456789abcdef" for c in key):
        raise ValueError(f"key must be a lowercase hexadecimal string, got {key!r}")
    return run.path / "cache" / "projections" / f"{key}.npz"


def _write_cache(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **arrays)
    try:
        _atomic_write(path, lambda fh: fh.write(buffer.getvalue()))
    except OSError:
        pass  # a read-only run store still gets its projection, just not cached


def _drop_damaged(path: Path) -> None:
    # A cache entry that does not load is rebuilt: remove it so the rebuilt one can take its place.
    try:
        path.unlink()
    except OSError:
        pass  # a read-only store: the projection is recomputed every time instead


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        return None
    except MemoryError:
        raise
    except Exception:  # damaged (BadZipFile, zlib.error, EOFError, ValueError, a folder ...): rebuild it
        _drop_damaged(path)
        return None


def _cached_projection(path: Path) -> Projection | None:
    """The projection cached at ``path``, or None when there is none or it is damaged (then removed)."""
    hit = _read_cache(path)
    if hit is None:
        return None
    try:
        projection = Projection._from_arrays(hit)
        expected = (len(projection.steps), len(projection.keys) * projection.n, projection.dims)
        if projection.coords.shape != expected:
            raise ValueError(f"coords have shape {projection.coords.shape}, expected {expected}")
        return projection
    except (KeyError, ValueError, TypeError):  # loads as a zip but is not one of our entries
        _drop_damaged(path)
        return None


def run_projection(
    run: Run,
    method: str = "frozen_pca",
    dims: int = 2,
    steps: Sequence[int] | None = None,
    keys: Sequence[str] = DEFAULT_KEYS,
    seed: int = 0,
    fit_on: str = "all",
    umap_params: Mapping[str, Any] | None = None,
    cache: bool = True,
) -> Projection:
    """Project a run's snapshots, reading and writing the on-disk cache in the run folder.

    Args:
        run: A run from the store (``workbench.store.runs.load_run``).
        method, dims, keys, seed, fit_on, umap_params: As in :func:`fit_projection`.
        steps: Checkpoints to project (default: every snapshot of the run).
        cache: Read/write ``<run>/cache/projections/``; False always recomputes and writes nothing.

    Returns:
        A :class:`Projection` (from the cache when an entry with the same key exists).

    Raises:
        ValueError: As :func:`fit_projection`, or the run has no snapshot at a requested step.
    """
    keys = _check_args(method, dims, fit_on, keys)
    wanted = run.snapshot_steps if steps is None else sorted({int(s) for s in steps})
    missing = sorted(set(wanted) - set(run.snapshot_steps))
    if not wanted or missing:
        raise ValueError(
            f"run {run.run_id!r} has no snapshot at step(s) {missing or 'any'}; "
            f"available steps: {run.snapshot_steps}"
        )
    params = {
        "method": method,
        "dims": dims,
        "keys": list(keys),
        "seed": seed if method in ("umap", "aligned_umap") else None,
        "fit_on": fit_on if method == "frozen_pca" else None,
        "umap_params": dict(umap_params or {}),
    }
    path = projection_cache_path(run, _cache_key("projection", run, wanted, params))
    if cache and (hit := _cached_projection(path)) is not None:
        return hit
    _, snapshots = load_snapshots(run, wanted)
    projection = fit_projection(snapshots, wanted, method, dims, keys, seed, fit_on, umap_params)
    if cache:
        _write_cache(path, projection._arrays())
    return projection


def clear_cache(run: Run) -> int:
    """Delete the run's cached projections and geometry; returns how many files were removed."""
    removed = 0
    for sub in ("projections", "geometry"):
        folder = run.path / "cache" / sub
        if folder.is_dir():
            for path in folder.iterdir():
                if path.is_file():
                    path.unlink()
                    removed += 1
    return removed


def snapshot_geometry(
    run: Run, steps: Sequence[int] | None = None, seed: int = 0, max_pairs: int = 2000, cache: bool = True
) -> pd.DataFrame:
    """``workbench.metrics.geometry.geometry_report`` of ``a`` vs ``b`` at each snapshot, cached on disk.

    For runs whose trainer logged no geometry (two-view and paired runs); multimodal runs log the same
    measures in ``metrics.csv`` at their snapshot steps.

    Returns:
        DataFrame with ``step`` and one column per measure, one row per snapshot, ascending.

    Raises:
        ValueError: No snapshots, or a snapshot without paired ``a`` and ``b`` of one shape.
    """
    wanted = run.snapshot_steps if steps is None else sorted({int(s) for s in steps})
    if not wanted:
        raise ValueError(f"run {run.run_id!r} has no snapshots")
    key = _cache_key("geometry", run, wanted, {"seed": seed, "max_pairs": max_pairs})
    path = run.path / "cache" / "geometry" / f"{key}.json"
    if cache:
        try:
            return pd.DataFrame(json.loads(path.read_text()))
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError):  # damaged: rebuilt below and written over
            _drop_damaged(path)
    rows = []
    for step in wanted:
        snap = run.snapshot(step)
        if "a" not in snap or "b" not in snap:
            raise ValueError(f"snapshot at step {step} of run {run.run_id!r} has no paired arrays a and b")
        report = geometry_report(snap["a"], snap["b"], seed=seed, max_pairs=max_pairs)
        rows.append({"step": step, **{k: v for k, v in report.items() if math.isfinite(v)}})
    table = pd.DataFrame(rows)
    if cache:
        data = json.dumps(table.to_dict("records")).encode()
        try:
            _atomic_write(path, lambda fh: fh.write(data))
        except OSError:
            pass
    return table
