"""Downstream evaluation of image/text embeddings: zero-shot, linear probe, few-shot and retrieval.

Every function is pure: it takes embeddings as NumPy arrays (PyTorch tensors are accepted and
converted with ``.detach().cpu().numpy()``), returns plain Python/NumPy values, and is deterministic
given its ``seed``. Embeddings are 2-D ``(n, d)`` float arrays; labels are 1-D integer arrays.
Inputs are validated up front and a bad one raises ``ValueError`` naming the offending parameter.

Conventions:

* **Cosine similarity.** Every similarity (zero-shot, retrieval) is computed between L2-normalised
  rows; the functions normalise internally, so callers may pass raw embeddings. A row of zeros stays
  zero (its norm is clamped to ``1e-12``, as in ``torch.nn.functional.normalize``) and so has cosine
  0 with everything. Similarities are computed in float64.
* **Accuracies and recalls** are fractions in ``[0, 1]``, not percentages.
* **Linear probes** (``linear_probe_accuracy``, ``few_shot_accuracy``) work on the raw (unnormalised)
  features, standardised with a ``StandardScaler`` fitted on the training split only.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

__all__ = [
    "few_shot_accuracy",
    "l2_normalize",
    "linear_probe_accuracy",
    "retrieval_recall",
    "zero_shot_accuracy",
    "zero_shot_predict",
]

_EPS = 1e-12


# ---------------------------------------------------------------------------------------------------
# input handling
# ---------------------------------------------------------------------------------------------------


def _to_numpy(x: Any) -> np.ndarray:
    """Converts a NumPy array, array-like or PyTorch tensor to a NumPy array (no copy where possible)."""
    if hasattr(x, "detach") and hasattr(x, "cpu") and hasattr(x, "numpy"):  # a torch.Tensor
        t = x.detach().cpu()
        try:
            return t.numpy()
        except TypeError:  # dtypes NumPy lacks (bfloat16, ...)
            return t.float().numpy()
    return np.asarray(x)


def _check_matrix(x: Any, name: str, ndims: tuple[int, ...] = (2,)) -> np.ndarray:
    """Returns ``x`` as a finite float64 array with ``ndim`` in ``ndims`` and no empty axis."""
    arr = _to_numpy(x)
    if arr.ndim not in ndims:
        shapes = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"{name} must be {shapes}, got shape {arr.shape}")
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise ValueError(f"{name} must be real, got dtype {arr.dtype}")
    if 0 in arr.shape:
        raise ValueError(f"{name} must not have an empty axis, got shape {arr.shape}")
    arr = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite (it contains NaN or inf)")
    return arr


def _check_labels(y: Any, name: str, n: int, n_name: str) -> np.ndarray:
    """Returns ``y`` as a 1-D int64 array of length ``n`` (the row count of ``n_name``)."""
    arr = _to_numpy(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must have an integer dtype, got {arr.dtype}")
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} entries but {n_name} has {n} rows")
    return arr.astype(np.int64, copy=False)


def _check_same_dim(a: np.ndarray, b: np.ndarray, a_name: str, b_name: str) -> None:
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"{b_name} has embedding dimension {b.shape[-1]} but {a_name} has {a.shape[-1]}")


def _check_positive_ints(values: Any, name: str) -> tuple[int, ...]:
    """Returns ``values`` (an int or a sequence of ints, each >= 1, no duplicates) as a tuple."""
    if isinstance(values, (int, np.integer)) and not isinstance(values, bool):
        values = (values,)
    try:
        items = tuple(values)
    except TypeError:
        raise ValueError(f"{name} must be an int or a sequence of ints, got {values!r}") from None
    if not items:
        raise ValueError(f"{name} must not be empty")
    out = []
    for v in items:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"{name} must contain ints, got {v!r}")
        if v < 1:
            raise ValueError(f"{name} must contain values >= 1, got {int(v)}")
        out.append(int(v))
    if len(set(out)) != len(out):
        raise ValueError(f"{name} must not contain duplicates, got {out}")
    return tuple(out)


def _check_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """L2-normalises ``x`` along ``axis``.

    Args:
        x: A float array.
        axis: The axis to normalise along.

    Returns:
        ``x / max(||x||, 1e-12)``; zero vectors stay zero.
    """
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(norm, _EPS)


# ---------------------------------------------------------------------------------------------------
# zero-shot classification
# ---------------------------------------------------------------------------------------------------


def _class_prototypes(class_emb: Any, image_emb: np.ndarray) -> np.ndarray:
    """Validates ``class_emb`` and returns unit-norm class prototypes of shape (C, d)."""
    cls = _check_matrix(class_emb, "class_emb", ndims=(2, 3))
    _check_same_dim(image_emb, cls, "image_emb", "class_emb")
    if cls.ndim == 3:
        # CLIP's prompt ensemble: normalise each prompt embedding, average over the P prompts,
        # renormalise. Normalising first stops a prompt with a large norm from dominating the mean.
        cls = l2_normalize(cls, axis=-1).mean(axis=1)
    return l2_normalize(cls, axis=-1)


def zero_shot_predict(image_emb: Any, class_emb: Any) -> np.ndarray:
    """Predicts a class for each image as the class embedding with the highest cosine similarity.

    Args:
        image_emb: Image embeddings, shape (n, d).
        class_emb: Class (text) embeddings, shape (C, d), or (C, P, d) for P prompt templates per
            class. A prompt ensemble is built as in CLIP: each prompt embedding is L2-normalised,
            the P of a class are averaged, and the mean is renormalised.

    Returns:
        Predicted class indices in ``[0, C)``, int64 array of shape (n,). Exact ties go to the lowest
        class index (``np.argmax``).

    Raises:
        ValueError: If an input is not 2-D (``class_emb``: 2-D or 3-D), is empty or non-finite, or
            the embedding dimensions differ.
    """
    img = l2_normalize(_check_matrix(image_emb, "image_emb"))
    protos = _class_prototypes(class_emb, img)
    return np.argmax(img @ protos.T, axis=1).astype(np.int64)


def zero_shot_accuracy(image_emb: Any, class_emb: Any, labels: Any) -> float:
    """Zero-shot classification accuracy (top-1), predicting by cosine similarity.

    Args:
        image_emb: Image embeddings, shape (n, d).
        class_emb: Class embeddings, shape (C, d) or (C, P, d) (a prompt ensemble, see
            ``zero_shot_predict``). Row c is the embedding of class c.
        labels: True class indices in ``[0, C)``, integer array of shape (n,).

    Returns:
        The fraction of images whose predicted class equals its label.

    Raises:
        ValueError: On malformed inputs (see ``zero_shot_predict``), or if ``labels`` is not a 1-D
            integer array of length n with values in ``[0, C)``.
    """
    img = l2_normalize(_check_matrix(image_emb, "image_emb"))
    y = _check_labels(labels, "labels", img.shape[0], "image_emb")
    protos = _class_prototypes(class_emb, img)
    n_classes = protos.shape[0]
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"labels must lie in [0, {n_classes}) (the rows of class_emb)")
    pred = np.argmax(img @ protos.T, axis=1)
    return float(np.mean(pred == y))


# ---------------------------------------------------------------------------------------------------
# linear probe and few-shot probe
# ---------------------------------------------------------------------------------------------------


def _check_split(
    train_x: Any, train_y: Any, test_x: Any, test_y: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    xtr = _check_matrix(train_x, "train_x")
    ytr = _check_labels(train_y, "train_y", xtr.shape[0], "train_x")
    xte = _check_matrix(test_x, "test_x")
    _check_same_dim(xtr, xte, "train_x", "test_x")
    yte = _check_labels(test_y, "test_y", xte.shape[0], "test_x")
    if np.unique(ytr).size < 2:
        raise ValueError("train_y must contain at least two classes")
    return xtr, ytr, xte, yte


def _fit_probe(
    xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray, seed: int, C: float, max_iter: int
) -> float:
    scaler = StandardScaler().fit(xtr)
    # lbfgs fits the multinomial (softmax) model for more than two classes on every supported
    # scikit-learn (``multi_class`` was deprecated in 1.5 and removed later, so it is not passed).
    clf = LogisticRegression(C=C, max_iter=max_iter, solver="lbfgs", random_state=seed)
    clf.fit(scaler.transform(xtr), ytr)
    return float(np.mean(clf.predict(scaler.transform(xte)) == yte))


def linear_probe_accuracy(
    train_x: Any,
    train_y: Any,
    test_x: Any,
    test_y: Any,
    seed: int = 0,
    C: float = 1.0,
    max_iter: int = 1000,
) -> float:
    """Test accuracy of a logistic-regression probe trained on frozen features.

    The features are standardised with a ``StandardScaler`` fitted on ``train_x`` alone, then a
    multinomial logistic regression (scikit-learn, lbfgs, L2 penalty) is fitted. lbfgs is
    deterministic; ``seed`` is passed as ``random_state`` for completeness. A scikit-learn
    ``ConvergenceWarning`` is left visible (raise ``max_iter`` if it appears).

    Args:
        train_x: Training features, shape (n_train, d).
        train_y: Training labels, integer array of shape (n_train,), at least two classes.
        test_x: Test features, shape (n_test, d).
        test_y: Test labels, integer array of shape (n_test,). Labels absent from ``train_y`` count
            as errors.
        seed: ``random_state`` of the classifier.
        C: Inverse L2 regularisation strength (> 0).
        max_iter: Maximum lbfgs iterations (>= 1).

    Returns:
        The fraction of test rows classified correctly.

    Raises:
        ValueError: If an array is malformed or the shapes disagree (naming the parameter), if
            ``train_y`` has fewer than two classes, or if ``C`` or ``max_iter`` is out of range.
    """
    xtr, ytr, xte, yte = _check_split(train_x, train_y, test_x, test_y)
    if not np.isfinite(C) or C <= 0:
        raise ValueError(f"C must be a positive finite float, got {C!r}")
    max_iter = _check_int(max_iter, "max_iter")
    return _fit_probe(xtr, ytr, xte, yte, int(seed), float(C), max_iter)


def few_shot_accuracy(
    train_x: Any,
    train_y: Any,
    test_x: Any,
    test_y: Any,
    shots: int | Sequence[int] = (1, 5, 10),
    trials: int = 5,
    seed: int = 0,
    C: float = 1.0,
    max_iter: int = 1000,
) -> dict[int, dict[str, float]]:
    """k-shot linear-probe accuracy, averaged over random draws of the training subset.

    For each k in ``shots`` and each trial, k examples per class are drawn without replacement from
    the training split, and ``linear_probe_accuracy`` is evaluated on the full test split. A class
    with fewer than k examples contributes all of them, and a ``UserWarning`` says which classes were
    short. The draw for (k, trial) uses ``np.random.default_rng([seed, k, trial])``, so the result
    for one k does not depend on which other shots were requested; the drawn rows keep their
    original order.

    Args:
        train_x: Training features, shape (n_train, d).
        train_y: Training labels, integer array of shape (n_train,), at least two classes.
        test_x: Test features, shape (n_test, d).
        test_y: Test labels, integer array of shape (n_test,).
        shots: The k values (ints >= 1, no duplicates), or a single int.
        trials: Number of random draws per k (>= 1).
        seed: Seed of the draws (and of the probes).
        C: Inverse L2 regularisation strength of the probe.
        max_iter: Maximum lbfgs iterations of the probe.

    Returns:
        ``{k: {"mean": mean accuracy, "std": population standard deviation (ddof=0)}}`` over the
        trials, keyed in the order of ``shots``. ``std`` is 0.0 for a single trial.

    Raises:
        ValueError: On malformed arrays (naming the parameter), if ``shots`` is empty, holds a value
            < 1 or a k larger than every class, or if ``trials`` < 1.
    """
    xtr, ytr, xte, yte = _check_split(train_x, train_y, test_x, test_y)
    ks = _check_positive_ints(shots, "shots")
    trials = _check_int(trials, "trials")
    if not np.isfinite(C) or C <= 0:
        raise ValueError(f"C must be a positive finite float, got {C!r}")
    max_iter = _check_int(max_iter, "max_iter")
    classes, counts = np.unique(ytr, return_counts=True)
    too_big = [k for k in ks if k > counts.max()]
    if too_big:
        raise ValueError(f"shots {too_big} exceed the size of every class (largest: {counts.max()})")
    members = [np.flatnonzero(ytr == c) for c in classes]

    out: dict[int, dict[str, float]] = {}
    for k in ks:
        short = classes[counts < k]
        if short.size:
            warnings.warn(
                f"few_shot_accuracy: {short.size} class(es) have fewer than {k} training examples and "
                f"use all they have: {short.tolist()}",
                UserWarning,
                stacklevel=2,
            )
        accs = []
        for trial in range(trials):
            rng = np.random.default_rng([int(seed), k, trial])
            idx = np.sort(
                np.concatenate([rng.choice(m, size=min(k, m.size), replace=False) for m in members])
            )
            accs.append(_fit_probe(xtr[idx], ytr[idx], xte, yte, int(seed), float(C), max_iter))
        out[k] = {"mean": float(np.mean(accs)), "std": float(np.std(accs))}
    return out


# ---------------------------------------------------------------------------------------------------
# cross-modal retrieval
# ---------------------------------------------------------------------------------------------------


def _ranks(queries: np.ndarray, candidates: np.ndarray, chunk_size: int) -> np.ndarray:
    """Rank of candidate i for query i: the number of candidates strictly more similar to query i.

    Computed over blocks of ``chunk_size`` query rows, so memory is O(chunk_size * n). The positive
    similarity is read from the same block as the others, so a candidate identical to the positive
    ties with it exactly.
    """
    n = queries.shape[0]
    ranks = np.empty(n, dtype=np.int64)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        sims = queries[start:stop] @ candidates.T  # (chunk, n)
        rows = np.arange(stop - start)
        positive = sims[rows, np.arange(start, stop)]
        ranks[start:stop] = np.count_nonzero(sims > positive[:, None], axis=1)
    return ranks


def retrieval_recall(
    image_emb: Any,
    text_emb: Any,
    ks: int | Sequence[int] = (1, 5, 10),
    chunk_size: int = 1024,
) -> dict[str, float]:
    """Recall@k for image-to-text and text-to-image retrieval over paired embeddings.

    Row i of ``image_emb`` is paired with row i of ``text_emb`` (one positive per query); all n rows
    of the other modality are candidates. Similarities are cosines of L2-normalised rows. The rank
    of the positive is the number of candidates with a *strictly greater* similarity (0 = top), so
    ties are resolved in the positive's favour; Recall@k is the fraction of queries with rank < k.
    Ranks are exact: the similarity matrix is computed in blocks of ``chunk_size`` query rows, so
    memory stays O(chunk_size * n) (n = 20k fits easily).

    Args:
        image_emb: Image embeddings, shape (n, d).
        text_emb: Text embeddings, shape (n, d), row i paired with image row i.
        ks: The cut-offs (ints >= 1, no duplicates), or a single int. A k larger than n is
            effectively clamped to n: its recall is 1.0, and its key keeps the requested k.
        chunk_size: Query rows per block of the similarity matrix (>= 1).

    Returns:
        ``{"i2t_R@k": ..., "t2i_R@k": ... for each k, "mean_R": mean of all of them}``, as fractions.

    Raises:
        ValueError: If an embedding is malformed, the shapes differ (naming ``text_emb``), ``ks`` is
            empty or holds a value < 1, or ``chunk_size`` < 1.
    """
    img = _check_matrix(image_emb, "image_emb")
    txt = _check_matrix(text_emb, "text_emb")
    if txt.shape != img.shape:
        raise ValueError(f"text_emb must have the shape of image_emb {img.shape}, got {txt.shape}")
    cutoffs = _check_positive_ints(ks, "ks")
    chunk_size = _check_int(chunk_size, "chunk_size")
    img, txt = l2_normalize(img), l2_normalize(txt)

    ranks = {"i2t": _ranks(img, txt, chunk_size), "t2i": _ranks(txt, img, chunk_size)}
    out: dict[str, float] = {}
    for direction, r in ranks.items():
        for k in cutoffs:
            out[f"{direction}_R@{k}"] = float(np.mean(r < k))
    out["mean_R"] = float(np.mean(list(out.values())))
    return out
