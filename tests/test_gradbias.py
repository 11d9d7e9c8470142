"""The gradient-bias lab (workbench.labs.gradbias): exact full gradients and minibatch bias statistics."""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import pytest
import torch

from workbench.data import build_dataset
from workbench.labs import gradbias
from workbench.losses import ClipLoss, build_loss
from workbench.models import MLPConfig, build_pair_model
from workbench.training.gradcache import flat_grad

N = 32


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def data():
    dataset = build_dataset("synthetic", num_samples=N)
    return dataset.x_a, dataset.x_b


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_pair_model("two_tower", 16, 16, MLPConfig(hidden=8, depth=1, out_dim=6))


def naive_gradient(model, x_a, x_b, objective) -> tuple[torch.Tensor, float]:
    model.zero_grad(set_to_none=True)
    z_a, z_b = model(x_a, x_b)
    value = objective(z_a, z_b)
    value.backward()
    grad = flat_grad(model)
    model.zero_grad(set_to_none=True)
    return grad, value.item()


def assert_vectors_close(actual, expected, rtol=1e-5):
    assert actual.shape == expected.shape
    scale = float(expected.abs().max())
    assert scale > 0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * scale)


# The global objective written out independently of loss.global_objective().
FULL_GRADIENT_CASES = {
    "clip": (lambda: build_loss("clip"), lambda: ClipLoss(temperature=0.07)),
    "ntxent": (lambda: build_loss("ntxent"), lambda: build_loss("ntxent", temperature=0.5)),
    "siglip": (lambda: build_loss("siglip"), lambda: build_loss("siglip", scale=10.0, bias=-10.0)),
    "sogclr": (lambda: build_loss("sogclr", num_samples=N), lambda: ClipLoss(temperature=0.1)),
    "bayes": (lambda: build_loss("bayes", num_samples=N), lambda: ClipLoss(temperature=0.1)),
}


@pytest.mark.parametrize("name", list(FULL_GRADIENT_CASES))
def test_full_gradient_is_the_gradient_of_the_global_objective(data, name):
    x_a, x_b = data
    make_loss, make_objective = FULL_GRADIENT_CASES[name]
    model = tiny_model()
    expected, expected_value = naive_gradient(model, x_a, x_b, make_objective())
    loss = make_loss()

    grad, value = gradbias.full_gradient(model, x_a, x_b, loss, return_value=True)
    assert grad.dtype == torch.float64
    assert value == pytest.approx(expected_value, rel=1e-6)
    assert_vectors_close(grad, expected)

    chunked = gradbias.full_gradient(model, x_a, x_b, loss, chunk_size=5, micro_batch=7)
    unchunked = gradbias.full_gradient(model, x_a, x_b, loss, chunk_size=None, micro_batch=None)
    assert_vectors_close(chunked, unchunked)
    assert_vectors_close(unchunked, expected)
    assert loss.chunk_size is None  # chunking is applied to a copy, not to the caller's loss
    assert all(p.grad is None for p in model.parameters())


def test_full_gradient_of_stateful_losses_ignores_state_and_rng(data):
    x_a, x_b = data
    model = tiny_model()
    loss = build_loss("bayes", num_samples=N)
    torch.manual_seed(1)
    fresh = gradbias.full_gradient(model, x_a, x_b, loss)
    with torch.no_grad():
        z_a, z_b = model(x_a, x_b)
        loss(z_a[:8], z_b[:8], index=torch.arange(8))
    assert loss.bank.filled.any()
    torch.manual_seed(2)
    assert torch.equal(gradbias.full_gradient(model, x_a, x_b, loss), fresh)


@pytest.fixture(scope="module")
def clip_table(data):
    x_a, x_b = data
    return gradbias.measure(
        tiny_model(), x_a, x_b, ["clip"], batch_sizes=[4, 16, N], repeats=100, seed=0, bias_repeats=500
    )


def test_measure_columns_and_rows(clip_table):
    assert list(clip_table.columns) == gradbias.COLUMNS
    assert clip_table.loss.tolist() == ["clip"] * 3
    assert clip_table.state.tolist() == ["stateless"] * 3
    assert clip_table.batch_size.tolist() == [4, 16, N]
    assert clip_table.repeats.tolist() == [100] * 3


