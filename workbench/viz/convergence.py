"""Figures of the one-parameter toy (``workbench.labs.toy``): trajectories and the bias/noise mechanism.

Both builders take the tables the toy lab stores (``trajectories``; :func:`expected_gradient`'s) and
return a plotly ``go.Figure``; neither trains or computes gradients.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

# The article's colours: the decomposable loss in blue, InfoNCE in red; other estimators in grey tones.
TOY_COLORS = {
    "clip": "#d62728",
    "bayes": "#1f77b4",
    "bayes-point": "#17becf",
    "bayes-exact": "#2ca02c",
    "bayes-exact-point": "#98df8a",
    "bayes-running": "#9467bd",
    "sogclr": "#ff7f0e",
}
TOY_NAMES = {
    "clip": "InfoNCE (clip)",
    "bayes": "decomposable (bayes, bank E-step)",
    "bayes-point": "decomposable (bank, u = 1/R)",
    "bayes-exact": "decomposable (exact E-step)",
    "bayes-exact-point": "decomposable (exact E-step, u = 1/Z)",
    "bayes-running": "decomposable (running E-step)",
    "sogclr": "SogCLR",
}


def _check_columns(table: pd.DataFrame, needed: Sequence[str], what: str) -> None:
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise ValueError(f"{what} lacks the column(s) {missing}; it has {list(table.columns)}")


def theta_trajectories(
    trajectories: pd.DataFrame,
    noise: float,
    batch_size: int | None = None,
    losses: Sequence[str] = ("clip", "bayes"),
    threshold: float | None = None,
    fixed_points: dict[str, float] | None = None,
) -> go.Figure:
    """theta_t against steps, one line per run (the article's figure): red InfoNCE, blue decomposable.

    Args:
        trajectories: the toy lab's ``trajectories`` table (step, theta, noise, batch_size, loss, seed).
        noise: the noise level drawn.
        batch_size: the batch size drawn (default: the only one in the table).
        losses: the loss labels drawn, in this order.
        threshold: when given, the band theta* ± threshold ("reached the optimum") is shaded.
        fixed_points: loss label -> bias-mode fixed point, drawn as dotted lines in the loss's colour.
    """
    _check_columns(trajectories, ["step", "theta", "noise", "batch_size", "loss", "seed"], "trajectories")
    rows = trajectories[np.isclose(trajectories.noise, noise)]
    if batch_size is None:
        sizes = sorted(rows.batch_size.unique())
        if len(sizes) != 1:
            raise ValueError(f"batch_size must be given: noise {noise} has the batch sizes {sizes}")
        batch_size = int(sizes[0])
    rows = rows[rows.batch_size == batch_size]
    if rows.empty:
        raise ValueError(f"no trajectories at noise {noise} and batch_size {batch_size}")
    fig = go.Figure()
    last = float(rows.step.max())
    if threshold is not None:
        fig.add_hrect(y0=1 - threshold, y1=1 + threshold, fillcolor="rgba(0,160,0,0.12)", line_width=0)
    fig.add_hline(y=1.0, line={"color": "black", "width": 1})
    for loss in losses:
        part = rows[rows.loss == loss]
        color = TOY_COLORS.get(loss, "#7f7f7f")
        for i, (seed, run) in enumerate(part.groupby("seed")):
            fig.add_trace(
                go.Scatter(
                    x=run.step,
                    y=run.theta,
                    mode="lines",
                    line={"color": color, "width": 1.2},
                    opacity=0.7,
                    name=f"{TOY_NAMES.get(loss, loss)} ({part.seed.nunique()} runs)",
                    legendgroup=loss,
                    showlegend=i == 0,
                    hovertemplate=f"{loss}, seed {seed}<br>step %{{x}}<br>theta %{{y:.3g}}",
                )
            )
        if fixed_points and loss in fixed_points:
            fig.add_trace(
                go.Scatter(
                    x=[0, last],
                    y=[fixed_points[loss]] * 2,
                    mode="lines",
                    line={"color": color, "dash": "dot", "width": 2},
                    legendgroup=loss,
                    name=f"{loss} fixed point {fixed_points[loss]:.3g}",
                )
            )
    band = f"; green band: theta* ± {threshold:.3g} (reached)" if threshold is not None else ""
    fig.update_layout(
        title=f"noise {noise:g}, B = {batch_size}: theta_t of every run (theta* = 1, black){band}",
        xaxis_title="SGD step",
        yaxis_title="theta (weight of the fine feature; 1 = optimum)",
        template="plotly_white",
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def signal_and_noise(
    curves: pd.DataFrame, noise: float, losses: Sequence[str] = ("clip", "bayes")
) -> go.Figure:
    """The mechanism: each estimator's expected step (bias) and one step's spread (noise) against theta.

    Left: E[g_B(theta)] per loss (its zero is the estimator's fixed point) and the full-data gradient
    (black). Right, log axis: the standard deviation of one minibatch step, with |full-data gradient|
    for scale; lower is better.

    Args:
        curves: rows of ``workbench.labs.toy.expected_gradient`` with ``noise`` and ``loss`` columns.
        noise: the noise level drawn.
        losses: the loss labels drawn.
    """
    _check_columns(curves, ["theta", "mean", "sem", "step_std", "global", "noise", "loss"], "curves")
    rows = curves[np.isclose(curves.noise, noise)]
    if rows.empty:
        raise ValueError(f"no curves at noise {noise}")
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("expected step E[g_B] (zero = fixed point)", "std of one step (log)")
    )
    reference = rows.drop_duplicates("theta").sort_values("theta")
    fig.add_trace(
        go.Scatter(
            x=reference.theta, y=reference["global"], name="full-data gradient", line={"color": "black"}
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=reference.theta,
            y=reference["global"].abs(),
            name="|full-data gradient|",
            line={"color": "black", "dash": "dot"},
        ),
        row=1,
        col=2,
    )
    for loss in losses:
        part = rows[rows.loss == loss].sort_values("theta")
        color = TOY_COLORS.get(loss, "#7f7f7f")
        name = TOY_NAMES.get(loss, loss)
        fig.add_trace(
            go.Scatter(
                x=part.theta,
                y=part["mean"],
                error_y={"array": 2 * part["sem"], "visible": True},
                name=f"{name}: mean ± 2 s.e.",
                line={"color": color},
            ),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=part.theta, y=part.step_std, name=f"{name}: step std", line={"color": color, "dash": "dash"}
            ),
            row=1,
            col=2,
        )
    fig.update_yaxes(title_text="d loss / d theta (per step)", row=1, col=1)
    fig.update_yaxes(type="log", title_text="std of d loss / d theta (lower is better)", row=1, col=2)
    fig.update_xaxes(title_text="theta (1 = optimum)")
    fig.add_vline(x=1.0, line={"color": "grey", "width": 1})
    fig.update_layout(
        title=f"Bias and noise of one step at noise {noise:g}",
        template="plotly_white",
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


def step_skew(
    steps: pd.DataFrame,
    noise: float,
    theta: float = 1.0,
    losses: Sequence[str] = ("clip", "bayes-exact-point"),
) -> go.Figure:
    """Why an unbiased step can still carry a run away: the distribution of one step at fixed theta.

    One panel per loss (each with its own x range: the decomposable step is hundreds of times wider):
    the share of minibatch steps per bin on a log axis, so the rare large steps stay visible, with the
    mean step (solid), the median step (dashed) and the full-data gradient (black, dotted). A step
    g < 0 raises theta (SGD subtracts it).

    Args:
        steps: the ``steps`` table of ``workbench.labs.toy.store_step_distribution``.
        noise: the noise level drawn.
        theta: the fixed theta drawn (1 is the optimum).
        losses: the loss labels drawn, one panel each.
    """
    _check_columns(steps, ["noise", "loss", "theta", "step", "global"], "steps")
    rows = steps[np.isclose(steps.noise, noise) & np.isclose(steps.theta, theta)]
    losses = [loss for loss in losses if (rows.loss == loss).any()]
    if not losses:
        raise ValueError(f"no steps at noise {noise} and theta {theta} for the losses asked")
    names = [TOY_NAMES.get(loss, loss) for loss in losses]
    fig = make_subplots(rows=len(losses), cols=1, subplot_titles=names, vertical_spacing=0.2)
    full = float(rows["global"].iloc[0])
    for i, (loss, name) in enumerate(zip(losses, names, strict=True), start=1):
        values = rows[rows.loss == loss].step.to_numpy()
        color = TOY_COLORS.get(loss, "#7f7f7f")
        fig.add_trace(
            go.Histogram(
                x=values,
                nbinsx=80,
                histnorm="probability",
                marker={"color": color},
                opacity=0.75,
                name=f"{name}: share of steps",
                hovertemplate="step %{x}<br>share %{y:.3g}<extra></extra>",
            ),
            row=i,
            col=1,
        )
        mean, median, up = values.mean(), np.median(values), 100 * np.mean(values < 0)
        lines = [(mean, color, "solid", f"{name}: mean step {mean:.3g}"),
                 (median, color, "dash", f"{name}: median step {median:.3g}")]  # fmt: skip
        if i == 1:
            lines.append((full, "black", "dot", f"full-data gradient {full:.3g}"))
        else:
            fig.add_vline(x=full, line={"color": "black", "dash": "dot", "width": 1.5}, row=i, col=1)
        for x, line_color, dash, label in lines:
            fig.add_vline(x=x, line={"color": line_color, "dash": dash, "width": 2}, row=i, col=1)
            fig.add_trace(  # vlines have no legend entry: an empty trace names each one
                go.Scatter(
                    x=[None], y=[None], mode="lines", name=label, line={"color": line_color, "dash": dash}
                ),
                row=i,
                col=1,
            )
        fig.layout.annotations[i - 1].text = f"{name}: {up:.1f}% of steps raise θ"
        fig.update_yaxes(type="log", title_text="share of steps (log)", row=i, col=1)
        fig.update_xaxes(title_text="one minibatch step, d loss / d θ (< 0 raises θ)", row=i, col=1)
    fig.update_layout(
        title=f"One step at θ = {theta:g} (noise {noise:g}): the mean is the gradient, the median is not",
        template="plotly_white",
        height=330 * len(losses) + 140,
        legend={"orientation": "h", "y": -0.15},
        bargap=0.02,
    )
    return fig
