"""Geometry of paired image/text embeddings: modality gap, alignment, uniformity, cones, spectra.

Every public function takes NumPy arrays ``x`` (image embeddings, shape ``(n, d)``) and ``y`` (text
embeddings, same shape) whose rows are PAIRED: row ``i`` of ``x`` goes with row ``i`` of ``y``. The
``*_single`` variants take one set ``z`` of shape ``(n, d)``.

Conventions shared by all functions (docs/methods.md, section 4):

* Inputs are validated: 2-D, same shape, at least two rows, finite; anything else raises
  ``ValueError`` naming ``x``/``y``/``z`` and the problem (for example ``"x contains NaN or inf at
  row 17"``).
* Rows are L2-normalised internally (the measures are defined for unit-norm embeddings); a row of
  zero norm cannot be normalised and raises ``ValueError``. Callers may pass raw, unnormalised
  features.
* Computation is in float64 whatever the input dtype.

Measures and sources (unit-norm rows):

* ``gap_vector`` / ``centroid_gap``: mean x - mean y and its norm (Liang et al. 2022).
* ``paired_distance``: mean_i ||x_i - y_i|| (Schrodi et al. 2025).
* ``relative_modality_gap``: d_M / (d_M + (d_I + d_T) / 2) (Schrodi et al. 2025).
* ``modality_separability``: held-out accuracy of a logistic regression x vs y (Fahim et al. 2024).
* ``alignment``: mean_i ||x_i - y_i||^2 (Wang & Isola 2020).
* ``uniformity``: log mean_{i != j} exp(-t ||z_i - z_j||^2), averaged over x and y (Wang & Isola 2020).
* ``cross_uniformity``: log mean_{i != j} exp(-t ||x_i - y_j||^2) (Fahim et al. 2024).
* ``cone``: mean off-diagonal in-modal cosine, averaged over x and y (Liang et al. 2022).
* ``effective_rank``: exp(entropy of normalised singular values), averaged (Roy & Vetterli 2007).
* ``per_dimension_gap``: |mean x_d - mean y_d| sorted descending (Schrodi et al. 2025).
* ``singular_spectrum``: normalised singular values of x, y and [x; y] (Roy & Vetterli 2007).
* ``geometry_report``: all scalar measures at once.
* ``bridge_paths``: Brownian-bridge paths x_i -> y_i on the sphere, for visualisation (Jiang et al. 2023).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.special import logsumexp

__all__ = [
    "alignment",
    "bridge_paths",
    "centroid_gap",
    "cone",
    "cone_single",
    "cross_uniformity",
    "effective_rank",
    "effective_rank_single",
    "gap_vector",
    "geometry_report",
    "modality_separability",
    "paired_distance",
    "per_dimension_gap",
    "relative_modality_gap",
    "singular_spectrum",
    "uniformity",
    "uniformity_single",
]

#: Floor applied to the distances d_M, d_I, d_T of the relative modality gap (Schrodi et al.).
RMG_FLOOR = 1e-3
#: Default cap on the number of rows used by ``bridge_paths`` when ``pairs`` is not given.
BRIDGE_MAX_PAIRS = 256
# Target number of entries of one block of the n x n similarity matrix in the chunked logsumexp.
_BLOCK_ENTRIES = 1 << 22
#: Largest Gram matrix side formed for singular values: min(n, d) past it (both n and d large), the
#: spectrum is that of a seeded sample of MAX_GRAM rows (128 MB and seconds instead of O(min(n, d)^2)).
MAX_GRAM = 4096


# --------------------------------------------------------------------------------------------- validation
def _as_matrix(z: np.ndarray, name: str) -> np.ndarray:
    """Convert to a float64 2-D array with at least two rows and one column, or raise ValueError."""
    try:
        arr = np.asarray(z, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array: {exc}") from exc
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of shape (n, d), got {arr.ndim}-D shape {arr.shape}")
    return arr


def _check_rows(arr: np.ndarray, name: str) -> None:
    if arr.shape[0] < 2:
        raise ValueError(f"{name} must have at least 2 rows, got {arr.shape[0]}")
    if arr.shape[1] < 1:
        raise ValueError(f"{name} must have at least 1 column, got shape {arr.shape}")


def _normalise(arr: np.ndarray, name: str) -> np.ndarray:
    """Check finiteness and L2-normalise the rows of a float64 matrix."""
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise ValueError(f"{name} contains NaN or inf at row {row}")
    norms = np.linalg.norm(arr, axis=1)
    if not (norms > 0).all():
        row = int(np.flatnonzero(~(norms > 0))[0])
        raise ValueError(f"{name} has a row of zero norm at row {row} (cannot L2-normalise)")
    return arr / norms[:, None]


def _check_single(z: np.ndarray, name: str = "z") -> np.ndarray:
    arr = _as_matrix(z, name)
    _check_rows(arr, name)
    return _normalise(arr, name)


def _check_pair(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    xa = _as_matrix(x, "x")
    ya = _as_matrix(y, "y")
    if xa.shape != ya.shape:
        raise ValueError(f"x and y must have the same shape, got {xa.shape} and {ya.shape}")
    _check_rows(xa, "x")
    return _normalise(xa, "x"), _normalise(ya, "y")


def _check_t(t: float) -> float:
    t = float(t)
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"t must be a finite number > 0, got {t}")
    return t


# ----------------------------------------------------------------------------- kernels on normalised rows
def _mean_offdiag_cosine(z: np.ndarray) -> float:
    # For unit rows, sum_{i != j} <z_i, z_j> = ||sum_i z_i||^2 - n: exact and O(n d).
    n = z.shape[0]
    s = z.sum(axis=0)
    return float((s @ s - n) / (n * (n - 1)))


def _log_mean_offdiag_kernel(a: np.ndarray, b: np.ndarray, t: float) -> float:
    """log mean_{i != j} exp(-t ||a_i - b_j||^2) for unit rows, chunked and stable (logsumexp)."""
    n = a.shape[0]
    block = max(1, _BLOCK_ENTRIES // n)
    parts = []
    for start in range(0, n, block):
        stop = min(n, start + block)
        sq = np.clip(2.0 - 2.0 * (a[start:stop] @ b.T), 0.0, None)
        logits = -t * sq
        rows = np.arange(stop - start)
        logits[rows, start + rows] = -np.inf
        parts.append(_logsumexp_inplace(logits))
    return float(logsumexp(np.asarray(parts)) - math.log(n * (n - 1)))


def _logsumexp_inplace(logits: np.ndarray) -> float:
    """``logsumexp`` of every entry, overwriting ``logits``: scipy's took 5x longer on the 2000 x 2000
    blocks of an uploaded file's report (its checks and copies), and this block is a temporary."""
    top = float(logits.max())
    if not math.isfinite(top):
        return top
    np.subtract(logits, top, out=logits)
    np.exp(logits, out=logits)
    return top + math.log(float(logits.sum()))


