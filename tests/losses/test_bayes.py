"""The decomposable Bayesian loss: its E-step estimators (bank, exact, running, batch) and Gamma draws."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest
import torch

from workbench.losses import BayesLoss, ClipLoss, DCLLoss, NTXentLoss, build_loss

from . import reference as ref
from .conftest import (
    assert_chunked_matches,
    assert_close,
    assert_grads_match,
    assert_permutation_equivariant,
    assert_rejects_bad_index,
    assert_result,
    assert_state_round_trip,
    calls,
    checked_ref,
    evaluate,
    gradcheck_loss,
)

N, B = 10, 6
MODES = [(neg, inc) for neg in ("cross", "views") for inc in (True, False)]
MODE_IDS = [f"{neg}-{'pos' if inc else 'nopos'}" for neg, inc in MODES]


def _mode(negatives, include_positive, num_samples=N):
    """Keyword arguments shared by the loss and the NumPy references."""
    return {"negatives": negatives, "include_positive": include_positive, "num_samples": num_samples}


def _infonce(negatives, include_positive, temperature, normalize=True):
    """The minibatch InfoNCE with the same partition terms."""
    if not include_positive:
        return DCLLoss(temperature, negatives=negatives, normalize=normalize)
    cls = ClipLoss if negatives == "cross" else NTXentLoss
    return cls(temperature, normalize=normalize)


def _point_estimate(negatives, include_positive, normalize=True):
    """u = 1 / Zhat of the current batch: the deterministic, memoryless ablation."""
    mode = _mode(negatives, include_positive)
    return BayesLoss(temperature=0.2, shape=math.inf, estimator="batch", normalize=normalize, **mode)


def _bound(loss, index):
    return lambda a, b: loss(a, b, index=torch.as_tensor(index))


@pytest.mark.parametrize(("negatives", "include_positive"), MODES, ids=MODE_IDS)
def test_point_estimate_with_batch_rate_is_grad_log_zhat(negatives, include_positive):
    mode = _mode(negatives, include_positive)
    loss = build_loss("bayes", shape=math.inf, estimator="batch", gamma=0.3, **mode)
    for call in calls(B, steps=2, num_samples=N):  # no memory: every call is the batch estimate
        log_zhat = ref.log_zhat(call.a, call.b, 4.0, **mode)
        expected = checked_ref(ref.partition, call.a, call.b, 4.0, log_u=-log_zhat, **mode)
        assert_result(evaluate(loss, call.a, call.b, index=call.index, scale=4.0), expected)
    assert not loss.visited.any()


@pytest.mark.parametrize(("negatives", "include_positive"), MODES, ids=MODE_IDS)
@pytest.mark.parametrize("normalize", [True, False])
def test_point_estimate_at_full_batch_is_infonce(negatives, include_positive, normalize):
    # At B = N the batch estimate is the population mean: the step is minibatch InfoNCE's gradient,
    # and the surrogate's value is InfoNCE's minus the log of the number of partition terms.
    (call,) = calls(N, num_samples=N)
    loss = _point_estimate(negatives, include_positive, normalize)
    target = _infonce(negatives, include_positive, 0.2, normalize)
    assert_grads_match(_bound(loss, call.index), target, call.a, call.b)
    value = evaluate(loss, call.a, call.b, index=call.index).value
    assert_close(value, evaluate(target, call.a, call.b).value - target.log_normalizer(N), 1e-12)


@pytest.mark.parametrize(("negatives", "include_positive"), MODES, ids=MODE_IDS)
@pytest.mark.parametrize("normalize", [True, False])
def test_full_batch_point_estimate_follows_the_global_objective(negatives, include_positive, normalize):
    (call,) = calls(N, num_samples=N)
    loss = _point_estimate(negatives, include_positive, normalize)
    assert_grads_match(_bound(loss, call.index), loss.global_objective(), call.a, call.b)


@pytest.mark.parametrize("negatives", ["cross", "views"])
def test_point_estimate_without_positive_is_dcl_at_any_batch_size(negatives):
    (call,) = calls(B, num_samples=N)
    loss = _point_estimate(negatives, include_positive=False)
    assert_grads_match(_bound(loss, call.index), DCLLoss(0.2, negatives=negatives), call.a, call.b)


@pytest.mark.parametrize(("negatives", "include_positive"), MODES, ids=MODE_IDS)
@pytest.mark.parametrize("double_state", [True, False], ids=["float64-state", "float32-state"])
def test_running_rate_is_the_estimate_from_before_the_update(negatives, include_positive, double_state):
    mode = _mode(negatives, include_positive)
    loss = BayesLoss(temperature=0.2, shape=math.inf, estimator="running", gamma=0.3, **mode)
    if double_state:
        loss.double()
    rtol = 1e-8 if double_state else 1e-6
    state, mixed = ref.RunningState(N), False
    for call in calls(B, steps=3, num_samples=N):
        log_zhat = ref.log_zhat(call.a, call.b, 5.0, **mode)
        old, seen, _ = state.visit(call.index, log_zhat, gamma=0.3)
        mixed |= seen.any() and not seen.all()
        log_rate = np.where(seen, old, log_zhat)  # first visit: the batch estimate is all there is
        result = evaluate(loss, call.a, call.b, index=call.index)
        assert_result(result, ref.partition(call.a, call.b, 5.0, log_u=-log_rate, **mode), rtol)
        grad_a, grad_b = ref.libauc_grad(call.a, call.b, 0.2, z_estimate=np.exp(log_rate), **mode)
        assert_close(result.grad_a, grad_a, rtol)
        assert_close(result.grad_b, grad_b, rtol)
        assert_close(loss.log_z.double().numpy(), state.log_z, rtol)
    assert mixed  # some call revisits some rows and meets others for the first time


def _gamma_draws(shape: float, batches: int, size: int = 40) -> np.ndarray:
    """Draws of ``u_r * Zhat_r`` recovered from the public gradient, ``batches * 2 * size`` of them.

    With the batch rate the step is exactly affine in u, ``g(u) = g(1/Zhat) + V (u - 1/Zhat)``, with the
    columns of V from the NumPy reference; least squares on each gradient gives the batch's 2B draws.
    """
    (call,) = calls(size, dim=8, num_samples=size)
    mode = _mode("cross", True, num_samples=size)
    inv_z = np.exp(-ref.log_zhat(call.a, call.b, 2.0, **mode))

    def step(u):
        result = ref.partition(call.a, call.b, 2.0, log_u=np.log(u), **mode)
        return np.concatenate([result.grad_a.ravel(), result.grad_b.ravel()])

    base = step(inv_z)
    basis = np.stack([step(inv_z + unit) - base for unit in np.eye(2 * size)], axis=1)
    loss = BayesLoss(temperature=0.5, shape=shape, estimator="batch", **mode)
    grads = []
    for _ in range(batches):
        result = evaluate(loss, call.a, call.b, index=call.index)
        grads.append(np.concatenate([result.grad_a.ravel(), result.grad_b.ravel()]) - base)
    deltas, *_ = np.linalg.lstsq(basis, np.stack(grads, axis=1), rcond=None)
    assert_close(basis @ deltas, np.stack(grads, axis=1), 1e-8)  # the step really is affine in u
    return ((inv_z[:, None] + deltas) / inv_z[:, None]).ravel()


@pytest.mark.parametrize("shape", [1.0, 4.0])
def test_gamma_draws_have_mean_one_over_z(shape):
    # u ~ Gamma(k, rate k Z): u Z ~ Gamma(k, rate k), mean 1 and variance 1/k.
    torch.manual_seed(123)
    x = _gamma_draws(shape, batches=25)
    stderr = x.std(ddof=1) / np.sqrt(len(x))
    assert len(x) == 2000 and stderr < 0.03
    assert abs(x.mean() - 1.0) < 4 * stderr
    assert abs(x.var(ddof=1) * shape - 1.0) < 0.15
    assert np.mean(x > 1.0) == pytest.approx(1 - _gamma_cdf_at_mean(shape), abs=0.05)


def _gamma_cdf_at_mean(shape: float) -> float:
    """P(X <= 1) for X ~ Gamma(k, rate k), k integer: 1 - exp(-k) sum_{n<k} k^n / n!."""
    k = int(shape)
    return 1.0 - math.exp(-k) * sum(k**n / math.factorial(n) for n in range(k))


def test_draws_are_reproducible_under_a_seed():
    (call,) = calls(B, num_samples=N)
    results = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        results.append(evaluate(BayesLoss(N, shape=2.0), call.a, call.b, index=call.index))
    assert_result(results[1], results[0], rtol=0.0)
    assert not np.allclose(results[2].grad_a, results[0].grad_a)


CHUNK_CONFIGS = [
    ("cross", True, math.inf, "running"),
    ("views", False, math.inf, "running"),
    ("views", True, 2.0, "running"),
    ("cross", True, math.inf, "bank"),
    ("views", True, 2.0, "bank"),
]


@pytest.mark.parametrize("chunk_size", [1, 5, 16, 64])
@pytest.mark.parametrize(("negatives", "include_positive", "shape", "estimator"), CHUNK_CONFIGS)
def test_chunked_matches_unchunked(chunk_size, negatives, include_positive, shape, estimator):
    make = partial(
        BayesLoss, 50, 0.2, shape=shape, estimator=estimator, gamma=0.4, negatives=negatives,
        include_positive=include_positive,
    )  # fmt: skip
    assert_chunked_matches(make, chunk_size, calls(37, steps=2, num_samples=50), scale=5.0)


@pytest.mark.parametrize("chunk_size", [None, 3])
@pytest.mark.parametrize(
    ("negatives", "shape", "warm"),
    [
        ("cross", math.inf, False),
        ("views", math.inf, False),
        ("cross", math.inf, True),
        ("views", math.inf, True),
        ("cross", 2.0, True),
    ],
)
def test_gradcheck(chunk_size, negatives, shape, warm):
    # On a revisit the rate is the stored estimate, independent of the inputs, so the weight is a
    # constant for finite differences too; on a first visit u = 1 / Zhat, where the surrogate is
    # stationary in u (only valid for the point estimate).
    loss = BayesLoss(
        N, 0.3, shape=shape, estimator="running", gamma=0.5, negatives=negatives, chunk_size=chunk_size
    )
    first, second = calls(5, dim=3, steps=2, num_samples=N)
    if warm:  # every row of the checked call is then a revisit
        evaluate(loss, first.a, first.b, index=second.index)
    gradcheck_loss(loss, second, scale=2.0, seed=11)


@pytest.mark.parametrize("chunk_size", [None, 3])
@pytest.mark.parametrize("negatives", ["cross", "views"])
def test_gradcheck_cold_bank(chunk_size, negatives):
    # An empty bank holds only the batch once it is written, so its E-step is the batch estimate and
    # the point-estimate surrogate is stationary in u there: finite differences agree.
    loss = BayesLoss(N, 0.3, shape=math.inf, estimator="bank", negatives=negatives, chunk_size=chunk_size)
    (call,) = calls(5, dim=3, num_samples=N)
    gradcheck_loss(loss, call, scale=2.0)


@pytest.mark.parametrize("estimator", ["running", "bank"])
@pytest.mark.parametrize("negatives", ["cross", "views"])
def test_permutation_equivariance(negatives, estimator):
    make = partial(BayesLoss, 15, 0.2, shape=math.inf, estimator=estimator, gamma=0.4, negatives=negatives)
    assert_permutation_equivariant(make, calls(9, steps=2, num_samples=15))


@pytest.mark.parametrize("estimator", ["running", "bank"])
def test_state_dict_round_trip(estimator):
    make = partial(BayesLoss, N, 0.2, shape=math.inf, estimator=estimator, gamma=0.4)
    assert_state_round_trip(make, calls(B, steps=3, num_samples=N))


def test_bad_index():
    assert_rejects_bad_index(BayesLoss(N), B, N)


def test_num_samples_is_required():
    with pytest.raises(ValueError, match="num_samples"):
        build_loss("bayes")


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"shape": 0.0}, "shape"),
        ({"shape": -1.0}, "shape"),
        ({"shape": math.nan}, "shape"),
        ({"shape": True}, "shape"),
        ({"estimator": "mean"}, "estimator"),
        ({"bank_size": 0}, "bank_size"),
        ({"bank_size": N + 1}, "bank_size"),
        ({"bank_size": 2.5}, "bank_size"),
        ({"bank_size": True}, "bank_size"),
        ({"bank_size": 4, "estimator": "running"}, "bank_size"),
        ({"refresh_every": 0}, "refresh_every"),
        ({"refresh_every": 1.5}, "refresh_every"),
        ({"refresh_every": 2, "estimator": "batch"}, "refresh_every"),
        ({"gamma": 0.0}, "gamma"),
        ({"gamma": 1.5}, "gamma"),
        ({"negatives": "queue"}, "negatives"),
        ({"num_samples": 1}, "num_samples"),
    ],
)
def test_bad_options(params, match):
    with pytest.raises(ValueError, match=match):
        build_loss("bayes", **{"num_samples": N, **params})
