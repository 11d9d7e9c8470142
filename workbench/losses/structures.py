"""Modality-structure regularizers (Jiang et al., CVPR 2023) and a wrapper adding them to any loss.

Reference: Jiang, Liu, Lin, Wang, "Understanding and Constructing Latent Modality Structures in
Multi-modal Representation Learning", CVPR 2023 (docs/methods.md §3). The paper argues that aligning the
image and text features exactly discards modality-specific information (the information gap), and
proposes three regularizers on top of the contrastive loss:

1. deep feature separation (:func:`separation_loss`): extra heads give "independent" features that
   are kept orthogonal to the shared ones and informative by their own contrastive and uniformity terms;
2. Brownian bridge (:func:`bridge_loss`): the augmented image embedding should lie on the geodesic-ish
   bridge between the image and its caption;
3. geometric consistency (:func:`consistency_loss`): CyCLIP's cross-modal and in-modal symmetry terms
   plus their counterparts between the original and the augmented views.

Notation: ``z_img`` / ``z_txt`` are the (B, d) image / text embeddings of B paired samples, ``*_aug``
an augmented view of the same samples, ``indep_*`` the independent features of the separation heads.

All the functions here are pure torch and expect **L2-normalised** rows (they do not normalise, so
that they can be composed and gradchecked; the formulas assume unit norms, e.g. in
``||a - b||^2 = 2 - 2 <a, b>``). :class:`StructuredLoss` normalises raw features before calling them.
Half-precision inputs are computed in float32; float64 stays float64.

>>> loss = StructuredLoss("clip", weights={"consistency": 1.0, "bridge": 0.5})
>>> sorted(loss.requires)
['img', 'img_aug', 'txt']
>>> total, parts = loss({"img": img, "txt": txt, "img_aug": img_aug})   # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.losses import build_loss, loss_parameters
from workbench.losses._base import ContrastiveLoss
from workbench.validation import check_weights

REGULARIZERS = ("separation", "bridge", "consistency")
MODES = ("clip", "four_term")
OUTPUT_KEYS = ("img", "txt", "img_aug", "txt_aug", "indep_img", "indep_txt", "indep_img_aug", "indep_txt_aug")
T_CLAMP = 1e-3
"""Random bridge times are clamped to ``[T_CLAMP, 1 - T_CLAMP]`` so the weight 1/(2t(1-t)) stays finite."""

__all__ = [
    "MODES",
    "OUTPUT_KEYS",
    "REGULARIZERS",
    "StructuredLoss",
    "bridge_loss",
    "bridge_mean",
    "consistency_loss",
    "separation_loss",
    "uniformity_loss",
]


# --- validation helpers ---------------------------------------------------------------------------------
def _is_real(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def _check_embeddings(min_batch: int = 1, **named: Tensor | None) -> list[Tensor | None]:
    """Check that every non-None tensor is a floating (B, d) matrix of one shape, dtype and device.

    Returns the tensors (None kept) in the order given, half types upcast to float32.
    """
    ref_name, ref = None, None
    out: list[Tensor | None] = []
    for name, x in named.items():
        if x is None:
            out.append(None)
            continue
        if not isinstance(x, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor of shape (B, d), got {type(x).__name__}")
        if x.ndim != 2:
            raise ValueError(f"{name} must have shape (B, d), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
        if x.shape[0] < min_batch or x.shape[1] < 1:
            raise ValueError(
                f"{name} must have B >= {min_batch} rows and d >= 1 columns, got {tuple(x.shape)}"
            )
        if ref is None:
            ref_name, ref = name, x
        else:
            if x.shape != ref.shape:
                raise ValueError(
                    f"{name} must have the same shape as {ref_name}: "
                    f"got {tuple(x.shape)} and {tuple(ref.shape)}"
                )
            if x.dtype != ref.dtype or x.device != ref.device:
                raise ValueError(
                    f"{name} must have the dtype and device of {ref_name}: got {x.dtype} on {x.device}, "
                    f"expected {ref.dtype} on {ref.device}"
                )
        out.append(x if x.dtype in (torch.float32, torch.float64) else x.float())
    return out


def _check_weights(name: str, weights: Sequence[float], size: int) -> tuple[float, ...]:
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence) or len(weights) != size:
        raise ValueError(f"{name} must be a sequence of {size} numbers, got {weights!r}")
    for w in weights:
        if not _is_real(w) or not math.isfinite(w) or w < 0:
            raise ValueError(f"{name} must hold finite numbers >= 0, got {weights!r}")
    return tuple(float(w) for w in weights)


def _check_temperature(temperature: float | Tensor, name: str = "temperature") -> float | Tensor:
    if isinstance(temperature, Tensor):
        if temperature.numel() != 1 or not temperature.is_floating_point():
            raise ValueError(f"{name} must be a floating scalar, got shape {tuple(temperature.shape)}")
        temperature = temperature.reshape(())
        value = float(temperature.detach())
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be finite and > 0, got {value}")
        return temperature
    if not _is_real(temperature) or not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {temperature!r}")
    return float(temperature)


def _scaled_infonce(q: Tensor, k: Tensor, scale: float | Tensor) -> Tensor:
    """Mean cross-entropy of ``scale * q k^T`` with the diagonal as targets (no validation)."""
    logits = (q @ k.T) * scale
    targets = torch.arange(q.shape[0], device=q.device)
    return F.cross_entropy(logits, targets)


# --- 1. deep feature separation -------------------------------------------------------------------------
def uniformity_loss(z: Tensor, t: float = 2.0) -> Tensor:
    """Uniformity ``log (1/B^2) sum_{j,k} exp(-t ||z_j - z_k||^2)`` over all ordered pairs.

    This is the form printed in the paper (docs/methods.md §3), so the B diagonal terms (each
    ``exp(0) = 1``) are included: the value is bounded below by ``log(1/B)`` rather than by the
    Wang & Isola off-diagonal version used in ``workbench`` geometry measures (§4). Lower is more uniform.

    Args:
        z: (B, d) L2-normalised embeddings.
        t: kernel sharpness t > 0 (the paper uses 2).

    Returns:
        Scalar tensor.

    Raises:
        ValueError: ``z`` not a floating (B, d) matrix, or t not a finite number > 0.
    """
    (z,) = _check_embeddings(z=z)
    t = _check_temperature(t, "t")
    norms = (z * z).sum(dim=1)
    sq_dist = (norms[:, None] + norms[None, :] - 2 * (z @ z.T)).clamp_min(0)
    batch = z.shape[0]
    return torch.logsumexp((-t * sq_dist).reshape(-1), dim=0) - 2 * math.log(batch)


def separation_loss(
    shared_img: Tensor,
    indep_img: Tensor,
    shared_txt: Tensor,
    indep_txt: Tensor,
    indep_img_aug: Tensor | None = None,
    indep_txt_aug: Tensor | None = None,
    temperature: float | Tensor = 0.07,
    t: float = 2.0,
    weights: Sequence[float] = (1.0, 1.0, 1.0),
) -> dict[str, Tensor]:
    """Deep feature separation: L_sep = w_o L_ortho + w_c L^i_con + w_u L^i_uni.

    * ``"ortho"``: ``L_ortho = (1/B) sum_j [<z_Vj, z^i_Vj>^2 + <z_Tj, z^i_Tj>^2]`` keeps each
      independent feature orthogonal to the shared feature of the same sample and modality;
    * ``"indep_con"``: the in-modal InfoNCE on the independent features with their augmented view as
      positive, summed over the modalities: ``InfoNCE(z^i_V, z^{i,a}_V) + InfoNCE(z^i_T, z^{i,a}_T)``.
      A modality whose augmented independent view is None contributes 0 (both None: the term is 0);
    * ``"uniformity"``: :func:`uniformity_loss` of the independent features, summed over the two
      modalities;
    * ``"total"``: the weighted sum; the paper prints unit weights.

    Args:
        shared_img, shared_txt: (B, d) L2-normalised shared (contrastive) embeddings z_V, z_T.
        indep_img, indep_txt: (B, d) L2-normalised independent embeddings z^i_V, z^i_T.
        indep_img_aug, indep_txt_aug: optional (B, d) L2-normalised augmented independent views.
        temperature: tau > 0 of the in-modal InfoNCE.
        t: uniformity kernel sharpness (paper: 2).
        weights: (w_ortho, w_indep_con, w_uniformity), each finite and >= 0.

    Returns:
        dict with scalar tensors ``"ortho"``, ``"indep_con"``, ``"uniformity"``, ``"total"``.

    Raises:
        ValueError: mismatched inputs, bad temperature, t or weights (the message names them).
    """
    weights = _check_weights("weights", weights, 3)
    temperature = _check_temperature(temperature)
    shared_img, indep_img, shared_txt, indep_txt, indep_img_aug, indep_txt_aug = _check_embeddings(
        min_batch=2,
        shared_img=shared_img,
        indep_img=indep_img,
        shared_txt=shared_txt,
        indep_txt=indep_txt,
        indep_img_aug=indep_img_aug,
        indep_txt_aug=indep_txt_aug,
    )
    ortho = ((shared_img * indep_img).sum(1).square() + (shared_txt * indep_txt).sum(1).square()).mean()
    indep_con = ortho.new_zeros(())
    for anchor, positive in ((indep_img, indep_img_aug), (indep_txt, indep_txt_aug)):
        if positive is not None:
            indep_con = indep_con + _scaled_infonce(anchor, positive, 1.0 / temperature)
    uniformity = uniformity_loss(indep_img, t) + uniformity_loss(indep_txt, t)
    total = weights[0] * ortho + weights[1] * indep_con + weights[2] * uniformity
    return {"ortho": ortho, "indep_con": indep_con, "uniformity": uniformity, "total": total}


# --- 2. Brownian bridge ---------------------------------------------------------------------------------
def bridge_mean(z_img: Tensor, z_txt: Tensor, t: float | Tensor) -> Tensor:
    """Mean of the Brownian bridge from text to image at time t, projected to the sphere.

    ``mu(t) = (t z_V + (1 - t) z_T) / ||t z_V + (1 - t) z_T||`` (row-wise), so ``mu(0) = z_T`` and
    ``mu(1) = z_V``. A zero chord (``z_V = -z_T`` at t = 1/2) is guarded by ``F.normalize``'s eps.

    Args:
        z_img: (B, d) L2-normalised image embeddings z_V.
        z_txt: (B, d) L2-normalised text embeddings z_T.
        t: a number in [0, 1], or a tensor of shape () or (B,) with values in [0, 1] (one time per row).

    Returns:
        (B, d) tensor of unit rows.

    Raises:
        ValueError: mismatched inputs, or t of the wrong shape / outside [0, 1].
    """
    z_img, z_txt = _check_embeddings(z_img=z_img, z_txt=z_txt)
    if isinstance(t, Tensor):
        if not t.is_floating_point() or t.ndim > 1 or (t.ndim == 1 and t.shape[0] != z_img.shape[0]):
            raise ValueError(
                f"t must be a float, or a floating tensor of shape () or ({z_img.shape[0]},); "
                f"got dtype {t.dtype}, shape {tuple(t.shape)}"
            )
        if not bool(((t >= 0) & (t <= 1)).all()):
            raise ValueError("t must lie in [0, 1]")
        t = t.to(z_img.dtype).reshape(-1, 1) if t.ndim == 1 else t.to(z_img.dtype)
    elif not _is_real(t) or not 0 <= t <= 1:
        raise ValueError(f"t must be a number in [0, 1], got {t!r}")
    return F.normalize(t * z_img + (1 - t) * z_txt, dim=1)


def bridge_loss(
    z_img: Tensor,
    z_txt: Tensor,
    z_img_aug: Tensor,
    t: float = 0.25,
    random_t: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Brownian-bridge regularizer: L_br = (1/B) sum_j ||z^a_Vj - mu_j(t)||^2.

    The augmented image embedding should lie on the bridge between its image and its caption (at the
    bridge mean :func:`bridge_mean`, variance t(1-t) I). This is the squared distance computed
    directly; the closed form printed in the paper drops the ``2 - 2 *`` and a square root
    (docs/methods.md §3) and is not used. Gradients flow into all three inputs (mu depends on z_V and z_T).

    With ``random_t``, each row draws its own ``t_j ~ U(0, 1)`` (from ``generator`` if given, else
    torch's global RNG), clamped to ``[1e-3, 1 - 1e-3]``, and its term is weighted by
    ``1 / (2 t_j (1 - t_j))`` (the inverse bridge variance, as in the paper's option); ``t`` is then
    only validated. With a fixed ``t`` the terms are unweighted.

    Args:
        z_img: (B, d) L2-normalised image embeddings z_V.
        z_txt: (B, d) L2-normalised text embeddings z_T.
        z_img_aug: (B, d) L2-normalised augmented image embeddings z^a_V.
        t: bridge time in the open interval (0, 1) (paper: 0.25).
        random_t: draw t per row as described above.
        generator: optional ``torch.Generator`` for reproducible draws.

    Returns:
        Scalar tensor (0 when ``z_img_aug`` equals the bridge mean).

    Raises:
        ValueError: mismatched inputs, t outside (0, 1), or a generator that is not a torch.Generator.
    """
    if not _is_real(t) or not 0 < t < 1:
        raise ValueError(f"t must be a number in the open interval (0, 1), got {t!r}")
    if not isinstance(random_t, bool):
        raise ValueError(f"random_t must be a bool, got {random_t!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be None or a torch.Generator, got {type(generator).__name__}")
    z_img, z_txt, z_img_aug = _check_embeddings(z_img=z_img, z_txt=z_txt, z_img_aug=z_img_aug)
    if not random_t:
        mu = bridge_mean(z_img, z_txt, float(t))
        return (z_img_aug - mu).square().sum(dim=1).mean()
    device = generator.device if generator is not None else z_img.device
    times = torch.rand(z_img.shape[0], generator=generator, device=device, dtype=z_img.dtype)
    times = times.to(z_img.device).clamp(T_CLAMP, 1 - T_CLAMP)
    mu = bridge_mean(z_img, z_txt, times)
    weight = 1.0 / (2 * times * (1 - times))
    return (weight * (z_img_aug - mu).square().sum(dim=1)).mean()


