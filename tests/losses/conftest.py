"""Shared harness for the loss tests: seeded features, evaluation with gradients, generic checks.

The helpers are imported by the test modules of this package (``from .conftest import ...``); the
NumPy references they compare against live in ``reference.py``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from . import reference as ref

LossFactory = Callable[[], torch.nn.Module]


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


def features(batch: int = 6, dim: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Raw float64 features of varied norms; b is correlated with a so positives are meaningful."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(batch, dim))
    b = a + 0.8 * rng.normal(size=(batch, dim))
    return a * rng.uniform(0.5, 2.0, (batch, 1)), b * rng.uniform(0.5, 2.0, (batch, 1))


@dataclass
class Result:
    value: float
    grad_a: np.ndarray
    grad_b: np.ndarray
    grad_scale: float | None = None
    grad_bias: float | None = None


def _leaf(x, dtype):
    return None if x is None else torch.tensor(np.asarray(x), dtype=dtype, requires_grad=True)


def evaluate(loss, a, b, *, index=None, scale=None, bias=None, dtype=torch.float64) -> Result:
    """Value and gradients of ``loss(a, b, index, scale, bias)``; scale and bias become leaves."""
    ta, tb, ts, tbias = (_leaf(x, dtype) for x in (a, b, scale, bias))
    idx = None if index is None else torch.as_tensor(index)
    value = loss(ta, tb, index=idx, scale=ts, bias=tbias)
    assert value.ndim == 0
    value.backward()

    def item(t):
        return None if t is None else (0.0 if t.grad is None else float(t.grad))

    return Result(value.item(), ta.grad.numpy(), tb.grad.numpy(), item(ts), item(tbias))


def assert_close(actual, desired, rtol: float) -> None:
    """Relative comparison with the absolute floor scaled by the largest entry of ``desired``."""
    desired = np.asarray(desired, dtype=np.float64)
    atol = rtol * max(float(np.abs(desired).max(initial=0.0)), 1e-300)
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), desired, rtol=rtol, atol=atol)


def assert_result(result: Result, expected, rtol: float = 1e-8) -> None:
    """Compare a Result against a reference.Ref (or another Result); scale / bias grads where taken."""
    assert_close(result.value, expected.value, rtol)
    assert_close(result.grad_a, expected.grad_a, rtol)
    assert_close(result.grad_b, expected.grad_b, rtol)
    if result.grad_scale is not None:
        assert_close(result.grad_scale, expected.grad_scale, rtol)
    if result.grad_bias is not None:
        assert_close(result.grad_bias, expected.grad_bias, rtol)


def checked_ref(fn: Callable[..., ref.Ref], a, b, scale, **kwargs) -> ref.Ref:
    """The analytic reference, after checking its gradients against finite differences (1e-6)."""
    analytic = fn(a, b, scale, **kwargs)
    numeric = ref.numeric_ref(fn, a, b, scale, **kwargs)
    checked = Result(**vars(analytic))
    checked.grad_bias = analytic.grad_bias if "bias" in kwargs else None
    assert_result(checked, numeric, rtol=1e-6)
    return analytic


def assert_grads_match(loss_fn: Callable[..., torch.Tensor], other_fn, a, b, rtol=1e-10) -> None:
    """Two torch callables ``f(a, b) -> scalar`` have the same gradients at (a, b) (float64)."""
    grads = []
    for fn in (loss_fn, other_fn):
        ta, tb = _leaf(a, torch.float64), _leaf(b, torch.float64)
        fn(ta, tb).backward()
        grads.append((ta.grad.numpy(), tb.grad.numpy()))
    assert_close(grads[0][0], grads[1][0], rtol)
    assert_close(grads[0][1], grads[1][1], rtol)


def state_of(loss: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in loss.state_dict().items()}


# --- generic properties ---------------------------------------------------------------------------------
@dataclass
class Call:
    """One call of a loss: features plus the dataset positions of the rows (stateful losses)."""

    a: np.ndarray
    b: np.ndarray
    index: np.ndarray | None = None

    def permuted(self, perm: np.ndarray) -> Call:
        index = None if self.index is None else self.index[perm]
        return Call(self.a[perm], self.b[perm], index)


def calls(batch: int, dim: int = 5, steps: int = 1, num_samples: int | None = None) -> list[Call]:
    """``steps`` seeded calls; with ``num_samples`` each draws distinct positions (they overlap)."""
    rng = np.random.default_rng(batch + steps)
    out = []
    for step in range(steps):
        a, b = features(batch, dim, seed=100 + step)
        index = None if num_samples is None else rng.permutation(num_samples)[:batch]
        out.append(Call(a, b, index))
    return out


def run(loss, sequence: Sequence[Call], dtype=torch.float32, **kwargs) -> list[Result]:
    return [evaluate(loss, c.a, c.b, index=c.index, dtype=dtype, **kwargs) for c in sequence]


def assert_chunked_matches(make: Callable[..., torch.nn.Module], chunk_size: int, sequence, **kwargs):
    """Chunked and unchunked give the same values, gradients and state after every call (float32)."""
    plain, chunked = make(chunk_size=None), make(chunk_size=chunk_size)
    torch.manual_seed(1)
    expected = run(plain, sequence, **kwargs)
    torch.manual_seed(1)
    actual = run(chunked, sequence, **kwargs)
    for got, want in zip(actual, expected, strict=True):
        assert_result(got, want, rtol=1e-5)
    for key, value in state_of(plain).items():
        assert_close(state_of(chunked)[key], value, rtol=1e-5)


def gradcheck_loss(loss, call: Call, scale=None, bias=None, seed: int | None = None) -> None:
    """float64 gradcheck w.r.t. a, b (and scale / bias); state is restored before every evaluation."""
    snapshot = copy.deepcopy(loss.state_dict())
    named = {"a": call.a, "b": call.b, "scale": scale, "bias": bias}
    names = [key for key, x in named.items() if x is not None]
    inputs = [_leaf(named[key], torch.float64) for key in names]
    idx = None if call.index is None else torch.as_tensor(call.index)

    def fn(*args):
        loss.load_state_dict(snapshot)
        if seed is not None:
            torch.manual_seed(seed)
        kwargs = dict(zip(names, args, strict=True))
        return loss(kwargs.pop("a"), kwargs.pop("b"), index=idx, **kwargs)

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


def assert_permutation_equivariant(make: LossFactory, sequence: Sequence[Call], seed: int = 3) -> None:
    """Permuting the rows (and index) of the last call permutes the gradients, keeps the value."""
    perm = np.random.default_rng(seed).permutation(len(sequence[-1].a))
    assert not np.array_equal(perm, np.arange(len(perm)))
    *warmup, last = sequence
    plain = run(make(), [*warmup, last], dtype=torch.float64)[-1]
    permuted = run(make(), [*warmup, last.permuted(perm)], dtype=torch.float64)[-1]
    assert_close(permuted.value, plain.value, 1e-12)
    assert_close(permuted.grad_a, plain.grad_a[perm], 1e-10)
    assert_close(permuted.grad_b, plain.grad_b[perm], 1e-10)


def assert_state_round_trip(make: LossFactory, sequence: Sequence[Call]) -> None:
    """A fresh instance loaded with the state after all but the last call continues identically."""
    *warmup, last = sequence
    trained = make()
    run(trained, warmup, dtype=torch.float64)
    restored = make()
    restored.load_state_dict(copy.deepcopy(trained.state_dict()))
    for key, value in state_of(trained).items():
        np.testing.assert_array_equal(state_of(restored)[key], value)
    expected, got = run(trained, [last], dtype=torch.float64), run(restored, [last], dtype=torch.float64)
    assert_result(got[0], expected[0], rtol=1e-12)


def bad_index_cases(batch: int, num_samples: int) -> list[tuple[object, str]]:
    """(index, message) pairs every stateful loss must reject with a ValueError naming ``index``."""
    good = np.arange(batch)
    return [
        (None, "index is required"),
        (good[:-1], r"index must have shape"),
        (np.stack([good, good]), r"index must have shape"),
        (np.r_[good[:-1], num_samples], r"index values must lie"),
        (np.r_[-1, good[1:]], r"index values must lie"),
        (np.r_[good[:-1], 0], "index must not repeat"),
        (good.astype(np.float64), "index must be an integer"),
    ]


def assert_rejects_bad_index(loss, batch: int, num_samples: int) -> None:
    a, b = (torch.tensor(x) for x in features(batch))
    for index, message in bad_index_cases(batch, num_samples):
        idx = None if index is None else torch.as_tensor(index)
        with pytest.raises(ValueError, match=message):
            loss(a, b, index=idx)
    assert not loss.visited.any()
