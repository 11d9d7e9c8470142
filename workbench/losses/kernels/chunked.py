"""Exact, memory-linear building blocks shared by every loss in the zoo.

Two reductions of the similarity matrix cover all of them:

* ``row_logsumexp``: ``lse_r = log sum_c exp(scale * <q_r, k_c>)`` over the columns that are not
  excluded for row r. InfoNCE, NT-Xent, DCL, MoCo, SogCLR and the decomposable Bayesian loss are all
  a positive logit minus (a function of) this quantity.
* ``pairwise_sigmoid_sum``: ``sum_{r,c} softplus(-z_rc * (scale * <q_r, k_c> + bias))`` with
  ``z_rc = +1`` on the positive pairs and -1 elsewhere (SigLIP).

Three implementations, picked with ``implementation=`` (see ``resolve_implementation``):

* ``"naive"``: plain autograd over the whole (M, N) matrix.
* ``"chunked"``: custom autograd functions that visit ``chunk_size`` rows at a time in the forward
  pass, keep only the (M,) row statistics, and recompute each chunk's logits in the backward pass
  (the FlashAttention / Inf-CL recipe). Peak memory is O(chunk_size * N) instead of O(M * N).
* ``"fused"``: the Triton kernels of ``workbench.losses.kernels.fused``, tiled so the (M, N) matrix never
  exists, forward or backward (memory O((M + N) d)).
* ``"auto"`` (default): fused on CUDA where Triton is installed and the dtype is supported;
  otherwise chunked when ``chunk_size`` is set and naive when not.

All three give the same values and gradients up to float round-off.

Logits are accumulated in float32 even for bf16/fp16 inputs (float64 inputs stay float64).
"""

from __future__ import annotations

import importlib.util
import os
import sys

import torch
from torch import Tensor

IMPLEMENTATIONS = ("auto", "naive", "chunked", "fused")
DEFAULT_CHUNK_SIZE = 1024  # rows per chunk for implementation="chunked" without a chunk_size
FUSED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_FUSED_NEEDS = (
    "implementation='fused' needs the triton package and CUDA tensors (or CPU tensors through the Triton "
    "interpreter: TRITON_INTERPRET=1 set before the fused kernels are first used), with float32, bfloat16 "
    "or float16 features; use implementation='auto', 'naive' or 'chunked' otherwise"
)


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half types and float32; float64 stays float64 (for gradcheck)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_implementation(implementation: str, chunk_size: int | None) -> str:
    """Validate an ``implementation`` argument (and its combination with ``chunk_size``)."""
    if not isinstance(implementation, str) or implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"implementation must be one of {', '.join(map(repr, IMPLEMENTATIONS))}; got {implementation!r}"
        )
    if implementation == "naive" and chunk_size is not None:
        raise ValueError(
            f"chunk_size={chunk_size} contradicts implementation='naive' (which materialises the whole "
            "matrix): leave chunk_size=None, or use implementation='chunked' or 'auto'"
        )
    return implementation


def _env_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def _triton_interpreted(triton_module) -> bool:
    """Whether an imported triton built its own library functions for the interpreter.

    Triton decides at ``import triton`` (for its library) and at each ``@triton.jit`` (for ours) whether
    functions are interpreted, from TRITON_INTERPRET at that moment; the two must agree.
    """
    try:
        from triton.runtime.interpreter import InterpretedFunction

        return isinstance(triton_module.language.zeros, InterpretedFunction)
    except (ImportError, AttributeError):  # a triton laid out differently: trust the environment
        return _env_interpret()


def _triton_problem() -> str | None:
    """Why triton cannot be used here (without importing it), or None."""
    if "workbench.losses.kernels.fused" in sys.modules:
        return None
    try:
        found = importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):  # ValueError: sys.modules["triton"] is None
        found = False
    if not found:
        return "triton is not importable: install the 'fused' extra (pip install 'workbench[fused]')"
    return None


