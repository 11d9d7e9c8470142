"""Modality gap: the geometry measures over training, the gap vector, spectra and the what-if slider."""

from __future__ import annotations

from app.common import page_header, pick_source, selected_runs
from app.views import gap_view

page_header(
    "Modality gap",
    "Gap, relative gap, separability, alignment, uniformity, cone and effective rank over training; "
    "where the gap lives; and what the loss would say with a smaller gap.",
)
source = pick_source("gap-source")
if source is not None:
    gap_view(source, "gap", compare=selected_runs())
