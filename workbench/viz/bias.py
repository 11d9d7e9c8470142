"""Figures for the gradient-bias lab and the small-batch convergence experiment.

Every builder takes DataFrames as the libraries write them to the run store and returns a plotly
``go.Figure``; none of them computes gradients or trains.

Gradient-bias tables have the columns of ``workbench.labs.gradbias.COLUMNS`` (one row per loss, state and
batch size). To overlay several runs, concatenate their tables with a label column (``label_runs``)
and pass its name as ``run``. Per-batch samples (``workbench.labs.gradbias.SAMPLE_COLUMNS``, the run's
``gradbias_samples`` table) feed ``batch_distribution``.

Uncertainty bands (``bias_bands``) are the Monte-Carlo error of the measurement at the fixed model
and data of one run; they say nothing about other seeds (overlay runs for that):

* ``bias``, ``bias_raw``: value ± ``bias_floor``. The mean gradient is an average of R_b minibatch
  gradients, so it misses E[g_B] by an error e with E||e||^2 = tr(Cov g_B) / R_b, about
  ``bias_floor``^2. By the triangle inequality | ||mean - g*|| - ||E[g_B] - g*|| | <= ||e||, so the
  floor is the root-mean-square bound on the error of the bias estimate. A lower end at 0 means the
  bias is not resolved from zero.
* ``rel_bias``: the bias band divided by ||g*||, which the table carries implicitly as
  ``bias / rel_bias`` (the same for every row of one loss in one run).
* ``variance``: value × (1 ± sqrt(2 / (R - 1))) with R = ``repeats``, the standard error of a trace
  of a sample covariance for Gaussian gradients; heavy-tailed gradients (the Gamma draws of
  ``bayes``) make the true error larger.
* ``mse``: bias^2 + variance with both ends of both bands.

``cosine`` and ``jensen_gap`` get no band: the table does not hold what their error would need.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import hex_to_rgb, qualitative
from plotly.subplots import make_subplots

from workbench.metrics.names import describe, format_value

METRIC_LABELS: dict[str, str] = {
    "bias": "bias ||E[g_B] - g*||",
    "bias_raw": "raw bias ||mean g_B - g*||",
    "rel_bias": "relative bias ||E[g_B] - g*|| / ||g*||",
    "variance": "variance E||g_B - E g_B||^2",
    "mse": "MSE = bias^2 + variance",
    "cosine": "cos(E[g_B], g*)",
    "jensen_gap": "Jensen gap E[L_B] - L",
    "bias_floor": "noise floor of the bias",
}
BAND_METRICS = ("bias", "bias_raw", "rel_bias", "variance", "mse")
# Metrics that are non-negative and span decades; cosine and the Jensen gap stay on a linear axis.
LOG_METRICS = ("bias", "bias_raw", "rel_bias", "variance", "mse", "bias_floor")
_PALETTE = qualitative.Plotly + qualitative.D3
_DASH = {"stateless": "solid", "cold": "dot", "warm": "solid"}
_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x", "star", "cross", "pentagon")
_STATE_ORDER = {"stateless": 0, "cold": 1, "warm": 2}
#: Families of the lab's loss labels; :func:`bias_curves` draws one panel per family when many lines.
LOSS_FAMILIES: dict[str, tuple[str, ...]] = {
    "batch normaliser (InfoNCE)": ("clip", "ntxent", "dcl", "dclw"),
    "sigmoid and queue": ("siglip", "moco"),
    "running estimate of Z": ("sogclr", "bayes", "bayes-point", "bayes-batch"),
}
#: Losses of the first figure: plain InfoNCE, its two stateful fixes, and the ratio-only ablation.
DEFAULT_LOSSES = ("clip", "sogclr", "bayes", "bayes-batch")
#: More lines than this in one panel get one panel per loss family.
MAX_LINES = 6
#: A value below this fraction of its curve's largest value is zero up to float32 round-off (the lab
#: computes gradients in float32; at B = N they agree to about 1e-6 of their size).
ROUND_OFF = 1e-4


# --------------------------------------------------------------------------------------------- helpers


def _check_choice(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")


def _check_columns(table: pd.DataFrame, needed: Sequence[str], what: str) -> None:
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}; it has {list(table.columns)}")


def _rgba(color: str, alpha: float) -> str:
    red, green, blue = hex_to_rgb(color)
    return f"rgba({red}, {green}, {blue}, {alpha})"


def _colors(keys: Sequence) -> dict:
    return {key: _PALETTE[i % len(_PALETTE)] for i, key in enumerate(keys)}


def _select(table: pd.DataFrame, column: str, values: Sequence | None, name: str) -> pd.DataFrame:
    if values is None:
        return table
    unknown = sorted(set(values) - set(table[column]), key=str)
    if unknown:
        raise ValueError(f"{name} {unknown} not in the table; available: {list(pd.unique(table[column]))}")
    return table[table[column].isin(list(values))]


def _groups(table: pd.DataFrame, run: str | None) -> list[tuple]:
    keys = ([run] if run else []) + ["loss", "state"]
    order = table[keys].drop_duplicates()
    order = order.assign(_state=order.state.map(_STATE_ORDER).fillna(9))
    # Losses in table order (the order the lab measured them), runs in table order, cold before warm.
    loss_rank = {loss: i for i, loss in enumerate(pd.unique(table.loss))}
    order = order.assign(_loss=order.loss.map(loss_rank))
    order = order.sort_values(["_loss", *([run] if run else []), "_state"], kind="stable")
    return [tuple(row) for row in order[keys].itertuples(index=False)]


def _trace_name(loss: str, state: str, run_label: str | None) -> str:
    name = loss if state == "stateless" else f"{loss} ({state})"
    return name if run_label is None else f"{name} · {run_label}"


def label_runs(tables: Mapping[str, pd.DataFrame], column: str = "run") -> pd.DataFrame:
    """Concatenate several runs' tables into one, labelled by ``column`` (for the ``run`` argument).

    Args:
        tables: label (e.g. the run id) -> table, in the order to draw them.
        column: name of the label column to add.
    """
    if not tables:
        raise ValueError("tables must hold at least one table")
    frames = [table.assign(**{column: label}) for label, table in tables.items()]
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------------------------- gradient bias


def grad_norms(table: pd.DataFrame, run: str | None = None) -> pd.Series:
    """||g*|| per row, recovered as ``bias / rel_bias`` from any row of the same loss (and run).

    Rows of a loss whose bias is zero everywhere get NaN: their norm cannot be recovered.
    """
    _check_columns(table, ["loss", "bias", "rel_bias"], "table")
    keys = ([run] if run else []) + ["loss"]
    ratio = table.bias / table.rel_bias
    ratio = ratio.where((table.bias > 0) & (table.rel_bias > 0) & np.isfinite(ratio))
    # g* is one vector per loss and run, so every resolvable row gives the same ratio up to round-off.
    return ratio.groupby([table[k] for k in keys]).transform("median")


def bias_bands(table: pd.DataFrame, metric: str = "rel_bias", run: str | None = None) -> pd.DataFrame:
    """Lower and upper ends of the Monte-Carlo uncertainty band of ``metric`` (module docstring).

    Args:
        table: gradient-bias table (``workbench.labs.gradbias.COLUMNS``).
        metric: one of ``BAND_METRICS``.
        run: label column when the table holds several runs (the norm of g* is per run).

    Returns:
        DataFrame aligned with ``table`` with columns ``value``, ``lower``, ``upper``.
    """
    _check_choice("metric", metric, BAND_METRICS)
    _check_columns(table, [metric, "bias", "bias_raw", "bias_floor", "variance", "repeats"], "table")
    floor = table.bias_floor.astype(float)
    relative = np.sqrt(2.0 / (table.repeats.astype(float) - 1.0))
    var_lo = (table.variance * (1.0 - relative)).clip(lower=0.0)
    var_hi = table.variance * (1.0 + relative)
    bias_lo = (table.bias - floor).clip(lower=0.0)
    bias_hi = table.bias + floor
    if metric == "bias":
        lower, upper = bias_lo, bias_hi
    elif metric == "bias_raw":
        lower, upper = (table.bias_raw - floor).clip(lower=0.0), table.bias_raw + floor
    elif metric == "rel_bias":
        norm = grad_norms(table, run)
        lower, upper = bias_lo / norm, bias_hi / norm
    elif metric == "variance":
        lower, upper = var_lo, var_hi
    else:
        lower, upper = bias_lo**2 + var_lo, bias_hi**2 + var_hi
    return pd.DataFrame({"value": table[metric].astype(float), "lower": lower, "upper": upper})


def pick_states(table: pd.DataFrame, state: str = "warm") -> pd.DataFrame:
    """Rows of one state per loss: ``state`` where the loss was measured in it, else its only state.

    Args:
        table: gradient-bias table.
        state: ``"warm"`` (later in training), ``"cold"`` (first epoch) or ``"both"`` (every row).
    """
    _check_choice("state", state, ["warm", "cold", "both"])
    _check_columns(table, ["loss", "state"], "table")
    if state == "both":
        return table
    has = table.groupby("loss").state.transform(lambda s: (s == state).any())
    return table[(table.state == state) | (~has & (table.state == "stateless"))]


def default_losses(table: pd.DataFrame) -> list[str]:
    """The few losses a first figure shows: :data:`DEFAULT_LOSSES` that were measured, else the first 4."""
    present = list(pd.unique(table.loss))
    chosen = [loss for loss in DEFAULT_LOSSES if loss in present]
    return chosen or present[:4]


def family(loss: str) -> str:
    """The family of a loss label (:data:`LOSS_FAMILIES`), ``"other"`` when unknown."""
    base = loss.split(" ")[0]
    for name, members in LOSS_FAMILIES.items():
        if base in members:
            return name
    return "other"


def _round_off(values: np.ndarray, upper: np.ndarray | None) -> np.ndarray:
    """Rows whose value (and band top) is below ROUND_OFF of the largest value of their curve."""
    finite = values[np.isfinite(values)]
    scale = float(np.abs(finite).max()) if finite.size else 0.0
    if scale <= 0:
        return np.zeros(values.shape, dtype=bool)
    top = values if upper is None else np.where(np.isfinite(upper), upper, values)
    return (np.abs(values) < ROUND_OFF * scale) & (np.abs(top) < ROUND_OFF * scale)


def _floor_in_metric(data: pd.DataFrame, metric: str, run: str | None) -> np.ndarray | None:
    """The noise floor of the bias in the unit of ``metric`` (None for metrics without one)."""
    if metric in ("bias", "bias_raw"):
        return data.bias_floor.to_numpy(float)
    if metric == "rel_bias":
        return (data.bias_floor / grad_norms(data, run)).to_numpy(float)
    return None


def bias_curves(
    table: pd.DataFrame,
    metric: str = "rel_bias",
    run: str | None = None,
    losses: Sequence[str] | None = None,
    states: Sequence[str] | None = None,
    band: bool = True,
    log_x: bool = True,
    log_y: bool | None = None,
    title: str | None = None,
    panels: bool | None = None,
) -> go.Figure:
    """One line per loss (and state, and run) of ``metric`` against batch size, with error bands.

    Readability rules (a log axis spans what is measured, not float round-off):

    * a value that is zero up to float round-off (below ``ROUND_OFF`` of its curve's largest value,
      band included: the bias at B = N, where every "minibatch" is a permutation of the data) is not
      put on the log axis; it is marked with an open triangle at the bottom of the axis instead;
    * on a log axis, the band of the bias is drawn no lower than the noise floor (below it the
      measurement cannot tell values apart);
    * with ``panels`` (default: when more than :data:`MAX_LINES` lines), one panel per loss family
      (:data:`LOSS_FAMILIES`) on shared axes;
    * hover values have 3 significant digits.

    Args:
        table: gradient-bias table (``workbench.labs.gradbias.COLUMNS``); several runs stacked with a label
            column (see ``label_runs``) are overlaid, told apart by marker symbol.
        metric: a key of ``METRIC_LABELS``.
        run: the label column of stacked runs, or None for one run.
        losses, states: draw only these (default all, in table order).
        band: shade the uncertainty band of ``BAND_METRICS`` (see ``bias_bands``).
        log_x: logarithmic batch-size axis.
        log_y: logarithmic metric axis; default True for ``LOG_METRICS``. On a log axis values <= 0
            are left out and band ends <= 0 are drawn at the lowest positive value of the figure.
        title: figure title (default: the metric's label).
        panels: one panel per loss family (None: when there are more than ``MAX_LINES`` lines).

    Returns:
        Figure whose traces carry ``meta = {"kind": "line" | "band" | "round_off", "loss", "state",
        "run"}``.
    """
    _check_choice("metric", metric, list(METRIC_LABELS))
    _check_columns(table, ["loss", "state", "batch_size", metric], "table")
    if run is not None:
        _check_columns(table, [run], "table")
    log_y = metric in LOG_METRICS if log_y is None else log_y
    bands = bias_bands(table, metric, run) if band and metric in BAND_METRICS else None
    data = table if bands is None else table.assign(_lower=bands.lower, _upper=bands.upper)
    floor = _floor_in_metric(table, metric, run)
    if floor is not None:
        data = data.assign(_floor=floor)
        if log_y and bands is not None:
            # Below the noise floor values cannot be told apart: the band stops there (a value under
            # the floor is drawn at it, with an open marker).
            data = data.assign(_lower=np.fmax(data._lower.to_numpy(float), floor))
    data = _select(_select(data, "loss", losses, "losses"), "state", states, "states")
    groups = _groups(data, run)
    panels = len(groups) > MAX_LINES if panels is None else bool(panels)
    families = list(dict.fromkeys(family(key[-2]) for key in groups)) if panels else [None]

    curves = []
    for key in groups:
        run_label, loss, state = key if run else (None, *key)
        mask = (data.loss == loss) & (data.state == state)
        if run:
            mask &= data[run] == run_label
        rows = data[mask].sort_values("batch_size")
        y = rows[metric].to_numpy(dtype=float)
        upper = rows._upper.to_numpy(float) if bands is not None else None
        tiny = _round_off(y, upper) if log_y else np.zeros(len(y), dtype=bool)
        curves.append((run_label, loss, state, rows, y, tiny))

    # The axis spans what is drawn: values under the noise floor are drawn at it.
    kept = [
        (np.fmax(c[4], c[3]._floor.to_numpy(float)) if log_y and "_floor" in c[3].columns else c[4])[~c[5]]
        for c in curves
    ]
    if bands is not None:
        kept += [c[3]._lower.to_numpy(float)[~c[5]] for c in curves]
        kept += [c[3]._upper.to_numpy(float)[~c[5]] for c in curves]
    values = np.concatenate(kept) if kept else np.zeros(0)
    positive = values[np.isfinite(values) & (values > 0)]
    bottom = float(positive.min()) if positive.size else 1.0
    top = float(positive.max()) if positive.size else 1.0
    # The open triangles of round-off values sit just under the lowest measured value.
    marker_y = bottom / 10 ** (0.08 * max(np.log10(top / bottom), 1.0))

    colors = _colors(list(pd.unique(data.loss)))
    run_labels = list(pd.unique(data[run])) if run else [None]
    symbols = {label: _SYMBOLS[i % len(_SYMBOLS)] for i, label in enumerate(run_labels)}
    if panels:
        fig = make_subplots(
            rows=1, cols=len(families), shared_yaxes=True, subplot_titles=families, horizontal_spacing=0.03
        )
    else:
        fig = go.Figure()
    value_label = _hover_label(metric)
    round_off_legend = True
    for run_label, loss, state, rows, y, tiny in curves:
        where = {"row": 1, "col": families.index(family(loss)) + 1} if panels else {}
        x = rows.batch_size.to_numpy()
        line_y = np.where(tiny, np.nan, y)
        if log_y and "_floor" in rows.columns:
            # Not resolved from 0: drawn at the noise floor (an upper bound), with an open marker.
            floors = rows._floor.to_numpy(float)
            line_y = np.where(~tiny & (y < floors), floors, line_y)
        if log_y:
            line_y = np.where(line_y > 0, line_y, np.nan)
        name = _trace_name(loss, state, None if run_label is None else str(run_label))
        meta = {"loss": loss, "state": state, "run": run_label}
        keep = ~tiny
        if bands is not None and rows._upper.notna().any() and keep.sum() > 0:
            lower = rows._lower.to_numpy(float)[keep]
            upper = rows._upper.to_numpy(float)[keep]
            if log_y:
                lower = np.where(lower > 0, lower, bottom)
                upper = np.where(upper > 0, upper, bottom)
            fig.add_trace(
                go.Scatter(
                    x=np.concatenate([x[keep], x[keep][::-1]]),
                    y=np.concatenate([upper, lower[::-1]]),
                    mode="lines",
                    fill="toself",
                    fillcolor=_rgba(colors[loss], 0.15),
                    line={"width": 0},
                    hoverinfo="skip",
                    showlegend=False,
                    legendgroup=name,
                    name=f"{name} band",
                    meta={**meta, "kind": "band"},
                ),
                **where,
            )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=line_y,
                mode="lines+markers",
                name=name,
                legendgroup=name,
                line={"color": colors[loss], "dash": _DASH.get(state, "solid")},
                marker={"symbol": _symbols(symbols[run_label], y, rows)},
                meta={**meta, "kind": "line"},
                customdata=y,
                hovertemplate=f"{name}<br>B = %{{x}}<br>{value_label} = %{{customdata:.3g}}<extra></extra>",
            ),
            **where,
        )
        if tiny.any():
            fig.add_trace(
                go.Scatter(
                    x=x[tiny],
                    y=np.full(int(tiny.sum()), marker_y),
                    mode="markers",
                    marker={"symbol": "triangle-down-open", "size": 11, "color": colors[loss]},
                    name="0 up to float round-off (B = N)",
                    legendgroup="round_off",
                    showlegend=round_off_legend,
                    customdata=y[tiny],
                    hovertemplate=f"{name}<br>B = %{{x}}: {value_label} = %{{customdata:.3g}}, zero up to "
                    "float round-off (every batch is a permutation of the data)<extra></extra>",
                    meta={**meta, "kind": "round_off"},
                ),
                **where,
            )
            round_off_legend = False
    info = describe(metric)
    fig.update_layout(
        title=title or METRIC_LABELS[metric],
        legend_title="dotted: cold state; open marker: below the noise floor, drawn at it",
        legend={"orientation": "h", "y": -0.18, "yanchor": "top", "x": 0},
        template="plotly_white",
        margin={"b": 10},
    )
    sizes = sorted(int(b) for b in pd.unique(data.batch_size))
    full = {int(b) for c in curves for b in c[3].batch_size.to_numpy()[c[5]]}
    # Ticks at the measured batch sizes only (a log axis would add 2, 3, ... 9 between decades).
    fig.update_xaxes(
        type="log" if log_x else "linear",
        title_text="batch size B",
        tickvals=sizes,
        ticktext=[f"{b} (= N)" if b in full else str(b) for b in sizes],
    )
    y_title = f"{METRIC_LABELS[metric]}" + (f" ({info.better})" if info.better else "")
    fig.update_yaxes(type="log" if log_y else "linear", tickformat=".3g" if not log_y else None)
    fig.update_yaxes(title_text=y_title, row=1, col=1) if panels else fig.update_yaxes(title_text=y_title)
    if log_y and positive.size:
        low = min(marker_y, bottom)
        fig.update_yaxes(range=[np.log10(low) - 0.1, np.log10(top) + 0.1])
    return fig


def bias_overview(
    table: pd.DataFrame,
    metric: str = "rel_bias",
    losses: Sequence[str] | None = None,
    state: str = "warm",
    run: str | None = None,
    band: bool = True,
    title: str | None = None,
) -> go.Figure:
    """The first figure of a gradient-bias run, readable by default: a few losses, one state each.

    :func:`bias_curves` of ``metric`` (relative bias by default) for ``losses`` (default
    :func:`default_losses`) in ``state`` (:func:`pick_states`; stateless losses keep their only
    state), with one panel per loss family when many lines are drawn.
    """
    chosen = list(losses) if losses is not None else default_losses(table)
    _select(table, "loss", chosen, "losses")  # names an unknown loss
    rows = pick_states(table[table.loss.isin(chosen)], state)
    label = {"warm": "warm state", "cold": "cold state", "both": "cold and warm"}[state]
    return bias_curves(
        rows,
        metric,
        run=run,
        band=band,
        title=title or f"{_hover_label(metric).capitalize()} against batch size ({label})",
    )


def _symbols(symbol: str, values: np.ndarray, rows: pd.DataFrame) -> str | list[str]:
    """``symbol`` per point, open where the value is below its noise floor (not resolved from 0)."""
    if "_floor" not in rows.columns:
        return symbol
    below = values < rows._floor.to_numpy(float)
    return [f"{symbol}-open" if low else symbol for low in below] if below.any() else symbol


def _hover_label(metric: str) -> str:
    names = {"rel_bias": "relative bias", "bias_raw": "raw bias", "jensen_gap": "Jensen gap"}
    return names.get(metric, metric)


def bias_table(table: pd.DataFrame, metric: str = "rel_bias", run: str | None = None) -> pd.DataFrame:
    """``metric`` ± its noise floor per loss, state and batch size, as text with 3 significant digits.

    Values that are zero up to float round-off read ``≈ 0 (round-off)`` instead of ``6e-14``.

    Returns:
        One row per loss and state, one column ``B=<size>`` per batch size.
    """
    _check_choice("metric", metric, ["rel_bias", "bias", "variance", "mse", "cosine", "jensen_gap"])
    _check_columns(table, ["loss", "state", "batch_size", metric, "bias_floor"], "table")
    table = table.reset_index(drop=True)
    floor = _floor_in_metric(table, metric, run)
    cells = []
    for key, rows in table.groupby(["loss", "state"], sort=False):
        values = rows[metric].to_numpy(float)
        floors = None if floor is None else floor[rows.index.to_numpy()]
        upper = None if floors is None else values + floors
        tiny = _round_off(values, upper) if metric in LOG_METRICS else np.zeros(len(values), dtype=bool)
        for i, (batch_size, value) in enumerate(zip(rows.batch_size, values, strict=True)):
            if tiny[i]:
                text = "≈ 0 (round-off)"
            elif floors is not None:
                text = f"{format_value(value)} ± {format_value(floors[i])}"
            else:
                text = format_value(value)
            cells.append({"loss": key[0], "state": key[1], "batch_size": int(batch_size), "cell": text})
    frame = pd.DataFrame(cells)
    wide = frame.pivot_table(
        index=["loss", "state"], columns="batch_size", values="cell", aggfunc="first", sort=False
    )
    wide.columns = [f"B={b}" for b in wide.columns]
    return wide.reset_index()


def decomposition(table: pd.DataFrame, loss: str, state: str | None = None) -> go.Figure:
    """bias^2, variance and MSE of one loss against batch size (log-log): where the error comes from.

    Args:
        table: gradient-bias table of one run.
        loss: the loss label to draw.
        state: for stateful losses "cold" or "warm" (default: warm if measured, else the only state).
    """
    _check_columns(table, ["loss", "state", "batch_size", "bias", "variance", "mse"], "table")
    _check_choice("loss", loss, list(pd.unique(table.loss)))
    rows = table[table.loss == loss]
    available = list(pd.unique(rows.state))
    if state is None:
        state = "warm" if "warm" in available else available[0]
    _check_choice("state", state, available)
    rows = rows[rows.state == state].sort_values("batch_size")
    fig = go.Figure()
    parts = {"bias^2": rows.bias**2, "variance": rows.variance, "MSE": rows.mse}
    for (name, values), color in zip(parts.items(), _PALETTE, strict=False):
        y = values.to_numpy(float)
        fig.add_trace(
            go.Scatter(
                x=rows.batch_size.to_numpy(),
                y=np.where(y > 0, y, np.nan),
                mode="lines+markers",
                name=name,
                line={"color": color, "dash": "dash" if name == "MSE" else "solid"},
                meta={"kind": "line", "part": name, "loss": loss, "state": state},
            )
        )
    fig.update_layout(
        title=f"{_trace_name(loss, state, None)}: MSE = bias^2 + variance",
        xaxis_title="batch size B",
        yaxis_title="squared gradient error (lower is better)",
        template="plotly_white",
    )
    sizes = sorted(int(b) for b in rows.batch_size)
    fig.update_xaxes(type="log", tickvals=sizes, ticktext=[str(b) for b in sizes])
    fig.update_traces(hovertemplate="B = %{x}<br>%{fullData.name} = %{y:.3g}<extra></extra>")
    fig.update_yaxes(type="log")
    return fig


def batch_bars(
    table: pd.DataFrame, batch_size: int, metric: str = "rel_bias", run: str | None = None
) -> go.Figure:
    """``metric`` of every loss and state at one batch size, as bars with the band as error bars."""
    _check_choice("metric", metric, list(METRIC_LABELS))
    _check_columns(table, ["loss", "state", "batch_size", metric], "table")
    sizes = sorted(pd.unique(table.batch_size))
    _check_choice("batch_size", batch_size, sizes)
    if metric in BAND_METRICS:
        bands = bias_bands(table, metric, run)
        data = table.assign(_lower=bands.lower, _upper=bands.upper)
    else:
        data = table.assign(_lower=table[metric], _upper=table[metric])
    data = data[data.batch_size == batch_size]
    fig = go.Figure()
    run_labels = list(pd.unique(data[run])) if run else [None]
    for run_label in run_labels:
        rows = data if run_label is None else data[data[run] == run_label]
        names = [_trace_name(r.loss, r.state, None) for r in rows.itertuples()]
        value = rows[metric].to_numpy(float)
        fig.add_trace(
            go.Bar(
                x=names,
                y=value,
                name="value" if run_label is None else str(run_label),
                error_y={
                    "type": "data",
                    "array": rows._upper.to_numpy(float) - value,
                    "arrayminus": value - rows._lower.to_numpy(float),
                },
                meta={"kind": "bar", "run": run_label, "batch_size": int(batch_size)},
            )
        )
    fig.update_layout(
        title=f"{METRIC_LABELS[metric]} at B = {batch_size}",
        yaxis_title=METRIC_LABELS[metric],
        barmode="group",
        showlegend=run is not None,
        template="plotly_white",
    )
    return fig


def batch_distribution(samples: pd.DataFrame, batch_size: int, column: str = "cosine") -> go.Figure:
    """Per-batch spread at one batch size: one box per loss and state over the measured minibatches.

    Args:
        samples: per-batch table (``workbench.labs.gradbias.SAMPLE_COLUMNS``).
        batch_size: one of the measured batch sizes.
        column: ``cosine`` (cos(g_B, g*)) or ``rel_error`` (||g_B - g*|| / ||g*||).
    """
    _check_choice("column", column, ["cosine", "rel_error"])
    _check_columns(samples, ["loss", "state", "batch_size", column], "samples")
    _check_choice("batch_size", batch_size, sorted(pd.unique(samples.batch_size)))
    rows = samples[samples.batch_size == batch_size]
    colors = _colors(list(pd.unique(rows.loss)))
    fig = go.Figure()
    for loss, state in _groups(rows, None):
        values = rows[(rows.loss == loss) & (rows.state == state)][column].to_numpy(float)
        fig.add_trace(
            go.Box(
                y=values,
                name=_trace_name(loss, state, None),
                marker_color=colors[loss],
                boxpoints="outliers",
                meta={"kind": "box", "loss": loss, "state": state},
            )
        )
    label = "cos(g_B, g*)" if column == "cosine" else "||g_B - g*|| / ||g*||"
    fig.update_layout(
        title=f"{label} over single minibatches, B = {batch_size}",
        yaxis_title=label,
        showlegend=False,
        template="plotly_white",
    )
    if column == "rel_error":
        fig.update_yaxes(type="log")
    return fig


# --------------------------------------------------------------------------------------------- convergence


def _setting(
    curves: pd.DataFrame, noise: float, batch_size: int, losses: Sequence[str] | None
) -> pd.DataFrame:
    _check_columns(curves, ["noise", "batch_size", "loss", "seed", "step", "progress"], "curves")
    noises = sorted(pd.unique(curves.noise))
    if not any(math.isclose(noise, n) for n in noises):
        raise ValueError(f"noise must be one of {noises}; got {noise!r}")
    _check_choice("batch_size", batch_size, sorted(pd.unique(curves.batch_size)))
    rows = curves[np.isclose(curves.noise, noise) & (curves.batch_size == batch_size)]
    return _select(rows, "loss", losses, "losses")


def progress_bands(
    curves: pd.DataFrame,
    noise: float,
    batch_size: int,
    losses: Sequence[str] | None = None,
    gap: bool = True,
    band: str = "range",
) -> go.Figure:
    """Training curves of one setting: the mean over seeds per loss, shaded over the seeds.

    Args:
        curves: long table from ``workbench.labs.convergence.progress_curves``.
        noise, batch_size: the setting to draw.
        losses: draw only these (default all).
        gap: plot 1 - progress on a log axis (distance to the optimum, which shows the last percent
            that decides "reached"); False plots progress itself.
        band: ``range`` (min to max over seeds), ``std`` (mean ± one standard deviation) or ``none``.
    """
    _check_choice("band", band, ["range", "std", "none"])
    rows = _setting(curves, noise, batch_size, losses)
    value = 1.0 - rows.progress if gap else rows.progress
    rows = rows.assign(_value=value)
    stats = rows.groupby(["loss", "step"], sort=False)._value.agg(["mean", "std", "min", "max"]).reset_index()
    colors = _colors(list(pd.unique(rows.loss)))
    fig = go.Figure()
    for loss in pd.unique(rows.loss):
        part = stats[stats.loss == loss].sort_values("step")
        x = part.step.to_numpy()
        mean = part["mean"].to_numpy(float)
        seeds = rows[rows.loss == loss].seed.nunique()
        if band != "none":
            if band == "range":
                lower, upper = part["min"].to_numpy(float), part["max"].to_numpy(float)
            else:
                spread = np.nan_to_num(part["std"].to_numpy(float))
                lower, upper = mean - spread, mean + spread
            fig.add_trace(
                go.Scatter(
                    x=np.concatenate([x, x[::-1]]),
                    y=np.concatenate([upper, lower[::-1]]),
                    fill="toself",
                    fillcolor=_rgba(colors[loss], 0.18),
                    line={"width": 0},
                    hoverinfo="skip",
                    showlegend=False,
                    legendgroup=loss,
                    name=f"{loss} band",
                    meta={"kind": "band", "loss": loss, "band": band},
                )
            )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=mean,
                mode="lines",
                name=f"{loss} ({seeds} seeds)",
                legendgroup=loss,
                line={"color": colors[loss]},
                meta={"kind": "line", "loss": loss, "seeds": int(seeds)},
            )
        )
    fig.update_layout(
        title=f"noise {noise:g}, B = {batch_size}: mean over seeds, band = {band}",
        xaxis_title="step",
        yaxis_title="1 - progress (distance to L*)" if gap else "progress",
        template="plotly_white",
    )
    if gap:
        fig.update_yaxes(type="log")
    return fig


def reach_fraction(
    curves: pd.DataFrame,
    noise: float,
    batch_size: int,
    threshold: float = 0.99,
    losses: Sequence[str] | None = None,
) -> go.Figure:
    """Fraction of seeds whose progress is >= ``threshold`` at each evaluated step, per loss."""
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    rows = _setting(curves, noise, batch_size, losses)
    rows = rows.assign(_reached=rows.progress >= threshold)
    fraction = rows.groupby(["loss", "step"], sort=False)._reached.mean().reset_index()
    colors = _colors(list(pd.unique(rows.loss)))
    fig = go.Figure()
    for loss in pd.unique(rows.loss):
        part = fraction[fraction.loss == loss].sort_values("step")
        fig.add_trace(
            go.Scatter(
                x=part.step.to_numpy(),
                y=part._reached.to_numpy(float),
                mode="lines+markers",
                name=loss,
                line={"color": colors[loss], "shape": "hv"},
                meta={"kind": "line", "loss": loss, "threshold": threshold},
            )
        )
    fig.update_layout(
        title=f"noise {noise:g}, B = {batch_size}: fraction of runs with progress >= {threshold:g}",
        xaxis_title="step",
        yaxis_title="fraction of runs",
        yaxis_range=[-0.03, 1.03],
        template="plotly_white",
    )
    return fig


def final_progress(runs: pd.DataFrame, batch_size: int, losses: Sequence[str] | None = None) -> go.Figure:
    """Final progress against noise level at one batch size: every seed as a dot, the mean as a line.

    Args:
        runs: one row per run with ``noise, batch_size, loss, seed, progress`` (the ``runs`` table of a
            convergence summary run; reference rows, ``kind == "reference"``, are left out).
        batch_size: the batch size to draw.
        losses: draw only these (default all).
    """
    _check_columns(runs, ["noise", "batch_size", "loss", "seed", "progress"], "runs")
    if "kind" in runs.columns:
        runs = runs[runs.kind == "run"]
    _check_choice("batch_size", batch_size, sorted(pd.unique(runs.batch_size)))
    rows = _select(runs[runs.batch_size == batch_size], "loss", losses, "losses")
    colors = _colors(list(pd.unique(rows.loss)))
    fig = go.Figure()
    for loss in pd.unique(rows.loss):
        part = rows[rows.loss == loss]
        fig.add_trace(
            go.Scatter(
                x=part.noise.to_numpy(float),
                y=part.progress.to_numpy(float),
                mode="markers",
                marker={"color": colors[loss], "opacity": 0.45, "size": 6},
                name=f"{loss} seeds",
                legendgroup=loss,
                showlegend=False,
                meta={"kind": "seeds", "loss": loss},
            )
        )
        mean = part.groupby("noise").progress.mean()
        fig.add_trace(
            go.Scatter(
                x=mean.index.to_numpy(float),
                y=mean.to_numpy(float),
                mode="lines+markers",
                name=loss,
                legendgroup=loss,
                line={"color": colors[loss]},
                meta={"kind": "mean", "loss": loss},
            )
        )
    fig.update_layout(
        title=f"final progress at B = {batch_size} (1.0 = the best full-batch optimum)",
        xaxis_title="noise (fraction of near-duplicates)",
        yaxis_title="final progress",
        template="plotly_white",
    )
    return fig
