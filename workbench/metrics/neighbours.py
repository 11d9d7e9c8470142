"""Nearest neighbours of one paired item, within its modality and across: what the point inspector shows.

Rows of ``a`` (images) and ``b`` (texts) are paired (row i of both is one item). Similarities are
cosines of L2-normalised rows; a neighbour list never contains the query row itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workbench.metrics.gap import unit_rows

__all__ = ["MODALITIES", "PointNeighbours", "point_neighbours", "top_k"]

MODALITIES = ("a", "b")


def top_k(
    query: np.ndarray, candidates: np.ndarray, k: int, exclude: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Indices and cosines of the ``k`` candidates most similar to ``query`` (descending).

    Args:
        query: ``(d,)`` vector.
        candidates: ``(n, d)`` unit rows.
        k: How many (capped at the number of candidates left).
        exclude: A row left out (the query itself when it is one of the candidates).
    """
    sims = candidates @ (query / max(float(np.linalg.norm(query)), 1e-12))
    if exclude is not None:
        sims = sims.copy()
        sims[exclude] = -np.inf
    k = min(int(k), int(np.isfinite(sims).sum()))
    if k <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    part = np.argpartition(-sims, k - 1)[:k]
    order = part[np.argsort(-sims[part], kind="stable")]
    return order.astype(np.int64), sims[order]


@dataclass(frozen=True)
class PointNeighbours:
    """Neighbours of row ``index`` of modality ``modality``.

    Attributes:
        index: The row.
        modality: ``"a"`` (image) or ``"b"`` (text).
        same: ``(k,)`` rows of the same modality nearest to it (itself excluded).
        same_sims: Their cosines.
        other: ``(k,)`` rows of the other modality nearest to it.
        other_sims: Their cosines.
        partner_rank: Rank of its own partner (row ``index`` of the other modality) among all rows of
            the other modality: the number strictly more similar (0 = retrieved first).
        partner_sim: Cosine to its partner.
    """

    index: int
    modality: str
    same: np.ndarray
    same_sims: np.ndarray
    other: np.ndarray
    other_sims: np.ndarray
    partner_rank: int
    partner_sim: float


def point_neighbours(
    a: np.ndarray, b: np.ndarray, index: int, modality: str = "a", k: int = 5
) -> PointNeighbours:
    """The ``k`` nearest neighbours of one item within its modality and across, and its partner's rank.

    Args:
        a, b: Paired ``(n, d)`` embeddings (image, text).
        index: The row, in ``[0, n)``.
        modality: ``"a"`` to start from the image of the item, ``"b"`` from its text.
        k: Neighbours per list, >= 1.

    Raises:
        ValueError: Bad embeddings, shapes that differ, an index out of range, an unknown modality or
            ``k`` < 1.
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {', '.join(MODALITIES)}; got {modality!r}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    xa, xb = unit_rows(a, "a"), unit_rows(b, "b")
    if xa.shape != xb.shape:
        raise ValueError(f"a and b must have one shape, got {xa.shape} and {xb.shape}")
    n = xa.shape[0]
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < n:
        raise ValueError(f"index must be an integer in [0, {n}), got {index!r}")
    own, other = (xa, xb) if modality == "a" else (xb, xa)
    query = own[int(index)]
    same, same_sims = top_k(query, own, k, exclude=int(index))
    across, across_sims = top_k(query, other, k)
    sims = other @ query
    partner = float(sims[int(index)])
    return PointNeighbours(
        index=int(index),
        modality=modality,
        same=same,
        same_sims=same_sims,
        other=across,
        other_sims=across_sims,
        partner_rank=int(np.count_nonzero(sims > partner)),
        partner_sim=partner,
    )
