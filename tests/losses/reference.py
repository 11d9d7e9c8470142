"""Independent float64 NumPy references for the loss zoo, written from the formulas (methods.md §1-2).

Nothing here imports workbench. Every loss is a function of the similarities of the L2-normalised
embeddings. The 2B anchor rows are always ordered ``[a_1..a_B, b_1..b_B]`` and scored against the
columns ``[a_1..a_B, b_1..b_B]`` (plus, for MoCo, a constant queue of keys); a boolean mask picks each
row's candidates and the positive of row r is column ``(r + B) mod 2B``:

* ``views`` (SimCLR): every other embedding of the batch is a candidate;
* ``cross`` (CLIP): a-rows see only b-columns and b-rows only a-columns.

SogCLR and Bayes use the surrogate ``u_r Zhat_r - log u_r - 1 - logit_pos`` of
``workbench.losses.partition`` with u held constant; ``Zhat`` is written out in ``zhat_weights``.

Each reference returns the value and the analytic gradient w.r.t. the raw inputs ``a`` and ``b``
(and the scale / bias): derivative w.r.t. the logits by hand, chained through ``S = Z K^T`` and the
normalisation ``z = x / |x|`` (``dx = (dz - z <z, dz>) / |x|``). ``numeric_grad`` is a generic
central finite difference used to check those hand derivations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Ref:
    value: float
    grad_a: np.ndarray
    grad_b: np.ndarray
    grad_scale: float = 0.0
    grad_bias: float = 0.0


# --- geometry ------------------------------------------------------------------------------------
def normalize(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _normalize_backward(x: np.ndarray, dz: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    z = x / norm
    return (dz - z * (z * dz).sum(axis=1, keepdims=True)) / norm


def _similarities(a, b, queue=None):
    z = np.concatenate([normalize(a), normalize(b)])
    keys = z if queue is None or len(queue) == 0 else np.concatenate([z, queue])
    return z, keys, z @ keys.T


def _finish(a, b, value, dlogits, scale, queue=None, grad_bias=0.0) -> Ref:
    """Chain d value / d logits (logits = scale * Z K^T) back to a, b and the scale."""
    z, keys, sim = _similarities(a, b, queue)
    n = z.shape[0]
    dsim = scale * dlogits
    dz = dsim @ keys + dsim[:, :n].T @ z
    size = a.shape[0]
    grad_a, grad_b = _normalize_backward(a, dz[:size]), _normalize_backward(b, dz[size:])
    return Ref(float(value), grad_a, grad_b, float((dlogits * sim).sum()), float(grad_bias))


def layout(size: int, negatives: str, include_positive: bool) -> tuple[np.ndarray, np.ndarray]:
    """(positive column, candidate mask) of the 2B rows [a; b] over the 2B columns [a; b]."""
    rows = np.arange(2 * size)
    pos = (rows + size) % (2 * size)
    if negatives == "views":
        mask = rows[:, None] != rows[None, :]
    elif negatives == "cross":
        side = rows >= size
        mask = side[:, None] != side[None, :]
    else:
        raise ValueError(negatives)
    if not include_positive:
        mask[rows, pos] = False
    return pos, mask


def _masked_logits(a, b, scale, negatives, include_positive, queue=None):
    _, _, sim = _similarities(a, b, queue)
    pos, mask = layout(a.shape[0], negatives, include_positive)
    extra = sim.shape[1] - mask.shape[1]
    mask = np.concatenate([mask, np.ones((mask.shape[0], extra), dtype=bool)], axis=1)
    logits = scale * sim
    return logits, np.where(mask, logits, -np.inf), pos, mask


def _logsumexp(x: np.ndarray) -> np.ndarray:
    top = x.max(axis=1, keepdims=True)
    return top[:, 0] + np.log(np.exp(x - top).sum(axis=1))


# --- the InfoNCE family: mean over chosen rows of  lse_r - w_r * logit_pos ---------------------------
def _infonce(a, b, scale, negatives, include_positive, rows=None, queue=None, pos_weights=None) -> Ref:
    logits, masked, pos, _ = _masked_logits(a, b, scale, negatives, include_positive, queue)
    n = 2 * a.shape[0]
    r = np.arange(n)
    rows = r if rows is None else np.asarray(rows)
    w = np.ones(n) if pos_weights is None else np.tile(pos_weights, 2)
    lse = _logsumexp(masked)
    value = (lse - w * logits[r, pos])[rows].mean()
    dlogits = np.exp(masked - lse[:, None])
    dlogits[r, pos] -= w
    keep = np.zeros(n)
    keep[rows] = 1.0 / len(rows)
    return _finish(a, b, value, dlogits * keep[:, None], scale, queue)


def ntxent(a, b, scale) -> Ref:
    """SimCLR: 2B anchors, negatives all other 2B - 2 embeddings, mean over the 2B anchors."""
    return _infonce(a, b, scale, "views", True)


def clip(a, b, scale, symmetric=True) -> Ref:
    """(CE(S * scale, I) + CE(S^T * scale, I)) / 2, or the a -> b term alone."""
    rows = None if symmetric else np.arange(a.shape[0])
    return _infonce(a, b, scale, "cross", True, rows=rows)


def dcl(a, b, scale, negatives="views", pos_weights=None) -> Ref:
    """Decoupled: positive removed from the denominator; ``pos_weights`` (B,) held constant (DCLW)."""
    return _infonce(a, b, scale, negatives, False, pos_weights=pos_weights)


def dclw_weights(a, b, sigma) -> np.ndarray:
    """w_i = 2 - B * softmax_i(<a_i, b_i> / sigma) on the normalised features."""
    s = (normalize(a) * normalize(b)).sum(axis=1) / sigma
    e = np.exp(s - s.max())
    return 2.0 - a.shape[0] * e / e.sum()


def moco(a, b, scale, queue) -> Ref:
    """One-way InfoNCE of a_i against all keys b_j plus the (normalised, constant) queue keys."""
    return _infonce(a, b, scale, "cross", True, rows=np.arange(a.shape[0]), queue=queue)


# --- SigLIP ------------------------------------------------------------------------------------------
def siglip(a, b, scale, bias) -> Ref:
    """-(1/B) sum_ij log sigmoid(z_ij (t s_ij + b)), z = +1 on the diagonal, -1 off it."""
    size = a.shape[0]
    _, _, sim = _similarities(a, b)
    cross = sim[:size, size:]
    sign = np.where(np.eye(size, dtype=bool), 1.0, -1.0)
    x = sign * (scale * cross + bias)
    value = np.logaddexp(0.0, -x).sum() / size
    dlogit = -sign / (1.0 + np.exp(x)) / size  # d softplus(-x)/d logit
    dlogits = np.zeros_like(sim)
    dlogits[:size, size:] = dlogit
    return _finish(a, b, value, dlogits, scale, grad_bias=dlogit.sum())


# --- per-sample partition estimates (SogCLR, Bayes) ----------------------------------------------------
def population(num_samples: int, negatives: str) -> int:
    """P: terms of an anchor's partition sum over the whole dataset, positive included."""
    return num_samples if negatives == "cross" else 2 * num_samples - 1


