"""workbench.viz.controls: controls redraw the figure through its display handle."""

from __future__ import annotations

import pytest

from workbench.viz.controls import show_linked


class FakeWidget:
    """The two things show_linked uses of an ipywidget: value and observe."""

    def __init__(self, value):
        self.value = value
        self.observers = []

    def observe(self, callback, names):
        assert names == "value"
        self.observers.append(callback)

    def set(self, value):
        self.value = value
        for callback in self.observers:
            callback({"new": value})


def test_every_change_rebuilds_the_figure_with_all_current_values(monkeypatch):
    calls, updates = [], []

    def build(loss, batch_size):
        calls.append((loss, batch_size))
        return f"figure {loss} {batch_size}"

    loss, batch = FakeWidget("clip"), FakeWidget(16)
    handle = show_linked(build, {"loss": loss, "batch_size": batch})
    monkeypatch.setattr(handle, "update", updates.append)
    batch.set(64)
    loss.set("bayes")
    assert calls == [("clip", 16), ("clip", 64), ("bayes", 64)]
    assert updates == ["figure clip 64", "figure bayes 64"]


def test_controls_must_be_widgets():
    with pytest.raises(ValueError, match="controls must hold at least one widget"):
        show_linked(lambda: None, {})
    with pytest.raises(ValueError, match=r"controls\['loss'\] must be a widget"):
        show_linked(lambda loss: None, {"loss": "clip"})
