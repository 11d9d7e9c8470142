"""workbench.viz.downstream: the figures carry the summary's numbers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from workbench.viz.downstream import batch_size_figure, regularizer_figure


def _batch_summary() -> pd.DataFrame:
    rows = []
    for loss, offset in (("clip", 0.0), ("bayes", -0.02)):
        for b, steps in ((64, 100), (16, 400), (256, 25)):  # unsorted on purpose
            rows.append(
                {
                    "batch_size": b,
                    "loss": loss,
                    "steps": steps,
                    "zero_shot_acc_mean": 0.9 + offset + b / 10_000,
                    "zero_shot_acc_std": 0.01,
                    "linear_probe_acc_mean": 0.95 + offset,
                    "linear_probe_acc_std": math.nan if loss == "bayes" else 0.005,
                    "runs": 1 if loss == "bayes" else 3,
                }
            )
    return pd.DataFrame(rows)


def test_batch_size_figure_has_one_line_per_loss_and_metric_with_seed_error_bars():
    fig = batch_size_figure(_batch_summary())
    assert len(fig.data) == 4  # 2 losses x 2 metrics
    clip_zero = fig.data[0]
    assert clip_zero.name == "clip" and clip_zero.showlegend
    assert list(clip_zero.x) == [16, 64, 256]  # sorted by batch size
    np.testing.assert_allclose(clip_zero.y, [0.9016, 0.9064, 0.9256])
    np.testing.assert_allclose(clip_zero.error_y.array, [0.01] * 3)
    assert "3 seeds" in clip_zero.hovertext[0] and "400 steps" in clip_zero.hovertext[0]
    bayes_probe = fig.data[3]
    assert bayes_probe.name == "bayes" and not bayes_probe.showlegend
    np.testing.assert_allclose(bayes_probe.error_y.array, [0.0] * 3)  # one seed: no bar
    assert "(1 seed)" in bayes_probe.hovertext[0]
    assert fig.layout.xaxis.type == "log" and list(fig.layout.xaxis.tickvals) == [16, 64, 256]
    assert fig.layout.annotations[0].text == "zero-shot accuracy (higher is better)"


def test_regularizer_figure_bars_per_variant():
    summary = pd.DataFrame(
        {
            "variant": ["base", "bridge", "all"],
            "regularizers": ["", "bridge", "bridge+consistency"],
            "zero_shot_acc_mean": [0.97, 0.96, 0.98],
            "zero_shot_acc_std": [0.002, 0.004, 0.003],
            "centroid_gap_mean": [0.4, 0.2, 0.1],
            "centroid_gap_std": [0.01, 0.02, 0.01],
            "runs": [2, 2, 2],
        }
    )
    fig = regularizer_figure(summary, metrics=["zero_shot_acc", "centroid_gap"])
    assert [t.type for t in fig.data] == ["bar", "bar"]
    assert list(fig.data[0].x) == ["base", "bridge", "all"]
    np.testing.assert_allclose(fig.data[1].y, [0.4, 0.2, 0.1])
    np.testing.assert_allclose(fig.data[1].error_y.array, [0.01, 0.02, 0.01])
    assert fig.data[0].marker.color[0] == "#7f7f7f"  # the reference variant is grey
    low, high = fig.layout.yaxis.range  # accuracy axis zooms on the values, gap axis does not
    assert 0.9 < low < 0.958 and 0.983 < high <= 1.0
    assert fig.layout.yaxis2.range is None


@pytest.mark.parametrize(
    "build, kwargs, message",
    [
        (batch_size_figure, dict(metrics=["mean_R"]), r"summary lacks column\(s\) \['mean_R_mean'\]"),
        (batch_size_figure, dict(metrics=[]), r"metrics must name at least one metric"),
        (batch_size_figure, dict(cols=0), r"cols must be a positive integer"),
        (regularizer_figure, dict(), r"summary lacks column\(s\) \['variant'"),
    ],
)
def test_bad_input_names_the_problem(build, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build(_batch_summary(), **kwargs)
    with pytest.raises(ValueError, match="non-empty DataFrame"):
        build(pd.DataFrame())
