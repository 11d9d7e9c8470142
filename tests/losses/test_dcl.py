"""DCL and DCLW: positive out of the denominator, detached vMF weights, both negatives modes."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest
import torch

from workbench.losses import DCLLoss, DCLWLoss, build_loss

from . import reference as ref
from .conftest import (
    assert_chunked_matches,
    assert_permutation_equivariant,
    assert_result,
    calls,
    checked_ref,
    evaluate,
    features,
    gradcheck_loss,
)

NEGATIVES = ["views", "cross"]


@pytest.mark.parametrize("negatives", NEGATIVES)
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_dcl_matches_reference(negatives, temperature):
    a, b = features()
    expected = checked_ref(ref.dcl, a, b, 1.0 / temperature, negatives=negatives)
    loss = build_loss("dcl", temperature=temperature, negatives=negatives)
    assert_result(evaluate(loss, a, b, scale=None), expected)


@pytest.mark.parametrize("negatives", NEGATIVES)
def test_dcl_passed_scale_matches_reference(negatives):
    a, b = features(seed=1)
    expected = checked_ref(ref.dcl, a, b, 4.0, negatives=negatives)
    assert_result(evaluate(DCLLoss(negatives=negatives), a, b, scale=4.0), expected)


def test_dcl_default_is_views():
    a, b = features(seed=2)
    assert_result(evaluate(DCLLoss(), a, b), ref.dcl(a, b, 10.0, negatives="views"))


@pytest.mark.parametrize("negatives", NEGATIVES)
@pytest.mark.parametrize("sigma", [0.5, 2.0])
def test_dclw_matches_reference_with_fixed_weights(negatives, sigma):
    # The weights are computed without gradient (as lightly), so the reference holds them constant.
    a, b = features(seed=3)
    weights = ref.dclw_weights(a, b, sigma)
    assert np.abs(weights - 1).max() > 0.05
    expected = checked_ref(ref.dcl, a, b, 10.0, negatives=negatives, pos_weights=weights)
    loss = build_loss("dclw", temperature=0.1, sigma=sigma, negatives=negatives)
    assert_result(evaluate(loss, a, b, scale=10.0), expected)


@pytest.mark.parametrize("chunk_size", [1, 5, 16, 64])
@pytest.mark.parametrize("cls", [DCLLoss, DCLWLoss])
@pytest.mark.parametrize("negatives", NEGATIVES)
def test_chunked_matches_unchunked(chunk_size, cls, negatives):
    assert_chunked_matches(partial(cls, 0.2, negatives=negatives), chunk_size, calls(37), scale=4.0)


@pytest.mark.parametrize("chunk_size", [None, 3])
@pytest.mark.parametrize("negatives", NEGATIVES)
def test_dcl_gradcheck(chunk_size, negatives):
    gradcheck_loss(DCLLoss(0.3, negatives=negatives, chunk_size=chunk_size), calls(5, dim=3)[0], scale=2.0)


@pytest.mark.parametrize("cls", [DCLLoss, DCLWLoss])
@pytest.mark.parametrize("negatives", NEGATIVES)
def test_permutation_equivariance(cls, negatives):
    assert_permutation_equivariant(partial(cls, 0.2, negatives=negatives), calls(9))


@pytest.mark.parametrize("sigma", [0.0, -1.0, math.nan])
def test_dclw_bad_sigma(sigma):
    with pytest.raises(ValueError, match="sigma"):
        build_loss("dclw", sigma=sigma)


@pytest.mark.parametrize("name", ["dcl", "dclw"])
def test_bad_negatives(name):
    with pytest.raises(ValueError, match="negatives"):
        build_loss(name, negatives="queue")


@pytest.mark.parametrize(("negatives", "terms"), [("views", 2 * 8 - 2), ("cross", 8 - 1)])
def test_log_normalizer_counts_partition_terms(negatives, terms):
    assert DCLLoss(negatives=negatives).log_normalizer(8) == pytest.approx(math.log(terms))


def test_dclw_weights_take_no_gradient():
    a, b = (torch.tensor(x, requires_grad=True) for x in features(seed=4))
    weights = DCLWLoss().positive_weights(a, b)
    assert not weights.requires_grad
    assert torch.allclose(weights.sum(), torch.tensor(a.shape[0], dtype=weights.dtype))
