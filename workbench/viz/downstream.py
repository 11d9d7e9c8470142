"""Figures of downstream results across runs: accuracy against batch size, regularizer comparisons.

The builders take the ``summary`` tables that ``workbench.labs.modality`` writes (one row per grid
point, ``<metric>_mean`` and ``<metric>_std`` over seeds, ``runs`` = the number of seeds) and return
plotly figures; they never train. Error bars are one standard deviation over seeds; with a single
seed the standard deviation is undefined and no bar is drawn (the hover text says so).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from workbench.metrics.names import describe

__all__ = ["METRIC_LABELS", "batch_size_figure", "regularizer_figure"]

METRIC_LABELS: dict[str, str] = {
    "zero_shot_acc": "zero-shot accuracy",
    "linear_probe_acc": "linear-probe accuracy",
    "fewshot_5_acc": "5-shot probe accuracy",
    "mean_R": "retrieval, mean recall@{1,5,10}",
    "centroid_gap": "centroid gap ||mean image - mean text||",
    "relative_modality_gap": "relative modality gap",
    "alignment": "alignment E||x - y||^2",
    "uniformity": "uniformity (lower = more uniform)",
    "effective_rank": "effective rank",
}
_PALETTE = qualitative.D3


def _label(metric: str) -> str:
    """Subplot title: the label and which direction is better (``workbench.metrics.names``)."""
    info = describe(metric)
    label = METRIC_LABELS.get(metric, info.label)
    return f"{label} ({info.better})" if info.better else label


def _check_summary(summary: pd.DataFrame, coords: Sequence[str], metrics: Sequence[str]) -> list[str]:
    if not isinstance(summary, pd.DataFrame) or summary.empty:
        raise ValueError("summary must be a non-empty DataFrame (a summary table of workbench.labs.modality)")
    metrics = list(metrics)
    if not metrics:
        raise ValueError("metrics must name at least one metric")
    missing = [c for c in coords if c not in summary.columns]
    missing += [f"{m}_mean" for m in metrics if f"{m}_mean" not in summary.columns]
    if missing:
        have = sorted(c[: -len("_mean")] for c in summary.columns if c.endswith("_mean"))
        raise ValueError(f"summary lacks column(s) {missing}; metrics available: {have}")
    return metrics


def _std(part: pd.DataFrame, metric: str) -> np.ndarray:
    column = f"{metric}_std"
    values = part[column].to_numpy(dtype=float) if column in part.columns else np.full(len(part), math.nan)
    return np.nan_to_num(values, nan=0.0)


def _seeds(part: pd.DataFrame) -> np.ndarray:
    return part["runs"].to_numpy() if "runs" in part.columns else np.ones(len(part), dtype=int)


def _grid(metrics: list[str], cols: int) -> tuple[int, int]:
    if isinstance(cols, bool) or not isinstance(cols, int) or cols < 1:
        raise ValueError(f"cols must be a positive integer, got {cols!r}")
    cols = min(cols, len(metrics))
    return math.ceil(len(metrics) / cols), cols


def batch_size_figure(
    summary: pd.DataFrame,
    metrics: Sequence[str] = ("zero_shot_acc", "linear_probe_acc"),
    cols: int = 2,
    title: str | None = None,
) -> go.Figure:
    """Downstream metrics against batch size, one line per loss, error bars over seeds.

    Args:
        summary: the summary of ``workbench.labs.modality.batch_size_experiment`` (columns
            ``batch_size``, ``loss``, ``<metric>_mean``, ``<metric>_std``, optionally ``steps``, ``runs``).
        metrics: one subplot per metric; the x axis is the batch size on a log scale.
        cols: subplots per row.
        title: figure title.

    Raises:
        ValueError: an empty summary, missing columns (the message lists the metrics present) or bad cols.
    """
    metrics = _check_summary(summary, ("batch_size", "loss"), metrics)
    rows, cols = _grid(metrics, cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[_label(m) for m in metrics])
    losses = list(dict.fromkeys(summary["loss"]))
    for k, loss in enumerate(losses):
        part = summary[summary["loss"] == loss].sort_values("batch_size")
        color = _PALETTE[k % len(_PALETTE)]
        steps = part["steps"].to_numpy() if "steps" in part.columns else np.full(len(part), -1)
        for i, metric in enumerate(metrics):
            mean = part[f"{metric}_mean"].to_numpy(dtype=float)
            std = _std(part, metric)
            hover = [
                f"{loss}, B = {b}: {m:.4f}" + (f" ± {s:.4f} ({n} seeds)" if n > 1 else " (1 seed)")
                + (f", {t} steps" if t >= 0 else "")
                for b, m, s, n, t in zip(part["batch_size"], mean, std, _seeds(part), steps, strict=True)
            ]  # fmt: skip
            fig.add_trace(
                go.Scatter(
                    x=part["batch_size"].to_numpy(),
                    y=mean,
                    error_y={"type": "data", "array": std, "visible": True},
                    mode="lines+markers",
                    name=loss,
                    legendgroup=loss,
                    showlegend=i == 0,
                    line={"color": color},
                    marker={"color": color, "size": 8},
                    hovertext=hover,
                    hoverinfo="text",
                ),
                row=i // cols + 1,
                col=i % cols + 1,
            )
    sizes = sorted(summary["batch_size"].unique())
    fig.update_xaxes(type="log", tickvals=sizes, ticktext=[str(b) for b in sizes], title_text="batch size")
    fig.update_layout(
        title=title,
        template="plotly_white",
        height=320 * rows + 80,
        margin={"l": 10, "r": 10, "t": 60, "b": 10},
        legend={"title": {"text": "loss"}},
    )
    return fig


def regularizer_figure(
    summary: pd.DataFrame,
    metrics: Sequence[str] = ("zero_shot_acc", "linear_probe_acc", "centroid_gap", "relative_modality_gap"),
    cols: int = 2,
    title: str | None = None,
) -> go.Figure:
    """Bars of each variant's final metrics (mean over seeds, error bar = std), one subplot per metric.

    Args:
        summary: the summary of ``workbench.labs.modality.structure_experiment`` or
            ``ablation_experiment`` (a ``variant`` column, ``<metric>_mean`` / ``<metric>_std``).
        metrics: one subplot per metric.
        cols: subplots per row.
        title: figure title.

    Raises:
        ValueError: an empty summary, missing columns (the message lists the metrics present) or bad cols.
    """
    metrics = _check_summary(summary, ("variant",), metrics)
    rows, cols = _grid(metrics, cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[_label(m) for m in metrics])
    variants = summary["variant"].astype(str).tolist()
    # the reference variant (no regularizer) in grey, every regularizer in its own colour
    colors = [
        "#7f7f7f" if v in ("base", "clip") else _PALETTE[(k + 1) % len(_PALETTE)]
        for k, v in enumerate(variants)
    ]
    seeds = _seeds(summary)
    for i, metric in enumerate(metrics):
        mean = summary[f"{metric}_mean"].to_numpy(dtype=float)
        std = _std(summary, metric)
        fig.add_trace(
            go.Bar(
                x=variants,
                y=mean,
                error_y={"type": "data", "array": std, "visible": True},
                marker_color=colors,
                name=_label(metric),
                showlegend=False,
                hovertext=[
                    f"{v}: {m:.4f}" + (f" ± {s:.4f} ({n} seeds)" if n > 1 else " (1 seed)")
                    for v, m, s, n in zip(variants, mean, std, seeds, strict=True)
                ],
                hoverinfo="text",
            ),
            row=i // cols + 1,
            col=i % cols + 1,
        )
        finite = mean[np.isfinite(mean)]
        if finite.size and metric.endswith("_acc"):
            # accuracies near the ceiling: zoom on the range the variants span, not on [0, 1]
            low = float(np.min(finite - std[np.isfinite(mean)]))
            high = float(np.max(finite + std[np.isfinite(mean)]))
            pad = max(0.01, 0.25 * (high - low))
            fig.update_yaxes(
                range=[max(0.0, low - pad), min(1.0, high + pad)], row=i // cols + 1, col=i % cols + 1
            )
    fig.update_layout(
        title=title,
        template="plotly_white",
        height=320 * rows + 80,
        margin={"l": 10, "r": 10, "t": 60, "b": 10},
    )
    return fig