def zhat_weights(size, negatives, include_positive, num_samples=None) -> np.ndarray:
    """(2B, 2B) weights W with Zhat_r = sum_c W_rc exp(logit_rc).

    Without the positive: the mean over the batch negatives. With it (an unbiased estimate of the
    population mean over P terms): the positive weighted 1/P, the batch negatives (P - 1)/P by their mean.
    """
    pos, mask = layout(size, negatives, include_positive=False)
    weights = mask / mask.sum(axis=1, keepdims=True)
    if include_positive:
        p = population(num_samples, negatives)
        weights *= (p - 1) / p
        weights[np.arange(2 * size), pos] = 1.0 / p
    return weights


def log_zhat(a, b, scale, negatives, include_positive, num_samples=None) -> np.ndarray:
    """(2B,) log Zhat of each anchor row (see ``zhat_weights``)."""
    _, _, sim = _similarities(a, b)
    weights = zhat_weights(a.shape[0], negatives, include_positive, num_samples)
    return np.log((weights * np.exp(scale * sim)).sum(axis=1))


def partition(a, b, scale, negatives, include_positive, log_u, num_samples=None) -> Ref:
    """Mean over the 2B rows of ``u_r * Zhat_r - log u_r - 1 - logit_pos``, u (2B,) held constant."""
    _, _, sim = _similarities(a, b)
    size = a.shape[0]
    r = np.arange(2 * size)
    pos, _ = layout(size, negatives, include_positive)
    terms = zhat_weights(size, negatives, include_positive, num_samples) * np.exp(scale * sim)
    u = np.exp(log_u)
    value = (u * terms.sum(axis=1) - log_u - 1.0 - scale * sim[r, pos]).mean()
    dlogits = u[:, None] * terms
    dlogits[r, pos] -= 1.0
    return _finish(a, b, value, dlogits / (2 * size), scale)