def _interpreter_problem() -> str | None:
    """Why the fused kernels cannot run on CPU tensors (through the Triton interpreter), or None."""
    late = (
        "triton was imported before TRITON_INTERPRET=1 was set, so its functions are built for CUDA; "
        "set the variable before anything imports triton"
    )
    module = sys.modules.get("workbench.losses.kernels.fused")
    if module is not None:
        if not module.INTERPRET:
            return (
                "tensors are on CPU and the fused kernels were built for CUDA (TRITON_INTERPRET=1 was not "
                "set when they were first used)"
            )
        return None if module.TRITON_INTERPRETED else late
    if not _env_interpret():
        return "tensors are on CPU and TRITON_INTERPRET=1 is not set"
    if "triton" in sys.modules and not _triton_interpreted(sys.modules["triton"]):
        return late
    return None


def _interpreted() -> bool:
    """Whether the fused kernels are (or, once imported, will be) Triton-interpreter functions."""
    module = sys.modules.get("workbench.losses.kernels.fused")
    return module.INTERPRET if module is not None else _env_interpret()


def fused_problem(*tensors: Tensor) -> str | None:
    """Why ``implementation="fused"`` cannot run on these tensors, or None if it can."""
    first = tensors[0]
    if any(t.device != first.device for t in tensors):
        return f"tensors are on different devices ({', '.join(str(t.device) for t in tensors)})"
    if any(t.dtype != first.dtype for t in tensors):
        return f"features have different dtypes ({', '.join(str(t.dtype) for t in tensors)})"
    if first.dtype not in FUSED_DTYPES:
        return f"features are {first.dtype}; the fused kernels take float32, bfloat16 or float16"
    if first.device.type not in ("cuda", "cpu"):
        return f"tensors are on {first.device.type}; the fused kernels run on CUDA"
    problem = _triton_problem()
    if problem is None and first.device.type == "cpu":
        problem = _interpreter_problem()
    if problem is None and first.device.type == "cuda" and not _interpreted():
        major, minor = torch.cuda.get_device_capability(first.device)
        if major < 8:  # bfloat16 tensor cores and the tile sizes assume Ampere or newer
            problem = f"the GPU has compute capability {major}.{minor}; the fused kernels need 8.0 or newer"
    return problem


def resolve_implementation(implementation: str, chunk_size: int | None, *tensors: Tensor) -> str:
    """The implementation that runs: ``"naive"``, ``"chunked"`` or ``"fused"``.

    ``"auto"`` takes the fused kernels for CUDA tensors when they can run, and otherwise the chunked
    path when ``chunk_size`` is set, else the naive one.

    Raises:
        RuntimeError: ``"fused"`` was asked for where it cannot run (the message says why).
    """
    if implementation == "auto":
        # never the interpreter on its own: it is orders of magnitude slower than the torch paths
        if tensors[0].device.type == "cuda" and fused_problem(*tensors) is None and not _interpreted():
            return "fused"
        return "naive" if chunk_size is None else "chunked"
    if implementation == "fused":
        problem = fused_problem(*tensors)
        if problem is not None:
            raise RuntimeError(f"{_FUSED_NEEDS}. Here: {problem}.")
    elif implementation not in IMPLEMENTATIONS:
        check_implementation(implementation, chunk_size)
    return implementation


def _fused():
    from workbench.losses.kernels import fused as _triton

    return _triton


