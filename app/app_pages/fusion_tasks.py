"""Fusion tasks: reasoning-task accuracy of fusion runs over training, per kind of question, and the
cross-attention of a question's words over the digit."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import fusion_views as fv
from app.common import (
    cached_snapshot,
    data_guard,
    open_run,
    page_header,
    pick_runs,
    query_run,
    run_label_map,
    runs_frame,
    selected_runs,
    snapshot_signature,
)
from workbench.metrics import names
from workbench.store.runs import runs_root

page_header(
    "Fusion tasks",
    "The fusion model's reasoning tasks (VQA, visual entailment, NLVR) over training and per kind of "
    "question, against chance; and where its words look in the image.",
)


frame = runs_frame(str(runs_root()))
fusion_ids = frame.loc[frame["model"] == "fusion", "run_id"].tolist() if "model" in frame.columns else []
if not fusion_ids:
    st.info(
        "The run store has no fusion run yet. Train one (about a minute on a CPU with the tiny model):\n\n"
        f"```\n{fv.TRAIN_COMMAND}\n```\n\nor run notebook 06 (`workbench notebooks run 06_fusion`)."
    )
    st.stop()

labels = run_label_map()
wanted = query_run()
if wanted is not None and wanted not in fusion_ids:
    st.warning(f"Run `{wanted}` is not a fusion run of this store; pick one below.")
    wanted = None
default = [r for r in ([wanted] if wanted else []) + selected_runs() if r in fusion_ids]
# on the page, not the sidebar: the labels are read in full
first = list(dict.fromkeys(default))[:4] or fusion_ids[:1]
chosen = pick_runs("Fusion runs", fusion_ids, first, "fusion-runs")
if not chosen:
    st.info("Pick at least one fusion run above.")
    st.stop()

runs = {run_id: run for run_id in chosen if (run := open_run(run_id)) is not None}
for run_id, run in runs.items():
    if run.status != "complete":
        st.warning(f"Run `{labels[run_id]}` is {run.status} (step {run.step}); showing what it wrote so far.")
tables = {labels[run_id]: run.metrics for run_id, run in runs.items()}

# --------------------------------------------------------------------------------------------- over steps
st.subheader("Accuracy per task over training")
logged = {label: fv.logged_tasks(df) for label, df in tables.items()}
if not any(logged.values()):
    st.info(
        "These runs logged no reasoning task: they were trained with `reasoning_tasks=[]` or on a data set "
        "that is not digits (the tasks ask about digits)."
    )
else:
    with data_guard("the accuracy curves"):
        st.plotly_chart(fv.accuracy_figure(tables), theme=None, key="fusion-curves")
    st.caption(
        "Each point: held-out accuracy of a logistic-regression answer classifier on the frozen fused "
        "features at that step (the model is not trained on the tasks). Dashed: the accuracy of guessing "
        "uniformly among the answers each question allows, averaged over the test questions."
    )

# --------------------------------------------------------------------------------------------- per kind
st.subheader("Accuracy per kind of question")
steps = fv.kind_steps(tables)
if not steps:
    st.info(
        "These runs logged no accuracy per kind of question (`vqa_acc/digit` ...): they were trained before "
        "it was logged. Train again to see it."
    )
else:
    step = (
        int(st.select_slider("Step", options=steps, value=steps[-1], key="fusion-kind-step"))
        if len(steps) > 1
        else steps[0]
    )
    table = fv.kind_table(tables, step)
    with data_guard("the accuracy per kind of question"):
        st.plotly_chart(fv.kinds_figure(table), theme=None, key="fusion-kinds")
    late = table.loc[table.step != step, ["run", "step"]].drop_duplicates()
    note = "".join(f" `{r.run}` shows step {r.step}, its last evaluation before." for r in late.itertuples())
    st.caption(
        f"Step {step}. Bars: held-out accuracy on the questions of each kind (values to 3 significant "
        f"digits); dashed: chance for that kind. A task's total is the mean of its kinds weighted by their "
        f"numbers of test questions.{note}"
    )
    with st.expander("The numbers (3 significant digits)"):
        shown = table.assign(
            task=table.task.map(names.TASK_LABELS),
            kind=table.kind.str.replace("_", " "),
            accuracy=table.accuracy.map(names.format_value),
            chance=table.chance.map(names.format_value),
        )
        wide = shown.pivot_table(
            index=["task", "kind", "chance"], columns="run", values="accuracy", aggfunc="first", sort=False
        ).reset_index()
        st.dataframe(wide, hide_index=True, width="stretch", key="fusion-kinds-table")

# --------------------------------------------------------------------------------------------- attention
st.subheader("Cross-attention over the image")
with_snapshots = [run_id for run_id, run in runs.items() if run.snapshot_steps]
if not with_snapshots:
    st.info("None of these runs has a snapshot yet (saved every `snapshot_every` steps and at the end).")
    st.stop()
cols = st.columns([3, 2])
run_id = cols[0].selectbox(
    "Run", with_snapshots, format_func=lambda r: labels.get(r, r), key="fusion-attn-run"
)
run = runs[run_id]
snap_steps = run.snapshot_steps
with cols[1]:
    if len(snap_steps) > 1:
        snap_step = int(
            st.select_slider("Snapshot (step)", snap_steps, value=snap_steps[-1], key="fusion-attn-step")
        )
    else:
        snap_step = snap_steps[0]
        st.caption(f"One snapshot: step {snap_step}")
snapshot: dict = {}
with data_guard(f"the snapshot of {run_id} at step {snap_step}"):
    snapshot = cached_snapshot(str(run.path), snap_step, snapshot_signature(run))
if not snapshot:
    st.stop()
if not fv.has_attention(snapshot):
    st.info(
        "This snapshot kept no cross-attention maps: the run was trained with `attention_examples=0` (or "
        "before the maps were saved)."
    )
    st.stop()

examples = fv.attention_examples(snapshot)
layers = int(snapshot["attn_maps"].shape[1])
cols = st.columns([3, 1, 2])
example = cols[0].selectbox(
    "Question" if "attn_answers" in snapshot and any(snapshot["attn_answers"]) else "Caption",
    range(len(examples)),
    format_func=lambda i: examples[i],
    key="fusion-attn-example",
)
layer = cols[1].selectbox(
    "Fusion layer", range(layers), index=layers - 1, format_func=lambda i: f"{i + 1} of {layers}",
    key="fusion-attn-layer",
)  # fmt: skip
words = fv.attention_words(snapshot, example)
choices: list[int | None] = [None, *[j for j, _ in words]]
word_of = dict(words)
word = cols[2].selectbox(
    "Word",
    choices,
    format_func=lambda j: fv.MEAN_WORD if j is None else f"{word_of[j]} (token {j})",
    key=f"fusion-attn-word-{example}",
    help="[cls] is the text's first token: the fused [CLS] is what the task probes read.",
)
text = str(snapshot["attn_texts"][example])
answer = str(snapshot["attn_answers"][example]) if "attn_answers" in snapshot else ""
st.markdown(f"**{text}**" + (f" &nbsp; answer: **{answer}**" if answer else ""))
with data_guard("the attention map"):
    st.plotly_chart(fv.attention_figure(snapshot, example, layer, word), theme=None, key="fusion-attn")
st.caption(
    "Head-averaged cross-attention of the fusion encoder: how much the chosen word (or the mean of the "
    "text's words) attends to each image token. The image's [CLS] token is left out of the maps and the "
    "patches renormalised; its share is in the title. A heat map is a hint of where the model reads, not "
    f"an explanation. Run `{run_id}`, step {snap_step}."
)
if len(pd.unique(snapshot["attn_texts"])) < len(examples):
    st.caption("Some examples share a text: they differ in their image.")
