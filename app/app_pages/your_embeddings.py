"""Your own embeddings: upload a paired embedding file, check it, and explore it with the geometry views."""

from __future__ import annotations

import streamlit as st

from app.common import (
    MAX_UPLOAD_BYTES,
    MAX_UPLOAD_DECODED_BYTES,
    MAX_UPLOAD_DIM,
    MAX_UPLOAD_ROWS,
    UPLOAD_KEY,
    UPLOAD_TYPES,
    cached_upload_report,
    data_guard,
    lazy_tabs,
    page_header,
    upload_source,
    validate_upload,
)
from app.views import bridge_view, embedding_view, gap_view, scalar_report_view

UPLOAD_ERROR_KEY = "upload_refused"  # (file id, message) of the last refused file, until it is removed

page_header(
    "Your embeddings",
    "Upload paired image/text embeddings and look at them the way the run pages look at training runs.",
)
with st.expander("File format", expanded=UPLOAD_KEY not in st.session_state):
    st.markdown(
        f"""
* **`.npz`** with `image_emb` (n × d) and `text_emb` (n × d), row i of both one pair; optional `labels`
  (n integers ≥ 0 or strings) and `captions` (n strings). Saved with `np.savez`; nothing is unpickled.
* **`.parquet`**, one row per pair: list columns `image_emb` and `text_emb`, or wide columns
  `image_emb_0, image_emb_1, …` and `text_emb_0, …`; optional `labels` and `captions`.
* Both modalities in one space (same d), no NaN or inf, at least 2 pairs, at most
  {MAX_UPLOAD_BYTES // 2**20} MB, {MAX_UPLOAD_ROWS:,} pairs, d = {MAX_UPLOAD_DIM:,} and
  {MAX_UPLOAD_DECODED_BYTES // 2**30} GB once decoded (checked before decoding). Rows are
  L2-normalised before anything is measured.
"""
    )
# No type filter on the widget: a filtered-out file (a .csv) would be refused in the browser without a
# word, leaving the last message on screen. Every file is checked here and a refusal says why.
uploaded = st.file_uploader(
    "Paired embeddings (.npz or .parquet)", key="upload-file",
    help=f"Accepted: {', '.join('.' + t for t in UPLOAD_TYPES)}; anything else is refused with the reason.",
)  # fmt: skip
if uploaded is None:
    st.session_state.pop(UPLOAD_ERROR_KEY, None)
elif (
    st.session_state.get(UPLOAD_KEY, {}).get("file_id") != uploaded.file_id
    and st.session_state.get(UPLOAD_ERROR_KEY, (None,))[0] != uploaded.file_id
):
    # Validate each new file once; reruns with the same file reuse the checked arrays (or the refusal).
    try:
        checked = validate_upload(uploaded.name, uploaded.getvalue())
    except ValueError as err:
        st.session_state.pop(UPLOAD_KEY, None)
        st.session_state[UPLOAD_ERROR_KEY] = (uploaded.file_id, str(err))
    else:
        st.session_state.pop(UPLOAD_ERROR_KEY, None)
        st.session_state[UPLOAD_KEY] = {**checked, "file_id": uploaded.file_id}
if (refused := st.session_state.get(UPLOAD_ERROR_KEY)) is not None:
    st.error(f"This file cannot be used: {refused[1]}")

source = upload_source()
if source is None:
    st.info(
        "Upload a file to explore it. It stays in this browser session and is never written to the run store."
    )
    st.stop()
upload = st.session_state[UPLOAD_KEY]
extras = [k for k in ("labels", "captions") if k in upload["arrays"]]
st.success(
    f"`{upload['name']}`: {upload['n']} pairs in d = {upload['d']}"
    + (f", with {' and '.join(extras)}" if extras else "")
    + ". It is also offered on the geometry, modality-gap and bridge pages."
)
if st.button("Forget this file", key="upload-forget"):
    st.session_state.pop(UPLOAD_KEY, None)
    st.rerun()
st.subheader("Geometry and retrieval report")
with data_guard("the report"):
    scalar_report_view(cached_upload_report(upload["digest"]))
# only the open tab is drawn (see lazy_tabs)
views = {"Embedding geometry": embedding_view, "Modality gap": gap_view, "Bridges": bridge_view}
for tab, (label, view) in zip(lazy_tabs(list(views), "upload-tab"), views.items(), strict=True):
    with tab:
        if tab.open:
            view(source, f"upload-{label.split()[-1].lower()}")
