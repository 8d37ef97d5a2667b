"""Token metrics over many rows at once: the same statistics as the `*_row` functions, vectorised.

Scoring a cell row by row costs a few Python calls per output row and metric, which on a
full grid is most of the harness's own time. Here every row of the same width (inputs
of one length) is stacked into a matrix and each statistic is computed for all of them
together. `token_metrics` keeps the row functions as the readable definitions; the tests
check that both agree on random rows with heavy ties.

Shared notation: S [m, L] scores, Y [m, L] labels (G), sorted by descending score; for
each sorted element `st` / `en` are the first / last sorted index of its tie group.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from interpbench.ground_truth import GroundTruth


@dataclasses.dataclass(frozen=True)
class RowBlock:
    """Output rows of equal width: where they go in the row order, and their R, G and Gg."""

    where: np.ndarray
    r: np.ndarray
    g: np.ndarray
    gg: np.ndarray


@dataclasses.dataclass(frozen=True)
class RowLayout:
    """Where each block of equal-width rows sits in a ground truth: the part of `row_blocks` that R does not change.

    Attributes:
        blocks: Per row width: (row order positions, input index [m, 1], output position
            [m, 1], real input columns [m, L], G block, Gg block).
        inputs: The input index of every defined output row, in row order.
    """

    blocks: tuple[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], ...]
    inputs: np.ndarray


_LAYOUT: list[tuple[GroundTruth, RowLayout]] = []


def row_layout(truth: GroundTruth) -> RowLayout:
    """The row layout of `truth`; the last one is kept (every metric of a cell asks for the same truth).

    Real input columns of a row are found for all rows at once: a stable argsort of
    `~valid_in` lists a row's real positions first, in order.
    """
    if _LAYOUT and _LAYOUT[0][0] is truth:
        return _LAYOUT[0][1]
    bs, is_ = np.nonzero(truth.valid_out)
    valid = truth.valid_in[bs]
    widths = valid.sum(axis=1)
    real_first = np.argsort(~valid, axis=1, kind="stable")
    blocks = []
    for width in np.unique(widths):
        where = np.flatnonzero(widths == width)
        b, i, cols = bs[where][:, None], is_[where][:, None], real_first[where, :width]
        g, gg = truth.relevance[b, i, cols].astype(bool), truth.graded[b, i, cols]
        g.flags.writeable = gg.flags.writeable = False  # shared by every cell scored against this truth
        blocks.append((where, b, i, cols, g, gg))
    layout = RowLayout(tuple(blocks), bs)
    _LAYOUT[:] = [(truth, layout)]
    return layout


def row_blocks(values: np.ndarray, truth: GroundTruth) -> tuple[list[RowBlock], np.ndarray]:
    """Every defined output row (the order of `np.nonzero(truth.valid_out)`) over real input positions.

    Returns:
        The blocks (one per row width) and the input index of every row, in row order.
    """
    layout = row_layout(truth)
    blocks = [RowBlock(where, values[b, i, cols], g, gg) for where, b, i, cols, g, gg in layout.blocks]
    return blocks, layout.inputs


_SPANS: list[tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]] = []
SPANS_KEPT = 8  # a cell's blocks: every token metric of the cell sorts the same arrays


def _tie_spans(s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order, st, en): descending sort order of each row and each sorted element's tie-group span.

    The last few results are kept by the identity of a read-only `s` (the scorer's blocks),
    so the metrics of one cell sort each block once.
    """
    if not s.flags.writeable:
        for kept, spans in _SPANS:
            if kept is s:
                return spans
    spans = _compute_tie_spans(s)
    if not s.flags.writeable:
        _SPANS[:] = [(s, spans), *_SPANS[: SPANS_KEPT - 1]]
    return spans


