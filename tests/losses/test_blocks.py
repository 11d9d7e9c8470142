"""The one-matrix kernels of ``workbench.losses.kernels.blocks`` against plain torch formulas.

The losses built on them are checked against the NumPy references in each loss's test module; here
each kernel is compared, value and gradient, with a direct masked ``torch.logsumexp`` (or softplus
sum) in float64, for the whole matrix and for chunks, with tiles small enough that every tile
and chunk boundary case occurs (a column whose entries in one chunk are all excluded, a chunk that
straddles the two views).
"""

from __future__ import annotations

import pytest
import torch

from workbench.losses.kernels import blocks
from workbench.losses.kernels.blocks import cross_logsumexp, sigmoid_sum, views_logsumexp

CHUNKS = [None, 1, 3, 5, 64]


@pytest.fixture(params=[1 << 22, 7], ids=["one-tile", "tiny-tiles"])
def tiles(request, monkeypatch):
    monkeypatch.setattr(blocks, "TILE_ELEMENTS", request.param)


def leaf(*shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=torch.float64).requires_grad_(True)


def masked_lse(logits: torch.Tensor, excluded: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.logsumexp(logits.masked_fill(excluded, float("-inf")), dim=dim)


def grads(value: torch.Tensor, inputs) -> list[torch.Tensor]:
    return list(torch.autograd.grad(value, inputs))


def assert_all_close(got, want):
    for x, y in zip(got, want, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("chunk_size", CHUNKS)
@pytest.mark.parametrize("exclude", [False, True])
def test_cross_rows_and_columns(tiles, chunk_size, exclude):
    q, k, scale = leaf(7, 3, seed=1), leaf(7, 3, seed=2), torch.tensor(2.5, dtype=torch.float64)
    scale.requires_grad_(True)
    w_rows, w_cols, w_pos = (torch.randn(7, dtype=torch.float64) for _ in range(3))
    rows, cols, positive = cross_logsumexp(q, k, scale, exclude_positive=exclude, chunk_size=chunk_size)
    logits = scale * q @ k.T
    excluded = torch.eye(7, dtype=torch.bool) & exclude
    want_rows, want_cols = masked_lse(logits, excluded, 1), masked_lse(logits, excluded, 0)
    want_positive = logits.diagonal()  # returned even where it is left out of the sums
    assert_all_close([rows, cols, positive], [want_rows, want_cols, want_positive])
    got = grads((rows * w_rows).sum() + (cols * w_cols).sum() + (positive * w_pos).sum(), [q, k, scale])
    want = (want_rows * w_rows).sum() + (want_cols * w_cols).sum() + (want_positive * w_pos).sum()
    assert_all_close(got, grads(want, [q, k, scale]))


@pytest.mark.parametrize("chunk_size", [None, 3])
@pytest.mark.parametrize("used", ["rows", "cols", "positive"])
def test_cross_outputs_used_alone(chunk_size, used):
    """An output the caller does not use gets no gradient (None, not zeros): the others still work."""
    q, k, scale = leaf(5, 3, seed=17), leaf(5, 3, seed=18), torch.tensor(2.0, dtype=torch.float64)
    outputs = cross_logsumexp(q, k, scale, chunk_size=chunk_size)
    got = dict(zip(["rows", "cols", "positive"], outputs, strict=True))
    logits = scale * q @ k.T
    want = {"rows": logits.logsumexp(1), "cols": logits.logsumexp(0), "positive": logits.diagonal()}
    assert_all_close(grads(got[used].sum(), [q, k]), grads(want[used].sum(), [q, k]))


@pytest.mark.parametrize("chunk_size", CHUNKS)
@pytest.mark.parametrize("offset", [0, 2])
def test_cross_rows_with_offset(tiles, chunk_size, offset):
    # a process's share of the anchors: rows offset..offset+3 of the whole batch, positives there
    q, k, scale = leaf(3, 4, seed=3), leaf(6, 4, seed=4), torch.tensor(1.5, dtype=torch.float64)
    rows, cols, positive = cross_logsumexp(
        q, k, scale, offset=offset, exclude_positive=True, columns=False, chunk_size=chunk_size
    )
    assert cols is None
    excluded = torch.zeros(3, 6, dtype=torch.bool)
    excluded[torch.arange(3), torch.arange(3) + offset] = True
    logits = scale * q @ k.T
    want, want_positive = masked_lse(logits, excluded, 1), logits.diagonal(offset=offset)
    assert_all_close([rows, positive], [want, want_positive])
    w_pos = torch.randn(3, dtype=torch.float64)
    got = grads(rows.sum() + (positive * w_pos).sum(), [q, k])
    assert_all_close(got, grads(want.sum() + (want_positive * w_pos).sum(), [q, k]))


def test_every_row_needs_its_positive_column():
    q, k, scale = leaf(3, 2), leaf(4, 2), torch.tensor(1.0, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"offset must be in \[0, N - M\] = \[0, 1\]"):
        cross_logsumexp(q, k, scale, offset=2, columns=False)


def test_columns_need_a_square_diagonal():
    q, k, scale = leaf(3, 2), leaf(4, 2), torch.tensor(1.0, dtype=torch.float64)
    with pytest.raises(ValueError, match="square"):
        cross_logsumexp(q, k, scale)


@pytest.mark.parametrize("chunk_size", CHUNKS)
@pytest.mark.parametrize("exclude_positive", [False, True])
def test_views(tiles, chunk_size, exclude_positive):
    half = 4
    z, scale = leaf(2 * half, 3, seed=5), torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    lse, positive = views_logsumexp(z, scale, exclude_positive=exclude_positive, chunk_size=chunk_size)
    rows = torch.arange(2 * half)
    excluded = torch.eye(2 * half, dtype=torch.bool)
    if exclude_positive:
        excluded[rows, (rows + half) % (2 * half)] = True
    logits = scale * z @ z.T
    want, want_positive = masked_lse(logits, excluded, 1), logits[rows, (rows + half) % (2 * half)]
    weights, w_pos = torch.randn(2 * half, dtype=torch.float64), torch.randn(2 * half, dtype=torch.float64)
    assert_all_close([lse, positive], [want, want_positive])
    got = grads((lse * weights).sum() + (positive * w_pos).sum(), [z, scale])
    assert_all_close(got, grads((want * weights).sum() + (want_positive * w_pos).sum(), [z, scale]))


@pytest.mark.parametrize("chunk_size", CHUNKS)
@pytest.mark.parametrize("offset", [0, 1])
def test_sigmoid_sum(tiles, chunk_size, offset):
    q, k = leaf(4, 3, seed=6), leaf(6, 3, seed=7)
    scale = torch.tensor(4.0, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-2.0, dtype=torch.float64, requires_grad=True)
    total = sigmoid_sum(q, k, scale, bias, offset=offset, chunk_size=chunk_size)
    labels = -torch.ones(4, 6, dtype=torch.float64)
    labels[torch.arange(4), torch.arange(4) + offset] = 1.0
    want = torch.nn.functional.softplus(-labels * (scale * q @ k.T + bias)).sum()
    assert_all_close([total], [want])
    assert_all_close(grads(total, [q, k, scale, bias]), grads(want, [q, k, scale, bias]))


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_gradcheck_and_a_second_backward(chunk_size):
    """The whole-matrix path overwrites its kept buffer in backward: a second backward recomputes it."""
    q, k, z = leaf(5, 3, seed=8), leaf(5, 3, seed=9), leaf(6, 3, seed=10)
    scale = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-1.0, dtype=torch.float64, requires_grad=True)
    cases = [
        (lambda q, k, s: sum(cross_logsumexp(q, k, s, chunk_size=chunk_size)), (q, k, scale)),
        (lambda z, s: sum(views_logsumexp(z, s, exclude_positive=True, chunk_size=chunk_size)), (z, scale)),
        (lambda q, k, s, b: sigmoid_sum(q, k, s, b, chunk_size=chunk_size), (q, k, scale, bias)),
    ]
    for fn, inputs in cases:
        # gradcheck also checks that two backward passes give the same numbers
        assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)
        value = fn(*inputs).sum()
        first = torch.autograd.grad(value, inputs, retain_graph=True)
        second = torch.autograd.grad(value, inputs)
        for x, y in zip(first, second, strict=True):
            assert torch.equal(x, y)


