"""The fused Triton kernels (``implementation="fused"``) against the naive path, for every loss.

On CPU the kernels run through the Triton interpreter. Triton decides whether its functions are
interpreted when they are built, i.e. at ``import triton`` (its library) and at the import of
``workbench.losses.kernels.fused`` (ours), from ``TRITON_INTERPRET`` at that moment. So this module sets the
variable only around those two imports, at collection, and restores the environment at once: nothing
else in the pytest process sees it (the other test modules of this package do not import triton; if
something did so earlier, the fused tests skip and say why). The ``gpu`` test re-runs this file in a
fresh process with ``WORKBENCH_FUSED_TEST_DEVICE=cuda``, where the same comparisons run compiled.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.losses import build_loss, loss_names
from workbench.losses.kernels import chunked as _kernels

if importlib.util.find_spec("triton") is None:
    pytest.skip("triton is not installed", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
DEVICE = os.environ.get("WORKBENCH_FUSED_TEST_DEVICE", "cpu")
NUM_SAMPLES = 97
# float32: entrywise, relative to the largest entry plus an absolute floor for the round-off of sums of
# terms of size ~ scale that cancel (values are lse - positive logit; gradients sum softmax terms).
FLOAT32_RTOL, FLOAT32_ATOL = 2e-5, 1e-6
# bfloat16: relative error of a whole array (values, one gradient, one state buffer), see ``compare``
BFLOAT16_FLOOR = 3e-2


def _import_kernels():
    """``workbench.losses.kernels.fused``, built for the interpreter when DEVICE is cpu."""
    previous = os.environ.get("TRITON_INTERPRET")
    if DEVICE == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"
    else:
        os.environ.pop("TRITON_INTERPRET", None)
    try:
        importlib.import_module("triton")
        module = importlib.import_module("workbench.losses.kernels.fused")
        if DEVICE == "cpu" and module.INTERPRET and module.TRITON_INTERPRETED:
            # the interpreter imports more of triton at its first launch, which also reads the variable
            q = torch.ones(2, 2, requires_grad=True)
            one = torch.tensor(1.0, requires_grad=True)
            module.row_logsumexp(q, q, one, torch.zeros(2, 1, dtype=torch.long)).sum().backward()
            module.pairwise_sigmoid_sum(q, q, one, one, torch.arange(2)).backward()
        return module
    finally:
        if previous is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = previous


KERNELS = _import_kernels()


@pytest.fixture
def fused_kernels():
    """The kernels, checked to be built for this file's device."""
    wanted = DEVICE == "cpu"
    if KERNELS.INTERPRET != wanted or KERNELS.TRITON_INTERPRETED != wanted:
        pytest.skip(
            f"triton was imported in this process before this module could choose how it builds kernels "
            f"(interpreter: ours {KERNELS.INTERPRET}, triton's {KERNELS.TRITON_INTERPRETED}); run "
            f"{Path(__file__).name} on its own"
        )
    return KERNELS


@pytest.fixture
def tiny_tiles(fused_kernels, monkeypatch):
    """16 x 16 tiles under the interpreter, so small inputs span several row, column and feature tiles."""
    if fused_kernels.INTERPRET:
        tiles = dict.fromkeys(fused_kernels.INTERPRETER_BLOCKS, 16)
        monkeypatch.setattr(fused_kernels, "INTERPRETER_BLOCKS", tiles)
    return fused_kernels


# --- the losses ---------------------------------------------------------------------------------------
@dataclass
class Case:
    name: str
    params: dict = field(default_factory=dict)
    steps: int = 1  # stateful losses: the second call sees the state (queue, running estimates)

    @property
    def id(self) -> str:
        return "-".join([self.name, *(f"{k}={v}" for k, v in self.params.items())])