def test_bias_vanishes_at_the_full_batch(clip_table):
    row = clip_table.set_index("batch_size").loc[N]
    # every "minibatch" is a permutation of all N rows: the gradient is g* up to float32 round-off
    for column in ("bias", "bias_raw", "variance", "jensen_gap", "mse", "bias_floor"):
        assert abs(row[column]) < 1e-5, column
    assert row.rel_bias < 1e-6
    assert row.cosine == pytest.approx(1.0, abs=1e-6)


def test_small_batch_statistics(clip_table):
    rows = clip_table.set_index("batch_size")
    small = rows.loc[4]
    assert small.bias > 0 and small.rel_bias > 0
    assert small.bias > 3 * small.bias_floor  # well above what sampling noise alone would show
    assert small.mse == pytest.approx(small.bias**2 + small.variance, rel=1e-12)
    assert small.bias_repeats == 500 and small.method == "monte_carlo" and small.resolved
    # the batch-means floor and the one from the 100 full gradients' variance agree for clip (light tails)
    assert small.bias_floor == pytest.approx(math.sqrt(small.variance / 499), rel=0.5)
    assert small.bias == pytest.approx(math.sqrt(small.bias_raw**2 - small.bias_floor**2), rel=1e-12)
    assert small.rel_floor == pytest.approx(small.bias_floor * small.rel_bias / small.bias, rel=1e-12)
    assert 0 < small.cosine < 1
    assert small.jensen_gap < 0  # E[log Zhat] < log Z: the minibatch objective underestimates
    assert rows.loc[16].mse == pytest.approx(rows.loc[16].bias ** 2 + rows.loc[16].variance, rel=1e-12)
    assert rows.loc[4].rel_bias > rows.loc[16].rel_bias > rows.loc[N].rel_bias
    assert rows.loc[4].variance > rows.loc[16].variance


@pytest.mark.parametrize("name", ["clip", "bayes"])
def test_embedding_space_mean_equals_the_mean_of_parameter_gradients(data, name):
    # The model is fixed, so mean_B(J^T e_B) == J^T mean_B(e_B): the shortcut measure() relies on.
    x_a, x_b = data
    model = tiny_model()
    loss = build_loss(name, **({"num_samples": N, "shape": math.inf} if name == "bayes" else {}))
    saved = copy.deepcopy(loss.state_dict())
    with torch.no_grad():
        z_a, z_b = model(x_a, x_b)
    groups = [[gradbias._batch_index(N, 4, 1, r) for r in range(g * 10, g * 10 + 10)] for g in range(3)]
    means, sizes, values = gradbias._group_means(model, x_a, x_b, z_a, z_b, loss, saved, groups, None)
    assert sizes.tolist() == [10, 10, 10] and len(values) == 30
    for group, mean in zip(groups, means, strict=True):
        direct = []
        for index in group:
            loss.load_state_dict(saved)
            model.zero_grad()
            loss(*model(x_a[index], x_b[index]), index=index).backward()
            direct.append(flat_grad(model))
        torch.testing.assert_close(mean, torch.stack(direct).mean(0), rtol=1e-4, atol=1e-6)


def test_measure_is_deterministic(data, clip_table):
    x_a, x_b = data
    again = gradbias.measure(
        tiny_model(), x_a, x_b, ["clip"], batch_sizes=[4, 16, N], repeats=100, seed=0, bias_repeats=500
    )
    pd.testing.assert_frame_equal(again, clip_table, check_exact=True)
    other_seed = gradbias.measure(tiny_model(), x_a, x_b, ["clip"], batch_sizes=[4], repeats=100, seed=1)
    assert other_seed.variance.iloc[0] != clip_table.variance.iloc[0]


def test_stateful_losses_have_cold_and_warm_rows(data):
    x_a, x_b = data
    losses = {
        "sogclr": {"name": "sogclr"},
        "bayes-batch": {"name": "bayes", "shape": math.inf, "estimator": "batch"},
        "bayes": "bayes",
    }
    table = gradbias.measure(tiny_model(), x_a, x_b, losses, batch_sizes=[4, 8], repeats=5, bias_repeats=100)
    assert list(table.columns) == gradbias.COLUMNS
    assert len(table) == 3 * 2 * 2
    for label in losses:
        part = table[table.loss == label]
        assert part.state.tolist() == ["cold", "warm", "cold", "warm"]
        assert part.batch_size.tolist() == [4, 4, 8, 8]
    stats = [c for c in gradbias.COLUMNS if c not in ("loss", "state", "batch_size")]

    def block(label, state):
        return table[(table.loss == label) & (table.state == state)][stats].reset_index(drop=True)

    # On a first visit SogCLR's running estimate is the batch estimate: the same step as the
    # batch-estimator Bayes point estimate.
    pd.testing.assert_frame_equal(block("sogclr", "cold"), block("bayes-batch", "cold"), rtol=1e-12)
    # The batch estimator ignores the state, so warming up changes nothing ...
    pd.testing.assert_frame_equal(block("bayes-batch", "warm"), block("bayes-batch", "cold"), rtol=1e-12)
    # ... while SogCLR's warm state does change the gradient.
    assert not np.allclose(block("sogclr", "warm").variance, block("sogclr", "cold").variance)


