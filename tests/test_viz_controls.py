"""workbench.viz.controls and workbench.viz.notebook: live widget figures and their static copies."""

from __future__ import annotations

import ipywidgets as widgets
import plotly.graph_objects as go
import plotly.io as pio
import pytest

from workbench.viz import notebook
from workbench.viz.controls import show_linked


def _figure(title: str) -> go.Figure:
    return go.Figure(go.Scatter(x=[1, 2], y=[3, 4]), layout_title_text=title)


def _titles(output) -> list[str]:
    return [o["data"]["application/vnd.plotly.v1+json"]["layout"]["title"]["text"] for o in output.outputs]


@pytest.fixture()
def shown(monkeypatch):
    """What show_linked displays, in order (outside a kernel IPython would print reprs)."""
    import IPython.display

    objects = []
    monkeypatch.setattr(IPython.display, "display", lambda *args, **kwargs: objects.extend(args))
    return objects


def test_every_change_redraws_the_output_widget_with_all_current_values(shown):
    calls = []

    def build(loss, batch_size):
        calls.append((loss, batch_size))
        return _figure(f"{loss}, batch size {batch_size}")

    loss = widgets.Dropdown(options=["clip", "bayes"], value="clip")
    batch = widgets.SelectionSlider(options=[16, 64], value=16)
    linked = show_linked(build, {"loss": loss, "batch_size": batch})
    assert _titles(linked.output) == ["clip, batch size 16"]
    batch.value = 64
    loss.value = "bayes"
    assert calls == [("clip", 16), ("clip", 64), ("bayes", 64)]
    # The redraw is a change of the widget's state (what JupyterLab renders), not a display update.
    assert _titles(linked.output) == ["bayes, batch size 64"]
    bundle = linked.output.outputs[0]["data"]
    assert set(bundle) == {"application/vnd.plotly.v1+json", "text/plain"}
    # The widget (controls above the Output), then the static copy of the first figure.
    assert isinstance(shown[0], widgets.VBox) and shown[0].children[1] is linked.output
    assert notebook.STATIC_CLASS in shown[1].data and "clip, batch size 16" in shown[1].data


def test_a_build_may_return_several_figures(shown):
    slider = widgets.IntSlider(value=1, min=1, max=3)
    linked = show_linked(lambda k: [_figure(f"a{k}"), _figure(f"b{k}")], {"k": slider}, static=False)
    slider.value = 2
    assert _titles(linked.output) == ["a2", "b2"]


def test_a_failing_redraw_is_shown_in_place_of_the_figure_and_the_first_one_raises(shown):
    def build(k):
        if k == 2:
            raise KeyError("no data for k=2")
        return _figure(f"k={k}")

    slider = widgets.IntSlider(value=1, min=1, max=3)
    linked = show_linked(build, {"k": slider}, static=False)
    slider.value = 2
    assert linked.error == "KeyError: 'no data for k=2'"
    assert linked.output.outputs[0]["output_type"] == "stream"
    assert "no data for k=2" in linked.output.outputs[0]["text"]
    slider.value = 3
    assert linked.error is None and _titles(linked.output) == ["k=3"]
    with pytest.raises(KeyError, match="no data"):
        show_linked(build, {"k": widgets.IntSlider(value=2, min=1, max=3)})


def test_controls_must_be_widgets():
    with pytest.raises(ValueError, match="controls must hold at least one widget"):
        show_linked(lambda: None, {})
    with pytest.raises(ValueError, match=r"controls\['loss'\] must be a widget"):
        show_linked(lambda loss: None, {"loss": "clip"})


def test_setup_figures_adds_html_without_plotlyjs_or_cdn(shown):
    previous = pio.renderers.default
    try:
        notebook.setup_figures()
        assert len(shown) == 1 and notebook.PLOTLYJS_MARKER in shown[0].data  # plotly.js, once
        bundle = pio.renderers._build_mime_bundle(_figure("t").to_dict())
        assert set(bundle) == {"application/vnd.plotly.v1+json", "text/html"}
        html = bundle["text/html"]
        assert "Plotly.newPlot" in html and "cdn" not in html.lower() and len(html) < 20_000
    finally:
        pio.renderers.default = previous


def test_plotlyjs_is_inline_and_defines_window_plotly():
    script = notebook.plotlyjs_html()
    assert script.startswith("<script") and "window.Plotly" in script and len(script) > 1_000_000
    assert "src=" not in script[:200]


def test_static_copy_hides_itself_next_to_a_live_widget():
    html = notebook.static_figure_html([_figure("one"), _figure("two")])
    assert html.count("Plotly.newPlot") == 2
    assert ".jp-Cell-outputArea:has(.widget-output)" in html and "display: none" in html
    with pytest.raises(ValueError, match="fig must be a plotly Figure"):
        notebook.figure_html("not a figure")
