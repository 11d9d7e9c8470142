"""What the "Fusion tasks" page computes and draws, as plain functions of run configs, metrics and snapshots.

* :func:`accuracy_figure`: each reasoning task's accuracy over training, runs overlaid, one panel per task,
  the chance level dashed;
* :func:`kind_table` and :func:`kinds_figure`: accuracy per kind of question at one step (``vqa_acc/digit``
  ... as :func:`workbench.training.fusion_eval.task_metrics` logs them), grouped bars, chance marked;
* :func:`attention_map` and :func:`attention_figure`: the cross-attention a fusion snapshot keeps
  (``attn_maps``: examples x layers x tokens x (image [CLS] + patches)) over the digit it looked at.

No Streamlit here: the page (``app/app_pages/fusion_tasks.py``) lays these out, the tests call them directly.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from workbench.metrics import names
from workbench.models.fusion import attention_grid

TASKS = ("vqa", "ve", "nlvr")
#: Legend entry of the dashed chance lines.
CHANCE = "chance (uniform guess)"
#: The command that makes a fusion run, shown where the store has none.
TRAIN_COMMAND = (
    "python -m workbench.train --dataset digits_captions --model fusion --loss clip --model-size tiny "
    "--steps 300"
)
MEAN_WORD = "(mean over the text's words)"
_KIND = re.compile(r"^(vqa|ve|nlvr)_acc/(\w+)$")
_ACCURACY_AXIS = "accuracy (fraction, 0 to 1)"


# --------------------------------------------------------------------------------------------- runs
def is_fusion(config: Mapping[str, Any]) -> bool:
    """Whether a run's config trained the fusion model."""
    return config.get("model") == "fusion"


def palette(k: int) -> list[str]:
    """``k`` distinct colours, the same order as the other dashboard figures."""
    base = qualitative.D3 if k <= 10 else qualitative.Alphabet
    return [base[i % len(base)] for i in range(k)]


# --------------------------------------------------------------------------------------------- metrics
def logged_tasks(metrics: pd.DataFrame) -> list[str]:
    """Reasoning tasks whose total accuracy ``<task>_acc`` the run logged, in :data:`TASKS` order."""
    return [t for t in TASKS if f"{t}_acc" in metrics.columns and metrics[f"{t}_acc"].notna().any()]


def task_kinds(metrics: pd.DataFrame) -> dict[str, list[str]]:
    """Kinds of question per task, from the ``<task>_acc/<kind>`` columns, in logged order."""
    out: dict[str, list[str]] = {}
    for column in metrics.columns:
        if (match := _KIND.match(column)) and metrics[column].notna().any():
            out.setdefault(match[1], []).append(match[2])
    return {t: out[t] for t in TASKS if t in out}


def chance_of(metrics: pd.DataFrame, column: str) -> float | None:
    """The chance level logged as ``column`` (constant over a run), or None when not logged."""
    if column not in metrics.columns:
        return None
    values = metrics[column].dropna()
    return float(values.iloc[0]) if len(values) else None


def accuracy_figure(tables: Mapping[str, pd.DataFrame], tasks: Sequence[str] | None = None) -> go.Figure:
    """Accuracy of each reasoning task over training: one panel per task, one line per run, chance dashed.

    Args:
        tables: ``{run label: metrics}`` (``Run.metrics``: a ``step`` column and ``<task>_acc``,
            ``<task>_chance``); a run lacking a task is left out of its panel.
        tasks: Panels, in order (default: every task some run logged).

    Raises:
        ValueError: No task to draw, an unknown task, or a table without a ``step`` column.
    """
    for label, df in tables.items():
        if "step" not in df.columns:
            raise ValueError(f"table {label!r} has no 'step' column; columns: {list(df.columns)}")
    if tasks is None:
        tasks = [t for t in TASKS if any(t in logged_tasks(df) for df in tables.values())]
    tasks = list(tasks)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"tasks must be a non-empty list among {', '.join(TASKS)}; got {tasks!r}")
    fig = make_subplots(
        rows=1, cols=len(tasks), subplot_titles=[names.title(f"{t}_acc") for t in tasks], shared_yaxes=True
    )
    colors = palette(len(tables))
    chance_shown = False
    for col, task in enumerate(tasks, start=1):
        chances = set()
        for (label, df), color in zip(tables.items(), colors, strict=True):
            if task not in logged_tasks(df):
                continue
            part = df[["step", f"{task}_acc"]].dropna().sort_values("step")
            fig.add_trace(
                go.Scatter(
                    x=part["step"], y=part[f"{task}_acc"], mode="lines+markers", name=label,
                    legendgroup=label, showlegend=label not in _names(fig),
                    line={"color": color}, marker={"color": color, "size": 6},
                    hovertemplate=f"{label}<br>step %{{x}}<br>{names.describe(task + '_acc').label} = "
                    "%{y:.3g}<extra></extra>",
                ),
                row=1, col=col,
            )  # fmt: skip
            chance = chance_of(df, f"{task}_chance")
            if chance is not None:
                chances.add((round(chance, 12), int(part["step"].min()), int(part["step"].max())))
        for value, _, _ in sorted(chances):
            steps = [c for c in chances if c[0] == value]
            first, last = min(c[1] for c in steps), max(c[2] for c in steps)
            fig.add_trace(
                go.Scatter(
                    x=[first, last], y=[value, value], mode="lines", name=CHANCE, legendgroup=CHANCE,
                    showlegend=not chance_shown, line={"color": "#555", "dash": "dash", "width": 1.5},
                    hovertemplate=f"{CHANCE}: {names.format_value(value)}<extra></extra>",
                ),
                row=1, col=col,
            )  # fmt: skip
            chance_shown = True
    fig.update_layout(
        template="plotly_white",
        height=420,
        margin={"l": 10, "r": 10, "t": 60, "b": 10},
        legend={"orientation": "h", "y": -0.2, "yanchor": "top"},
        title="Reasoning-task accuracy over training (probe on the frozen fused features)",
    )
    fig.update_xaxes(title_text="training step")
    fig.update_yaxes(range=[0, 1.02], tickformat=".2f")
    fig.update_yaxes(title_text=_ACCURACY_AXIS, row=1, col=1)
    fig.update_annotations(font_size=13)
    return fig


