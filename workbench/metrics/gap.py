"""The modality gap as something to act on: shift the modalities along it, and bridge means.

* :func:`gap_shift` / :func:`gap_shift_curve`: move both modalities toward each other along the gap
  vector and recompute a contrastive loss (Liang et al. 2022, "Mind the Gap", section 4.2);
  :func:`whatif_curve` extends the grid of shifts until the lowest loss lies inside it.
* :func:`bridge_means`: the Brownian-bridge means the bridge regularizer pulls augmented images to.

Numbers only; the figures are in ``workbench.viz.embedding``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from workbench.metrics.geometry import centroid_gap

__all__ = ["bridge_means", "gap_shift", "gap_shift_curve", "unit_rows", "whatif_curve"]

#: Widest shift :func:`whatif_curve` extends its grid to, on either side.
MAX_SHIFT = 8.0


def unit_rows(z: np.ndarray, name: str = "z") -> np.ndarray:
    """L2-normalised rows of a finite 2-D array, float64.

    Raises:
        ValueError: ``z`` is not 2-D, holds NaN/inf, or has a zero row; the message names ``name``.
    """
    arr = np.asarray(z, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, d), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        row = int(np.flatnonzero(~np.isfinite(arr).all(axis=1))[0])
        raise ValueError(f"{name} contains NaN or inf at row {row}")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    if not (norms > 0).all():
        row = int(np.flatnonzero(norms[:, 0] <= 0)[0])
        raise ValueError(f"{name} has a row of zero norm at row {row}")
    return arr / norms


def bridge_means(x: np.ndarray, y: np.ndarray, t: float) -> np.ndarray:
    """The Brownian-bridge means ``normalize(t x_i + (1 - t) y_i)`` the bridge loss pulls ``a_aug`` to.

    Computed by ``workbench.losses.structures.bridge_mean`` (image ``x``, text ``y``; ``t = 1`` gives the
    image, ``t = 0`` the text).

    Returns:
        ``(n, d)`` float32 unit rows.

    Raises:
        ValueError: Bad embeddings or ``t`` outside [0, 1].
    """
    import torch  # deferred: importing torch takes seconds, and most users of this module never need it

    from workbench.losses.structures import bridge_mean

    xn = torch.from_numpy(unit_rows(x, "x").astype(np.float32))
    yn = torch.from_numpy(unit_rows(y, "y").astype(np.float32))
    return bridge_mean(xn, yn, float(t)).numpy()


def gap_shift(x: np.ndarray, y: np.ndarray, shift: float) -> tuple[np.ndarray, np.ndarray]:
    """Move the two modalities toward each other along the gap vector g = mean x - mean y.

    ``x'_i = normalize(x_i - shift g / 2)`` and ``y'_i = normalize(y_i + shift g / 2)`` (rows normalised
    first): ``shift = 0`` keeps the embeddings, ``shift = 1`` moves both centroids to their midpoint
    before re-normalisation (closing most of the gap), negative values widen it. This is the
    experiment of Liang et al. 2022 ("Mind the Gap", section 4.2).

    Returns:
        ``(x', y')`` float32 unit rows.

    Raises:
        ValueError: Invalid embeddings or a non-finite ``shift``.
    """
    shift = float(shift)
    if not math.isfinite(shift):
        raise ValueError(f"shift must be a finite number, got {shift}")
    xn, yn = unit_rows(x, "x"), unit_rows(y, "y")
    g = xn.mean(axis=0) - yn.mean(axis=0)
    return (
        unit_rows(xn - shift * g / 2, "x'").astype(np.float32),
        unit_rows(yn + shift * g / 2, "y'").astype(np.float32),
    )


def gap_shift_curve(
    x: np.ndarray,
    y: np.ndarray,
    shifts: Sequence[float],
    loss: str = "clip",
    loss_params: Mapping[str, object] | None = None,
    scale: float | None = None,
    call_params: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """Contrastive loss of the whole paired set after each shift along the gap vector.

    The loss is built with ``workbench.losses.build_loss(loss, **loss_params)`` and evaluated through
    its ``global_objective()`` (every row against all others; the stateful ``sogclr``/``bayes``
    losses get ``num_samples = n`` and are evaluated through the deterministic objective they
    estimate), on all n pairs at once.

    Args:
        x, y: Paired ``(n, d)`` embeddings.
        shifts: Values of ``shift`` (see :func:`gap_shift`).
        loss: A name from ``workbench.losses.loss_names()``.
        loss_params: Constructor arguments (e.g. ``temperature``); ``chunk_size`` defaults to 1024.
        scale: Logit scale 1/tau passed at call time (e.g. a run's learned ``scale``); overrides
            the temperature when given.
        call_params: Further keyword arguments at call time (e.g. SigLIP's ``scale`` and ``bias``).

    Returns:
        DataFrame with columns ``shift``, ``loss``, ``centroid_gap``, ``mean_pair_cosine``.

    Raises:
        ValueError: Invalid embeddings, no shifts, an unknown loss or bad loss parameters.
    """
    import torch

    from workbench.losses import build_loss, loss_parameters

    shifts = [float(s) for s in shifts]
    if not shifts:
        raise ValueError("shifts must hold at least one value")
    params = dict(loss_params or {})
    allowed = loss_parameters(loss)
    if "chunk_size" in allowed:
        params.setdefault("chunk_size", 1024)
    if "num_samples" in allowed:
        params.setdefault("num_samples", int(np.shape(x)[0]))
    objective = build_loss(loss, **params).global_objective()
    kwargs = {key: float(value) for key, value in (call_params or {}).items()}
    if scale is not None:
        kwargs["scale"] = float(scale)
    rows = []
    with torch.no_grad():
        for shift in shifts:
            xs, ys = gap_shift(x, y, shift)
            value = float(objective(torch.from_numpy(xs), torch.from_numpy(ys), **kwargs))
            rows.append(
                {
                    "shift": shift,
                    "loss": value,
                    "centroid_gap": centroid_gap(xs, ys),
                    "mean_pair_cosine": float((xs * ys).sum(axis=1).mean()),
                }
            )
    return pd.DataFrame(rows)


def whatif_curve(
    x: np.ndarray,
    y: np.ndarray,
    loss: str = "clip",
    loss_params: Mapping[str, object] | None = None,
    call_params: Mapping[str, float] | None = None,
    low: float = -1.0,
    high: float = 2.0,
    points: int = 25,
) -> pd.DataFrame:
    """:func:`gap_shift_curve` on ``[low, high]``, extended until its lowest loss is not at an edge.

    Each extension adds one unit on the side where the minimum sits (at the grid's spacing), up to
    ``±MAX_SHIFT``; a minimum still at the edge there is reported as such by the ``at_edge`` column.

    Args:
        x, y: Paired ``(n, d)`` embeddings.
        loss, loss_params: As :func:`gap_shift_curve`.
        call_params: Keyword arguments of the loss at call time (``scale``, ``bias``).
        low, high, points: The first grid.

    Returns:
        The curve, sorted by shift, with a boolean column ``at_edge`` (True on every row when the minimum
        is at the widest grid's edge).

    Raises:
        ValueError: ``low >= high`` or ``points < 3``, plus the errors of :func:`gap_shift_curve`.
    """
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"low must be below high, got low={low}, high={high}")
    if points < 3:
        raise ValueError(f"points must be >= 3, got {points}")
    step = (high - low) / (points - 1)
    grid = list(np.round(np.linspace(low, high, points), 6))
    curve = gap_shift_curve(x, y, grid, loss, loss_params, call_params=call_params)
    while True:
        best = float(curve.loc[curve["loss"].idxmin(), "shift"])
        lo, hi = float(curve["shift"].min()), float(curve["shift"].max())
        if best == lo and lo > -MAX_SHIFT:
            extra = np.round(np.arange(lo - step, max(lo - 1.0, -MAX_SHIFT) - 1e-9, -step), 6)
        elif best == hi and hi < MAX_SHIFT:
            extra = np.round(np.arange(hi + step, min(hi + 1.0, MAX_SHIFT) + 1e-9, step), 6)
        else:
            break
        more = gap_shift_curve(x, y, list(extra), loss, loss_params, call_params=call_params)
        curve = pd.concat([curve, more], ignore_index=True).sort_values("shift", ignore_index=True)
    best = float(curve.loc[curve["loss"].idxmin(), "shift"])
    edge = best in (float(curve["shift"].min()), float(curve["shift"].max()))
    return curve.assign(at_edge=edge)