def _compute_tie_spans(s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.argsort(-s, axis=1, kind="stable")
    ss = np.take_along_axis(s, order, axis=1)
    m, n = s.shape
    idx = np.broadcast_to(np.arange(n), (m, n))
    new = np.ones((m, n), dtype=bool)
    new[:, 1:] = ss[:, 1:] != ss[:, :-1]
    last = np.ones((m, n), dtype=bool)
    last[:, :-1] = new[:, 1:]
    st = np.maximum.accumulate(np.where(new, idx, 0), axis=1)
    en = np.minimum.accumulate(np.where(last, idx, n)[:, ::-1], axis=1)[:, ::-1]
    return order, st, en


def average_ranks(s: np.ndarray) -> np.ndarray:
    """Ascending average ranks (1 = smallest, ties share their mean rank) of every row."""
    order, st, en = _tie_spans(s)
    n = s.shape[1]
    ranks = np.empty_like(s, dtype=np.float64)
    np.put_along_axis(ranks, order, n - (st + en) / 2.0, axis=1)
    return ranks


def _defined(y: np.ndarray) -> np.ndarray:
    p = y.sum(axis=1)
    return (p > 0) & (p < y.shape[1])


def auroc(s: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUROC per row (ties 1/2); NaN without both classes."""
    p, n = y.sum(axis=1), (~y).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        u = np.where(y, average_ranks(s), 0.0).sum(axis=1) - p * (p + 1) / 2.0
        return np.where(_defined(y), u / (p * n), np.nan)


def _sorted_groups(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    """(ys, st, size, positives in the group, positives before the group) per sorted element."""
    order, st, en = _tie_spans(s)
    ys = np.take_along_axis(y, order, axis=1).astype(np.float64)
    cum = np.concatenate([np.zeros((len(s), 1)), np.cumsum(ys, axis=1)], axis=1)
    size = en - st + 1.0
    pos = np.take_along_axis(cum, en + 1, axis=1) - np.take_along_axis(cum, st, axis=1)
    before = np.take_along_axis(cum, st, axis=1)
    return ys, st, size, pos, before


def average_precision(s: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Expected AP over orders of tied scores (McSherry & Najork 2008); NaN without both classes."""
    _, st, size, pos, before = _sorted_groups(s, y)
    j = np.arange(s.shape[1])[None, :] - st + 1.0  # place within the group, 1-based
    others = np.where(size > 1, (j - 1.0) * (pos - 1.0) / np.maximum(size - 1.0, 1.0), 0.0)
    terms = (pos / size) * (before + 1.0 + others) / (st + j)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(_defined(y), terms.sum(axis=1) / y.sum(axis=1), np.nan)


def precision_at_k(s: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Expected share of G among the k = |G| highest scores; NaN without both classes."""
    ys, st, size, _, _ = _sorted_groups(s, y)
    k = y.sum(axis=1, keepdims=True).astype(np.float64)
    hits = (ys * np.clip((k - st) / size, 0.0, 1.0)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(_defined(y), hits / k[:, 0], np.nan)


def pointing_game(s: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Chance that a uniformly drawn maximum is in G; NaN without both classes."""
    ys, st, _, _, _ = _sorted_groups(s, y)
    top = st == 0
    return np.where(_defined(y), (ys * top).sum(axis=1) / top.sum(axis=1), np.nan)


def relevance_mass(s: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Share of sum |R| inside G; NaN without both classes or where every |R| is 0."""
    a = np.abs(s)
    total = a.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(_defined(y) & (a.max(axis=1) > 0), np.where(y, a, 0.0).sum(axis=1) / total, np.nan)


def _varies(x: np.ndarray) -> np.ndarray:
    return (x.shape[1] >= 2) & np.any(x != x[:, :1], axis=1)


def spearman(s: np.ndarray, gg: np.ndarray) -> np.ndarray:
    """Spearman's rho (Pearson of average ranks) per row; NaN where either row is constant."""
    x, z = average_ranks(s), average_ranks(gg)
    x, z = x - x.mean(axis=1, keepdims=True), z - z.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (x * z).sum(axis=1) / np.sqrt((x * x).sum(axis=1) * (z * z).sum(axis=1))
    return np.where(_varies(s) & _varies(gg), np.clip(rho, -1.0, 1.0), np.nan)


def kendall_tau_b(s: np.ndarray, gg: np.ndarray) -> np.ndarray:
    """Kendall's tau-b per row over all position pairs; NaN where either row is constant."""
    n = s.shape[1]
    upper = np.triu(np.ones((n, n), dtype=bool), 1)
    a = np.sign(s[:, :, None] - s[:, None, :])[:, upper]
    b = np.sign(gg[:, :, None] - gg[:, None, :])[:, upper]
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = (a * b).sum(axis=1) / np.sqrt(np.count_nonzero(a, axis=1) * np.count_nonzero(b, axis=1))
    return np.where(_varies(s) & _varies(gg), np.clip(tau, -1.0, 1.0), np.nan)