def test_measure_leaves_model_and_loss_unchanged(data):
    x_a, x_b = data
    for training in (True, False):
        model = tiny_model().train(training)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        loss = build_loss("sogclr", num_samples=N)
        gradbias.measure(
            model, x_a, x_b, {"clip": "clip", "sogclr": loss}, batch_sizes=[4], repeats=3, bias_repeats=20
        )
        assert model.training is training
        assert all(m.training is training for m in model.modules())
        for key, value in model.state_dict().items():
            assert torch.equal(value, before[key]), key
        assert not loss.visited.any() and int(loss.steps) == 0  # state reset after measuring


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(batch_sizes=[1]), r"batch_sizes must be integers in \[2, N=32\], got \[1\]"),
        (dict(batch_sizes=[4, N + 1]), r"batch_sizes must be integers in \[2, N=32\]"),
        (dict(batch_sizes=[]), r"batch_sizes"),
        (dict(batch_sizes=[4], repeats=1), r"repeats must be an integer >= 2, got 1"),
        (dict(batch_sizes=[4], floor_groups=1), r"floor_groups must be an integer >= 2, got 1"),
        (dict(batch_sizes=[4], mode="enumerate"), r"mode must be one of monte_carlo, exact; got 'enumerate'"),
        (dict(batch_sizes=[4], losses=["nope"]), r"unknown loss name 'nope'; known losses: ntxent, clip"),
    ],
)
def test_measure_rejects_bad_input(data, kwargs, message):
    x_a, x_b = data
    kwargs = {"losses": ["clip"], **kwargs}
    with pytest.raises(ValueError, match=message):
        gradbias.measure(tiny_model(), x_a, x_b, **kwargs)


def test_measure_rejects_mismatched_rows(data):
    x_a, x_b = data
    with pytest.raises(ValueError, match="x_a and x_b must have the same number of rows"):
        gradbias.measure(tiny_model(), x_a, x_b[:-1], ["clip"], batch_sizes=[4])


def test_default_warmup_passes():
    assert gradbias.default_warmup_passes(build_loss("clip")) == 1
    assert gradbias.default_warmup_passes(build_loss("sogclr", num_samples=N, gamma=0.9)) == 3
    assert gradbias.default_warmup_passes(build_loss("bayes", num_samples=N, estimator="bank")) == 2
    passes = gradbias.default_warmup_passes(
        build_loss("bayes", num_samples=N, estimator="running", gamma=0.1)
    )
    assert (1 - 0.1) ** (passes - 1) < 0.05 <= (1 - 0.1) ** (passes - 2)


def test_samples_hold_one_row_per_full_gradient(data, clip_table):
    x_a, x_b = data
    table, samples = gradbias.measure(
        tiny_model(),
        x_a,
        x_b,
        ["clip"],
        [4, 16, N],
        repeats=100,
        seed=0,
        bias_repeats=500,
        return_samples=True,
    )
    pd.testing.assert_frame_equal(table, clip_table, check_exact=True)
    assert list(samples.columns) == gradbias.SAMPLE_COLUMNS
    assert len(samples) == 3 * 100
    full = samples[samples.batch_size == N]
    assert full.cosine.min() > 1 - 1e-6 and full.rel_error.max() < 1e-5
    small = samples[samples.batch_size == 4]
    assert small.repeat.tolist() == list(range(100))
    assert small.cosine.between(-1, 1).all() and small.cosine.std() > 0
    # mean ||g_B - g*||^2 = variance of the same gradients + ||their mean - g*||^2 >= variance
    norm = clip_table.bias.iloc[0] / clip_table.rel_bias.iloc[0]
    assert (small.rel_error**2).mean() * norm**2 > clip_table.variance.iloc[0]


