"""The one-parameter toy: theta* = 1 by construction, fixed points, the threshold, the grids' checks."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from workbench.labs.convergence import SmallBatchGrid
from workbench.labs.toy import (
    TOY_LOSSES,
    ToyGrid,
    build_toy_loss,
    global_gradient,
    global_loss,
    make_toy,
    reach_threshold,
    reached_table,
    root_of,
    train_theta,
)


def _expected_clip_gradient(problem, batch_size: int, theta: float) -> float:
    """E[g_B(theta)] of minibatch InfoNCE, exactly: the mean over every B-subset of the N samples."""
    loss = build_toy_loss(TOY_LOSSES["clip"], problem, [theta])
    grads = []
    for subset in itertools.combinations(range(problem.num_samples), batch_size):
        t = torch.tensor(theta, requires_grad=True)
        index = torch.tensor(subset)
        a, b = problem.features(t, index)
        loss(a, b, index=index).backward()
        grads.append(float(t.grad))
    return float(np.mean(grads))


def _tiny():
    # noisy views, so that the optimal weight of the fine feature is finite even for N = 8
    return make_toy(8, 0.5, coarse_noise=2.0, fine_noise=1.5, seed=0)


def test_optimum_is_one_by_construction():
    for noise in (0.0, 0.5):
        problem = make_toy(32, noise, seed=3)
        assert abs(global_gradient(problem, 1.0)) < 1e-6
        assert global_gradient(problem, 0.8) < 0 < global_gradient(problem, 1.25)
        assert global_loss(problem, 1.0) < min(global_loss(problem, 0.9), global_loss(problem, 1.1))


def test_make_toy_rejects_bad_values():
    with pytest.raises(ValueError, match="num_samples"):
        make_toy(3)
    with pytest.raises(ValueError, match="noise"):
        make_toy(16, 0.7)
    with pytest.raises(ValueError, match="fine_noise"):
        make_toy(16, 0.2, fine_noise=0.0)


def test_infonce_fixed_point_is_not_theta_star_but_the_bank_is():
    """InfoNCE's expected step (every batch enumerated) is not zero at theta* and crosses zero away
    from it; the bank E-step's expected step (closed form) is the full-data gradient, zero at theta*."""
    problem = _tiny()
    expected = {theta: _expected_clip_gradient(problem, 2, theta) for theta in (0.5, 1.0, 1.5, 2.5)}
    # below zero at theta* (the full-data gradient is 0 there), so InfoNCE keeps raising theta past
    # it, and zero between 1.0 and 1.5: its fixed point is not theta*
    assert expected[1.0] < -0.05 and expected[0.5] < 0 < expected[1.5] < expected[2.5]
    for label in ("bayes-point", "bayes"):
        holder = [1.0]
        loss = build_toy_loss({**TOY_LOSSES[label], "estimator": "bank"}, problem, holder)
        a, b = problem.features(torch.tensor(1.0))
        loss(a, b, index=torch.arange(8))  # fills the bank at theta = 1
        t = torch.tensor(1.0, requires_grad=True)
        a, b = problem.features(t)
        loss.expected_step_objective(a, b).backward()
        assert abs(float(t.grad)) < 1e-4, label  # the bank's fixed point is theta* (float32 round-off)
        assert abs(float(t.grad) - global_gradient(problem, 1.0)) < 1e-4


@pytest.mark.slow
def test_bias_mode_settles_at_the_infonce_fixed_point():
    """Partition-averaged training of minibatch InfoNCE ends where its exact expected step is zero."""
    problem = _tiny()
    thetas = np.linspace(0.8, 2.0, 13)
    curve = {"theta": thetas, "mean": [_expected_clip_gradient(problem, 2, t) for t in thetas]}
    import pandas as pd

    root = root_of(pd.DataFrame(curve))
    assert math.isfinite(root) and abs(root - 1.0) > 0.05
    end = train_theta(
        problem,
        TOY_LOSSES["clip"],
        2,
        steps=300,
        lr=2.0,
        mode="bias",
        partitions=2,
        schedule="cosine",
        theta0=1.0,
    ).theta.iloc[-1]
    assert abs(end - root) < 0.25 * abs(root - 1.0)


def test_reach_threshold_sits_halfway_to_the_biased_fixed_point():
    assert reach_threshold({"clip": 1.2, "bayes": 1.0}) == pytest.approx(0.1)
    assert reach_threshold({"clip": 0.7}) == pytest.approx(0.15)
    with pytest.raises(ValueError, match="clip"):
        reach_threshold({"bayes": 1.0})
    with pytest.raises(ValueError, match="no threshold"):
        reach_threshold({"clip": 1.0})


