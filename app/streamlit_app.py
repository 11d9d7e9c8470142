"""Entry point of the workbench dashboard: ``streamlit run app/streamlit_app.py`` (or ``workbench app``).

The pages live in ``app/app_pages/``; shared code in ``app/common.py`` and ``app/views.py``. Paths
are resolved from this file, so the app starts from any working directory. Pages are only shown on
127.0.0.1 (``app.binding``), whatever address the server was started on. The run store is
``workbench.store.runs.runs_root()``: ``$WORKBENCH_HOME/runs`` when that variable is set.
"""

from __future__ import annotations

import sys
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent
REPO_ROOT = APP_DIR.parent
# `app.common` and `workbench` must import from a checkout whatever the working directory is.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import streamlit as st  # noqa: E402

PAGES = [
    ("runs.py", "Runs", ":material/table_view:"),
    ("geometry.py", "Embedding geometry", ":material/scatter_plot:"),
    ("modality_gap.py", "Modality gap", ":material/compare_arrows:"),
    ("bridges.py", "Bridge trajectories", ":material/timeline:"),
    ("gradient_bias.py", "Gradient bias", ":material/show_chart:"),
    ("fusion_tasks.py", "Fusion tasks", ":material/quiz:"),
    ("your_embeddings.py", "Your embeddings", ":material/upload_file:"),
]

from app.binding import check_page  # noqa: E402

st.set_page_config(page_title="workbench", page_icon=":material/hub:", layout="wide")
check_page()  # this machine only, however the server was started
page = st.navigation(
    [
        st.Page(APP_DIR / "app_pages" / file, title=title, icon=icon, default=i == 0)
        for i, (file, title, icon) in enumerate(PAGES)
    ]
)
page.run()
