"""Embedding geometry: projections of every checkpoint, a step slider with play, the unit sphere."""

from __future__ import annotations

from app.common import page_header, pick_source
from app.views import embedding_view

page_header(
    "Embedding geometry",
    "Image and text embeddings of the probe set at every checkpoint, projected to 2-D or 3-D.",
)
source = pick_source("geometry-source")
if source is not None:
    embedding_view(source, "geometry")