def test_reached_table_counts_runs_inside_the_threshold():
    import pandas as pd

    bias = pd.DataFrame(
        {"noise": [0.5, 0.5], "batch_size": [4, 4], "loss": ["clip", "bayes"], "theta_mean": [1.2, 1.0]}
    )
    runs = pd.DataFrame(
        {
            "noise": 0.5,
            "batch_size": 4,
            "loss": ["clip"] * 3 + ["bayes"] * 3,
            "seed": [0, 1, 2] * 2,
            "distance": [0.2, 0.19, 0.05, 0.01, 0.3, 0.099],
        }
    )
    table = reached_table(bias, runs).set_index("loss")
    assert table.loc["clip", "reached"] == 1 and table.loc["bayes", "reached"] == 2
    assert table.loc["clip", "threshold"] == pytest.approx(0.1)


def test_train_theta_modes_and_checks():
    problem = make_toy(16, 0.25, seed=1)
    out = train_theta(problem, TOY_LOSSES["clip"], 4, steps=6, lr=0.1, mode="bias", record_every=2)
    assert list(out.step) == [0, 2, 4, 6] and out.theta.notna().all()
    out = train_theta(problem, TOY_LOSSES["bayes"], 4, steps=5, lr=0.01, record_every=5)
    assert list(out.step) == [0, 5]
    with pytest.raises(ValueError, match="mode"):
        train_theta(problem, TOY_LOSSES["clip"], 4, steps=1, lr=0.1, mode="full")
    with pytest.raises(ValueError, match="batch_size"):
        train_theta(problem, TOY_LOSSES["clip"], 5, steps=1, lr=0.1, mode="bias")


def test_grids_validate_their_fields():
    with pytest.raises(ValueError, match="mode"):
        ToyGrid(mode="fast")
    with pytest.raises(ValueError, match="losses"):
        ToyGrid(losses=("clip", "moco"))
    with pytest.raises(ValueError, match="batch_sizes"):
        ToyGrid(mode="bias", num_samples=64, batch_sizes=(5,))
    with pytest.raises(ValueError, match="noise_levels"):
        ToyGrid(noise_levels=(0.9,))
    assert len(ToyGrid(seeds=2, noise_levels=(0.0, 0.5)).jobs()) == 2 * 2 * 1 * 2
    with pytest.raises(ValueError, match="tasks"):
        SmallBatchGrid(tasks=("audio",))
    with pytest.raises(ValueError, match="losses"):
        SmallBatchGrid(losses=("bayes-exact",))
    with pytest.raises(ValueError, match="batch_sizes"):
        SmallBatchGrid(batch_sizes=(4, 2048))
    points = SmallBatchGrid(tasks=("views",), batch_sizes=(4,), losses=("bayes-running",)).points()
    assert points[0].config.loss_params == {"estimator": "running", "temperature": 0.1}


def test_report_renders_the_toy_tables(tmp_path):
    import pandas as pd

    from workbench.store.report import render
    from workbench.store.runs import RunWriter

    runs = pd.DataFrame(
        {
            "noise": 0.5,
            "batch_size": 4,
            "loss": ["clip", "clip", "bayes", "bayes"],
            "seed": [0, 1, 0, 1],
            "theta": [1.2, 1.19, 1.0, 2.0],
            "distance": [0.2, 0.19, 0.0, 1.0],
            "excess": 0.01,
            "grad_norm": 0.1,
        }
    )
    curves = pd.DataFrame(
        {
            "theta": [1.0, 1.0],
            "mean": [-0.01, 0.3],
            "sem": [0.001, 1.0],
            "step_std": [0.04, 24.0],
            "global": [0.0, 0.0],
            "noise": 0.5,
            "batch_size": 4,
            "loss": ["clip", "bayes"],
        }
    )
    fixed = pd.DataFrame(
        {"noise": [0.5, 0.5], "batch_size": 4, "loss": ["clip", "bayes"], "fixed_point": [1.2, None]}
    )
    for run_id, tables in (
        ("toy-summary", {"runs": runs}),
        ("toy-curves", {"curves": curves, "fixed_points": fixed}),
        ("toy-sweep-a-summary", {"runs": runs}),
    ):
        with RunWriter.create({"lr": 0.1, "steps": 300}, run_id=run_id, root=tmp_path) as writer:
            for name, table in tables.items():
                writer.save_table(name, table)
            writer.finish({})
    text = render(
        "<!-- table:toy -->\n<!-- /table -->\n<!-- table:toysweep -->\n<!-- /table -->\n", root=tmp_path
    )
    assert "| 0.5 | 4 | clip | 1.2 |" in text and "1/2 (< 0.1)" in text  # bayes: 1 of 2 within 0.1
    assert "unresolved" in text and "| 0.1 | 300 | 0.5 | 4 | bayes | 1/2 |" in text


