"""Runs: every run of the store in one table, filters, and several runs compared."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.common import SELECTED_KEY, SUMMARY_METRICS, open_run, page_header, runs_frame
from app.compare import config_diff, group_label, run_labels, seed_groups, seed_summary
from workbench.metrics import names
from workbench.metrics.seeds import mean_std_over_seeds
from workbench.store.runs import runs_root
from workbench.viz import embedding as emb

#: Seconds between two refreshes of the curves while a chosen run is still running.
LIVE_SECONDS = 3
NUMBER_FORMAT = {
    m: st.column_config.NumberColumn(names.describe(m).label, format="%.3g", help=names.help_text(m))
    for m in SUMMARY_METRICS
}

page_header("Runs", "Every run of the store: filter, pick several, compare their curves.")
frame = runs_frame(str(runs_root()))
if frame.empty:
    st.info(
        "The run store is empty. Train something (`python -m workbench.train`, the notebooks, or "
        "`workbench demo`) or point `WORKBENCH_HOME` at another store."
    )
    st.stop()

with st.sidebar:
    st.header("Filters")
    query = st.text_input("Run id contains", key="runs-query")
    filters = {}
    for column in ("status", "kind", "model", "dataset", "loss"):
        values = sorted(v for v in frame[column].dropna().astype(str).unique() if v)
        if len(values) > 1:
            filters[column] = st.multiselect(column.capitalize(), values, key=f"runs-filter-{column}")
    only_snapshots = st.checkbox("Only runs with embedding snapshots", key="runs-snapshots")

shown = frame
if query:
    shown = shown[shown.run_id.str.contains(query, case=False, regex=False)]
for column, values in filters.items():
    if values:
        shown = shown[shown[column].astype(str).isin(values)]
if only_snapshots:
    shown = shown[shown.snapshots > 0]

bad = frame[frame.status.isin(["running", "stopped", "failed", "invalid"])]
if len(bad):
    counts = ", ".join(f"{n} {s}" for s, n in bad.status.value_counts().items())
    st.warning(f"Not every run is complete: {counts}. Their pages show what they wrote so far.")

st.caption(f"{len(shown)} of {len(frame)} runs")
st.dataframe(shown, hide_index=True, width="stretch", key="runs-table", column_config=NUMBER_FORMAT)

st.subheader("Compare runs")
previous = [r for r in st.session_state.get(SELECTED_KEY, []) if r in set(frame.run_id)]
labels = run_labels(frame)
chosen = st.multiselect(
    "Runs to compare (also the default runs of the other pages)",
    shown.run_id.tolist() + [r for r in previous if r not in set(shown.run_id)],
    default=previous,
    format_func=lambda run_id: labels.get(run_id, run_id),
    key="runs-compare",
)
st.session_state[SELECTED_KEY] = chosen
if not chosen:
    st.caption("Pick runs above to see their configs side by side and their curves overlaid.")
    st.stop()

runs = {run_id: run for run_id in chosen if (run := open_run(run_id)) is not None}
configs = {run_id: run.config for run_id, run in runs.items() if run.config}
if len(configs) > 1:
    differing, total = config_diff(configs)
    with st.expander(f"Config keys that differ ({len(differing)} of {total})", expanded=True):
        st.caption("A key only some runs have counts as different; it reads (missing) where absent.")
        st.dataframe(differing, width="stretch")

groups = seed_groups(configs)
groups.update({run_id: [run_id] for run_id in runs if run_id not in configs})  # no config: alone
repeated = {key: ids for key, ids in groups.items() if len(ids) > 1}
aggregate = False
if repeated:
    aggregate = st.toggle(
        f"Aggregate seeds: mean ± std over the runs of each setting ({len(repeated)} setting(s) with "
        "several seeds)", True, key="runs-aggregate",
    )  # fmt: skip
    st.dataframe(seed_summary(frame, groups), hide_index=True, width="stretch", key="runs-seeds")

numeric_all = set()
for run in runs.values():
    metrics = run.metrics
    numeric_all |= {c for c in metrics.columns if c != "step" and metrics[c].notna().any()}
numeric = sorted(numeric_all)
if not numeric:
    st.info("None of these runs logged metrics over steps (gradient-bias and summary runs keep tables).")
    st.stop()
# the fusion model's task accuracies first when a fusion run is chosen (two-tower runs do not log them)
preferred = [m for m in ("train_loss", "vqa_acc", "ve_acc", "nlvr_acc", "zero_shot_acc", "linear_probe_acc",
                         "centroid_gap", "global_loss", "knn_acc") if m in numeric]  # fmt: skip
chosen_metrics = st.multiselect(
    "Metrics", numeric, default=preferred[:4] or numeric[:2], key="runs-metrics",
    format_func=lambda m: names.describe(m).label if names.describe(m).label != m else m,
)  # fmt: skip
running = [run_id for run_id, run in runs.items() if run.status == "running"]


@st.fragment(run_every=LIVE_SECONDS if running else None)
def curves() -> None:
    """The curves; re-drawn on their own every few seconds while a chosen run is still running."""
    tables, steps = {}, {}
    for ids in groups.values():
        live = [run for run_id in ids if (run := open_run(run_id)) is not None]  # re-read: live runs
        for run in live:
            if run.run_id in running:  # the last step it logged (the status file is written less often)
                logged = run.metrics.get("step", pd.Series(dtype=float)).max()
                steps[run.run_id] = int(logged) if pd.notna(logged) else run.step
        if aggregate and len(live) > 1:
            tables[group_label(frame, ids)] = mean_std_over_seeds([run.metrics for run in live])
        else:
            tables.update({labels.get(run.run_id, run.run_id): run.metrics for run in live})
    if chosen_metrics:
        fig = emb.metrics_figure(tables, chosen_metrics, title="Metrics over training")
        st.plotly_chart(fig, theme=None, key="runs-metrics-fig")
    if running:
        where = ", ".join(f"`{r}` at step {steps.get(r)}" for r in running)
        st.caption(f"Live: {where}; the curves refresh every {LIVE_SECONDS} s.")


if chosen_metrics or running:
    curves()
st.page_link(
    "app_pages/geometry.py",
    label="Open the embedding geometry of these runs",
    icon=":material/arrow_forward:",
)