def test_loss_specs_take_labels_only():
    assert list(gradbias.loss_specs()) == list(gradbias.ALL_LOSSES)
    assert gradbias.loss_specs(["all"]) == gradbias.loss_specs()
    assert gradbias.loss_specs(["bayes-point"]) == {"bayes-point": {"name": "bayes", "shape": math.inf}}
    with pytest.raises(ValueError, match=r"losses has unknown label\(s\) \['nope'\]; allowed: clip, ntxent"):
        gradbias.loss_specs(["clip", "nope"])
    with pytest.raises(ValueError, match="losses must be a non-empty list"):
        gradbias.loss_specs("clip")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(dataset="digits_captions"), "dataset must be one of synthetic, digits_views"),
        (dict(batch_sizes=[4, 300]), r"batch_sizes must be integers in \[2, N=256\]"),
        (dict(temperature=0.0), "temperature must be a number > 0"),
        (dict(bias_repeats=1), "bias_repeats must be an integer >= 2"),
        (dict(mode="nope"), "mode must be one of monte_carlo, exact"),
        (dict(floor_groups=0), "floor_groups must be an integer >= 2"),
        (dict(model_size="huge"), "model size must be one of"),
        (dict(losses=["nope"]), "unknown loss name 'nope'"),
    ],
)
def test_validate_gradbias_rejects_bad_input_before_training(kwargs, message):
    with pytest.raises(ValueError, match=message):
        gradbias.validate_gradbias(**kwargs)


def test_run_gradbias_stores_tables_and_reuses_a_complete_run(tmp_path, monkeypatch):
    from workbench.store.runs import load_run

    kwargs = dict(
        losses=["clip", "bayes-point"],
        batch_sizes=[4, 32],
        repeats=3,
        bias_repeats=5,
        dataset_params={"num_samples": 32},
        pretrain_steps=2,
        run_id="gb",
        root=tmp_path,
    )
    table = gradbias.run_gradbias(**kwargs)
    run = load_run("gb", root=tmp_path)
    assert run.is_complete and {"gradbias", "gradbias_samples"} <= set(run.tables)
    assert run.config["losses"]["bayes-point"] == {"name": "bayes", "shape": math.inf, "temperature": 0.1}
    assert len(run.table("gradbias_samples")) == (1 + 2) * 2 * 3  # (clip + bayes cold/warm) x B x repeats

    def no_measuring(*args, **kwargs):
        raise AssertionError("a complete run must not be measured again")

    monkeypatch.setattr(gradbias, "measure", no_measuring)
    again = gradbias.run_gradbias(**kwargs)
    pd.testing.assert_frame_equal(again, table)
    assert load_run("gb", root=tmp_path).is_complete


def test_full_gradient_chunks_even_a_loss_built_naive(data):
    naive = build_loss("clip", implementation="naive")
    chunked = gradbias._with_chunking(naive, 8)
    assert (chunked.chunk_size, chunked.implementation) == (8, "auto")
    assert (naive.chunk_size, naive.implementation) == (None, "naive")  # the caller's loss is untouched
    x_a, x_b = data
    model = tiny_model()
    assert_vectors_close(
        gradbias.full_gradient(model, x_a, x_b, naive, chunk_size=5),
        gradbias.full_gradient(model, x_a, x_b, build_loss("clip"), chunk_size=None),
    )


# --- telling bias from noise ----------------------------------------------------------------------------
def test_batch_groups():
    groups, method = gradbias.batch_groups(N, 4, "monte_carlo", 10, 4, seed=0)
    assert method == "monte_carlo" and [len(g) for g in groups] == [2, 3, 3, 2]
    assert torch.equal(groups[1][0], gradbias._batch_index(N, 4, 1, 2))  # the Monte-Carlo batches as before
    groups, method = gradbias.batch_groups(N, 30, "exact", 1000, 4, seed=0)
    assert method == "enumerated" and len(groups) == 1 and len(groups[0]) == math.comb(N, 30)
    assert len({tuple(b.tolist()) for b in groups[0]}) == math.comb(N, 30)
    groups, method = gradbias.batch_groups(N, 5, "exact", 60, 4, seed=0)
    assert method == "partitions" and len(groups) == 60 // (N // 5)
    for group in groups:  # N // B disjoint batches: each sample at most once, N mod B left out
        rows = torch.cat(group)
        assert len(group) == N // 5 and rows.unique().numel() == rows.numel() == N - N % 5