def test_half_inputs_accumulate_in_float32():
    q = torch.randn(6, 8).bfloat16().requires_grad_(True)
    k = torch.randn(6, 8).bfloat16().requires_grad_(True)
    rows, cols, positive = cross_logsumexp(q, k, torch.tensor(5.0), chunk_size=4)
    assert rows.dtype == cols.dtype == positive.dtype == torch.float32
    want = torch.logsumexp(5.0 * (q @ k.T).float(), dim=1)
    torch.testing.assert_close(rows, want, rtol=1e-6, atol=1e-6)
    # the positives from float32 products, not the bfloat16-rounded matrix entries
    torch.testing.assert_close(positive, 5.0 * (q.float() * k.float()).sum(dim=1), rtol=1e-6, atol=1e-6)
    z = torch.cat([q, k]).detach().requires_grad_(True)
    _, views_positive = views_logsumexp(z, torch.tensor(5.0))
    torch.testing.assert_close(views_positive, 5.0 * (z.float() * z.roll(6, 0).float()).sum(dim=1))
    (rows.sum() + cols.sum() - positive.sum()).backward()
    assert q.grad.dtype == torch.bfloat16 and torch.isfinite(q.grad.float()).all()


def unit_leaf(rows, dim, seed, dtype):
    x = torch.nn.functional.normalize(leaf(rows, dim, seed=seed).detach(), dim=1)
    return x.to(dtype).requires_grad_(True)


