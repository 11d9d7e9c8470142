"""Widget controls that redraw a figure in place: live in JupyterLab, static in an export.

:func:`show_linked` displays the controls above an ``ipywidgets.Output`` that holds the figure, and
redraws it by assigning the Output's ``outputs`` whenever a control changes. Assigning that state is
what makes a redraw reach JupyterLab and Notebook 7: a plain ``update_display_data`` sent from a widget
callback carries the comm message as its parent, which no cell of JupyterLab listens to, so the
figure there never changed (the kernel did receive the new value). The Output is never used as a
context manager, so nothing depends on the front end capturing output either; headless execution
(papermill / nbclient, which emulates that capture and intermittently deadlocked on it) just saves
the widget state.

Below the widget the same figure is displayed once more as static HTML
(``workbench.viz.notebook.static_figure_html``): it is what an HTML export or a viewer without a
kernel shows, and it hides itself while the live widget is on screen.

The controls are passed in (notebooks create them); ipywidgets is imported when the figure is shown.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from workbench.viz.notebook import figure_bundle, static_figure_html

__all__ = ["LinkedFigure", "show_linked"]


class LinkedFigure:
    """The live part of :func:`show_linked`: the Output widget and the figures it shows.

    Attributes:
        output: The ``ipywidgets.Output`` holding the figure(s).
        figures: The figures drawn last.
        error: The message of the last failed redraw, or None.
    """

    def __init__(self, build: Callable[..., Any], controls: Mapping[str, Any], output: Any) -> None:
        self._build = build
        self._controls = controls
        self.output = output
        self.figures: list[Any] = []
        self.error: str | None = None

    def values(self) -> dict[str, Any]:
        """The current value of every control, by argument name."""
        return {name: widget.value for name, widget in self._controls.items()}

    def draw(self) -> None:
        """Build the figure(s) for the current values and put them in the Output widget (raises)."""
        figures = _as_list(self._build(**self.values()))
        self.error = None
        self.figures = figures
        self.output.outputs = tuple(
            {"output_type": "display_data", "data": figure_bundle(fig), "metadata": {}} for fig in figures
        )

    def redraw(self, _change: object = None) -> None:
        """:meth:`draw`, for a control's callback: a failure (e.g. a combination of values without
        data) is shown in place of the figure, since a callback has no cell to raise into."""
        try:
            self.draw()
        except Exception as err:  # shown to the user; the kernel keeps running
            self.error = f"{type(err).__name__}: {err}"
            text = "".join(traceback.format_exception_only(type(err), err))
            self.output.outputs = ({"output_type": "stream", "name": "stderr", "text": text},)


def _as_list(result: Any) -> list[Any]:
    if isinstance(result, Sequence) and not isinstance(result, (str, bytes)):
        figures = list(result)
    else:
        figures = [result]
    if not figures:
        raise ValueError("build must return a figure or a non-empty sequence of figures")
    return figures


def show_linked(
    build: Callable[..., Any], controls: Mapping[str, Any], box: Any | None = None, static: bool = True
) -> LinkedFigure:
    """Display ``controls`` and ``build(**values)`` below them; redraw it whenever a control changes.

    Args:
        build: Returns a plotly figure, or a sequence of figures, for keyword arguments named like
            ``controls``.
        controls: ``{argument name: widget}``; each widget has ``.value`` and ``.observe`` (ipywidgets).
        box: An ipywidgets container holding the controls (e.g. ``HBox(list(controls.values()))``);
            None stacks them vertically.
        static: Also display the first figure(s) as static HTML for viewers without a kernel.

    Returns:
        The :class:`LinkedFigure` (its ``output`` is the live widget).

    Raises:
        ValueError: No controls, or a control without ``value`` / ``observe``.
    """
    if not controls:
        raise ValueError("controls must hold at least one widget")
    for name, widget in controls.items():
        if not (hasattr(widget, "value") and callable(getattr(widget, "observe", None))):
            raise ValueError(f"controls[{name!r}] must be a widget with .value and .observe")
    import ipywidgets as widgets
    from IPython.display import HTML, display

    linked = LinkedFigure(build, controls, widgets.Output())
    linked.draw()  # the first figure is drawn while the cell runs: a failure fails the cell
    controls_box = box if box is not None else widgets.VBox(list(controls.values()))
    display(widgets.VBox([controls_box, linked.output]))
    if static:
        display(HTML(static_figure_html(linked.figures)))
    for widget in controls.values():
        widget.observe(linked.redraw, names="value")
    return linked