def _names(fig: go.Figure) -> set[str]:
    """Names already in the legend: each run is listed once however many panels it is drawn in."""
    return {t.name for t in fig.data if t.showlegend is not False}


def kind_steps(tables: Mapping[str, pd.DataFrame]) -> list[int]:
    """Steps at which some run logged an accuracy per kind of question, sorted."""
    steps: set[int] = set()
    for df in tables.values():
        columns = [c for c in df.columns if _KIND.match(c)]
        if columns:
            steps |= set(df.loc[df[columns].notna().any(axis=1), "step"].astype(int))
    return sorted(steps)


def kind_table(tables: Mapping[str, pd.DataFrame], step: int) -> pd.DataFrame:
    """Accuracy and chance per (run, task, kind of question) at the last evaluation at or before ``step``.

    Returns:
        Columns ``run``, ``task``, ``kind``, ``accuracy``, ``chance`` (NaN when not logged) and ``step``
        (the step the values were logged at), tasks in :data:`TASKS` order, kinds in logged order.
    """
    rows = []
    for label, df in tables.items():
        for task, kinds in task_kinds(df).items():
            for kind in kinds:
                part = df.loc[df.step <= step, ["step", f"{task}_acc/{kind}"]].dropna()
                if part.empty:
                    continue
                last = part.sort_values("step").iloc[-1]
                chance = chance_of(df, f"{task}_chance/{kind}")
                rows.append({
                    "run": label, "task": task, "kind": kind, "accuracy": float(last.iloc[1]),
                    "chance": np.nan if chance is None else chance, "step": int(last["step"]),
                })  # fmt: skip
    return pd.DataFrame(rows, columns=["run", "task", "kind", "accuracy", "chance", "step"])


