"""The dashboard: every page under Streamlit's AppTest on a fixture store, uploads, and a real browser.

The fixture store is built once per session with the real library: two tiny multimodal training runs
(one trained with the bridge loss, one with 3-d embeddings for the unit-sphere view), a tiny
gradient-bias run, a tiny fusion run (the fusion tasks page), and the broken cases a live store has: a
run still being written, a failed run, a folder without a config, and a complete run whose snapshot file
is damaged.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the app's package `app` lives at the repo root
    sys.path.insert(0, str(REPO))
from app.serve import APP, CHROMIUM, CHROMIUM_ARGS, serve  # noqa: E402

PAGES = {
    "runs": "app_pages/runs.py",
    "geometry": "app_pages/geometry.py",
    "modality_gap": "app_pages/modality_gap.py",
    "bridges": "app_pages/bridges.py",
    "gradient_bias": "app_pages/gradient_bias.py",
    "your_embeddings": "app_pages/your_embeddings.py",
    "fusion_tasks": "app_pages/fusion_tasks.py",
}
BRIDGE_RUN, SPHERE_RUN, GRADBIAS_RUN = "mm-bridge", "mm-sphere", "gb-tiny"
RUNNING_RUN, FAILED_RUN, INVALID_RUN, DAMAGED_RUN = "half-written", "failed-run", "no-config", "damaged"
SEED_RUN = "seeded-s"  # + 0 and 1
FUSION_RUN = "fusion-tiny"
_LIVE_WRITERS: list = []
TIMEOUT = 60  # seconds per AppTest run: the first one imports torch and the library


def _tiny_config(**overrides) -> dict:
    config = {
        "dataset": "digits_captions",
        "dataset_params": {"text_encoder": "tokens", "variants": 3},
        "loss": "clip",
        "learn_scale": True,
        "image_tower": {"hidden": 32, "depth": 1, "out_dim": 8},
        "text_tower": {"hidden": 32, "depth": 1, "out_dim": 8},
        "batch_size": 32,
        "steps": 6,
        "eval_every": 3,
        "snapshot_every": 3,
        "checkpoint_every": 3,
        "probe_size": 64,
    }
    config.update(overrides)
    return config


def build_fixture_store(home: Path) -> Path:
    """Write the fixture runs under ``home/runs`` with the real trainer and gradient-bias lab."""
    from workbench.labs.gradbias import run_gradbias
    from workbench.store.runs import RunWriter
    from workbench.training.trainer import train

    root = home / "runs"
    bridge = {"mode": "four_term", "weights": {"bridge": 1.0}}
    train(_tiny_config(structure=bridge), run_id=BRIDGE_RUN, root=root, progress=False)
    three = {"hidden": 32, "depth": 1, "out_dim": 3}
    train(
        _tiny_config(image_tower=three, text_tower=three, snapshot_every=2, eval_every=2, checkpoint_every=2),
        run_id=SPHERE_RUN,
        root=root,
        progress=False,
    )
    run_gradbias(
        losses=["clip", "sogclr"],
        batch_sizes=(4, 16, 32),
        repeats=4,
        bias_repeats=16,
        dataset_params={"num_samples": 32},
        pretrain_steps=2,
        run_id=GRADBIAS_RUN,
        root=root,
    )
    # the fusion model, tiny, evaluated at every step, one snapshot with its cross-attention maps
    fusion = {"model": "fusion", "model_size": "tiny", "per_kind_train": 20, "per_kind_test": 10}
    fusion.update(attention_examples=3, batch_size=16, probe_size=32, device="cpu")
    fusion.update(steps=3, eval_every=1, snapshot_every=3, checkpoint_every=3)
    fusion_config = {**_tiny_config(**fusion), "dataset_params": {"text_encoder": "tokens", "variants": 2}}
    for key in ("image_tower", "text_tower", "learn_scale"):
        fusion_config.pop(key)
    train(fusion_config, run_id=FUSION_RUN, root=root, progress=False)
    rng = np.random.default_rng(0)
    writer = RunWriter.create({"dataset": "digits_captions", "loss": "clip"}, run_id=RUNNING_RUN, root=root)
    writer.save_snapshot(1, {"a": rng.normal(size=(10, 4)), "b": rng.normal(size=(10, 4))})
    writer.log(1, centroid_gap=0.5)
    writer.flush()  # left "running", as a live trainer leaves it
    _LIVE_WRITERS.append(writer)  # it holds the run's writer lock for the whole session, as a live trainer
    with RunWriter.create({"dataset": "digits_captions", "loss": "clip"}, run_id=FAILED_RUN, root=root) as w:
        w.fail("FloatingPointError: loss became nan at step 3")
    (root / INVALID_RUN / "snapshots").mkdir(parents=True)
    shutil.copy(root / BRIDGE_RUN / "snapshots" / "step_00000003.npz", root / INVALID_RUN / "snapshots")
    with RunWriter.create({"dataset": "digits_captions", "loss": "clip"}, run_id=DAMAGED_RUN, root=root) as w:
        w.save_snapshot(2, {"a": rng.normal(size=(10, 4)), "b": rng.normal(size=(10, 4))})
        w.finish({"train_loss": 1.0})
    (root / DAMAGED_RUN / "snapshots" / "step_00000002.npz").write_bytes(b"not a zip file")
    for seed, offset in enumerate((0.0, 0.2)):  # one setting, two seeds: aggregated on the runs page
        config = {"dataset": "digits_captions", "loss": "sogclr", "batch_size": 8, "seed": seed}
        with RunWriter.create(config, run_id=f"{SEED_RUN}{seed}", root=root) as w:
            for step in (1, 2):
                w.log(step, train_loss=2.0 - step / 2 + offset)
            w.finish({"train_loss": 1.0 + offset})
    return root


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("workbench-home")
    build_fixture_store(home)
    return home


@pytest.fixture()
def home(store, monkeypatch) -> Path:
    monkeypatch.setenv("WORKBENCH_HOME", str(store))
    return store


def _app(page: str | None = None, run: str | None = None):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    if run is not None:
        at.query_params["run"] = run
    at.run()
    if page is not None:
        at.switch_page(PAGES[page]).run()
    return at


def _texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def _no_errors(at) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


# --------------------------------------------------------------------------------------------- pages
def test_runs_page_lists_filters_and_compares(home):
    at = _app()
    _no_errors(at)
    table = at.dataframe[0].value
    assert {BRIDGE_RUN, SPHERE_RUN, GRADBIAS_RUN, RUNNING_RUN, FAILED_RUN, INVALID_RUN} <= set(table.run_id)
    row = table.set_index("run_id").loc[BRIDGE_RUN]
    assert row.dataset == "digits_captions" and row.loss == "clip" and "bridge=1" in row.regularizers
    assert row.batch_size == "32" and row.snapshots == 2
    assert "Not every run is complete" in _texts(at.warning)
    at.multiselect(key="runs-filter-kind").select("gradbias").run()
    assert list(at.dataframe[0].value.run_id) == [GRADBIAS_RUN]
    at.multiselect(key="runs-filter-kind").unselect("gradbias").run()
    at.multiselect(key="runs-compare").select(BRIDGE_RUN).select(SPHERE_RUN).run()
    _no_errors(at)
    assert at.session_state["selected_runs"] == [BRIDGE_RUN, SPHERE_RUN]
    differing = at.dataframe[1].value
    assert "image_tower.out_dim" in differing.index
    # Keys only one run has count: the bridge weight exists only in the bridge run's config.
    assert differing.loc["structure.weights.bridge", SPHERE_RUN] == "(missing)"
    assert len(at.get("plotly_chart")) == 1
    # Readable labels: loss, dataset, batch size, regularizers, creation time; the id only when needed.
    label = at.multiselect(key="runs-compare").format_func(BRIDGE_RUN)
    assert label.startswith("clip · digits_captions · B=32 · bridge=1") and BRIDGE_RUN not in label


def test_run_labels_name_what_tells_runs_apart():
    from app.compare import run_labels

    frame = pd.DataFrame(
        {
            "run_id": ["20261201-030000-clip-aaaaaa", "20261201-030000-clip-bbbbbb", "gb", "bare", "live"],
            "status": ["complete", "complete", "complete", "invalid", "running"],
            "kind": ["train", "train", "gradbias", "", "train"],
            "dataset": ["mnist", "mnist", "synthetic", "", "mnist"],
            "loss": ["clip", "clip", "clip, ntxent, dcl, dclw", "", "sogclr"],
            "batch_size": ["256", "256", "4, 16", None, "64"],
            "regularizers": ["", "", "", "", "bridge=1 (four_term)"],
            "seed": [0, 0, None, None, 2],
            "created": ["2026-12-01 03:00:00"] * 2 + ["2026-11-30 22:15:09", "", "2026-12-01 04:05:00"],
        }
    )
    labels = run_labels(frame)
    # Two runs that read the same are told apart by their (shortened) ids.
    first, second = labels["20261201-030000-clip-aaaaaa"], labels["20261201-030000-clip-bbbbbb"]
    assert first.startswith("clip · mnist · B=256 · seed 0 · 2026-12-01 03:00 · ") and first != second
    assert first.endswith("aaaaaa") and second.endswith("bbbbbb")
    assert labels["gb"] == "gradbias · 4 losses · synthetic · B=4, 16 · 2026-11-30 22:15"
    assert labels["bare"] == "bare"  # no config: its id
    live = "sogclr · mnist · B=64 · bridge=1 (four_term) · seed 2 · running · 2026-12-01 04:05"
    assert labels["live"] == live


@pytest.mark.parametrize(
    ("page", "key", "run"),
    [("geometry", "geometry-source", BRIDGE_RUN), ("modality_gap", "gap-source", BRIDGE_RUN),
     ("bridges", "bridges-source", BRIDGE_RUN), ("gradient_bias", "gb-runs", GRADBIAS_RUN)],
)  # fmt: skip
def test_run_pickers_show_readable_labels_and_the_id_underneath(home, page, key, run):
    from app.common import run_label_map
    from app.compare import LABEL_HELP

    at = _app(page, run=run)
    _no_errors(at)
    picker = at.selectbox(key=key) if page != "gradient_bias" else at.multiselect(key=key)
    label = run_label_map()[run]
    assert run not in label and label.startswith("gradbias ·" if run == GRADBIAS_RUN else "clip · digits")
    assert label in picker.options and run not in picker.options  # the ids are values, not what is shown
    assert picker.value in (run, [run]) and picker.help == LABEL_HELP
    assert f"`{run}`" in _texts(at.sidebar.caption)  # the id, under the picker
    if page == "modality_gap":
        compare = at.multiselect(key="gap-compare")
        assert run_label_map()[SPHERE_RUN] in compare.options and SPHERE_RUN not in compare.options
        compare.select(SPHERE_RUN).run()
        assert f"`{SPHERE_RUN}`" in _texts(at.caption)


def test_runs_page_aggregates_seeds_and_refreshes_a_live_run(home):
    at = _app()
    at.multiselect(key="runs-compare").select(f"{SEED_RUN}0").select(f"{SEED_RUN}1").run()
    _no_errors(at)
    differing = at.dataframe[1].value
    assert list(differing.index) == ["seed"]
    assert "Config keys that differ (1 of 4)" in [e.label for e in at.expander]
    assert at.toggle(key="runs-aggregate").value
    seeds = at.dataframe[2].value
    assert seeds.runs.tolist() == [2] and seeds.train_loss.tolist() == ["1.10 ± 0.141"]
    spec = at.get("plotly_chart")[0].proto.spec
    assert "2 seeds, mean" in spec and '"fill":"toself"' in spec.replace(" ", "")  # mean and its band
    at.toggle(key="runs-aggregate").set_value(False).run()
    assert "2 seeds" not in at.get("plotly_chart")[0].proto.spec
    at.multiselect(key="runs-compare").select(RUNNING_RUN).run()
    _no_errors(at)
    assert "Live:" in _texts(at.caption) and "refresh every 3 s" in _texts(at.caption)


@pytest.mark.parametrize("page", ["geometry", "modality_gap", "bridges"])
def test_geometry_pages_render_a_run(home, page):
    at = _app(page, run=BRIDGE_RUN)
    _no_errors(at)
    assert not at.warning, _texts(at.warning)
    assert at.query_params["run"] in (BRIDGE_RUN, [BRIDGE_RUN])
    assert len(at.get("plotly_chart")) >= 1


def test_geometry_page_sends_animation_frames_only_when_asked(home):
    at = _app("geometry", run=BRIDGE_RUN)
    assert at.toggle(key="geometry-play").value is False
    spec = str(at.get("plotly_chart")[0].proto.spec)
    assert '"frames":' not in spec.replace(" ", "") and "step 6" in spec
    at.toggle(key="geometry-play").set_value(True).run()
    _no_errors(at)
    spec = str(at.get("plotly_chart")[0].proto.spec).replace(" ", "")
    assert '"frames":' in spec and '"name":"3"' in spec


def test_geometry_page_slider_dims_colour_and_projection(home):
    at = _app("geometry", run=BRIDGE_RUN)
    slider = at.select_slider(key="geometry-step")
    assert slider.options == ["3", "6"] and slider.value == 6
    slider.set_value(3).run()
    _no_errors(at)
    assert "step 3" in str(at.get("plotly_chart")[0].proto.spec)
    at.radio(key="geometry-dims").set_value(3).run()
    at.radio(key="geometry-color").set_value("class").run()
    at.checkbox(key="geometry-aug").check().run()
    at.radio(key="geometry-fit").set_value("last").run()
    at.selectbox(key="geometry-method").set_value("pca").run()
    at.slider(key="geometry-pairs").set_value(20).run()
    _no_errors(at)
    assert not at.warning
    assert "3-d embeddings" in _texts(at.caption)  # 8-d run: no unit sphere
    cache = home / "runs" / BRIDGE_RUN / "cache" / "projections"
    assert len(list(cache.glob("*.npz"))) >= 2


def test_geometry_page_animation_and_unit_sphere(home):
    at = _app("geometry", run=SPHERE_RUN)
    at.toggle(key="geometry-play").set_value(True).run()
    _no_errors(at)
    charts = at.get("plotly_chart")
    assert len(charts) == 2  # projection (animated) + unit sphere
    spec = charts[0].proto.spec
    assert '"frames"' in spec and '"method":"animate"' in spec.replace(" ", "")
    assert '"surface"' in charts[1].proto.spec


def test_modality_gap_page_compares_runs_and_moves_the_what_if_slider(home):
    at = _app("modality_gap", run=BRIDGE_RUN)
    at.multiselect(key="gap-compare").select(SPHERE_RUN).run()
    _no_errors(at)
    metrics_spec = at.get("plotly_chart")[0].proto.spec
    assert BRIDGE_RUN in metrics_spec and SPHERE_RUN in metrics_spec
    # one tab is drawn at a time: the measures over training first
    assert len(at.get("plotly_chart")) == 1 and at.session_state["gap-tab"] == "Geometry over training"
    training_spec = metrics_spec
    at.session_state["gap-tab"] = "What if the gap shrank"
    at.run()
    charts = at.get("plotly_chart")
    assert len(charts) == 1 and "loss along the gap vector" in charts[0].proto.spec
    before = at.metric[0].value
    at.slider(key="gap-wi-shift").set_value(1.0).run()
    _no_errors(at)
    assert at.metric[0].value != before
    # The run learned its scale: used by default, and the temperature box is off while it is.
    assert at.checkbox(key="gap-wi-scale").value
    assert at.number_input(key="gap-wi-temp").disabled
    at.checkbox(key="gap-wi-scale").uncheck().run()
    assert not at.number_input(key="gap-wi-temp").disabled
    # SigLIP gets its own scale and bias, never the run's CLIP scale.
    at.selectbox(key="gap-wi-loss").set_value("siglip").run()
    _no_errors(at)
    assert not at.get("checkbox") or "gap-wi-scale" not in [c.key for c in at.checkbox]
    assert at.number_input(key="gap-wi-sscale").value == 10.0
    assert at.number_input(key="gap-wi-bias").value == -10.0
    captions = _texts(at.caption)
    assert "Lowest siglip loss at shift" in captions and "scale = 10, bias = -10" in captions
    at.session_state["gap-tab"] = "Per dimension and spectrum"
    at.run()
    assert len(at.get("plotly_chart")) == 2  # per-dimension gap, singular spectrum
    at.slider(key="gap-top").set_value(2).run()
    at.session_state["gap-tab"] = "Gap vector"
    at.run()
    at.radio(key="gap-gap-dims").set_value(3).run()
    _no_errors(at)
    assert not at.warning, _texts(at.warning)
    # Subplot titles say what a measure is and which way is better.
    spec = training_spec
    assert "centroid gap (lower is better)" in spec and "distance on the unit sphere" in spec


def test_what_if_grid_is_widened_until_the_minimum_is_inside():
    from workbench.metrics.gap import whatif_curve

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4)) + np.array([2.0, 0, 0, 0])
    curve = whatif_curve(x, x + 0.05 * rng.normal(size=x.shape) - np.array([4.0, 0, 0, 0]), "clip",
                         {"temperature": 0.5}, low=-1.0, high=0.0, points=5)  # fmt: skip
    best = curve.loc[curve["loss"].idxmin(), "shift"]
    assert curve["shift"].max() > 0.0 and curve["shift"].min() < best < curve["shift"].max()
    assert not curve["at_edge"].any()


def test_bridges_page_paths_sigma_and_bridge_means(home):
    at = _app("bridges", run=BRIDGE_RUN)
    _no_errors(at)
    assert at.checkbox(key="bridges-aug").value  # bridge-trained run: means shown by default
    spec = at.get("plotly_chart")[0].proto.spec
    assert "bridge means" in spec and "bridge paths" in spec
    at.slider(key="bridges-npaths").set_value(2).run()
    at.slider(key="bridges-sigma").set_value(0.5).run()
    at.slider(key="bridges-npairs").set_value(3).run()
    at.radio(key="bridges-dims").set_value(3).run()
    _no_errors(at)
    assert not at.warning
    plain = _app("bridges", run=SPHERE_RUN)
    _no_errors(plain)
    assert not plain.checkbox(key="bridges-aug").value
    assert "not trained with the bridge loss" in _texts(plain.caption)


def test_gradient_bias_page(home):
    at = _app("gradient_bias")
    _no_errors(at)
    assert at.multiselect(key="gb-runs").value == [GRADBIAS_RUN]
    assert len(at.get("plotly_chart")) == 1  # the open tab only: relative bias
    first = at.get("plotly_chart")[0].proto.spec.replace(" ", "")
    assert '"type":"log"' in first and "relativebias" in first and "lowerisbetter" in first
    # B = N = 32 is the fixture's full batch: marked as round-off, not a point of the log axis
    assert "0uptofloatround-off" in first
    assert at.multiselect(key="gb-losses").value == ["clip", "sogclr"]
    assert at.radio(key="gb-state").value == "warm"
    assert "(warm)" in first and "(cold)" not in first
    at.session_state["gb-tab"] = "Table"
    at.run()
    table = at.dataframe[0].value  # relative bias ± floor, 3 significant digits
    assert list(table.columns) == ["loss", "state", "B=4", "B=16", "B=32"]
    assert (table["B=32"] == "≈ 0 (round-off)").any() and table["B=4"].str.contains("±").all()
    at.session_state["gb-tab"] = "Relative bias"
    at.run()
    at.radio(key="gb-state").set_value("both").run()
    assert "(cold)" in at.get("plotly_chart")[0].proto.spec
    at.multiselect(key="gb-losses").unselect("sogclr").run()
    at.toggle(key="gb-band").set_value(False).run()
    for tab, title in (("Bias", "bias"), ("Variance", "variance"), ("MSE", "MSE")):
        at.session_state["gb-tab"] = tab
        at.run()
        assert len(at.get("plotly_chart")) == 1 and title in at.get("plotly_chart")[0].proto.spec
    at.session_state["gb-tab"] = "Decomposition"
    at.run()
    at.selectbox(key="gb-decomp-loss").set_value("clip").run()
    _no_errors(at)


@pytest.mark.parametrize(
    ("run_id", "message"),
    [
        (RUNNING_RUN, "still running"),
        (FAILED_RUN, "failed: FloatingPointError"),
        (INVALID_RUN, "half-written or damaged"),
        ("no-such-run", "not available"),
        ("../../etc", "not a valid run id"),
    ],
)
def test_broken_or_foreign_runs_warn_instead_of_failing(home, run_id, message):
    at = _app("geometry", run=run_id)
    assert not at.exception
    assert message in _texts(at.warning)


def test_a_damaged_snapshot_is_a_warning(home):
    at = _app("geometry")
    at.selectbox(key="geometry-source").set_value(DAMAGED_RUN).run()
    assert not at.exception
    assert "Could not show" in _texts(at.warning)


def test_a_running_run_with_snapshots_is_drawn_with_a_warning(home):
    at = _app("geometry")
    at.selectbox(key="geometry-source").set_value(RUNNING_RUN).run()
    _no_errors(at)
    assert "still running" in _texts(at.warning)
    assert len(at.get("plotly_chart")) == 1


def test_run_ids_cannot_reach_outside_the_store(home, tmp_path):
    from app.common import check_run_id

    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, home / "runs" / "escape")
    try:
        at = _app("geometry", run="escape")
        assert not at.exception
        assert "outside the runs root" in _texts(at.warning)
    finally:
        (home / "runs" / "escape").unlink()
    assert check_run_id("../x") is None and check_run_id("a/b") is None and check_run_id("ok-1") == "ok-1"


# --------------------------------------------------------------------------------------------- uploads
def _npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _good_upload(n: int = 60, d: int = 5) -> bytes:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, d)) + 1.0
    return _npz(
        image_emb=x,
        text_emb=x + 0.3 * rng.normal(size=(n, d)) - 1.0,
        labels=np.array(["cat", "dog", "eel"])[np.arange(n) % 3],
        captions=np.array([f"item {i}" for i in range(n)]),
    )


def test_validate_upload_accepts_npz_and_parquet():
    from app.common import validate_upload

    checked = validate_upload("mine.npz", _good_upload())
    assert checked["n"] == 60 and checked["d"] == 5 and checked["class_names"] == ["cat", "dog", "eel"]
    assert set(checked["arrays"]) == {"a", "b", "ids", "labels", "captions"}
    rng = np.random.default_rng(2)
    frame = pd.DataFrame(
        {"image_emb": list(rng.normal(size=(4, 3))), "text_emb": list(rng.normal(size=(4, 3)))}
    )
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    assert validate_upload("mine.parquet", buffer.getvalue())["n"] == 4


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("x.csv", b"a,b\n1,2", "unsupported file type '.csv'"),
        ("x.npz", b"", "the file is empty"),
        ("x.npz", b"garbage", "x.npz"),
        ("x.npz", _npz(image_emb=np.ones((3, 2))), "missing text_emb"),
        ("x.npz", _npz(image_emb=np.ones((3, 2)), text_emb=np.ones((4, 2))), "same number of rows"),
        ("x.npz", _npz(image_emb=np.full((3, 2), np.nan), text_emb=np.ones((3, 2))), "non-finite"),
        ("x.npz", _npz(image_emb=np.ones((3, 2)), text_emb=np.ones((3, 4))), "same dimension"),
        ("x.npz", _npz(image_emb=np.zeros((3, 2)), text_emb=np.ones((3, 2))), "all-zero embedding"),
    ],
)
def test_validate_upload_rejects_bad_files_with_clear_messages(name, data, message):
    from app.common import validate_upload

    with pytest.raises(ValueError, match=message) as err:
        validate_upload(name, data)
    assert "workbench-upload-" not in str(err.value)  # the temporary path never leaks into messages
    assert str(err.value).startswith(name)


def test_validate_upload_size_limit():
    from app.common import validate_upload

    with pytest.raises(ValueError, match="over the 0 MB limit"):
        validate_upload("big.npz", _good_upload(), max_bytes=100)


def test_upload_page_good_then_bad_file(home):
    at = _app("your_embeddings")
    _no_errors(at)
    assert "Upload a file" in _texts(at.info)
    # Any file type reaches the page and a refusal says why; the message goes with the file.
    at.file_uploader(key="upload-file").set_value(("table.csv", b"a,b\n1,2", "text/csv")).run()
    assert "unsupported file type '.csv'" in _texts(at.error)
    at.file_uploader(key="upload-file").set_value(
        ("mine.npz", _good_upload(), "application/octet-stream")
    ).run()
    _no_errors(at)
    assert "60 pairs in d = 5" in _texts(at.success)
    # The scalar report on top, every measure with its direction; no checkpoint-only controls.
    tiles = {m.label: m.value for m in at.metric}
    for label in ("centroid gap ↓", "relative modality gap ↓", "modality separability ↓", "alignment ↓",
                  "uniformity ↓", "cone (mean cosine) ↓", "effective rank ↑", "image→text recall@1 ↑",
                  "mean recall ↑"):  # fmt: skip
        assert label in tiles, sorted(tiles)
    assert "step 0" not in _texts(at.caption) and "One checkpoint" not in _texts(at.caption)
    assert len(at.get("plotly_chart")) == 1  # the open tab only: the projection
    at.radio(key="upload-geometry-color").set_value("class").run()
    charts = {}
    for tab, inner in (("Modality gap", "Gap vector"), ("Modality gap", "Per dimension and spectrum"),
                       ("Modality gap", "What if the gap shrank"), ("Bridges", None)):  # fmt: skip
        at.session_state["upload-tab"] = tab
        if inner:
            at.session_state["upload-gap-tab"] = inner
        at.run()
        _no_errors(at)
        charts[inner or tab] = len(at.get("plotly_chart"))
    assert charts == {
        "Gap vector": 1, "Per dimension and spectrum": 2, "What if the gap shrank": 1, "Bridges": 1
    }  # fmt: skip
    assert "upload-gap-compare" not in at.session_state  # an upload has no "over training" tab
    at.slider(key="upload-bridges-sigma").set_value(0.3).run()
    _no_errors(at)
    # The upload is offered on the other geometry pages too.
    at.switch_page(PAGES["geometry"]).run()
    assert at.selectbox(key="geometry-source").options[0] == "upload: mine.npz"
    at.switch_page(PAGES["your_embeddings"]).run()
    bad = _npz(image_emb=np.ones((3, 2)), text_emb=np.full((3, 2), np.inf))
    at.file_uploader(key="upload-file").set_value(("bad.npz", bad, "application/octet-stream")).run()
    assert not at.exception
    assert "bad.npz: text_emb has a non-finite value (NaN or inf) in row 0" in _texts(at.error)
    assert "uploaded_embeddings" not in at.session_state


def test_cached_figure_builds_once_per_key():
    from app.common import cached_figure

    built = []

    def build(tag: str) -> dict:
        built.append(tag)
        return {"tag": tag}

    first = cached_figure(("test-figure", 1), lambda: build("one"))
    assert cached_figure(("test-figure", 1), lambda: build("again")) is first and built == ["one"]
    assert cached_figure(("test-figure", 2), lambda: build("two"))["tag"] == "two" and built == ["one", "two"]


def test_large_sets_draw_an_even_sample_of_pairs(home):
    from app.common import DRAWN_PAIRS

    n = DRAWN_PAIRS + 500
    at = _app("your_embeddings")
    at.file_uploader(key="upload-file").set_value(("big.npz", _good_upload(n), "application/octet-stream"))
    at.run()
    _no_errors(at)
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    images = next(t for t in spec["data"] if t.get("name") == "image")
    rows = [int(c[3]) for c in images["customdata"]]
    assert len(rows) == DRAWN_PAIRS and rows == list(range(DRAWN_PAIRS))  # positions among the drawn
    ids = [int(c[0]) for c in images["customdata"]]
    assert ids[0] == 0 and ids[-1] == n - 1 and ids == sorted(set(ids))  # evenly spaced over all pairs
    assert f"{DRAWN_PAIRS:,} of {n:,} pairs drawn" in _texts(at.caption)
    # Asking for every pair draws every pair; the figure for the default stays cached for the next visit.
    at.select_slider(key="upload-geometry-drawn").set_value(n).run()
    _no_errors(at)
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert len(next(t for t in spec["data"] if t.get("name") == "image")["customdata"]) == n
    at.select_slider(key="upload-geometry-drawn").set_value(DRAWN_PAIRS).run()
    assert json.loads(at.get("plotly_chart")[0].proto.spec)["data"][1]["customdata"][0][3] == "0"


def test_app_starts_from_another_working_directory(home, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    at = _app()
    _no_errors(at)


# --------------------------------------------------------------------------------------------- browser


def _ensure_chromium() -> str | None:
    """None when chromium is there (installing Debian's package if missing), else the reason."""
    from tests.browser_support import ensure_chromium

    return ensure_chromium()


@pytest.mark.slow
def test_every_page_in_a_real_browser(store, tmp_path):
    """Open each page in headless chromium, check there is no exception, save a screenshot."""
    reason = _ensure_chromium()
    if reason is not None:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    shots = Path(os.environ.get("WORKBENCH_SCREENSHOTS", tmp_path / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    with serve(store, cwd=tmp_path) as url:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            # Streamlit scrolls inside its own container, so a tall window is what shows a whole page.
            page = browser.new_page(viewport={"width": 1400, "height": 2600})
            upload = tmp_path / "mine.npz"
            upload.write_bytes(_good_upload())
            routes = {
                "runs": "",
                "geometry": f"geometry?run={SPHERE_RUN}",
                "modality_gap": f"modality_gap?run={BRIDGE_RUN}",
                "bridges": f"bridges?run={BRIDGE_RUN}",
                "gradient_bias": "gradient_bias",
                "your_embeddings": "your_embeddings",
                "fusion_tasks": f"fusion_tasks?run={FUSION_RUN}",
            }
            for name, route in routes.items():
                if name == "fusion_tasks":  # three sections of figures: a taller window shows them all
                    page.set_viewport_size({"width": 1400, "height": 3600})
                page.goto(f"{url}/{route}", wait_until="domcontentloaded", timeout=60_000)
                page.wait_for_selector('[data-testid="stAppViewContainer"]', timeout=60_000)
                # Rendered = the title is there and the script has stopped running.
                page.wait_for_selector("h1", timeout=90_000)
                if name == "your_embeddings":
                    page.set_input_files('[data-testid="stFileUploaderDropzoneInput"]', str(upload))
                    page.wait_for_selector("text=60 pairs in d = 5", timeout=90_000)
                page.wait_for_function(
                    "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=120_000
                )
                if name != "runs":
                    page.wait_for_selector(".js-plotly-plot", timeout=60_000)
                page.wait_for_timeout(1500)
                page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
                errors = page.locator('[data-testid="stException"]')
                assert errors.count() == 0, f"{name}: {errors.first.inner_text()}"
                if name == "modality_gap":  # a tab is drawn when it is opened (lazy tabs rerun the page)
                    assert page.locator(".js-plotly-plot").count() == 1
                    page.get_by_role("tab", name="What if the gap shrank").click()
                    page.wait_for_selector("text=loss along the gap vector", timeout=60_000)
                    page.wait_for_function(_IDLE, timeout=120_000)
                    page.wait_for_timeout(1000)
                    page.screenshot(path=str(shots / "modality_gap_whatif.png"), full_page=True)
                    assert errors.count() == 0, errors.first.inner_text() if errors.count() else ""
            browser.close()
    expected = sorted([*(f"{n}.png" for n in routes), "modality_gap_whatif.png"])
    assert sorted(p.name for p in shots.glob("*.png")) == expected


def test_point_inspector_search_neighbours_and_download(home):
    at = _app("geometry", run=BRIDGE_RUN)
    assert "Click a point" in _texts(at.caption)
    at.text_input(key="geometry-find").input("7").run()
    _no_errors(at)
    assert "match '7'" in _texts(at.caption)
    spec = at.get("plotly_chart")[0].proto.spec
    assert "search matches (image)" in spec and "search matches (text)" in spec
    # The side panel: the digit image, its caption, the rank of its own caption, neighbours both ways.
    assert len(at.get("image")) >= 1  # the item, then its neighbours
    ranks = [m for m in at.metric if m.label == "Rank of its own caption"]
    assert len(ranks) == 1 and ranks[0].value.endswith("of 64")
    markdown = _texts(at.markdown)
    assert "Nearest images" in markdown and "Nearest texts (across)" in markdown
    table = at.dataframe[0].value
    assert set(table["listed because"]) == {"search"} and (table.label == "7").all()
    assert at.get("download_button")
    at.text_input(key="geometry-find").input("no such caption").run()
    assert "0 item(s) match" in _texts(at.caption)


def test_selected_points_come_from_the_chart_event():
    from app.inspector import selected_points

    event = {"selection": {"points": [{"customdata": ["3", "7", "a seven", "12", "b"]},
                                      {"customdata": ["3", "7", "a seven", "12", "b"]},
                                      {"x": 1.0}]}}  # fmt: skip
    assert selected_points(event) == [(12, "b")]
    assert selected_points({}) == [] and selected_points(None) == []


# A point of the first scatter trace of a plot, in page pixels (plotly's own axis mapping).
_POINT_PX = """(gd) => {
  const trace = gd._fullData.findIndex(t => t.mode === 'markers' && t.x && t.x.length);
  const t = gd._fullData[trace], xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
  const box = gd.getBoundingClientRect();
  return [box.left + xa._offset + xa.l2p(t.x[0]), box.top + ya._offset + ya.l2p(t.y[0])];
}"""
_IDLE = "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"


@pytest.mark.slow
def test_browser_selection_inspector_upload_refusal_and_live_refresh(store, tmp_path):
    """Click a point, search, refuse a .csv, and watch a running run's curve grow, in chromium."""
    reason = _ensure_chromium()
    if reason is not None:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    from workbench.store.runs import RunWriter

    config = {"dataset": "digits_captions", "loss": "clip"}
    live = RunWriter.create(config, run_id="live-run", root=store / "runs")
    live.log(1, train_loss=2.0)
    live.flush()
    shots = Path(os.environ.get("WORKBENCH_SCREENSHOTS", tmp_path / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    with serve(store, cwd=tmp_path) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 2200})
        errors = page.locator('[data-testid="stException"]')

        # Click one point: the inspector shows its image, caption, rank and neighbours.
        page.goto(f"{url}/geometry?run={BRIDGE_RUN}", timeout=60_000)
        page.wait_for_selector(".js-plotly-plot .legend", timeout=120_000)
        page.wait_for_function(_IDLE, timeout=120_000)
        plot = page.locator(".js-plotly-plot").first
        x, y = plot.evaluate(_POINT_PX)
        page.mouse.click(x, y)
        page.wait_for_selector("text=Rank of its own caption", timeout=60_000)
        page.wait_for_function(_IDLE, timeout=60_000)
        assert page.locator('[data-testid="stImage"]').count() >= 1
        # The table of chosen points comes after the inspector in the same rerun: wait for it too.
        page.get_by_text("Download these points (CSV)").wait_for(timeout=60_000)
        assert page.get_by_text("Download these points (CSV)").count() == 1
        page.screenshot(path=str(shots / "inspector-click.png"), full_page=True)
        # Search by label: matches are ringed in the figure and listed.
        page.get_by_label("Find points (id, label or caption text; commas for several)").fill("3")
        page.keyboard.press("Enter")
        page.wait_for_selector("text=search matches (image)", timeout=60_000)
        page.wait_for_function(_IDLE, timeout=60_000)
        page.screenshot(path=str(shots / "inspector-search.png"), full_page=True)
        assert errors.count() == 0, errors.first.inner_text()

        # A file of another type is refused with the reason.
        page.goto(f"{url}/your_embeddings", timeout=60_000)
        page.wait_for_selector("h1", timeout=90_000)
        csv = tmp_path / "table.csv"
        csv.write_text("a,b\n1,2\n")
        page.set_input_files('[data-testid="stFileUploaderDropzoneInput"]', str(csv))
        page.wait_for_selector("text=unsupported file type '.csv'", timeout=60_000)
        page.screenshot(path=str(shots / "upload-refused.png"), full_page=True)

        # The runs page follows a running run: a new logged step appears without touching the page.
        page.goto(f"{url}/", timeout=60_000)
        page.wait_for_selector("h1", timeout=90_000)
        page.wait_for_function(_IDLE, timeout=120_000)
        picker = page.locator('[data-testid="stMultiSelect"]').filter(has_text="Runs to compare")
        picker.click()
        from app.common import runs_frame
        from app.compare import run_labels

        runs_frame.clear()  # this process may hold a table read before the live run existed
        page.keyboard.type(run_labels(runs_frame(str(store / "runs")))["live-run"])  # what the picker shows
        page.keyboard.press("Enter")
        page.keyboard.press("Escape")
        page.wait_for_selector("text=Live:", timeout=60_000)
        count = "() => (document.querySelector('.js-plotly-plot') || {_fullData: [{x: []}]})._fullData[0]" \
            ".x.length"
        page.wait_for_function(f"() => ({count})() === 1", timeout=60_000)
        live.log(2, train_loss=1.5)
        live.flush()
        page.wait_for_function(f"() => ({count})() === 2", timeout=30_000)
        page.screenshot(path=str(shots / "runs-live.png"), full_page=True)
        assert errors.count() == 0, errors.first.inner_text()
        browser.close()
    live.finish({})
