"""The five notebooks as a user meets them: in a live JupyterLab, and exported to HTML without a kernel.

Both tests start from the notebooks executed headless at the tiny parameters of ``workbench demo
--quick`` (built once per module, a few minutes on 2 cores) and drive Debian's chromium with Playwright:

* JupyterLab: open each executed notebook, run all cells in a live kernel (the runs are reused from
  the store), change one control of a linked figure and check that the figure's title or traces
  change, and that the static copy of every widget figure is hidden next to the live widget;
* ``jupyter nbconvert --to html`` of each executed notebook, opened offline: every figure is drawn.

Screenshots are saved under ``$WORKBENCH_SCREENSHOTS`` (or the test's temporary folder).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from browser_support import ensure_chromium, jupyterlab, screenshot_dir

pytestmark = pytest.mark.slow

# Per notebook: how many linked (widget) figures it shows, and the control changed in the first one.
LINKED = {
    "01_gradient_bias": (3, "dropdown"),
    "02_small_batch_convergence": (2, "dropdown"),
    "03_modality_structure": (1, "dropdown"),
    "04_batch_size_sweep": (1, "slider"),
    "05_your_embeddings": (1, "toggle"),
}
# Title and trace types and names of a plotly graph div: what a redraw must change.
SIGNATURE = (
    "el => JSON.stringify([el.layout && el.layout.title && el.layout.title.text,"
    " el.layout && el.layout.yaxis && el.layout.yaxis.title && el.layout.yaxis.title.text,"
    " (el.data || []).map(t => [t.type, t.name])])"
)


def _chromium():
    reason = ensure_chromium()
    if reason is not None:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    from app.serve import CHROMIUM, CHROMIUM_ARGS

    return sync_playwright, CHROMIUM, CHROMIUM_ARGS


@pytest.fixture(scope="module")
def executed(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """The data home and the five notebooks executed at the demo's tiny parameters."""
    from workbench.cli.demo import TINY_PARAMETERS
    from workbench.cli.notebooks import run_notebook

    home = tmp_path_factory.mktemp("notebook-home")
    paths = {name: run_notebook(name, TINY_PARAMETERS[name], root=home) for name in LINKED}
    return home, paths


def _figure_outputs(path: Path) -> int:
    """Outputs that carry a figure as HTML (plotly figures and static copies of widget figures)."""
    cells = json.loads(path.read_text())["cells"]
    return sum(
        "".join(output.get("data", {}).get("text/html", "")).count("Plotly.newPlot(")
        for cell in cells
        for output in cell.get("outputs", [])
    )


def test_exported_html_draws_every_figure_offline(executed, tmp_path):
    sync_playwright, chromium, args = _chromium()
    _, paths = executed
    shots = screenshot_dir(tmp_path / "screenshots")
    out = tmp_path / "html"
    for path in paths.values():
        subprocess.run(
            [sys.executable, "-m", "jupyter", "nbconvert", "--to", "html", f"--output-dir={out}", str(path)],
            check=True,
            capture_output=True,
        )
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=args)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.route("http*://**", lambda route: route.abort())  # offline: nothing may come from a CDN
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        for name, path in paths.items():
            expected = _figure_outputs(path)
            assert expected >= LINKED[name][0], f"{name}: {expected} figures with HTML"
            page.goto((out / f"{path.stem}.html").as_uri(), wait_until="load", timeout=120_000)
            page.wait_for_function(
                f"() => document.querySelectorAll('.js-plotly-plot .main-svg').length >= {expected}",
                timeout=60_000,
            )
            drawn = page.locator(".js-plotly-plot").count()
            page.screenshot(path=str(shots / f"export-{name}.png"), full_page=True)
            assert drawn == expected, f"{name}: {drawn} of {expected} figures drawn"
            assert not errors, f"{name}: {errors}"
        browser.close()


