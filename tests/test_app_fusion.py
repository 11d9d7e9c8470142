"""The dashboard's fusion runs: the "Fusion tasks" page under AppTest on a tiny real fusion run, the runs
page's fusion columns and labels, and the page's figure code (``app.fusion_views``) on its own.

The fixture store holds one real fusion run (tiny model, 3 steps: evaluations at every step, one snapshot
with the cross-attention maps) and a fusion run written by hand the way runs trained before the per-kind
accuracies were logged look (totals only, no snapshot).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the app's package `app` lives at the repo root
    sys.path.insert(0, str(REPO))
from fusion_support import tiny_fusion_config  # noqa: E402

from app import fusion_views as fv  # noqa: E402
from app.serve import APP  # noqa: E402

FUSION_RUN, OLD_RUN = "fusion-tiny", "fusion-old"
PAGE = "app_pages/fusion_tasks.py"
TIMEOUT = 60


def fusion_config(steps: int = 3):
    """A fusion run of a few seconds: the tiny model, small task splits, one snapshot at the end."""
    return tiny_fusion_config(
        steps, batch_size=16, eval_every=1, checkpoint_every=steps, probe_size=32
    )


@pytest.fixture(scope="session")
def fusion_store(tmp_path_factory) -> Path:
    from workbench.store.runs import RunWriter
    from workbench.training.trainer import train

    home = tmp_path_factory.mktemp("fusion-home")
    root = home / "runs"
    train(fusion_config(), run_id=FUSION_RUN, root=root, progress=False)
    config = {
        "dataset": "digits_captions",
        "model": "fusion",
        "loss": "siglip",
        "model_size": "small",
        "seed": 1,
    }
    with RunWriter.create(config, run_id=OLD_RUN, root=root) as w:
        for step, acc in ((0, 0.45), (10, 0.55)):
            w.log(step, vqa_acc=acc, ve_acc=acc - 0.1, itm_acc=0.6, train_loss=3.0 - step / 10)
        w.finish({"vqa_acc": 0.55, "ve_acc": 0.45, "itm_acc": 0.6, "train_loss": 2.0})
    return home


@pytest.fixture()
def home(fusion_store, monkeypatch) -> Path:
    monkeypatch.setenv("WORKBENCH_HOME", str(fusion_store))
    return fusion_store


@pytest.fixture(scope="session")
def fusion_run(fusion_store):
    from workbench.store.runs import load_run

    return load_run(FUSION_RUN, root=fusion_store / "runs")


def _page(run: str | None = None):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    if run is not None:
        at.query_params["run"] = run
    at.run()
    return at.switch_page(PAGE).run()


def _texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def _specs(at) -> list[str]:
    """Each plotly chart's figure as JSON text with its characters unescaped (labels hold "·")."""
    return [json.dumps(json.loads(c.proto.spec), ensure_ascii=False) for c in at.get("plotly_chart")]


def _no_errors(at) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