def _singular_values(z: np.ndarray) -> np.ndarray:
    # Square roots of the eigenvalues of the smaller Gram matrix: an order of magnitude faster than an
    # SVD for tall matrices (5000 x 512). Eigenvalues below max * k * eps (rounding noise, k the Gram
    # size) are set to 0, so singular values below about 1e-7 of the largest count as exactly 0.
    if min(z.shape) > MAX_GRAM:  # bounded memory: the spectrum of a seeded row sample
        z = z[np.sort(np.random.default_rng(0).choice(z.shape[0], MAX_GRAM, replace=False))]
    gram = z.T @ z if z.shape[0] >= z.shape[1] else z @ z.T
    eig = np.linalg.eigvalsh(gram)[::-1]
    eig[eig < eig[0] * gram.shape[0] * np.finfo(np.float64).eps] = 0.0
    return np.sqrt(eig)


def _normalised_singular_values(z: np.ndarray) -> np.ndarray:
    s = _singular_values(z)
    return s / s.sum()


def _effective_rank(z: np.ndarray) -> float:
    p = _normalised_singular_values(z)
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def _rmg_transform(mean_cos: float) -> float:
    return max(RMG_FLOOR, 1.0 - (mean_cos + 1.0) / 2.0)


def _relative_modality_gap(x: np.ndarray, y: np.ndarray) -> float:
    d_m = _rmg_transform(float(np.einsum("ij,ij->i", x, y).mean()))
    d_i = _rmg_transform(_mean_offdiag_cosine(x))
    d_t = _rmg_transform(_mean_offdiag_cosine(y))
    return d_m / (d_m + (d_i + d_t) / 2.0)


