"""The fusion model's objectives against hand-written NumPy references on tiny inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.losses import build_loss
from workbench.losses.fusion import (
    IGNORE,
    FusionLoss,
    check_objective_weights,
    itm_loss,
    mask_tokens,
    mlm_loss,
    sample_hard_negatives,
)
from workbench.losses.structures import StructuredLoss


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


# --- hard negatives ------
def test_hard_negative_sampler_never_picks_an_excluded_column():
    gen = torch.Generator().manual_seed(0)
    for trial in range(50):
        b = 2 + trial % 7
        # extreme logits too: the positive may dominate the softmax by far
        logits = torch.randn(b, b, generator=gen) * (1 + 30 * (trial % 3))
        logits.fill_diagonal_(50.0)
        exclude = torch.eye(b, dtype=torch.bool) | (torch.rand(b, b, generator=gen) < 0.3)
        uniforms = torch.rand(b, generator=gen)
        uniforms[0] = 0.0
        uniforms[-1] = 1.0 - 1e-12  # the top of the CDF
        index, valid = sample_hard_negatives(logits, uniforms, exclude)
        for r in range(b):
            if valid[r]:
                assert not exclude[r, index[r]], (trial, r)
            else:
                assert exclude[r].all()
        assert torch.equal(valid, ~exclude.all(1))


def test_hard_negative_sampler_follows_the_restricted_softmax():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0], [0.5, 3.0, 0.5, 1.5]])
    exclude = torch.tensor([[True, False, False, False], [False, True, False, False]])
    n = 20000
    uniforms = (torch.arange(n, dtype=torch.float64) + 0.5) / n  # an even grid: frequencies are exact
    counts = np.zeros((2, 4))
    for r in range(2):
        index, _ = sample_hard_negatives(
            logits[r].expand(n, 4), uniforms, exclude[r].expand(n, 4).contiguous()
        )
        counts[r] = np.bincount(index.numpy(), minlength=4) / n
    # reference: ALBEF's weights, softmax with the positive's weight set to 0, renormalised
    ref = np.exp(logits.numpy().astype(np.float64))
    ref[exclude.numpy()] = 0.0
    ref /= ref.sum(1, keepdims=True)
    np.testing.assert_allclose(counts, ref, atol=2.0 / n)


def test_hard_negative_sampler_checks_shapes():
    with pytest.raises(ValueError, match="uniforms"):
        sample_hard_negatives(torch.zeros(3, 3), torch.zeros(2), torch.eye(3, dtype=torch.bool))


# --- image-text matching ------
def test_itm_loss_matches_numpy_values_and_gradients():
    rng = np.random.default_rng(0)
    logits_np = rng.normal(size=(9, 2))
    labels_np = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0])
    valid_np = np.array([1, 1, 1, 1, 0, 1, 1, 1, 0], dtype=bool)
    logits = torch.tensor(logits_np, requires_grad=True)
    value = itm_loss(logits, torch.tensor(labels_np), torch.tensor(valid_np))
    value.backward()
    logp = _log_softmax(logits_np)
    nll = -logp[np.arange(9), labels_np]
    ref = nll[valid_np].mean()
    probs = np.exp(logp)
    grad = probs.copy()
    grad[np.arange(9), labels_np] -= 1
    grad = grad * valid_np[:, None] / valid_np.sum()
    np.testing.assert_allclose(value.item(), ref, rtol=1e-6)
    np.testing.assert_allclose(logits.grad.numpy(), grad, rtol=1e-5, atol=1e-7)


def test_itm_loss_without_mask_is_the_plain_mean():
    logits = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    ref = -(_log_softmax(logits.numpy())[[0, 1], [1, 0]]).mean()
    np.testing.assert_allclose(float(itm_loss(logits, torch.tensor([1, 0]))), ref, rtol=1e-6)


# --- masked-token prediction ------
def test_mlm_loss_matches_numpy_values_and_gradients():
    rng = np.random.default_rng(1)
    logits_np = rng.normal(size=(2, 5, 7))
    targets_np = np.full((2, 5), IGNORE)
    targets_np[0, 2], targets_np[1, 1], targets_np[1, 4] = 3, 6, 0
    logits = torch.tensor(logits_np, requires_grad=True)
    value = mlm_loss(logits, torch.tensor(targets_np))
    value.backward()
    chosen = targets_np != IGNORE
    logp = _log_softmax(logits_np)
    ref = -np.mean([logp[b, t, targets_np[b, t]] for b, t in zip(*np.nonzero(chosen), strict=True)])
    grad = np.zeros_like(logits_np)
    for b, t in zip(*np.nonzero(chosen), strict=True):
        grad[b, t] = np.exp(logp[b, t])
        grad[b, t, targets_np[b, t]] -= 1
    grad /= chosen.sum()
    np.testing.assert_allclose(value.item(), ref, rtol=1e-6)
    np.testing.assert_allclose(logits.grad.numpy(), grad, rtol=1e-5, atol=1e-7)


def test_mlm_loss_with_nothing_masked_is_zero_and_differentiable():
    logits = torch.randn(2, 3, 4, requires_grad=True)
    value = mlm_loss(logits, torch.full((2, 3), IGNORE))
    value.backward()
    assert value.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))


def test_the_count_hook_sets_the_divisor_of_both_means():
    # under torch.distributed the divisor is the global count over the world size (see FusionLoss)
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 2), torch.tensor([1, 1, 0, 0, 0, 0])
    valid = torch.tensor([True, True, True, False, True, True])
    local = itm_loss(logits, labels, valid)
    assert float(itm_loss(logits, labels, valid, count=lambda n: 2 * n)) == pytest.approx(float(local) / 2)
    mlm_logits, targets = torch.randn(2, 3, 5), torch.tensor([[IGNORE, 1, 2], [3, IGNORE, IGNORE]])
    local = mlm_loss(mlm_logits, targets)
    divided = mlm_loss(mlm_logits, targets, count=lambda n: n + 3)  # 3 chosen here, 3 elsewhere
    assert float(divided) == pytest.approx(float(local) / 2)


def test_mask_tokens_follows_bert_and_never_touches_cls_or_padding():
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(2, 40, (400, 12), generator=gen)
    ids[:, 0] = 41  # [CLS]
    ids[:, 9:] = 0  # padding
    corrupted, targets = mask_tokens(ids, torch.Generator().manual_seed(3), mask_id=42, random_range=(2, 40))
    chosen = targets != IGNORE
    assert not chosen[:, 0].any() and not chosen[:, 9:].any()
    assert torch.equal(corrupted[~chosen], ids[~chosen])
    assert torch.equal(targets[chosen], ids[chosen])
    rate = chosen[:, 1:9].float().mean()
    assert 0.13 < rate < 0.17
    masked = (corrupted[chosen] == 42).float().mean()
    kept = (corrupted[chosen] == ids[chosen]).float().mean()
    assert 0.76 < masked < 0.84 and 0.07 < kept < 0.14  # 10% kept, plus random draws of the same id
    again = mask_tokens(ids, torch.Generator().manual_seed(3), mask_id=42, random_range=(2, 40))
    assert torch.equal(again[0], corrupted) and torch.equal(again[1], targets)


# --- all three ------
def _clip_numpy(img: np.ndarray, txt: np.ndarray, temperature: float) -> float:
    img = img / np.linalg.norm(img, axis=1, keepdims=True)
    txt = txt / np.linalg.norm(txt, axis=1, keepdims=True)
    logits = img @ txt.T / temperature
    diag = np.arange(len(img))
    return float(-(_log_softmax(logits)[diag, diag].mean() + _log_softmax(logits.T)[diag, diag].mean()) / 2)


def test_fusion_loss_is_the_weighted_sum_of_its_references():
    rng = np.random.default_rng(2)
    img, txt = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    itm_logits, itm_labels = rng.normal(size=(18, 2)), np.array([1] * 6 + [0] * 12)
    mlm_logits = rng.normal(size=(6, 5, 9))
    targets = np.full((6, 5), IGNORE)
    targets[:, 1] = rng.integers(0, 9, size=6)
    outputs = {
        "img": torch.tensor(img),
        "txt": torch.tensor(txt),
        "itm_logits": torch.tensor(itm_logits),
        "itm_labels": torch.tensor(itm_labels),
        "mlm_logits": torch.tensor(mlm_logits),
    }
    loss = FusionLoss(StructuredLoss("clip", temperature=0.1), {"itc": 0.5, "itm": 2.0, "mlm": 0.25})
    total, parts = loss(outputs, mlm_targets=torch.tensor(targets))
    itc = _clip_numpy(img, txt, 0.1)
    itm = -_log_softmax(itm_logits)[np.arange(18), itm_labels].mean()
    mlm = -_log_softmax(mlm_logits[:, 1])[np.arange(6), targets[:, 1]].mean()
    np.testing.assert_allclose(parts["itc"], itc, rtol=1e-5)
    np.testing.assert_allclose(parts["itm"], itm, rtol=1e-5)
    np.testing.assert_allclose(parts["mlm"], mlm, rtol=1e-5)
    np.testing.assert_allclose(float(total), 0.5 * itc + 2.0 * itm + 0.25 * mlm, rtol=1e-5)
    # the contrastive term is the registry loss on the normalised embeddings
    registry = build_loss("clip", temperature=0.1)
    unit = [torch.nn.functional.normalize(torch.tensor(x).float(), dim=1) for x in (img, txt)]
    np.testing.assert_allclose(parts["itc"], float(registry(*unit)), rtol=1e-5)


def test_fusion_loss_adds_the_structure_regularizers_to_itc():
    rng = np.random.default_rng(3)
    views = {k: torch.tensor(rng.normal(size=(5, 4))).float() for k in ("img", "txt", "img_aug")}
    structured = StructuredLoss("clip", weights={"bridge": 0.7}, temperature=0.1)
    alone, alone_parts = structured(views)
    loss = FusionLoss(StructuredLoss("clip", weights={"bridge": 0.7}, temperature=0.1), {"itm": 0, "mlm": 0})
    assert {"img", "txt", "img_aug"} <= loss.requires and "itm" not in loss.requires
    total, parts = loss(views)
    np.testing.assert_allclose(float(total), float(alone), rtol=1e-6)
    np.testing.assert_allclose(parts["bridge"], alone_parts["bridge"], rtol=1e-6)


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        ({"itm": -1.0}, r"objective_weights\['itm'\]"),
        ({"mlm": float("nan")}, r"objective_weights\['mlm'\]"),
        ({"vqa": 1.0}, "unknown objective"),
        ({"itc": 0, "itm": 0, "mlm": 0}, "all 0"),
        ("itc", "mapping"),
    ],
)
def test_bad_objective_weights_name_the_parameter(weights, match):
    with pytest.raises(ValueError, match=match):
        check_objective_weights(weights)


def test_structures_without_itc_are_refused():
    with pytest.raises(ValueError, match="itc"):
        FusionLoss(StructuredLoss("clip", weights={"consistency": 1.0}), {"itc": 0.0})
