"""One similarity matrix per loss, reduced in both directions: the fast exact path of the torch losses.

``chunked.row_logsumexp`` reduces one (anchors x candidates) block at a time, so a symmetric CLIP loss
computes ``A B^T`` and ``B A^T`` separately, and the backward pass repeats that per block. Here each
layout is one matrix product:

* ``cross_logsumexp``: ``L = scale * Q K^T`` once; its row log-sum-exp (anchors ``q`` against
  ``k``) and, for a square matrix, its column log-sum-exp (anchors ``k`` against ``q``) come from the
  same ``L``. Backward: ``G = softmax_rows(L) * g_r + softmax_cols(L) * g_c``, ``dQ = scale G K``,
  ``dK = scale G^T Q``, ``dscale = sum(Q * G K)``: three (M x N x d) products in all, the bound.
* ``views_logsumexp``: ``L = scale * Z Z^T`` of the 2B embeddings of both views, symmetric, so its
  row log-sum-exp is the whole reduction; ``dZ = scale (G Z + G^T Z)``.
* ``sigmoid_sum``: SigLIP's ``sum softplus(-z * (scale * Q K^T + bias))``; the positives' sign is
  flipped on the matrix's diagonal in place, so no label matrix is built.

Two memory modes, both exact:

* ``chunk_size=None``: ``L`` is materialised once and the forward pass keeps its exponentials with
  their sums (one (M, N) buffer, two where the logit range is not known; four or more in the peer
  libraries); the backward pass rescales them into ``G`` in place, with no exponential and no product
  recomputed (a second backward, ``retain_graph=True``, recomputes them, bit for bit);
* ``chunk_size=c``: ``c`` rows of ``L`` at a time in one reused buffer; column statistics are
  accumulated across chunks; the backward pass recomputes each chunk (one more product, memory linear
  in B).

Two ways to exponentiate, both exact. Where the caller knows ``|L| <= bound`` (unit features: the
bound is the scale) and the bound is at most ``SAFE_BOUND`` (32 in float32), ``E = exp(L)`` is taken
as it is: no peak is subtracted, so one exponential per entry serves the row and the column
softmax, ``G = E * (g_r / row_sum [:, None] + g_c / col_sum [None, :])``, and a chunk's sums simply
add up. Otherwise the exponentials are shifted by the row (and column) peaks, each tile at a time.

On a CPU every tensor operation over a large tensor is a parallel region, and on a machine shared by
other jobs each region waits for all its threads to be scheduled, so the code keeps their number low:
whole-matrix operations where no temporary is needed, row tiles of about ``TILE_ELEMENTS`` entries
where one is (a tile, never a second (M, N) matrix beyond the one kept), the scale applied to the
(M, d) rows once per call. No (M, N) mask is ever built: excluded entries (the diagonal, the
positive of a two-view row) are set to ``-inf`` through diagonal views. Nothing reads a tensor value
on the host (no synchronisation). Logits are accumulated in float32 for half inputs (float64 stays
float64).

Arithmetic (FLOPs of the matrix products, forward+backward, for an (M x N) matrix of d-dimensional
rows): whole matrix ``6 M N d`` (three products; this is the bound the benchmark times), chunked
``8 M N d`` (the forward product is recomputed). Two views: the same with M = N = 2B (``24 B^2 d``
whole, ``32 B^2 d`` chunked). SigLIP: as "cross". Elementwise work per entry, with a known bound:
one exponential and three to five streaming passes (sums, the rescaling into ``G``) on the whole
matrix; the chunked path adds one exponential per entry in the backward pass. Without a bound, the
shifted path takes two exponentials per entry forward for a square matrix (rows and columns).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from workbench.losses.kernels.chunked import accumulation_dtype

# Entries per elementwise tile: 1 MiB of float32. A tile's temporaries are fresh allocations, and glibc
# returns large freed blocks to the system, so the next call's page faults cost more than the
# arithmetic: with 16 MiB tiles a B = 1,024 clip step spent 0.7-1 ms of its 5 ms faulting in one
# 4 MiB temporary (BENCHMARKS.md). Each tile also costs a few tensor operations (parallel regions,
# which on a loaded machine wait for every thread), so the tiles are not made smaller still.
TILE_ELEMENTS = 1 << 18
# Largest |logit| for which exp(L) needs no shift: exp(-bound), exp(bound) and products of two such
# factors stay normal numbers (float32: exp(-87) is the smallest normal, exp(88) the largest finite;
# float64: exp(-708)), with margin, so row and column sums of exp(L) lose nothing to under/overflow.
SAFE_BOUND = {torch.float32: 32.0, torch.float64: 300.0}


def _unshifted(dtype: torch.dtype, bound: float | None) -> bool:
    """Whether logits known to satisfy ``|L| <= bound`` can be exponentiated as they are."""
    return bound is not None and bound <= SAFE_BOUND.get(dtype, 0.0)


def _row_tiles(rows: int, cols: int) -> Iterator[tuple[int, int]]:
    step = max(1, TILE_ELEMENTS // max(cols, 1))
    for start in range(0, rows, step):
        yield start, min(rows, start + step)


def _col_tiles(rows: int, cols: int) -> Iterator[tuple[int, int]]:
    # at least 16 columns so each strided row segment is a few cache lines long
    step = max(16, TILE_ELEMENTS // max(rows, 1))
    for start in range(0, cols, step):
        yield start, min(cols, start + step)


def _carry_scale(q: Tensor, scale: Tensor) -> tuple[Tensor, Tensor | None]:
    """``(q * scale, None)`` where the product runs in the accumulation dtype, else ``(q, scale)``.

    Done once per call, not per chunk: each small (rows, d) operation is one more parallel region.
    """
    return (q * scale, None) if q.dtype == accumulation_dtype(q.dtype) else (q, scale)


def _logits(out: Tensor, q: Tensor, k: Tensor, scale: Tensor | None) -> Tensor:
    """``out <- scale * q @ k.T`` (accumulation dtype); ``scale=None``: q carries it already."""
    if scale is None:
        torch.mm(q, k.T, out=out)
    elif q.dtype == out.dtype:
        # the scale goes on the (rows, d) side: one pass over O(rows d) entries instead of O(rows N)
        torch.mm(q * scale, k.T, out=out)
    else:  # half inputs: the product in the input dtype, the scale applied in float32
        out.copy_(q @ k.T).mul_(scale)
    return out


def _cross_positives(x: Tensor, row0: int, offset: int) -> list[tuple[int, Tensor]]:
    """``[(row0, diagonal view)]``: the positives ``x[r, row0 + r + offset]`` of rows ``row0..``."""
    return [(row0, x.diagonal(offset=row0 + offset))]


def _half_positives(q: Tensor, k: Tensor, scale: Tensor) -> Tensor:
    """``scale <q_r, k_r>`` in float32 for half inputs, whose logits matrix holds rounded products.

    Rounding the positive logit to bfloat16 would bias ``lse - positive`` by up to ``scale * 2^-9``;
    the gradient is the same either way (the positive's entry of G), so only the value is taken here.
    """
    acc = accumulation_dtype(q.dtype)
    return scale * (q.to(acc) * k.to(acc)).sum(dim=1)


def _views_positives(x: Tensor, row0: int, half: int) -> list[tuple[int, Tensor]]:
    """``(first row, diagonal view)`` of the positives of two-view rows ``row0..`` of x.

    The positive of row r is column ``(r + half) mod 2 half``.
    """
    stop = row0 + x.shape[0]
    out = []
    if row0 < half:  # rows of the first view: positive at r + half
        out.append((row0, x[: min(stop, half) - row0].diagonal(offset=row0 + half)))
    if stop > half:  # rows of the second view: positive at r - half
        first = max(row0, half)
        out.append((first, x[first - row0 :].diagonal(offset=first - half)))
    return out


def _read_positives(positive: Tensor | None, diagonals: list[tuple[int, Tensor]]) -> None:
    """Copy each diagonal (the positives' logits, rows ``first..``) into ``positive``."""
    if positive is not None:
        for first, diagonal in diagonals:
            positive[first : first + diagonal.shape[0]] = diagonal


def _add_positive_grads(
    grad: Tensor, grad_positive: Tensor | None, diagonals: list[tuple[int, Tensor]]
) -> None:
    """Add the positives' incoming gradient to their entries of G (a positive is a logit too)."""
    if grad_positive is not None:
        for first, diagonal in diagonals:
            diagonal += grad_positive[first : first + diagonal.shape[0]]


def _exponentiate_(x: Tensor, columns: bool, rows_into: Tensor | None) -> tuple[Tensor, ...]:
    """Row (and column) log-sum-exp statistics of logits ``x``, exponentiating tile by tile.

    ``exp(x - row peak)`` goes into ``rows_into`` (a buffer shaped like x), or into x itself when
    None and ``columns`` is False, or into a small temporary per tile. With ``columns``, x is
    overwritten with ``exp(x - column peak)``. Excluded (-inf) entries become 0.

    Returns:
        ``(row_peak, row_sum, col_peak, col_sum)`` (the last two None without ``columns``); the
        log-sum-exp is ``log(sum) + peak``.
    """
    rows, cols = x.shape
    floor = torch.finfo(x.dtype).min  # a row or column with nothing but -inf gives -inf, not nan
    row_peak = torch.empty(rows, dtype=x.dtype, device=x.device)
    row_sum = torch.empty(rows, dtype=x.dtype, device=x.device)
    col_peak = col_sum = None
    if columns:
        col_peak = x.amax(dim=0).clamp_(min=floor)
        col_sum = torch.zeros(cols, dtype=x.dtype, device=x.device)
    for start, stop in _row_tiles(rows, cols):
        tile = x[start:stop]
        peak = tile.amax(dim=1, keepdim=True).clamp_(min=floor)
        if rows_into is not None:
            terms = torch.sub(tile, peak, out=rows_into[start:stop]).exp_()
        else:
            terms = torch.sub(tile, peak).exp_() if columns else tile.sub_(peak).exp_()
        torch.sum(terms, dim=1, out=row_sum[start:stop])
        row_peak[start:stop] = peak.squeeze(1)
        if columns:
            col_sum += tile.sub_(col_peak).exp_().sum(dim=0)
    return row_peak, row_sum, col_peak, col_sum


def _lse(peak: Tensor, total: Tensor) -> Tensor:
    return total.log().add_(peak)


def _softmax_grad_(x: Tensor, lse_rows: Tensor, grad_rows: Tensor, lse_cols, grad_cols) -> None:
    """Overwrite logits ``x`` with ``exp(x - lse_r) g_r + exp(x - lse_c) g_c`` (-inf entries give 0)."""
    for start, stop in _row_tiles(*x.shape):
        tile = x[start:stop]
        if lse_cols is not None:
            cols = torch.sub(tile, lse_cols).exp_().mul_(grad_cols)
        tile.sub_(lse_rows[start:stop, None]).exp_().mul_(grad_rows[start:stop, None])
        if lse_cols is not None:
            tile.add_(cols)


def _chunks(rows: int, chunk_size: int | None) -> list[tuple[int, int]]:
    step = rows if chunk_size is None else max(1, chunk_size)
    return [(start, min(rows, start + step)) for start in range(0, rows, step)]


def _scale_rows_cols_(x: Tensor, per_row: Tensor, per_col: Tensor | None) -> Tensor:
    """``x <- x * (per_row[:, None] + per_col[None, :])`` in place (``per_row[:, None]`` without columns).

    The outer sum is formed one row tile at a time in one reused tile-sized buffer.
    """
    if per_col is None:
        return x.mul_(per_row[:, None])
    rows, cols = x.shape
    step = max(1, TILE_ELEMENTS // max(cols, 1))
    factor = torch.empty(min(step, rows), cols, dtype=x.dtype, device=x.device)
    for start, stop in _row_tiles(rows, cols):
        outer = torch.add(per_row[start:stop, None], per_col[None, :], out=factor[: stop - start])
        x[start:stop].mul_(outer)
    return x


class _CrossLSE(torch.autograd.Function):
    """(row lse, column lse) of ``scale * q @ k.T``, positives optionally excluded (see module doc).

    Whole matrix (one chunk): the forward pass keeps the exponentials with their sums, so the
    backward pass only rescales them (no exponential, no product recomputed). Chunked: the backward
    pass recomputes each chunk's logits.

    Where ``|L| <= bound`` is known and small enough (``SAFE_BOUND``), ``exp(L)`` itself is taken:
    one exponential per entry, no peak, and the row and column softmax are ``E / row_sum`` and
    ``E / col_sum`` of the same ``E``, so ``G = E * (g_r / row_sum [:, None] + g_c / col_sum [None, :])``.
    Otherwise the exponentials are shifted by the row (and column) peaks.

    The positives' logits ``L[r, r + offset]`` are a third output, read off the matrix before
    exponentiation: their gradient is added to G's entries, so they cost no product of their own.
    """

    @staticmethod
    def forward(ctx, q, k, scale, offset: int, exclude: bool, columns: bool, chunk_size, bound):
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None, not zeros
        options = (offset, exclude, columns, chunk_size, bound)
        chunks = _chunks(q.shape[0], chunk_size)
        acc = accumulation_dtype(q.dtype)
        # half inputs: the matrix holds rounded products; their positives are taken in float32 below
        positive = torch.empty(q.shape[0], dtype=acc, device=q.device) if acc == q.dtype else None
        ctx.kept = ctx.sums = None
        if len(chunks) == 1:
            ctx.kept, lse_rows, lse_cols = _CrossLSE._whole(q, k, scale, options, positive)
        elif _unshifted(acc, bound):
            unshifted = _CrossLSE._chunked_unshifted(q, k, scale, options, chunks, positive)
            ctx.sums, lse_rows, lse_cols = unshifted
        else:
            lse_rows, lse_cols = _CrossLSE._chunked(q, k, scale, options, chunks, positive)
        if positive is None:
            positive = _half_positives(q, k[offset : offset + q.shape[0]], scale)
        ctx.options = options
        ctx.save_for_backward(q, k, scale, lse_rows, lse_cols)
        return lse_rows, lse_cols, positive

    @staticmethod
    def _masked_logits(out, q, k, scale, start, options, positive=None) -> Tensor:
        x = _logits(out, q, k, scale)
        diagonals = _cross_positives(x, start, options[0])
        _read_positives(positive, diagonals)  # before they may be excluded
        if options[1]:  # exclude the positives
            for _, diagonal in diagonals:
                diagonal.fill_(float("-inf"))
        return x

    @staticmethod
    def _whole(q, k, scale, options, positive=None):
        """The whole matrix at once: (kept terms, lse rows, lse cols); positives into ``positive``."""
        columns, bound = options[2], options[4]
        out = torch.empty(q.shape[0], k.shape[0], dtype=accumulation_dtype(q.dtype), device=q.device)
        x = _CrossLSE._masked_logits(out, q, k, scale, 0, options, positive)
        if _unshifted(x.dtype, bound):
            # exp(L) in place (excluded entries give 0); both sums of the same exponentials
            row_sum = x.exp_().sum(dim=1)
            col_sum = x.sum(dim=0) if columns else None
            lse_cols = col_sum.log() if columns else row_sum.new_empty(0)
            return ("unshifted", x, row_sum, col_sum), row_sum.log(), lse_cols
        row_terms = torch.empty_like(x) if columns else None
        row_peak, row_sum, col_peak, col_sum = _exponentiate_(x, columns, row_terms)
        lse_cols = _lse(col_peak, col_sum) if columns else row_sum.new_empty(0)
        kept = ("two", x if row_terms is None else row_terms, row_sum, x, col_sum)
        return kept, _lse(row_peak, row_sum), lse_cols

    @staticmethod
    def _chunked_unshifted(q, k, scale, options, chunks, positive):
        """Chunk by chunk, exp(L) unshifted: the sums accumulate, one logarithm at the end."""
        columns = options[2]
        acc = accumulation_dtype(q.dtype)
        buffer = torch.empty(chunks[0][1], k.shape[0], dtype=acc, device=q.device)
        row_sum = torch.empty(q.shape[0], dtype=acc, device=q.device)
        col_sum = torch.zeros(k.shape[0], dtype=acc, device=q.device) if columns else None
        q, scale = _carry_scale(q, scale)
        for start, stop in chunks:
            x = _CrossLSE._masked_logits(
                buffer[: stop - start], q[start:stop], k, scale, start, options, positive
            )
            torch.sum(x.exp_(), dim=1, out=row_sum[start:stop])
            if columns:
                col_sum += x.sum(dim=0)
        lse_cols = col_sum.log() if columns else row_sum.new_empty(0)
        return (row_sum, col_sum), row_sum.log(), lse_cols

    @staticmethod
    def _chunked(q, k, scale, options, chunks, positive):
        columns = options[2]
        acc = accumulation_dtype(q.dtype)
        buffer = torch.empty(chunks[0][1], k.shape[0], dtype=acc, device=q.device)
        lse_rows = torch.empty(q.shape[0], dtype=acc, device=q.device)
        lse_cols = None
        q, scale = _carry_scale(q, scale)
        for start, stop in chunks:
            x = _CrossLSE._masked_logits(
                buffer[: stop - start], q[start:stop], k, scale, start, options, positive
            )
            row_peak, row_sum, col_peak, col_sum = _exponentiate_(x, columns, None)
            lse_rows[start:stop] = _lse(row_peak, row_sum)
            if columns:
                part = _lse(col_peak, col_sum)
                lse_cols = part if lse_cols is None else torch.logaddexp(lse_cols, part)
        return lse_rows, (lse_rows.new_empty(0) if lse_cols is None else lse_cols)

    @staticmethod
    def backward(ctx, grad_rows, grad_cols, grad_positive):
        q, k, scale, lse_rows, lse_cols = ctx.saved_tensors
        offset, _, columns, chunk_size = ctx.options[:4]
        acc = lse_rows.dtype
        if grad_rows is None:  # only some outputs were used (gradients are not materialised)
            grad_rows = torch.zeros_like(lse_rows)
        if columns and grad_cols is None:
            grad_cols = torch.zeros_like(lse_cols)
        need_q, need_k, need_scale = ctx.needs_input_grad[:3]
        grad_q = torch.empty(q.shape, dtype=acc, device=q.device) if need_q or need_scale else None
        grad_k = torch.zeros(k.shape, dtype=acc, device=k.device) if need_k else None
        keys = k.to(acc)
        kept, ctx.kept = ctx.kept, None  # overwritten below: a second backward recomputes it
        if kept is None and (chunk_size is None or chunk_size >= q.shape[0]):
            kept = _CrossLSE._whole(q, k, scale, ctx.options)[0]  # the same numbers as the first time
        if kept is not None and kept[0] == "unshifted":
            _, grad, row_sum, col_sum = kept
            per_col = grad_cols / col_sum if columns else None
            blocks = [(0, q.shape[0], _scale_rows_cols_(grad, grad_rows / row_sum, per_col))]
        elif kept is not None:
            _, row_terms, row_sum, col_terms, col_sum = kept
            grad = row_terms.mul_((grad_rows / row_sum)[:, None])
            if columns:
                grad.addcmul_(col_terms, (grad_cols / col_sum)[None, :])
            blocks = [(0, q.shape[0], grad)]
        elif ctx.sums is not None:
            row_sum, col_sum = ctx.sums
            per_col = grad_cols / col_sum if columns else None
            blocks = _CrossLSE._recomputed_unshifted(q, k, scale, grad_rows / row_sum, per_col, ctx.options)
        else:
            blocks = _CrossLSE._recomputed(q, k, scale, lse_rows, lse_cols, grad_rows, grad_cols, ctx.options)
        for start, stop, grad in blocks:
            _add_positive_grads(grad, grad_positive, _cross_positives(grad, start, offset))
            if grad_q is not None:
                torch.mm(grad, keys, out=grad_q[start:stop])
            if need_k:
                grad_k.addmm_(grad.T, q[start:stop].to(acc))
        # d/dscale sum(G * Q K^T) = sum(Q * (G K)); the gradients carry the scale
        grad_scale = (q.to(acc) * grad_q).sum().to(scale.dtype) if need_scale else None
        grad_q = grad_q.mul_(scale).to(q.dtype) if need_q else None
        grad_k = grad_k.mul_(scale).to(k.dtype) if need_k else None
        return grad_q, grad_k, grad_scale, None, None, None, None, None

    @staticmethod
    def _recomputed_unshifted(q, k, scale, per_row, per_col, options):
        """Yield ``(start, stop, G of those rows)``: each chunk's exp(L) recomputed and rescaled."""
        chunks = _chunks(q.shape[0], options[3])
        buffer = torch.empty(chunks[0][1], k.shape[0], dtype=per_row.dtype, device=q.device)
        q, scale = _carry_scale(q, scale)
        for start, stop in chunks:
            x = _CrossLSE._masked_logits(buffer[: stop - start], q[start:stop], k, scale, start, options)
            yield start, stop, _scale_rows_cols_(x.exp_(), per_row[start:stop], per_col)

    @staticmethod
    def _recomputed(q, k, scale, lse_rows, lse_cols, grad_rows, grad_cols, options):
        """Yield ``(start, stop, G of those rows)`` chunk by chunk, recomputing the logits."""
        columns, chunk_size = options[2:4]
        if columns:
            lse_cols, grad_cols = lse_cols[None, :], grad_cols[None, :]
        else:
            lse_cols = grad_cols = None
        chunks = _chunks(q.shape[0], chunk_size)
        buffer = torch.empty(chunks[0][1], k.shape[0], dtype=lse_rows.dtype, device=q.device)
        q, scale = _carry_scale(q, scale)
        for start, stop in chunks:
            x = _CrossLSE._masked_logits(buffer[: stop - start], q[start:stop], k, scale, start, options)
            _softmax_grad_(x, lse_rows[start:stop], grad_rows[start:stop], lse_cols, grad_cols)
            yield start, stop, x


def cross_logsumexp(
    q: Tensor,
    k: Tensor,
    scale: Tensor,
    *,
    offset: int = 0,
    exclude_positive: bool = False,
    columns: bool = True,
    chunk_size: int | None = None,
    bound: float | None = None,
) -> tuple[Tensor, Tensor | None, Tensor]:
    """Row and column log-sum-exp of ``L = scale * q @ k.T``, and the positives' logits, from one product.

    Args:
        q: (M, d) anchors; row r's positive is column ``r + offset``.
        k: (N, d) candidates.
        scale: 0-dim tensor (may require grad).
        offset: where the positives sit (0: the diagonal).
        exclude_positive: leave each row's positive (and, for the columns, each column's) out of
            the sums.
        columns: also return the column log-sum-exp (``k`` as anchors against ``q``): needs a square
            matrix with the positives on the diagonal.
        chunk_size: rows of ``L`` per chunk (memory linear in M); None holds the whole matrix.
        bound: a bound the caller knows on ``max |L|`` (for L2-normalised features, the scale), or
            None. When it is at most ``SAFE_BOUND[dtype]``, ``exp(L)`` is taken without subtracting
            any peak: one exponential per entry serves rows and columns, forward and backward.

    Returns:
        ``(lse_rows (M,), lse_cols (N,) or None, positive (M,))`` in the accumulation dtype, where
        ``positive[r] = L[r, r + offset]`` (kept even where ``exclude_positive`` leaves it out of the sums).
    """
    if columns and (q.shape[0] != k.shape[0] or offset != 0):
        raise ValueError("columns=True needs a square matrix with the positives on the diagonal")
    if not 0 <= offset <= k.shape[0] - q.shape[0]:
        raise ValueError(
            f"offset must be in [0, N - M] = [0, {k.shape[0] - q.shape[0]}] so every row has its positive "
            f"column r + offset; got {offset}"
        )
    rows, cols, positive = _CrossLSE.apply(q, k, scale, offset, exclude_positive, columns, chunk_size, bound)
    return rows, (cols if columns else None), positive


class _ViewsLSE(torch.autograd.Function):
    """Row lse of the symmetric ``scale * z @ z.T`` without self-pairs (and positives).

    Whole matrix: the forward pass keeps the row exponentials and their sums; the backward pass
    rescales them into G in place and makes the products ``G Z`` and ``G^T Z``. Chunked: each chunk
    is recomputed and contributes ``G_c Z`` to its rows and ``G_c^T Z_c`` to all. Where ``|L| <=
    bound`` is known and small (``SAFE_BOUND``), the exponentials are ``exp(L)`` unshifted.
    """

    @staticmethod
    def forward(ctx, z, scale, exclude_positive: bool, chunk_size, bound):
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None, not zeros
        rows = z.shape[0]
        chunks = _chunks(rows, chunk_size)
        acc = accumulation_dtype(z.dtype)
        # half inputs: the matrix holds rounded products; their positives are taken in float32 below
        positive = torch.empty(rows, dtype=acc, device=z.device) if acc == z.dtype else None
        ctx.kept = ctx.sums = None
        if len(chunks) == 1:
            ctx.kept, lse = _ViewsLSE._whole(z, scale, exclude_positive, bound, positive)
        else:
            unshifted = _unshifted(acc, bound)
            buffer = torch.empty(chunks[0][1], rows, dtype=acc, device=z.device)
            lse = torch.empty(rows, dtype=acc, device=z.device)
            scaled, post = _carry_scale(z, scale)
            for start, stop in chunks:
                x = _ViewsLSE._masked(
                    buffer[: stop - start], scaled, z, post, start, exclude_positive, positive
                )
                if unshifted:  # the sums now, one logarithm at the end
                    torch.sum(x.exp_(), dim=1, out=lse[start:stop])
                else:
                    row_peak, row_sum, _, _ = _exponentiate_(x, False, None)
                    lse[start:stop] = _lse(row_peak, row_sum)
            if unshifted:
                ctx.sums = lse.clone()
                lse.log_()
        if positive is None:
            positive = _half_positives(z, z.roll(rows // 2, dims=0), scale)
        ctx.options = (exclude_positive, chunk_size, bound)
        ctx.save_for_backward(z, scale, lse)
        return lse, positive

    @staticmethod
    def _whole(z, scale, exclude_positive, bound, positive=None):
        """((exp(L - row peak) or exp(L), row sums), row lse) of the whole matrix.

        The positives' logits are copied into ``positive`` (where given)."""
        out = torch.empty(z.shape[0], z.shape[0], dtype=accumulation_dtype(z.dtype), device=z.device)
        x = _ViewsLSE._masked(out, z, z, scale, 0, exclude_positive, positive)
        if _unshifted(x.dtype, bound):
            row_sum = x.exp_().sum(dim=1)
            return (x, row_sum), row_sum.log()
        row_peak, row_sum, _, _ = _exponentiate_(x, False, None)
        return (x, row_sum), _lse(row_peak, row_sum)

    @staticmethod
    def _masked(out, rows, z, scale, start, exclude_positive, positive=None) -> Tensor:
        """Logits of ``rows`` (z's rows start.., scaled unless ``scale`` is given) against z, masked;
        the positives' logits are copied into ``positive`` first."""
        x = _logits(out, rows[start : start + out.shape[0]], z, scale)
        x.diagonal(offset=start).fill_(float("-inf"))  # no row is its own negative
        diagonals = _views_positives(x, start, z.shape[0] // 2)
        _read_positives(positive, diagonals)
        if exclude_positive:
            for _, diagonal in diagonals:
                diagonal.fill_(float("-inf"))
        return x

    @staticmethod
    def backward(ctx, grad_lse, grad_positive):
        z, scale, lse = ctx.saved_tensors
        exclude_positive, chunk_size, bound = ctx.options
        acc = lse.dtype
        half = z.shape[0] // 2
        if grad_lse is None:  # only the positives were used (gradients are not materialised)
            grad_lse = torch.zeros_like(lse)
        zc = z.to(acc)
        kept, ctx.kept = ctx.kept, None  # overwritten below: a second backward recomputes it
        if kept is None and (chunk_size is None or chunk_size >= z.shape[0]):
            kept = _ViewsLSE._whole(z, scale, exclude_positive, bound)[0]  # the same numbers again
        if kept is not None:
            terms, row_sum = kept
            grad = terms.mul_((grad_lse / row_sum)[:, None])
            _add_positive_grads(grad, grad_positive, _views_positives(grad, 0, half))
            # (G + G^T) Z as two products: BLAS reads G^T in place, where forming G + G^T would
            # cost two transposed passes over the matrix, more than the product it saves
            hidden = grad @ zc
            hidden.addmm_(grad.T, zc)
        else:
            # H = (G + G^T) Z: each chunk's rows give G_c Z, its columns G_c^T Z_c
            hidden = torch.zeros(z.shape, dtype=acc, device=z.device)
            chunks = _chunks(z.shape[0], chunk_size)
            buffer = torch.empty(chunks[0][1], z.shape[0], dtype=acc, device=z.device)
            per_row = None if ctx.sums is None else grad_lse / ctx.sums
            scaled, post = _carry_scale(z, scale)
            for start, stop in chunks:
                x = _ViewsLSE._masked(buffer[: stop - start], scaled, z, post, start, exclude_positive)
                if per_row is not None:
                    x.exp_().mul_(per_row[start:stop, None])
                else:
                    _softmax_grad_(x, lse[start:stop], grad_lse[start:stop], None, None)
                _add_positive_grads(x, grad_positive, _views_positives(x, start, half))
                hidden[start:stop].addmm_(x, zc)
                hidden.addmm_(x.T, zc[start:stop])
        need_z, need_scale = ctx.needs_input_grad[:2]
        # L = scale Z Z^T: dZ = scale (G + G^T) Z, dscale = sum(G * Z Z^T) = sum(Z * H) / 2
        grad_scale = ((zc * hidden).sum() / 2).to(scale.dtype) if need_scale else None
        grad_z = hidden.mul_(scale).to(z.dtype) if need_z else None
        return grad_z, grad_scale, None, None, None


def views_logsumexp(
    z: Tensor,
    scale: Tensor,
    *,
    exclude_positive: bool = False,
    chunk_size: int | None = None,
    bound: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Row log-sum-exp of ``scale * z @ z.T`` over every other row (and not the positive), and the positives.

    Args:
        z: (2B, d), the two views stacked; the positive of row r is row ``(r + B) mod 2B``.
        scale: 0-dim tensor (may require grad).
        exclude_positive: leave the positive out too (DCL).
        chunk_size: rows per chunk (memory linear in B); None holds the whole matrix.
        bound: a bound the caller knows on ``max |L|`` (see ``cross_logsumexp``), or None.

    Returns:
        ``(lse (2B,), positive (2B,))`` in the accumulation dtype, ``positive[r] = L[r, (r + B) mod 2B]``.
    """
    return _ViewsLSE.apply(z, scale, exclude_positive, chunk_size, bound)


class _SigmoidSum(torch.autograd.Function):
    """``sum softplus(-z * (scale * q @ k.T + bias))``, z = +1 at column ``r + offset`` of row r."""

    @staticmethod
    def forward(ctx, q, k, scale, bias, offset: int, chunk_size):
        acc = accumulation_dtype(q.dtype)
        chunks = _chunks(q.shape[0], chunk_size)
        buffer = torch.empty(chunks[0][1], k.shape[0], dtype=acc, device=q.device)
        total = torch.zeros((), dtype=acc, device=q.device)
        scaled, post = _carry_scale(q, scale)
        for start, stop in chunks:
            x = _SigmoidSum._signed(buffer[: stop - start], scaled, k, post, bias, start, stop, offset)
            for lo, hi in _row_tiles(*x.shape):
                total += torch.nn.functional.softplus(x[lo:hi]).sum()
        ctx.logits = buffer if len(chunks) == 1 else None
        ctx.options = (offset, chunk_size)
        ctx.save_for_backward(q, k, scale, bias)
        return total

    @staticmethod
    def _signed(out, q, k, scale, bias, start, stop, offset) -> Tensor:
        """``-z * (logits + bias)``: negated at the positives (z = +1), as is elsewhere (z = -1).

        ``q`` carries the scale already where ``scale`` is None (see ``_carry_scale``)."""
        x = _logits(out, q[start:stop], k, scale).add_(bias)
        x.diagonal(offset=start + offset).neg_()
        return x

    @staticmethod
    def backward(ctx, grad_total):
        q, k, scale, bias = ctx.saved_tensors
        offset, chunk_size = ctx.options
        acc = accumulation_dtype(q.dtype)
        need_q, need_k, need_scale, need_bias = ctx.needs_input_grad[:4]
        grad_q = torch.empty(q.shape, dtype=acc, device=q.device)
        grad_k = torch.zeros(k.shape, dtype=acc, device=k.device) if need_k else None
        grad_bias = torch.zeros((), dtype=acc, device=q.device)
        keys = k.to(acc)
        chunks = _chunks(q.shape[0], chunk_size)
        buffer, ctx.logits = ctx.logits, None  # overwritten below: a second backward recomputes it
        recompute = buffer is None
        if recompute:
            buffer = torch.empty(chunks[0][1], k.shape[0], dtype=acc, device=q.device)
            scaled, post = _carry_scale(q, scale)
        for start, stop in chunks:
            x = buffer[: stop - start]
            if recompute:
                _SigmoidSum._signed(x, scaled, k, post, bias, start, stop, offset)
            # d softplus(x) / d logit = sigmoid(x) * dx/dlogit, and dx/dlogit = -z: +1 off the
            # positives, -1 on them (the incoming gradient multiplies the (M, d) results below, not
            # the (M, N) matrix)
            x.sigmoid_().diagonal(offset=start + offset).neg_()
            grad_bias += x.sum()
            torch.mm(x, keys, out=grad_q[start:stop])
            if need_k:
                grad_k.addmm_(x.T, q[start:stop].to(acc))
        grad_total = grad_total.to(acc)
        grad_scale = ((q.to(acc) * grad_q).sum() * grad_total).to(scale.dtype) if need_scale else None
        factor = scale.to(acc) * grad_total
        return (
            grad_q.mul_(factor).to(q.dtype) if need_q else None,
            grad_k.mul_(factor).to(k.dtype) if need_k else None,
            grad_scale,
            (grad_bias * grad_total).to(bias.dtype) if need_bias else None,
            None,
            None,
        )


def sigmoid_sum(
    q: Tensor, k: Tensor, scale: Tensor, bias: Tensor, *, offset: int = 0, chunk_size: int | None = None
) -> Tensor:
    """``sum_{r,c} softplus(-z_rc (scale <q_r, k_c> + bias))``, ``z_rc = +1`` iff ``c = r + offset``.

    Args:
        q: (M, d) rows. k: (N, d) columns.
        scale, bias: 0-dim tensors (may require grad).
        offset: where the positives sit (0: the diagonal).
        chunk_size: rows per chunk (memory linear in M); None holds the whole matrix.
    """
    return _SigmoidSum.apply(q, k, scale, bias, offset, chunk_size)