# --- 3. geometric consistency ---------------------------------------------------------------------------
def consistency_loss(
    z_img: Tensor,
    z_txt: Tensor,
    z_img_aug: Tensor | None = None,
    z_txt_aug: Tensor | None = None,
    weights: Sequence[float] = (0.25, 0.25, 0.25, 0.25),
) -> dict[str, Tensor]:
    """Geometric consistency: CyCLIP's symmetry terms plus the augmented-view terms (L_gc + L^a_gc).

    With S = z_V z_T^T, G_V = z_V z_V^T, G_T = z_T z_T^T (and G^a_V, G^a_T for the augmented views):

    * ``"cross"``: ``(1/B) sum_{j,k} (<z_Vj, z_Tk> - <z_Vk, z_Tj>)^2 = ||S - S^T||_F^2 / B``
      (CyCLIP's cross-modal consistency);
    * ``"inmodal"``: ``(1/B) sum_{j,k} (<z_Vj, z_Vk> - <z_Tj, z_Tk>)^2 = ||G_V - G_T||_F^2 / B``
      (CyCLIP's in-modal consistency);
    * ``"aug_inmodal"``: ``(1/B) sum_{j,k} [(<z_Vj, z_Vk> - <z^a_Vj, z^a_Vk>)^2 + (<z_Tj, z_Tk> -
      <z^a_Tj, z^a_Tk>)^2]``; a modality whose augmented view is None contributes 0;
    * ``"aug_pair"``: ``(1/B) sum_j (<z_Vj, z_Tj> - <z^a_Vj, z^a_Tj>)^2``; 0 unless both augmented
      views are given;
    * ``"total"``: the weighted sum. The paper prints no weights; CyCLIP's scripts use 0.25 per term,
      the default here.

    Args:
        z_img: (B, d) L2-normalised image embeddings z_V.
        z_txt: (B, d) L2-normalised text embeddings z_T.
        z_img_aug: optional (B, d) L2-normalised augmented image view z^a_V.
        z_txt_aug: optional (B, d) L2-normalised augmented text view z^a_T.
        weights: (w_cross, w_inmodal, w_aug_inmodal, w_aug_pair), each finite and >= 0.

    Returns:
        dict with scalar tensors ``"cross"``, ``"inmodal"``, ``"aug_inmodal"``, ``"aug_pair"``, ``"total"``.

    Raises:
        ValueError: mismatched inputs or bad weights (the message names them).
    """
    weights = _check_weights("weights", weights, 4)
    z_img, z_txt, z_img_aug, z_txt_aug = _check_embeddings(
        z_img=z_img, z_txt=z_txt, z_img_aug=z_img_aug, z_txt_aug=z_txt_aug
    )
    batch = z_img.shape[0]
    sim = z_img @ z_txt.T
    gram_img, gram_txt = z_img @ z_img.T, z_txt @ z_txt.T
    cross = (sim - sim.T).square().sum() / batch
    inmodal = (gram_img - gram_txt).square().sum() / batch
    aug_inmodal = cross.new_zeros(())
    if z_img_aug is not None:
        aug_inmodal = aug_inmodal + (gram_img - z_img_aug @ z_img_aug.T).square().sum() / batch
    if z_txt_aug is not None:
        aug_inmodal = aug_inmodal + (gram_txt - z_txt_aug @ z_txt_aug.T).square().sum() / batch
    if z_img_aug is not None and z_txt_aug is not None:
        aug_pair = ((z_img * z_txt).sum(1) - (z_img_aug * z_txt_aug).sum(1)).square().mean()
    else:
        aug_pair = cross.new_zeros(())
    terms = {"cross": cross, "inmodal": inmodal, "aug_inmodal": aug_inmodal, "aug_pair": aug_pair}
    terms["total"] = sum(w * v for w, v in zip(weights, terms.values(), strict=True))
    return terms