def _separability(x: np.ndarray, y: np.ndarray, seed: int) -> float:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n = x.shape[0]
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_test = min(n - 1, max(1, round(0.3 * n)))
    test, train = perm[:n_test], perm[n_test:]
    x_train = np.concatenate([x[train], y[train]])
    l_train = np.concatenate([np.zeros(len(train)), np.ones(len(train))])
    x_test = np.concatenate([x[test], y[test]])
    l_test = np.concatenate([np.zeros(len(test)), np.ones(len(test))])
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x_train, l_train)
    return float((model.predict(x_test) == l_test).mean())


# ------------------------------------------------------------------------------------------ public measures
def gap_vector(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Modality gap vector: the difference of the two modalities' centroids.

    Source: Liang et al. 2022, "Mind the Gap: Understanding the Modality Gap in Multi-modal
    Contrastive Representation Learning".

    Args:
        x: Image embeddings, shape (n, d); rows are L2-normalised internally.
        y: Text embeddings paired row by row with ``x``, same shape.

    Returns:
        float64 array of shape (d,): ``mean_i x_i - mean_i y_i``.

    Raises:
        ValueError: If the inputs are not valid paired embeddings (see module docstring).
    """
    xn, yn = _check_pair(x, y)
    return xn.mean(axis=0) - yn.mean(axis=0)


def centroid_gap(x: np.ndarray, y: np.ndarray) -> float:
    """Centroid (modality) gap ``||mean x - mean y||``.

    Source: Liang et al. 2022, "Mind the Gap". It is 0 when the two centroids coincide.

    Args:
        x: Image embeddings, shape (n, d); rows are L2-normalised internally.
        y: Text embeddings paired row by row with ``x``, same shape.

    Returns:
        The Euclidean norm of :func:`gap_vector`, in [0, 2].

    Raises:
        ValueError: If the inputs are not valid paired embeddings.
    """
    return float(np.linalg.norm(gap_vector(x, y)))


def paired_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Mean Euclidean distance between paired embeddings, ``mean_i ||x_i - y_i||``.

    Source: Schrodi et al. 2025, "Two Effects, One Trigger: On the Modality Gap, Object Bias, and
    Information Imbalance in Contrastive Vision-Language Models".

    Args:
        x: Image embeddings, shape (n, d); rows are L2-normalised internally.
        y: Text embeddings paired row by row with ``x``, same shape.

    Returns:
        The mean paired distance, in [0, 2].

    Raises:
        ValueError: If the inputs are not valid paired embeddings.
    """
    xn, yn = _check_pair(x, y)
    return float(np.linalg.norm(xn - yn, axis=1).mean())


def relative_modality_gap(x: np.ndarray, y: np.ndarray) -> float:
    """Relative modality gap ``d_M / (d_M + (d_I + d_T) / 2)``.

    Source: Schrodi et al. 2025, "Two Effects, One Trigger". With ``c`` a mean cosine, the
    transform is ``f(c) = max(1e-3, 1 - (c + 1) / 2)`` (a cosine mapped to a distance in [0, 1]);
    ``d_M = f(mean_i cos(x_i, y_i))``, ``d_I = f(cone_single(x))`` and ``d_T = f(cone_single(y))``,
    the last two using the mean OFF-diagonal in-modal cosine. The 1e-3 floor (:data:`RMG_FLOOR`) is
    applied to all three distances, so the result is always defined; for ``x == y`` it equals
    ``1e-3 / (1e-3 + f(cone_single(x)))``.

    Args:
        x: Image embeddings, shape (n, d); rows are L2-normalised internally.
        y: Text embeddings paired row by row with ``x``, same shape.

    Returns:
        The relative gap in (0, 1): near 0 when pairs are much closer than in-modal neighbours.

    Raises:
        ValueError: If the inputs are not valid paired embeddings.
    """
    xn, yn = _check_pair(x, y)
    return _relative_modality_gap(xn, yn)


def modality_separability(x: np.ndarray, y: np.ndarray, seed: int = 0) -> float:
    """Held-out accuracy of a logistic regression telling image rows from text rows.

    Source: Fahim et al. 2024, "It's Not a Modality Gap: Characterizing and Addressing the
    Contrastive Gap". Protocol chosen here: the n PAIRS are split at random (seeded by ``seed``)
    into 70% train / 30% test pairs (at least one pair on each side), and both members of a pair
    go to the same side, so the split is exactly balanced (stratified) and no test image has its
    own caption in the training set. Features are standardised on the training split, then an
    L2-regularised logistic regression (C = 1, lbfgs) is fitted; the score is the accuracy on the
    2 * n_test held-out rows. Deterministic given ``seed``.

    Args:
        x: Image embeddings, shape (n, d); rows are L2-normalised internally.
        y: Text embeddings paired row by row with ``x``, same shape.
        seed: Seed of the train/test split.

    Returns:
        Accuracy in [0, 1]: about 0.5 when the modalities are indistinguishable, 1.0 when they are
        linearly separable.

    Raises:
        ValueError: If the inputs are not valid paired embeddings.
    """
    xn, yn = _check_pair(x, y)
    return _separability(xn, yn, seed)


def alignment(x: np.ndarray, y: np.ndarray) -> float:
    """Alignment loss ``mean_i ||x_i - y_i||^2`` (alpha = 2).

    Source: Wang & Isola 2020, "Understanding Contrastive Representation Learning through Alignment
    and Uniformity on the Hypersphere".

    Args:
        x: Image embeddings, shape (n, d); rows are L2-normalised internally.
        y: Text embeddings paired row by row with ``x``, same shape.

    Returns:
        The mean squared paired distance, in [0, 4]; lower is better aligned.

    Raises:
        ValueError: If the inputs are not valid paired embeddings.
    """
    xn, yn = _check_pair(x, y)
    return float(((xn - yn) ** 2).sum(axis=1).mean())


def uniformity_single(z: np.ndarray, t: float = 2.0) -> float:
    """Uniformity of one set, ``log mean_{i != j} exp(-t ||z_i - z_j||^2)``.

    Source: Wang & Isola 2020. Computed exactly over all ordered off-diagonal pairs with a
    numerically stable, row-chunked logsumexp (memory O(n) blocks of the n x n matrix, time
    O(n^2 d)).

    Args:
        z: Embeddings, shape (n, d); rows are L2-normalised internally.
        t: Kernel scale, > 0 (2 in the paper).

    Returns:
        The uniformity, <= 0; lower (more negative) is more uniform.

    Raises:
        ValueError: If ``z`` is not a valid embedding matrix or ``t`` is not > 0.
    """
    t = _check_t(t)
    zn = _check_single(z, "z")
    return _log_mean_offdiag_kernel(zn, zn, t)


def uniformity(x: np.ndarray, y: np.ndarray, t: float = 2.0) -> float:
    """Mean of the two modalities' uniformities, ``(U(x) + U(y)) / 2``.

    Source: Wang & Isola 2020; see :func:`uniformity_single` for one set.

    Args:
        x: Image embeddings, shape (n, d); rows are L2-normalised internally.
        y: Text embeddings paired row by row with ``x``, same shape.
        t: Kernel scale, > 0.

    Returns:
        The averaged uniformity, <= 0.

    Raises:
        ValueError: If the inputs are not valid paired embeddings or ``t`` is not > 0.
    """
    t = _check_t(t)
    xn, yn = _check_pair(x, y)
    return 0.5 * (_log_mean_offdiag_kernel(xn, xn, t) + _log_mean_offdiag_kernel(yn, yn, t))


def cross_uniformity(x: np.ndarray, y: np.ndarray, t: float = 2.0) -> float:
    """Cross-modal uniformity ``log mean_{i != j} exp(-t ||x_i - y_j||^2)`` over non-paired (i, j).

    Source: Fahim et al. 2024, "It's Not a Modality Gap". The n matched pairs (i, i) are excluded;
    computed exactly with a row-chunked logsumexp.

    Args:
        x: Image embeddings, shape (n, d); rows are L2-normalised internally.
        y: Text embeddings paired row by row with ``x``, same shape.
        t: Kernel scale, > 0.

    Returns:
        The cross-uniformity, <= 0.

    Raises:
        ValueError: If the inputs are not valid paired embeddings or ``t`` is not > 0.
    """
    t = _check_t(t)
    xn, yn = _check_pair(x, y)
    return _log_mean_offdiag_kernel(xn, yn, t)


def cone_single(z: np.ndarray) -> float:
    """Cone effect of one set: the mean off-diagonal cosine ``mean_{i != j} cos(z_i, z_j)``.

    Source: Liang et al. 2022, "Mind the Gap" (CLIP about 0.5; randomly initialised ReLU networks
    near 0.99). Computed exactly in O(n d) as ``(||sum_i z_i||^2 - n) / (n (n - 1))``.

    Args:
        z: Embeddings, shape (n, d); rows are L2-normalised internally.

    Returns:
        The mean cosine, in [-1 / (n - 1), 1].

    Raises:
        ValueError: If ``z`` is not a valid embedding matrix.
    """
    return _mean_offdiag_cosine(_check_single(z, "z"))


def cone(x: np.ndarray, y: np.ndarray) -> float:
    """Mean of the two modalities' cone measures, ``(cone_single(x) + cone_single(y)) / 2``.

    Source: Liang et al. 2022, "Mind the Gap".

    Args:
        x: Image embeddings, shape (n, d); rows are L2-normalised internally.
        y: Text embeddings paired row by row with ``x``, same shape.

    Returns:
        The averaged mean off-diagonal in-modal cosine.

    Raises:
        ValueError: If the inputs are not valid paired embeddings.
    """
    xn, yn = _check_pair(x, y)
    return 0.5 * (_mean_offdiag_cosine(xn) + _mean_offdiag_cosine(yn))


def effective_rank_single(z: np.ndarray) -> float:
    """Effective rank ``exp(H(p))`` with ``p_k = s_k / sum_k s_k``, s the singular values of z.

    Source: Roy & Vetterli 2007, "The effective rank: a measure of effective dimensionality".
    Following the paper, the singular values are those of the (row-normalised, UNCENTRED) embedding
    matrix, normalised to sum 1 (not their squares); 0 log 0 = 0. Singular values come from the
    eigenvalues of the smaller Gram matrix (fast for n = 5000, d = 512); values below about 1e-7 of
    the largest are rounding noise and are set to 0. When both n and d exceed :data:`MAX_GRAM`, they
    are those of a seeded sample of ``MAX_GRAM`` rows (memory stays bounded).

    Args:
        z: Embeddings, shape (n, d); rows are L2-normalised internally.

    Returns:
        The effective rank, in [1, min(n, d)].

    Raises:
        ValueError: If ``z`` is not a valid embedding matrix.
    """
    return _effective_rank(_check_single(z, "z"))


def effective_rank(x: np.ndarray, y: np.ndarray) -> float:
    """Mean of the two modalities' effective ranks (see :func:`effective_rank_single`).

    Source: Roy & Vetterli 2007.

    Args:
        x: Image embeddings, shape (n, d); rows are L2-normalised internally.
        y: Text embeddings paired row by row with ``x``, same shape.

    Returns:
        ``(erank(x) + erank(y)) / 2``.

    Raises:
        ValueError: If the inputs are not valid paired embeddings.
    """
    xn, yn = _check_pair(x, y)
    return 0.5 * (_effective_rank(xn) + _effective_rank(yn))


def per_dimension_gap(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-dimension gap ``|mean x_d - mean y_d|``, sorted in descending order.

    Source: Schrodi et al. 2025, "Two Effects, One Trigger" (a few dimensions carry most of the gap).

    Args:
        x: Image embeddings, shape (n, d); rows are L2-normalised internally.
        y: Text embeddings paired row by row with ``x``, same shape.

    Returns:
        float64 array of shape (d,), sorted descending (dimension identities are not kept; use
        ``np.argsort(-np.abs(gap_vector(x, y)))`` for them).

    Raises:
        ValueError: If the inputs are not valid paired embeddings.
    """
    return np.sort(np.abs(gap_vector(x, y)))[::-1].copy()


def singular_spectrum(x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Normalised singular values of x, of y and of their row concatenation ``[x; y]``.

    Source: Roy & Vetterli 2007 (the distribution whose entropy gives the effective rank). Singular
    values are of the row-normalised, uncentred matrices, divided by their sum; they are computed
    from the Gram matrix, so values below about 1e-7 of the largest are returned as 0. When both the
    rows and d exceed :data:`MAX_GRAM`, a seeded sample of ``MAX_GRAM`` rows stands in (so at most
    ``MAX_GRAM`` values each).

    Args:
        x: Image embeddings, shape (n, d); rows are L2-normalised internally.
        y: Text embeddings paired row by row with ``x``, same shape.

    Returns:
        ``{"x": (min(n, d),), "y": (min(n, d),), "joint": (min(2n, d),)}`` (each at most
        :data:`MAX_GRAM` long), each descending and summing to 1.

    Raises:
        ValueError: If the inputs are not valid paired embeddings.
    """
    xn, yn = _check_pair(x, y)
    return {
        "x": _normalised_singular_values(xn),
        "y": _normalised_singular_values(yn),
        "joint": _normalised_singular_values(np.concatenate([xn, yn])),
    }


def geometry_report(x: np.ndarray, y: np.ndarray, seed: int = 0, max_pairs: int = 2000) -> dict[str, float]:
    """All scalar measures of this module at once.

    Keys: ``centroid_gap``, ``paired_distance``, ``relative_modality_gap``,
    ``modality_separability``, ``alignment``, ``uniformity``, ``cross_uniformity``, ``cone``,
    ``effective_rank`` (same definitions as the functions of the same names, t = 2) and
    ``mean_pair_cosine`` (``mean_i cos(x_i, y_i)``).

    Cost: the O(n^2) or fitting-based measures (``uniformity``, ``cross_uniformity``,
    ``modality_separability``) are computed on a random subsample of at most ``max_pairs`` pairs
    (the same rows of x and y, drawn without replacement with ``numpy.random.default_rng(seed)``);
    all other measures, including ``cone`` and ``relative_modality_gap`` (exact in O(n d)), use every
    row, so the cost is linear in n apart from that subsample.

    Args:
        x: Image embeddings, shape (n, d); rows are L2-normalised internally.
        y: Text embeddings paired row by row with ``x``, same shape.
        seed: Seed of the subsample and of the separability train/test split.
        max_pairs: Cap on the pairs used for the O(n^2) measures, >= 2.

    Returns:
        Dict of Python floats.

    Raises:
        ValueError: If the inputs are not valid paired embeddings or ``max_pairs`` < 2.
    """
    if int(max_pairs) != max_pairs or max_pairs < 2:
        raise ValueError(f"max_pairs must be an integer >= 2, got {max_pairs}")
    xn, yn = _check_pair(x, y)
    n = xn.shape[0]
    if n > max_pairs:
        idx = np.sort(np.random.default_rng(seed).choice(n, size=int(max_pairs), replace=False))
        xs, ys = xn[idx], yn[idx]
    else:
        xs, ys = xn, yn
    diff = xn - yn
    sq = (diff**2).sum(axis=1)
    return {
        "centroid_gap": float(np.linalg.norm(xn.mean(axis=0) - yn.mean(axis=0))),
        "paired_distance": float(np.sqrt(sq).mean()),
        "relative_modality_gap": _relative_modality_gap(xn, yn),
        "modality_separability": _separability(xs, ys, seed),
        "alignment": float(sq.mean()),
        "uniformity": 0.5 * (_log_mean_offdiag_kernel(xs, xs, 2.0) + _log_mean_offdiag_kernel(ys, ys, 2.0)),
        "cross_uniformity": _log_mean_offdiag_kernel(xs, ys, 2.0),
        "cone": 0.5 * (_mean_offdiag_cosine(xn) + _mean_offdiag_cosine(yn)),
        "effective_rank": 0.5 * (_effective_rank(xn) + _effective_rank(yn)),
        "mean_pair_cosine": float(np.einsum("ij,ij->i", xn, yn).mean()),
    }


# -------------------------------------------------------------------------------------------- bridge paths
def bridge_paths(
    x: np.ndarray,
    y: np.ndarray,
    n_paths: int = 8,
    n_steps: int = 32,
    sigma: float = 0.1,
    seed: int = 0,
    pairs: np.ndarray | list[int] | None = None,
) -> np.ndarray:
    """Sample Brownian-bridge paths on the unit sphere from each x_i to its partner y_i.

    Source: Jiang et al. 2023, "Understanding and Constructing Latent Modality Structures in
    Multi-modal Representation Learning" (docs/methods.md, section 3 item 2), for visualisation:
    ``W(t) = (1 - t) x + t y + sigma * (B(t) - t B(1))``, re-projected to the unit sphere, where B is
    a standard Brownian motion sampled on the grid ``t_k = k / (n_steps - 1)`` (cumulative Gaussian
    increments of variance ``1 / (n_steps - 1)``, independent per coordinate), so the noise term is
    a Brownian bridge with variance ``sigma^2 t (1 - t)`` per coordinate. The endpoints are exactly the
    (normalised) ``x_i`` and ``y_i``. With ``sigma = 0`` the path is the normalised straight line
    (same great-circle arc as slerp, non-uniform speed).

    Args:
        x: Image embeddings, shape (n, d); rows are L2-normalised internally.
        y: Text embeddings paired row by row with ``x``, same shape.
        n_paths: Paths per pair, >= 1.
        n_steps: Grid points per path including both endpoints, >= 2.
        sigma: Noise scale, >= 0.
        seed: Seed of the Gaussian increments; the output is deterministic given it.
        pairs: Row indices (in [0, n)) of the pairs to use. Default: all rows, capped at the first
            :data:`BRIDGE_MAX_PAIRS` (256) rows to bound memory (the output is float64 of
            ``n_pairs * n_paths * n_steps * d`` entries: 256 x 8 x 32 x 512 is 268 MB).

    Returns:
        float64 array of shape ``(n_pairs_used, n_paths, n_steps, d)`` of unit vectors.

    Raises:
        ValueError: For invalid embeddings, ``n_paths`` < 1, ``n_steps`` < 2, ``sigma`` < 0 or not
            finite, invalid ``pairs``, or (only possible with tiny noise) a path point at the origin
            (antipodal pair with ``sigma = 0``), which cannot be projected to the sphere.
    """
    if isinstance(n_paths, bool) or int(n_paths) != n_paths or n_paths < 1:
        raise ValueError(f"n_paths must be an integer >= 1, got {n_paths}")
    if isinstance(n_steps, bool) or int(n_steps) != n_steps or n_steps < 2:
        raise ValueError(f"n_steps must be an integer >= 2, got {n_steps}")
    sigma = float(sigma)
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma}")
    n_paths, n_steps = int(n_paths), int(n_steps)
    xn, yn = _check_pair(x, y)
    n, d = xn.shape
    if pairs is None:
        idx = np.arange(min(n, BRIDGE_MAX_PAIRS))
    else:
        idx = np.asarray(pairs)
        if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"pairs must be a non-empty 1-D array of integer row indices, got {pairs!r}")
        if idx.min() < 0 or idx.max() >= n:
            raise ValueError(f"pairs must index rows in [0, {n}), got values in [{idx.min()}, {idx.max()}]")
    a, b = xn[idx], yn[idx]
    t = np.linspace(0.0, 1.0, n_steps)[:, None]  # (S, 1); t[0] = 0 and t[-1] = 1 exactly
    rng = np.random.default_rng(seed)
    scale = sigma * math.sqrt(1.0 / (n_steps - 1))
    paths = np.empty((len(idx), n_paths, n_steps, d))
    for p in range(len(idx)):  # one pair at a time keeps the temporaries small
        out = paths[p]  # (K, S, d) view
        out[:] = (1.0 - t) * a[p] + t * b[p]
        if sigma > 0:
            motion = rng.standard_normal((n_paths, n_steps - 1, d))
            np.cumsum(motion, axis=1, out=motion)  # B(t_1), ..., B(t_{S-1} = 1), unscaled
            motion -= t[1:] * motion[:, -1:, :]  # bridge B(t) - t B(1); B(0) = 0 needs no term
            out[:, 1:, :] += scale * motion
    norms = np.linalg.norm(paths, axis=-1, keepdims=True)
    if not (norms > 1e-12).all():
        raise ValueError(
            "a bridge path passes through the origin (antipodal x and y with sigma = 0?); "
            "it cannot be projected to the sphere"
        )
    paths /= norms
    paths[:, :, 0, :] = a[:, None, :]
    paths[:, :, -1, :] = b[:, None, :]
    return paths