def fused_cross_logsumexp(
    a: Tensor, b: Tensor, scale: Tensor, bound: float | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Row and column log-sum-exps of ``scale * a @ b.T`` and the positives ``scale <a_r, b_r>`` by the
    fused kernels, both directions from each pass over the tiles
    (``workbench.losses.kernels.fused.cross_logsumexp``)."""
    return _fused().cross_logsumexp(a, b, scale, bound)


def fused_row_terms(
    q: Tensor, k: Tensor, scale: Tensor, exclude: Tensor | None, pos_col: Tensor
) -> tuple[Tensor, Tensor]:
    """``(positive logits, row log-sum-exp)`` of one anchor block by the fused kernels
    (``workbench.losses.kernels.fused.row_terms``)."""
    return _fused().row_terms(q, k, scale, exclude, pos_col)


def masked_similarities(q: Tensor, k: Tensor, exclude: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Raw similarities ``q @ k.T`` in float32 and a boolean mask of the excluded entries.

    Args:
        q: (c, d) rows.
        k: (N, d) columns.
        exclude: (c, m) column indices to exclude per row, -1 for "none"; or None.

    Returns:
        ``(sims, mask)`` where ``mask`` is None when nothing is excluded.
    """
    sims = (q @ k.T).to(accumulation_dtype(q.dtype))
    if exclude is None or exclude.numel() == 0:
        return sims, None
    valid = exclude >= 0
    rows = torch.arange(q.shape[0], device=q.device).unsqueeze(1).expand_as(exclude)
    mask = torch.zeros_like(sims, dtype=torch.bool)
    mask[rows[valid], exclude[valid]] = True
    return sims, mask


def _row_lse_full(q: Tensor, k: Tensor, scale: Tensor, exclude: Tensor | None) -> Tensor:
    sims, mask = masked_similarities(q, k, exclude)
    logits = scale * sims
    if mask is not None:
        logits = logits.masked_fill(mask, float("-inf"))
    return torch.logsumexp(logits, dim=1)


class _ChunkedRowLSE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, scale: Tensor, exclude: Tensor | None, chunk_size: int):
        lse = torch.empty(q.shape[0], dtype=accumulation_dtype(q.dtype), device=q.device)
        for start in range(0, q.shape[0], chunk_size):
            stop = start + chunk_size
            ex = None if exclude is None else exclude[start:stop]
            lse[start:stop] = _row_lse_full(q[start:stop], k, scale, ex)
        ctx.chunk_size = chunk_size
        ctx.has_exclude = exclude is not None
        ctx.save_for_backward(q, k, scale, lse, *(() if exclude is None else (exclude,)))
        return lse

    @staticmethod
    def backward(ctx, grad_lse: Tensor):
        q, k, scale, lse, *rest = ctx.saved_tensors
        exclude = rest[0] if ctx.has_exclude else None
        need_q, need_k, need_scale = ctx.needs_input_grad[:3]
        grad_q = torch.zeros_like(q) if need_q else None
        acc = accumulation_dtype(q.dtype)
        grad_k = torch.zeros(k.shape, dtype=acc, device=k.device) if need_k else None
        grad_scale = torch.zeros((), dtype=acc, device=q.device)
        for start in range(0, q.shape[0], ctx.chunk_size):
            stop = start + ctx.chunk_size
            ex = None if exclude is None else exclude[start:stop]
            sims, mask = masked_similarities(q[start:stop], k, ex)
            logits = scale * sims
            if mask is not None:
                logits = logits.masked_fill(mask, float("-inf"))
            # d lse_r / d logit_rc = softmax_rc; excluded entries give exp(-inf) = 0.
            weights = torch.exp(logits - lse[start:stop, None]) * grad_lse[start:stop, None]
            if need_scale:
                grad_scale += (weights * sims).sum()
            weights = (weights * scale).to(q.dtype)
            if need_q:
                grad_q[start:stop] = weights @ k
            if need_k:
                grad_k += (weights.T @ q[start:stop]).to(acc)
        return (
            grad_q,
            grad_k.to(k.dtype) if need_k else None,
            grad_scale.to(scale.dtype) if need_scale else None,
            None,
            None,
        )


def row_logsumexp(
    q: Tensor,
    k: Tensor,
    scale: Tensor,
    exclude: Tensor | None = None,
    chunk_size: int | None = None,
    implementation: str = "auto",
) -> Tensor:
    """Per-row log-sum-exp of ``scale * q @ k.T`` over the non-excluded columns.

    Args:
        q: (M, d) anchors.
        k: (N, d) candidates (may be the same tensor as ``q``).
        scale: 0-dim tensor, the inverse temperature (may require grad).
        exclude: (M, m) long tensor of column indices to leave out per row (-1 pads), or None.
        chunk_size: rows per chunk of the chunked path (None: naive, unless ``implementation`` says
            otherwise).
        implementation: "auto", "naive", "chunked" or "fused" (see the module docstring).

    Returns:
        (M,) float32 tensor.
    """
    implementation = resolve_implementation(implementation, chunk_size, q, k)
    if implementation == "fused":
        return _fused().row_logsumexp(q, k, scale, exclude)
    chunk_size = chunk_size or DEFAULT_CHUNK_SIZE
    if implementation == "naive" or chunk_size >= q.shape[0]:
        return _row_lse_full(q, k, scale, exclude)
    return _ChunkedRowLSE.apply(q, k, scale, exclude, chunk_size)


