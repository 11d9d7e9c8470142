"""Gradient bias: bias, variance and MSE of minibatch gradients against batch size, runs overlaid."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.common import data_guard, open_run, page_header, query_run, run_ids_with, selected_runs
from workbench.viz import bias as bias_fig

page_header(
    "Gradient bias",
    "How far a minibatch gradient is from the full-data gradient, per loss and batch size "
    "(runs of `workbench.labs.gradbias`); bands are the Monte-Carlo error of each measurement.",
)
options = run_ids_with("gradbias")
wanted = query_run()
if wanted is not None and wanted not in options:
    run = open_run(wanted)
    if run is not None:
        st.warning(f"Run `{wanted}` has no gradient-bias table (its tables: {run.tables or 'none'}).")
if not options:
    st.info("No run in the store has a gradient-bias table yet: run `python -m workbench.labs.gradbias`.")
    st.stop()
default = [r for r in ([wanted] if wanted else []) + selected_runs() if r in options] or options[:1]
chosen = st.sidebar.multiselect("Runs to overlay", options, default=default[:3], key="gb-runs")
if not chosen:
    st.info("Pick at least one run in the sidebar.")
    st.stop()

tables = {}
for run_id in chosen:
    run = open_run(run_id)
    if run is None:
        continue
    if run.status != "complete":
        st.warning(f"Run `{run_id}` is {run.status}; its table may be partial.")
    with data_guard(f"the gradient-bias table of {run_id}"):
        tables[run_id] = run.table("gradbias")
if not tables:
    st.stop()
table = bias_fig.label_runs(tables) if len(tables) > 1 else next(iter(tables.values()))
run_column = "run" if len(tables) > 1 else None

losses_all = list(pd.unique(table.loss))
cols = st.columns(3)
losses = cols[0].multiselect("Losses", losses_all, default=losses_all, key="gb-losses")
states_all = list(pd.unique(table.state))
states = cols[1].multiselect("States", states_all, default=states_all, key="gb-states")
band = cols[2].toggle("Error bands", True, key="gb-band")
if not losses or not states:
    st.info("Pick at least one loss and one state.")
    st.stop()

tabs = st.tabs(["Bias", "Variance", "MSE", "Relative bias", "Decomposition", "Table"])
for tab, metric in zip(tabs[:4], ("bias", "variance", "mse", "rel_bias"), strict=True):
    with tab, data_guard(f"the {metric} curves"):
        fig = bias_fig.bias_curves(table, metric, run=run_column, losses=losses, states=states, band=band)
        fig.update_layout(height=550)
        st.plotly_chart(fig, theme=None, key=f"gb-{metric}")
with tabs[4], data_guard("the decomposition"):
    first = table if run_column is None else table[table.run == chosen[0]]
    loss = st.selectbox("Loss", losses, key="gb-decomp-loss")
    st.plotly_chart(bias_fig.decomposition(first, loss), theme=None, key="gb-decomp")
    st.caption(f"Run `{chosen[0]}`: MSE = bias² + variance, each against the batch size.")
with tabs[5]:
    st.dataframe(table, hide_index=True, width="stretch")
