"""The E-step estimators of the Bayesian loss that look beyond the batch: the bank and the exact oracle.

The central property: when the weight u_i = 1 / Z_i(theta) does not depend on the batch, the expected
minibatch step equals the full-data gradient. It is checked by enumerating every batch.
"""

from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import pytest
import torch

from workbench.losses import BayesLoss, build_loss

from . import reference as ref
from .conftest import assert_close, assert_result, calls, evaluate

N, B = 10, 4
MODES = [(neg, inc) for neg in ("cross", "views") for inc in (True, False)]
MODE_IDS = [f"{neg}-{'pos' if inc else 'nopos'}" for neg, inc in MODES]


# --- NumPy reference of the bank ------------------------------------------------------------------------
class BankMirror:
    """The bank's rows, written from the raw features, and its E-step, in NumPy."""

    def __init__(self, num_samples: int, dim: int):
        self.rows = np.zeros((2, num_samples, dim))
        self.filled = np.zeros(num_samples, dtype=bool)

    def write(self, a, b, index):
        self.rows[0, index], self.rows[1, index] = ref.normalize(a), ref.normalize(b)
        self.filled[index] = True

    def log_z(self, index, scale, negatives, include_positive, candidates=None) -> np.ndarray:
        """(2B,) log Z of the rows [a-anchors; b-anchors] over the candidate samples (default: filled)."""
        num_samples = len(self.filled)
        cands = np.flatnonzero(self.filled) if candidates is None else np.asarray(candidates)
        out = []
        for slot in (0, 1):
            for i in index:
                q = self.rows[slot, i]
                others = [j for j in cands if j != i]
                keys = (
                    self.rows[1 - slot, others]
                    if negatives == "cross"
                    else self.rows[:, others].reshape(-1, q.size)
                )
                mean_neg = np.exp(scale * keys @ q).mean()
                if include_positive:
                    p = ref.population(num_samples, negatives)
                    pos = np.exp(scale * self.rows[0, i] @ self.rows[1, i])
                    out.append(np.log(pos / p + (p - 1) / p * mean_neg))
                else:
                    out.append(np.log(mean_neg))
        return np.array(out)


@pytest.mark.parametrize(("negatives", "include_positive"), MODES, ids=MODE_IDS)
@pytest.mark.parametrize("shape", [math.inf, 2.0])
def test_bank_step_against_numpy(negatives, include_positive, shape):
    """Cold (the bank holds only the batch), then stale rows mixed with current ones."""
    mode = {"negatives": negatives, "include_positive": include_positive, "num_samples": N}
    loss = BayesLoss(temperature=0.25, shape=shape, estimator="bank", **mode)
    mirror = BankMirror(N, 5)
    sequence = calls(B, steps=4, num_samples=N)
    for step, call in enumerate(sequence):
        mirror.write(call.a, call.b, call.index)
        log_z = mirror.log_z(call.index, 4.0, negatives, include_positive)
        if step == 0:  # cold: the bank's E-step is the batch estimate
            assert_close(log_z, ref.log_zhat(call.a, call.b, 4.0, **mode), 1e-12)
        log_u = -log_z
        if math.isfinite(shape):  # the same Gamma draws as the loss takes: Gamma(k, 1) / k
            torch.manual_seed(step)
            draws = torch._standard_gamma(torch.full((2 * B,), shape, dtype=torch.float64))
            log_u = log_u + np.log(draws.numpy() / shape)
        torch.manual_seed(step)
        result = evaluate(loss, call.a, call.b, index=call.index)
        assert_result(result, ref.partition(call.a, call.b, 4.0, log_u=log_u, **mode), rtol=1e-10)
    assert_close(loss.bank.rows.numpy(), mirror.rows, 1e-12)
    assert torch.equal(loss.bank.filled, torch.as_tensor(mirror.filled))
    assert not loss.visited.any()  # the running memory is not used


