"""SogCLR: per-sample moving-average denominators, LibAUC-style gradient, gamma schedules."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest
import torch

from workbench.losses import SogCLRLoss, build_loss

from . import reference as ref
from .conftest import (
    assert_chunked_matches,
    assert_close,
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


def _mode(negatives, include_positive):
    """Keyword arguments shared by the loss and the NumPy references."""
    return {"negatives": negatives, "include_positive": include_positive, "num_samples": N}


@pytest.mark.parametrize(("negatives", "include_positive"), MODES, ids=MODE_IDS)
def test_first_visit_uses_the_batch_estimate(negatives, include_positive):
    (call,) = calls(B, num_samples=N)
    mode = _mode(negatives, include_positive)
    loss = build_loss("sogclr", gamma=0.3, **mode)
    log_zhat = ref.log_zhat(call.a, call.b, 4.0, **mode)
    expected = checked_ref(ref.partition, call.a, call.b, 4.0, log_u=-log_zhat, **mode)
    assert_result(evaluate(loss, call.a, call.b, index=call.index, scale=4.0), expected)
    state = ref.RunningState(N)
    state.visit(call.index, log_zhat, gamma=1.0)
    assert_close(loss.log_z.numpy(), state.log_z, 1e-6)
    np.testing.assert_array_equal(loss.visited.numpy(), state.seen)


@pytest.mark.parametrize(("negatives", "include_positive"), MODES, ids=MODE_IDS)
@pytest.mark.parametrize("double_state", [True, False], ids=["float64-state", "float32-state"])
def test_later_visits_blend_with_gamma(negatives, include_positive, double_state):
    mode = _mode(negatives, include_positive)
    loss = SogCLRLoss(temperature=0.2, gamma=0.7, **mode)
    if double_state:
        loss.double()
    rtol = 1e-8 if double_state else 1e-6
    state = ref.RunningState(N)
    sequence = calls(B, steps=3, num_samples=N)
    assert np.intersect1d(sequence[0].index, sequence[1].index).size > 0
    for call in sequence:
        log_zhat = ref.log_zhat(call.a, call.b, 5.0, **mode)
        _, seen, new = state.visit(call.index, log_zhat, gamma=0.7)
        result = evaluate(loss, call.a, call.b, index=call.index)
        assert_result(result, ref.partition(call.a, call.b, 5.0, log_u=-new, **mode), rtol)
        grad_a, grad_b = ref.libauc_grad(call.a, call.b, 0.2, z_estimate=np.exp(new), **mode)
        assert_close(result.grad_a, grad_a, rtol)
        assert_close(result.grad_b, grad_b, rtol)
        assert_close(loss.log_z.double().numpy(), state.log_z, rtol)
    assert seen.any()


def test_gamma_one_forgets_the_past():
    loss = SogCLRLoss(N, temperature=0.2, gamma=1.0)
    first, second = calls(B, steps=2, num_samples=N)
    evaluate(loss, first.a, first.b, index=first.index)
    log_zhat = ref.log_zhat(second.a, second.b, 5.0, **_mode("cross", True))
    expected = ref.partition(second.a, second.b, 5.0, log_u=-log_zhat, **_mode("cross", True))
    assert_result(evaluate(loss, second.a, second.b, index=second.index), expected)


def test_cosine_gamma_schedule():
    loss = SogCLRLoss(N, gamma=0.6, gamma_schedule="cosine", total_steps=4)
    assert loss.current_gamma() == pytest.approx(1.0)
    for step in range(7):
        loss.steps.fill_(step)
        assert loss.current_gamma() == pytest.approx(ref.cosine_gamma(step, 4, 0.6))
    loss.steps.fill_(4)
    assert loss.current_gamma() == pytest.approx(0.6)
    loss.steps.fill_(2)
    assert loss.current_gamma() == pytest.approx(0.8)


def test_constant_gamma_ignores_steps():
    loss = SogCLRLoss(N, gamma=0.6)
    loss.steps.fill_(5)
    assert loss.current_gamma() == 0.6


def test_cosine_schedule_drives_the_running_average():
    loss = SogCLRLoss(N, temperature=0.2, gamma=0.5, gamma_schedule="cosine", total_steps=2).double()
    state = ref.RunningState(N)
    for step, call in enumerate(calls(B, steps=4, num_samples=N)):
        gamma = ref.cosine_gamma(step, 2, 0.5)
        state.visit(call.index, ref.log_zhat(call.a, call.b, 5.0, **_mode("cross", True)), gamma)
        evaluate(loss, call.a, call.b, index=call.index)
        assert_close(loss.log_z.numpy(), state.log_z, 1e-10)
    assert int(loss.steps) == 4


def test_steps_count_training_calls_only():
    loss = SogCLRLoss(N)
    first, second = calls(B, steps=2, num_samples=N)
    evaluate(loss, first.a, first.b, index=first.index)
    loss.eval()
    evaluate(loss, second.a, second.b, index=second.index)
    assert int(loss.steps) == 1


@pytest.mark.parametrize("chunk_size", [1, 5, 16, 64])
@pytest.mark.parametrize(("negatives", "include_positive"), MODES, ids=MODE_IDS)
def test_chunked_matches_unchunked(chunk_size, negatives, include_positive):
    make = partial(SogCLRLoss, 50, 0.2, gamma=0.8, negatives=negatives, include_positive=include_positive)
    assert_chunked_matches(make, chunk_size, calls(37, steps=2, num_samples=50), scale=5.0)


@pytest.mark.parametrize("chunk_size", [None, 3])
@pytest.mark.parametrize("negatives", ["cross", "views"])
@pytest.mark.parametrize("warm", [False, True], ids=["first-visit", "gamma-1-revisit"])
def test_gradcheck(chunk_size, negatives, warm):
    # u_i is recomputed from the perturbed inputs, so finite differences see its dependence too; the
    # surrogate is stationary in u at u = 1 / Zhat (first visit, or gamma = 1), where that term vanishes.
    loss = SogCLRLoss(N, 0.3, gamma=1.0 if warm else 0.6, negatives=negatives, chunk_size=chunk_size)
    first, second = calls(5, dim=3, steps=2, num_samples=N)
    if warm:
        evaluate(loss, first.a, first.b, index=first.index)
    gradcheck_loss(loss, second, scale=2.0)


@pytest.mark.parametrize("negatives", ["cross", "views"])
def test_permutation_equivariance(negatives):
    make = partial(SogCLRLoss, 15, 0.2, gamma=0.6, negatives=negatives)
    assert_permutation_equivariant(make, calls(9, steps=2, num_samples=15))


def test_state_dict_round_trip():
    assert_state_round_trip(partial(SogCLRLoss, N, 0.2, gamma=0.6), calls(B, steps=3, num_samples=N))


def test_reset_state_forgets_everything():
    loss = SogCLRLoss(N, gamma=0.5)
    first, second = calls(B, steps=2, num_samples=N)
    evaluate(loss, first.a, first.b, index=first.index)
    loss.reset_state()
    assert not loss.visited.any() and int(loss.steps) == 0 and not loss.log_z.any()
    log_zhat = ref.log_zhat(second.a, second.b, 10.0, **_mode("cross", True))
    expected = ref.partition(second.a, second.b, 10.0, log_u=-log_zhat, **_mode("cross", True))
    assert_result(evaluate(loss, second.a, second.b, index=second.index), expected)


def test_bad_index():
    assert_rejects_bad_index(SogCLRLoss(N), B, N)


def test_num_samples_is_required():
    with pytest.raises(ValueError, match="num_samples"):
        build_loss("sogclr")


@pytest.mark.parametrize("num_samples", [1, 0, 2.5, True])
def test_bad_num_samples(num_samples):
    with pytest.raises(ValueError, match="num_samples"):
        build_loss("sogclr", num_samples=num_samples)


@pytest.mark.parametrize("gamma", [0.0, -0.1, 1.5, math.nan])
def test_bad_gamma(gamma):
    with pytest.raises(ValueError, match="gamma"):
        build_loss("sogclr", num_samples=N, gamma=gamma)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"gamma_schedule": "linear"}, "gamma_schedule"),
        ({"gamma_schedule": "cosine"}, "total_steps"),
        ({"gamma_schedule": "cosine", "total_steps": 0}, "total_steps"),
        ({"negatives": "queue"}, "negatives"),
    ],
)
def test_bad_options(params, match):
    with pytest.raises(ValueError, match=match):
        build_loss("sogclr", num_samples=N, **params)


def test_index_may_be_a_list():
    loss = SogCLRLoss(N)
    a, b = (torch.tensor(x) for x in (calls(B)[0].a, calls(B)[0].b))
    assert loss(a, b, index=list(range(B))).ndim == 0
