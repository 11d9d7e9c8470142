"""Runs that differ only in their seed: group them, and average their curves (mean ± std).

A *setting* is a run's config without its seeds (``seed`` at any depth, e.g. ``dataset_params.seed``):
runs of one setting repeat the same experiment, and their spread is the seed-to-seed noise the
dashboard reports as mean ± std.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["SEED_KEYS", "flatten_config", "mean_std_over_seeds", "setting_key"]

#: Config keys (last component of a dotted key) that only choose a random seed.
SEED_KEYS = ("seed",)


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and scalars are kept as values."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten_config(value, f"{name}."))
        else:
            out[name] = value
    return out


def setting_key(config: Mapping[str, Any]) -> str:
    """A stable text key of the config without its seed keys: equal for runs that differ only in seed."""
    flat = {k: v for k, v in flatten_config(config).items() if k.rsplit(".", 1)[-1] not in SEED_KEYS}
    return json.dumps(flat, sort_keys=True, default=str)


def mean_std_over_seeds(tables: Sequence[pd.DataFrame], on: str = "step") -> pd.DataFrame:
    """Mean and standard deviation over runs of every numeric column, aligned on ``on``.

    Args:
        tables: One metrics table per seed (e.g. ``Run.metrics``), each with an ``on`` column.
        on: The column the runs are aligned on (a step missing in a run does not count for it).

    Returns:
        One row per value of ``on`` with, for every metric ``m``, columns ``m`` (the mean), ``m_std``
        (sample standard deviation, ddof=1; NaN with one run) and ``m_n`` (runs that logged it).

    Raises:
        ValueError: No tables, or a table without the ``on`` column.
    """
    if not tables:
        raise ValueError("tables must hold at least one table")
    for i, table in enumerate(tables):
        if on not in table.columns:
            raise ValueError(f"table {i} has no {on!r} column; columns: {list(table.columns)}")
    stacked = pd.concat([t.assign(_run=i) for i, t in enumerate(tables)], ignore_index=True)
    numeric = [c for c in stacked.columns if pd.api.types.is_numeric_dtype(stacked[c])]
    metrics = [c for c in numeric if c not in (on, "_run")]
    grouped = stacked.groupby(on, sort=True)[metrics]
    mean, std, count = grouped.mean(), grouped.std(ddof=1), grouped.count()
    out = mean.copy()
    for metric in metrics:
        out[f"{metric}_std"] = std[metric].where(count[metric] > 1, np.nan)
        out[f"{metric}_n"] = count[metric]
    return out.reset_index()
