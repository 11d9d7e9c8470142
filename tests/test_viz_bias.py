"""Figures of the gradient-bias lab and the convergence experiment (workbench.viz.bias)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from workbench.viz import bias as vb

NORM = {"clip": 2.0, "bayes": 4.0}


def row(loss, state, batch_size, bias, floor, variance, repeats=5):
    """One gradbias row with ||g*|| = NORM[loss]; bias_raw chosen so bias = sqrt(raw^2 - floor^2)."""
    return {
        "loss": loss,
        "state": state,
        "batch_size": batch_size,
        "bias": bias,
        "bias_raw": math.sqrt(bias**2 + floor**2),
        "rel_bias": bias / NORM[loss],
        "variance": variance,
        "mse": bias**2 + variance,
        "cosine": 0.9,
        "jensen_gap": 0.1,
        "bias_floor": floor,
        "repeats": repeats,
        "bias_repeats": 101,
    }


@pytest.fixture
def table() -> pd.DataFrame:
    return pd.DataFrame(
        [
            row("clip", "stateless", 4, 1.0, 0.1, 2.0),
            row("clip", "stateless", 16, 0.5, 0.2, 1.0),
            row("clip", "stateless", 64, 0.0, 0.3, 0.5),
            row("bayes", "cold", 4, 0.8, 0.5, 8.0),
            row("bayes", "cold", 16, 0.4, 0.1, 3.0),
            row("bayes", "warm", 4, 1.2, 0.5, 9.0),
            row("bayes", "warm", 16, 0.6, 0.1, 4.0),
        ]
    )


def traces(fig, kind):
    return [t for t in fig.data if t.meta["kind"] == kind]


def test_bands_follow_the_documented_formulas(table):
    bands = vb.bias_bands(table, "bias")
    np.testing.assert_allclose(bands.lower, [0.9, 0.3, 0.0, 0.3, 0.3, 0.7, 0.5])
    np.testing.assert_allclose(bands.upper, [1.1, 0.7, 0.3, 1.3, 0.5, 1.7, 0.7])

    # ||g*|| comes back from bias / rel_bias, also for the clip row whose bias is 0.
    rel = vb.bias_bands(table, "rel_bias")
    np.testing.assert_allclose(rel.lower, [0.45, 0.15, 0.0, 0.075, 0.075, 0.175, 0.125])
    np.testing.assert_allclose(rel.upper.iloc[2], 0.3 / 2.0)

    spread = math.sqrt(2 / 4)  # repeats = 5
    var = vb.bias_bands(table, "variance")
    np.testing.assert_allclose(var.upper, table.variance * (1 + spread))
    np.testing.assert_allclose(var.lower, table.variance * (1 - spread))

    mse = vb.bias_bands(table, "mse")
    np.testing.assert_allclose(mse.upper.iloc[0], 1.1**2 + 2.0 * (1 + spread))
    np.testing.assert_allclose(mse.lower.iloc[0], 0.9**2 + 2.0 * (1 - spread))
    np.testing.assert_allclose(mse.value, table.mse)


def test_bias_curves_draw_one_line_and_one_band_per_loss_and_state(table):
    fig = vb.bias_curves(table, "bias")
    lines = traces(fig, "line")
    assert [t.name for t in lines] == ["clip", "bayes (cold)", "bayes (warm)"]
    assert len(traces(fig, "band")) == 3
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"

    clip = lines[0]
    np.testing.assert_array_equal(clip.x, [4, 16, 64])
    # a value under its noise floor (here an exact zero, which a log axis cannot show) is drawn at the
    # floor, an upper bound, with an open marker; the hover gives the measured value
    assert clip.y.tolist() == [1.0, 0.5, 0.3] and list(clip.customdata) == [1.0, 0.5, 0.0]
    assert list(clip.marker.symbol) == ["circle", "circle", "circle-open"]

    band = traces(fig, "band")[0]
    np.testing.assert_array_equal(band.x, [4, 16, 64, 64, 16, 4])
    # upper ends, then lower ends reversed; the lower end 0 is drawn at the lowest positive value (0.3)
    np.testing.assert_allclose(band.y, [1.1, 0.7, 0.3, 0.3, 0.3, 0.9])
    assert band.fill == "toself"


def test_linear_metrics_and_no_band(table):
    fig = vb.bias_curves(table, "cosine")
    assert fig.layout.yaxis.type == "linear"
    assert traces(fig, "band") == []
    fig = vb.bias_curves(table, "rel_bias", band=False, losses=["bayes"], states=["warm"], log_x=False)
    assert [t.name for t in fig.data] == ["bayes (warm)"]
    np.testing.assert_allclose(fig.data[0].y, [0.3, 0.15])
    assert fig.layout.xaxis.type == "linear"


def test_overlaying_runs(table):
    other = table.assign(bias=table.bias * 2)
    stacked = vb.label_runs({"run-a": table, "run-b": other})
    fig = vb.bias_curves(stacked, "bias", run="run", losses=["clip"])
    lines = traces(fig, "line")
    assert [t.name for t in lines] == ["clip · run-a", "clip · run-b"]
    assert lines[0].marker.symbol != lines[1].marker.symbol
    assert lines[0].line.color == lines[1].line.color
    np.testing.assert_allclose(lines[1].y[:2], [2.0, 1.0])


def test_bad_arguments_name_the_parameter(table):
    with pytest.raises(ValueError, match="metric must be one of"):
        vb.bias_curves(table, "nope")
    with pytest.raises(ValueError, match="losses"):
        vb.bias_curves(table, losses=["nope"])
    with pytest.raises(ValueError, match="batch_size must be one of 4, 16, 64"):
        vb.batch_bars(table, 8)
    with pytest.raises(ValueError, match="state must be one of cold, warm"):
        vb.decomposition(table, "bayes", "stateless")
    with pytest.raises(ValueError, match="lacks column"):
        vb.bias_curves(table.drop(columns="bias"), "bias")


def test_decomposition_and_bars(table):
    fig = vb.decomposition(table, "bayes")
    assert [t.name for t in fig.data] == ["bias^2", "variance", "MSE"]
    np.testing.assert_allclose(fig.data[0].y, [1.44, 0.36])  # warm by default
    np.testing.assert_allclose(fig.data[2].y, fig.data[0].y + fig.data[1].y)

    bars = vb.batch_bars(table, 16, "bias")
    assert list(bars.data[0].x) == ["clip", "bayes (cold)", "bayes (warm)"]
    np.testing.assert_allclose(bars.data[0].error_y.array, [0.2, 0.1, 0.1])
    np.testing.assert_allclose(bars.data[0].error_y.arrayminus, [0.2, 0.1, 0.1])


def test_batch_distribution_boxes():
    samples = pd.DataFrame(
        {
            "loss": ["clip"] * 3 + ["bayes"] * 3,
            "state": ["stateless"] * 3 + ["warm"] * 3,
            "batch_size": [4] * 6,
            "repeat": [0, 1, 2] * 2,
            "cosine": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
            "rel_error": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        }
    )
    fig = vb.batch_distribution(samples, 4)
    assert [t.name for t in fig.data] == ["clip", "bayes (warm)"]
    np.testing.assert_allclose(fig.data[1].y, [0.4, 0.5, 0.6])
    assert vb.batch_distribution(samples, 4, "rel_error").layout.yaxis.type == "log"


@pytest.fixture
def curves() -> pd.DataFrame:
    rows = []
    for loss, finals in {"clip": [0.95, 0.97], "bayes": [0.99, 0.999]}.items():
        for seed, final in enumerate(finals):
            for step, progress in zip([0, 10, 20], [0.0, final / 2, final], strict=True):
                rows.append(
                    {
                        "noise": 0.25,
                        "batch_size": 4,
                        "loss": loss,
                        "seed": seed,
                        "step": step,
                        "progress": progress,
                    }
                )
    return pd.DataFrame(rows)


def test_progress_bands_mean_and_range(curves):
    fig = vb.progress_bands(curves, 0.25, 4, gap=False)
    lines = traces(fig, "line")
    assert [t.name for t in lines] == ["clip (2 seeds)", "bayes (2 seeds)"]
    np.testing.assert_allclose(lines[0].y, [0.0, 0.48, 0.96])
    band = traces(fig, "band")[0]
    np.testing.assert_allclose(band.y, [0.0, 0.485, 0.97, 0.95, 0.475, 0.0])

    gap = vb.progress_bands(curves, 0.25, 4, band="std")
    assert gap.layout.yaxis.type == "log"
    np.testing.assert_allclose(traces(gap, "line")[1].y[-1], 1 - 0.9945)
    sd = np.std([0.01, 0.001], ddof=1)
    np.testing.assert_allclose(traces(gap, "band")[1].y[2], 1 - 0.9945 + sd)
    with pytest.raises(ValueError, match="noise must be one of"):
        vb.progress_bands(curves, 0.5, 4)


def test_reach_fraction_and_final_progress(curves):
    fig = vb.reach_fraction(curves, 0.25, 4, threshold=0.99)
    by_loss = {t.name: t.y.tolist() for t in fig.data}
    assert by_loss == {"clip": [0.0, 0.0, 0.0], "bayes": [0.0, 0.0, 1.0]}
    assert vb.reach_fraction(curves, 0.25, 4, threshold=0.995).data[1].y.tolist() == [0.0, 0.0, 0.5]
    with pytest.raises(ValueError, match="threshold"):
        vb.reach_fraction(curves, 0.25, 4, threshold=0)

    finals = curves[curves.step == 20].assign(kind="run")
    fig = vb.final_progress(finals, 4)
    means = {t.meta["loss"]: t.y.tolist() for t in fig.data if t.meta["kind"] == "mean"}
    np.testing.assert_allclose(means["bayes"], [0.9945])
    np.testing.assert_allclose(means["clip"], [0.96])


@pytest.fixture
def full_batch(table) -> pd.DataFrame:
    """The fixture table plus B = N rows whose bias, floor and variance are float round-off."""
    extra = [row("clip", "stateless", 256, 6e-14, 1e-15, 1e-28), row("bayes", "warm", 256, 0.05, 0.01, 0.1)]
    return pd.concat([table, pd.DataFrame(extra)], ignore_index=True)


def test_a_round_off_value_is_marked_not_put_on_the_log_axis(full_batch):
    fig = vb.bias_curves(full_batch, "rel_bias")
    clip = next(t for t in traces(fig, "line") if t.meta["loss"] == "clip")
    assert np.isnan(clip.y[-1])  # B = 256 is not a point of the line
    marks = traces(fig, "round_off")
    assert len(marks) == 1 and list(marks[0].x) == [256] and marks[0].meta["loss"] == "clip"
    np.testing.assert_allclose(marks[0].customdata, [3e-14])
    # The axis spans the measured values (lowest band end 0.025), not six more decades of round-off.
    low, high = fig.layout.yaxis.range
    assert -2.5 < low < np.log10(0.025) and high > np.log10(0.55)
    assert marks[0].y[0] < 0.025
    # bayes at B = 256 is small but measured: it stays on the line
    bayes = next(t for t in traces(fig, "line") if t.meta["state"] == "warm")
    np.testing.assert_allclose(bayes.y[-1], 0.05 / 4.0)


def test_bands_stop_at_the_noise_floor_on_a_log_axis(table):
    band = traces(vb.bias_curves(table, "bias"), "band")[1]  # bayes cold: bias 0.8, 0.4; floor 0.5, 0.1
    np.testing.assert_allclose(band.y, [1.3, 0.5, 0.3, 0.5])  # lower end max(bias - floor, floor)
    linear = traces(vb.bias_curves(table, "bias", log_y=False), "band")[1]
    np.testing.assert_allclose(linear.y, [1.3, 0.5, 0.3, 0.3])


def test_many_losses_get_one_panel_per_family():
    rows = [row("clip", "stateless", b, 1.0 / b, 0.01, 1.0) for b in (4, 16)]
    rows += [{**r, "loss": name} for name in ("ntxent", "dcl", "siglip", "sogclr", "bayes", "moco")
             for r in rows[:2]]  # fmt: skip
    NORM.update({name: 2.0 for name in ("ntxent", "dcl", "siglip", "sogclr", "bayes", "moco")})
    fig = vb.bias_curves(pd.DataFrame(rows), "rel_bias")
    titles = [a.text for a in fig.layout.annotations]
    assert titles == list(vb.LOSS_FAMILIES)
    by_loss = {t.meta["loss"]: t.xaxis for t in traces(fig, "line")}
    assert by_loss["clip"] == by_loss["dcl"] == "x" and by_loss["siglip"] == "x2" and by_loss["bayes"] == "x3"
    assert len(vb.bias_curves(pd.DataFrame(rows[:4]), "rel_bias").layout.annotations) == 0


def test_overview_shows_a_few_losses_in_the_warm_state(table):
    fig = vb.bias_overview(table)
    assert [t.name for t in traces(fig, "line")] == ["clip", "bayes (warm)"]
    assert "warm state" in fig.layout.title.text and "relative bias" in fig.layout.yaxis.title.text
    assert "lower is better" in fig.layout.yaxis.title.text
    cold = vb.bias_overview(table, state="cold", losses=["bayes"])
    assert [t.name for t in traces(cold, "line")] == ["bayes (cold)"]
    assert "%{customdata:.3g}" in traces(cold, "line")[0].hovertemplate
    with pytest.raises(ValueError, match="state must be one of warm, cold, both"):
        vb.bias_overview(table, state="hot")
    with pytest.raises(ValueError, match="losses"):
        vb.bias_overview(table, losses=["nope"])


def test_bias_table_has_three_significant_digits_and_no_round_off_noise(full_batch):
    text = vb.bias_table(full_batch)
    assert list(text.columns) == ["loss", "state", "B=4", "B=16", "B=64", "B=256"]
    clip = text.set_index(["loss", "state"]).loc[("clip", "stateless")]
    assert clip["B=4"] == "0.500 ± 0.0500" and clip["B=256"] == "≈ 0 (round-off)"
    assert "e-14" not in text.to_string()
