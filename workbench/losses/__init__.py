"""The contrastive loss zoo: one module per family, one registry, one call signature.

>>> from workbench.losses import build_loss
>>> loss = build_loss("clip", temperature=0.1, chunk_size=1024)
>>> value = loss(image_features, text_features)            # doctest: +SKIP
>>> fused = build_loss("clip", implementation="fused")      # Triton kernels (CUDA)
>>> bayes = build_loss("bayes", num_samples=len(dataset))
>>> value = bayes(a, b, index=batch_positions)             # doctest: +SKIP
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence

from workbench.losses._base import ContrastiveLoss, check_finite_loss
from workbench.losses.bayes import BayesLoss
from workbench.losses.clip import ClipLoss
from workbench.losses.dcl import DCLLoss, DCLWLoss
from workbench.losses.kernels.chunked import IMPLEMENTATIONS
from workbench.losses.moco import MoCoLoss
from workbench.losses.ntxent import NTXentLoss
from workbench.losses.siglip import SigLipLoss
from workbench.losses.sogclr import SogCLRLoss

LOSSES: dict[str, type[ContrastiveLoss]] = {
    "ntxent": NTXentLoss,
    "clip": ClipLoss,
    "dcl": DCLLoss,
    "dclw": DCLWLoss,
    "siglip": SigLipLoss,
    "moco": MoCoLoss,
    "sogclr": SogCLRLoss,
    "bayes": BayesLoss,
}


def loss_names() -> list[str]:
    """Registered loss names."""
    return list(LOSSES)


def loss_parameters(name: str) -> dict[str, object]:
    """Constructor parameters of a loss and their defaults (``inspect.Parameter.empty`` if required)."""
    cls = _lookup(name)
    params = inspect.signature(cls.__init__).parameters
    return {key: p.default for key, p in params.items() if key != "self"}


def build_loss(name: str, **params) -> ContrastiveLoss:
    """Build a registered loss by name.

    Args:
        name: one of ``loss_names()``.
        **params: constructor arguments of that loss (e.g. ``temperature``, ``chunk_size``,
            ``num_samples`` for the stateful ``sogclr`` and ``bayes``). Every loss takes
            ``implementation``, one of ``IMPLEMENTATIONS``: "naive" (the similarity matrix is
            materialised), "chunked" (exact, ``chunk_size`` rows at a time, memory linear in B), "fused"
            (Triton kernels, the matrix is never materialised; CUDA, or CPU through the Triton
            interpreter), or "auto" (default: fused on CUDA where Triton is installed, else chunked
            when ``chunk_size`` is set, else naive). Every loss also takes ``validate`` (default
            True): False skips the checks that read tensor values (finite features, index range
            and repeats, a passed scale > 0), each a host synchronisation on CUDA; a training loop
            uses ``build_loss(name, validate=False, **params)`` and calls ``check_finite_loss`` once
            per logging interval.

    Raises:
        ValueError: unknown name or parameter, or an invalid value (the message names it).
    """
    cls = _lookup(name)
    allowed = loss_parameters(name)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for loss {name!r}; allowed: {sorted(allowed)}")
    missing = [
        key for key, default in allowed.items() if default is inspect.Parameter.empty and key not in params
    ]
    if missing:
        raise ValueError(f"loss {name!r} requires parameter(s) {missing}")
    return cls(**params)


def _lookup(name: str) -> type[ContrastiveLoss]:
    if name not in LOSSES:
        raise ValueError(f"unknown loss name {name!r}; known losses: {', '.join(LOSSES)}")
    return LOSSES[name]


def select_specs(
    labels: Sequence[str] | None, table: Mapping[str, dict], default: Mapping[str, dict] | None = None
) -> dict[str, dict]:
    """Copies of the loss specs of ``table`` named by ``labels``, in the given order (for the ``losses``
    parameter of the labs, whose labels name configured losses such as ``bayes-g0.9``).

    ``None`` selects ``default`` (all of ``table`` when that is None); ``["all"]`` selects all of ``table``.

    Raises:
        ValueError: ``labels`` is empty, a plain string, or names a label outside ``table``.
    """
    if labels is None:
        return {label: dict(spec) for label, spec in (table if default is None else default).items()}
    if not isinstance(labels, str) and list(labels) == ["all"]:
        return {label: dict(spec) for label, spec in table.items()}
    allowed = ", ".join(table) + ' (or ["all"])'
    if isinstance(labels, str) or not list(labels):
        raise ValueError(f"losses must be a non-empty list of labels among {allowed}; got {labels!r}")
    unknown = [label for label in labels if label not in table]
    if unknown:
        raise ValueError(f"losses has unknown label(s) {unknown}; allowed: {allowed}")
    return {label: dict(table[label]) for label in labels}


__all__ = [
    "IMPLEMENTATIONS",
    "LOSSES",
    "BayesLoss",
    "ClipLoss",
    "ContrastiveLoss",
    "DCLLoss",
    "DCLWLoss",
    "MoCoLoss",
    "NTXentLoss",
    "SigLipLoss",
    "SogCLRLoss",
    "build_loss",
    "check_finite_loss",
    "loss_names",
    "loss_parameters",
    "select_specs",
]
