"""Plotly figures of embedding geometry: projections, the modality gap, spectra, bridges, what-if curves.

The builders take arrays (or a :class:`workbench.viz.projection.Projection`) and return a
``plotly.graph_objects.Figure``; they never read the run store and never train. Shared by the
dashboard (``app/``) and the notebooks.

Array names follow the snapshots of two-tower runs: ``"a"`` image embeddings, ``"b"`` text
embeddings (row i of both is one pair), ``"a_aug"`` augmented images. Any other name is drawn with a
neutral style.

Figures:

* :func:`scatter_figure`: one checkpoint, 2-D or 3-D, coloured by modality or class, with lines
  between pairs and hover text (id, label, caption).
* :func:`animated_figure`: every checkpoint of a projection as animation frames, with a step slider
  and play/pause buttons; axes fixed so the motion is visible.
* :func:`sphere_figure`: 3-d embeddings on the unit sphere.
* :func:`add_gap_arrow`, :func:`add_paths`, :func:`add_points`: overlays in the same projection
  (gap vector, Brownian-bridge paths, bridge means and augmented views).
* :func:`per_dimension_gap_figure`, :func:`singular_spectrum_figure`: the gap per dimension and the
  normalised singular values.
* :func:`metrics_figure`: measures over training steps, several runs overlaid.
* :func:`gap_shift_curve` and :func:`whatif_figure`: shift the embeddings along the gap vector and
  recompute a contrastive loss (Liang et al. 2022, "Mind the Gap", section 4.2).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from workbench.metrics import names
from workbench.metrics.gap import bridge_means, gap_shift, gap_shift_curve
from workbench.metrics.geometry import gap_vector
from workbench.viz.projection import Projection, normalise_rows

__all__ = [
    "COLOR_BY",
    "GEOMETRY_METRICS",
    "MODALITY_STYLE",
    "PointInfo",
    "add_gap_arrow",
    "add_paths",
    "add_points",
    "animated_figure",
    "bridge_means",
    "gap_shift",
    "gap_shift_curve",
    "metrics_figure",
    "per_dimension_gap_figure",
    "scatter_figure",
    "singular_spectrum_figure",
    "sphere_figure",
    "whatif_figure",
]

COLOR_BY = ("modality", "class")
#: name, colour and marker symbol (2-D, 3-D) of each snapshot array.
MODALITY_STYLE: dict[str, tuple[str, str, str, str]] = {
    "a": ("image", "#1f77b4", "circle", "circle"),
    "b": ("text", "#ff7f0e", "diamond", "diamond"),
    "a_aug": ("augmented image", "#2ca02c", "x", "cross"),
}
_OTHER_STYLE = ("#7f7f7f", "square", "square")
#: Geometry measures logged by multimodal runs (``workbench.metrics.geometry.geometry_report`` keys), in
#: the order the dashboard shows them.
GEOMETRY_METRICS = (
    "centroid_gap",
    "relative_modality_gap",
    "modality_separability",
    "alignment",
    "uniformity",
    "cross_uniformity",
    "cone",
    "effective_rank",
    "paired_distance",
    "mean_pair_cosine",
)
PAIR_LINE_COLOR = "rgba(120, 120, 120, 0.35)"
# Legends of the small figures go under the plot, which keeps its full width in a narrow column.
_LEGEND_BELOW = {"orientation": "h", "x": 0, "y": -0.3, "yanchor": "top"}
# Above this many points per frame, 2-D scatters switch to WebGL (SVG gets slow in the browser).
GL_THRESHOLD = 4000


# --------------------------------------------------------------------------------------------- hover data
@dataclass(frozen=True)
class PointInfo:
    """What a hover box says about row i of every array: its id, label and caption.

    Attributes:
        ids: ``(n,)`` item ids.
        labels: ``(n,)`` integer class labels (negative = unlabelled), or None.
        captions: ``(n,)`` strings, or None.
        class_names: Name of each label value, or None (the number is shown).
    """

    ids: np.ndarray
    labels: np.ndarray | None = None
    captions: np.ndarray | None = None
    class_names: Sequence[str] | None = None

    @classmethod
    def from_snapshot(
        cls, snapshot: Mapping[str, np.ndarray], class_names: Sequence[str] | None = None
    ) -> PointInfo:
        """Take ``ids``, ``labels`` and ``captions`` from a snapshot (row numbers when ids are absent)."""
        n = len(snapshot["a"]) if "a" in snapshot else len(next(iter(snapshot.values())))
        ids = np.asarray(snapshot["ids"]) if "ids" in snapshot else np.arange(n)
        labels = np.asarray(snapshot["labels"]) if "labels" in snapshot else None
        captions = np.asarray(snapshot["captions"]).astype(str) if "captions" in snapshot else None
        return cls(ids=ids, labels=labels, captions=captions, class_names=class_names)

    @property
    def n(self) -> int:
        """Number of rows."""
        return len(self.ids)

    def label_names(self) -> np.ndarray:
        """``(n,)`` printable label of every row ("" where unlabelled or without labels)."""
        if self.labels is None:
            return np.full(self.n, "", dtype=object)
        names = self.class_names
        out = []
        for value in self.labels.tolist():
            if value is None or (isinstance(value, (int, np.integer)) and value < 0):
                out.append("")
            elif names is not None and isinstance(value, (int, np.integer)) and value < len(names):
                out.append(str(names[value]))
            else:
                out.append(str(value))
        return np.asarray(out, dtype=object)

    def search(self, query: str) -> np.ndarray:
        """Rows whose id equals ``query`` or whose label or caption contains it (case-insensitive).

        Several terms separated by commas match any of them; an empty query matches nothing.
        """
        terms = [t.strip().lower() for t in str(query).split(",") if t.strip()]
        if not terms:
            return np.zeros(0, dtype=np.int64)
        ids = np.char.lower(self.ids.astype(str))
        labels = np.char.lower(self.label_names().astype(str))
        raw = self.captions if self.captions is not None else np.full(self.n, "")
        captions = np.char.lower(np.asarray(raw, dtype=str))
        hit = np.zeros(self.n, dtype=bool)
        for term in terms:
            hit |= (ids == term) | (labels == term) | (np.char.find(captions, term) >= 0)
        return np.flatnonzero(hit)

    def customdata(self) -> np.ndarray:
        """``(n, 3)`` object array: id, label, caption."""
        captions = self.captions if self.captions is not None else np.full(self.n, "")
        return np.column_stack([self.ids.astype(str), self.label_names(), np.asarray(captions, dtype=str)])


def _check_info(info: PointInfo | None, n: int) -> PointInfo:
    if info is None:
        return PointInfo(ids=np.arange(n))
    if info.n != n:
        raise ValueError(f"info describes {info.n} rows but the arrays have {n}")
    return info


def _check_color_by(color_by: str, info: PointInfo) -> str:
    if color_by not in COLOR_BY:
        raise ValueError(f"color_by must be one of {', '.join(COLOR_BY)}; got {color_by!r}")
    if color_by == "class" and info.labels is None:
        raise ValueError("color_by='class' needs labels, and these points have none")
    return color_by


def _check_coords(coords: Mapping[str, np.ndarray]) -> tuple[int, int]:
    if not coords:
        raise ValueError("coords must hold at least one array")
    shapes = {key: np.shape(value) for key, value in coords.items()}
    first = next(iter(shapes.values()))
    if len(first) != 2 or first[1] not in (2, 3) or any(s != first for s in shapes.values()):
        raise ValueError(f"coords must be (n, 2) or (n, 3) arrays of one shape, got {shapes}")
    return first[0], first[1]


# --------------------------------------------------------------------------------------------- scatter
@dataclass(frozen=True)
class _TraceSpec:
    key: str
    rows: np.ndarray  # row indices of the array drawn by this trace
    name: str
    color: str
    symbol: str
    group: str
    showlegend: bool = True


def _rgba(color: str, alpha: float) -> str:
    """``#rrggbb`` -> ``rgba(r, g, b, alpha)``."""
    red, green, blue = (int(color.lstrip("#")[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({red}, {green}, {blue}, {alpha})"


def _palette(k: int) -> list[str]:
    base = qualitative.D3 if k <= 10 else qualitative.Alphabet
    return [base[i % len(base)] for i in range(k)]


def _trace_specs(keys: Sequence[str], info: PointInfo, color_by: str, dims: int) -> list[_TraceSpec]:
    def style(key: str) -> tuple[str, str, str]:
        if key in MODALITY_STYLE:
            name, color, sym2, sym3 = MODALITY_STYLE[key]
            return name, color, sym2 if dims == 2 else sym3
        return key, _OTHER_STYLE[0], _OTHER_STYLE[1] if dims == 2 else _OTHER_STYLE[2]

    if color_by == "modality":
        specs = []
        for key in keys:
            name, color, symbol = style(key)
            specs.append(_TraceSpec(key, np.arange(info.n), name, color, symbol, key))
        return specs
    labels = np.asarray(info.labels)
    names = info.label_names()
    values = sorted({int(v) for v in labels.tolist() if int(v) >= 0})
    groups = [(str(names[np.flatnonzero(labels == v)[0]]), labels == v) for v in values]
    if (labels < 0).any():
        groups.append(("unlabelled", labels < 0))
    colors = _palette(len(groups))
    specs = []
    for (group, mask), color in zip(groups, colors, strict=True):
        for i, key in enumerate(keys):
            modality, _, symbol = style(key)
            specs.append(
                _TraceSpec(key, np.flatnonzero(mask), f"{group} ({modality})", color, symbol, group, i == 0)
            )
    return specs


def _pair_rows(n: int, pair_lines: int) -> np.ndarray:
    if isinstance(pair_lines, bool) or not isinstance(pair_lines, (int, np.integer)) or pair_lines < 0:
        raise ValueError(f"pair_lines must be an integer >= 0, got {pair_lines!r}")
    k = min(int(pair_lines), n)
    # Evenly spaced rows: deterministic and spread over the probe set, which is shuffled by class.
    return np.unique(np.linspace(0, n - 1, k).round().astype(int)) if k else np.zeros(0, dtype=int)


def _segments(start: np.ndarray, end: np.ndarray) -> list[np.ndarray]:
    """Coordinates (one array per axis) of line segments start_i -> end_i separated by gaps (NaN)."""
    gap = np.full((start.shape[0], 1), np.nan, dtype=np.float32)
    return [
        np.hstack([start[:, j : j + 1], end[:, j : j + 1], gap]).astype(np.float32).ravel()
        for j in range(start.shape[1])
    ]


def _axis_arrays(points: np.ndarray) -> dict[str, np.ndarray]:
    # float32: plotly sends numpy arrays as typed arrays, so this halves the JSON the browser decodes;
    # 7 significant digits are far below a pixel.
    axes = ("x", "y", "z")
    return {axes[j]: np.ascontiguousarray(points[:, j], dtype=np.float32) for j in range(points.shape[1])}


def _frame_traces(
    coords: Mapping[str, np.ndarray], specs: list[_TraceSpec], pairs: np.ndarray, dims: int, gl: bool
) -> list[go.BaseTraceType]:
    """Position-only traces (pair lines first, then one per spec): what an animation frame replaces."""
    scatter = go.Scatter3d if dims == 3 else (go.Scattergl if gl else go.Scatter)
    traces = []
    if len(pairs) and "a" in coords and "b" in coords:
        seg = _segments(coords["a"][pairs], coords["b"][pairs])
        traces.append(scatter(**dict(zip("xyz", seg, strict=False))))
    for spec in specs:
        traces.append(scatter(**_axis_arrays(np.asarray(coords[spec.key])[spec.rows])))
    return traces


def _styled_traces(
    coords: Mapping[str, np.ndarray],
    specs: list[_TraceSpec],
    pairs: np.ndarray,
    info: PointInfo,
    dims: int,
    gl: bool,
    marker_size: float,
) -> list[go.BaseTraceType]:
    traces = _frame_traces(coords, specs, pairs, dims, gl)
    custom = info.customdata()
    has_lines = len(pairs) and "a" in coords and "b" in coords
    if has_lines:
        traces[0].update(
            mode="lines",
            line={"color": PAIR_LINE_COLOR, "width": 1},
            name="pairs",
            hoverinfo="skip",
            legendgroup="pairs",
        )
    hover = "id %{customdata[0]}<br>label %{customdata[1]}<br>%{customdata[2]}<extra>%{fullData.name}</extra>"
    for trace, spec in zip(traces[1:] if has_lines else traces, specs, strict=True):
        # Columns 3 and 4 (row and array) tell a selection which point of which array was picked.
        where = np.column_stack([spec.rows.astype(str), np.full(len(spec.rows), spec.key, dtype=object)])
        trace.update(
            mode="markers",
            name=spec.name,
            legendgroup=spec.group,
            showlegend=spec.showlegend,
            customdata=np.hstack([custom[spec.rows], where]),
            hovertemplate=hover,
            marker={
                "color": spec.color,
                "symbol": spec.symbol,
                "size": marker_size if dims == 2 else marker_size * 0.6,
                "opacity": 0.8,
                "line": {"width": 0},
            },
        )
    return traces


def _layout(fig: go.Figure, dims: int, bounds: np.ndarray | None, title: str | None, axis: str) -> None:
    fig.update_layout(
        title=title,
        template="plotly_white",
        legend={"itemsizing": "constant"},
        margin={"l": 10, "r": 10, "t": 50 if title else 20, "b": 10},
        height=600,
    )
    names = [f"{axis} {j + 1}" for j in range(dims)]
    if dims == 2:
        fig.update_xaxes(title=names[0], range=None if bounds is None else list(bounds[0]))
        # Equal scales: distances on the plot are distances in the projection.
        fig.update_yaxes(
            title=names[1], range=None if bounds is None else list(bounds[1]), scaleanchor="x", scaleratio=1
        )
    else:
        scene = {f"{a}axis": {"title": {"text": n}} for a, n in zip("xyz", names, strict=True)}
        if bounds is not None:
            for a, (low, high) in zip("xyz", bounds, strict=True):
                scene[f"{a}axis"]["range"] = [float(low), float(high)]
        fig.update_layout(scene={**scene, "aspectmode": "cube"})


def scatter_figure(
    coords: Mapping[str, np.ndarray],
    info: PointInfo | None = None,
    color_by: str = "modality",
    pair_lines: int = 200,
    title: str | None = None,
    bounds: np.ndarray | None = None,
    axis_title: str = "component",
    marker_size: float = 6.0,
    gl: bool | None = None,
) -> go.Figure:
    """Scatter of projected embeddings at one checkpoint.

    Args:
        coords: ``{array name: (n, dims)}`` with dims 2 or 3, e.g. ``Projection.at(step)``.
        info: Hover data for the n rows (ids, labels, captions); row numbers when None.
        color_by: ``"modality"`` (one colour per array) or ``"class"`` (one colour per label, the
            modality shown by the marker symbol).
        pair_lines: Draw a line from ``a[i]`` to ``b[i]`` for this many evenly spaced pairs (0: none).
        title: Figure title.
        bounds: ``(dims, 2)`` axis ranges (``Projection.bounds()``); autoscaled when None.
        axis_title: Axis name prefix ("PC" for PCA, "UMAP" for UMAP).
        marker_size: Marker size in pixels (2-D; 3-D markers are 0.6 of it).
        gl: Use WebGL for 2-D; default: when there are more than 4,000 points.

    Returns:
        The figure.

    Raises:
        ValueError: Bad coords, ``info`` of the wrong length, bad ``color_by`` or ``pair_lines``.
    """
    n, dims = _check_coords(coords)
    info = _check_info(info, n)
    specs = _trace_specs(list(coords), info, _check_color_by(color_by, info), dims)
    pairs = _pair_rows(n, pair_lines)
    gl = n * len(coords) > GL_THRESHOLD if gl is None else bool(gl)
    fig = go.Figure(_styled_traces(coords, specs, pairs, info, dims, gl, marker_size))
    _layout(fig, dims, bounds, title, axis_title)
    _explain_legend(fig, list(coords), color_by, dims)
    return fig


def _explain_legend(fig: go.Figure, keys: Sequence[str], color_by: str, dims: int) -> None:
    """Legend that says what colour and marker mean: with class colours, one grey entry per marker."""
    if color_by == "modality":
        fig.update_layout(legend_title_text="colour and marker: modality")
        return
    fig.update_layout(legend_title_text="colour: class · marker: modality")
    scatter = go.Scatter3d if dims == 3 else go.Scatter
    for key in keys:
        name, _, sym2, sym3 = MODALITY_STYLE.get(key, (key, "", _OTHER_STYLE[1], _OTHER_STYLE[2]))
        axes = {"x": [None], "y": [None]} | ({"z": [None]} if dims == 3 else {})
        fig.add_trace(
            scatter(
                **axes, mode="markers", name=f"marker: {name}", legendgroup="markers",
                marker={"color": "#888", "symbol": sym2 if dims == 2 else sym3, "size": 8},
                hoverinfo="skip", meta={"kind": "legend"},
            )
        )  # fmt: skip


def animated_figure(
    projection: Projection,
    info: PointInfo | None = None,
    color_by: str = "modality",
    pair_lines: int = 200,
    start_step: int | None = None,
    frame_ms: int = 700,
    title: str | None = None,
    marker_size: float = 6.0,
    gl: bool | None = None,
) -> go.Figure:
    """Every checkpoint of ``projection`` as an animation: a step slider and play/pause buttons.

    Axes are fixed to the range over all steps, so movement between checkpoints is visible.

    Args:
        projection: From ``workbench.viz.projection.run_projection`` / ``fit_projection``.
        info: Hover data (rows are the same items at every step).
        color_by, pair_lines, title, marker_size, gl: As in :func:`scatter_figure`.
        start_step: Checkpoint shown first (default: the last one).
        frame_ms: Milliseconds per frame when playing.

    Returns:
        The figure with one frame per step (frame names are the step numbers).

    Raises:
        ValueError: As :func:`scatter_figure`, an unknown ``start_step`` or ``frame_ms`` < 1.
    """
    if isinstance(frame_ms, bool) or not isinstance(frame_ms, int) or frame_ms < 1:
        raise ValueError(f"frame_ms must be a positive integer, got {frame_ms!r}")
    steps = list(projection.steps)
    start = projection.index(steps[-1] if start_step is None else start_step)
    dims = projection.dims
    info = _check_info(info, projection.n)
    specs = _trace_specs(list(projection.keys), info, _check_color_by(color_by, info), dims)
    pairs = _pair_rows(projection.n, pair_lines)
    gl = projection.n * len(projection.keys) > GL_THRESHOLD if gl is None else bool(gl)
    axis = "PC" if "pca" in projection.method else "UMAP"
    fig = go.Figure(
        _styled_traces(projection.at(steps[start]), specs, pairs, info, dims, gl, marker_size),
        frames=[
            go.Frame(data=_frame_traces(projection.at(step), specs, pairs, dims, gl), name=str(step))
            for step in steps
        ],
    )
    _layout(fig, dims, projection.bounds(), title, axis)
    play = {
        "frame": {"duration": frame_ms, "redraw": True},
        "fromcurrent": True,
        "transition": {"duration": 0},
    }
    pause = {"frame": {"duration": 0, "redraw": False}, "mode": "immediate", "transition": {"duration": 0}}
    fig.update_layout(
        updatemenus=[
            {
                "type": "buttons",
                "direction": "left",
                "x": 0.0,
                "y": -0.14,  # below the x-axis title
                "xanchor": "left",
                "yanchor": "top",
                "showactive": False,
                "buttons": [
                    {"label": "▶ play", "method": "animate", "args": [None, play]},
                    {"label": "❚❚ pause", "method": "animate", "args": [[None], pause]},
                ],
            }
        ],
        sliders=[
            {
                "active": start,
                "x": 0.18,
                "len": 0.82,
                "y": -0.12,
                "yanchor": "top",
                "currentvalue": {"prefix": "step ", "xanchor": "right"},
                "steps": [
                    {
                        "label": str(step),
                        "method": "animate",
                        "args": [[str(step)], {**pause, "frame": {"duration": 0, "redraw": True}}],
                    }
                    for step in steps
                ],
            }
        ],
        margin={"b": 150},
        height=700,
    )
    return fig


def sphere_figure(
    arrays: Mapping[str, np.ndarray],
    info: PointInfo | None = None,
    color_by: str = "modality",
    pair_lines: int = 200,
    title: str | None = None,
) -> go.Figure:
    """3-d embeddings drawn on a translucent unit sphere (rows normalised; no projection involved).

    Args:
        arrays: ``{array name: (n, 3)}`` raw embeddings, e.g. a snapshot's ``a`` and ``b``.
        info, color_by, pair_lines, title: As in :func:`scatter_figure`.

    Raises:
        ValueError: The arrays are not 3-d, plus the errors of :func:`scatter_figure`.
    """
    shapes = {key: np.shape(value) for key, value in arrays.items()}
    if not arrays or any(len(s) != 2 or s[1] != 3 for s in shapes.values()):
        raise ValueError(f"the unit-sphere view needs (n, 3) embeddings, got shapes {shapes}")
    unit = {key: normalise_rows(value, key) for key, value in arrays.items()}
    fig = scatter_figure(unit, info, color_by, pair_lines, title, np.array([[-1.05, 1.05]] * 3), "dim")
    u, v = np.meshgrid(np.linspace(0, 2 * np.pi, 40), np.linspace(0, np.pi, 20))
    fig.add_trace(
        go.Surface(
            x=np.cos(u) * np.sin(v),
            y=np.sin(u) * np.sin(v),
            z=np.cos(v),
            opacity=0.12,
            showscale=False,
            colorscale=[[0, "#9ecae1"], [1, "#9ecae1"]],
            hoverinfo="skip",
            name="unit sphere",
        )
    )
    return fig


# --------------------------------------------------------------------------------------------- overlays
def _as_points(points: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] not in (2, 3):
        raise ValueError(
            f"{name} must have shape (dims,) or (m, dims) with dims 2 or 3, got {np.shape(points)}"
        )
    return arr


def _figure_dims(fig: go.Figure) -> int:
    return 3 if any(t.type in ("scatter3d", "surface", "cone") for t in fig.data) else 2


def add_gap_arrow(
    fig: go.Figure, start: np.ndarray, end: np.ndarray, name: str = "gap vector", color: str = "#d62728"
) -> go.Figure:
    """Draw the gap vector as an arrow from ``start`` (the text centroid) to ``end`` (the image one).

    Both ends are positions in the figure's projection, e.g. ``Projection.place(step, centroid)``.
    In 2-D the arrow is an annotation, in 3-D a line with a cone at its tip.

    Returns:
        ``fig``, modified in place.

    Raises:
        ValueError: ``start``/``end`` not of the figure's dimension.
    """
    s, e = _as_points(start, "start")[0], _as_points(end, "end")[0]
    dims = _figure_dims(fig)
    if s.shape[0] != dims or e.shape[0] != dims:
        raise ValueError(
            f"start and end must be {dims}-D points for this figure, got {s.shape} and {e.shape}"
        )
    label = f"{name} (text → image centroid)"
    if dims == 2:
        fig.add_trace(
            go.Scatter(
                x=[s[0], e[0]],
                y=[s[1], e[1]],
                mode="markers",
                marker={"color": color, "size": 10, "symbol": ["diamond", "circle"], "line": {"width": 1}},
                name=label,
                hovertext=["text centroid", "image centroid"],
                hoverinfo="text",
            )
        )
        fig.add_annotation(
            x=e[0], y=e[1], ax=s[0], ay=s[1], xref="x", yref="y", axref="x", ayref="y",
            showarrow=True, arrowhead=3, arrowsize=1.5, arrowwidth=3, arrowcolor=color, text="",
        )  # fmt: skip
        return fig
    fig.add_trace(
        go.Scatter3d(
            x=[s[0], e[0]], y=[s[1], e[1]], z=[s[2], e[2]], mode="lines+markers", name=label,
            line={"color": color, "width": 8}, marker={"size": 4, "color": color},
        )
    )  # fmt: skip
    d = e - s
    fig.add_trace(
        go.Cone(
            x=[e[0]], y=[e[1]], z=[e[2]], u=[d[0]], v=[d[1]], w=[d[2]], anchor="tip",
            sizemode="absolute", sizeref=max(float(np.linalg.norm(d)) * 0.25, 1e-6),
            colorscale=[[0, color], [1, color]], showscale=False, hoverinfo="skip",
        )
    )  # fmt: skip
    return fig


def add_paths(
    fig: go.Figure,
    paths: np.ndarray,
    name: str = "bridge paths",
    color: str = "rgba(148, 103, 189, 0.55)",
    width: float = 1.5,
) -> go.Figure:
    """Draw paths (e.g. projected ``workbench.metrics.geometry.bridge_paths``) as one line trace.

    Args:
        fig: A figure of the same projection (2-D or 3-D).
        paths: ``(..., n_steps, dims)`` positions; every leading index is one path.
        name, color, width: Legend name and line style.

    Returns:
        ``fig``, modified in place.

    Raises:
        ValueError: ``paths`` not of shape ``(..., n_steps >= 2, dims)`` for this figure.
    """
    arr = np.asarray(paths, dtype=np.float64)
    dims = _figure_dims(fig)
    if arr.ndim < 2 or arr.shape[-1] != dims or arr.shape[-2] < 2:
        raise ValueError(f"paths must have shape (..., n_steps >= 2, {dims}), got {arr.shape}")
    flat = arr.reshape(-1, arr.shape[-2], dims)
    gap = np.full((flat.shape[0], 1, dims), np.nan)
    joined = np.concatenate([flat, gap], axis=1).reshape(-1, dims)
    axes = _axis_arrays(joined)
    line = {"color": color, "width": width}
    if dims == 2:
        fig.add_trace(go.Scatter(**axes, mode="lines", line=line, name=name, hoverinfo="skip"))
    else:
        fig.add_trace(go.Scatter3d(**axes, mode="lines", line=line, name=name, hoverinfo="skip"))
    # Overlays go underneath the markers they connect: move the new trace to the front of the list.
    fig.data = (fig.data[-1], *fig.data[:-1])
    return fig


def add_points(
    fig: go.Figure,
    points: np.ndarray,
    name: str,
    color: str = "#9467bd",
    symbol: str = "x",
    size: float = 7.0,
    hovertext: Sequence[str] | None = None,
) -> go.Figure:
    """Add a set of projected points (bridge means, augmented views, centroids) as one trace.

    Returns:
        ``fig``, modified in place.

    Raises:
        ValueError: ``points`` not ``(m, dims)`` for this figure, or ``hovertext`` of another length.
    """
    arr = _as_points(points, "points")
    dims = _figure_dims(fig)
    if arr.shape[1] != dims:
        raise ValueError(f"points must be {dims}-D for this figure, got shape {arr.shape}")
    if hovertext is not None and len(hovertext) != arr.shape[0]:
        raise ValueError(f"hovertext must have {arr.shape[0]} entries, got {len(hovertext)}")
    if dims == 3 and symbol not in (
        "circle",
        "circle-open",
        "cross",
        "diamond",
        "diamond-open",
        "square",
        "x",
    ):
        symbol = "cross"
    trace = go.Scatter3d if dims == 3 else go.Scatter
    fig.add_trace(
        trace(
            **_axis_arrays(arr),
            mode="markers",
            name=name,
            marker={"color": color, "symbol": symbol, "size": size if dims == 2 else size * 0.6},
            hovertext=list(hovertext) if hovertext is not None else None,
            hoverinfo="text+name" if hovertext is not None else "name",
        )
    )
    return fig


# --------------------------------------------------------------------------------------------- gap + spectra
def per_dimension_gap_figure(
    x: np.ndarray, y: np.ndarray, top: int = 32, title: str | None = None
) -> go.Figure:
    """Bars of ``|mean x_d - mean y_d|`` for the ``top`` dimensions carrying most of the gap, and the
    cumulative share of the squared gap over all dimensions (Schrodi et al. 2025).

    Args:
        x, y: Paired ``(n, d)`` embeddings (normalised internally, as in ``workbench.metrics.geometry``).
        top: Bars drawn, >= 1 (capped at d).
        title: Figure title.

    Raises:
        ValueError: Invalid embeddings or ``top`` < 1.
    """
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
        raise ValueError(f"top must be an integer >= 1, got {top!r}")
    gap = gap_vector(x, y)
    order = np.argsort(-np.abs(gap), kind="stable")
    mags = np.abs(gap)[order]
    share = np.cumsum(mags**2) / max(float((mags**2).sum()), 1e-30)
    k = min(int(top), gap.shape[0])
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    labels = [f"d{int(i)}" for i in order]
    fig.add_trace(
        go.Bar(
            x=labels[:k],
            y=mags[:k],
            name="|mean image − mean text|",
            marker_color=["#1f77b4" if gap[i] >= 0 else "#ff7f0e" for i in order[:k]],
            hovertext=[f"signed gap {gap[i]:+.4f}" for i in order[:k]],
        ),
        secondary_y=False,
    )
    fig.add_trace(
        go.Scatter(x=labels[:k], y=share[:k], mode="lines+markers", name="cumulative share of gap²"),
        secondary_y=True,
    )
    fig.update_layout(
        title=title,
        template="plotly_white",
        height=430,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        legend=_LEGEND_BELOW,
    )
    fig.update_xaxes(title=f"top {k} of {gap.shape[0]} dimensions (blue: image mean larger)")
    fig.update_yaxes(title="|gap| per dimension", secondary_y=False)
    fig.update_yaxes(title="cumulative share", range=[0, 1.02], secondary_y=True)
    return fig


def singular_spectrum_figure(x: np.ndarray, y: np.ndarray, title: str | None = None) -> go.Figure:
    """Normalised singular values of x, y and ``[x; y]`` (``workbench.metrics.geometry.singular_spectrum``),
    log scale, with each matrix's effective rank in the legend.

    Raises:
        ValueError: Invalid embeddings.
    """
    from workbench.metrics.geometry import singular_spectrum

    spectra = singular_spectrum(x, y)
    fig = go.Figure()
    for key, name in (("x", "image"), ("y", "text"), ("joint", "image + text")):
        p = spectra[key]
        positive = p[p > 0]
        erank = float(np.exp(-(positive * np.log(positive)).sum()))
        fig.add_trace(
            go.Scatter(
                x=np.flatnonzero(p > 0) + 1,
                y=positive,
                mode="lines+markers",
                name=f"{name} (eff. rank {erank:.1f})",
            )
        )
    fig.update_layout(
        title=title,
        template="plotly_white",
        height=430,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        legend=_LEGEND_BELOW,
    )
    fig.update_xaxes(title="index k")
    fig.update_yaxes(title="s_k / Σ s", type="log")
    return fig


def metrics_figure(
    tables: Mapping[str, pd.DataFrame],
    metrics: Sequence[str],
    cols: int = 3,
    title: str | None = None,
    marker_step: int | None = None,
) -> go.Figure:
    """Measures over training, one subplot per measure, one line per run (same colour everywhere).

    Args:
        tables: ``{run label: DataFrame with a step column and the metric columns}`` (e.g.
            ``Run.metrics``); rows where a metric is NaN are skipped, runs lacking it are left out.
            A column ``<metric>_std`` (``workbench.metrics.seeds.mean_std_over_seeds``) is drawn as a
            band of ± one standard deviation around the line.
        metrics: Column names, one subplot each (at least one).
        cols: Subplots per row.
        title: Figure title.
        marker_step: Draw a vertical dotted line at this step (the checkpoint being looked at).

    Raises:
        ValueError: No metrics, ``cols`` < 1, or a table without a ``step`` column.
    """
    metrics = list(metrics)
    if not metrics:
        raise ValueError("metrics must name at least one column")
    if isinstance(cols, bool) or not isinstance(cols, int) or cols < 1:
        raise ValueError(f"cols must be a positive integer, got {cols!r}")
    for label, df in tables.items():
        if "step" not in df.columns:
            raise ValueError(f"table {label!r} has no 'step' column; columns: {list(df.columns)}")
    cols = min(cols, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    # Readable titles with the direction and unit (workbench.metrics.names), not raw column names.
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=[names.title(m) for m in metrics],
        vertical_spacing=0.14 if rows > 1 else 0.1,
    )
    colors = _palette(len(tables))
    for (label, df), color in zip(tables.items(), colors, strict=True):
        shown = False
        for i, metric in enumerate(metrics):
            if metric not in df.columns:
                continue
            part = df[["step", metric]].dropna().sort_values("step")
            if part.empty:
                continue
            where = {"row": i // cols + 1, "col": i % cols + 1}
            if f"{metric}_std" in df.columns:
                spread = df.loc[part.index, f"{metric}_std"].fillna(0.0).to_numpy(float)
                x, y = part["step"].to_numpy(), part[metric].to_numpy(float)
                fig.add_trace(
                    go.Scatter(
                        x=np.concatenate([x, x[::-1]]), y=np.concatenate([y + spread, (y - spread)[::-1]]),
                        mode="lines", fill="toself", fillcolor=_rgba(color, 0.15), line={"width": 0},
                        hoverinfo="skip", showlegend=False, legendgroup=label, name=f"{label} ± std",
                    ),
                    **where,
                )  # fmt: skip
            fig.add_trace(
                go.Scatter(
                    x=part["step"], y=part[metric], mode="lines+markers", name=label, legendgroup=label,
                    showlegend=not shown, line={"color": color}, marker={"color": color, "size": 6},
                    hovertemplate=f"{label}<br>step %{{x}}<br>{names.describe(metric).label} = "
                    "%{y:.3g}<extra></extra>",
                ),
                **where,
            )  # fmt: skip
            shown = True
    if marker_step is not None:
        for i in range(len(metrics)):
            fig.add_vline(
                x=marker_step, line={"dash": "dot", "color": "#888"}, row=i // cols + 1, col=i % cols + 1
            )
    fig.update_layout(
        title=title,
        template="plotly_white",
        height=260 * rows + 80,
        margin={"l": 10, "r": 10, "t": 60, "b": 10},
        legend={"orientation": "h", "y": -0.08},
    )
    fig.update_xaxes(title_text="step", row=rows)
    fig.update_yaxes(tickformat=".3g", title_font_size=10)
    for i, metric in enumerate(metrics):  # the unit on each panel's y axis, the direction in its title
        fig.update_yaxes(title_text=names.describe(metric).unit, row=i // cols + 1, col=i % cols + 1)
    fig.update_annotations(font_size=12)  # the subplot titles, now longer
    return fig


# --------------------------------------------------------------------------------------------- what-if
def whatif_figure(curve: pd.DataFrame, current: float | None = None, title: str | None = None) -> go.Figure:
    """Loss and centroid gap against the shift along the gap vector (:func:`gap_shift_curve`).

    Args:
        curve: Output of :func:`gap_shift_curve`.
        current: Shift to mark with a vertical line (the slider's value).
        title: Figure title.

    Raises:
        ValueError: ``curve`` lacks the columns of :func:`gap_shift_curve`.
    """
    needed = {"shift", "loss", "centroid_gap"}
    if not needed <= set(curve.columns):
        raise ValueError(f"curve must have columns {sorted(needed)}, got {list(curve.columns)}")
    curve = curve.sort_values("shift")
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Scatter(x=curve["shift"], y=curve["loss"], mode="lines+markers", name="loss"))
    fig.add_trace(
        go.Scatter(
            x=curve["shift"],
            y=curve["centroid_gap"],
            mode="lines",
            name="centroid gap",
            line={"dash": "dash"},
        ),
        secondary_y=True,
    )
    best = curve.loc[curve["loss"].idxmin()]
    fig.add_trace(
        go.Scatter(
            x=[best["shift"]],
            y=[best["loss"]],
            mode="markers",
            name=f"lowest loss (shift {best['shift']:.2f})",
            marker={"symbol": "star", "size": 14, "color": "#2ca02c"},
        )
    )
    if current is not None:
        fig.add_vline(x=float(current), line={"dash": "dot", "color": "#d62728"})
    fig.update_layout(
        title=title, template="plotly_white", height=400, margin={"l": 10, "r": 10, "t": 50, "b": 10}
    )
    fig.update_xaxes(title="shift along the gap vector (0 = trained embeddings, 1 = centroids met)")
    fig.update_yaxes(title="contrastive loss", secondary_y=False)
    fig.update_yaxes(title="centroid gap", secondary_y=True)
    return fig