@pytest.mark.parametrize("negatives", ["cross", "views"])
def test_bank_size_uses_a_random_subset_of_the_filled_rows(negatives):
    mode = {"negatives": negatives, "include_positive": True, "num_samples": N}
    loss = BayesLoss(temperature=0.25, shape=math.inf, estimator="bank", bank_size=5, **mode)
    mirror = BankMirror(N, 5)
    for step, call in enumerate(calls(B, steps=4, num_samples=N)):
        mirror.write(call.a, call.b, call.index)
        # the loss's subset: the K filled rows with the smallest uniform keys (all of them while < K)
        torch.manual_seed(step)
        keys = torch.rand(N).numpy() + ~mirror.filled
        subset = np.argsort(keys)[:5]
        subset = subset[mirror.filled[subset]]
        log_z = mirror.log_z(call.index, 4.0, negatives, True, candidates=subset)
        torch.manual_seed(step)
        result = evaluate(loss, call.a, call.b, index=call.index)
        assert_result(result, ref.partition(call.a, call.b, 4.0, log_u=-log_z, **mode), rtol=1e-10)
    assert mirror.filled.sum() > 5  # the last steps did draw subsets


def test_a_subset_holding_only_the_anchor_falls_back_on_the_batch_estimate():
    mode = {"negatives": "cross", "include_positive": True, "num_samples": N}
    loss = BayesLoss(temperature=0.25, shape=math.inf, estimator="bank", bank_size=1, **mode)
    (call,) = calls(B, num_samples=N)
    result = evaluate(loss, call.a, call.b, index=call.index)
    assert np.isfinite(result.value) and np.isfinite(result.grad_a).all()


# --- the expected step, by enumerating every batch --------------------------------------------------------
def _population(num_samples: int, dim: int = 5, seed: int = 3):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(num_samples, dim))
    b = a + 0.8 * rng.normal(size=(num_samples, dim))
    return torch.tensor(a), torch.tensor(b)


def _enumerated(loss, a, b, batch_size: int, passes: int = 1, restore: bool = False) -> torch.Tensor:
    """Mean gradient (w.r.t. a and b, flattened) over every batch of ``batch_size`` of the N rows."""
    ta, tb = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
    saved = copy.deepcopy(loss.state_dict()) if restore else None
    count = 0
    for _ in range(passes):
        for combo in itertools.combinations(range(a.shape[0]), batch_size):
            if saved is not None:
                loss.load_state_dict(saved)
            index = torch.tensor(combo)
            loss(ta[index], tb[index], index=index).backward()
            count += 1
    return torch.cat([ta.grad.ravel(), tb.grad.ravel()]) / count


def _gradient(fn, a, b) -> torch.Tensor:
    ta, tb = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
    fn(ta, tb).backward()
    return torch.cat([ta.grad.ravel(), tb.grad.ravel()])


def _relative(x: torch.Tensor, y: torch.Tensor) -> float:
    return float((x - y).norm() / y.norm())


@pytest.mark.slow
def test_bank_expected_step_is_the_full_gradient():
    # N = 16, B = 4: all 1,820 batches; the bank holds the current embeddings; point estimate
    a, b = _population(16)
    loss = BayesLoss(16, 0.2, shape=math.inf, estimator="bank")
    loss.set_population(a, b)
    full = _gradient(loss.global_objective(), a, b)
    assert _relative(_enumerated(loss, a, b, 4), full) < 1e-12


@pytest.mark.parametrize(("negatives", "include_positive"), MODES, ids=MODE_IDS)
def test_exact_estimator_expected_step_is_the_full_gradient_in_every_mode(negatives, include_positive):
    a, b = _population(8)
    loss = BayesLoss(
        8, 0.2, shape=math.inf, estimator="exact", negatives=negatives, include_positive=include_positive
    )
    loss.set_population_source(lambda: (a, b))
    full = _gradient(loss.global_objective(), a, b)
    assert _relative(_enumerated(loss, a, b, 3), full) < 1e-12
    assert _relative(_gradient(loss.expected_step_objective, a, b), full) < 1e-12


@pytest.mark.slow
def test_gamma_draws_average_to_far_less_bias_than_infonce():
    a, b = _population(10)
    torch.manual_seed(0)
    loss = BayesLoss(10, 0.2, shape=1.0, estimator="bank")
    loss.set_population(a, b)
    full = _gradient(loss.global_objective(), a, b)
    bayes = _relative(_enumerated(loss, a, b, 3, passes=3), full)
    infonce = _relative(_enumerated(build_loss("clip", temperature=0.2), a, b, 3), full)
    assert infonce > 0.2  # minibatch InfoNCE is clearly biased here
    assert bayes < infonce / 4  # what is left is the draws' noise, not bias
    with loss.expected_draws():  # their expectation is the point estimate, exactly
        assert _relative(_enumerated(loss, a, b, 3), full) < 1e-12


