"""Fused Triton kernels for the two reductions every loss is built on (``implementation="fused"``).

``row_logsumexp`` and ``pairwise_sigmoid_sum`` here compute exactly what the functions of the same
name in ``workbench.losses.kernels.chunked`` compute, without ever holding the (M, N) similarity matrix,
forward or backward. The recipe is FlashAttention's (Dao et al., "FlashAttention: Fast and
Memory-Efficient Exact Attention with IO-Awareness", NeurIPS 2022) applied to a contrastive loss, as
Inf-CL does (Cheng et al., "Breaking the Memory Barrier: Near Infinite Batch Size Scaling for
Contrastive Loss", 2024):

* **Tiling.** A program owns ``BLOCK_M`` rows of ``q`` and walks over all columns of ``k`` in tiles
  of ``BLOCK_N``. A tile of logits ``scale * q_tile @ k_tile.T`` is built in registers from chunks
  of ``BLOCK_D`` features (so any feature size works), used, and dropped. Inputs may be float32,
  bfloat16 or float16; the products are accumulated in float32.
* **Online log-sum-exp.** Each row keeps a running maximum ``m`` and a running sum
  ``l = sum exp(x - m)``; a new tile with row maximum ``m'`` updates them as
  ``l <- l * exp(m - max(m, m')) + sum exp(x - max(m, m'))``, so nothing overflows and one pass over
  the columns gives ``lse = m + log l`` (computed in base 2 with ``exp2``). Excluded columns (``-1``
  pads the exclusion list) and the tile padding beyond N enter as ``-inf``.
* **Sigmoid sum.** SigLIP's loss is a plain sum, so a program just adds up
  ``softplus(-z * (scale * s + bias))`` over its tiles (``z = +1`` at ``pos_col[r]``).
* **Saved for backward:** the inputs ``q``, ``k``, ``scale`` (and ``bias``, ``exclude``,
  ``pos_col``) and, for the log-sum-exp, the (M,) float32 ``lse``: O((M + N) d) in all.
* **Backward** recomputes each logits tile from ``q``, ``k`` and the saved ``lse``: the softmax
  weight is ``exp(x - lse_r)`` (the sigmoid loss needs no statistic at all), times the incoming
  gradient. One kernel over row blocks accumulates ``d q`` and per-program partial sums for
  ``d scale`` (and ``d bias``); a second kernel over column blocks recomputes the same tiles
  transposed and accumulates ``d k``. No atomics: every output element has one owner and a fixed
  summation order, so gradients are deterministic run to run. The feature axis of the gradient
  accumulators is split over the grid in chunks of ``BLOCK_DO`` (each chunk recomputes the tile),
  which bounds register use for large d.

Memory is linear in the batch: besides inputs and gradients (O((M + N) d)) the kernels write only
(M,) row statistics and a few partial sums per program; the (M, N) logits exist one
``BLOCK_M x BLOCK_N`` tile at a time in registers.

Arithmetic, per call on an (M, d) x (N, d) pair and with c = ceil(d / BLOCK_DO) feature chunks:
``2 M N d`` forward, ``(2 c + 2) M N d`` for each backward kernel, so ``(4 c + 6) M N d`` in all
(10 M N d for d <= 128). A symmetric CLIP loss makes two such calls (a against b, b against a),
about 20 B^2 d for d <= 128, where the matrix-multiply floor is 6 B^2 d (one product forward, two
backward). ``cross_logsumexp`` takes both directions of one ``a @ b.T`` at once (what the symmetric
CLIP loss needs): where the logits have a known bound <= 32 its forward kernel sums each tile's
exponentials into rows and columns in one pass, and its backward kernel builds each tile once for
both softmaxes and both gradients and adds the gradient chunks in place rather than recomputing the
tile per chunk: 8 B^2 d in all for any d (see its docstring). None of these kernels has run on a
GPU: their speed is not measured.

Kernels are built when this module is first imported: with ``TRITON_INTERPRET=1`` set then (and
already when ``triton`` itself was first imported, which builds Triton's own library functions), they
run on CPU tensors through Triton's interpreter (slow, for tests); otherwise they compile for CUDA.
``INTERPRET`` and ``TRITON_INTERPRETED`` record which. Callers go through
``workbench.losses.kernels.chunked``, which checks that the fused path can run before importing this module.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor
from triton.runtime.interpreter import InterpretedFunction

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

_LSE = 0  # kernel MODE: per-row log-sum-exp
_SIGMOID = 1  # kernel MODE: pairwise sigmoid (SigLIP)
LOG2E = tl.constexpr(1.4426950408889634)  # exp(x) = exp2(x * LOG2E)
LN2 = tl.constexpr(0.6931471805599453)


# --- device code ----------------------------------------------------------------------------------
@triton.jit
def _feature_tiles(q_ptr, k_ptr, rows, cols, dims, M, N, D, UPCAST: tl.constexpr):
    """Features ``dims`` of ``q[rows]`` and ``k[cols]`` (zero outside the matrices)."""
    in_d = dims[None, :] < D
    q_tile = tl.load(q_ptr + rows.to(tl.int64)[:, None] * D + dims[None, :], mask=(rows[:, None] < M) & in_d,
                     other=0.0)  # fmt: skip
    k_tile = tl.load(k_ptr + cols.to(tl.int64)[:, None] * D + dims[None, :], mask=(cols[:, None] < N) & in_d,
                     other=0.0)  # fmt: skip
    if UPCAST:  # the interpreter multiplies bfloat16 tiles as raw integers; the products are exact anyway
        q_tile = q_tile.to(tl.float32)
        k_tile = k_tile.to(tl.float32)
    return q_tile, k_tile


@triton.jit
def _similarity_tile(
    q_ptr, k_ptr, rows, cols, M, N, D,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    """``q[rows] @ k[cols].T`` in float32, summed over the features in chunks of BLOCK_D."""
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for start in range(0, D, BLOCK_D):
        dims = start + tl.arange(0, BLOCK_D)
        q_tile, k_tile = _feature_tiles(q_ptr, k_ptr, rows, cols, dims, M, N, D, UPCAST)
        acc = tl.dot(q_tile, tl.trans(k_tile), acc, input_precision=PRECISION)
    return acc


@triton.jit
def _candidates(ex_ptr, rows, cols, M, N, NUM_EX: tl.constexpr):
    """Boolean tile: column ``c`` is in the sum of row ``r`` (in range and not excluded)."""
    keep = (rows[:, None] < M) & (cols[None, :] < N)
    for j in tl.static_range(NUM_EX):
        excluded = tl.load(ex_ptr + rows.to(tl.int64) * NUM_EX + j, mask=rows < M, other=-1)
        keep = keep & (cols[None, :] != excluded[:, None])
    return keep


@triton.jit
def _softplus(x):
    """log(1 + exp(x)) without overflow, accurate where exp(-|x|) is tiny."""
    small = tl.exp(-tl.abs(x))
    log1p = tl.where(small < 1e-4, small - 0.5 * small * small, tl.log(1.0 + small))
    return tl.maximum(x, 0.0) + log1p


@triton.jit
def _dlogits(s, rows, cols, M, N, scale, bias, stat_ptr, grad_ptr, ex_ptr, pos_ptr, gpos_ptr,
             MODE: tl.constexpr, NUM_EX: tl.constexpr, HAS_POS: tl.constexpr):  # fmt: skip
    """d loss / d logit for a tile of raw similarities ``s`` (zero outside the sum).

    MODE 0 with HAS_POS: the positive logit of row r (column ``pos_ptr[r]``) also enters the loss
    with gradient ``gpos_ptr[r]``, added here in float32, before the tile is rounded for the products.
    """
    if MODE == 0:
        keep = _candidates(ex_ptr, rows, cols, M, N, NUM_EX)
        lse2 = tl.load(stat_ptr + rows, mask=rows < M, other=0.0) * LOG2E
        grad = tl.load(grad_ptr + rows, mask=rows < M, other=0.0)
        weight = tl.exp2(s * (scale * LOG2E) - lse2[:, None])  # softmax over the row
        dx = tl.where(keep, weight * grad[:, None], 0.0)
        if HAS_POS:  # whether or not the sum excludes it
            pos_col = tl.load(pos_ptr + rows, mask=rows < M, other=-1)
            on_pos = (cols[None, :] == pos_col[:, None]) & (cols[None, :] < N)
            dx += tl.where(on_pos, tl.load(gpos_ptr + rows, mask=rows < M, other=0.0)[:, None], 0.0)
        return dx
    else:
        keep = (rows[:, None] < M) & (cols[None, :] < N)
        positive = cols[None, :] == tl.load(pos_ptr + rows, mask=rows < M, other=-1)[:, None]
        x = s * scale + bias
        # the term is softplus(-z x), z = +1 on the positive: its derivative is -z sigmoid(-z x)
        sig = tl.sigmoid(tl.where(positive, -x, x))
        return tl.where(keep, tl.where(positive, -sig, sig) * tl.load(grad_ptr), 0.0)


@triton.jit
def _forward_kernel(
    q_ptr, k_ptr, scale_ptr, bias_ptr, ex_ptr, pos_ptr, out_ptr, M, N, D,
    MODE: tl.constexpr, NUM_EX: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    """One program per BLOCK_M rows: MODE 0 writes each row's log-sum-exp, MODE 1 its sigmoid sum."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    scale = tl.load(scale_ptr).to(tl.float32)
    running_max = tl.full((BLOCK_M,), -1e30, dtype=tl.float32)  # finite: exp2(-inf - -inf) is nan
    running_sum = tl.zeros((BLOCK_M,), dtype=tl.float32)
    bias = 0.0
    positive_col = rows
    if MODE == 1:
        bias = tl.load(bias_ptr).to(tl.float32)
        positive_col = tl.load(pos_ptr + rows, mask=rows < M, other=-1)
    for start in range(0, N, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        s = _similarity_tile(q_ptr, k_ptr, rows, cols, M, N, D, BLOCK_M, BLOCK_N, BLOCK_D, PRECISION, UPCAST)
        if MODE == 0:
            keep = _candidates(ex_ptr, rows, cols, M, N, NUM_EX)
            x = tl.where(keep, s * (scale * LOG2E), float("-inf"))
            new_max = tl.maximum(running_max, tl.max(x, axis=1))
            running_sum = running_sum * tl.exp2(running_max - new_max) + tl.sum(
                tl.exp2(x - new_max[:, None]), axis=1
            )
            running_max = new_max
        else:
            keep = (rows[:, None] < M) & (cols[None, :] < N)
            x = s * scale + bias
            terms = _softplus(tl.where(cols[None, :] == positive_col[:, None], -x, x))
            running_sum += tl.sum(tl.where(keep, terms, 0.0), axis=1)
    if MODE == 0:
        # a row with every column excluded gets log(0) = -inf, as torch.logsumexp does
        out = (running_max + tl.log2(tl.where(rows < M, running_sum, 1.0))) * LN2
    else:
        out = running_sum
    tl.store(out_ptr + rows, out, mask=rows < M)


@triton.jit
def _backward_rows_kernel(
    q_ptr, k_ptr, scale_ptr, bias_ptr, stat_ptr, grad_ptr, ex_ptr, pos_ptr, gpos_ptr,
    dq_ptr, partial_ptr, M, N, D,
    MODE: tl.constexpr, NUM_EX: tl.constexpr, HAS_POS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DO: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    """Grid (row blocks, feature chunks): ``dq[rows, chunk]`` and partial sums for d scale, d bias.

    ``partial_ptr`` gets two floats per program: sum(dlogit * s) and sum(dlogit).
    """
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.program_id(1) * BLOCK_DO + tl.arange(0, BLOCK_DO)
    scale = tl.load(scale_ptr).to(tl.float32)
    bias = 0.0
    if MODE == 1:
        bias = tl.load(bias_ptr).to(tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_DO), dtype=tl.float32)
    d_scale = tl.zeros((BLOCK_M,), dtype=tl.float32)
    d_bias = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for start in range(0, N, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        s = _similarity_tile(q_ptr, k_ptr, rows, cols, M, N, D, BLOCK_M, BLOCK_N, BLOCK_D, PRECISION, UPCAST)
        dx = _dlogits(s, rows, cols, M, N, scale, bias, stat_ptr, grad_ptr, ex_ptr, pos_ptr, gpos_ptr,
                      MODE, NUM_EX, HAS_POS)  # fmt: skip
        d_scale += tl.sum(dx * s, axis=1)
        d_bias += tl.sum(dx, axis=1)
        k_tile = tl.load(
            k_ptr + cols.to(tl.int64)[:, None] * D + dims[None, :],
            mask=(cols[:, None] < N) & (dims[None, :] < D),
            other=0.0,
        )
        d_sim = (dx * scale).to(k_tile.dtype)  # the input dtype, for the tensor cores
        if UPCAST:
            d_sim = d_sim.to(tl.float32)
            k_tile = k_tile.to(tl.float32)
        acc = tl.dot(d_sim, k_tile, acc, input_precision=PRECISION)
    out_mask = (rows[:, None] < M) & (dims[None, :] < D)
    tl.store(dq_ptr + rows.to(tl.int64)[:, None] * D + dims[None, :], acc, mask=out_mask)
    program = tl.program_id(0) * tl.num_programs(1) + tl.program_id(1)
    tl.store(partial_ptr + 2 * program, tl.sum(d_scale, axis=0))
    tl.store(partial_ptr + 2 * program + 1, tl.sum(d_bias, axis=0))


@triton.jit
def _backward_cols_kernel(
    q_ptr, k_ptr, scale_ptr, bias_ptr, stat_ptr, grad_ptr, ex_ptr, pos_ptr, gpos_ptr, dk_ptr, M, N, D,
    MODE: tl.constexpr, NUM_EX: tl.constexpr, HAS_POS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DO: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    """Grid (column blocks, feature chunks): ``dk[cols, chunk]``, the tiles recomputed column-wise."""
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    dims = tl.program_id(1) * BLOCK_DO + tl.arange(0, BLOCK_DO)
    scale = tl.load(scale_ptr).to(tl.float32)
    bias = 0.0
    if MODE == 1:
        bias = tl.load(bias_ptr).to(tl.float32)
    acc = tl.zeros((BLOCK_N, BLOCK_DO), dtype=tl.float32)
    for start in range(0, M, BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M)
        s = _similarity_tile(q_ptr, k_ptr, rows, cols, M, N, D, BLOCK_M, BLOCK_N, BLOCK_D, PRECISION, UPCAST)
        dx = _dlogits(s, rows, cols, M, N, scale, bias, stat_ptr, grad_ptr, ex_ptr, pos_ptr, gpos_ptr,
                      MODE, NUM_EX, HAS_POS)  # fmt: skip
        q_tile = tl.load(
            q_ptr + rows.to(tl.int64)[:, None] * D + dims[None, :],
            mask=(rows[:, None] < M) & (dims[None, :] < D),
            other=0.0,
        )
        d_sim = (dx * scale).to(q_tile.dtype)
        if UPCAST:
            d_sim = d_sim.to(tl.float32)
            q_tile = q_tile.to(tl.float32)
        acc = tl.dot(tl.trans(d_sim), q_tile, acc, input_precision=PRECISION)
    out_mask = (cols[:, None] < N) & (dims[None, :] < D)
    tl.store(dk_ptr + cols.to(tl.int64)[:, None] * D + dims[None, :], acc, mask=out_mask)


@triton.jit
def _cross_forward_kernel(
    a_ptr, b_ptr, scale_ptr, rows_ptr, col_sum_ptr, bound, M, N, D,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    """One program per BLOCK_M rows: both directions' sums from one tile pass, where ``|logit| <= bound``.

    Every entry's ``exp(x - bound)`` lies in [exp(-2 bound), 1], so with ``bound <= 32`` nothing
    under- or overflows float32 and no running maximum is needed: the same exponentials give each row's
    sum (kept here; its log-sum-exp is written) and each column's (atomic adds into ``col_sum``).
    """
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    scale2 = tl.load(scale_ptr).to(tl.float32) * LOG2E
    bound2 = bound * LOG2E
    row_sum = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for start in range(0, N, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        s = _similarity_tile(a_ptr, b_ptr, rows, cols, M, N, D, BLOCK_M, BLOCK_N, BLOCK_D, PRECISION, UPCAST)
        keep = (rows[:, None] < M) & (cols[None, :] < N)
        e = tl.where(keep, tl.exp2(s * scale2 - bound2), 0.0)
        row_sum += tl.sum(e, axis=1)
        tl.atomic_add(col_sum_ptr + cols, tl.sum(e, axis=0), mask=cols < N)
    out = tl.log2(tl.where(rows < M, row_sum, 1.0)) * LN2 + bound
    tl.store(rows_ptr + rows, out, mask=rows < M)


@triton.jit
def _cross_backward_kernel(
    a_ptr, b_ptr, scale_ptr, lse_r_ptr, lse_c_ptr, g_r_ptr, g_c_ptr, g_p_ptr, da_ptr, db_ptr, partial_ptr,
    M, N, D,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DO: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr, HAS_POS: tl.constexpr,
):  # fmt: skip
    """Grid (column blocks,): the backward pass of both directions of ``scale * a @ b.T`` at once.

    Each tile of logits is built once and serves both softmaxes: the rows' weights
    ``exp(x - lse_r)`` and the columns' ``exp(x - lse_c)`` give ``d x = g_r p_r + g_c p_c``, which
    feeds ``db[cols] += d x^T a[rows]`` (this program owns its columns: it adds its chunks into ``db``
    in place, so no feature chunk recomputes the tile) and ``da[rows] += d x b[cols]`` (rows are
    shared by every program: atomic adds). ``partial_ptr`` gets sum(d x * s) per program, for d scale.
    With HAS_POS the diagonal (the positives' logits) adds ``g_p_ptr[r]`` to d x, in float32.
    """
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    scale = tl.load(scale_ptr).to(tl.float32)
    lse_c2 = tl.load(lse_c_ptr + cols, mask=cols < N, other=0.0) * LOG2E
    g_c = tl.load(g_c_ptr + cols, mask=cols < N, other=0.0)
    d_scale = tl.zeros((BLOCK_N,), dtype=tl.float32)
    col_off = cols.to(tl.int64)[:, None] * D
    for start in range(0, M, BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M)
        s = _similarity_tile(a_ptr, b_ptr, rows, cols, M, N, D, BLOCK_M, BLOCK_N, BLOCK_D, PRECISION, UPCAST)
        keep = (rows[:, None] < M) & (cols[None, :] < N)
        lse_r2 = tl.load(lse_r_ptr + rows, mask=rows < M, other=0.0) * LOG2E
        g_r = tl.load(g_r_ptr + rows, mask=rows < M, other=0.0)
        x2 = s * (scale * LOG2E)
        dx = g_r[:, None] * tl.exp2(x2 - lse_r2[:, None]) + g_c[None, :] * tl.exp2(x2 - lse_c2[None, :])
        dx = tl.where(keep, dx, 0.0)
        if HAS_POS:
            g_p = tl.load(g_p_ptr + rows, mask=rows < M, other=0.0)
            dx += tl.where(keep & (rows[:, None] == cols[None, :]), g_p[:, None], 0.0)
        d_scale += tl.sum(dx * s, axis=0)
        row_off = rows.to(tl.int64)[:, None] * D
        # the input dtype, for the tensor cores (float32 under UPCAST, after the same rounding)
        d_sim = (dx * scale).to(a_ptr.dtype.element_ty)
        if UPCAST:
            d_sim = d_sim.to(tl.float32)
        for d_start in range(0, D, BLOCK_DO):
            dims = d_start + tl.arange(0, BLOCK_DO)
            in_d = dims[None, :] < D
            a_tile, b_tile = _feature_tiles(a_ptr, b_ptr, rows, cols, dims, M, N, D, UPCAST)
            db_mask = (cols[:, None] < N) & in_d
            db_ptrs = db_ptr + col_off + dims[None, :]
            db = tl.load(db_ptrs, mask=db_mask, other=0.0)
            db = tl.dot(tl.trans(d_sim), a_tile, db, input_precision=PRECISION)
            tl.store(db_ptrs, db, mask=db_mask)
            da = tl.dot(d_sim, b_tile, input_precision=PRECISION)
            tl.atomic_add(da_ptr + row_off + dims[None, :], da, mask=(rows[:, None] < M) & in_d)
    tl.store(partial_ptr + tl.program_id(0), tl.sum(d_scale, axis=0))


# --- host code ------------------------------------------------------------------------------------
# How Triton built the kernels above (TRITON_INTERPRET=1 when this module was imported) and its own
# library (the same variable when triton was first imported); the interpreter needs both.
INTERPRET: bool = isinstance(_forward_kernel, InterpretedFunction)
TRITON_INTERPRETED: bool = isinstance(tl.zeros, InterpretedFunction)

# Under the interpreter every tile operation costs Python overhead, so fewer, larger tiles are faster;
# tests shrink them (this dict is read at each launch) to exercise many tiles on small inputs.
INTERPRETER_BLOCKS = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_D": 32, "BLOCK_DO": 32}


def _blocks(dim: int, kernel: str) -> dict:
    """Tile sizes and launch options of one kernel ("forward", "rows", "cols" or "cross").

    The CUDA sizes were chosen without a GPU at hand, from what ``ptxas`` reports for sm_90 with
    bfloat16 inputs: with them the forward (128 x 64 tiles, 8 warps) and the backward kernels (a
    32-wide outer tile, BLOCK_DO = 128 features of gradient per program, 8 warps) spill no more than
    16 bytes of registers. They are a starting point, not tuned on a card. For d > 128 the backward
    recomputes each logits tile once per 128-feature chunk of the gradient.
    """
    if INTERPRET:
        return {**INTERPRETER_BLOCKS, "num_warps": 4}
    width = max(16, triton.next_power_of_2(dim))
    if kernel == "forward":
        rows, cols = 128, 64
    elif kernel == "cross":  # no accumulator in registers beyond one (64 x 128) feature chunk
        rows, cols = 64, 64
    else:  # the outer tile (rows for "rows", columns for "cols") carries the float32 gradient accumulator
        rows, cols = (32, 64) if kernel == "rows" else (64, 32)
    return {
        "BLOCK_M": rows,
        "BLOCK_N": cols,
        "BLOCK_D": min(width, 64),
        "BLOCK_DO": min(width, 128),
        "num_warps": 8,
        "num_stages": 2,
    }


def _precision(dtype: torch.dtype) -> str:
    # float32 inputs get exact float32 products unless torch itself was told TF32 is acceptable
    if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


def _common(q: Tensor) -> dict:
    return {"PRECISION": _precision(q.dtype), "UPCAST": INTERPRET and q.dtype == torch.bfloat16}


def _scalar(x: Tensor, like: Tensor) -> Tensor:
    return x.detach().reshape(1).to(device=like.device, dtype=torch.float32).contiguous()


def _forward(q: Tensor, k: Tensor, scale: Tensor, bias: Tensor | None, exclude: Tensor | None,
             pos_col: Tensor | None, mode: int) -> Tensor:  # fmt: skip
    rows, dim = q.shape
    blocks = _blocks(dim, "forward")
    out = torch.empty(rows, dtype=torch.float32, device=q.device)
    scale_t = _scalar(scale, q)
    bias_t = scale_t if bias is None else _scalar(bias, q)
    _forward_kernel[(triton.cdiv(rows, blocks["BLOCK_M"]),)](
        q, k, scale_t, bias_t,
        q if exclude is None else exclude, q if pos_col is None else pos_col, out,
        rows, k.shape[0], dim,
        MODE=mode, NUM_EX=0 if exclude is None else exclude.shape[1],
        **{key: v for key, v in blocks.items() if key != "BLOCK_DO"}, **_common(q),
    )  # fmt: skip
    return out


def _backward(q: Tensor, k: Tensor, scale: Tensor, bias: Tensor | None, stat: Tensor, grad: Tensor,
              exclude: Tensor | None, pos_col: Tensor | None, mode: int, need_q: bool, need_k: bool,
              grad_positive: Tensor | None = None,
              ) -> tuple[Tensor | None, Tensor | None, Tensor, Tensor]:  # fmt: skip
    """(dq float32 or None, dk float32 or None, d scale, d bias) for d loss / d logit given by MODE.

    ``grad_positive`` (MODE 0, with ``pos_col``): the gradient of the positive logits, which the
    kernels add to their entries of d loss / d logit."""
    rows, dim = q.shape
    cols = k.shape[0]
    row_tiles, col_tiles = _blocks(dim, "rows"), _blocks(dim, "cols")
    chunks = triton.cdiv(dim, row_tiles["BLOCK_DO"])
    scale_t = _scalar(scale, q)
    bias_t = scale_t if bias is None else _scalar(bias, q)
    # unused pointer arguments get any tensor: the MODE / NUM_EX branches never read them
    ex_arg, pos_arg = (q if exclude is None else exclude), (q if pos_col is None else pos_col)
    has_pos = mode == _LSE and grad_positive is not None
    gpos_arg = grad_positive.to(torch.float32).contiguous() if has_pos else grad
    args = (q, k, scale_t, bias_t, stat, grad, ex_arg, pos_arg, gpos_arg)
    num_ex = 0 if exclude is None else exclude.shape[1]
    meta = {"MODE": mode, "NUM_EX": num_ex, "HAS_POS": has_pos, **_common(q)}
    # The row kernel also yields the scalar gradients, so it runs even when q needs none.
    dq = torch.empty(rows, dim, dtype=torch.float32, device=q.device)
    row_blocks = triton.cdiv(rows, row_tiles["BLOCK_M"])
    partial = torch.empty(row_blocks, chunks, 2, dtype=torch.float32, device=q.device)
    _backward_rows_kernel[(row_blocks, chunks)](*args, dq, partial, rows, cols, dim, **meta, **row_tiles)
    dk = None
    if need_k:
        dk = torch.empty(cols, dim, dtype=torch.float32, device=q.device)
        grid = (triton.cdiv(cols, col_tiles["BLOCK_N"]), chunks)
        _backward_cols_kernel[grid](*args, dk, rows, cols, dim, **meta, **col_tiles)
    # every feature chunk saw the same tiles: the scalar sums of the first chunk are the whole
    sums = partial[:, 0].sum(dim=0)
    return (dq if need_q else None), dk, sums[0], sums[1]


def _prepare(q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
    return q.contiguous(), k.contiguous()


def _positive_dots(q: Tensor, k_pos: Tensor) -> Tensor:
    """``<q_r, k_pos_r>`` in float32 (O(M d): no kernel needed)."""
    return (q.float() * k_pos.float()).sum(dim=1)


class FusedRowLSE(torch.autograd.Function):
    """``(lse_r = log sum_{c not excluded} exp(scale * <q_r, k_c>), positive_r = scale <q_r, k[pos_col_r]>)``.

    The log-sum-exp by the fused kernels; the positives (empty without ``pos_col``) in float32, their
    gradient added to the kernels' float32 logit gradients (one rounding per feature gradient, as in
    the torch paths, rather than a second half-precision gradient that autograd would add).
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, scale: Tensor, exclude: Tensor | None, pos_col: Tensor | None):
        ctx.set_materialize_grads(False)
        q, k = _prepare(q, k)
        exclude = None if exclude is None or exclude.numel() == 0 else exclude.to(torch.int64).contiguous()
        lse = _forward(q, k, scale, None, exclude, None, _LSE)
        positive = lse.new_empty(0) if pos_col is None else scale.float() * _positive_dots(q, k[pos_col])
        ctx.has_exclude = exclude is not None
        ctx.pos_col = pos_col
        ctx.save_for_backward(q, k, scale, lse, *(() if exclude is None else (exclude,)))
        return lse, positive

    @staticmethod
    def backward(ctx, grad_lse: Tensor | None, grad_positive: Tensor | None):
        q, k, scale, lse, *rest = ctx.saved_tensors
        exclude = rest[0] if ctx.has_exclude else None
        need_q, need_k, need_scale = ctx.needs_input_grad[:3]
        grad = torch.zeros_like(lse) if grad_lse is None else grad_lse.to(torch.float32).contiguous()
        grad_positive = None if ctx.pos_col is None else grad_positive
        dq, dk, d_scale, _ = _backward(
            q, k, scale, None, lse, grad, exclude, ctx.pos_col, _LSE, need_q, need_k, grad_positive
        )
        return (
            None if dq is None else dq.to(q.dtype),
            None if dk is None else dk.to(k.dtype),
            d_scale.to(scale.dtype) if need_scale else None,
            None,
            None,
        )


class FusedSigmoidSum(torch.autograd.Function):
    """``sum_{r,c} softplus(-z_rc (scale <q_r, k_c> + bias))``, z = +1 at ``pos_col[r]``, fused."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, scale: Tensor, bias: Tensor, pos_col: Tensor) -> Tensor:
        q, k = _prepare(q, k)
        pos_col = pos_col.to(torch.int64).contiguous()
        per_row = _forward(q, k, scale, bias, None, pos_col, _SIGMOID)
        ctx.save_for_backward(q, k, scale, bias, pos_col)
        return per_row.sum()

    @staticmethod
    def backward(ctx, grad_total: Tensor):
        q, k, scale, bias, pos_col = ctx.saved_tensors
        need_q, need_k, need_scale, need_bias = ctx.needs_input_grad[:4]
        grad = grad_total.to(torch.float32).reshape(1).contiguous()
        # the sigmoid loss needs no row statistic: ``grad`` fills that slot too
        dq, dk, d_scale, d_bias = _backward(
            q, k, scale, bias, grad, grad, None, pos_col, _SIGMOID, need_q, need_k
        )
        return (
            None if dq is None else dq.to(q.dtype),
            None if dk is None else dk.to(k.dtype),
            d_scale.to(scale.dtype) if need_scale else None,
            d_bias.to(bias.dtype) if need_bias else None,
            None,
        )


#: Largest known logit bound for which the one-pass forward takes exp(x - bound) without a running
#: maximum (float32 accumulation: the smallest term, exp(-2 * bound), stays a normal number).
ONE_PASS_BOUND = 32.0


class FusedCrossLSE(torch.autograd.Function):
    """Both directions of ``scale * a @ b.T``: ``(lse over each row, lse over each column)``.

    Forward: one pass over the tiles (:func:`_cross_forward_kernel`) where a bound on the logits is
    known and at most :data:`ONE_PASS_BOUND`, else the row kernel twice (a against b, b against a).
    Backward: one pass over the tiles (:func:`_cross_backward_kernel`). The positives
    ``scale <a_r, b_r>`` are a third output (float32), their gradient added to the diagonal of each
    float32 logit-gradient tile before it is rounded (see :class:`FusedRowLSE`).
    """

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, scale: Tensor, bound: float | None):
        ctx.set_materialize_grads(False)
        a, b = _prepare(a, b)
        if bound is not None and bound <= ONE_PASS_BOUND:
            m, dim = a.shape
            tiles = _blocks(dim, "forward")
            rows = torch.empty(m, dtype=torch.float32, device=a.device)
            col_sum = torch.zeros(b.shape[0], dtype=torch.float32, device=a.device)
            _cross_forward_kernel[(triton.cdiv(m, tiles["BLOCK_M"]),)](
                a, b, _scalar(scale, a), rows, col_sum, float(bound), m, b.shape[0], dim,
                **{key: v for key, v in tiles.items() if key != "BLOCK_DO"}, **_common(a),
            )  # fmt: skip
            cols = col_sum.log() + bound
        else:
            rows = _forward(a, b, scale, None, None, None, _LSE)
            cols = _forward(b, a, scale, None, None, None, _LSE)
        ctx.save_for_backward(a, b, scale, rows, cols)
        square = a.shape == b.shape  # the positives are the diagonal: defined for M = N
        return rows, cols, (scale.float() * _positive_dots(a, b) if square else rows.new_empty(0))

    @staticmethod
    def backward(ctx, grad_rows: Tensor | None, grad_cols: Tensor | None, grad_positive: Tensor | None):
        a, b, scale, rows, cols = ctx.saved_tensors
        m, dim = a.shape
        n = b.shape[0]
        g_r = torch.zeros_like(rows) if grad_rows is None else grad_rows.to(torch.float32).contiguous()
        g_c = torch.zeros_like(cols) if grad_cols is None else grad_cols.to(torch.float32).contiguous()
        tiles = _blocks(dim, "cross")
        grid = (triton.cdiv(n, tiles["BLOCK_N"]),)
        # both accumulate in place: da by atomic adds from every program, db by its owner
        da = torch.zeros(m, dim, dtype=torch.float32, device=a.device)
        db = torch.zeros(n, dim, dtype=torch.float32, device=a.device)
        partial = torch.empty(grid[0], dtype=torch.float32, device=a.device)
        has_pos = grad_positive is not None
        g_p = grad_positive.to(torch.float32).contiguous() if has_pos else g_r
        _cross_backward_kernel[grid](
            a, b, _scalar(scale, a), rows, cols, g_r, g_c, g_p, da, db, partial, m, n, dim,
            **_common(a), **tiles, HAS_POS=has_pos,
        )  # fmt: skip
        need_a, need_b, need_scale = ctx.needs_input_grad[:3]
        return (
            da.to(a.dtype) if need_a else None,
            db.to(b.dtype) if need_b else None,
            partial.sum().to(scale.dtype) if need_scale else None,
            None,
        )


def cross_logsumexp(
    a: Tensor, b: Tensor, scale: Tensor, bound: float | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """(M,) row and (N,) column log-sum-exps of ``scale * a @ b.T`` and the (M,) positives
    ``scale <a_r, b_r>`` (empty unless M = N), float32, differentiable in a, b and scale; each pass
    over the tiles serves both directions.

    Args:
        a, b: (M, d) and (N, d) features.
        scale: 0-dim inverse temperature.
        bound: a bound on ``|scale * <a_i, b_j>|`` known without reading a tensor (unit features: the
            largest scale the call may see), or None. At most :data:`ONE_PASS_BOUND`, the forward
            pass is one pass over the tiles; otherwise two.

    Arithmetic: ``2 M N d`` forward with a bound (``4 M N d`` without) and ``6 M N d`` backward (one
    product to rebuild the tile, one for each gradient): ``8 M N d`` in all for any d, against
    ``20 M N d`` for two :func:`row_logsumexp` calls at d <= 128 and ``6 M N d`` for the three
    products of an unfused loss. Column sums (forward) and row gradients (backward) are atomic adds
    from many programs, so their summation order, and last bits, may vary from run to run.
    """
    return FusedCrossLSE.apply(a, b, scale, bound)


def row_logsumexp(q: Tensor, k: Tensor, scale: Tensor, exclude: Tensor | None = None) -> Tensor:
    """Fused ``kernels.chunked.row_logsumexp``: (M,) float32, differentiable in q, k, scale."""
    return FusedRowLSE.apply(q, k, scale, exclude, None)[0]


def row_terms(
    q: Tensor, k: Tensor, scale: Tensor, exclude: Tensor | None, pos_col: Tensor
) -> tuple[Tensor, Tensor]:
    """``(positive logits scale <q_r, k[pos_col_r]>, row_logsumexp)``, float32, one autograd node.

    The positives' gradient joins the log-sum-exp's in float32 (one rounding per feature gradient)."""
    lse, positive = FusedRowLSE.apply(q, k, scale, exclude, pos_col)
    return positive, lse


def pairwise_sigmoid_sum(q: Tensor, k: Tensor, scale: Tensor, bias: Tensor, pos_col: Tensor) -> Tensor:
    """Fused ``workbench.losses.kernels.chunked.pairwise_sigmoid_sum``: a float32 scalar."""
    return FusedSigmoidSum.apply(q, k, scale, bias, pos_col)
