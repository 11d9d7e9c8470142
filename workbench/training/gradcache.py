"""Exact large-batch gradients with small-batch memory (GradCache, Gao et al. 2021).

A contrastive loss couples every row of the batch, so it cannot be split into independent
micro-batches. GradCache splits it anyway, exactly:

1. embed every micro-batch without building a graph;
2. compute the loss on the cached embeddings and backpropagate to them (d loss / d z);
3. re-embed each micro-batch with a graph and backpropagate ``<z, d loss / d z>``.

Step 3 gives the same parameter gradient as one big forward/backward because the chain rule factors
through z. The RNG state of each micro-batch is replayed in step 3 so stochastic layers match.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

LossFn = Callable[[Tensor, Tensor], Tensor]


def _full_precision(z: Tensor) -> Tensor:
    """float32 for half-precision (autocast) outputs; float64 stays float64."""
    return z if z.dtype == torch.float64 else z.float()


def _rng_state(device: torch.device):
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state, device: torch.device) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)


def embed(
    model: nn.Module, x_a: Tensor, x_b: Tensor, micro_batch: int | None = None, autocast=None
) -> tuple[Tensor, Tensor]:
    """Embeddings of all rows without a graph, ``micro_batch`` rows at a time (float32 or float64)."""
    size = x_a.shape[0]
    step = size if micro_batch is None else micro_batch
    parts_a, parts_b = [], []
    with torch.no_grad():
        for start in range(0, size, step):
            with autocast or torch.autocast("cpu", enabled=False):
                z_a, z_b = model(x_a[start : start + step], x_b[start : start + step])
            parts_a.append(_full_precision(z_a))
            parts_b.append(_full_precision(z_b))
    return torch.cat(parts_a), torch.cat(parts_b)


Features = dict[str, Tensor]


def cached_backward(
    model: nn.Module,
    x_a: Tensor,
    x_b: Tensor,
    loss_fn: LossFn,
    micro_batch: int | None,
    autocast=None,
) -> Tensor:
    """Accumulate into ``.grad`` the gradient of ``loss_fn(model(x_a, x_b))``; returns the loss value.

    The pair-model form of :func:`cached_backward_features`.
    """

    def forward(part: Features) -> Features:
        z_a, z_b = model(part["a"], part["b"])
        return {"a": z_a, "b": z_b}

    return cached_backward_features(
        forward, {"a": x_a, "b": x_b}, lambda z: loss_fn(z["a"], z["b"]), micro_batch, autocast
    )


def cached_backward_features(
    forward: Callable[[Features], Features],
    inputs: Features,
    loss_fn: Callable[[Features], Tensor],
    micro_batch: int | None,
    autocast=None,
) -> Tensor:
    """Accumulate into ``.grad`` the gradient of ``loss_fn(forward(inputs))``; returns the loss value.

    ``inputs`` and the features ``forward`` returns are dicts of tensors with one row per example. With
    ``micro_batch=None`` (or >= the batch) this is one ordinary forward/backward. Otherwise the model
    only ever holds a graph for ``micro_batch`` rows. ``loss_fn`` sees the whole batch once, so stateful
    losses update their state once per call. Parameters that the loss uses directly (a learnable logit
    scale, say) receive their gradient in the loss's own backward.
    """
    ctx = autocast or torch.autocast("cpu", enabled=False)
    size = next(iter(inputs.values())).shape[0]
    if micro_batch is None or micro_batch >= size:
        with ctx:
            features = forward(inputs)
        loss = loss_fn({key: _full_precision(value) for key, value in features.items()})
        loss.backward()
        return loss.detach()
    device = next(iter(inputs.values())).device
    starts = range(0, size, micro_batch)

    def part(start: int) -> Features:
        return {key: value[start : start + micro_batch] for key, value in inputs.items()}

    states, parts = [], []
    with torch.no_grad():
        for start in starts:
            states.append(_rng_state(device))
            with ctx:
                parts.append({key: _full_precision(v) for key, v in forward(part(start)).items()})
    cached = {key: torch.cat([p[key] for p in parts]).requires_grad_(True) for key in parts[0]}
    loss = loss_fn(cached)
    loss.backward()
    after = _rng_state(device)
    for chunk, start in enumerate(starts):
        _set_rng_state(states[chunk], device)
        with ctx:
            features = forward(part(start))
        surrogate = sum(
            (_full_precision(value) * cached[key].grad[start : start + value.shape[0]]).sum()
            for key, value in features.items()
            if cached[key].grad is not None
        )
        surrogate.backward()
    _set_rng_state(after, device)
    return loss.detach()


def flat_grad(model: nn.Module) -> Tensor:
    """All parameter gradients concatenated (zeros for parameters without one), float64."""
    parts = []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        grad = p.grad if p.grad is not None else torch.zeros_like(p)
        parts.append(grad.detach().reshape(-1).double())
    return torch.cat(parts)
