"""MoCo: InfoNCE against in-batch keys plus a FIFO queue of past keys."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest
import torch

from workbench.losses import ClipLoss, MoCoLoss, build_loss

from . import reference as ref
from .conftest import (
    assert_chunked_matches,
    assert_close,
    assert_permutation_equivariant,
    assert_result,
    assert_state_round_trip,
    calls,
    checked_ref,
    evaluate,
    features,
    gradcheck_loss,
)


def _queue(loss: MoCoLoss) -> np.ndarray:
    return loss.queue[: int(loss.queue_filled)].double().numpy()


def test_first_call_matches_reference_with_empty_queue():
    a, b = features()
    expected = checked_ref(ref.moco, a, b, 5.0, queue=None)
    assert_result(evaluate(build_loss("moco", temperature=0.2), a, b, scale=None), expected)
    assert_result(evaluate(MoCoLoss(), a, b, scale=5.0), expected)


def test_queue_fills_fifo():
    loss = MoCoLoss(queue_size=5)
    (first, second) = calls(3, dim=4, steps=2)
    evaluate(loss, first.a, first.b)
    assert (int(loss.queue_filled), int(loss.queue_ptr)) == (3, 3)
    assert_close(_queue(loss), ref.normalize(first.b), 1e-6)
    evaluate(loss, second.a, second.b)
    assert (int(loss.queue_filled), int(loss.queue_ptr)) == (5, 1)
    keys = ref.normalize(second.b)
    expected = np.concatenate([keys[2:], ref.normalize(first.b)[1:], keys[:2]])
    assert_close(loss.queue.double().numpy(), expected, 1e-6)


def test_batch_larger_than_queue_keeps_latest_keys():
    loss = MoCoLoss(queue_size=2)
    (call,) = calls(3, dim=4)
    evaluate(loss, call.a, call.b)
    assert (int(loss.queue_filled), int(loss.queue_ptr)) == (2, 0)
    assert_close(_queue(loss), ref.normalize(call.b)[1:], 1e-6)


@pytest.mark.parametrize("chunk_size", [None, 2])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_second_call_uses_first_call_keys_as_negatives(chunk_size, dtype):
    # float32 also checks that the keys used in the graph are not the queue updated in place after.
    loss = MoCoLoss(temperature=0.25, queue_size=16, chunk_size=chunk_size)
    first, second = calls(4, dim=3, steps=2)
    evaluate(loss, first.a, first.b, dtype=dtype)
    stored = _queue(loss)
    assert_close(stored, ref.normalize(first.b), 1e-6)
    expected = checked_ref(ref.moco, second.a, second.b, 4.0, queue=stored)
    rtol = 1e-8 if dtype == torch.float64 else 1e-5
    assert_result(evaluate(loss, second.a, second.b, scale=4.0, dtype=dtype), expected, rtol)


def test_queue_size_zero_is_one_way_clip():
    loss, clip = MoCoLoss(0.2, queue_size=0), ClipLoss(0.2, symmetric=False)
    for call in calls(6, steps=3):
        assert_result(evaluate(loss, call.a, call.b), evaluate(clip, call.a, call.b), rtol=1e-12)
    assert int(loss.queue_filled) == 0


def test_queued_keys_carry_no_gradient():
    loss = MoCoLoss(queue_size=8)
    first, second = calls(4, steps=2)
    b1 = torch.tensor(first.b, requires_grad=True)
    loss(torch.tensor(first.a), b1)
    a2 = torch.tensor(second.a, requires_grad=True)
    loss(a2, torch.tensor(second.b)).backward()
    assert a2.grad is not None and b1.grad is None
    assert not loss.queue.requires_grad


@pytest.mark.parametrize("chunk_size", [1, 5, 16, 64])
def test_chunked_matches_unchunked(chunk_size):
    make = partial(MoCoLoss, 0.2, queue_size=50)
    assert_chunked_matches(make, chunk_size, calls(37, steps=3), scale=5.0)


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_gradcheck_with_filled_queue(chunk_size):
    loss = MoCoLoss(0.3, queue_size=7, chunk_size=chunk_size)
    first, second = calls(5, dim=3, steps=2)
    evaluate(loss, first.a, first.b)
    gradcheck_loss(loss, second, scale=2.0)


def test_permutation_equivariance():
    assert_permutation_equivariant(partial(MoCoLoss, 0.2, queue_size=11), calls(9, steps=2))


def test_state_dict_round_trip_resizes_queue():
    make = partial(MoCoLoss, 0.2, queue_size=10)
    assert tuple(make().queue.shape) == (0, 0)
    assert_state_round_trip(make, calls(4, steps=3))


def test_loaded_queue_has_saved_shape():
    trained = MoCoLoss(queue_size=6)
    (call,) = calls(4, dim=3)
    evaluate(trained, call.a, call.b)
    restored = MoCoLoss(queue_size=6)
    restored.load_state_dict(trained.state_dict())
    assert tuple(restored.queue.shape) == (6, 3)
    assert int(restored.queue_filled) == 4


def test_reset_state_empties_queue():
    loss = MoCoLoss(0.2, queue_size=8)
    first, second = calls(4, steps=2)
    evaluate(loss, first.a, first.b)
    loss.reset_state()
    assert int(loss.queue_filled) == 0
    assert_result(evaluate(loss, second.a, second.b), ref.moco(second.a, second.b, 5.0, queue=None))


def test_feature_dimension_must_match_queue():
    loss = MoCoLoss(queue_size=8)
    evaluate(loss, *features(dim=4))
    with pytest.raises(ValueError, match="feature dimension"):
        evaluate(loss, *features(dim=5))


@pytest.mark.parametrize("queue_size", [-1, 2.5, True])
def test_bad_queue_size(queue_size):
    with pytest.raises(ValueError, match="queue_size"):
        build_loss("moco", queue_size=queue_size)


def test_global_objective_is_one_way_clip():
    target = MoCoLoss(0.3, queue_size=4).global_objective()
    assert isinstance(target, ClipLoss)
    assert (target.temperature, target.symmetric) == (0.3, False)


def test_log_normalizer_counts_queue():
    loss = MoCoLoss(queue_size=5)
    assert loss.log_normalizer(4) == pytest.approx(math.log(4))
    evaluate(loss, *features(batch=4))
    assert loss.log_normalizer(4) == pytest.approx(math.log(8))
