"""GradCache (workbench.training.gradcache): micro-batched backward passes give the exact batch gradient."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from workbench.losses import build_loss
from workbench.models import MLPConfig, SiameseModel, TwoTowerModel, build_pair_model
from workbench.training.gradcache import cached_backward, embed, flat_grad
from workbench.training.trainer import TrainConfig, Trainer

BATCH = 8
DIM = 16
NUM_SAMPLES = 20
SMALL = MLPConfig(hidden=8, depth=1, out_dim=6)


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


def _inputs(dtype=torch.float64, batch=BATCH, seed=1):
    gen = torch.Generator().manual_seed(seed)
    x_a = torch.randn(batch, DIM, generator=gen, dtype=dtype)
    x_b = x_a + 0.5 * torch.randn(batch, DIM, generator=gen, dtype=dtype)
    return x_a, x_b


def _model(kind: str) -> nn.Module:
    torch.manual_seed(123)
    return build_pair_model(kind, DIM, DIM, SMALL).double()


def _grads(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.parameters()]


def _assert_grads_close(actual, expected, rtol):
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        scale = float(want.abs().max())
        torch.testing.assert_close(got, want, rtol=rtol, atol=rtol * scale)


def _backward(model, x_a, x_b, loss_fn, micro_batch, seed=7):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    value = cached_backward(model, x_a, x_b, loss_fn, micro_batch)
    return float(value), _grads(model)


# --- losses: fresh instance per call, so a stateful loss starts both paths from the same state ----------
def _stateless(name):
    def make():
        return build_loss(name)

    return make


def _stateful(name, **params):
    def make():
        loss = build_loss(name, num_samples=NUM_SAMPLES, **params)
        # one earlier visit, so the running estimate (not only the first-visit path) is exercised
        a, b = _inputs(torch.float32, batch=6, seed=99)
        torch.manual_seed(3)
        loss(a, b, index=torch.tensor([0, 2, 4, 6, 8, 10]))
        return loss

    return make


LOSSES = {
    "clip": _stateless("clip"),
    "ntxent": _stateless("ntxent"),
    "siglip": _stateless("siglip"),
    "sogclr": _stateful("sogclr", gamma=0.5),
    "bayes": _stateful("bayes"),  # Gamma draws from the global RNG, seeded identically for both paths
}
INDEX = torch.tensor([3, 0, 17, 8, 4, 11, 6, 19])


@pytest.mark.parametrize("kind", ["siamese", "two_tower"])
@pytest.mark.parametrize("loss_name", list(LOSSES))
def test_micro_batches_give_the_full_batch_gradient(kind, loss_name):
    model = _model(kind)
    x_a, x_b = _inputs()
    reference_loss = LOSSES[loss_name]()
    stateful = reference_loss.stateful
    initial_state = copy.deepcopy(reference_loss.state_dict())

    def loss_fn_for(loss):
        def loss_fn(z_a, z_b):
            return loss(z_a, z_b, index=INDEX) if stateful else loss(z_a, z_b)

        return loss_fn

    value, expected = _backward(model, x_a, x_b, loss_fn_for(reference_loss), None)
    assert math.isfinite(value)
    assert all(float(g.abs().max()) > 0 for g in expected), "every parameter must get a gradient"
    for micro_batch in (1, 3, 8):
        loss = LOSSES[loss_name]()
        cached_value, grads = _backward(model, x_a, x_b, loss_fn_for(loss), micro_batch)
        assert cached_value == pytest.approx(value, rel=1e-6)
        _assert_grads_close(grads, expected, rtol=1e-6)
        if stateful:
            # the loss saw the whole batch exactly once: its state moved once, to the same place
            for key, want in reference_loss.state_dict().items():
                torch.testing.assert_close(loss.state_dict()[key], want, rtol=1e-6, atol=1e-6)
            assert int(loss.steps) == int(initial_state["steps"]) + 1
            assert not torch.equal(loss.log_z, initial_state["log_z"])


def test_model_only_holds_micro_batches_with_a_graph():
    model = _model("two_tower")
    x_a, x_b = _inputs()
    seen = []

    def hook(module, args, output):
        seen.append((args[0].shape[0], torch.is_grad_enabled()))

    model.tower_a.register_forward_hook(hook)
    loss = build_loss("clip")
    cached_backward(model, x_a, x_b, lambda a, b: loss(a, b), micro_batch=3)
    # no-graph pass over all chunks, then the re-embedding pass with a graph, 3 + 3 + 2 rows each
    assert seen == [(3, False), (3, False), (2, False), (3, True), (3, True), (2, True)]


@pytest.mark.parametrize("micro_batch", [None, 8, 100])
def test_micro_batch_at_least_the_batch_is_one_plain_pass(micro_batch):
    model = _model("siamese")
    x_a, x_b = _inputs()
    loss = build_loss("ntxent")
    model.zero_grad()
    z_a, z_b = model(x_a, x_b)
    expected_value = loss(z_a, z_b)  # a float64 model keeps float64 through GradCache
    expected_value.backward()
    expected = _grads(model)
    value, grads = _backward(model, x_a, x_b, lambda a, b: loss(a, b), micro_batch)
    assert value == expected_value.item()
    _assert_grads_close(grads, expected, rtol=1e-12)


def _dropout_model(kind: str) -> nn.Module:
    torch.manual_seed(5)

    def encoder():
        return nn.Sequential(nn.Linear(DIM, 32), nn.Dropout(0.5), nn.GELU(), nn.Linear(32, 6))

    model = SiameseModel(encoder()) if kind == "siamese" else TwoTowerModel(encoder(), encoder())
    return model.double().train()


@pytest.mark.parametrize("kind", ["siamese", "two_tower"])
@pytest.mark.parametrize("micro_batch", [1, 3])
def test_dropout_masks_are_replayed(kind, micro_batch):
    """The gradient is that of the loss on the embeddings the cached pass saw (same dropout masks).

    With a seeded RNG, plain autograd through the same sequence of micro-batch forwards draws the same
    masks; GradCache must match it although it runs every forward twice (once without a graph).
    """
    model = _dropout_model(kind)
    x_a, x_b = _inputs()
    loss = build_loss("clip")

    model.zero_grad()
    torch.manual_seed(11)
    parts = [model(x_a[s : s + micro_batch], x_b[s : s + micro_batch]) for s in range(0, BATCH, micro_batch)]
    z_a = torch.cat([p[0] for p in parts]).float()
    z_b = torch.cat([p[1] for p in parts]).float()
    expected_value = loss(z_a, z_b)
    expected_value.backward()
    expected = _grads(model)
    rng_after_reference = torch.get_rng_state()

    model.zero_grad()
    torch.manual_seed(11)
    value = cached_backward(model, x_a, x_b, lambda a, b: loss(a, b), micro_batch)
    grads = _grads(model)
    assert float(value) == pytest.approx(expected_value.item(), rel=1e-6)
    _assert_grads_close(grads, expected, rtol=1e-6)
    # the RNG ends where one pass would have left it (the replay does not consume extra draws)
    assert torch.equal(torch.get_rng_state(), rng_after_reference)

    # the masks matter: another seed gives another gradient, so the equality above is not vacuous
    model.zero_grad()
    torch.manual_seed(12)
    cached_backward(model, x_a, x_b, lambda a, b: loss(a, b), micro_batch)
    assert not torch.allclose(_grads(model)[0], expected[0])


def test_dropout_micro_batch_covering_the_batch_equals_plain_backward():
    model = _dropout_model("siamese")
    x_a, x_b = _inputs()
    loss = build_loss("clip")
    value, expected = _backward(model, x_a, x_b, lambda a, b: loss(a, b), None, seed=21)
    cached_value, grads = _backward(model, x_a, x_b, lambda a, b: loss(a, b), BATCH, seed=21)
    assert cached_value == value
    _assert_grads_close(grads, expected, rtol=1e-12)


@pytest.mark.parametrize("loss_name", ["clip", "siglip"])
def test_learnable_scale_and_bias_get_the_same_gradient(loss_name):
    model = _model("two_tower")
    x_a, x_b = _inputs()
    loss = build_loss(loss_name)
    results = []
    for micro_batch in (None, 3):
        scale = torch.tensor(12.0, dtype=torch.float64, requires_grad=True)
        bias = torch.tensor(-4.0, dtype=torch.float64, requires_grad=True) if loss_name == "siglip" else None

        def loss_fn(z_a, z_b, scale=scale, bias=bias):
            return loss(z_a, z_b, scale=scale, bias=bias)

        value, grads = _backward(model, x_a, x_b, loss_fn, micro_batch)
        assert scale.grad is not None and float(scale.grad) != 0.0
        results.append((value, grads, scale.grad.clone(), None if bias is None else bias.grad.clone()))
    (value0, grads0, scale0, bias0), (value1, grads1, scale1, bias1) = results
    assert value1 == pytest.approx(value0, rel=1e-6)
    _assert_grads_close(grads1, grads0, rtol=1e-6)
    torch.testing.assert_close(scale1, scale0, rtol=1e-6, atol=0.0)
    if loss_name == "siglip":
        assert float(bias0) != 0.0
        torch.testing.assert_close(bias1, bias0, rtol=1e-6, atol=0.0)


def test_embed_matches_one_forward_and_keeps_full_precision():
    model = _model("two_tower")  # float64
    x_a, x_b = _inputs()
    with torch.no_grad():
        full_a, full_b = model(x_a, x_b)
    z_a, z_b = embed(model, x_a, x_b, micro_batch=3)
    assert z_a.dtype == torch.float64 and z_b.dtype == torch.float64
    assert not z_a.requires_grad
    torch.testing.assert_close(z_a, full_a)
    torch.testing.assert_close(z_b, full_b)
    half_a, _ = embed(model.to(torch.bfloat16), x_a.bfloat16(), x_b.bfloat16(), micro_batch=3)
    assert half_a.dtype == torch.float32  # half precision is promoted for the loss


def test_flat_grad_concatenates_with_zeros_for_missing_grads():
    model = _model("two_tower")
    sizes = [p.numel() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    first = next(model.parameters())
    first.grad = torch.ones_like(first)
    flat = flat_grad(model)
    assert flat.dtype == torch.float64
    assert flat.shape == (sum(sizes),)
    assert float(flat[: sizes[0]].sum()) == sizes[0]
    assert float(flat[sizes[0] :].abs().sum()) == 0.0


# --- the trainer: exact large-batch steps on small memory -------------------------------------------
TRAINER_CASES = {
    "synthetic-clip-learn-scale": dict(
        dataset="synthetic", dataset_params={"num_samples": 64}, loss="clip", learn_scale=True
    ),
    "synthetic-bayes": dict(dataset="synthetic", dataset_params={"num_samples": 64}, loss="bayes"),
    "digits-ntxent": dict(dataset="digits_views", loss="ntxent"),
}


def _trained_parameters(micro_batch, **fields) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    config = TrainConfig.from_dict(dict(
        model_size="tiny", batch_size=16, micro_batch=micro_batch, steps=3, probe_size=16, **fields
    ))
    trainer = Trainer(config)
    initial = [p.detach().clone() for p in trainer.task.parameters()]
    for step in range(3):
        assert math.isfinite(trainer.train_step(step))
    return initial, [p.detach().clone() for p in trainer.task.parameters()]


@pytest.mark.parametrize("case", list(TRAINER_CASES))
def test_trainer_micro_batch_steps_equal_full_batch_steps(case):
    fields = TRAINER_CASES[case]
    initial, expected = _trained_parameters(None, **fields)
    initial_mb, actual = _trained_parameters(4, **fields)
    for a, b in zip(initial, initial_mb, strict=True):
        assert torch.equal(a, b)  # same seed, same initialisation
    assert any(not torch.equal(a, b) for a, b in zip(initial, expected, strict=True)), "training moved"
    for got, want in zip(actual, expected, strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=0, atol=1e-5)
