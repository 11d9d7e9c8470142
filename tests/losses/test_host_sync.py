"""No loss reads a tensor value on the host in a training step when built with ``validate=False``.

Every host read of a tensor (``.item()``, ``bool(t)``, ``int(t)``, ``float(t)``) goes through
``aten::_local_scalar_dense``; data-dependent shapes (``nonzero``, ``unique``, boolean indexing,
``masked_select``) need one too on CUDA. A ``TorchDispatchMode`` sees every ATen call of the forward
and the backward pass, on CPU, so the count here is what a CUDA step would synchronise on.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from workbench.losses import build_loss, check_finite_loss, loss_names

SYNCING = ("_local_scalar_dense", "nonzero", "unique", "masked_select", "is_nonzero", "equal", "allclose")


class HostReads(TorchDispatchMode):
    """Records the ATen calls that read tensor contents on the host (or need a data-dependent size)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__ if hasattr(func, "__name__") else str(func)
        # aten::index / index_put take the indices as a list in the second argument: a boolean one
        # is a mask whose number of True entries sets the result's size
        indices = args[1] if name.startswith(("index.", "index_put")) and len(args) > 1 else ()
        bool_index = any(isinstance(x, torch.Tensor) and x.dtype == torch.bool for x in indices)
        if bool_index or any(word in name for word in SYNCING):
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


def _params(name: str, batch: int) -> dict:
    params: dict = {}
    if name in ("sogclr", "bayes"):
        params["num_samples"] = 3 * batch
    if name == "moco":
        params["queue_size"] = 2 * batch
    return params


def _steps(loss, batch: int, with_scale: bool) -> None:
    """Three training steps: stateful losses see first and repeat visits, MoCo a filling queue."""
    gen = torch.Generator().manual_seed(0)
    scale = torch.tensor(math.log(10.0), requires_grad=True) if with_scale else None
    for step in range(3):
        a = torch.randn(batch, 8, generator=gen, requires_grad=True)
        b = torch.randn(batch, 8, generator=gen, requires_grad=True)
        index = torch.arange(batch) + (step % 2) * batch
        kwargs = {"scale": scale.exp()} if scale is not None else {}
        if loss.uses_bias:
            kwargs["bias"] = torch.tensor(-10.0, requires_grad=True)
        value = loss(a, b, index=index if loss.stateful else None, **kwargs)
        value.backward()


def _count(name: str, implementation: str, validate: bool, with_scale: bool = False, **extra) -> list[str]:
    batch = 6
    params = {**_params(name, batch), **extra}
    if implementation == "chunked":
        params["chunk_size"] = 4  # several chunks: the chunked loops run
    loss = build_loss(name, implementation=implementation, validate=validate, **params)
    loss.train()
    with HostReads() as reads:
        _steps(loss, batch, with_scale)
    return reads.calls


@pytest.mark.parametrize("implementation", ["naive", "chunked"])
@pytest.mark.parametrize("name", loss_names())
def test_no_host_reads_without_validation(name, implementation):
    assert _count(name, implementation, validate=False, with_scale=name != "siglip") == []


@pytest.mark.parametrize(
    ("name", "extra"),
    [
        ("sogclr", {"gamma_schedule": "cosine", "total_steps": 2}),
        ("sogclr", {"negatives": "views"}),
        ("bayes", {"negatives": "views", "shape": math.inf, "estimator": "running"}),
        ("bayes", {"estimator": "running"}),
        ("bayes", {"estimator": "batch"}),
        ("bayes", {"bank_size": 4}),  # a random subset of the bank, drawn on the device
        ("bayes", {"negatives": "views", "bank_size": 4}),
        ("dcl", {"negatives": "cross"}),
        ("clip", {"symmetric": False}),
    ],
)
def test_no_host_reads_in_variants(name, extra):
    assert _count(name, "naive", validate=False, **extra) == []


