"""Tests of workbench.losses.structures: the modality-structure regularizers of Jiang et al. (CVPR 2023).

Every function is compared against an independent float64 NumPy reference written with explicit loops
from the formulas of docs/methods.md §3; then the intended minimisers, the wrapper, gradients and input
validation are checked.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from workbench.losses import build_loss
from workbench.losses.structures import (
    REGULARIZERS,
    StructuredLoss,
    bridge_loss,
    bridge_mean,
    consistency_loss,
    separation_loss,
    uniformity_loss,
)

B, D = 5, 4


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


def unit(rng: np.random.Generator, batch: int = B, dim: int = D) -> np.ndarray:
    x = rng.normal(size=(batch, dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def tt(x: np.ndarray, grad: bool = False) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64, requires_grad=grad)


def close(actual, desired, rtol: float = 1e-10) -> None:
    actual = actual.detach().numpy() if isinstance(actual, torch.Tensor) else actual
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=rtol)


# --- NumPy references (double loops) -------------------------------------------------------------------
def np_infonce(q, k, tau):
    n = q.shape[0]
    total = 0.0
    for j in range(n):
        logits = [float(q[j] @ k[m]) / tau for m in range(n)]
        lse = math.log(sum(math.exp(v) for v in logits))
        total += lse - logits[j]
    return total / n


def np_uniformity(z, t):
    n = z.shape[0]
    s = 0.0
    for j in range(n):
        for k in range(n):
            s += math.exp(-t * float(np.sum((z[j] - z[k]) ** 2)))
    return math.log(s / n**2)


def np_bridge_mean(zv, zt, t):
    t = np.broadcast_to(np.asarray(t, dtype=np.float64), (zv.shape[0],))
    out = np.empty_like(zv)
    for j in range(zv.shape[0]):
        m = t[j] * zv[j] + (1 - t[j]) * zt[j]
        out[j] = m / np.linalg.norm(m)
    return out


def np_bridge(zv, zt, za, t, weighted=False):
    t = np.broadcast_to(np.asarray(t, dtype=np.float64), (zv.shape[0],))
    mu = np_bridge_mean(zv, zt, t)
    total = 0.0
    for j in range(zv.shape[0]):
        w = 1.0 / (2 * t[j] * (1 - t[j])) if weighted else 1.0
        total += w * float(np.sum((za[j] - mu[j]) ** 2))
    return total / zv.shape[0]


def np_consistency(zv, zt, zva=None, zta=None):
    n = zv.shape[0]
    cross = inmodal = aug_in = aug_pair = 0.0
    for j in range(n):
        for k in range(n):
            cross += (zv[j] @ zt[k] - zv[k] @ zt[j]) ** 2
            inmodal += (zv[j] @ zv[k] - zt[j] @ zt[k]) ** 2
            if zva is not None:
                aug_in += (zv[j] @ zv[k] - zva[j] @ zva[k]) ** 2
            if zta is not None:
                aug_in += (zt[j] @ zt[k] - zta[j] @ zta[k]) ** 2
        if zva is not None and zta is not None:
            aug_pair += (zv[j] @ zt[j] - zva[j] @ zta[j]) ** 2
    return {"cross": cross / n, "inmodal": inmodal / n, "aug_inmodal": aug_in / n, "aug_pair": aug_pair / n}


def np_ortho(zv, ziv, zt, zit):
    n = zv.shape[0]
    return sum((zv[j] @ ziv[j]) ** 2 + (zt[j] @ zit[j]) ** 2 for j in range(n)) / n


def views(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    img = unit(rng)
    txt = unit(rng)
    return {
        "img": img,
        "txt": txt,
        "img_aug": unit(rng),
        "txt_aug": unit(rng),
        "indep_img": unit(rng),
        "indep_txt": unit(rng),
        "indep_img_aug": unit(rng),
        "indep_txt_aug": unit(rng),
    }


# --- contrastive terms ---------------------------------------------------------------------------------
def test_uniformity_matches_reference_including_diagonal():
    z = views(5)["img"]
    close(uniformity_loss(tt(z), 2.0), np_uniformity(z, 2.0))
    close(uniformity_loss(tt(z), 0.7), np_uniformity(z, 0.7))
    # all rows equal: every kernel term is 1 -> log 1 = 0; the diagonal alone bounds it below by log(1/B)
    same = np.repeat(z[:1], B, axis=0)
    close(uniformity_loss(tt(same)), 0.0)
    assert uniformity_loss(tt(z)).item() > math.log(1 / B)


def test_separation_matches_reference():
    v = views(6)
    tau, t, w = 0.3, 2.0, (0.5, 2.0, 1.5)
    out = separation_loss(
        tt(v["img"]),
        tt(v["indep_img"]),
        tt(v["txt"]),
        tt(v["indep_txt"]),
        tt(v["indep_img_aug"]),
        tt(v["indep_txt_aug"]),
        temperature=tau,
        t=t,
        weights=w,
    )
    ortho = np_ortho(v["img"], v["indep_img"], v["txt"], v["indep_txt"])
    con = np_infonce(v["indep_img"], v["indep_img_aug"], tau) + np_infonce(
        v["indep_txt"], v["indep_txt_aug"], tau
    )
    uni = np_uniformity(v["indep_img"], t) + np_uniformity(v["indep_txt"], t)
    close(out["ortho"], ortho)
    close(out["indep_con"], con)
    close(out["uniformity"], uni)
    close(out["total"], w[0] * ortho + w[1] * con + w[2] * uni)
    assert set(out) == {"ortho", "indep_con", "uniformity", "total"}


def test_separation_without_augmented_views_drops_the_contrastive_term():
    v = views(7)
    args = (tt(v["img"]), tt(v["indep_img"]), tt(v["txt"]), tt(v["indep_txt"]))
    none = separation_loss(*args)
    assert none["indep_con"].item() == 0.0
    close(none["total"], none["ortho"] + none["uniformity"])
    only_img = separation_loss(*args, indep_img_aug=tt(v["indep_img_aug"]), temperature=0.1)
    close(only_img["indep_con"], np_infonce(v["indep_img"], v["indep_img_aug"], 0.1))


def test_ortho_is_zero_for_orthogonal_independent_features():
    v = views(8)
    indep = {}
    for key in ("img", "txt"):
        z, x = v[key], v[f"indep_{key}"]
        x = x - np.sum(x * z, axis=1, keepdims=True) * z  # remove the component along z row-wise
        indep[key] = x / np.linalg.norm(x, axis=1, keepdims=True)
    out = separation_loss(tt(v["img"]), tt(indep["img"]), tt(v["txt"]), tt(indep["txt"]))
    assert out["ortho"].item() < 1e-28
    assert (
        separation_loss(tt(v["img"]), tt(v["indep_img"]), tt(v["txt"]), tt(v["indep_txt"]))["ortho"].item()
        > 1e-3
    )


# --- bridge --------------------------------------------------------------------------------------------
def test_bridge_mean_matches_reference_scalar_and_per_row():
    v = views(9)
    close(bridge_mean(tt(v["img"]), tt(v["txt"]), 0.25), np_bridge_mean(v["img"], v["txt"], 0.25))
    t = np.linspace(0.0, 1.0, B)
    close(bridge_mean(tt(v["img"]), tt(v["txt"]), tt(t)), np_bridge_mean(v["img"], v["txt"], t))
    close(bridge_mean(tt(v["img"]), tt(v["txt"]), 1.0), v["img"])
    close(bridge_mean(tt(v["img"]), tt(v["txt"]), 0.0), v["txt"])


def test_bridge_loss_matches_reference_and_is_minimised_at_the_bridge_mean():
    v = views(10)
    value = bridge_loss(tt(v["img"]), tt(v["txt"]), tt(v["img_aug"]), t=0.3)
    close(value, np_bridge(v["img"], v["txt"], v["img_aug"], 0.3))
    assert value.item() > 0.01
    mu = np_bridge_mean(v["img"], v["txt"], 0.3)
    assert bridge_loss(tt(v["img"]), tt(v["txt"]), tt(mu), t=0.3).item() < 1e-28
    # the squared distance, not the paper's misprinted closed form: 2 - 2 <z^a, mu> on unit rows
    close(value, np.mean(2 - 2 * np.sum(v["img_aug"] * mu, axis=1)))


def test_bridge_random_t_is_reproducible_and_weighted():
    v = views(11)
    args = (tt(v["img"]), tt(v["txt"]), tt(v["img_aug"]))
    a = bridge_loss(*args, random_t=True, generator=torch.Generator().manual_seed(3))
    b = bridge_loss(*args, random_t=True, generator=torch.Generator().manual_seed(3))
    c = bridge_loss(*args, random_t=True, generator=torch.Generator().manual_seed(4))
    assert a.item() == b.item()
    assert a.item() != c.item()
    times = torch.rand(B, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    times = times.clamp(1e-3, 1 - 1e-3).numpy()
    close(a, np_bridge(v["img"], v["txt"], v["img_aug"], times, weighted=True))


# --- consistency ---------------------------------------------------------------------------------------
def test_consistency_matches_reference():
    v = views(12)
    w = (0.1, 0.2, 0.3, 0.4)
    out = consistency_loss(tt(v["img"]), tt(v["txt"]), tt(v["img_aug"]), tt(v["txt_aug"]), weights=w)
    ref = np_consistency(v["img"], v["txt"], v["img_aug"], v["txt_aug"])
    for key, value in ref.items():
        close(out[key], value)
        assert value > 1e-3
    close(
        out["total"],
        sum(wi * ref[k] for wi, k in zip(w, ("cross", "inmodal", "aug_inmodal", "aug_pair"), strict=True)),
    )


def test_consistency_aug_terms_vanish_without_augmented_views():
    v = views(13)
    out = consistency_loss(tt(v["img"]), tt(v["txt"]))
    assert out["aug_inmodal"].item() == 0.0 and out["aug_pair"].item() == 0.0
    close(out["total"], 0.25 * (out["cross"].item() + out["inmodal"].item()))
    img_only = consistency_loss(tt(v["img"]), tt(v["txt"]), z_img_aug=tt(v["img_aug"]))
    ref = np_consistency(v["img"], v["txt"], v["img_aug"], None)
    close(img_only["aug_inmodal"], ref["aug_inmodal"])
    assert img_only["aug_pair"].item() == 0.0


def test_consistency_minimisers():
    v = views(14)
    # z_T = z_V: the cross-similarity matrix is symmetric
    same = consistency_loss(tt(v["img"]), tt(v["img"]))
    assert same["cross"].item() < 1e-28
    # z_T = z_V R with R orthogonal: equal in-modal Gram matrices (but not a symmetric cross matrix)
    r, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(D, D)))
    rotated = consistency_loss(tt(v["img"]), tt(v["img"] @ r), tt(v["img_aug"]), tt(v["img_aug"] @ r))
    assert rotated["inmodal"].item() < 1e-26
    assert rotated["cross"].item() > 1e-3
    # augmented views equal to the originals: the augmented terms vanish
    aug = consistency_loss(tt(v["img"]), tt(v["txt"]), tt(v["img"]), tt(v["txt"]))
    assert aug["aug_inmodal"].item() < 1e-28 and aug["aug_pair"].item() < 1e-28


# --- gradients -----------------------------------------------------------------------------------------
def test_gradcheck_bridge_and_consistency():
    rng = np.random.default_rng(15)
    zv, zt, za, zta = (tt(unit(rng, 3, 3), grad=True) for _ in range(4))
    assert torch.autograd.gradcheck(lambda a, b, c: bridge_loss(a, b, c, t=0.3), (zv, zt, za))
    assert torch.autograd.gradcheck(
        lambda a, b, c: bridge_loss(a, b, c, random_t=True, generator=torch.Generator().manual_seed(1)),
        (zv, zt, za),
    )
    assert torch.autograd.gradcheck(
        lambda a, b, c, d: consistency_loss(a, b, c, d)["total"], (zv, zt, za, zta)
    )


def test_gradients_reach_every_input_of_the_full_structured_loss():
    leaves = {k: tt(x * 1.7, grad=True) for k, x in views(16).items()}
    loss = StructuredLoss("clip", mode="four_term", weights=dict.fromkeys(REGULARIZERS, 1.0), temperature=0.2)
    assert loss.requires | loss.optional == set(leaves)
    scale = torch.tensor(4.0, dtype=torch.float64, requires_grad=True)
    total, _ = loss(leaves, scale=scale)
    total.backward()
    assert scale.grad is not None and scale.grad.item() != 0
    for key, leaf in leaves.items():
        assert leaf.grad is not None and leaf.grad.abs().sum().item() > 0, key


# --- the wrapper ---------------------------------------------------------------------------------------
def raw_views(seed: int) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    return {k: tt(x * rng.uniform(0.5, 2.0, (B, 1))) for k, x in views(seed).items()}


@pytest.mark.parametrize(("name", "params"), [("clip", {}), ("siglip", {}), ("dcl", {"temperature": 0.3})])
def test_zero_weights_equal_the_base_loss(name, params):
    out = raw_views(17)
    zero = StructuredLoss(name, base_params=params, weights=dict.fromkeys(REGULARIZERS, 0.0), temperature=0.2)
    total, parts = zero(out)
    # the wrapper's temperature fills in for a base that takes one and was given none (siglip takes none)
    expected_params = params if name == "siglip" else {"temperature": 0.2, **params}
    close(total, build_loss(name, **expected_params)(out["img"], out["txt"]))
    assert set(parts) == {"base", "total"}
    assert zero.requires == {"img", "txt"}


def test_four_term_with_clip_base_equals_the_quarter_formula():
    out = raw_views(18)
    v = {k: F.normalize(x, dim=1).numpy() for k, x in out.items()}
    tau = 0.15
    hand = (
        np_infonce(v["img"], v["txt"], tau)
        + np_infonce(v["txt"], v["img"], tau)
        + np_infonce(v["img"], v["img_aug"], tau)
        + np_infonce(v["txt"], v["txt_aug"], tau)
    ) / 4
    total, parts = StructuredLoss("clip", mode="four_term", temperature=tau)(out)
    close(total, hand)
    close(parts["base"], hand)
    # a passed logit scale drives every term, clamped at 100 like CLIP's
    scale = torch.tensor(1 / tau, dtype=torch.float64)
    total_s, _ = StructuredLoss("clip", mode="four_term", temperature=0.9)(out, scale=scale)
    close(total_s, hand)
    clamped, _ = StructuredLoss("clip", mode="four_term")(out, scale=torch.tensor(500.0, dtype=torch.float64))
    close(clamped, StructuredLoss("clip", mode="four_term", temperature=0.01)(out)[0])


def test_weighted_regularizers_add_up():
    out = raw_views(19)
    z = {k: F.normalize(x, dim=1) for k, x in out.items()}
    w = {"separation": 0.3, "bridge": 0.7, "consistency": 2.0}
    loss = StructuredLoss("clip", weights=w, bridge_t=0.4, temperature=0.2)
    total, parts = loss(out)
    base = build_loss("clip", temperature=0.2)(out["img"], out["txt"])
    sep = separation_loss(
        z["img"], z["indep_img"], z["txt"], z["indep_txt"], z["indep_img_aug"], z["indep_txt_aug"], 0.2
    )["total"]
    br = bridge_loss(z["img"], z["txt"], z["img_aug"], t=0.4)
    gc = consistency_loss(z["img"], z["txt"], z["img_aug"], z["txt_aug"])["total"]
    close(total, base + 0.3 * sep + 0.7 * br + 2.0 * gc)
    for key, value in (("base", base), ("separation", sep), ("bridge", br), ("consistency", gc)):
        close(parts[key], value.item())
    assert "separation.ortho" in parts and "consistency.cross" in parts
    # detached 0-dim tensors: read when logged, not at every step
    assert all(isinstance(x, torch.Tensor) and x.ndim == 0 and not x.requires_grad for x in parts.values())


def test_requires_and_missing_views():
    out = raw_views(20)
    loss = StructuredLoss(weights={"separation": 1.0, "bridge": 1.0})
    assert loss.requires == {"img", "txt", "indep_img", "indep_txt", "img_aug"}
    assert StructuredLoss(mode="four_term").requires == {"img", "txt", "img_aug", "txt_aug"}
    with pytest.raises(ValueError, match="indep_txt"):
        loss({k: out[k] for k in ("img", "txt", "indep_img", "img_aug")})
    with pytest.raises(ValueError, match="img_aug"):
        StructuredLoss(weights={"bridge": 1.0})({"img": out["img"], "txt": out["txt"]})
    with pytest.raises(ValueError, match="txt_aug"):
        StructuredLoss(mode="four_term")({"img": out["img"], "txt": out["txt"], "img_aug": out["img_aug"]})
    with pytest.raises(ValueError, match="outputs"):
        StructuredLoss()({"img": out["img"], "text": out["txt"]})
    with pytest.raises(ValueError, match="outputs"):
        StructuredLoss()({"img": out["img"], "txt": out["txt"][:, :2]})


def test_stateful_base_receives_the_index():
    out = raw_views(21)
    loss = StructuredLoss("sogclr", base_params={"num_samples": 20}, weights={"consistency": 1.0})
    with pytest.raises(ValueError, match="index"):
        loss(out)
    total, _ = loss(out, index=torch.arange(B))
    assert torch.isfinite(total)
    assert loss.base.steps.item() == 1  # the base consumed the batch with its index


def test_module_base_is_used_as_is():
    out = raw_views(22)
    base = build_loss("clip", temperature=0.5)
    total, _ = StructuredLoss(base)(out)
    close(total, base(out["img"], out["txt"]))


# --- validation ----------------------------------------------------------------------------------------
def _bad_calls():
    v = {k: tt(x) for k, x in views(23).items()}
    img, txt, aug = v["img"], v["txt"], v["img_aug"]
    return [
        (lambda: uniformity_loss(img, t=0), "^t must"),
        (lambda: uniformity_loss(img[0]), "^z must"),
        (lambda: separation_loss(img, txt, img, txt, weights=(1.0, -1.0, 1.0)), "weights"),
        (lambda: separation_loss(img, txt, img, txt, weights=(1.0, 1.0)), "weights"),
        (lambda: separation_loss(img, txt, img, txt[:3]), "indep_txt"),
        (lambda: separation_loss(img, txt, img, txt, temperature=-1.0), "temperature"),
        (lambda: bridge_mean(img, txt, 1.5), "^t must"),
        (lambda: bridge_mean(img, txt, torch.ones(B + 1, dtype=torch.float64)), "^t must"),
        (lambda: bridge_loss(img, txt, aug, t=0.0), "^t must"),
        (lambda: bridge_loss(img, txt, aug, t=1.0), "^t must"),
        (lambda: bridge_loss(img, txt, aug, generator=3), "generator"),
        (lambda: bridge_loss(img, txt, aug[:, :3]), "z_img_aug"),
        (lambda: consistency_loss(img, txt, weights=(0.25, 0.25, float("nan"), 0.25)), "weights"),
        (lambda: consistency_loss(img, txt, z_txt_aug=aug[:2]), "z_txt_aug"),
        (lambda: StructuredLoss(weights={"bridges": 1.0}), "separation, bridge, consistency"),
        (lambda: StructuredLoss(weights={"bridge": -0.1}), "weights"),
        (lambda: StructuredLoss(weights={"bridge": float("nan")}), "weights"),
        (lambda: StructuredLoss(mode="both"), "mode"),
        (lambda: StructuredLoss(bridge_t=1.0), "bridge_t"),
        (lambda: StructuredLoss(temperature=0), "temperature"),
        (lambda: StructuredLoss(base=3), "base"),
        (lambda: StructuredLoss(base="nope"), "nope"),
        (lambda: StructuredLoss(base_params={"temprature": 0.1}), "temprature"),
        (lambda: StructuredLoss(build_loss("clip"), base_params={"temperature": 0.1}), "base_params"),
        (lambda: StructuredLoss(consistency_weights=(1.0,)), "consistency_weights"),
        (lambda: StructuredLoss()([img, txt]), "outputs"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_calls())))
def test_bad_inputs_raise_value_error_naming_the_parameter(case):
    call, name = _bad_calls()[case]
    with pytest.raises(ValueError, match=name):
        call()