@pytest.mark.parametrize("estimator", ["running", "bank"])
def test_expected_step_objective_is_the_enumerated_mean_step(estimator):
    """Warm states at fixed embeddings: the closed form equals the mean over every batch."""
    a, b = _population(N)
    loss = BayesLoss(N, 0.2, shape=2.0, estimator=estimator, gamma=0.5)
    with torch.no_grad():
        for combo in [(0, 1, 2, 3), (4, 5, 6, 7), (8, 9, 0, 5), (1, 3, 5, 7), (2, 4, 6, 8), (9, 0, 1, 2)]:
            index = torch.tensor(combo)
            loss(a[index], b[index], index=index)
    before = copy.deepcopy(loss.state_dict())
    closed = _gradient(loss.expected_step_objective, a, b)
    for key, value in loss.state_dict().items():  # asking changes nothing
        assert torch.equal(value, before[key]), key
    with loss.expected_draws():
        enumerated = _enumerated(loss, a, b, 3, restore=True)
    assert _relative(closed, enumerated) < 1e-12
    full = _gradient(loss.global_objective(), a, b)
    if estimator == "bank":
        assert _relative(closed, full) < 1e-12
    else:  # the running average is biased for 1 / Z
        assert _relative(closed, full) > 1e-3


def test_expected_step_with_a_subset_averages_the_weights_over_the_subsets():
    # A subset is drawn independently of the batch, so the expected step takes E[1 / R] over subsets
    # as each anchor's weight: here the mean over the same 50 subsets, in NumPy.
    a, b = _population(N)
    loss = BayesLoss(N, 0.2, shape=math.inf, estimator="bank", bank_size=4)
    loss.set_population(a, b)
    mirror = BankMirror(N, 5)
    mirror.write(a.numpy(), b.numpy(), np.arange(N))
    torch.manual_seed(0)
    subsets = [torch.randperm(N)[:4].numpy() for _ in range(50)]
    u = np.mean([np.exp(-mirror.log_z(range(N), 5.0, "cross", True, s)) for s in subsets], axis=0)
    expected = ref.partition(a.numpy(), b.numpy(), 5.0, "cross", True, log_u=np.log(u), num_samples=N)
    torch.manual_seed(0)
    result = evaluate(lambda x, y, **_: loss.expected_step_objective(x, y, subset_draws=50), a, b)
    assert_result(result, expected, rtol=1e-10)
    # Jensen: 1 / R of a 4-sample subset overshoots 1 / Z on average, a bias a full bank does not have
    full = _gradient(loss.global_objective(), a, b)
    assert (
        _relative(torch.cat([torch.tensor(result.grad_a).ravel(), torch.tensor(result.grad_b).ravel()]), full)
        > 0.1
    )


def test_expected_step_objective_is_none_where_the_weight_depends_on_the_batch():
    a, b = _population(N)
    assert BayesLoss(N, estimator="running").expected_step_objective(a, b) is None  # first visits
    assert BayesLoss(N, estimator="batch").expected_step_objective(a, b) is None
    bank = BayesLoss(N, estimator="bank")
    assert bank.expected_step_objective(a, b) is None  # empty
    bank.set_population(a, b)
    assert bank.expected_step_objective(a, b) is not None
    assert bank.expected_step_objective(a + 0.1, b) is None  # stale rows
    assert BayesLoss(N, estimator="bank", bank_size=1).expected_step_objective(a, b) is None


# --- the population API (estimator "exact") ---------------------------------------------------------------
def test_exact_needs_the_population_and_refreshes_it_when_due():
    a, b = _population(N)
    loss = BayesLoss(N, estimator="exact", refresh_every=3)
    assert loss.needs_population and not BayesLoss(N).needs_population
    batch = torch.arange(B)
    with pytest.raises(ValueError, match=r"set_population\(a_all, b_all\).*set_population_source"):
        loss(a[batch], b[batch], index=batch)
    loss.set_population(a, b)
    for _ in range(3):
        loss(a[batch], b[batch], index=batch)
    with pytest.raises(ValueError, match="every refresh_every=3 steps"):
        loss(a[batch], b[batch], index=batch)
    calls_made = []

    def source():
        calls_made.append(int(loss.steps))
        return a, b

    loss.set_population_source(source)
    for _ in range(7):
        loss(a[batch], b[batch], index=batch)
    assert calls_made == [3, 6, 9]
    assert int(loss.bank.refreshed_at) == 9


