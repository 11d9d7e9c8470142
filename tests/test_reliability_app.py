"""The dashboard on a store with damaged files and a stopped run: warnings naming the file, no traceback.

The store is written with ``RunWriter`` directly (no training), so the whole file takes seconds plus the
first AppTest run's imports.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from workbench.store.runs import RunWriter, load_run
from workbench.viz.projection import run_projection

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
from app.serve import APP, CHROMIUM, CHROMIUM_ARGS, serve  # noqa: E402

CONFIG = {"dataset": "digits_captions", "loss": "clip", "steps": 2}
TIMEOUT = 90


def _run(root: Path, run_id: str, finish: bool = True) -> RunWriter:
    rng = np.random.default_rng(len(run_id))
    w = RunWriter.create({**CONFIG, "seed": len(run_id)}, run_id=run_id, root=root)
    for step in (1, 2):
        a = rng.normal(size=(12, 4)) + 1.0
        w.save_snapshot(step, {"a": a, "b": a + rng.normal(size=(12, 4)), "labels": np.arange(12) % 3})
        w.log(step, centroid_gap=0.5 / step, uniformity=-1.0, train_loss=1.0 / step)
    if finish:
        w.finish({"train_loss": 0.5})
    else:
        w.flush()
        w.close()  # the process is "gone": status.json still says running
    return w


@pytest.fixture()
def home(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "runs"
    _run(root, "good")
    text = _run(root, "textcell").path / "metrics.csv"
    text.write_text(text.read_text().replace("0.25,", "abc,"))
    _run(root, "stopped", finish=False)
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    return tmp_path


def _app(page: str, run: str):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.query_params["run"] = run
    at.run()
    at.switch_page(f"app_pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _warnings(at) -> str:
    return "\n".join(str(w.value) for w in at.warning)


def test_comparing_with_a_run_whose_metrics_have_a_text_cell(home):
    at = _app("modality_gap", "good")
    at.multiselect(key="gap-compare").select("textcell").run()
    assert not at.exception, [e.value for e in at.exception]
    assert "textcell/metrics.csv is damaged (1 cell(s) are not numbers" in _warnings(at)
    assert len(at.get("plotly_chart")) >= 1
    shown = _app("modality_gap", "textcell")  # the damaged run itself, what-if slider included
    assert "metrics.csv is damaged" in _warnings(shown) and not shown.error


def test_a_damaged_projection_cache_is_rebuilt(home):
    run = load_run("good", root=home / "runs")
    first = run_projection(run)
    caches = list((run.path / "cache" / "projections").iterdir())
    assert len(caches) == 1
    caches[0].write_bytes(b"PK\x03\x04 not a zip any more")  # BadZipFile
    again = run_projection(run)
    np.testing.assert_allclose(again.coords, first.coords)
    assert np.load(caches[0])["coords"].shape == first.coords.shape  # written afresh
    caches[0].unlink()
    caches[0].mkdir()  # even a folder in its place only costs a recomputation
    np.testing.assert_allclose(run_projection(run).coords, first.coords)
    caches[0].rmdir()
    caches[0].write_bytes(b"garbage")
    at = _app("geometry", "good")
    assert not at.error and len(at.get("plotly_chart")) >= 1


def test_a_stopped_run_says_so(home):
    at = _app("geometry", "stopped")
    assert "stopped at step 2 without finishing" in _warnings(at)
    assert "still running" not in _warnings(at)
    from streamlit.testing.v1 import AppTest

    runs = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    table = runs.dataframe[0].value.set_index("run_id")
    assert table.loc["stopped", "status"] == "stopped" and table.loc["good", "status"] == "complete"
    assert "1 stopped" in _warnings(runs)


@pytest.mark.slow
@pytest.mark.parametrize(("address", "shown"), [("0.0.0.0", False), ("127.0.0.1", True)])
def test_a_server_on_every_interface_shows_no_page(home, tmp_path, address, shown):
    """However the server was started (here without .streamlit/config.toml: cwd is a temp folder)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM}")
    playwright = pytest.importorskip("playwright.sync_api")
    with serve(home, cwd=tmp_path, address=address) as url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(f"{url}/geometry?run=good", wait_until="domcontentloaded", timeout=60_000)
        if shown:
            page.wait_for_selector("h1", timeout=90_000)
            assert "has no authentication" not in page.inner_text("body")
        else:
            page.wait_for_selector("text=has no authentication", timeout=90_000)
            body = page.inner_text("body")
            assert "listens on address 0.0.0.0" in body and "WORKBENCH_APP_PUBLIC=1" in body
            assert page.locator("h1").count() == 0 and page.locator(".js-plotly-plot").count() == 0
        browser.close()