CASES = [
    Case("ntxent"),
    Case("clip"),
    Case("clip", {"symmetric": False}),
    Case("dcl", {"negatives": "views"}),  # two exclusions per row
    Case("dcl", {"negatives": "cross"}),  # one exclusion per row
    Case("dclw"),
    Case("siglip"),
    Case("moco", {"queue_size": 50}, steps=2),
    Case("sogclr", {"negatives": "cross"}, steps=2),
    Case("sogclr", {"negatives": "views", "include_positive": False}, steps=2),
    Case("bayes", {"negatives": "cross"}, steps=2),
    Case("bayes", {"negatives": "views"}, steps=2),
]


def test_cases_cover_the_registry():
    assert {case.name for case in CASES} == set(loss_names())


@dataclass
class Outcome:
    arrays: dict[str, np.ndarray]  # loss values, gradients by leaf and step, final state


def run_loss(
    case: Case, implementation: str, batch: int, dim: int, dtype: torch.dtype, compute=None
) -> Outcome:
    """Values and gradients (a, b, scale, bias) and final state of ``case.steps`` seeded calls.

    The features are rounded to ``dtype``, then passed in ``compute`` (default ``dtype``).
    """
    params = dict(case.params)
    if case.name in ("sogclr", "bayes"):
        params["num_samples"] = NUM_SAMPLES
    loss = build_loss(case.name, implementation=implementation, **params)
    compute = compute or dtype
    gen = torch.Generator().manual_seed(batch * 100 + dim)
    values, grads = [], {}
    for step in range(case.steps):
        a = torch.randn(batch, dim, generator=gen)
        b = a + 0.7 * torch.randn(batch, dim, generator=gen)
        index = torch.randperm(NUM_SAMPLES, generator=gen)[:batch]
        leaves = {
            "a": a.to(dtype).to(DEVICE, compute).requires_grad_(),
            "b": b.to(dtype).to(DEVICE, compute).requires_grad_(),
            "scale": torch.tensor(7.5 if case.name != "siglip" else 10.0, device=DEVICE, requires_grad=True),
        }
        kwargs = {"scale": leaves["scale"]}
        if case.name == "siglip":
            leaves["bias"] = kwargs["bias"] = torch.tensor(-4.0, device=DEVICE, requires_grad=True)
        if loss.stateful and case.name != "moco":
            kwargs["index"] = index.to(DEVICE)
        torch.manual_seed(step)  # the same Gamma draws for bayes
        value = loss(leaves["a"], leaves["b"], **kwargs)
        assert value.dtype == torch.float32
        value.backward()
        values.append(value.item())
        grads.update({f"{key}{step}": leaf.grad.float().cpu().numpy() for key, leaf in leaves.items()})
    state = {key: v.float().cpu().numpy() for key, v in loss.state_dict().items() if v.is_floating_point()}
    return Outcome({"loss values": np.array(values), **grads, **state})


def assert_close(actual, desired, what: str) -> None:
    """Entrywise float32 agreement: relative to the largest entry, with a floor for cancelling sums."""
    actual, desired = np.asarray(actual, dtype=np.float64), np.asarray(desired, dtype=np.float64)
    atol = FLOAT32_RTOL * float(np.abs(desired).max(initial=0.0)) + FLOAT32_ATOL
    np.testing.assert_allclose(actual, desired, rtol=FLOAT32_RTOL, atol=atol, err_msg=what)


def _error(actual: np.ndarray, desired: np.ndarray) -> float:
    return float(np.linalg.norm(actual - desired) / max(np.linalg.norm(desired), 1e-30))


def compare(case: Case, batch: int, dim: int, dtype: torch.dtype) -> None:
    """Fused in ``dtype`` against naive float32 on the same (rounded) inputs.

    float32: equal up to round-off. bfloat16: the loss modules themselves normalise and take the positive
    logits in bfloat16, so the fused result is held to the accuracy of the naive path run in bfloat16
    (which materialises the matrix): at most twice its error, plus a small floor.
    """
    expected = run_loss(case, "naive", batch, dim, dtype, compute=torch.float32).arrays
    actual = run_loss(case, "fused", batch, dim, dtype).arrays
    assert actual.keys() == expected.keys()
    baseline = run_loss(case, "naive", batch, dim, dtype).arrays if dtype != torch.float32 else None
    for key, want in expected.items():
        if key.startswith(("a", "b", "scale", "bias")):
            assert np.abs(want).max() > 0, key  # there is a gradient to compare
        if baseline is None:
            assert_close(actual[key], want, key)
        else:
            error, allowed = _error(actual[key], want), 2 * _error(baseline[key], want) + BFLOAT16_FLOOR
            assert error <= allowed, f"{key}: fused error {error:.3g} > {allowed:.3g}"


