#!/usr/bin/env python
"""Dashboard timings: every page on a synthetic run of 5,000 pairs x 20 checkpoints.

A temporary run store gets one run shaped like a multimodal training run (``a``, ``b``, ``a_aug``,
ids, labels, captions at every snapshot; the geometry measures logged at every snapshot; trained
"with the bridge loss" so the bridge page draws bridge means), one gradient-bias run (every loss of
the lab at four batch sizes, measured by ``workbench.labs.gradbias`` with few repeats), and upload
files of the same size (5,000 pairs, labels and captions; a different file per timed upload, so no
upload is served from the cache of the one before). Then:

1. ``projection``: ``run_projection`` with an empty cache (reads the 20 snapshots, fits, writes
   ``<run>/cache/projections/``), for frozen PCA (the default view) and per-checkpoint PCA;
2. ``first_load``: each page under Streamlit's AppTest in a fresh session, once, with empty on-disk
   and in-memory caches for the geometry page (imports already warm): what the first visitor waits for;
3. ``render``: each page rerun in the same session (Streamlit's caches warm), and the geometry page
   in a new session after ``st.cache_data.clear()`` (only the on-disk cache: a restarted server);
   for the upload page, a new file uploaded into a session (``upload``, after one upload that imports
   what the report needs);
4. ``figure``: building the animated figure and serialising it to JSON (what the server sends);
5. ``browser``: ``streamlit run`` on a free port and headless chromium (Playwright): the time until
   every plotly plot in view has drawn (its legend, which plotly draws after the traces) and every
   table in view its canvas, the script has stopped and nothing has changed for a second (that
   second is not counted), after a first visit of the page (warm caches). Three ways in:
   ``browser_<page>`` opens the page's address (the whole app loads, as a bookmark or a new tab
   does); ``browser_link_<page>`` clicks the page's sidebar link on the runs page (how a user moves
   between pages: the app's scripts stay loaded); ``browser_tab_<page>_<tab>`` clicks a tab of a
   page (tabs are lazy: only the open one is built, so a click reruns the page). For the upload page:
   the time from handing the file input a new 5,000-pair file until the report and the open tab have
   drawn, then each other tab by a click.
   Each ``browser_*`` row also has the CPU seconds the server and chromium spent per visit (medians):
   on a shared machine the wall times grow with the load, the CPU seconds hardly.
   Skipped, with the reason recorded, when /usr/bin/chromium or Playwright is missing (or with
   ``--no-browser``).

Targets (the ``target_seconds`` of each row): every page drawn within 1.5 s after its first visit, the
upload page within 3 s of the upload. AppTest runs the page script as the server does but has no
browser; the ``browser_*`` rows include the drawing.

    .venv/bin/python benchmarks/bench_app.py                     # -> benchmarks/results/app-cpu.json
    .venv/bin/python benchmarks/bench_app.py --smoke --no-browser --out /tmp/app.json  # seconds
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from app.serve import APP, CHROMIUM, CHROMIUM_ARGS, serve  # noqa: E402

RUN_ID = "bench-app"
GRADBIAS_RUN = "bench-gradbias"
#: Every page drawn within this many seconds after its first visit.
TARGET_SECONDS = 1.5
#: The upload page: from handing over the file until its report and open tab have drawn.
UPLOAD_TARGET_SECONDS = 3.0
#: Page name -> URL path and query of the page (the page file is ``app/app_pages/<name>.py``).
ROUTES = {
    "runs": "",
    "geometry": f"geometry?run={RUN_ID}",
    "modality_gap": f"modality_gap?run={RUN_ID}",
    "bridges": f"bridges?run={RUN_ID}",
    "gradient_bias": f"gradient_bias?run={GRADBIAS_RUN}",
    "your_embeddings": "your_embeddings",
}
UPLOAD_PAGE = "your_embeddings"
STABLE_S = 1.0
# Drawn = the script has stopped, something was drawn, every plotly plot has its legend (drawn after the
# traces) when it shows one, and every table in view its canvas.
# Only what is in view counts (a hidden tab's elements have no offsetParent): a lazy tab opened by a
# click is drawn when its own figures are, not when the tab left behind still shows its old ones.
DRAWN_JS = """() => {
  if (document.querySelector('[data-testid="stStatusWidget"]')) return false;
  const shown = e => e.offsetParent !== null;
  const plots = [...document.querySelectorAll('.js-plotly-plot')].filter(shown);
  const tables = [...document.querySelectorAll('[data-testid="stDataFrame"]')].filter(shown);
  if (!plots.length && !tables.length) return false;
  return plots.every(p => p._fullLayout
                      && (!p._fullLayout.showlegend || p.querySelector('.main-svg .legend')))
    && tables.every(t => t.querySelector('canvas'));
}"""
STATE_JS = f"""() => [({DRAWN_JS})(),
  [...document.querySelectorAll('.js-plotly-plot')].filter(e => e.offsetParent).length,
  [...document.querySelectorAll('[data-testid="stDataFrame"]')].filter(e => e.offsetParent).length]"""
#: Page name -> its title in the sidebar (``app/streamlit_app.py``), for navigation by link.
NAV_TITLES = {
    "geometry": "Embedding geometry",
    "modality_gap": "Modality gap",
    "bridges": "Bridge trajectories",
    "gradient_bias": "Gradient bias",
}
#: Page name -> tabs opened by a click, each timed until its figures are drawn.
TAB_CLICKS = {
    "modality_gap": ("Gap vector", "Per dimension and spectrum", "What if the gap shrank"),
    UPLOAD_PAGE: ("Modality gap", "Bridges"),
}


# --------------------------------------------------------------------------------------------- the store
def build_run(root: Path, points: int, checkpoints: int, dim: int, seed: int = 0) -> None:
    """A run whose modalities start apart and align over training, with 10 classes."""
    from workbench.metrics.geometry import geometry_report
    from workbench.store.runs import RunWriter

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=points)
    centres = rng.normal(size=(10, dim))
    item = rng.normal(size=(points, dim))
    gap = rng.normal(size=dim)
    captions = np.array([f"a handwritten {k}, item {i}" for i, k in enumerate(labels)])
    config = {
        "dataset": "synthetic-bench",
        "loss": "clip",
        "batch_size": 256,
        "seed": seed,
        "steps": 100 * checkpoints,
        "structure": {"mode": "four_term", "weights": {"bridge": 1.0}},
        "image_tower": {"out_dim": dim},
    }
    with RunWriter.create(config, run_id=RUN_ID, root=root) as writer:
        for k in range(checkpoints):
            progress = (k + 1) / checkpoints
            image = progress * 3 * centres[labels] + item + 0.5 * gap
            text = progress * 3 * centres[labels] + item + 0.3 * rng.normal(size=(points, dim))
            text -= (1.0 - 0.7 * progress) * gap
            aug = image + 0.2 * rng.normal(size=(points, dim))
            unit = [z / np.linalg.norm(z, axis=1, keepdims=True) for z in (image, text, aug)]
            step = 100 * (k + 1)
            writer.save_snapshot(
                step,
                {
                    "a": unit[0].astype(np.float32),
                    "b": unit[1].astype(np.float32),
                    "a_aug": unit[2].astype(np.float32),
                    "ids": np.arange(points),
                    "labels": labels,
                    "captions": captions,
                },
            )
            writer.log(step, geometry_report(unit[0], unit[1], max_pairs=500))
        writer.finish({"steps": 100 * checkpoints})


def build_gradbias(root: Path, smoke: bool) -> None:
    """A gradient-bias run as the lab writes it: every loss (two in smoke mode), four batch sizes."""
    from workbench.labs.gradbias import run_gradbias

    run_gradbias(
        losses=["clip", "sogclr"] if smoke else None,
        batch_sizes=(4, 16, 64) if smoke else (4, 16, 64, 256),
        repeats=4,
        bias_repeats=16,
        dataset_params={"num_samples": 64 if smoke else 256},
        pretrain_steps=2,
        run_id=GRADBIAS_RUN,
        root=root,
    )


def upload_file(points: int, dim: int, seed: int) -> bytes:
    """An ``.npz`` of ``points`` pairs with labels and captions, as a user would upload (one per seed)."""
    rng = np.random.default_rng(1000 + seed)
    labels = rng.integers(0, 10, size=points)
    centres = 3 * rng.normal(size=(10, dim))
    item = rng.normal(size=(points, dim))
    gap = rng.normal(size=dim)
    image = centres[labels] + item + 0.5 * gap
    text = centres[labels] + item + 0.3 * rng.normal(size=(points, dim)) - 0.5 * gap
    buffer = io.BytesIO()
    np.savez(
        buffer,
        image_emb=image.astype(np.float32),
        text_emb=text.astype(np.float32),
        labels=labels,
        captions=np.array([f"a photo of a {k}, item {i}" for i, k in enumerate(labels)]),
    )
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------- timing
def _timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def _record(name: str, seconds: list[float], what: str, target: float | None = None) -> dict:
    record = {"name": name, "what": what, "seconds_all": seconds}
    record["seconds_median"] = statistics.median(seconds)
    if target is not None:
        record["target_seconds"] = target
    return record


def _check(at, page: str) -> None:
    if at.exception:
        raise RuntimeError(f"page {page} raised: {[e.value for e in at.exception]}")
    if at.warning:
        raise RuntimeError(f"page {page} warned: {[w.value for w in at.warning]}")
    if page != "runs" and not at.get("plotly_chart"):
        raise RuntimeError(f"page {page} drew no figure")


def _page(at, page: str) -> None:
    at.switch_page(f"app_pages/{page}.py").run()
    _check(at, page)


def _upload(at, data: bytes, name: str) -> None:
    at.file_uploader(key="upload-file").set_value((name, data, "application/octet-stream")).run()
    _check(at, UPLOAD_PAGE)
    if at.error or not at.success:
        raise RuntimeError(f"the upload was refused: {[e.value for e in at.error]}")


def measure(
    points: int, checkpoints: int, dim: int, repeats: int, smoke: bool, browser: bool
) -> tuple[dict, list[dict]]:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from workbench.store.runs import load_run
    from workbench.viz import embedding as emb
    from workbench.viz.projection import clear_cache, run_projection

    results = []
    with tempfile.TemporaryDirectory(prefix="bench-app-") as home:
        os.environ["WORKBENCH_HOME"] = home
        start = time.perf_counter()
        build_run(Path(home) / "runs", points, checkpoints, dim)
        build_gradbias(Path(home) / "runs", smoke)
        uploads = [Path(home) / f"upload-{k}.npz" for k in range(3 * repeats + 2)]
        for k, path in enumerate(uploads):
            path.write_bytes(upload_file(points, dim, k))
        setup = {"points": points, "checkpoints": checkpoints, "dim": dim, "repeats": repeats,
                 "upload_mb": round(uploads[0].stat().st_size / 2**20, 2),
                 "build_seconds": time.perf_counter() - start}  # fmt: skip
        run = load_run(RUN_ID)
        for method in ("frozen_pca", "pca"):
            seconds = []
            for _ in range(repeats):
                clear_cache(run)
                seconds += _timed(lambda m=method: run_projection(run, m), 1)
            results.append(_record(f"projection_{method}", seconds, f"{method}, 2-D, empty cache"))
        run_projection(run, "frozen_pca")  # the pca loop above cleared the cache: write it again
        hit = _timed(lambda: run_projection(run, "frozen_pca"), repeats)
        results.append(_record("projection_cache_hit", hit, "frozen_pca read back from the run folder"))

        def app(run_id: str | None = RUN_ID):
            at = AppTest.from_file(str(APP), default_timeout=600)
            if run_id:
                at.query_params["run"] = run_id
            return at

        warm = app(None)
        warm.run()  # imports torch, plotly, the library: paid once per server, not per page
        first = []
        for _ in range(repeats):
            clear_cache(run)
            st.cache_data.clear()
            at = app()
            at.run()
            first += _timed(lambda at=at: _page(at, "geometry"), 1)
        results.append(_record("first_load_geometry", first, "geometry page, empty caches"))

        def new_session() -> None:
            st.cache_data.clear()  # drops the in-memory caches; the on-disk projection stays
            fresh = app()
            fresh.run()
            _page(fresh, "geometry")

        results.append(
            _record("render_geometry_new_session", _timed(new_session, repeats),
                    "geometry page in a new session with only the on-disk cache (landing page included)")
        )  # fmt: skip
        for page, route in ROUTES.items():
            if page == UPLOAD_PAGE:
                continue
            at = app(route.partition("?run=")[2] or None)
            at.run()
            if page != "runs":
                start = time.perf_counter()
                _page(at, page)
                if page != "geometry":  # measured above, with empty caches
                    results.append(_record(f"first_load_{page}", [time.perf_counter() - start],
                                           f"{page} page, first load in a session"))  # fmt: skip
            results.append(
                _record(f"render_{page}", _timed(lambda at=at, p=page: (at.run(), _check(at, p)), repeats),
                        f"{page} page rerun, caches warm", TARGET_SECONDS)
            )  # fmt: skip
        at = app(None)
        at.run()
        at.switch_page(f"app_pages/{UPLOAD_PAGE}.py").run()  # no figure before the upload
        files = iter(uploads)
        _upload(at, next(files).read_bytes(), "warm.npz")  # imports the report's metrics: once per server
        results.append(
            _record("render_upload",
                    _timed(lambda: _upload(at, next(files).read_bytes(), "mine.npz"), repeats),
                    f"a new {points}-pair file uploaded: validation, report and the open tab",
                    UPLOAD_TARGET_SECONDS)
        )  # fmt: skip

        proj = run_projection(run, "frozen_pca")
        info = emb.PointInfo.from_snapshot(run.snapshot(proj.steps[-1]), [str(k) for k in range(10)])
        size = []

        def figure() -> None:
            size.append(len(emb.animated_figure(proj, info, pair_lines=100).to_json()))

        results.append(
            _record("figure_animated", _timed(figure, repeats), "animated_figure + to_json (no Streamlit)")
        )
        setup["figure_json_mb"] = round(size[-1] / 2**20, 2)
        single = emb.scatter_figure(proj.at(proj.steps[-1]), info, pair_lines=100, bounds=proj.bounds())
        setup["figure_single_json_mb"] = round(len(single.to_json()) / 2**20, 2)
        if browser:
            timings, skipped = measure_browser(Path(home), repeats, list(files))
            results += timings
        else:
            skipped = "--no-browser"
        if skipped:
            setup["browser_skipped"] = skipped
    return setup, results


def _wait_drawn(page, start: float, name: str) -> float:
    """Seconds from ``start`` until the page is drawn and stays so for ``STABLE_S``.

    The status widget is also absent before the script starts and between elements, so a page counts
    as drawn from the moment the state (drawn, number of plots and tables) stops changing for
    ``STABLE_S``; that moment, not the end of the wait, is the time returned.
    """
    drawn_since, last = None, None
    while time.perf_counter() - start < 120:
        state = page.evaluate(STATE_JS)
        now = time.perf_counter()
        if state != last:
            drawn_since, last = (now if state[0] else None), state
        elif drawn_since is not None and now - drawn_since > STABLE_S:
            break
        page.wait_for_timeout(20)
    else:
        raise TimeoutError(f"page {name} was not drawn within 120 s")
    if page.locator('[data-testid="stException"]').count():
        raise RuntimeError(f"page {name} raised in the browser: {page.locator('[data-testid=stException]')}")
    return drawn_since - start


def _cpu_seconds() -> dict[str, float]:
    """CPU seconds so far of this process's children: the streamlit server and the chromium processes.

    Beside the wall times: on a shared machine they say how much work a page is, whatever else runs.
    """
    import psutil

    out = {"server": 0.0, "browser": 0.0}
    for child in psutil.Process().children(recursive=True):
        try:
            times, command = child.cpu_times(), " ".join(child.cmdline())
        except psutil.Error:  # exited meanwhile
            continue
        kind = "server" if "streamlit" in command else "browser" if "chrom" in command else None
        if kind is not None:
            out[kind] += times.user + times.system
    return out


def _with_cpu(record: dict, cpu: list[dict[str, float]]) -> dict:
    for kind in ("server", "browser"):
        record[f"cpu_{kind}_median"] = round(statistics.median(c[kind] for c in cpu), 3)
    return record


def measure_browser(home: Path, repeats: int, uploads: list[Path]) -> tuple[list[dict], str | None]:
    """Navigation-to-drawn times of every page in headless chromium; ([], reason) when skipped."""
    if not Path(CHROMIUM).exists():
        return [], f"no chromium at {CHROMIUM}"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return [], "the playwright package is not installed"
    results = []
    with serve(home, cwd=home) as url:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})

            cpu: list[dict[str, float]] = []

            def timed(start: float, before: dict[str, float], name: str) -> float:
                seconds = _wait_drawn(page, start, name)
                after = _cpu_seconds()
                cpu.append({k: after[k] - before[k] for k in after})
                return seconds

            def visit(name: str) -> float:
                before, start = _cpu_seconds(), time.perf_counter()
                page.goto(f"{url}/{ROUTES[name]}", wait_until="commit", timeout=120_000)
                page.wait_for_selector("h1", timeout=120_000)
                return timed(start, before, name)

            def follow_link(name: str) -> float:
                # a user moves between pages by the sidebar: the app's scripts stay loaded
                visit("runs")
                link = page.locator('[data-testid="stSidebarNavLink"]').filter(has_text=NAV_TITLES[name])
                before, start = _cpu_seconds(), time.perf_counter()
                link.click()
                return timed(start, before, name)

            def open_tab(label: str, name: str) -> float:
                before, start = _cpu_seconds(), time.perf_counter()
                page.get_by_role("tab", name=label, exact=True).click()
                return timed(start, before, f"{name} tab {label!r}")

            def tab_rows(name: str, arrive) -> None:
                """Each tab of ``TAB_CLICKS[name]`` opened by a click after ``arrive()`` shows the page."""
                seconds: dict[str, list[float]] = {label: [] for label in TAB_CLICKS[name]}
                cpus: dict[str, list[dict[str, float]]] = {label: [] for label in TAB_CLICKS[name]}
                for _ in range(repeats):
                    arrive()
                    for label in TAB_CLICKS[name]:
                        cpu.clear()
                        seconds[label].append(open_tab(label, name))
                        cpus[label].append(cpu[-1])
                for label in TAB_CLICKS[name]:
                    slug = label.lower().replace(" ", "_")
                    record = _record(f"browser_tab_{name}_{slug}", seconds[label],
                                     f"{name} page: a click on the tab {label!r} until its figures are drawn",
                                     TARGET_SECONDS)  # fmt: skip
                    results.append(_with_cpu(record, cpus[label]))

            def upload(path: Path) -> float:
                page.goto(f"{url}/{ROUTES[UPLOAD_PAGE]}", wait_until="commit", timeout=120_000)
                dropzone = '[data-testid="stFileUploaderDropzoneInput"]'  # a hidden input: attached suffices
                page.wait_for_selector(dropzone, state="attached", timeout=120_000)
                page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')")
                before, start = _cpu_seconds(), time.perf_counter()
                page.set_input_files(dropzone, str(path))
                page.wait_for_selector('[data-testid="stAlertContentSuccess"]', timeout=120_000)
                return timed(start, before, UPLOAD_PAGE)

            for name in ROUTES:
                if name == UPLOAD_PAGE:
                    upload(uploads[0])  # warms the browser (JS bundles) and the imports of the views
                    cpu.clear()
                    seconds = [upload(path) for path in uploads[1 : repeats + 1]]
                    what = "new file handed to the upload page until its report and open tab are drawn"
                    record = _record("browser_upload", seconds, what, UPLOAD_TARGET_SECONDS)
                    results.append(_with_cpu(record, cpu))
                    fresh = iter(uploads[repeats + 1 :])
                    tab_rows(name, lambda fresh=fresh: upload(next(fresh)))
                    continue
                visit(name)  # warms the server's caches and the browser's (JS bundles) for this page
                cpu.clear()
                seconds = [visit(name) for _ in range(repeats)]
                record = _record(f"browser_{name}", seconds,
                                 f"{name} page: its address opened (the whole app loads) until drawn",
                                 TARGET_SECONDS)  # fmt: skip
                results.append(_with_cpu(record, cpu))
                if name in NAV_TITLES:
                    seconds, link_cpu = [], []
                    for _ in range(repeats):
                        cpu.clear()
                        seconds.append(follow_link(name))
                        link_cpu.append(cpu[-1])
                    record = _record(f"browser_link_{name}", seconds,
                                     f"{name} page: its sidebar link clicked on the runs page until drawn",
                                     TARGET_SECONDS)  # fmt: skip
                    results.append(_with_cpu(record, link_cpu))
                if name in TAB_CLICKS:
                    tab_rows(name, lambda name=name: visit(name))
            browser.close()
    return results, None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=5000, help="pairs per snapshot and per upload")
    parser.add_argument("--checkpoints", type=int, default=20, help="snapshots in the run")
    parser.add_argument("--dim", type=int, default=64, help="embedding dimension")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (median reported)")
    parser.add_argument(
        "--smoke", action="store_true",
        help="seconds, not minutes: 500 pairs x 4 checkpoints, one repeat, a two-loss gradient-bias run",
    )  # fmt: skip
    parser.add_argument("--no-browser", action="store_true", help="skip the headless-chromium timings")
    parser.add_argument("--note", default="", help="said beside the load average (who else used the host)")
    parser.add_argument(
        "--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "app-cpu.json", help="result JSON"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.points, args.checkpoints, args.repeats = 500, 4, 1
    for name in ("points", "checkpoints", "dim", "repeats"):
        if getattr(args, name) < (2 if name == "points" else 1):
            parser.error(f"--{name} must be a positive integer (points >= 2)")
    load_start = os.getloadavg()
    started = time.perf_counter()
    setup, results = measure(
        args.points, args.checkpoints, args.dim, args.repeats, args.smoke, not args.no_browser
    )
    import torch

    data = {
        "benchmark": "app",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([".venv/bin/python", "benchmarks/bench_app.py", *(argv or sys.argv[1:])]),
        "device_type": "cpu",
        "device": platform.processor() or platform.machine(),
        "host": {"cpu_count": os.cpu_count(), "python": platform.python_version()},
        "torch_threads": torch.get_num_threads(),
        "loadavg_start": [round(v, 2) for v in load_start],
        "loadavg_end": [round(v, 2) for v in os.getloadavg()],
        "note": args.note,
        "total_seconds": time.perf_counter() - started,
        "target_seconds": TARGET_SECONDS,
        "upload_target_seconds": UPLOAD_TARGET_SECONDS,
        "setup": setup,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, args.out)
    for r in results:
        target = r.get("target_seconds")
        flag = " ✗" if target is not None and r["seconds_median"] > target else ""
        cpu = ""
        if "cpu_server_median" in r:
            cpu = f" cpu {r['cpu_server_median']:.2f} + {r['cpu_browser_median']:.2f} s"
        print(f"{r['name']:32s} {r['seconds_median']:8.3f} s{flag:2s}{cpu} ({r['what']})")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
