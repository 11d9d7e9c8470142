"""CLIP's symmetric InfoNCE: reference, learnable clamped scale, one-way mode, chunking, symmetry."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from workbench.losses import ClipLoss, build_loss

from . import reference as ref
from .conftest import (
    assert_chunked_matches,
    assert_close,
    assert_permutation_equivariant,
    assert_result,
    calls,
    checked_ref,
    evaluate,
    features,
    gradcheck_loss,
)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_matches_reference(symmetric, temperature):
    a, b = features()
    expected = checked_ref(ref.clip, a, b, 1.0 / temperature, symmetric=symmetric)
    loss = build_loss("clip", temperature=temperature, symmetric=symmetric)
    assert_result(evaluate(loss, a, b), expected)


@pytest.mark.parametrize("symmetric", [True, False])
def test_learnable_scale_matches_reference(symmetric):
    a, b = features(seed=1)
    expected = checked_ref(ref.clip, a, b, 20.0, symmetric=symmetric)
    assert_result(evaluate(ClipLoss(symmetric=symmetric), a, b, scale=20.0), expected)


def test_scale_is_clamped_at_100():
    a, b = features(seed=2)
    clamped = evaluate(ClipLoss(), a, b, scale=1000.0)
    at_max = evaluate(ClipLoss(), a, b, scale=100.0)
    assert_close(clamped.value, ref.clip(a, b, 100.0).value, 1e-10)
    assert_close(clamped.value, at_max.value, 1e-12)
    assert_close(clamped.grad_a, at_max.grad_a, 1e-12)
    assert clamped.grad_scale == 0.0
    assert at_max.grad_scale != 0.0


def test_max_scale_is_configurable():
    a, b = features(seed=3)
    result = evaluate(ClipLoss(max_scale=10.0), a, b, scale=50.0)
    assert_close(result.value, ref.clip(a, b, 10.0).value, 1e-10)
    assert result.grad_scale == 0.0


@pytest.mark.parametrize("chunk_size", [1, 5, 16, 64])
@pytest.mark.parametrize("symmetric", [True, False])
def test_chunked_matches_unchunked(chunk_size, symmetric):
    make = partial(ClipLoss, 0.1, symmetric=symmetric)
    assert_chunked_matches(make, chunk_size, calls(37), scale=14.0)


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_gradcheck(chunk_size):
    gradcheck_loss(ClipLoss(0.3, chunk_size=chunk_size), calls(5, dim=3)[0], scale=3.0)


@pytest.mark.parametrize("symmetric", [True, False])
def test_permutation_equivariance(symmetric):
    assert_permutation_equivariant(partial(ClipLoss, 0.1, symmetric=symmetric), calls(9))


def test_one_way_is_the_a_to_b_half():
    a, b = features(seed=5)
    forward = evaluate(ClipLoss(symmetric=False), a, b).value
    backward = evaluate(ClipLoss(symmetric=False), b, a).value
    assert_close(evaluate(ClipLoss(), a, b).value, (forward + backward) / 2, 1e-12)


def test_bias_is_rejected():
    a, b = features()
    with pytest.raises(ValueError, match="bias"):
        ClipLoss()(torch.tensor(a), torch.tensor(b), bias=-10.0)


@pytest.mark.parametrize("scale", [0.0, -1.0, math.nan, math.inf])
def test_bad_call_scale(scale):
    a, b = features()
    with pytest.raises(ValueError, match="scale"):
        ClipLoss()(torch.tensor(a), torch.tensor(b), scale=scale)


def test_non_scalar_scale():
    a, b = features()
    with pytest.raises(ValueError, match="scale"):
        ClipLoss()(torch.tensor(a), torch.tensor(b), scale=torch.ones(2))


def test_log_normalizer_counts_partition_terms():
    assert ClipLoss().log_normalizer(8) == pytest.approx(math.log(8))