def _change(widget, page, kind: str) -> None:
    if kind == "slider":
        widget.locator(".noUi-handle").first.focus()
        page.keyboard.press("ArrowRight")
    elif kind == "dropdown":
        select = widget.locator(".widget-dropdown select").first
        current = select.input_value()
        other = [o for o in select.locator("option").all_inner_texts() if o != current]
        select.select_option(label=other[-1])
    else:
        widget.locator(".widget-toggle-button:not(.mod-active)").first.click()


# True while no code cell has an execution count or a busy mark: "Run All" has not started.
NOTHING_RAN = """() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
  .every(p => p.innerText.replace(/\\s/g, '') === '[]:')"""


def _wait_for_idle_kernel(page, name: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    status = "() => (document.querySelector('#jp-main-statusbar') || {innerText: ''}).innerText"
    while "| Idle" not in page.evaluate(status):
        assert time.monotonic() < deadline, f"{name}: the kernel did not start in {timeout} s"
        _accept_kernel_dialog(page)


def _run_all(page) -> None:
    page.click(".lm-MenuBar-item:has-text('Run')")
    page.click(".lm-Menu-item[data-command='runmenu:run-all']")


def _accept_kernel_dialog(page) -> None:
    """JupyterLab sometimes asks which kernel to start (e.g. after jupytext re-pairs the notebook)."""
    page.wait_for_timeout(2000)
    dialog = page.locator(".jp-Dialog:has-text('Select Kernel') .jp-mod-accept")
    if dialog.count():
        dialog.first.click()
        page.wait_for_timeout(1000)


def test_jupyterlab_controls_redraw_the_figure(executed, tmp_path):
    sync_playwright, chromium, args = _chromium()
    home, paths = executed
    shots = screenshot_dir(tmp_path / "screenshots")
    root = next(iter(paths.values())).parent
    with jupyterlab(root, home, tmp_path / "lab") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=args)
        for i, (name, path) in enumerate(paths.items()):
            linked, kind = LINKED[name]
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            # A fresh workspace per notebook: the default one would reopen the previous notebooks too,
            # and "Run All" would then run whichever JupyterLab activates last.
            page.goto(f"{url}/lab/workspaces/test{i}/tree/{path.name}?reset", timeout=120_000)
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator", state="attached", timeout=120_000)
            _wait_for_idle_kernel(page, name)
            _run_all(page)
            live = page.locator(".jp-OutputArea-output:has(.widget-output)")
            drawn = "n => document.querySelectorAll('.widget-output .js-plotly-plot').length >= n"
            deadline = time.monotonic() + 300
            started = time.monotonic()
            while not page.evaluate(drawn, linked):
                if time.monotonic() > deadline:
                    page.screenshot(path=str(shots / f"jupyterlab-{name}-timeout.png"))
                    raise AssertionError(f"{name}: the widget figures were not drawn in 300 s")
                _accept_kernel_dialog(page)  # the dialog can also come up once the cells run
                if time.monotonic() - started > 30 and page.evaluate(NOTHING_RAN):
                    _run_all(page)  # the first request went to a kernel that was not ready yet
                    started = time.monotonic()

            assert live.count() == linked, f"{name}: {live.count()} live figures, expected {linked}"
            hidden = page.locator(".workbench-static-figure").evaluate_all(
                "els => els.map(e => e.offsetParent === null)"
            )
            assert hidden and all(hidden), f"{name}: static copies visible next to the live widget"
            widget = live.first
            widget.scroll_into_view_if_needed()
            before = widget.locator(".widget-output .js-plotly-plot").first.evaluate(SIGNATURE)
            _change(widget, page, kind)
            page.wait_for_function(
                "([el, before]) => { const plot = el.querySelector('.widget-output .js-plotly-plot');"
                f" return plot !== null && ({SIGNATURE})(plot) !== before; }}",
                arg=[widget.element_handle(), before],
                timeout=60_000,
            )
            page.screenshot(path=str(shots / f"jupyterlab-{name}.png"))
            errors = page.locator('[data-mime-type="application/vnd.jupyter.error"]')
            assert errors.count() == 0, f"{name}: {errors.first.inner_text()}"
            page.close()
        browser.close()