def test_exact_mode_enumerates_every_batch(data):
    x_a, x_b = data
    model = tiny_model()
    table = gradbias.measure(model, x_a, x_b, ["clip"], [N - 1], repeats=2, bias_repeats=N, mode="exact")
    row = table.iloc[0]
    assert row.method == "enumerated" and row.bias_repeats == N and row.bias_floor == 0.0 and row.resolved
    g_star = gradbias.full_gradient(model, x_a, x_b, build_loss("clip"))
    loss = build_loss("clip")
    mean = torch.zeros_like(g_star)
    for left_out in range(N):
        index = torch.tensor([i for i in range(N) if i != left_out])
        mean += naive_gradient(model, x_a[index], x_b[index], loss)[0] / N
    assert row.bias_raw == pytest.approx(float((mean - g_star).norm()), rel=1e-4)
    assert row.bias == row.bias_raw and row.bias > 0


@pytest.fixture(scope="module")
def oracle_tables(data):
    x_a, x_b = data
    oracle = {"name": "bayes", "shape": math.inf, "estimator": "exact"}
    exact = {
        "clip": "clip",
        "oracle": oracle,
        "bank": {"name": "bayes", "shape": 1.0, "estimator": "bank"},
        "running": {"name": "bayes", "shape": math.inf, "estimator": "running", "gamma": 0.5},
    }
    kwargs = dict(batch_sizes=[4], repeats=10, bias_repeats=200, floor_groups=20)
    return {
        mode: gradbias.measure(tiny_model(), x_a, x_b, losses, mode=mode, **kwargs).set_index(
            ["loss", "state"]
        )
        for mode, losses in (("exact", exact), ("monte_carlo", {"clip": "clip", "oracle": oracle}))
    }


def test_the_oracle_reads_zero_in_exact_mode(oracle_tables):
    table = oracle_tables["exact"]
    for label in ("oracle", "bank"):
        for state in ("cold", "warm"):
            if (label, state) == ("bank", "cold"):  # an empty bank: the batch estimate, by partitions
                assert table.loc[(label, state)].method == "partitions"
                continue
            row = table.loc[(label, state)]
            assert row.method == "closed_form" and row.bias_floor == 0.0, (label, state)
            assert row.rel_bias < 1e-5, (label, state)  # float32 round-off
    running = table.loc[("running", "warm")]
    assert running.method == "closed_form" and running.rel_bias > 0.05  # 1 / (a running mean) is biased
    clip = table.loc[("clip", "stateless")]
    assert clip.method == "partitions" and clip.resolved and clip.rel_bias > 0.3


def test_the_monte_carlo_floor_covers_an_unbiased_estimator(oracle_tables):
    # The oracle's mean gradient misses g* only by sampling noise, and the batch-means floor says so.
    table = oracle_tables["monte_carlo"]
    for state in ("cold", "warm"):
        row = table.loc[("oracle", state)]
        assert row.method == "monte_carlo" and not row.resolved
        assert row.bias_raw < 3 * row.bias_floor
    clip = table.loc[("clip", "stateless")]
    assert clip.resolved and clip.bias_raw > 3 * clip.bias_floor


def test_closed_form_equals_the_enumerated_mean(data):
    x_a, x_b = data
    model = tiny_model()
    with torch.no_grad():
        z_a, z_b = model(x_a, x_b)
    loss = build_loss("bayes", num_samples=N, estimator="running", gamma=0.5)
    gradbias.warm_up(model, x_a, x_b, loss, 4, passes=4, seed=0)
    saved = copy.deepcopy(loss.state_dict())
    closed = gradbias._closed_form(model, x_a, x_b, z_a, z_b, loss, saved, None, "exact")
    assert gradbias._closed_form(model, x_a, x_b, z_a, z_b, loss, saved, None, "monte_carlo") is None
    groups, method = gradbias.batch_groups(N, N - 1, "exact", 1000, 2, seed=0)
    assert method == "enumerated"
    with loss.expected_draws():
        means, _, _ = gradbias._group_means(model, x_a, x_b, z_a, z_b, loss, saved, groups, None)
    torch.testing.assert_close(closed[0], means, rtol=1e-4, atol=1e-7)