# --------------------------------------------------------------------------------------------- the page
def test_page_without_fusion_runs_says_how_to_make_one(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    at = _page()
    _no_errors(at)
    info = _texts(at.info)
    assert "no fusion run yet" in info and fv.TRAIN_COMMAND in info and "--model fusion" in info
    assert not at.get("plotly_chart")


def test_page_draws_curves_kinds_and_attention_of_a_real_run(home, fusion_run):
    at = _page(run=FUSION_RUN)
    _no_errors(at)
    picker = at.multiselect(key="fusion-runs")
    assert picker.value == [FUSION_RUN]
    label = picker.format_func(FUSION_RUN)
    assert label.startswith("fusion · clip · digits_captions · B=16 · seed 0 · ")  # app.compare.run_labels
    curves, kinds, attention = _specs(at)
    # one panel per task, titled with the direction; chance dashed and named; axes with units
    for text in ("VQA accuracy (higher is better)", "visual entailment accuracy (higher is better)",
                 "NLVR (two images) accuracy (higher is better)", fv.CHANCE, "training step",
                 "accuracy (fraction, 0 to 1)", '"dash": "dash"'):  # fmt: skip
        assert text in curves, text
    # per kind of question at the last step: 3 significant digits on the bars, chance per kind
    assert at.select_slider(key="fusion-kind-step").value == 3
    final = fusion_run.metrics.set_index("step").loc[3]
    assert f'"{fv.names.format_value(final["vqa_acc/digit"])}"' in kinds and "kind of question" in kinds
    assert fv.CHANCE in kinds and "both odd" in kinds
    # the attention: the question and its answer under the controls, the map in the figure
    snap = fusion_run.snapshot(3)
    markdown = _texts(at.markdown)
    assert snap["attn_texts"][0] in markdown and f"answer: **{snap['attn_answers'][0]}**" in markdown
    assert "mean of its words" in attention and "the image" in attention and "patch column" in attention
    # another question, one word, the first layer
    at.selectbox(key="fusion-attn-example").set_value(1).run()
    at.selectbox(key="fusion-attn-word-1").set_value(2).run()
    _no_errors(at)
    spec = _specs(at)[2]
    word = snap["attn_words"][1][2]
    assert f"the word '{word}'" in spec and "fusion layer 1" in spec
    assert snap["attn_texts"][1] in _texts(at.markdown)
    # an earlier step of the per-kind bars
    at.select_slider(key="fusion-kind-step").set_value(1).run()
    _no_errors(at)
    assert "Step 1." in _texts(at.caption)


def test_page_overlays_an_older_run_and_explains_what_it_lacks(home):
    at = _page()
    at.multiselect(key="fusion-runs").set_value([OLD_RUN]).run()
    _no_errors(at)
    assert "no accuracy per kind of question" in _texts(at.info)
    assert "has a snapshot" in _texts(at.info) or "None of these runs has a snapshot" in _texts(at.info)
    assert len(at.get("plotly_chart")) == 1  # the curves only; no chance logged, so no dashed line
    assert fv.CHANCE not in at.get("plotly_chart")[0].proto.spec
    at.multiselect(key="fusion-runs").set_value([FUSION_RUN, OLD_RUN]).run()
    _no_errors(at)
    curves = _specs(at)[0]
    assert "fusion · siglip" in curves and "fusion · clip · digits_captions · B=16" in curves
    assert len(at.get("plotly_chart")) == 3


def test_page_refuses_a_run_that_is_not_fusion(home):
    at = _page(run="no-such-run")
    _no_errors(at)
    assert "not a fusion run" in _texts(at.warning)
    assert at.multiselect(key="fusion-runs").value == [OLD_RUN]  # the newest fusion run instead


def test_runs_page_lists_fusion_metrics_and_compares_their_curves(home):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    _no_errors(at)
    table = at.dataframe[0].value.set_index("run_id")
    row = table.loc[FUSION_RUN]
    assert row.model == "fusion"
    for key in ("itm_acc", "vqa_acc", "ve_acc", "nlvr_acc", "itm_mean_R"):
        assert 0.0 <= row[key] <= 1.0, key
    assert np.isnan(table.loc[OLD_RUN, "nlvr_acc"])
    picker = at.multiselect(key="runs-compare")
    assert picker.format_func(FUSION_RUN).startswith("fusion · clip · digits_captions · B=16")
    picker.select(FUSION_RUN).run()
    _no_errors(at)
    chosen = at.multiselect(key="runs-metrics")
    assert chosen.value == ["train_loss", "vqa_acc", "ve_acc", "nlvr_acc"]
    assert chosen.format_func("vqa_acc/digit") == "VQA accuracy, digit questions"
    assert "vqa_chance/digit" in chosen.options or "VQA chance level, digit questions" in chosen.options
    spec = at.get("plotly_chart")[0].proto.spec
    assert "NLVR (two images) accuracy (higher is better)" in spec


# --------------------------------------------------------------------------------------------- figure code
def test_kind_table_reads_the_logged_values_and_their_chance(fusion_run):
    tables = {"run": fusion_run.metrics}
    assert fv.kind_steps(tables) == [0, 1, 2, 3]
    table = fv.kind_table(tables, 3)
    final = fusion_run.metrics.set_index("step").loc[3]
    assert list(table.task.unique()) == ["vqa", "ve", "nlvr"]
    assert list(table[table.task == "vqa"].kind) == [
        "digit",
        "even",
        "odd",
        "larger",
        "thickness",
        "slant",
        "size",
    ]
    for row in table.itertuples():
        assert row.accuracy == final[f"{row.task}_acc/{row.kind}"] and row.step == 3
    chance = table.set_index(["task", "kind"]).chance
    assert chance["vqa", "digit"] == pytest.approx(0.1) and chance["ve", "parity"] == pytest.approx(1 / 3)
    assert chance["nlvr", "same"] == pytest.approx(0.5)
    # a step between evaluations takes each run's last one before it
    shifted = {"run": fusion_run.metrics.assign(step=fusion_run.metrics.step * 10)}
    assert set(fv.kind_table(shifted, 25).step) == {20}
    assert fv.kind_table(shifted, -1).empty
    with pytest.raises(ValueError, match="no rows"):
        fv.kinds_figure(fv.kind_table(shifted, -1))


def test_accuracy_figure_panels_chance_and_errors(fusion_run):
    fig = fv.accuracy_figure({"a": fusion_run.metrics, "b": fusion_run.metrics.drop(columns="nlvr_acc")})
    titles = [a.text for a in fig.layout.annotations]
    assert titles == ["VQA accuracy (higher is better)", "visual entailment accuracy (higher is better)",
                      "NLVR (two images) accuracy (higher is better)"]  # fmt: skip
    runs = [t for t in fig.data if t.name in ("a", "b")]
    assert len(runs) == 5 and sum(bool(t.showlegend) for t in runs) == 2  # each run once in the legend
    chance = [t for t in fig.data if t.name == fv.CHANCE]
    assert len(chance) == 3 and [t.line.dash for t in chance] == ["dash"] * 3
    assert sum(bool(t.showlegend) for t in chance) == 1
    assert chance[0].y[0] == pytest.approx(fusion_run.metrics.vqa_chance.iloc[0])
    with pytest.raises(ValueError, match="tasks must be"):
        fv.accuracy_figure({"a": fusion_run.metrics}, tasks=["gqa"])
    with pytest.raises(ValueError, match="no 'step' column"):
        fv.accuracy_figure({"a": pd.DataFrame({"vqa_acc": [0.5]})})


def test_attention_map_is_a_distribution_over_the_patches(fusion_run):
    snap = fusion_run.snapshot(3)
    assert fv.has_attention(snap) and not fv.has_attention({"a": np.zeros((2, 2))})
    assert fv.attention_examples(snap)[0] == f"{snap['attn_texts'][0]} → {snap['attn_answers'][0]}"
    words = fv.attention_words(snap, 0)
    assert words[0] == (0, "[cls]") and all(w for _, w in words)
    grid, cls_share = fv.attention_map(snap, 0, -1, None)
    assert grid.shape == tuple(snap["attn_grid"]) and grid.sum() == pytest.approx(1.0, abs=1e-5)
    assert 0.0 <= cls_share <= 1.0
    # one word: its row of the stored map, the [CLS] column split off
    row = snap["attn_maps"][0, 0, 1]
    one, share = fv.attention_map(snap, 0, 0, 1)
    np.testing.assert_allclose(one.reshape(-1), row[1:] / row[1:].sum(), rtol=1e-5)
    assert share == pytest.approx(row[0] / row.sum(), rel=1e-5)
    padding = len(snap["attn_words"][0]) - 1
    for args, message in (((5, 0, None), "example"), ((0, 3, None), "layer"), ((0, 0, padding), "word")):
        with pytest.raises(ValueError, match=message):
            fv.attention_map(snap, *args)
    fig = fv.attention_figure(snap, 0, 0, 1)
    assert len(fig.data) == 4 and fig.data[3].z.shape == snap["attn_images"][0, 0].shape


def test_is_fusion_reads_the_config():
    assert fv.is_fusion({"model": "fusion"}) and not fv.is_fusion({"model": "two_tower"})