def libauc_grad(a, b, temperature, negatives, include_positive, z_estimate, num_samples=None):
    """SogCLR's step written anchor by anchor, LibAUC style (no surrogate value involved).

    For anchor r with running estimate ``z_estimate[r]`` of its partition mean: ``-grad s_rr+ / T +
    sum_j c_rj (exp(s_rj / T) / z_estimate[r]) grad s_rj / T``, averaged over rows, where c_rj is 1/n
    over the n batch negatives (LibAUC) or, with the positive, 1/P for it and (P-1)/(P n) for each negative.
    """
    z = np.concatenate([normalize(a), normalize(b)])
    pos, mask = layout(a.shape[0], negatives, include_positive=False)
    p = population(num_samples, negatives) if include_positive else None
    dz = np.zeros_like(z)
    for r in range(len(z)):
        cols = np.flatnonzero(mask[r])
        coef = {int(j): 1.0 / len(cols) if p is None else (p - 1) / p / len(cols) for j in cols}
        if p is not None:
            coef[int(pos[r])] = 1.0 / p
        for j, c in coef.items():
            weight = c * np.exp(z[r] @ z[j] / temperature) / z_estimate[r]
            dz[r] += weight * z[j] / temperature
            dz[j] += weight * z[r] / temperature
        dz[r] -= z[pos[r]] / temperature
        dz[pos[r]] -= z[r] / temperature
    dz /= len(z)
    size = a.shape[0]
    return _normalize_backward(a, dz[:size]), _normalize_backward(b, dz[size:])


def running_log_z(old: np.ndarray, seen: np.ndarray, new: np.ndarray, gamma: float) -> np.ndarray:
    """log of ``(1 - gamma) * exp(old) + gamma * exp(new)`` where seen, else ``new`` (first visit)."""
    blended = np.log((1.0 - gamma) * np.exp(old) + gamma * np.exp(new))
    return np.where(seen, blended, new)


def cosine_gamma(step: int, total_steps: int, gamma_min: float) -> float:
    """Cosine decay from 1 at step 0 to gamma_min at total_steps (LibAUC's schedule)."""
    progress = min(step, total_steps) / total_steps
    return gamma_min + (1.0 - gamma_min) * 0.5 * (1.0 + np.cos(np.pi * progress))


# --- finite differences --------------------------------------------------------------------------------
def numeric_grad(f: Callable[[np.ndarray], float], x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central finite-difference gradient of a scalar function of an array."""
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        up = f(x)
        x[i] = old - eps
        down = f(x)
        x[i] = old
        grad[i] = (up - down) / (2 * eps)
    return grad


def numeric_ref(fn: Callable[..., Ref], a, b, scale, **kwargs) -> Ref:
    """The value of ``fn`` and its gradients by finite differences (``bias`` in kwargs if used)."""
    value = fn(a, b, scale, **kwargs).value
    ga = numeric_grad(lambda x: fn(x, b, scale, **kwargs).value, a)
    gb = numeric_grad(lambda x: fn(a, x, scale, **kwargs).value, b)
    gs = numeric_grad(lambda x: fn(a, b, float(x[0]), **kwargs).value, np.array([scale]))[0]
    gbias = 0.0
    if "bias" in kwargs:
        rest = {k: v for k, v in kwargs.items() if k != "bias"}
        gbias = numeric_grad(lambda x: fn(a, b, scale, bias=float(x[0]), **rest).value, [kwargs["bias"]])[0]
    return Ref(value, ga, gb, gs, gbias)


class RunningState:
    """NumPy mirror of the per-sample ``log Z`` memory: slot 0 for the a-rows, slot 1 for the b-rows."""

    def __init__(self, num_samples: int):
        self.log_z = np.zeros((2, num_samples))
        self.seen = np.zeros((2, num_samples), dtype=bool)

    def visit(self, index, row_log_zhat, gamma) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Fold a batch in; returns the rows' (estimate before, seen before, estimate after)."""
        slots = np.repeat([0, 1], len(index))
        samples = np.concatenate([index, index])
        old, seen = self.log_z[slots, samples], self.seen[slots, samples]
        new = running_log_z(old, seen, row_log_zhat, gamma)
        self.log_z[slots, samples] = new
        self.seen[slots, samples] = True
        return old, seen, new