FAST_SIZES = [
    (3, 8, torch.float32),
    (17, 33, torch.float32),
    (40, 8, torch.float32),
    (17, 33, torch.bfloat16),
]
ALL_SIZES = [(b, d, t) for t in (torch.float32, torch.bfloat16) for b in (3, 17, 40) for d in (8, 33)]
SLOW_SIZES = [size for size in ALL_SIZES if size not in FAST_SIZES]


def _size_id(size) -> str:
    batch, dim, dtype = size
    return f"B{batch}-d{dim}-{str(dtype).removeprefix('torch.')}"


@pytest.mark.parametrize("size", FAST_SIZES, ids=_size_id)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_fused_matches_naive(fused_kernels, case, size):
    compare(case, *size)


@pytest.mark.slow
@pytest.mark.parametrize("size", SLOW_SIZES, ids=_size_id)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_fused_matches_naive_all_sizes(fused_kernels, case, size):
    compare(case, *size)


# --- the kernels directly: rectangular blocks, arbitrary columns, many tiles --------------------------------
def _leaves(rows: int, cols: int, dim: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    q = torch.nn.functional.normalize(torch.randn(rows, dim, generator=gen), dim=1)
    k = torch.nn.functional.normalize(torch.randn(cols, dim, generator=gen), dim=1)
    return q.to(DEVICE).requires_grad_(), k.to(DEVICE).requires_grad_(), gen


def _grads(fn, tensors):
    for t in tensors:
        t.grad = None
    out = fn()
    weights = torch.linspace(-1.0, 2.0, out.numel(), device=out.device).reshape(out.shape)
    (out * weights).sum().backward()
    return out.detach().cpu(), [None if t.grad is None else t.grad.cpu() for t in tensors]


def _assert_same(fused, naive):
    assert_close(fused[0].numpy(), naive[0].numpy(), "value")
    for got, want in zip(fused[1], naive[1], strict=True):
        assert (got is None) == (want is None)
        if want is not None:
            assert_close(got.numpy(), want.numpy(), "gradient")


@pytest.mark.parametrize(("rows", "cols", "dim"), [(20, 45, 37), (45, 20, 5), (1, 33, 16)])
def test_row_logsumexp_local_rows_against_global_columns(tiny_tiles, rows, cols, dim):
    q, k, gen = _leaves(rows, cols, dim, seed=rows + cols)
    scale = torch.tensor(9.0, device=DEVICE, requires_grad=True)
    exclude = torch.randint(-1, cols, (rows, 2), generator=gen).to(DEVICE)
    exclude[0] = torch.tensor([cols - 1, cols - 1])  # a duplicate exclusion counts once
    for ex in (None, exclude[:, :1], exclude):
        results = [
            _grads(lambda i=impl, e=ex: _kernels.row_logsumexp(q, k, scale, e, None, i), (q, k, scale))
            for impl in ("fused", "naive")
        ]
        _assert_same(*results)


@pytest.mark.parametrize(("rows", "cols", "dim"), [(20, 45, 37), (45, 20, 5), (33, 33, 16)])
def test_cross_logsumexp_both_directions_in_one_backward_pass(tiny_tiles, rows, cols, dim):
    # 16-wide tiles: several row blocks add into each row's gradient, and dim 37 spans three feature chunks
    a, b, gen = _leaves(rows, cols, dim, seed=3 * rows + cols)
    scale = torch.tensor(7.0, device=DEVICE, requires_grad=True)
    w_rows = torch.randn(rows, generator=gen).to(DEVICE)
    w_cols = torch.randn(cols, generator=gen).to(DEVICE)
    w_pos = torch.randn(rows, generator=gen).to(DEVICE) if rows == cols else None

    def fused(bound):
        lse_rows, lse_cols, positive = tiny_tiles.cross_logsumexp(a, b, scale, bound)
        value = (lse_rows * w_rows).sum() + (lse_cols * w_cols).sum()
        return value if w_pos is None else value + (positive * w_pos).sum()

    def naive():
        logits = scale * (a.float() @ b.float().T)
        value = (logits.logsumexp(1) * w_rows).sum() + (logits.logsumexp(0) * w_cols).sum()
        return value if w_pos is None else value + (logits.diagonal() * w_pos).sum()

    want = _grads(naive, (a, b, scale))
    # a known bound: the one-pass forward; none, or one past ONE_PASS_BOUND: two row passes
    for bound in (7.0 * (1 + 1e-4), 30.0, None, 100.0):
        _assert_same(_grads(lambda bound=bound: fused(bound), (a, b, scale)), want)
    # one direction only: the other's gradient is zero, not missing
    only_rows = _grads(lambda: (tiny_tiles.cross_logsumexp(a, b, scale)[0] * w_rows).sum(), (a, b, scale))
    want = _grads(lambda: ((scale * (a.float() @ b.float().T)).logsumexp(1) * w_rows).sum(), (a, b, scale))
    _assert_same(only_rows, want)


def test_symmetric_clip_takes_the_one_pass_kernel(tiny_tiles, monkeypatch):
    calls = []
    original = tiny_tiles.cross_logsumexp
    monkeypatch.setattr(tiny_tiles, "cross_logsumexp", lambda *args: calls.append(1) or original(*args))
    a, b, _ = _leaves(24, 24, 12, seed=11)
    fused = _grads(lambda: build_loss("clip", implementation="fused")(a, b), (a, b))
    naive = _grads(lambda: build_loss("clip", implementation="naive")(a, b), (a, b))
    _assert_same(fused, naive)
    assert calls == [1]
    build_loss("clip", implementation="fused", symmetric=False)(a, b)  # one direction: the row kernel
    assert calls == [1]


def test_row_logsumexp_gradients_only_where_needed(tiny_tiles):
    q, k, _ = _leaves(19, 23, 20, seed=1)
    keys = k.detach()  # like MoCo's queue: no gradient for the columns
    scale = torch.tensor(5.0, device=DEVICE)  # a fixed temperature
    results = [
        _grads(lambda impl=impl: _kernels.row_logsumexp(q, keys, scale, None, None, impl), (q,))
        for impl in ("fused", "naive")
    ]
    _assert_same(*results)


@pytest.mark.parametrize(("rows", "cols", "dim"), [(20, 45, 37), (33, 17, 8)])
def test_pairwise_sigmoid_sum_arbitrary_positive_columns(tiny_tiles, rows, cols, dim):
    q, k, gen = _leaves(rows, cols, dim, seed=rows * cols)
    scale = torch.tensor(10.0, device=DEVICE, requires_grad=True)
    bias = torch.tensor(-6.0, device=DEVICE, requires_grad=True)
    pos_col = torch.randint(0, cols, (rows,), generator=gen).to(DEVICE)
    results = [
        _grads(
            lambda impl=impl: _kernels.pairwise_sigmoid_sum(q, k, scale, bias, pos_col, None, impl),
            (q, k, scale, bias),
        )
        for impl in ("fused", "naive")
    ]
    _assert_same(*results)


def test_softplus_is_accurate_far_in_the_tails(fused_kernels):
    # terms of about exp(-40): a naive log(1 + exp(x)) in float32 would round every one of them to 0
    q = torch.ones(4, 1, device=DEVICE)
    k = torch.ones(6, 1, device=DEVICE)
    scale, bias = torch.tensor(1.0, device=DEVICE), torch.tensor(-41.0, device=DEVICE)
    pos_col = torch.full((4,), 100, dtype=torch.long, device=DEVICE)  # no positive: all 24 terms tiny
    value = fused_kernels.pairwise_sigmoid_sum(q, k, scale, bias, pos_col)
    np.testing.assert_allclose(value.item(), 24 * np.log1p(np.exp(-40.0)), rtol=1e-5)


def test_fused_backward_is_deterministic(tiny_tiles):
    q, k, _ = _leaves(37, 41, 19, seed=5)
    scale = torch.tensor(12.0, device=DEVICE, requires_grad=True)
    runs = [
        _grads(lambda: _kernels.row_logsumexp(q, k, scale, None, None, "fused"), (q, k, scale)) for _ in "ab"
    ]
    for first, second in zip(runs[0][1], runs[1][1], strict=True):
        assert torch.equal(first, second)


# --- choosing an implementation ------------------------------------------------------------------------
@pytest.mark.parametrize("name", loss_names())
def test_implementation_is_validated_and_reported(name):
    params = {"num_samples": NUM_SAMPLES} if name in ("sogclr", "bayes") else {}
    allowed = "'auto', 'naive', 'chunked', 'fused'"
    with pytest.raises(ValueError, match=f"implementation must be one of {allowed}"):
        build_loss(name, implementation="triton", **params)
    with pytest.raises(ValueError, match="contradicts implementation='naive'"):
        build_loss(name, implementation="naive", chunk_size=8, **params)
    loss = build_loss(name, implementation="chunked", **params)
    assert "implementation='chunked'" in repr(loss)
    assert loss.global_objective().implementation == "chunked"


def test_auto_keeps_the_cpu_behaviour():
    cpu = torch.zeros(4, 3)
    assert _kernels.resolve_implementation("auto", None, cpu, cpu) == "naive"
    assert _kernels.resolve_implementation("auto", 2, cpu, cpu) == "chunked"
    assert _kernels.resolve_implementation("chunked", None, cpu, cpu) == "chunked"


@pytest.mark.parametrize("impl", ["chunked", "auto"])
def test_chunked_without_chunk_size_and_auto_match_naive(impl):
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(2100, 4, generator=gen), torch.randn(2100, 4, generator=gen)
    naive = build_loss("clip", implementation="naive")(a, b)
    assert_close(build_loss("clip", implementation=impl)(a, b).item(), naive.item(), impl)


def test_fused_rejects_float64(fused_kernels):
    x = torch.zeros(4, 3, dtype=torch.float64, device=DEVICE)
    with pytest.raises(RuntimeError, match=r"implementation='fused'.*float64"):
        _kernels.resolve_implementation("fused", None, x, x)
    assert _kernels.resolve_implementation("auto", None, x, x) == "naive"  # auto falls back


def test_cpu_tensors_need_interpreted_kernels(fused_kernels, monkeypatch):
    if DEVICE != "cpu":
        pytest.skip("checks the interpreter build")
    monkeypatch.setattr(fused_kernels, "INTERPRET", False)
    a = torch.randn(4, 3)
    with pytest.raises(RuntimeError, match=r"implementation='fused'.*built for CUDA"):
        build_loss("clip", implementation="fused")(a, a)


_UNAVAILABLE = """
import os, sys
import torch
from workbench.losses import build_loss
os.environ.pop("TRITON_INTERPRET", None)
a = torch.randn(5, 3)
try:
    build_loss("ntxent", implementation="fused")(a, a)
except RuntimeError as exc:
    print("NO-INTERPRETER:", exc)
sys.modules["triton"] = None  # as if triton were not installed
try:
    build_loss("siglip", implementation="fused")(a, a)
except RuntimeError as exc:
    print("NO-TRITON:", exc)
print("AUTO:", build_loss("clip")(a, a).item() > 0)
"""


def test_fused_where_it_cannot_run_raises_a_clear_error():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, "-c", _UNAVAILABLE], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env
    )
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(": ", 1) for line in proc.stdout.splitlines())
    assert "implementation='fused' needs" in lines["NO-INTERPRETER"]
    assert "TRITON_INTERPRET=1 is not set" in lines["NO-INTERPRETER"]
    assert "'auto', 'naive' or 'chunked'" in lines["NO-INTERPRETER"]
    assert "triton is not importable" in lines["NO-TRITON"]
    assert lines["AUTO"] == "True"
    assert "Traceback" not in proc.stderr


