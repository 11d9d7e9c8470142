"""Plotly figures in notebooks that stay visible without a kernel.

A figure displayed in a notebook is normally saved only as ``application/vnd.plotly.v1+json``, which
JupyterLab draws with its plotly extension but an HTML export (``jupyter nbconvert --to html``), a
notebook viewer or any front end without that extension does not draw at all. :func:`setup_figures`
fixes that for the rest of the kernel session:

* it displays plotly.js once, inline (no CDN: the machines this runs on may be offline), which
  defines ``window.Plotly`` for every later figure of the page;
* it registers a plotly renderer that adds a ``text/html`` representation beside the JSON. The
  HTML is a ``<div>`` and a ``Plotly.newPlot`` call, without plotly.js or MathJax, so each figure
  costs its data only.

JupyterLab and Notebook 7 keep drawing the JSON (their plotly renderer ranks above HTML); nbconvert
picks the HTML. :func:`static_figure_html` is the same HTML for figures that live in a widget
(``workbench.viz.controls.show_linked``), wrapped so that it hides itself while the live widget is on
screen (a CSS rule on the cell's output area, no script).
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio

__all__ = [
    "RENDERER",
    "STATIC_CLASS",
    "figure_bundle",
    "figure_html",
    "plotlyjs_html",
    "setup_figures",
    "static_figure_html",
]

#: Name of the renderer :func:`setup_figures` registers with ``plotly.io.renderers``.
RENDERER = "workbench_html"
#: CSS class of the static copy of a widget figure (see :func:`static_figure_html`).
STATIC_CLASS = "workbench-static-figure"
#: Marks the output holding plotly.js, so tests and readers can find it.
PLOTLYJS_MARKER = "workbench-plotlyjs"
# While a live widget output is in the same cell (JupyterLab, Notebook 7, classic), the static copy is
# hidden; a page without the widget manager (an HTML export offline) never gets .widget-output, so
# the copy shows there.
_HIDE_WHEN_LIVE = (
    f".jp-Cell-outputArea:has(.widget-output) .{STATIC_CLASS},"
    f" .output:has(.widget-output) .{STATIC_CLASS} {{display: none;}}"
)
_DEFAULT_HEIGHT = 500


def _as_figure(fig: go.Figure | Mapping[str, Any]) -> go.Figure:
    if isinstance(fig, go.Figure):
        return fig
    if isinstance(fig, Mapping):
        return go.Figure(fig, skip_invalid=True)
    raise ValueError(f"fig must be a plotly Figure or a figure dict, got {type(fig).__name__}")


def figure_html(fig: go.Figure | Mapping[str, Any], div_id: str | None = None) -> str:
    """The figure as an HTML fragment that draws it with an already loaded ``window.Plotly``.

    Args:
        fig: A plotly figure (or its dict).
        div_id: Id of the figure's ``<div>`` (default: a random one).

    Returns:
        ``<div>`` plus ``<script>``; no plotly.js, no MathJax, no network access.
    """
    figure = _as_figure(fig)
    height = figure.layout.height or _DEFAULT_HEIGHT
    return pio.to_html(
        figure,
        include_plotlyjs=False,
        include_mathjax=False,
        full_html=False,
        div_id=div_id,
        default_height=f"{int(height)}px",
        default_width="100%",
        validate=False,
        config={"displaylogo": False},
    )


def plotlyjs_html() -> str:
    """plotly.js inline in a ``<script>``: defines ``window.Plotly`` for the figures that follow."""
    from plotly.offline import get_plotlyjs

    # The bundle ends with `window.Plotly = Plotly`; no AMD/require path, so it works with or without
    # require.js on the page.
    return f'<script type="text/javascript" class="{PLOTLYJS_MARKER}">{get_plotlyjs()}</script>'


def figure_bundle(fig: go.Figure) -> dict[str, Any]:
    """MIME bundle of a figure: the plotly JSON (live front ends) and ``text/plain``.

    The JSON is what ``plotly.io``'s own ``plotly_mimetype`` renderer sends; JupyterLab's plotly
    extension draws it, also inside an ``ipywidgets.Output``.
    """
    figure = _as_figure(fig)
    data = json.loads(pio.to_json(figure, validate=False))
    data.setdefault("config", {})["displaylogo"] = False
    title = figure.layout.title.text or "plotly figure"
    return {"application/vnd.plotly.v1+json": data, "text/plain": f"<Figure: {title}>"}


def static_figure_html(figures: Sequence[go.Figure]) -> str:
    """Static copies of widget figures, shown where no live widget is (an HTML export, a viewer).

    Args:
        figures: The figures the widget shows now.

    Returns:
        HTML that draws the figures with ``window.Plotly`` (see :func:`setup_figures`) and hides
        itself in a cell that also holds a live ``ipywidgets.Output``.
    """
    body = "\n".join(figure_html(fig) for fig in figures)
    note = html.escape("Static copy of the figure above as it was when the cell ran (no kernel needed).")
    return (
        f"<style>{_HIDE_WHEN_LIVE}</style>"
        f'<div class="{STATIC_CLASS}" title="{note}">{body}</div>'
    )


class _HtmlRenderer(pio.base_renderers.MimetypeRenderer):
    """plotly.io renderer adding ``text/html`` (without plotly.js) to a figure's bundle."""

    def to_mimebundle(self, fig_dict: dict) -> dict[str, str]:
        return {"text/html": figure_html(fig_dict)}


def setup_figures(display_plotlyjs: bool = True) -> None:
    """Make every later plotly figure of this kernel carry a ``text/html`` representation.

    Call once near the top of a notebook. The renderer stays ``plotly_mimetype`` plus the HTML, so a
    live JupyterLab still draws the JSON.

    Args:
        display_plotlyjs: Display plotly.js (4-5 MB, once per notebook) so the HTML can draw offline.
    """
    pio.renderers[RENDERER] = _HtmlRenderer()
    pio.renderers.default = f"plotly_mimetype+{RENDERER}"
    if display_plotlyjs:
        from IPython.display import HTML, display

        display(HTML(plotlyjs_html()))
