"""The geometry views, shared by the run pages and the upload page: each takes a :class:`Source`.

Widget keys carry a ``prefix`` so the same view can appear on several pages without clashes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from app.common import (
    DRAWN_PAIRS,
    METHOD_LABELS,
    Source,
    cached_figure,
    data_guard,
    drawn_rows,
    lazy_tabs,
    one_torch_thread,
    open_run,
    pick_runs,
    run_ids_with,
    run_warnings,
    source_for_run,
    step_slider,
    subset_info,
)
from app.inspector import inspectable_chart
from workbench.metrics import names
from workbench.metrics.gap import bridge_means, gap_shift_curve, whatif_curve
from workbench.metrics.geometry import bridge_paths
from workbench.metrics.names import format_value
from workbench.viz import embedding as emb

# Pairs used by the what-if curve: the loss is O(n^2) per shift and the curve takes 25 or more shifts, so
# large sets are subsampled (2,000 pairs took a second of CPU per curve, 1,000 a fifth of that).
WHATIF_MAX_PAIRS = 1000
DEFAULT_GAP_METRICS = [
    "centroid_gap",
    "relative_modality_gap",
    "modality_separability",
    "alignment",
    "uniformity",
    "cone",
    "effective_rank",
]


#: The scalar report of a set of paired embeddings, in the order it is shown.
REPORT_METRICS = (
    "centroid_gap", "relative_modality_gap", "modality_separability", "alignment", "uniformity", "cone",
    "effective_rank", "mean_pair_cosine", "i2t_R@1", "i2t_R@5", "t2i_R@1", "t2i_R@5", "mean_R",
)  # fmt: skip


def scalar_report_view(report: dict, columns: int = 5) -> None:
    """Every measure of ``report`` as a tile: value (3 significant digits), direction, and its
    definition and unit on hover."""
    shown = [m for m in REPORT_METRICS if m in report] + [
        m for m in report if m not in REPORT_METRICS and np.isfinite(report[m])
    ]
    for start in range(0, len(shown), columns):
        cols = st.columns(columns)
        for col, metric in zip(cols, shown[start : start + columns], strict=False):
            info = names.describe(metric)
            arrow = {"higher": " ↑", "lower": " ↓"}.get(info.direction, "")
            col.metric(f"{info.label}{arrow}", format_value(report[metric]), help=names.help_text(metric))
    st.caption("↑ higher is better, ↓ lower is better; hover a value for its definition and unit.")


def _at(source: Source, step: int, lead: str = " at") -> str:
    """`` at step 3`` for runs; nothing for an upload, which has no checkpoints."""
    return f"{lead} step {step}" if source.run is not None else ""


def _table_hash(table: pd.DataFrame) -> int:
    """Content hash of a small table (a cache key for the figures drawn from it)."""
    return int(pd.util.hash_pandas_object(table, index=False).sum()) if len(table) else 0


def _drawn_note(drawn: np.ndarray, n: int) -> None:
    if len(drawn) < n:
        st.caption(
            f"{len(drawn):,} of {n:,} pairs drawn (evenly spaced); the measures, the search and the "
            "inspector use all of them."
        )


def _plot(fig, key: str) -> None:
    # theme=None keeps the figures' own template, so they look as they do in the notebooks.
    st.plotly_chart(fig, theme=None, key=key, config={"displaylogo": False})


def _projection_controls(source: Source, prefix: str, animate: bool) -> dict:
    snap = source.snapshot(source.steps[-1])
    has_labels = "labels" in snap and (np.asarray(snap["labels"]) >= 0).any()
    cols = st.columns(4)
    method = cols[0].selectbox(
        "Projection", list(METHOD_LABELS), format_func=METHOD_LABELS.get, key=f"{prefix}-method"
    )
    dims = cols[1].radio("Dimensions", [2, 3], horizontal=True, key=f"{prefix}-dims")
    color_by = cols[2].radio(
        "Colour by",
        ["modality", "class"] if has_labels else ["modality"],
        horizontal=True,
        key=f"{prefix}-color",
    )
    pair_lines = cols[3].slider("Lines between pairs", 0, 500, 100, step=10, key=f"{prefix}-pairs")
    cols = st.columns(4)
    keys = ("a", "b")
    if "a_aug" in snap and cols[0].checkbox("Augmented images", key=f"{prefix}-aug"):
        keys = ("a", "b", "a_aug")
    fit_on = "all"
    if method == "frozen_pca":
        fit_on = cols[1].radio(
            "Fit the basis on", ["all", "last"], horizontal=True, key=f"{prefix}-fit",
            help="all checkpoints together, or the last one only",
        )  # fmt: skip
    # Off by default: the animation ships every checkpoint to the browser (2.9 MB of JSON for 5,000 pairs x
    # 20 checkpoints), which takes seconds to draw; the step slider shows one checkpoint per rerun.
    play = animate and len(source.steps) > 1 and cols[2].toggle(
        "Animate (play)", False, key=f"{prefix}-play",
        help="send every checkpoint to the browser and add play/pause and a step slider to the figure",
    )  # fmt: skip
    n = int(np.shape(snap["a"])[0])
    drawn = None
    if n > DRAWN_PAIRS and not play:  # the animation sends every point of every checkpoint
        options = [v for v in (500, 1000, 2000, 5000, 10_000, 20_000) if v < n] + [n]
        drawn = cols[3].select_slider(
            "Pairs drawn", options, value=DRAWN_PAIRS, key=f"{prefix}-drawn",
            format_func=lambda v: f"{v:,}" + (" (all)" if v == n else ""),
            help="An evenly spaced sample of the pairs; more points take the browser longer to draw.",
        )  # fmt: skip
    if method in ("umap", "aligned_umap"):
        st.caption(
            "UMAP is fitted once per run and cached in the run folder; the first fit takes a while "
            "(numba compiles umap-learn's code on first use)."
        )
    return {"method": method, "dims": dims, "color_by": color_by, "pair_lines": pair_lines, "keys": keys,
            "fit_on": fit_on, "play": play, "drawn": drawn}  # fmt: skip


def embedding_view(source: Source, prefix: str) -> None:
    """Projection of every checkpoint with a step slider (and play), plus the unit-sphere view."""
    with data_guard("the embedding controls") as guard:
        opts = _projection_controls(source, prefix, animate=True)
        step = step_slider(source, key=f"{prefix}-step")
    if not guard.ok:
        return
    with data_guard("the projection"):
        proj = source.projection(opts["method"], opts["dims"], opts["keys"], opts["fit_on"])
        info = source.info(step)
        title = f"{source.label}: {METHOD_LABELS[opts['method']]}"
        settings = (*sorted((k, v) for k, v in opts.items() if k != "keys"), opts["keys"], title)
        if opts["play"]:
            fig = cached_figure(
                (source.key, "animated", step, settings),
                lambda: emb.animated_figure(
                    proj, info, opts["color_by"], opts["pair_lines"], start_step=step, title=title
                ),
            )
            _plot(fig, f"{prefix}-scatter")
        else:
            axis = "PC" if "pca" in opts["method"] else "UMAP"
            coords = proj.at(step)
            drawn = drawn_rows(info.n, opts["drawn"])
            fig = cached_figure(
                (source.key, "scatter", step, settings),
                lambda: emb.scatter_figure(
                    {k: v[drawn] for k, v in coords.items()}, subset_info(info, drawn), opts["color_by"],
                    opts["pair_lines"], f"{title}{_at(source, step, ',')}", proj.bounds(), axis,
                ),
            )  # fmt: skip
            inspectable_chart(fig, source, step, info, coords, prefix, drawn)
            _drawn_note(drawn, info.n)
        if proj.explained is not None:
            shares = ", ".join(f"{v:.1%}" for v in proj.explained[proj.index(step)])
            st.caption(f"Variance explained by the axes{_at(source, step)}: {shares}.")
    with data_guard("the unit-sphere view"):
        snap = source.snapshot(step)
        d = np.shape(snap["a"])[1]
        st.subheader("Unit sphere")
        if d == 3:
            arrays = {k: snap[k] for k in opts["keys"]}
            label = _at(source, step, "").strip()
            sphere = emb.sphere_figure(arrays, info, opts["color_by"], opts["pair_lines"], label)
            _plot(sphere, f"{prefix}-sphere")
        else:
            st.caption(f"The embeddings are {d}-dimensional; the unit-sphere view is for 3-d embeddings.")


# --------------------------------------------------------------------------------------------- modality gap
def _gap_tables(source: Source, others: list[str]) -> dict[str, pd.DataFrame]:
    tables = {}
    with data_guard(f"the measures of {source.label}"):
        tables[source.label] = source.geometry_table()
    for run_id in others:
        if run_id == source.label:
            continue
        run = open_run(run_id)
        if run is None or not run_warnings(run):
            continue
        with data_guard(f"the measures of {run_id}"):
            tables[run_id] = source_for_run(run).geometry_table()
    return tables


# The arrays are named by ``key`` (source, step, rows), not hashed: leading underscores.
@st.cache_data(max_entries=32, show_spinner="Recomputing the loss along the gap vector ...")
def _whatif_curve(
    key: str, _a: np.ndarray, _b: np.ndarray, loss: str, params: dict, call: dict
) -> pd.DataFrame:
    with one_torch_thread():
        return whatif_curve(_a, _b, loss, params, call)


@st.cache_data(max_entries=256, show_spinner=False)
def _whatif_point(
    key: str, _a: np.ndarray, _b: np.ndarray, shift: float, loss: str, params: dict, call: dict
) -> pd.DataFrame:
    with one_torch_thread():
        return gap_shift_curve(_a, _b, [shift], loss, params, call_params=call)


def gap_view(source: Source, prefix: str, compare: list[str] | None = None) -> None:
    """Measures over training (runs overlaid), the gap on the projection, per-dimension gap, spectrum,
    and the what-if slider, one tab each (only the open one is drawn)."""
    step = step_slider(source, key=f"{prefix}-step")
    # fixed labels: the open tab is remembered by its label
    labels = {"training": "Geometry over training", "vector": "Gap vector",
              "spectra": "Per dimension and spectrum", "whatif": "What if the gap shrank"}  # fmt: skip
    if source.run is None:  # an uploaded file has one checkpoint: nothing over training
        del labels["training"]
    tabs = dict(zip(labels, lazy_tabs(list(labels.values()), f"{prefix}-tab"), strict=True))
    if "training" in tabs:
        with tabs["training"]:
            if tabs["training"].open:
                _gap_over_training(source, prefix, step, compare)
    with data_guard("the snapshot") as guard:
        snap = source.snapshot(step)
        a, b = snap["a"], snap["b"]
    if not guard.ok:
        return
    with tabs["vector"]:
        if tabs["vector"].open:
            _gap_vector(source, prefix, step, a, b)
    with tabs["spectra"]:
        if tabs["spectra"].open:
            _gap_spectra(source, prefix, step, a, b)
    with tabs["whatif"]:
        if tabs["whatif"].open:
            whatif_view(source, step, a, b, prefix)


def _gap_over_training(source: Source, prefix: str, step: int, compare: list[str] | None) -> None:
    options = [r for r in run_ids_with("snapshots") if r != source.label]
    others = pick_runs(
        "Compare with runs", options, [r for r in (compare or []) if r in options], f"{prefix}-compare"
    )
    tables = _gap_tables(source, others)
    available = sorted({c for t in tables.values() for c in t.columns if c in emb.GEOMETRY_METRICS})
    chosen = st.multiselect(
        "Measures", available, default=[m for m in DEFAULT_GAP_METRICS if m in available],
        format_func=lambda m: names.describe(m).label, key=f"{prefix}-measures",
    )  # fmt: skip
    if chosen and tables:
        key = ("metrics", *((label, _table_hash(t)) for label, t in tables.items()), *chosen, step)
        fig = cached_figure(key, lambda: emb.metrics_figure(tables, chosen, marker_step=step))
        _plot(fig, f"{prefix}-metrics")
        with st.expander("What the measures mean"):
            lines = [f"* **{names.describe(m).label}**: {names.help_text(m)}." for m in chosen]
            st.markdown("\n".join(lines))


def _gap_vector(source: Source, prefix: str, step: int, a: np.ndarray, b: np.ndarray) -> None:
    cols = st.columns(2)
    method = cols[0].selectbox(
        "Projection", ["frozen_pca", "pca"], format_func=METHOD_LABELS.get, key=f"{prefix}-gap-method"
    )
    dims = cols[1].radio("Dimensions", [2, 3], horizontal=True, key=f"{prefix}-gap-dims")
    with data_guard("the gap vector"):
        proj = source.projection(method, dims, ("a", "b"))
        info = source.info(step)
        coords = proj.at(step)
        drawn = drawn_rows(info.n)

        def gap_figure():
            fig = emb.scatter_figure(
                {k: v[drawn] for k, v in coords.items()}, subset_info(info, drawn), pair_lines=50,
                title="image and text embeddings, gap vector", bounds=proj.bounds(), axis_title="PC",
            )  # fmt: skip
            # The arrow joins the centroids of every pair, not only of the drawn ones.
            unit_a = a / np.linalg.norm(a, axis=1, keepdims=True)
            unit_b = b / np.linalg.norm(b, axis=1, keepdims=True)
            emb.add_gap_arrow(fig, proj.place(step, unit_b.mean(0)), proj.place(step, unit_a.mean(0)))
            return fig

        fig = cached_figure((source.key, "gap", step, method, dims), gap_figure)
        inspectable_chart(fig, source, step, info, coords, f"{prefix}-gap", drawn)
        _drawn_note(drawn, info.n)


def _gap_spectra(source: Source, prefix: str, step: int, a: np.ndarray, b: np.ndarray) -> None:
    cols = st.columns(2)
    with cols[0], data_guard("the per-dimension gap"):
        top = st.slider(
            "Dimensions shown", 1, int(np.shape(a)[1]), min(32, int(np.shape(a)[1])), key=f"{prefix}-top"
        )
        fig = cached_figure(
            (source.key, "perdim", step, top),
            lambda: emb.per_dimension_gap_figure(a, b, top=top, title="Gap per dimension"),
        )
        _plot(fig, f"{prefix}-perdim")
    with cols[1], data_guard("the singular spectrum"):
        fig = cached_figure(
            (source.key, "spectrum", step),
            lambda: emb.singular_spectrum_figure(a, b, title="Singular spectrum"),
        )
        _plot(fig, f"{prefix}-spectrum")


def whatif_loss_settings(
    source: Source, step: int, loss: str, cols: list, prefix: str
) -> tuple[dict, dict, str]:
    """The what-if loss's own parameters from the controls: ``(constructor params, call params, note)``.

    The run's learned logit scale is offered only for the loss the run was trained with (a CLIP scale
    means nothing to SigLIP, whose scale and bias are its own); while it is used, the temperature box
    is disabled, since the scale replaces 1/τ.
    """
    from workbench.losses import loss_parameters

    defaults = loss_parameters(loss)
    config = source.config
    own = config.get("loss") == loss
    trained = (config.get("loss_params") or {}) if own else {}
    learned = source.scale_at(step) if own else None
    use_learned = learned is not None and cols[2].checkbox(
        f"Use the run's learned scale 1/τ = {learned:.3g}", True, key=f"{prefix}-wi-scale",
        help="The logit scale the run learned at this checkpoint; it replaces the temperature.",
    )  # fmt: skip
    params: dict = {}
    call: dict = {}
    if "temperature" in defaults:
        params["temperature"] = cols[1].number_input(
            "Temperature τ", 0.001, 10.0, float(trained.get("temperature", defaults["temperature"])),
            format="%.3f", key=f"{prefix}-wi-temp", disabled=use_learned,
            help="Logits are cosine / τ." + (" Off: the learned scale is used." if use_learned else ""),
        )  # fmt: skip
    if "bias" in defaults:  # SigLIP: its own scale t and bias b (Zhai et al. 2023 start at 10 and -10)
        params["scale"] = cols[1].number_input(
            "Logit scale t", 0.1, 1000.0, float(trained.get("scale", defaults["scale"])),
            key=f"{prefix}-wi-sscale", disabled=use_learned,
        )  # fmt: skip
        params["bias"] = cols[2].number_input(
            "Logit bias b", -100.0, 100.0, float(trained.get("bias", defaults["bias"])),
            key=f"{prefix}-wi-bias",
        )  # fmt: skip
    if use_learned:
        call["scale"] = float(learned)
        note = f"the run's learned scale {learned:.3g}"
    else:
        note = ", ".join(f"{k} = {v:g}" for k, v in params.items()) or "its defaults"
    return params, call, note


def whatif_view(source: Source, step: int, a: np.ndarray, b: np.ndarray, prefix: str) -> None:
    """Shift the embeddings along the gap vector and recompute the contrastive loss."""
    from workbench.losses import loss_names

    st.caption(
        "Image embeddings move by −shift·g/2 and text embeddings by +shift·g/2 along the gap vector "
        "g = mean image − mean text, then every row is re-normalised (Liang et al. 2022). Shift 0 is the "
        "trained model, 1 brings the two centroids together. The grid of shifts is widened until the "
        "lowest loss lies inside it."
    )
    names_ = loss_names()
    config = source.config
    default_loss = config.get("loss") if config.get("loss") in names_ else "clip"
    cols = st.columns(3)
    loss = cols[0].selectbox("Loss", names_, index=names_.index(default_loss), key=f"{prefix}-wi-loss")
    params, call, note = whatif_loss_settings(source, step, loss, cols, prefix)
    with data_guard("the what-if curve"):
        n = np.shape(a)[0]
        rows = np.arange(n)
        if n > WHATIF_MAX_PAIRS:
            rows = np.sort(np.random.default_rng(0).choice(n, WHATIF_MAX_PAIRS, replace=False))
            st.caption(
                f"The loss is computed on {WHATIF_MAX_PAIRS} of the {n} pairs (a fixed random sample)."
            )
        key = f"{source.key}:{step}:{n}"
        curve = _whatif_curve(key, a[rows], b[rows], loss, params, call)
        low, high = float(curve["shift"].min()), float(curve["shift"].max())
        shift = st.slider("Shift along the gap vector", low, high, 0.0, 0.05, key=f"{prefix}-wi-shift")
        here = _whatif_point(key, a[rows], b[rows], shift, loss, params, call)
        base = curve.loc[np.isclose(curve["shift"], 0.0), "loss"]
        cols = st.columns(3)
        change = None if base.empty else here.loss[0] - float(base.iloc[0])
        delta = None if change is None or abs(change) < 5e-5 else f"{change:+.3g} vs shift 0"
        cols[0].metric(
            "Loss at this shift", format_value(here.loss[0]), delta, delta_color="inverse",
            help=f"{loss} loss over all pairs ({note}); lower is better.",
        )  # fmt: skip
        cols[1].metric(
            "Centroid gap", format_value(here.centroid_gap[0]), help=names.help_text("centroid_gap")
        )
        cols[2].metric(
            "Mean pair cosine", format_value(here.mean_pair_cosine[0]),
            help=names.help_text("mean_pair_cosine"),
        )  # fmt: skip
        best = float(curve.loc[curve["loss"].idxmin(), "shift"])
        where = "at the edge of the widest grid" if bool(curve["at_edge"].iloc[0]) else "inside the grid"
        st.caption(f"Lowest {loss} loss at shift {best:.2f} ({where}); loss with {note}.")
        title = f"{loss} loss along the gap vector ({note})"
        fig = cached_figure(
            ("whatif", key, _table_hash(curve), shift, title),
            lambda: emb.whatif_figure(curve, current=shift, title=title),
        )
        _plot(fig, f"{prefix}-wi")


# --------------------------------------------------------------------------------------------- bridges
#: Projections offered for bridge paths: PCA places them exactly, UMAP only approximately (and says so).
BRIDGE_METHODS = {
    "frozen_pca": METHOD_LABELS["frozen_pca"],
    "pca": METHOD_LABELS["pca"],
    "aligned_umap": f"{METHOD_LABELS['aligned_umap']} (approximate paths)",
    "umap": f"{METHOD_LABELS['umap']} (approximate paths)",
}
def bridge_settings(source: Source) -> tuple[bool, float]:
    """Whether the source was trained with the bridge loss, and its bridge time t."""
    structure = source.config.get("structure") or {}
    weights = structure.get("weights") or {}
    trained = isinstance(weights, dict) and float(weights.get("bridge", 0) or 0) > 0
    return trained, float(structure.get("bridge_t", 0.25))


def bridge_view(source: Source, prefix: str) -> None:
    """Brownian-bridge paths between chosen pairs, drawn in the projection of the embeddings."""
    step = step_slider(source, key=f"{prefix}-step")
    with data_guard("the snapshot") as guard:
        snap = source.snapshot(step)
        a, b = snap["a"], snap["b"]
    if not guard.ok:
        return
    n = int(np.shape(a)[0])
    cols = st.columns(4)
    n_pairs = cols[0].slider("Pairs", 1, min(64, n), min(8, n), key=f"{prefix}-npairs")
    n_paths = cols[1].slider("Paths per pair", 1, 16, 4, key=f"{prefix}-npaths")
    sigma = cols[2].slider("σ (bridge noise)", 0.0, 1.0, 0.1, 0.01, key=f"{prefix}-sigma")
    n_steps = cols[3].slider("Points per path", 4, 64, 24, key=f"{prefix}-nsteps")
    cols = st.columns(3)
    method = cols[0].selectbox(
        "Projection", list(BRIDGE_METHODS), format_func=BRIDGE_METHODS.get, key=f"{prefix}-m",
        help="PCA is linear: a path in the embedding space stays a path in the picture. UMAP has no "
        "such map; path points can only be placed approximately.",
    )  # fmt: skip
    dims = cols[1].radio("Dimensions", [2, 3], horizontal=True, key=f"{prefix}-dims")
    trained, t = bridge_settings(source)
    has_aug = "a_aug" in snap
    show_aug = has_aug and cols[2].checkbox(
        f"Augmented images and bridge means (t = {t:g})", trained, key=f"{prefix}-aug"
    )
    if trained:
        st.caption(f"This run was trained with the Brownian-bridge loss (bridge time t = {t:g}).")
    elif has_aug:
        st.caption(
            "This run was not trained with the bridge loss; its augmented views are shown for comparison."
        )
    with data_guard("the bridge paths"):
        keys = ("a", "b", "a_aug") if show_aug else ("a", "b")
        proj = source.projection(method, dims, keys)
        fitted = np.concatenate([snap[k] for k in keys])
        pairs = np.unique(np.linspace(0, n - 1, n_pairs).round().astype(int))
        unit_a = a / np.linalg.norm(a, axis=1, keepdims=True)
        unit_b = b / np.linalg.norm(b, axis=1, keepdims=True)
        means = bridge_means(a, b, t) if show_aug else None
        aug = snap["a_aug"] / np.linalg.norm(snap["a_aug"], axis=1, keepdims=True) if show_aug else None
        info = source.info(step)
        drawn = drawn_rows(n)

        def figure():
            paths = bridge_paths(a, b, n_paths=n_paths, n_steps=n_steps, sigma=sigma, seed=0, pairs=pairs)
            axis = "PC" if "pca" in method else "UMAP"
            fig = emb.scatter_figure(
                {k: v[drawn] for k, v in proj.at(step).items()}, subset_info(info, drawn), pair_lines=0,
                title=f"Bridge paths{_at(source, step)}", bounds=proj.bounds(), axis_title=axis,
                marker_size=4,
            )  # fmt: skip
            for trace in fig.data:
                trace.marker.opacity = 0.25  # context; the chosen pairs are drawn on top
            emb.add_paths(fig, proj.place(step, paths, fitted))
            labels = [f"pair {i}" for i in pairs]
            emb.add_points(
                fig, proj.place(step, unit_a[pairs], fitted), "chosen images", "#1f77b4", "circle", 11, labels
            )
            emb.add_points(
                fig, proj.place(step, unit_b[pairs], fitted), "chosen texts", "#ff7f0e", "diamond", 11, labels
            )
            if show_aug:
                placed_aug = proj.place(step, aug[pairs], fitted)
                placed_mean = proj.place(step, means[pairs], fitted)
                emb.add_paths(
                    fig, np.stack([placed_aug, placed_mean], axis=1), "augmented → bridge mean", "#2ca02c"
                )
                emb.add_points(fig, placed_aug, "augmented images", "#2ca02c", "x", 10, labels)
                emb.add_points(fig, placed_mean, f"bridge means (t = {t:g})", "#9467bd", "star", 12, labels)
            return fig

        settings = (step, n_pairs, n_paths, sigma, n_steps, method, dims, show_aug, t)
        fig = cached_figure((source.key, "bridges", settings), figure)
        if show_aug:
            dist = float(((aug - means) ** 2).sum(axis=1).mean())
            st.metric(
                "Mean ‖a_aug − bridge mean‖² over all pairs (the bridge loss at fixed t)", f"{dist:.4f}"
            )
        _plot(fig, f"{prefix}-bridges")
        _drawn_note(drawn, n)
        st.caption(
            "Paths W(t) = (1 − t)·x + t·y + σ·(B(t) − t·B(1)), projected back to the sphere, from each "
            "chosen image x to its caption y (Jiang et al. 2023), drawn in the same projection as the points."
        )
        if method in ("umap", "aligned_umap"):
            st.warning(
                "Approximate: UMAP cannot map new points, so every point of a path (and every bridge "
                "mean) is placed at the weighted mean of the positions of its 10 nearest fitted "
                "embeddings. A path can then jump between clusters that are close in the embedding "
                "space but far apart in the picture. Choose a PCA projection to see the paths as they are."
            )
