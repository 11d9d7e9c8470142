"""Bridge trajectories: Brownian-bridge paths between paired image and text embeddings."""

from __future__ import annotations

from app.common import page_header, pick_source
from app.views import bridge_view

page_header(
    "Bridge trajectories",
    "Brownian-bridge paths from images to their captions, in the projection of the embeddings; for "
    "runs trained with the bridge loss, the augmented images and the bridge means they are pulled to.",
)
source = pick_source("bridges-source")
if source is not None:
    bridge_view(source, "bridges")
