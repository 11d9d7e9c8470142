"""Runs: every run of the store in one table, filters, and several runs compared."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.common import SELECTED_KEY, open_run, page_header, runs_frame
from workbench.store.runs import runs_root
from workbench.viz import embedding as emb

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
    for column in ("status", "kind", "dataset", "loss"):
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
st.dataframe(shown, hide_index=True, width="stretch", key="runs-table")

st.subheader("Compare runs")
previous = [r for r in st.session_state.get(SELECTED_KEY, []) if r in set(frame.run_id)]
chosen = st.multiselect(
    "Runs to compare (also the default runs of the other pages)",
    shown.run_id.tolist() + [r for r in previous if r not in set(shown.run_id)],
    default=previous,
    key="runs-compare",
)
st.session_state[SELECTED_KEY] = chosen
if not chosen:
    st.caption("Pick runs above to see their configs side by side and their curves overlaid.")
    st.stop()

runs = {run_id: run for run_id in chosen if (run := open_run(run_id)) is not None}
configs = pd.DataFrame({run_id: pd.json_normalize(run.config).iloc[0] for run_id, run in runs.items()
                        if run.config})  # fmt: skip
if not configs.empty:
    differing = configs[configs.astype(str).nunique(axis=1) > 1]
    with st.expander(f"Config keys that differ ({len(differing)} of {len(configs)})", expanded=True):
        st.dataframe(differing.astype(str), width="stretch")

metrics = {run_id: run.metrics for run_id, run in runs.items()}
numeric = sorted({c for m in metrics.values() for c in m.columns if c != "step" and m[c].notna().any()})
if not numeric:
    st.info("None of these runs logged metrics over steps (gradient-bias and summary runs keep tables).")
    st.stop()
preferred = [m for m in ("train_loss", "zero_shot_acc", "linear_probe_acc", "centroid_gap", "global_loss",
                         "knn_acc") if m in numeric]  # fmt: skip
chosen_metrics = st.multiselect("Metrics", numeric, default=preferred[:4] or numeric[:2], key="runs-metrics")
if chosen_metrics:
    fig = emb.metrics_figure(metrics, chosen_metrics, title="Metrics over training")
    st.plotly_chart(fig, theme=None, key="runs-metrics-fig")
st.page_link(
    "app_pages/geometry.py",
    label="Open the embedding geometry of these runs",
    icon=":material/arrow_forward:",
)