def _sigmoid_terms(sims: Tensor, scale: Tensor, bias: Tensor, positive: Tensor) -> Tensor:
    """softplus(-z * logit): -log sigmoid(z * logit), with z = +1 on positives and -1 elsewhere."""
    sign = 1.0 - 2.0 * positive.float()  # -z
    return torch.nn.functional.softplus(sign * (scale * sims + bias))


def _positive_mask(rows: int, cols: int, pos_col: Tensor) -> Tensor:
    mask = torch.zeros(rows, cols, dtype=torch.bool, device=pos_col.device)
    mask[torch.arange(rows, device=pos_col.device), pos_col] = True
    return mask


class _ChunkedSigmoidSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, scale: Tensor, bias: Tensor, pos_col: Tensor, chunk_size: int):
        acc = accumulation_dtype(q.dtype)
        total = torch.zeros((), dtype=acc, device=q.device)
        for start in range(0, q.shape[0], chunk_size):
            stop = start + chunk_size
            sims = (q[start:stop] @ k.T).to(acc)
            positive = _positive_mask(sims.shape[0], sims.shape[1], pos_col[start:stop])
            total += _sigmoid_terms(sims, scale, bias, positive).sum()
        ctx.chunk_size = chunk_size
        ctx.save_for_backward(q, k, scale, bias, pos_col)
        return total

    @staticmethod
    def backward(ctx, grad_total: Tensor):
        q, k, scale, bias, pos_col = ctx.saved_tensors
        need_q, need_k, need_scale, need_bias = ctx.needs_input_grad[:4]
        grad_q = torch.zeros_like(q) if need_q else None
        acc = accumulation_dtype(q.dtype)
        grad_k = torch.zeros(k.shape, dtype=acc, device=k.device) if need_k else None
        grad_scale = torch.zeros((), dtype=acc, device=q.device)
        grad_bias = torch.zeros((), dtype=acc, device=q.device)
        for start in range(0, q.shape[0], ctx.chunk_size):
            stop = start + ctx.chunk_size
            sims = (q[start:stop] @ k.T).to(acc)
            positive = _positive_mask(sims.shape[0], sims.shape[1], pos_col[start:stop])
            sign = 1.0 - 2.0 * positive.float()
            # d softplus(sign * x) / dx = sign * sigmoid(sign * x)
            dlogits = sign * torch.sigmoid(sign * (scale * sims + bias)) * grad_total
            grad_scale += (dlogits * sims).sum()
            grad_bias += dlogits.sum()
            dsims = (dlogits * scale).to(q.dtype)
            if need_q:
                grad_q[start:stop] = dsims @ k
            if need_k:
                grad_k += (dsims.T @ q[start:stop]).to(acc)
        return (
            grad_q,
            grad_k.to(k.dtype) if need_k else None,
            grad_scale.to(scale.dtype) if need_scale else None,
            grad_bias.to(bias.dtype) if need_bias else None,
            None,
            None,
        )


def pairwise_sigmoid_sum(
    q: Tensor,
    k: Tensor,
    scale: Tensor,
    bias: Tensor,
    pos_col: Tensor,
    chunk_size: int | None = None,
    implementation: str = "auto",
) -> Tensor:
    """``sum_{r,c} -log sigmoid(z_rc * (scale * <q_r, k_c> + bias))``, z = +1 where ``c == pos_col[r]``.

    Args:
        q: (M, d) rows. k: (N, d) columns.
        scale, bias: 0-dim tensors (may require grad).
        pos_col: (M,) long, the positive column of each row.
        chunk_size: rows per chunk of the chunked path (None: naive, unless ``implementation`` says
            otherwise).
        implementation: "auto", "naive", "chunked" or "fused" (see the module docstring).
    """
    implementation = resolve_implementation(implementation, chunk_size, q, k)
    if implementation == "fused":
        return _fused().pairwise_sigmoid_sum(q, k, scale, bias, pos_col)
    chunk_size = chunk_size or DEFAULT_CHUNK_SIZE
    if implementation == "naive" or chunk_size >= q.shape[0]:
        sims = (q @ k.T).to(accumulation_dtype(q.dtype))
        positive = _positive_mask(sims.shape[0], sims.shape[1], pos_col)
        return _sigmoid_terms(sims, scale, bias, positive).sum()
    return _ChunkedSigmoidSum.apply(q, k, scale, bias, pos_col, chunk_size)