@pytest.mark.parametrize("name", loss_names())
def test_the_counter_sees_the_validation_reads(name):
    # the same steps with validate=True read values (finiteness, index range): the counter must see them
    assert "_local_scalar_dense.default" in _count(name, "naive", validate=True)


def test_check_finite_loss_reads_once_and_raises():
    total = torch.tensor(1.5) + torch.tensor(2.0)
    with HostReads() as reads:
        assert check_finite_loss(total, step=3) == 3.5
    assert reads.calls == ["_local_scalar_dense.default"]
    for bad in (float("nan"), torch.tensor(float("inf"))):
        with pytest.raises(FloatingPointError, match="at step 7"):
            check_finite_loss(bad, step=7)


@pytest.mark.parametrize("name", loss_names())
def test_validate_false_skips_only_the_value_checks(name):
    params = _params(name, 4)
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    a[0, 0] = float("nan")
    index = torch.arange(4) if name in ("sogclr", "bayes") else None
    with pytest.raises(ValueError, match="finite"):
        build_loss(name, **params)(a, b, index=index)
    value = build_loss(name, validate=False, **params)(a, b, index=index)  # no value is read
    assert value.ndim == 0
    with pytest.raises(ValueError, match="same shape"):  # shape checks stay (they read no value)
        build_loss(name, validate=False, **params)(a, b[:3], index=index)
    with pytest.raises(ValueError, match="validate must be True or False"):
        build_loss(name, validate="no", **params)


def test_huge_finite_features_pass_the_value_check():
    # their squared norms overflow, which sends the check to the full scan: they are finite
    a, b = torch.randn(4, 3) * 1e30, torch.randn(4, 3)
    assert build_loss("clip")(a, b).ndim == 0
    a[1, 2] = float("inf")
    with pytest.raises(ValueError, match="finite"):
        build_loss("clip")(a, b)


# --- the wrappers the image-text and fusion trainers call --------------------------------------------
def _structured(**extra):
    from workbench.losses.structures import StructuredLoss

    weights = {"separation": 1.0, "bridge": 0.5, "consistency": 0.5}
    return StructuredLoss(base="clip", base_params={"validate": False}, mode="four_term", weights=weights,
                          **extra)  # fmt: skip


def test_no_host_reads_in_the_structured_loss():
    loss = _structured()
    gen = torch.Generator().manual_seed(0)
    views = {key: torch.randn(6, 8, generator=gen, requires_grad=True) for key in sorted(loss.requires)}
    with HostReads() as reads:
        total, parts = loss(views)
        total.backward()
    assert reads.calls == []
    assert {"base", "bridge", "separation", "consistency", "total"} <= set(parts)
    assert all(isinstance(v, torch.Tensor) and not v.requires_grad for v in parts.values())


def test_no_host_reads_in_a_fusion_step():
    from workbench.losses.fusion import FusionLoss, mask_tokens, sample_hard_negatives
    from workbench.models.fusion import FusionModel, fusion_size

    torch.manual_seed(0)
    loss = FusionLoss(_structured())
    model = FusionModel((1, 8, 8), 12, 6, fusion_size("tiny"), independent=True)
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(2, 12, (6, 6), generator=gen)
    ids[:, 0], ids[:, 4:] = 1, 0  # [CLS], then padding
    mlm_ids, targets = mask_tokens(ids, gen, 1, (2, 12), 0.3)
    batch = {"img": torch.rand(6, 1, 8, 8, generator=gen), "txt": ids, "mlm_ids": mlm_ids,
             "neg_u": torch.rand(6, 2, generator=gen), "group": torch.arange(6) % 3,
             "img_aug": torch.rand(6, 1, 8, 8, generator=gen), "txt_aug": ids.flip(0)}  # fmt: skip
    with HostReads() as reads:
        outputs = model(batch, loss.requires, negatives=sample_hard_negatives)
        total, _ = loss(outputs, mlm_targets=targets)
        total.backward()
    assert reads.calls == []