# --- wrapper --------------------------------------------------------------------------------------------
class StructuredLoss(nn.Module):
    """A base contrastive loss plus weighted modality-structure regularizers (Jiang et al., CVPR 2023).

    ``total = L_base + w_sep * L_sep + w_br * L_br + w_gc * L_gc`` where

    * ``mode="clip"``: ``L_base = base(z_V, z_T)`` (any registry loss; with ``"clip"`` this is the
      paper's ``(L_V2T + L_T2V) / 2``);
    * ``mode="four_term"``: ``L_base = (1/2) base(z_V, z_T) + (1/4)(L_V2V + L_T2T)`` with the in-modal
      terms ``InfoNCE(z_V, z^a_V)`` and ``InfoNCE(z_T, z^a_T)`` (augmented view as positive). With the
      ``"clip"`` base this is exactly the paper's ``(1/4)(L_V2T + L_T2V + L_V2V + L_T2T)``;
    * ``L_sep`` = :func:`separation_loss` ``["total"]`` (on the shared and independent features),
      ``L_br`` = :func:`bridge_loss`, ``L_gc`` = :func:`consistency_loss` ``["total"]``.

    Every feature is L2-normalised first, and the base loss receives the normalised features. The
    in-modal InfoNCE terms use the call's ``scale`` when one is passed (clamped at the base's
    ``max_scale``, as the base does), else ``1 / temperature``; the separation's InfoNCE always uses
    ``temperature``. Regularizers with weight 0 are not computed. The optional augmented views are used
    by the consistency (and separation) terms whenever they are passed; see :attr:`optional`.

    Args:
        base: a registry loss name (built with ``workbench.losses.build_loss(base, **base_params)``) or
            an ``nn.Module`` called as ``base(a, b, index=..., scale=...)``.
        base_params: constructor parameters for a named base. If the loss takes a ``temperature`` and
            none is given, it gets this module's ``temperature`` so every term shares one tau.
        mode: ``"clip"`` or ``"four_term"`` (the latter needs ``img_aug`` and ``txt_aug``).
        weights: regularizer name (one of :data:`REGULARIZERS`) -> weight >= 0; missing names weigh 0
            (None: no regularizer, the base loss alone).
        bridge_t: bridge time in (0, 1) (paper: 0.25).
        bridge_random_t: draw the bridge time per row (see :func:`bridge_loss`).
        temperature: tau > 0 of the in-modal InfoNCE terms.
        separation_weights: inner (ortho, indep_con, uniformity) weights of L_sep (paper: unit).
        consistency_weights: inner (cross, inmodal, aug_inmodal, aug_pair) weights of L_gc (CyCLIP: 0.25).
        uniformity_t: kernel sharpness of the separation's uniformity term (paper: 2).
        generator: optional ``torch.Generator`` for the random bridge times.

    Raises:
        ValueError: unknown base name or parameter, bad mode, weights or hyper-parameters.
    """

    def __init__(
        self,
        base: str | nn.Module = "clip",
        base_params: Mapping[str, object] | None = None,
        mode: str = "clip",
        weights: Mapping[str, float] | None = None,
        bridge_t: float = 0.25,
        bridge_random_t: bool = False,
        temperature: float = 0.07,
        *,
        separation_weights: Sequence[float] = (1.0, 1.0, 1.0),
        consistency_weights: Sequence[float] = (0.25, 0.25, 0.25, 0.25),
        uniformity_t: float = 2.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(map(repr, MODES))}; got {mode!r}")
        self.mode = mode
        self.temperature = float(_check_temperature(temperature))
        self.weights = self._check_regularizer_weights(weights)
        if not _is_real(bridge_t) or not 0 < bridge_t < 1:
            raise ValueError(f"bridge_t must be a number in the open interval (0, 1), got {bridge_t!r}")
        self.bridge_t = float(bridge_t)
        if not isinstance(bridge_random_t, bool):
            raise ValueError(f"bridge_random_t must be a bool, got {bridge_random_t!r}")
        self.bridge_random_t = bridge_random_t
        self.separation_weights = _check_weights("separation_weights", separation_weights, 3)
        self.consistency_weights = _check_weights("consistency_weights", consistency_weights, 4)
        self.uniformity_t = float(_check_temperature(uniformity_t, "uniformity_t"))
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be None or a torch.Generator, got {type(generator).__name__}")
        self.generator = generator
        self.base = self._build_base(base, base_params)

    # --- construction ---------------------------------------------------------------------------------
    def _build_base(self, base: str | nn.Module, base_params: Mapping[str, object] | None) -> nn.Module:
        if base_params is not None and not isinstance(base_params, Mapping):
            raise ValueError(f"base_params must be a mapping or None, got {type(base_params).__name__}")
        if isinstance(base, nn.Module):
            if base_params:
                raise ValueError("base_params only applies to a base given by name, not to an nn.Module")
            return base
        if not isinstance(base, str):
            raise ValueError(f"base must be a registry loss name or an nn.Module, got {type(base).__name__}")
        params = dict(base_params or {})
        if "temperature" in loss_parameters(base) and "temperature" not in params:
            params["temperature"] = self.temperature
        return build_loss(base, **params)

    @staticmethod
    def _check_regularizer_weights(weights: Mapping[str, float] | None) -> dict[str, float]:
        return check_weights("weights", weights, REGULARIZERS, "regularizer", default=0.0)

    # --- requirements ---------------------------------------------------------------------------------
    @property
    def requires(self) -> set[str]:
        """Output keys a forward call needs with this configuration (compute these views)."""
        keys = {"img", "txt"}
        if self.mode == "four_term":
            keys |= {"img_aug", "txt_aug"}
        if self.weights["separation"] > 0:
            keys |= {"indep_img", "indep_txt"}
        if self.weights["bridge"] > 0:
            keys.add("img_aug")
        return keys

    @property
    def optional(self) -> set[str]:
        """Keys not required but used when present (their terms are 0 otherwise)."""
        keys: set[str] = set()
        if self.weights["consistency"] > 0:
            keys |= {"img_aug", "txt_aug"}
        if self.weights["separation"] > 0:
            keys |= {"indep_img_aug", "indep_txt_aug"}
        return keys - self.requires

    def _check_outputs(self, outputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        if not isinstance(outputs, Mapping):
            raise ValueError(f"outputs must be a mapping of view name to (B, d) tensor, got {type(outputs)}")
        unknown = sorted(set(outputs) - set(OUTPUT_KEYS))
        if unknown:
            raise ValueError(f"outputs has unknown key(s) {unknown}; allowed: {', '.join(OUTPUT_KEYS)}")
        missing = sorted(self.requires - {k for k, v in outputs.items() if v is not None})
        if missing:
            reasons = []
            if self.mode == "four_term":
                reasons.append("mode='four_term' needs img_aug and txt_aug")
            if self.weights["separation"] > 0:
                reasons.append("separation needs indep_img and indep_txt")
            if self.weights["bridge"] > 0:
                reasons.append("bridge needs img_aug")
            raise ValueError(f"outputs is missing key(s) {missing} ({'; '.join(reasons)})")
        present = {k: v for k, v in outputs.items() if v is not None}
        checked = _check_embeddings(min_batch=2, **{f"outputs[{k!r}]": v for k, v in present.items()})
        return {k: F.normalize(v, dim=1) for k, v in zip(present, checked, strict=True)}

    # --- forward --------------------------------------------------------------------------------------
    def _call_base(self, img: Tensor, txt: Tensor, index, scale, bias) -> Tensor:
        if isinstance(self.base, ContrastiveLoss):
            return self.base(img, txt, index=index, scale=scale, bias=bias)
        kwargs = {k: v for k, v in (("index", index), ("scale", scale), ("bias", bias)) if v is not None}
        return self.base(img, txt, **kwargs)

    def _inmodal_scale(self, scale: Tensor | float | None, ref: Tensor) -> Tensor | float:
        if scale is None:
            return 1.0 / self.temperature
        scale = _check_temperature(torch.as_tensor(scale, device=ref.device, dtype=ref.dtype), "scale")
        max_scale = getattr(self.base, "max_scale", None)
        return scale if max_scale is None else scale.clamp(max=max_scale)

    def forward(
        self,
        outputs: Mapping[str, Tensor],
        index: Tensor | None = None,
        scale: Tensor | float | None = None,
        bias: Tensor | float | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Base loss plus weighted regularizers.

        Args:
            outputs: raw (B, d) features: ``"img"``, ``"txt"`` (required) and optionally ``"img_aug"``,
                ``"txt_aug"``, ``"indep_img"``, ``"indep_txt"``, ``"indep_img_aug"``, ``"indep_txt_aug"``
                (see :attr:`requires`). None values count as absent.
            index: dataset positions of the rows, passed to the base (stateful ``sogclr`` / ``bayes``).
            scale: learnable logit scale 1/tau for the base and the in-modal InfoNCE terms.
            bias: passed to the base (SigLIP only).

        Returns:
            ``(total, parts)``: the scalar loss, and detached 0-dim tensors for logging (read them when
            logging: a read is a host synchronisation on CUDA): ``"base"`` (plus
            ``"base.cross"``, ``"base.v2v"``, ``"base.t2t"`` in four-term mode), each active regularizer
            unweighted under its name with its components as ``"<name>.<component>"``, and ``"total"``.

        Raises:
            ValueError: a required view is missing, an unknown key, or mismatched shapes.
        """
        z = self._check_outputs(outputs)
        img, txt = z["img"], z["txt"]
        parts: dict[str, Tensor] = {}
        base = self._call_base(img, txt, index, scale, bias)
        if self.mode == "four_term":
            inmodal_scale = self._inmodal_scale(scale, img)
            v2v = _scaled_infonce(img, z["img_aug"], inmodal_scale)
            t2t = _scaled_infonce(txt, z["txt_aug"], inmodal_scale)
            parts.update({"base.cross": base.detach(), "base.v2v": v2v.detach(), "base.t2t": t2t.detach()})
            base = base / 2 + (v2v + t2t) / 4
        parts["base"] = base.detach()
        total = base
        if self.weights["separation"] > 0:
            sep = separation_loss(
                img,
                z["indep_img"],
                txt,
                z["indep_txt"],
                z.get("indep_img_aug"),
                z.get("indep_txt_aug"),
                temperature=self.temperature,
                t=self.uniformity_t,
                weights=self.separation_weights,
            )
            total = total + self.weights["separation"] * sep["total"]
            self._log(parts, "separation", sep)
        if self.weights["bridge"] > 0:
            br = bridge_loss(
                img, txt, z["img_aug"], self.bridge_t, self.bridge_random_t, generator=self.generator
            )
            total = total + self.weights["bridge"] * br
            parts["bridge"] = br.detach()
        if self.weights["consistency"] > 0:
            gc = consistency_loss(img, txt, z.get("img_aug"), z.get("txt_aug"), self.consistency_weights)
            total = total + self.weights["consistency"] * gc["total"]
            self._log(parts, "consistency", gc)
        parts["total"] = total.detach()
        return total, parts

    @staticmethod
    def _log(parts: dict[str, Tensor], name: str, terms: dict[str, Tensor]) -> None:
        parts[name] = terms["total"].detach()
        parts.update({f"{name}.{key}": value.detach() for key, value in terms.items() if key != "total"})

    def extra_repr(self) -> str:
        active = {k: v for k, v in self.weights.items() if v > 0}
        return (
            f"mode={self.mode!r}, weights={active}, temperature={self.temperature}, bridge_t={self.bridge_t}"
        )