def test_population_refresh_matches_the_bank_written_batch_by_batch():
    # the exact oracle and a bank that has seen every sample at the same parameters agree
    a, b = _population(N)
    exact = BayesLoss(N, 0.2, shape=math.inf, estimator="exact")
    exact.set_population(a, b)
    bank = BayesLoss(N, 0.2, shape=math.inf, estimator="bank")
    for start in range(0, N, 2):
        index = torch.arange(start, start + 2)
        bank(a[index], b[index], index=index)
    index = torch.tensor([1, 4, 7])
    assert_close(
        _gradient(lambda x, y: bank(x, y, index=index), a[index], b[index]).numpy(),
        _gradient(lambda x, y: exact(x, y, index=index), a[index], b[index]).numpy(),
        1e-12,
    )


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda loss, a, b: loss.set_population(a[:-1], b[:-1]), "num_samples=10"),
        (lambda loss, a, b: loss.set_population(a, b[:, :2]), "same shape"),
        (lambda loss, a, b: loss.set_population_source(3), "source must be a callable"),
        (lambda loss, a, b: BayesLoss(N, estimator="running").set_population(a, b), "estimator 'bank'"),
    ],
)
def test_population_rejects_bad_input(call, match):
    a, b = _population(N)
    with pytest.raises(ValueError, match=match):
        call(BayesLoss(N, estimator="exact"), a, b)


def test_bank_state_round_trip_resizes_the_bank():
    a, b = _population(N)
    trained = BayesLoss(N, estimator="bank", shape=math.inf)
    trained(a[:4], b[:4], index=torch.arange(4))
    fresh = BayesLoss(N, estimator="bank", shape=math.inf)
    assert fresh.bank.rows.shape == (2, N, 0)
    fresh.load_state_dict(copy.deepcopy(trained.state_dict()))
    assert torch.equal(fresh.bank.rows, trained.bank.rows) and fresh.bank.filled.sum() == 4
    index = torch.tensor([2, 5, 8, 9])
    assert torch.equal(fresh(a[index], b[index], index=index), trained(a[index], b[index], index=index))
    assert {"bank.rows", "bank.filled", "bank.refreshed_at"} <= set(trained.state_dict())
    assert "bank.rows" not in BayesLoss(N, estimator="running").state_dict()  # old checkpoints still load


@pytest.mark.slow
def test_bank_survives_kill_and_resume_through_the_trainer(tmp_path):
    from workbench.training.trainer import TrainConfig, train

    config = TrainConfig.from_dict(
        dict(
            dataset="synthetic",
            dataset_params={"num_samples": 64},
            model_size="tiny",
            loss="bayes",
            loss_params={"estimator": "bank", "bank_size": 40},
            batch_size=16,
            steps=8,
            eval_every=4,
            snapshot_every=8,
            checkpoint_every=4,
            probe_size=64,
        )
    )
    reference = train(config, run_id="reference", root=tmp_path, progress=False)
    partial = train(config, run_id="resumed", root=tmp_path, progress=False, stop_at_step=5)
    assert not partial.is_complete
    resumed = train(config, run_id="resumed", root=tmp_path, progress=False)
    got = torch.load(resumed.path / "checkpoint.pt", weights_only=True)["loss"]
    want = torch.load(reference.path / "checkpoint.pt", weights_only=True)["loss"]
    assert got.keys() == want.keys() and "bank.rows" in got
    for key, value in want.items():
        assert torch.equal(got[key], value), key
    assert bool(want["bank.filled"].any()) and want["bank.rows"].abs().sum() > 0
    assert resumed.metrics.equals(reference.metrics)


def test_bank_subsets_are_uniform_among_the_filled_rows():
    from workbench.losses.bank import EmbeddingBank

    bank = EmbeddingBank(10)
    bank.write(torch.randn(3, 4), torch.randn(3, 4), torch.tensor([1, 4, 7]))
    gen = torch.Generator().manual_seed(0)
    # fewer filled rows than K: every filled row is drawn, the rest are unfilled positions
    assert {1, 4, 7} <= set(bank.draw_subset(5, gen).tolist())
    bank.write(torch.randn(10, 4), torch.randn(10, 4), torch.arange(10))
    counts = torch.zeros(10)
    for _ in range(4000):
        drawn = bank.draw_subset(5, gen)
        assert len(set(drawn.tolist())) == 5
        counts[drawn] += 1
    # each row in a subset with probability K / N = 0.5: 2000 of 4000, binomial std ~32
    assert (counts - 2000).abs().max() < 160