def kinds_figure(table: pd.DataFrame) -> go.Figure:
    """Grouped bars: accuracy per kind of question, one panel per task (stacked, each the full width so
    the kinds' names stay readable), one colour per run; each kind's
    chance level as a dashed segment across its group. Values are written on the bars (3 significant
    digits).

    Args:
        table: :func:`kind_table`'s output.

    Raises:
        ValueError: An empty table.
    """
    if table.empty:
        raise ValueError("table has no rows: no run logged an accuracy per kind of question by this step")
    tasks = [t for t in TASKS if t in set(table.task)]
    fig = make_subplots(
        rows=len(tasks), cols=1, vertical_spacing=0.3 / len(tasks),
        subplot_titles=[names.title(f"{t}_acc") for t in tasks],
    )  # fmt: skip
    runs = list(dict.fromkeys(table.run))
    colors = dict(zip(runs, palette(len(runs)), strict=True))
    group = 0.8  # width of one kind's group of bars, in category units
    bar = group / len(runs)
    chance_shown = False
    for row, task in enumerate(tasks, start=1):
        part = table[table.task == task]
        kinds = list(dict.fromkeys(part.kind))
        for i, run in enumerate(runs):
            mine = part[part.run == run].set_index("kind").reindex(kinds)
            x = np.arange(len(kinds)) - group / 2 + bar * (i + 0.5)
            fig.add_trace(
                go.Bar(
                    x=x, y=mine.accuracy, width=bar, name=run, legendgroup=run, marker_color=colors[run],
                    showlegend=run not in _names(fig),
                    text=[names.format_value(v) for v in mine.accuracy], textposition="outside",
                    textfont={"size": 11}, cliponaxis=False,
                    customdata=np.stack([kinds, mine.step.fillna(-1).astype(int)], axis=1),
                    hovertemplate=f"{run}<br>%{{customdata[0]}} questions at step %{{customdata[1]}}"
                    "<br>accuracy %{y:.3g}<extra></extra>",
                ),
                row=row, col=1,
            )  # fmt: skip
        chance = part.groupby("kind", sort=False).chance.first().reindex(kinds)
        xs: list[float | None] = []
        ys: list[float | None] = []
        for k, value in enumerate(chance):
            if np.isfinite(value):
                xs += [k - group / 2, k + group / 2, None]
                ys += [value, value, None]
        if xs:
            fig.add_trace(
                go.Scatter(
                    x=xs, y=ys, mode="lines", name=CHANCE, legendgroup=CHANCE, showlegend=not chance_shown,
                    line={"color": "#222", "dash": "dash", "width": 2}, hoverinfo="skip",
                ),
                row=row, col=1,
            )  # fmt: skip
            chance_shown = True
        fig.update_xaxes(
            tickvals=list(range(len(kinds))), ticktext=[k.replace("_", " ") for k in kinds],
            range=[-0.5, len(kinds) - 0.5], row=row, col=1,
        )  # fmt: skip
    fig.update_yaxes(range=[0, 1.15], tickformat=".1f", title_text=_ACCURACY_AXIS, title_font_size=11)
    fig.update_xaxes(title_text="kind of question", row=len(tasks), col=1)
    fig.update_layout(
        template="plotly_white",
        barmode="overlay",  # bars are placed by hand: grouped within each kind, chance across the group
        height=250 * len(tasks) + 110,
        margin={"l": 10, "r": 10, "t": 60, "b": 10},
        legend={"orientation": "h", "y": -0.4 / len(tasks), "yanchor": "top"},
    )
    fig.update_annotations(font_size=13)
    return fig


# --------------------------------------------------------------------------------------------- attention
ATTENTION_KEYS = ("attn_maps", "attn_images", "attn_texts", "attn_words", "attn_grid")


def has_attention(snapshot: Mapping[str, np.ndarray]) -> bool:
    """Whether a snapshot kept cross-attention maps (fusion runs with ``attention_examples`` > 0)."""
    return all(key in snapshot for key in ATTENTION_KEYS) and len(snapshot["attn_maps"]) > 0


def attention_examples(snapshot: Mapping[str, np.ndarray]) -> list[str]:
    """One line per example: the text, and its answer when it has one."""
    answers = snapshot.get("attn_answers", np.array([""] * len(snapshot["attn_texts"])))
    return [f"{t} → {a}" if a else str(t) for t, a in zip(snapshot["attn_texts"], answers, strict=True)]


def attention_words(snapshot: Mapping[str, np.ndarray], example: int) -> list[tuple[int, str]]:
    """``(token position, word)`` of an example's tokens, padding left out (``[cls]`` first)."""
    return [(j, str(w)) for j, w in enumerate(snapshot["attn_words"][example]) if str(w)]


def attention_map(
    snapshot: Mapping[str, np.ndarray], example: int, layer: int, word: int | None = None
) -> tuple[np.ndarray, float]:
    """Attention of one token (or the mean over the text's tokens) over the image's patch grid.

    Args:
        snapshot: A fusion snapshot (:func:`has_attention`).
        example: Row of ``attn_maps``.
        layer: Fusion layer (0-based; negative counts from the last).
        word: Token position, or None for the mean over the non-padding tokens.

    Returns:
        ``(rows x cols map renormalised over the patches, share of the attention on the image's [CLS])``.

    Raises:
        ValueError: An example, layer or word out of range, or a padding token.
    """
    maps = np.asarray(snapshot["attn_maps"])
    n, layers = maps.shape[:2]
    if not 0 <= example < n:
        raise ValueError(f"example must be in 0..{n - 1}, got {example}")
    if not -layers <= layer < layers:
        raise ValueError(f"layer must be in 0..{layers - 1}, got {layer}")
    keep = [j for j, _ in attention_words(snapshot, example)]
    if word is not None and word not in keep:
        raise ValueError(f"word must be a token position of the example ({keep}), got {word}")
    weights = maps[example, layer][[word] if word is not None else keep].mean(axis=0)
    grid = tuple(int(g) for g in snapshot["attn_grid"])
    patches = attention_grid(torch.from_numpy(np.ascontiguousarray(weights)), grid).numpy()
    return patches, float(weights[0] / weights.sum())


