"""Gradient bias: bias, variance and MSE of minibatch gradients against batch size, runs overlaid."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.common import (
    cached_figure,
    data_guard,
    lazy_tabs,
    open_run,
    page_header,
    pick_runs,
    query_run,
    run_ids_with,
    selected_runs,
)
from workbench.metrics import names
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
chosen = pick_runs("Runs to overlay", options, default[:3], "gb-runs", sidebar=True)
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
cols = st.columns([3, 2, 1])
losses = cols[0].multiselect(
    "Losses", losses_all, default=bias_fig.default_losses(table), key="gb-losses",
    help="A few losses by default; with more than six lines the figures get one panel per loss family.",
)  # fmt: skip
state = cols[1].radio(
    "State of the stateful losses", ["warm", "cold", "both"], horizontal=True, key="gb-state",
    help="warm: running estimates / queue filled, as later in training; cold: empty, as on the first "
    "epoch. Stateless losses always show their only state.",
)  # fmt: skip
band = cols[2].toggle("Error bands", True, key="gb-band")
if not losses:
    st.info("Pick at least one loss.")
    st.stop()
shown = bias_fig.pick_states(table[table.loss.isin(losses)], state)
# Figures are cached by the content of what they draw: building them took most of a rerun.
shown_key = int(pd.util.hash_pandas_object(shown, index=False).sum())


def curves(metric: str):
    fig = bias_fig.bias_curves(shown, metric, run=run_column, band=band)
    fig.update_layout(height=550)
    return fig


METRIC_TABS = {"Relative bias": "rel_bias", "Bias": "bias", "Variance": "variance", "MSE": "mse"}
tabs = lazy_tabs([*METRIC_TABS, "Decomposition", "Table"], key="gb-tab")
for tab, metric in zip(tabs[:4], METRIC_TABS.values(), strict=True):
    with tab, data_guard(f"the {metric} curves"):
        if tab.open:
            fig = cached_figure(("gradbias", shown_key, metric, run_column, band), lambda m=metric: curves(m))
            st.plotly_chart(fig, theme=None, key=f"gb-{metric}")
            st.caption(f"**{names.describe(metric).label}**: {names.help_text(metric)}.")
with tabs[4], data_guard("the decomposition"):
    if tabs[4].open:
        first = table if run_column is None else table[table.run == chosen[0]]
        loss = st.selectbox("Loss", losses, key="gb-decomp-loss")
        first_key = int(pd.util.hash_pandas_object(first, index=False).sum())
        fig = cached_figure(
            ("gb-decomposition", first_key, loss), lambda: bias_fig.decomposition(first, loss)
        )
        st.plotly_chart(fig, theme=None, key="gb-decomp")
        st.caption(f"Run `{chosen[0]}`: MSE = bias² + variance, each against the batch size.")
with tabs[5]:
    if tabs[5].open:
        for run_id, run_table in tables.items():
            st.markdown(f"Relative bias ± its noise floor, run `{run_id}` (3 significant digits)")
            formatted = bias_fig.bias_table(run_table)
            st.dataframe(formatted, hide_index=True, width="stretch", key=f"gb-table-{run_id}")
        with st.expander("Every column of the table"):
            numeric = {c: st.column_config.NumberColumn(format="%.3g") for c in table.columns
                       if pd.api.types.is_float_dtype(table[c])}  # fmt: skip
            st.dataframe(table, hide_index=True, width="stretch", column_config=numeric)