@pytest.mark.parametrize("chunk_size", [None, 1, 4])
@pytest.mark.parametrize("exclude", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("scale_value", [14.0, 31.0])
def test_unshifted_path_matches(tiles, monkeypatch, chunk_size, exclude, dtype, scale_value):
    """Unit features and a known |L| bound: exp(L) taken without a peak, whole and chunked."""
    q, k, z = unit_leaf(9, 4, 11, dtype), unit_leaf(9, 4, 12, dtype), unit_leaf(8, 4, 13, dtype)
    scale = torch.tensor(scale_value, dtype=dtype, requires_grad=True)
    w_rows, w_cols = torch.randn(9, dtype=dtype), torch.randn(9, dtype=dtype)
    w_views, w_pos = torch.randn(8, dtype=dtype), torch.randn(9, dtype=dtype)
    bound = scale_value * (1 + 1e-4)
    shifted = blocks._exponentiate_

    def run(bound):
        rows, cols, positive = cross_logsumexp(
            q, k, scale, exclude_positive=exclude, chunk_size=chunk_size, bound=bound
        )
        value = (rows * w_rows).sum() + (cols * w_cols).sum() + (positive * w_pos).sum()
        lse, views_positive = views_logsumexp(
            z, scale, exclude_positive=exclude, chunk_size=chunk_size, bound=bound
        )
        views_value = (lse * w_views).sum() + (views_positive * w_views.flip(0)).sum()
        return [
            rows, cols, positive, *torch.autograd.grad(value, [q, k, scale]),
            lse, views_positive, *torch.autograd.grad(views_value, [z, scale]),
        ]  # fmt: skip

    want = run(None)

    def no_peaks(*args):
        raise AssertionError("the bounded path subtracted a peak")

    monkeypatch.setattr(blocks, "_exponentiate_", no_peaks)
    got = run(bound)
    tol = {"rtol": 1e-10, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 2e-5, "atol": 2e-5}
    for x, y in zip(got, want, strict=True):
        assert torch.isfinite(x).all()
        torch.testing.assert_close(x, y, **tol)
    # beyond SAFE_BOUND the peak-shifted path runs (the same numbers as bound=None, bit for bit)
    monkeypatch.setattr(blocks, "_exponentiate_", shifted)
    for x, y in zip(run(1e4), want, strict=True):
        assert torch.equal(x, y)


def test_unit_rows_is_normalize_with_its_gradient():
    """The losses' row normaliser: F.normalize's values bit for bit, its gradient up to round-off."""
    from workbench.losses._base import unit_rows

    assert torch.autograd.gradcheck(
        lambda t, u: [y for y, _ in unit_rows(t, u)], (leaf(6, 4, seed=14), leaf(3, 4, seed=16))
    )
    x = leaf(7, 5, seed=15).detach()
    x[2], x[4] = 0.0, x[4] * 1e-14  # a zero row and one below the clamp: the denominator is eps there
    x.requires_grad_(True)
    ((y, norm),) = unit_rows(x)
    want = torch.nn.functional.normalize(x, dim=1)
    assert torch.equal(y, want) and not norm.requires_grad
    torch.testing.assert_close(norm, torch.linalg.vector_norm(x.detach(), dim=1, keepdim=True))
    grad = torch.randn(7, 5, dtype=torch.float64)
    got, expected = torch.autograd.grad(y, x, grad)[0], torch.autograd.grad(want, x, grad)[0]
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0.0)
