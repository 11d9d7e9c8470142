"""The gradient-bias lab: how far is a minibatch gradient from the full-data gradient?

On a finite set of N fixed pairs, each loss has a global objective (every anchor against all N
samples; ``loss.global_objective()``) with exact gradient g*. A minibatch of B random rows gives a
stochastic gradient g_B. Per loss and B we report (methods.md, section 1):

* ``bias``      ||E[g_B] - g*||, with the mean's own sampling error taken out:
                ``bias = sqrt(max(0, ||mean - g*||^2 - bias_floor^2))``; ``bias_raw`` = ||mean - g*||;
                ``rel_bias`` = bias / ||g*||
* ``variance``  mean ||g_B - mean(g_B)||^2 over ``repeats`` full gradients (trace of the covariance)
* ``mse``       mean ||g_B - g*||^2 = bias^2 + variance
* ``cosine``    cos(mean, g*)
* ``jensen_gap`` E[L_B] - L, both written with the mean (not the sum) over each anchor's partition terms
* ``bias_floor`` the root-mean-square error of the mean gradient itself, sqrt(E||mean - E[g_B]||^2):
                what ``bias_raw`` reads for an unbiased estimator. 0 when every batch is enumerated.
* ``rel_floor`` bias_floor / ||g*||
* ``method``    how the mean was taken (below); ``resolved``: ``bias_raw > 3 * bias_floor``, i.e. the
                bias is measured rather than bounded (an unresolved row says only bias <~ 3 floors).

The model is fixed while we measure, so a minibatch gradient is ``J^T e_B`` with J the Jacobian of
the N embeddings and e_B the loss's gradient with respect to them (zero outside the batch). The mean
over batches is therefore ``J^T mean(e_B)``: we average cheap embedding-space gradients and
backpropagate once per group of batches. Two ways to pick the batches (``mode``):

* ``"monte_carlo"``: ``bias_repeats`` independent random batches, split into ``floor_groups`` groups.
  The floor comes from the spread of the group means (the batch-means method), so it is estimated
  from every batch that makes up the mean. Heavy-tailed estimators (Gamma draws, running averages)
  need this: a floor from a few dozen full gradients misses their rare large batches and
  under-reports the noise, so an unbiased estimator would seem biased.
* ``"exact"``: where a loss knows its expected step in closed form (``bayes`` whose weights do not
  depend on the batch: ``BayesLoss.expected_step_objective``), that (``method="closed_form"``).
  Otherwise every one of the C(N, B) batches when there are at most ``bias_repeats``
  (``method="enumerated"``: E[g_B] itself, no sampling noise), else random partitions of the N samples
  into N // B batches (``method="partitions"``, ``bias_repeats // (N // B)`` of them, at least 2).
  Each batch of a random partition is a uniform random batch, so a partition's mean is an unbiased
  estimate of E[g_B]; it removes the noise of which anchors are drawn, not of which negatives each
  anchor meets, so the floor (from the spread of the partition means) can stay large for heavy-tailed
  estimators at small B. Gamma draws are replaced by their mean (``BayesLoss.
  expected_draws``): the step is affine in the draw, so this is their expected step, exactly (the
  values, and so ``jensen_gap``, are then at the mean draw).

``repeats`` full parameter gradients give the variance (and the per-batch ``gradbias_samples``).

Minibatch InfoNCE (``clip``, ``ntxent``) is biased because ``grad log Zhat = grad Zhat / Zhat`` is a
ratio estimator; its bias falls roughly like 1/B and is exactly zero at B = N. Stateful losses are
measured twice: ``cold`` (fresh state, as on the first epoch) and ``warm`` (after warm-up passes over
the data at the current parameters, as later in training). A loss that needs the whole dataset's
embeddings (``bayes`` with ``estimator="exact"``, the oracle) gets them at the probed parameters.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from workbench.losses import ContrastiveLoss, build_loss, select_specs
from workbench.training.gradcache import cached_backward, flat_grad

COLUMNS = [
    "loss",
    "state",
    "batch_size",
    "bias",
    "bias_raw",
    "rel_bias",
    "variance",
    "mse",
    "cosine",
    "jensen_gap",
    "bias_floor",
    "repeats",
    "bias_repeats",
    "rel_floor",
    "method",
    "resolved",
]
MODES = ("monte_carlo", "exact")
# Per-minibatch rows of the ``repeats`` full gradients (``measure(..., return_samples=True)``).
SAMPLE_COLUMNS = ["loss", "state", "batch_size", "repeat", "cosine", "rel_error", "value"]


def _with_chunking(loss: ContrastiveLoss, chunk_size: int) -> ContrastiveLoss:
    """The same loss computed memory-linearly: the full gradient runs over all N rows at once."""
    if loss.chunk_size is not None and loss.implementation != "naive":
        return loss
    chunked = copy.copy(loss)
    chunked.chunk_size = chunk_size
    if chunked.implementation == "naive":  # equal values and gradients, without the N x N matrix
        chunked.implementation = "auto"
    return chunked


def _gradient(
    model: nn.Module, x_a: Tensor, x_b: Tensor, loss_fn, micro_batch: int | None
) -> tuple[Tensor, float]:
    model.zero_grad(set_to_none=True)
    value = cached_backward(model, x_a, x_b, loss_fn, micro_batch)
    grad = flat_grad(model)
    model.zero_grad(set_to_none=True)
    return grad, float(value)


def full_gradient(
    model: nn.Module,
    x_a: Tensor,
    x_b: Tensor,
    loss: ContrastiveLoss,
    chunk_size: int = 1024,
    micro_batch: int | None = 1024,
    return_value: bool = False,
) -> Tensor | tuple[Tensor, float]:
    """Exact gradient (flattened, float64) of ``loss``'s global objective over all N pairs.

    The similarity matrix is visited ``chunk_size`` rows at a time and the model is backpropagated
    ``micro_batch`` rows at a time (GradCache), so N may exceed what fits as an N x N matrix.

    Args:
        model: pair model, ``model(x_a, x_b) -> (z_a, z_b)``.
        x_a, x_b: (N, ...) paired inputs (fixed views).
        loss: any registered loss; its ``global_objective()`` is differentiated.
        chunk_size: anchor rows per chunk of the loss.
        micro_batch: rows per model forward/backward; None for one pass.
        return_value: also return the objective's value.
    """
    objective = _with_chunking(loss.global_objective(), chunk_size)
    grad, value = _gradient(model, x_a, x_b, lambda z_a, z_b: objective(z_a, z_b), micro_batch)
    return (grad, value) if return_value else grad


def _resolve_losses(
    losses: Mapping[str, ContrastiveLoss | str | dict] | Sequence[str], num_samples: int
) -> dict[str, ContrastiveLoss]:
    if not isinstance(losses, Mapping):
        losses = {name: name for name in losses}
    resolved = {}
    for label, spec in losses.items():
        if isinstance(spec, ContrastiveLoss):
            resolved[label] = spec
            continue
        params = dict(spec) if isinstance(spec, Mapping) else {"name": spec}
        name = params.pop("name", label)
        if name in ("sogclr", "bayes"):
            params.setdefault("num_samples", num_samples)
        resolved[label] = build_loss(name, **params)
    return resolved


def _batch_index(num_samples: int, batch_size: int, seed: int, repeat: int) -> Tensor:
    # The same batches for every loss, so differences between losses are not sampling noise.
    gen = torch.Generator().manual_seed(seed * 7_919 + batch_size * 104_729 + repeat)
    return torch.randperm(num_samples, generator=gen)[:batch_size]


@torch.no_grad()
def warm_up(
    model: nn.Module, x_a: Tensor, x_b: Tensor, loss: ContrastiveLoss, batch_size: int, passes: int, seed: int
) -> None:
    """Run a stateful loss over the data (no parameter update) so its state matches the parameters."""
    z_a, z_b = model(x_a, x_b)
    gen = torch.Generator().manual_seed(seed)
    num_samples = x_a.shape[0]
    for _ in range(passes):
        order = torch.randperm(num_samples, generator=gen)
        for start in range(0, num_samples - batch_size + 1, batch_size):
            index = order[start : start + batch_size]
            loss(z_a[index], z_b[index], index=index)


def default_warmup_passes(loss: ContrastiveLoss) -> int:
    """Passes after which the state matches the parameters: a running average's first visit weighs
    less than 5% (at most 100 passes); a memory bank holds every sample (two passes, as a pass drops
    the last N mod B samples)."""
    if getattr(loss, "bank", None) is not None:
        return 2
    gamma = getattr(loss, "gamma", 1.0)
    if gamma >= 1.0:
        return 1
    return min(100, 1 + math.ceil(math.log(0.05) / math.log(1.0 - gamma)))


def batch_groups(
    num_samples: int, batch_size: int, mode: str, bias_repeats: int, floor_groups: int, seed: int
) -> tuple[list[list[Tensor]], str]:
    """The batches whose mean gradient estimates E[g_B], in groups with i.i.d. means, and the method.

    ``monte_carlo``: ``bias_repeats`` random batches in ``min(floor_groups, bias_repeats)`` near-equal
    groups. ``exact``: all C(N, B) batches as one group when there are at most ``bias_repeats``, else
    ``max(2, bias_repeats // (N // B))`` random partitions, one group each (see the module docstring).
    """
    if mode == "monte_carlo":
        batches = [_batch_index(num_samples, batch_size, seed + 1, r) for r in range(bias_repeats)]
        bounds = np.linspace(0, bias_repeats, min(floor_groups, bias_repeats) + 1).round().astype(int)
        return [batches[lo:hi] for lo, hi in itertools.pairwise(bounds)], "monte_carlo"
    if math.comb(num_samples, batch_size) <= bias_repeats:
        combos = itertools.combinations(range(num_samples), batch_size)
        return [[torch.tensor(c) for c in combos]], "enumerated"
    per = num_samples // batch_size
    groups = []
    for part in range(max(2, bias_repeats // per)):
        gen = torch.Generator().manual_seed(seed * 7_919 + batch_size * 104_729 + part + 1_000_003)
        order = torch.randperm(num_samples, generator=gen)
        groups.append([order[i * batch_size : (i + 1) * batch_size] for i in range(per)])
    return groups, "partitions"


def _stats(
    grads: Tensor, means: Tensor, sizes: Tensor, g_star: Tensor, values: list[float], offset: float
) -> dict[str, float]:
    """Statistics of one row from the ``repeats`` full gradients and the group means (sizes: batches)."""
    variance = float(((grads - grads.mean(dim=0)) ** 2).sum(dim=1).mean())
    weights = sizes.double() / sizes.sum()
    mean = (weights[:, None] * means).sum(dim=0)
    if means.shape[0] > 1:
        # batch means: sum_g n_g ||m_g - m||^2 / (G - 1) estimates one batch's variance; / R for the mean
        spread = (sizes.double() * ((means - mean) ** 2).sum(dim=1)).sum() / (means.shape[0] - 1)
        floor = math.sqrt(float(spread) / float(sizes.sum()))
    else:
        floor = 0.0
    bias_raw = float((mean - g_star).norm())
    bias = math.sqrt(max(0.0, bias_raw**2 - floor**2))
    norm = float(g_star.norm())
    cosine = float(torch.nn.functional.cosine_similarity(mean, g_star, dim=0)) if norm > 0 else math.nan
    return {
        "bias": bias,
        "bias_raw": bias_raw,
        "rel_bias": bias / norm if norm > 0 else math.nan,
        "variance": variance,
        "mse": bias**2 + variance,
        "cosine": cosine,
        "jensen_gap": float(np.mean(values)) - offset,
        "bias_floor": floor,
        "repeats": grads.shape[0],
        "bias_repeats": int(sizes.sum()),
        "rel_floor": floor / norm if norm > 0 else math.nan,
        "resolved": bool(bias_raw > 3 * floor),
    }


def _group_means(
    model: nn.Module,
    x_a: Tensor,
    x_b: Tensor,
    z_a: Tensor,
    z_b: Tensor,
    loss: ContrastiveLoss,
    saved: dict,
    groups: list[list[Tensor]],
    micro_batch: int | None,
) -> tuple[Tensor, Tensor, list[float]]:
    """Per group, ``J^T mean_B(e_B)``: its mean minibatch gradient, from embedding-space gradients.

    Returns the (G, P) group means, the (G,) group sizes and every batch's loss value.
    """
    means, values = [], []
    for group in groups:
        # float64 sums: thousands of float32 batch gradients would otherwise round visibly
        acc_a = torch.zeros_like(z_a, dtype=torch.float64)
        acc_b = torch.zeros_like(z_b, dtype=torch.float64)
        for index in group:
            loss.load_state_dict(saved)
            batch_a = z_a[index].clone().requires_grad_(True)
            batch_b = z_b[index].clone().requires_grad_(True)
            value = loss(batch_a, batch_b, index=index)
            grad_a, grad_b = torch.autograd.grad(value, (batch_a, batch_b))
            acc_a.index_add_(0, index, grad_a.double())
            acc_b.index_add_(0, index, grad_b.double())
            values.append(float(value.detach()))
        acc_a = (acc_a / len(group)).to(z_a.dtype)
        acc_b = (acc_b / len(group)).to(z_b.dtype)
        mean, _ = _gradient(
            model, x_a, x_b, lambda a, b, ga=acc_a, gb=acc_b: (a * ga).sum() + (b * gb).sum(), micro_batch
        )
        means.append(mean)
    return torch.stack(means), torch.tensor([len(g) for g in groups]), values


def _full_gradients(
    model: nn.Module, x_a: Tensor, x_b: Tensor, loss: ContrastiveLoss, saved: dict, batch_size: int,
    repeats: int, seed: int, micro_batch: int | None,
) -> tuple[Tensor, list[float]]:  # fmt: skip
    """``repeats`` minibatch parameter gradients (for the variance and the per-batch samples)."""
    grads, values = [], []
    for repeat in range(repeats):
        loss.load_state_dict(saved)
        index = _batch_index(x_a.shape[0], batch_size, seed, repeat)

        def loss_fn(z_a: Tensor, z_b: Tensor, index=index) -> Tensor:
            return loss(z_a, z_b, index=index)

        grad, value = _gradient(model, x_a[index], x_b[index], loss_fn, micro_batch)
        grads.append(grad)
        values.append(value)
    return torch.stack(grads), values


def _closed_form(
    model: nn.Module, x_a: Tensor, x_b: Tensor, z_a: Tensor, z_b: Tensor, loss: ContrastiveLoss,
    saved: dict, micro_batch: int | None, mode: str,
) -> tuple[Tensor, Tensor, list[float]] | None:  # fmt: skip
    """In ``exact`` mode, E[g_B] from the loss's ``expected_step_objective`` where it has one (else None)."""
    objective = getattr(loss, "expected_step_objective", None)
    if mode != "exact" or objective is None:
        return None
    loss.load_state_dict(saved)
    with torch.no_grad():
        value = objective(z_a, z_b)
    if value is None:
        return None
    mean, _ = _gradient(model, x_a, x_b, objective, micro_batch)
    loss.load_state_dict(saved)
    return mean[None], torch.tensor([1]), [float(value)]


@contextlib.contextmanager
def _population(loss: ContrastiveLoss, z_a: Tensor, z_b: Tensor) -> Iterator[None]:
    """Give a loss that needs the whole dataset's embeddings (the exact E-step) those of the probe."""
    if not getattr(loss, "needs_population", False):
        yield
        return
    previous = loss.population_source
    loss.set_population_source(lambda: (z_a, z_b))
    try:
        yield
    finally:
        loss.set_population_source(previous)


def _check_measure_args(num_samples, x_b, batch_sizes, repeats, bias_repeats, mode, floor_groups) -> None:
    if x_b.shape[0] != num_samples:
        raise ValueError(
            f"x_a and x_b must have the same number of rows, got {num_samples} and {x_b.shape[0]}"
        )
    bad = [
        b for b in batch_sizes if isinstance(b, bool) or not isinstance(b, int) or not 2 <= b <= num_samples
    ]
    if bad or not batch_sizes:
        raise ValueError(f"batch_sizes must be integers in [2, N={num_samples}], got {list(batch_sizes)}")
    for name, value in (("repeats", repeats), ("bias_repeats", bias_repeats), ("floor_groups", floor_groups)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 2:
            raise ValueError(f"{name} must be an integer >= 2, got {value!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")


def measure(
    model: nn.Module,
    x_a: Tensor,
    x_b: Tensor,
    losses: Mapping[str, ContrastiveLoss | str | dict] | Sequence[str],
    batch_sizes: Sequence[int],
    repeats: int = 50,
    seed: int = 0,
    warmup_passes: int | None = None,
    chunk_size: int = 1024,
    micro_batch: int | None = 1024,
    bias_repeats: int = 2000,
    return_samples: bool = False,
    mode: str = "monte_carlo",
    floor_groups: int = 40,
) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """Bias, variance, MSE, cosine and Jensen gap of minibatch gradients, per loss and batch size.

    Args:
        model: pair model at the parameters to probe (left unchanged).
        x_a, x_b: (N, ...) fixed paired inputs.
        losses: loss names, or a mapping label -> loss module / name / dict with ``name`` and params.
        batch_sizes: each in [2, N]; include N to see the bias vanish.
        repeats: minibatches with a full parameter gradient per (loss, batch size), for the variance (>= 2).
        bias_repeats: minibatches averaged in embedding space for the mean gradient (>= 2); in
            ``exact`` mode the budget (enumerate when C(N, B) fits, else that many batches of partitions).
        seed: seeds the batches (shared by all losses) and the Gamma draws.
        warmup_passes: passes over the data for the ``warm`` state of stateful losses. None picks
            enough for the state to match the parameters (``default_warmup_passes``): about
            3 / gamma passes for a running average, two for a memory bank, one to fill a MoCo queue.
        chunk_size, micro_batch: memory controls for the exact full gradient.
        return_samples: also return one row per full-gradient minibatch (``SAMPLE_COLUMNS``):
            ``cosine`` = cos(g_B, g*), ``rel_error`` = ||g_B - g*|| / ||g*||, ``value`` = L_B.
        mode: "monte_carlo" or "exact" (module docstring).
        floor_groups: groups of the Monte-Carlo batches for the noise floor (>= 2; at most bias_repeats).

    Returns:
        DataFrame with columns ``COLUMNS``; ``state`` is "stateless", "cold" or "warm". With
        ``return_samples``, the pair (that table, the per-batch table).
    """
    num_samples = x_a.shape[0]
    _check_measure_args(num_samples, x_b, batch_sizes, repeats, bias_repeats, mode, floor_groups)
    resolved = _resolve_losses(losses, num_samples)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        z_a, z_b = model(x_a, x_b)
    rows, samples = [], []
    for label, loss in resolved.items():
        g_star, value = full_gradient(model, x_a, x_b, loss, chunk_size, micro_batch, return_value=True)
        full_offset = loss.global_objective().log_normalizer(num_samples)
        states = ("cold", "warm") if loss.stateful else ("stateless",)
        with _population(loss, z_a, z_b):
            for batch_size in batch_sizes:
                batch_offset = loss.log_normalizer(batch_size)
                # jensen gap = E[L_B - c(B)] - (L - c(N)), with c the log of the partition size
                offset = (
                    math.nan
                    if batch_offset is None or full_offset is None
                    else value - full_offset + batch_offset
                )
                groups, method = batch_groups(num_samples, batch_size, mode, bias_repeats, floor_groups, seed)
                for state in states:
                    torch.manual_seed(seed)
                    if loss.stateful:
                        loss.reset_state()
                        if state == "warm":
                            passes = default_warmup_passes(loss) if warmup_passes is None else warmup_passes
                            warm_up(model, x_a, x_b, loss, batch_size, passes, seed)
                    saved = copy.deepcopy(loss.state_dict())
                    grads, batch_values = _full_gradients(
                        model, x_a, x_b, loss, saved, batch_size, repeats, seed, micro_batch
                    )
                    closed = _closed_form(model, x_a, x_b, z_a, z_b, loss, saved, micro_batch, mode)
                    if closed is not None:
                        means, sizes, values, how = *closed, "closed_form"
                    else:
                        expected = getattr(loss, "expected_draws", None)
                        with expected() if mode == "exact" and expected else contextlib.nullcontext():
                            means, sizes, values = _group_means(
                                model, x_a, x_b, z_a, z_b, loss, saved, groups, micro_batch
                            )
                        how = method
                    stats = _stats(grads, means, sizes, g_star, values, offset)
                    if closed is not None:
                        stats["bias_repeats"] = 0
                    rows.append(
                        {"loss": label, "state": state, "batch_size": batch_size, "method": how, **stats}
                    )
                    if return_samples:
                        samples.extend(_sample_rows(grads, g_star, batch_values, label, state, batch_size))
        if loss.stateful:
            loss.reset_state()
    model.train(was_training)
    table = pd.DataFrame(rows, columns=COLUMNS)
    return (table, pd.DataFrame(samples, columns=SAMPLE_COLUMNS)) if return_samples else table


def _sample_rows(
    grads: Tensor, g_star: Tensor, values: list[float], loss: str, state: str, batch_size: int
) -> list[dict]:
    norm = float(g_star.norm())
    cosines = torch.nn.functional.cosine_similarity(grads, g_star.unsqueeze(0), dim=1)
    errors = (grads - g_star).norm(dim=1) / norm if norm > 0 else torch.full((len(grads),), math.nan)
    return [
        {
            "loss": loss,
            "state": state,
            "batch_size": batch_size,
            "repeat": repeat,
            "cosine": float(cosines[repeat]) if norm > 0 else math.nan,
            "rel_error": float(errors[repeat]),
            "value": values[repeat],
        }
        for repeat in range(len(grads))
    ]


ALL_LOSSES: dict[str, dict] = {
    "clip": {"name": "clip"},
    "ntxent": {"name": "ntxent", "temperature": 0.1},
    "dcl": {"name": "dcl"},
    "dclw": {"name": "dclw"},
    "siglip": {"name": "siglip"},
    "moco": {"name": "moco", "queue_size": 256},
    "sogclr": {"name": "sogclr"},
    "bayes": {"name": "bayes"},
    "bayes-point": {"name": "bayes", "shape": math.inf},
    "bayes-k64": {"name": "bayes", "shape": math.inf, "bank_size": 64},
    "bayes-running": {"name": "bayes", "estimator": "running"},
    "bayes-batch": {"name": "bayes", "shape": math.inf, "estimator": "batch"},
    # the oracle: u_i = 1 / Z_i at the probed parameters, exactly; its bias must read about 0
    "bayes-exact": {"name": "bayes", "shape": math.inf, "estimator": "exact"},
}


# Pair datasets the lab can probe (the image-text datasets need the multimodal trainer's towers).
GRADBIAS_DATASETS = ("synthetic", "digits_views")


def loss_specs(labels: Sequence[str] | None = None) -> dict[str, dict]:
    """Specs of :data:`ALL_LOSSES` for ``labels`` (all of them when None or ``["all"]``), in order.

    Raises:
        ValueError: ``labels`` is empty, a plain string, or names a label outside ``ALL_LOSSES``.
    """
    return select_specs(labels, ALL_LOSSES)


def validate_gradbias(
    losses: Mapping[str, dict] | Sequence[str] | None = None,
    batch_sizes: Sequence[int] = (4, 16, 64, 256),
    repeats: int = 50,
    dataset: str = "synthetic",
    dataset_params: Mapping | None = None,
    model_size: str = "tiny",
    pretrain_steps: int = 100,
    temperature: float = 0.1,
    bias_repeats: int = 2000,
    mode: str = "monte_carlo",
    floor_groups: int = 40,
):
    """Check :func:`run_gradbias`'s arguments before any training; return ``(loss specs, dataset)``.

    A list of ``losses`` takes labels of :data:`ALL_LOSSES` (``bayes-point`` ...) or registry names.
    Every spec gets ``temperature`` where its loss takes one and none is given, and is built once so a
    bad loss parameter fails here.

    Raises:
        ValueError: naming the parameter and its allowed values.
    """
    from workbench.data import build_dataset
    from workbench.losses import loss_parameters
    from workbench.models import model_size as size_config

    if dataset not in GRADBIAS_DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(GRADBIAS_DATASETS)}; got {dataset!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not temperature > 0:
        raise ValueError(f"temperature must be a number > 0, got {temperature!r}")
    if isinstance(pretrain_steps, bool) or not isinstance(pretrain_steps, int) or pretrain_steps < 0:
        raise ValueError(f"pretrain_steps must be an integer >= 0, got {pretrain_steps!r}")
    for name, value in (("repeats", repeats), ("bias_repeats", bias_repeats), ("floor_groups", floor_groups)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 2:
            raise ValueError(f"{name} must be an integer >= 2, got {value!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    size_config(model_size)
    if losses is None:
        specs = loss_specs()
    elif isinstance(losses, Mapping):
        specs = {label: dict(spec) for label, spec in losses.items()}
    else:
        if isinstance(losses, str) or not list(losses):
            raise ValueError(f"losses must be a non-empty list of labels or names; got {losses!r}")
        specs = {name: dict(ALL_LOSSES.get(name, {"name": name})) for name in losses}
    for label, spec in specs.items():
        spec.setdefault("name", label)
        if "temperature" in loss_parameters(spec["name"]):
            spec.setdefault("temperature", temperature)
    data = build_dataset(dataset, **dict(dataset_params or {}))
    num_samples = len(data)
    bad = [
        b for b in batch_sizes if isinstance(b, bool) or not isinstance(b, int) or not 2 <= b <= num_samples
    ]
    if bad or not list(batch_sizes):
        raise ValueError(f"batch_sizes must be integers in [2, N={num_samples}], got {list(batch_sizes)}")
    _resolve_losses(specs, num_samples)
    return specs, data


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_gradbias(
    losses: Mapping[str, dict] | Sequence[str] | None = None,
    batch_sizes: Sequence[int] = (4, 16, 64, 256),
    repeats: int = 50,
    dataset: str = "synthetic",
    dataset_params: Mapping | None = None,
    model_size: str = "tiny",
    pretrain_steps: int = 100,
    temperature: float = 0.1,
    seed: int = 0,
    warmup_passes: int | None = None,
    bias_repeats: int = 2000,
    run_id: str | None = None,
    root=None,
    threads: int | None = 1,
    mode: str = "monte_carlo",
    floor_groups: int = 40,
) -> pd.DataFrame:
    """Measure gradient bias for several losses at a partly trained model and store it as a run.

    The model is first trained for ``pretrain_steps`` full-batch ``clip`` steps (bias at the random
    initialisation is rarely the interesting case), then :func:`measure` runs on one fixed draw of
    the paired inputs. The run holds the tables ``gradbias`` (``COLUMNS``) and ``gradbias_samples``
    (``SAMPLE_COLUMNS``, one row per full-gradient minibatch). A complete run with the same id and
    config is returned from the store without measuring again.

    Args:
        losses: labels -> {"name": ..., params} (default :data:`ALL_LOSSES`), or a list of labels of
            ``ALL_LOSSES`` or registry names. ``temperature`` is filled in where a loss takes one and
            none is given.
        batch_sizes: batch sizes to probe (the dataset size is the natural last one).
        repeats, seed, warmup_passes, bias_repeats, mode, floor_groups: as in :func:`measure`.
        dataset, dataset_params, model_size: what to build (``GRADBIAS_DATASETS``, ``workbench.data``).
        pretrain_steps: full-batch clip steps before measuring (0 measures at initialisation).
        temperature: default temperature for the losses.
        run_id, root: where to store the run (a new id by default).
        threads: torch CPU threads while measuring, restored afterwards; None leaves them alone. The
            thousands of tiny ops run fastest on one: two threads were 6x slower on a busy 2-core machine.
    """
    from workbench.data import step_generator
    from workbench.models import build_pair_model
    from workbench.models import model_size as size_config
    from workbench.store.runs import RunWriter, load_run, new_run_id

    specs, data = validate_gradbias(
        losses,
        batch_sizes,
        repeats,
        dataset,
        dataset_params,
        model_size,
        pretrain_steps,
        temperature,
        bias_repeats,
        mode,
        floor_groups,
    )
    config = {
        "kind": "gradbias",
        "losses": specs,
        "batch_sizes": list(batch_sizes),
        "repeats": repeats,
        "dataset": dataset,
        "dataset_params": dict(dataset_params or {}),
        "model_size": model_size,
        "pretrain_steps": pretrain_steps,
        "temperature": temperature,
        "seed": seed,
        "warmup_passes": warmup_passes,
        "bias_repeats": bias_repeats,
        "mode": mode,
        "floor_groups": floor_groups,
        "num_samples": len(data),
    }
    run_id = run_id or new_run_id(f"gradbias-{dataset}")
    try:
        previous = load_run(run_id, root=root)
        done = previous.is_complete and {"gradbias", "gradbias_samples"} <= set(previous.tables)
        summary = previous.summary
    except FileNotFoundError:
        done = False
    # The writer is created first so a clashing run id or config fails before minutes of measuring.
    with _torch_threads(threads), RunWriter.create(config, run_id=run_id, root=root) as writer:
        if done:
            # Reopening records the notebook that asked again; the measurement itself is reused.
            writer.finish(summary)
            return previous.table("gradbias")
        x_a, x_b = data.batch(torch.arange(len(data)), step_generator(seed, 0, stream=2))
        torch.manual_seed(seed)
        in_a, in_b = data.in_dims
        kind = "siamese" if data.views else "two_tower"
        model = build_pair_model(kind, in_a, in_b, size_config(model_size))
        if pretrain_steps:
            pretrain = build_loss("clip", temperature=temperature, chunk_size=1024)
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
            for _ in range(pretrain_steps):
                optimizer.zero_grad()
                cached_backward(model, x_a, x_b, lambda z_a, z_b: pretrain(z_a, z_b), micro_batch=1024)
                optimizer.step()
        table, samples = measure(
            model,
            x_a,
            x_b,
            specs,
            batch_sizes,
            repeats,
            seed,
            warmup_passes,
            bias_repeats=bias_repeats,
            return_samples=True,
            mode=mode,
            floor_groups=floor_groups,
        )
        writer.save_table("gradbias", table)
        writer.save_table("gradbias_samples", samples)
        small = table[table.batch_size == min(batch_sizes)]
        writer.finish(
            {f"rel_bias_b{min(batch_sizes)}.{r.loss}.{r.state}": r.rel_bias for r in small.itertuples()}
        )
    return table


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m workbench.labs.gradbias", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--losses", nargs="+", default=None, help=f"labels of {list(ALL_LOSSES)}")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 16, 64, 256])
    parser.add_argument("--repeats", type=int, default=50, help="full gradients per setting (variance)")
    parser.add_argument("--bias-repeats", type=int, default=2000, help="batches averaged for the mean")
    parser.add_argument("--mode", choices=MODES, default="monte_carlo", help="how the batches are chosen")
    parser.add_argument("--floor-groups", type=int, default=40, help="groups for the Monte-Carlo floor")
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--model-size", default="tiny")
    parser.add_argument("--pretrain-steps", type=int, default=100)
    parser.add_argument("--temperature", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-id", default=None)
    parser.add_argument("--root", default=None)
    args = parser.parse_args(argv)
    try:
        losses = None if args.losses is None else loss_specs(args.losses)
        table = run_gradbias(
            losses=losses,
            batch_sizes=args.batch_sizes,
            repeats=args.repeats,
            dataset=args.dataset,
            model_size=args.model_size,
            pretrain_steps=args.pretrain_steps,
            temperature=args.temperature,
            seed=args.seed,
            bias_repeats=args.bias_repeats,
            run_id=args.run_id,
            root=args.root,
            mode=args.mode,
            floor_groups=args.floor_groups,
        )
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    print(summary_view(table).to_string())
    return 0


def summary_view(table: pd.DataFrame) -> pd.DataFrame:
    """rel_bias ± rel_floor per (loss, state) and batch size; ``(unresolved)`` where not resolved."""
    cells = table.assign(
        cell=[
            f"{r.rel_bias:.4f} ± {r.rel_floor:.4f}" + ("" if r.resolved else " (unresolved)")
            for r in table.itertuples()
        ]
    )
    return cells.pivot_table(
        index=["loss", "state"], columns="batch_size", values="cell", aggfunc="first", sort=False
    )


if __name__ == "__main__":
    raise SystemExit(main())
