"""NT-Xent (SimCLR): NumPy reference, pytorch-metric-learning, chunking, gradcheck, symmetry."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest
import torch

from workbench.losses import NTXentLoss, build_loss

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


@pytest.mark.parametrize("temperature", [0.5, 0.1])
def test_matches_reference(temperature):
    a, b = features()
    expected = checked_ref(ref.ntxent, a, b, 1.0 / temperature)
    assert_result(evaluate(build_loss("ntxent", temperature=temperature), a, b), expected)


def test_passed_scale_matches_reference_and_gets_gradient():
    a, b = features(seed=1)
    expected = checked_ref(ref.ntxent, a, b, 3.0)
    result = evaluate(build_loss("ntxent"), a, b, scale=3.0)
    assert result.grad_scale != 0.0
    assert_result(result, expected)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("temperature", [0.5, 0.07])
def test_matches_pytorch_metric_learning(dtype, temperature):
    # PML averages -log p over the positive pairs. SelfSupervisedLoss stacks [a; b] with labels
    # [0..B-1, 0..B-1], so there are exactly 2B positive pairs (a_i, b_i) and (b_i, a_i), each with the
    # other 2B - 2 embeddings as negatives: the mean over the 2B anchors of NT-Xent.
    pml = pytest.importorskip("pytorch_metric_learning.losses")
    a, b = features(batch=7, dim=5, seed=2)
    other = pml.SelfSupervisedLoss(pml.NTXentLoss(temperature=temperature))
    ours = NTXentLoss(temperature=temperature)
    results = [evaluate(lambda x, y, fn=fn, **_: fn(x, y), a, b, dtype=dtype) for fn in (ours, other)]
    assert_result(results[0], results[1], rtol=1e-12 if dtype == torch.float64 else 2e-5)


@pytest.mark.parametrize("chunk_size", [1, 5, 16, 64])
def test_chunked_matches_unchunked(chunk_size):
    assert_chunked_matches(partial(NTXentLoss, 0.2), chunk_size, calls(37), scale=4.0)


@pytest.mark.parametrize("chunk_size", [None, 3])
def test_gradcheck(chunk_size):
    gradcheck_loss(NTXentLoss(0.3, chunk_size=chunk_size), calls(5, dim=3)[0], scale=2.5)


def test_permutation_equivariance():
    assert_permutation_equivariant(partial(NTXentLoss, 0.2), calls(9))


def test_log_normalizer_counts_partition_terms():
    assert NTXentLoss().log_normalizer(8) == pytest.approx(math.log(15))


def test_normalize_false_uses_features_as_given():
    a, b = features(seed=4)
    raw = evaluate(NTXentLoss(normalize=False), ref.normalize(a) * 2, ref.normalize(b) * 2)
    assert_close(raw.value, ref.ntxent(a, b, 4 / 0.5).value, 1e-10)
    assert not np.isclose(raw.value, ref.ntxent(a, b, 1 / 0.5).value)
