"""Comparing runs on the runs page: config differences, short labels, seeds grouped per setting."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import pandas as pd

from workbench.metrics.names import format_value
from workbench.metrics.seeds import flatten_config, setting_key

MISSING = "(missing)"
#: Summary metrics of the runs table that are averaged over seeds.
SUMMARY_COLUMNS = (
    "zero_shot_acc", "linear_probe_acc", "mean_R", "centroid_gap", "relative_modality_gap", "knn_acc",
    "global_loss", "train_loss", "itm_acc", "vqa_acc", "ve_acc", "nlvr_acc",
)  # fmt: skip
# Columns of the runs table that make a label, in order.
_LABEL_PARTS = ("loss", "dataset", "batch_size", "regularizers")
#: More losses than this in one run (a gradient-bias run measures many) are counted, not listed.
_MAX_LOSSES_LISTED = 3
#: What a run label is made of, for the help text of the run pickers.
LABEL_HELP = (
    "Runs are named by what tells them apart: kind (when not a training run), loss, dataset, batch size "
    "(B), regularizers, seed, status (when not complete) and creation time (UTC); the run id is added "
    "only when two runs would read the same."
)


def config_diff(configs: Mapping[str, Mapping[str, Any]]) -> tuple[pd.DataFrame, int]:
    """Flattened configs side by side, only the keys whose values differ between the runs.

    A key that only some runs have differs (it reads ``(missing)`` where absent): e.g. the weight of a
    regularizer that only one of the runs used.

    Returns:
        ``(table of differing keys x runs, as text; total number of keys)``.
    """
    flat = {run_id: flatten_config(config) for run_id, config in configs.items()}
    keys = sorted({key for values in flat.values() for key in values})
    columns = {run_id: [_text(v[k]) if k in v else MISSING for k in keys] for run_id, v in flat.items()}
    table = pd.DataFrame(columns, index=pd.Index(keys, name="key"), dtype=object)
    differing = table[table.nunique(axis=1) > 1] if len(table.columns) > 1 else table.iloc[0:0]
    return differing, len(keys)


def _text(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, float):
        return format_value(value, 4)
    return str(value)


def _middle(text: str, width: int = 26) -> str:
    return text if len(text) <= width else f"{text[: width // 2 - 1]}…{text[-(width // 2):]}"


def _describe(row: Any) -> list[str]:
    kind = getattr(row, "kind", "")
    parts = [str(kind)] if isinstance(kind, str) and kind not in ("", "train") else []
    if getattr(row, "model", "") == "fusion" and "fusion" not in parts:  # the other models: as before
        parts.append("fusion")
    for column in _LABEL_PARTS:
        value = getattr(row, column, "")
        if value is None or (isinstance(value, float) and pd.isna(value)) or value == "":
            continue
        if column == "loss" and len(losses := str(value).split(", ")) > _MAX_LOSSES_LISTED:
            value = f"{len(losses)} losses"
        parts.append(f"B={value}" if column == "batch_size" else str(value))
    return parts


def _seed(row: Any) -> str | None:
    value = getattr(row, "seed", None)
    if value is None or (isinstance(value, float) and pd.isna(value)) or value == "":
        return None
    return f"seed {int(value)}" if isinstance(value, (int, float)) else f"seed {value}"


def run_labels(frame: pd.DataFrame) -> dict[str, str]:
    """Short readable label per run id, the one name of a run in every picker of the dashboard.

    ``kind · loss · dataset · B=… · regularizers · seed … · status · created``: the kind only when it is
    not a training run, more than three losses counted ("13 losses"), the status only when the run is
    not complete, the creation time in UTC to the minute. Two runs that would read the same get their
    (shortened) id appended; a run without a config is named by its id.

    Args:
        frame: The runs table (``app.common.runs_frame``).
    """
    labels = {}
    for row in frame.itertuples(index=False):
        parts = _describe(row)
        if not parts:
            labels[row.run_id] = row.run_id
            continue
        if seed := _seed(row):
            parts.append(seed)
        status = getattr(row, "status", "complete")
        if isinstance(status, str) and status not in ("", "complete"):
            parts.append(status)
        created = getattr(row, "created", "")
        if isinstance(created, str) and created:
            parts.append(created[:16])
        labels[row.run_id] = " · ".join(parts)
    counts = Counter(labels.values())
    return {
        run_id: f"{label} · {_middle(run_id)}" if counts[label] > 1 and label != run_id else label
        for run_id, label in labels.items()
    }


def group_label(frame: pd.DataFrame, run_ids: list[str]) -> str:
    """Label of a setting (runs that differ only in seed): the first run's description and the count."""
    rows = frame[frame.run_id.isin(run_ids)]
    parts = _describe(next(rows.itertuples(index=False))) if len(rows) else []
    name = " · ".join(parts) or _middle(run_ids[0])
    return f"{name} ({len(run_ids)} seeds, mean ± std)"


def seed_summary(frame: pd.DataFrame, groups: Mapping[str, list[str]]) -> pd.DataFrame:
    """One row per setting: its runs, and every summary metric as ``mean ± std`` over its seeds."""
    rows = []
    metrics = [c for c in frame.columns if c in SUMMARY_COLUMNS]
    for ids in groups.values():
        part = frame[frame.run_id.isin(ids)]
        row: dict[str, Any] = {"setting": group_label(frame, ids).rsplit(" (", 1)[0], "runs": len(ids)}
        for metric in metrics:
            values = part[metric].dropna().to_numpy(float)
            if len(values) > 1:
                row[metric] = f"{format_value(values.mean())} ± {format_value(values.std(ddof=1))}"
            elif len(values) == 1:
                row[metric] = format_value(values[0])
        rows.append(row)
    return pd.DataFrame(rows)


def seed_groups(configs: Mapping[str, Mapping[str, Any]]) -> dict[str, list[str]]:
    """Run ids grouped by setting (config without seeds), groups in the order of their first run."""
    groups: dict[str, list[str]] = {}
    for run_id, config in configs.items():
        groups.setdefault(setting_key(config), []).append(run_id)
    return groups