def test_toy_figures_draw_every_run_and_refuse_missing_settings():
    import pandas as pd

    from workbench.viz.convergence import signal_and_noise, theta_trajectories

    rows = [
        {"step": step, "theta": 0.5 + step / 10, "noise": 0.5, "batch_size": 4, "loss": loss, "seed": seed}
        for loss in ("clip", "bayes")
        for seed in range(3)
        for step in (0, 5, 10)
    ]
    fig = theta_trajectories(pd.DataFrame(rows), 0.5, threshold=0.05, fixed_points={"clip": 1.1})
    lines = [trace for trace in fig.data if trace.legendgroup in ("clip", "bayes")]
    assert len(lines) == 2 * 3 + 1  # every run, and clip's fixed point
    assert {trace.line.color for trace in lines} == {"#d62728", "#1f77b4"}  # red InfoNCE, blue decomposable
    with pytest.raises(ValueError, match="no trajectories"):
        theta_trajectories(pd.DataFrame(rows), 0.25, 4)
    curves = pd.DataFrame(
        {
            "theta": [0.8, 1.0] * 2,
            "mean": [-0.1, 0.0, -0.2, 0.1],
            "sem": 0.01,
            "step_std": [0.04, 0.04, 20.0, 24.0],
            "global": [-0.1, 0.0] * 2,
            "noise": 0.5,
            "loss": ["clip"] * 2 + ["bayes"] * 2,
        }
    )
    fig = signal_and_noise(curves, 0.5)
    assert len(fig.data) == 2 + 2 * 2 and fig.layout.yaxis2.type == "log"
    with pytest.raises(ValueError, match="lacks the column"):
        signal_and_noise(curves.drop(columns="sem"), 0.5)


def test_summarize_steps_reads_the_shape_of_a_skewed_step():
    from workbench.labs.toy import summarize_steps

    # 99 small steps raising theta (g = -1) and one large one pulling it back (g = +99): mean 0
    steps = np.array([-1.0] * 99 + [99.0])
    summary = summarize_steps(steps, full_gradient=0.0)
    assert summary["mean"] == pytest.approx(0.0) and summary["median"] == -1.0
    assert summary["up"] == pytest.approx(0.99) and summary["top1_share"] == pytest.approx(1.0)
    assert summary["batches"] == 100 and summary["global"] == 0.0


def test_step_distribution_is_the_partitions_steps_and_the_exact_estep_is_unbiased():
    from workbench.labs.toy import expected_gradient, step_distribution

    problem = make_toy(16, 0.5, seed=1)
    clip = step_distribution(problem, TOY_LOSSES["clip"], 4, 1.3, partitions=5, seed=2)
    assert clip.shape == (5 * 4,)
    # the same partitions as expected_gradient's (same seed): the same mean
    curve = expected_gradient(problem, TOY_LOSSES["clip"], 4, [1.3], partitions=5, seed=2)
    assert clip.mean() == pytest.approx(float(curve["mean"].iloc[0]), rel=1e-12)
    # exact E-step without a draw: the mean step is the full-data gradient (sampling error only)
    exact = step_distribution(problem, TOY_LOSSES["bayes-exact-point"], 4, 1.3, partitions=200, seed=0)
    sem = exact.std(ddof=1) / math.sqrt(len(exact))
    assert abs(exact.mean() - global_gradient(problem, 1.3)) < 4 * sem


def test_step_distribution_is_stored_reused_rendered_and_drawn(tmp_path):
    from workbench.labs.toy import store_step_distribution
    from workbench.store.report import render
    from workbench.store.runs import load_run
    from workbench.viz.convergence import step_skew

    grid = ToyGrid(
        noise_levels=(0.5,), losses=("clip", "bayes-exact-point"), num_samples=16, root=str(tmp_path)
    )
    summary = store_step_distribution(grid, thetas=(1.0,), partitions=3)
    assert list(summary.loss) == ["clip", "bayes-exact-point"] and (summary.batches == 12).all()
    steps = load_run("toy-steps", root=tmp_path).table("steps")
    assert len(steps) == 2 * 12 and steps["global"].abs().max() < 1e-5  # theta* = 1
    assert store_step_distribution(grid, thetas=(1.0,), partitions=3).equals(summary)  # reused
    text = render("<!-- table:toysteps -->\n<!-- /table -->\n<!-- table:other -->\nkept\n<!-- /table -->\n",
                  root=tmp_path, only={"toysteps"})  # fmt: skip
    assert "| 0.5 | 1 | clip |" in text and "kept" in text
    fig = step_skew(steps, 0.5, 1.0)
    assert [a.text.split(":")[0] for a in fig.layout.annotations[:2]] == [
        "InfoNCE (clip)",
        "decomposable (exact E-step, u = 1/Z)",
    ]
    assert "% of steps raise θ" in fig.layout.annotations[0].text and fig.layout.yaxis.type == "log"
    with pytest.raises(ValueError, match="no steps"):
        step_skew(steps, 0.25, 1.0)
