"""Widget controls that redraw a figure in place, safe to execute headless.

``ipywidgets.interact`` draws into an ``Output`` widget. Executed headless (papermill / nbclient),
that output is captured through nbclient's emulation of the front end, which answers the kernel on
the shell channel while the cell still runs; this intermittently deadlocks the execution (observed
here about one run in four; jupyter/nbclient#312, jupyter/nbconvert#2029). :func:`show_linked`
avoids the ``Output`` widget: the figure is an ordinary display output with a display id, and a
change of any control replaces it with ``update_display_data``. Headless, the controls and the
initial figure are saved in the notebook like any other output; interactively, moving a control
redraws the figure.

The controls are passed in, so this module does not import ipywidgets (notebooks create them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["show_linked"]


def show_linked(build: Callable[..., Any], controls: Mapping[str, Any], box: Any | None = None) -> Any:
    """Display ``controls`` and ``build(**values)`` below them; redraw it whenever a control changes.

    Args:
        build: returns a displayable object (a plotly figure) for keyword arguments named like
            ``controls``.
        controls: ``{argument name: widget}``; each widget has ``.value`` and ``.observe`` (ipywidgets).
        box: an ipywidgets container holding the controls (e.g. ``HBox(list(controls.values()))``);
            None displays the controls one after the other.

    Returns:
        The IPython display handle of the figure.

    Raises:
        ValueError: no controls, or a control without ``value`` / ``observe``.
    """
    from IPython.display import DisplayHandle, display

    if not controls:
        raise ValueError("controls must hold at least one widget")
    for name, widget in controls.items():
        if not (hasattr(widget, "value") and callable(getattr(widget, "observe", None))):
            raise ValueError(f"controls[{name!r}] must be a widget with .value and .observe")

    def values() -> dict[str, Any]:
        return {name: widget.value for name, widget in controls.items()}

    if box is not None:
        display(box)
    else:
        for widget in controls.values():
            display(widget)
    handle = DisplayHandle()
    handle.display(build(**values()))

    def redraw(_change: object) -> None:
        handle.update(build(**values()))

    for widget in controls.values():
        widget.observe(redraw, names="value")
    return handle