# --- compiled for a GPU ----------------------------------------------------------------------------------
_COMPILE_FOR_SM90 = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from workbench.losses.kernels import fused as T

assert not T.INTERPRET
POINTERS = {
    "forward": ("q", "k", "scale", "bias", "ex", "pos", "out"),
    "rows": ("q", "k", "scale", "bias", "stat", "grad", "ex", "pos", "gpos", "dq", "partial"),
    "cols": ("q", "k", "scale", "bias", "stat", "grad", "ex", "pos", "gpos", "dk"),
    "cross": ("a", "b", "scale", "lse_r", "lse_c", "g_r", "g_c", "g_p", "da", "db", "partial"),
    "cross_forward": ("a", "b", "scale", "rows", "col_sum"),
}
KERNELS = {"forward": T._forward_kernel, "rows": T._backward_rows_kernel, "cols": T._backward_cols_kernel,
           "cross": T._cross_backward_kernel, "cross_forward": T._cross_forward_kernel}
for dtype, mode, num_ex, dim in (("bf16", 0, 2, 512), ("fp16", 0, 0, 40), ("fp32", 1, 0, 128)):
    for kernel, names in POINTERS.items():
        blocks = T._blocks(dim, "forward" if kernel == "cross_forward" else kernel)
        types = {"q": "*" + dtype, "k": "*" + dtype, "a": "*" + dtype, "b": "*" + dtype, "ex": "*i64",
                 "pos": "*i64"}
        signature = {name + "_ptr": types.get(name, "*fp32") for name in names}
        if kernel == "cross_forward":
            signature["bound"] = "fp32"
        signature.update({"M": "i32", "N": "i32", "D": "i32"})
        # the positives' gradient in the lse kernels (MODE 0) that take one
        has_pos = mode == 0 and kernel in ("rows", "cols", "cross")
        constants = {"MODE": mode, "NUM_EX": num_ex, "PRECISION": "ieee", "UPCAST": False}
        if kernel in ("rows", "cols"):
            constants["HAS_POS"] = has_pos
        if kernel.startswith("cross"):  # the symmetric lse: no MODE, no exclusions
            constants = {"PRECISION": "ieee", "UPCAST": False}
            if kernel == "cross":
                constants["HAS_POS"] = has_pos
        sizes = ("BLOCK_M", "BLOCK_N", "BLOCK_D") + (() if "forward" in kernel else ("BLOCK_DO",))
        constants.update({key: blocks[key] for key in sizes})
        signature.update(dict.fromkeys(constants, "constexpr"))
        options = {"num_warps": blocks["num_warps"], "num_stages": blocks["num_stages"]}
        compiled = triton.compile(ASTSource(KERNELS[kernel], signature, constants), GPUTarget("cuda", 90, 32),
                                  options)
        assert compiled.asm["cubin"], (kernel, dtype)
        print("compiled", kernel, dtype, mode, num_ex)
"""


@pytest.mark.slow  # about 20 s: fifteen kernel variants through Triton's whole pipeline and ptxas
def test_kernels_compile_for_an_h100_without_a_gpu(tmp_path):
    """The interpreter accepts things the compiler does not; build every kernel for sm_90 (no GPU needed)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)  # compile for real, not from a cache
    cmd = [sys.executable, "-c", _COMPILE_FOR_SM90]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    if proc.returncode != 0 and "ptxas" in proc.stderr and "No such file" in proc.stderr:
        pytest.skip("this triton install has no ptxas")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("compiled") == 15


# --- on a GPU ----------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fused_matches_naive_on_cuda():
    """This file's comparisons, compiled for the GPU, in a fresh process (no interpreter)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["WORKBENCH_FUSED_TEST_DEVICE"] = "cuda"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not gpu", __file__]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