def _upsample(grid_map: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-cell copy of a (rows, cols) map onto a (height, width) image."""
    rows, cols = grid_map.shape
    r = np.minimum(np.arange(height) * rows // height, rows - 1)
    c = np.minimum(np.arange(width) * cols // width, cols - 1)
    return grid_map[np.ix_(r, c)]


def attention_figure(
    snapshot: Mapping[str, np.ndarray], example: int, layer: int, word: int | None = None
) -> go.Figure:
    """The digit, the attention over its patch grid, and the two overlaid, side by side.

    The map is the head-averaged cross-attention of ``word`` (or the mean over the text's words) in fusion
    layer ``layer``, the image's [CLS] column dropped and the patches renormalised (each panel's colour
    bar reads "share of the attention on the patches"; 1 / patches is uniform).
    """
    patches, cls_share = attention_map(snapshot, example, layer, word)
    image = np.asarray(snapshot["attn_images"][example], dtype=float)
    gray = image.mean(axis=0) if image.ndim == 3 else image  # colour images: their luminance, roughly
    height, width = gray.shape
    rows, cols = patches.shape
    uniform = 1.0 / patches.size
    fig = make_subplots(
        rows=1, cols=3, horizontal_spacing=0.08,
        subplot_titles=["the image", f"attention over the {rows}×{cols} patches", "overlaid on the image"],
    )  # fmt: skip
    fig.add_trace(
        go.Heatmap(
            z=gray, colorscale="gray_r", showscale=False, hovertemplate="pixel value %{z:.3g}<extra></extra>"
        ),
        row=1, col=1,
    )  # fmt: skip
    high = max(float(patches.max()), 2 * uniform)
    scale = {"colorscale": "Inferno", "zmin": 0.0, "zmax": high}
    fig.add_trace(
        go.Heatmap(
            z=patches, **scale, text=[[names.format_value(v, 2) for v in row] for row in patches],
            texttemplate="%{text}" if patches.size <= 64 else None, textfont={"size": 12},
            colorbar={"title": {"text": "share of the<br>patch attention", "side": "right"}, "len": 0.9},
            hovertemplate="patch row %{y}, column %{x}<br>share %{z:.3g}<extra></extra>",
        ),
        row=1, col=2,
    )  # fmt: skip
    fig.add_trace(go.Heatmap(z=gray, colorscale="gray_r", showscale=False, hoverinfo="skip"), row=1, col=3)
    fig.add_trace(
        go.Heatmap(
            z=_upsample(patches, height, width), **scale, opacity=0.55, showscale=False,
            hovertemplate="pixel row %{y}, column %{x}<br>share of its patch %{z:.3g}<extra></extra>",
        ),
        row=1, col=3,
    )  # fmt: skip
    shapes = (("pixel", height, width), ("patch", rows, cols), ("pixel", height, width))
    for col, (what, n_rows, n_cols) in enumerate(shapes, start=1):
        # square pixels: the axes' domains shrink ("constrain") rather than their ranges growing
        fig.update_xaxes(
            title_text=f"{what} column", range=[-0.5, n_cols - 0.5], constrain="domain", row=1, col=col
        )
        fig.update_yaxes(
            title_text=f"{what} row", range=[n_rows - 0.5, -0.5], scaleanchor=f"x{'' if col == 1 else col}",
            constrain="domain", row=1, col=col,
        )  # fmt: skip
    words = dict(attention_words(snapshot, example))
    who = "the mean of its words" if word is None else f"the word '{words[word]}'"
    fig.update_layout(
        template="plotly_white",
        height=420,
        margin={"l": 10, "r": 10, "t": 90, "b": 10},
        title=(
            f"Cross-attention of {who}, fusion layer {layer % snapshot['attn_maps'].shape[1] + 1}<br><sup>"
            f"{names.format_value(cls_share)} of it on the image's [CLS], the rest over the patches "
            f"(each patch's share shown; uniform = {names.format_value(uniform)})</sup>"
        ),
    )
    fig.update_annotations(font_size=13)
    return fig


__all__ = [
    "CHANCE",
    "MEAN_WORD",
    "TASKS",
    "TRAIN_COMMAND",
    "accuracy_figure",
    "attention_examples",
    "attention_figure",
    "attention_map",
    "attention_words",
    "chance_of",
    "has_attention",
    "is_fusion",
    "kind_steps",
    "kind_table",
    "kinds_figure",
    "logged_tasks",
    "palette",
    "task_kinds",
]
