"""The registry and the contract every loss shares: construction, call signature, input validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from workbench.losses import (
    LOSSES,
    BayesLoss,
    ClipLoss,
    ContrastiveLoss,
    DCLLoss,
    MoCoLoss,
    NTXentLoss,
    SogCLRLoss,
    build_loss,
    loss_names,
    loss_parameters,
)

from . import reference as ref
from .conftest import assert_close, evaluate, features, state_of

NAMES = ["ntxent", "clip", "dcl", "dclw", "siglip", "moco", "sogclr", "bayes"]
STATEFUL = {"sogclr", "bayes"}
N = 12


def make(name: str, **params) -> ContrastiveLoss:
    if name in STATEFUL:
        params.setdefault("num_samples", N)
    return build_loss(name, **params)


def call(loss, a, b, **kwargs):
    """Call with a valid index where one is needed, and the same Gamma draws every time (bayes)."""
    if loss.__class__ in (SogCLRLoss, BayesLoss):
        kwargs.setdefault("index", torch.arange(a.shape[0]))
    torch.manual_seed(0)
    return loss(a, b, **kwargs)


def test_names():
    assert loss_names() == NAMES
    assert list(LOSSES) == NAMES
    assert all(issubclass(cls, ContrastiveLoss) for cls in LOSSES.values())


@pytest.mark.parametrize("name", NAMES)
def test_build_returns_the_registered_class(name):
    assert type(make(name)) is LOSSES[name]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_defaults_give_a_finite_scalar_with_gradients(name, dtype):
    a, b = features()
    result = evaluate(make(name), a, b, index=np.arange(len(a)) if name in STATEFUL else None, dtype=dtype)
    assert math.isfinite(result.value)
    assert np.isfinite(result.grad_a).all() and np.abs(result.grad_a).sum() > 0
    assert np.isfinite(result.grad_b).all() and np.abs(result.grad_b).sum() > 0


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_accumulate_in_float32(name, dtype):
    a, b = (torch.tensor(x, dtype=torch.float32) for x in features())
    value = call(make(name), a.to(dtype), b.to(dtype))
    assert value.dtype == torch.float32
    assert_close(value.item(), call(make(name), a, b).item(), 5e-2)


@pytest.mark.parametrize("name", NAMES)
def test_every_loss_accepts_chunk_size(name):
    a, b = (torch.tensor(x) for x in features(batch=9))
    values = [call(make(name, chunk_size=size), a, b) for size in (None, 2)]
    assert_close(values[1].item(), values[0].item(), 1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_normalize_false_on_unit_features_changes_nothing(name):
    a, b = (torch.tensor(ref.normalize(x)) for x in features())
    values = [call(make(name, normalize=flag), a, b).item() for flag in (True, False)]
    assert_close(values[1], values[0], 1e-12)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="infonce") as info:
        build_loss("infonce")
    assert all(name in str(info.value) for name in NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_unknown_parameter(name):
    with pytest.raises(ValueError, match="tempreature"):
        make(name, tempreature=0.1)


@pytest.mark.parametrize("name", sorted(STATEFUL))
def test_missing_num_samples(name):
    with pytest.raises(ValueError, match="num_samples"):
        build_loss(name)


def test_loss_parameters_report_defaults():
    assert loss_parameters("ntxent")["temperature"] == 0.5
    assert loss_parameters("clip")["temperature"] == 0.07
    assert loss_parameters("siglip")["scale"] == 10.0 and loss_parameters("siglip")["bias"] == -10.0
    assert loss_parameters("dclw")["sigma"] == 0.5
    assert loss_parameters("bayes")["num_samples"] is loss_parameters("sogclr")["num_samples"]
    assert all("chunk_size" in loss_parameters(name) for name in NAMES)
    assert all(loss_parameters(name)["validate"] is True for name in NAMES)
    with pytest.raises(ValueError, match="known losses"):
        loss_parameters("nope")


def test_stateful_and_bias_flags():
    assert {name for name in NAMES if LOSSES[name].stateful} == {"moco", "sogclr", "bayes"}
    assert {name for name in NAMES if LOSSES[name].uses_bias} == {"siglip"}


# --- input validation shared by every loss ---------------------------------------------------------------
def _bad_calls():
    a, b = (torch.tensor(x) for x in features())
    nan, inf = a.clone(), b.clone()
    nan[1, 2], inf[0, 0] = math.nan, math.inf
    return {
        "mismatched": ((a, b[:, :3]), "a and b"),
        "mismatched-batch": ((a, b[:4]), "a and b"),
        "single-row": ((a[:1], b[:1]), "batch size"),
        "nan": ((nan, b), "finite"),
        "inf": ((a, inf), "finite"),
        "1-d": ((a[0], b[0]), r"shape \(B, d\)"),
        "integer": ((a.long(), b.long()), "floating-point"),
        "numpy": ((a.numpy(), b), "torch.Tensor"),
        "zero-dim": ((a[:, :0], b[:, :0]), "feature dimension"),
    }


@pytest.mark.parametrize("case", list(_bad_calls()))
@pytest.mark.parametrize("name", NAMES)
def test_bad_features(name, case):
    (a, b), match = _bad_calls()[case]
    loss = make(name)
    before = state_of(loss)
    with pytest.raises(ValueError, match=match):
        call(loss, a, b, index=torch.arange(6))
    for key, value in state_of(loss).items():
        np.testing.assert_array_equal(value, before[key])


@pytest.mark.parametrize("temperature", [0.0, -0.5, math.nan, math.inf, "0.1", True])
@pytest.mark.parametrize("name", [n for n in NAMES if n != "siglip"])
def test_bad_temperature(name, temperature):
    with pytest.raises(ValueError, match="temperature"):
        make(name, temperature=temperature)


@pytest.mark.parametrize("chunk_size", [0, -3, 2.5, True])
@pytest.mark.parametrize("name", NAMES)
def test_bad_chunk_size(name, chunk_size):
    with pytest.raises(ValueError, match="chunk_size"):
        make(name, chunk_size=chunk_size)


@pytest.mark.parametrize("name", [n for n in NAMES if n != "siglip"])
def test_bias_is_only_for_siglip(name):
    a, b = (torch.tensor(x) for x in features())
    with pytest.raises(ValueError, match="bias"):
        call(make(name), a, b, bias=-10.0)


# --- targets ---------------------------------------------------------------------------------------------
GLOBAL_TARGETS = [
    ("sogclr", {"negatives": "cross"}, ClipLoss, {}),
    ("sogclr", {"negatives": "views"}, NTXentLoss, {}),
    ("sogclr", {"negatives": "views", "include_positive": False}, DCLLoss, {"negatives": "views"}),
    ("bayes", {"negatives": "cross"}, ClipLoss, {"symmetric": True}),
    ("bayes", {"negatives": "views"}, NTXentLoss, {}),
    ("bayes", {"negatives": "cross", "include_positive": False}, DCLLoss, {"negatives": "cross"}),
    ("moco", {}, ClipLoss, {"symmetric": False}),
]


@pytest.mark.parametrize(("name", "params", "cls", "attrs"), GLOBAL_TARGETS)
def test_global_objective(name, params, cls, attrs):
    loss = make(name, temperature=0.3, chunk_size=4, **params)
    target = loss.global_objective()
    assert type(target) is cls
    assert (target.temperature, target.chunk_size) == (0.3, 4)
    assert all(getattr(target, key) == value for key, value in attrs.items())


@pytest.mark.parametrize("name", ["ntxent", "clip", "dcl", "dclw", "siglip"])
def test_stateless_losses_are_their_own_target(name):
    loss = make(name)
    assert loss.global_objective() is loss


@pytest.mark.parametrize(("name", "params"), [(n, p) for n, p, *_ in GLOBAL_TARGETS])
def test_global_objective_evaluates_the_same_features(name, params):
    # A loss built with normalize=False targets the objective on the features as given.
    loss = make(name, normalize=False, **params)
    assert loss.global_objective().normalize is False


@pytest.mark.parametrize(("name", "value"), [("siglip", None), ("sogclr", 0.0), ("bayes", 0.0)])
def test_log_normalizer_where_not_a_count(name, value):
    assert make(name).log_normalizer(8) == value


def test_moco_global_objective_is_its_empty_queue_loss():
    loss = MoCoLoss(0.2, queue_size=0)
    a, b = features()
    assert_close(evaluate(loss, a, b).value, evaluate(loss.global_objective(), a, b).value, 1e-12)
