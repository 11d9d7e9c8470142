"""SigLIP's pairwise sigmoid loss: reference, sum over B^2 pairs / B, scale and bias, chunking."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest
import torch

from workbench.losses import SigLipLoss, build_loss

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


def test_default_matches_reference_at_paper_init():
    a, b = features()
    expected = checked_ref(ref.siglip, a, b, 10.0, bias=-10.0)
    assert_result(evaluate(build_loss("siglip"), a, b), expected)


@pytest.mark.parametrize(("scale", "bias"), [(10.0, -10.0), (3.0, 0.5), (25.0, -4.0)])
def test_call_time_scale_and_bias_match_reference(scale, bias):
    a, b = features(seed=1)
    expected = checked_ref(ref.siglip, a, b, scale, bias=bias)
    result = evaluate(SigLipLoss(), a, b, scale=scale, bias=bias)
    assert result.grad_scale != 0.0 and result.grad_bias != 0.0
    assert_result(result, expected)


def test_constructor_scale_and_bias():
    a, b = features(seed=2)
    assert_result(evaluate(SigLipLoss(scale=3.0, bias=0.5), a, b), ref.siglip(a, b, 3.0, 0.5))


def test_value_is_sum_over_pairs_divided_by_batch():
    size = 7
    a, b = features(batch=size, seed=3)
    sims = ref.normalize(a) @ ref.normalize(b).T
    labels = 2 * np.eye(size) - 1
    pair_terms = np.log1p(np.exp(-labels * (10.0 * sims - 10.0)))
    value = evaluate(SigLipLoss(), a, b).value
    assert_close(value, pair_terms.sum() / size, 1e-10)
    assert not np.isclose(value, pair_terms.mean())


def test_no_temperature_clamp_on_scale():
    a, b = features(seed=4)
    assert_close(evaluate(SigLipLoss(), a, b, scale=300.0).value, ref.siglip(a, b, 300.0, -10.0).value, 1e-10)


@pytest.mark.parametrize("chunk_size", [1, 5, 16, 64])
def test_chunked_matches_unchunked(chunk_size):
    assert_chunked_matches(partial(SigLipLoss), chunk_size, calls(37), scale=8.0, bias=-3.0)


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_gradcheck(chunk_size):
    gradcheck_loss(SigLipLoss(chunk_size=chunk_size), calls(5, dim=3)[0], scale=4.0, bias=-1.5)


def test_permutation_equivariance():
    assert_permutation_equivariant(SigLipLoss, calls(9))


@pytest.mark.parametrize("scale", [0.0, -2.0, math.nan])
def test_bad_constructor_scale(scale):
    with pytest.raises(ValueError, match="scale"):
        build_loss("siglip", scale=scale)


@pytest.mark.parametrize("bias", [math.nan, math.inf, "x"])
def test_bad_constructor_bias(bias):
    with pytest.raises(ValueError, match="bias"):
        build_loss("siglip", bias=bias)


@pytest.mark.parametrize("bias", [torch.zeros(2), math.nan])
def test_bad_call_bias(bias):
    a, b = (torch.tensor(x) for x in features())
    with pytest.raises(ValueError, match="bias"):
        SigLipLoss()(a, b, bias=bias)


def test_temperature_is_not_a_siglip_parameter():
    with pytest.raises(ValueError, match="temperature"):
        build_loss("siglip", temperature=0.1)
