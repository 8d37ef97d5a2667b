"""Token-level metrics: relevance R against the token truth G and Gg, with one tie rule for all of them.

A row is one defined output position of one input (`truth.valid_out`), over that input's
real input positions (`truth.valid_in`; BOS and PAD never count). Before any metric reads
R, `snap_ties` groups values that differ only by rounding noise, at the tolerance the
explanation declares; every ranking statistic then treats equal values as exactly tied:
average ranks (AUROC, Spearman), tau-b, and expectations over every order of a tied group
(average precision, precision at k, pointing game). Rows where G is all 0 or all 1 are
undefined for every metric against G; Spearman and Kendall are undefined where R or Gg
is constant. Undefined rows are NaN, counted by `metrics.aggregate`, never dropped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from scipy.stats import rankdata

from interpbench.compiled import ZERO_ATOL
from interpbench import token_batch
from interpbench.explanation import Explanation
from interpbench.ground_truth import GroundTruth
from interpbench.metrics import RowScores, metric

if TYPE_CHECKING:
    from interpbench.compiled import CompiledCase

RowFn = Callable[[np.ndarray, np.ndarray, np.ndarray], float]
BatchFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def snap_ties(relevance: np.ndarray, valid_in: np.ndarray, rel_tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Makes values of one relevance row that differ by less than rounding noise exactly equal.

    Tokens with the same true effect come out a few ulps apart, in a direction set by the
    order of the arithmetic, and a ranking metric would read that noise as a ranking:
    captum accumulates Shapley values and fits Lime / KernelShap in float32 (exact Shapley
    on tracr_lib/reverse scores AUROC 0.78 as returned, 0.46 with its ties restored), and
    even float64 differences F(x) - F(x') carry ~1e-16 where the true effect is 0. Within
    each row the real input positions are sorted and every run of neighbours closer than
    `rel_tol * max |R|` is replaced by its mean (which keeps the row sum). The maximum is
    taken over all real positions (output and input) of the row's input, so a row of pure
    noise next to rows with signal becomes one tie, a chain of close neighbours is one
    group however it falls on a grid, and no input's ties depend on another input's
    scale (the bootstrap resamples inputs). The tolerance is never below ZERO_ATOL (1e-12, where
    `zero_rows_share` calls a row zero): an explanation that is all float64 noise, such
    as vanishing gradients through a rotated basis (~1e-17), would otherwise set its own
    scale and rank its noise. Only real input positions (`valid_in`) take part; every other entry
    is returned as 0. Non-finite entries are kept as they are and take no part.

    Args:
        relevance: R [n, T, T] (output position, input position).
        valid_in: [n, T] real input positions.
        rel_tol: Relative tolerance (the explanation's `tie_tolerance`); 0 keeps every difference.

    Returns:
        The snapped relevance and the absolute tolerance used for each input [n]
        (`max(rel_tol * max |R| of the input, ZERO_ATOL)`; 0 where `rel_tol` is 0).
    """
    r = np.asarray(relevance, dtype=np.float64)
    valid_in = np.asarray(valid_in, dtype=bool)
    if r.ndim != 3 or r.shape[0] != valid_in.shape[0] or r.shape[1:] != (valid_in.shape[1],) * 2:
        raise ValueError(f"token_relevance has shape {r.shape}, expected [n, T, T] with (n, T) = {valid_in.shape}")
    grid = valid_in[:, :, None] & valid_in[:, None, :]
    live = grid & np.isfinite(r)
    out = np.where(grid, r, 0.0)
    n, t = r.shape[0], r.shape[-1]
    if rel_tol <= 0:
        return out, np.zeros(n)
    scale = np.where(live, np.abs(np.where(live, r, 0.0)), 0.0).reshape(n, -1).max(axis=1)
    atol = np.maximum(float(rel_tol) * scale, ZERO_ATOL)  # [n]: one tolerance per input
    rows = np.where(live, r, np.nan).reshape(-1, t)
    order = np.argsort(rows, axis=1)  # NaN (not live) last
    ordered = np.take_along_axis(rows, order, axis=1)
    new_run = np.ones_like(ordered, dtype=bool)
    row_atol = np.repeat(atol, t)[:, None]  # rows are (input, output position), input-major
    new_run[:, 1:] = ~(np.diff(ordered, axis=1) < row_atol)  # a NaN neighbour starts a new run
    run = np.cumsum(new_run.ravel()) - 1
    finite = np.isfinite(ordered.ravel())
    sums = np.bincount(run[finite], weights=ordered.ravel()[finite], minlength=run[-1] + 1)
    counts = np.bincount(run[finite], minlength=run[-1] + 1)
    means = np.where(finite, sums[run] / np.maximum(counts[run], 1), np.nan).reshape(ordered.shape)
    snapped = np.empty_like(means)
    np.put_along_axis(snapped, order, means, axis=1)
    return np.where(live, snapped.reshape(r.shape), out), atol


@dataclasses.dataclass(frozen=True)
class ScoredRelevance:
    """R as the token metrics read it: ties snapped, and the absolute tolerance used per input.

    `blocks` keeps R cut into blocks of equal-width rows, so every token metric of a cell
    reads the same arrays (and `token_batch` can reuse their sort orders).
    """

    values: np.ndarray
    atol: np.ndarray
    _blocks: dict[tuple[int, bool], tuple[list[ScoreBlock], np.ndarray]] = dataclasses.field(
        default_factory=dict, compare=False, repr=False
    )

    def blocks(self, truth: GroundTruth, zero_quiet: bool) -> tuple[list[ScoreBlock], np.ndarray]:
        """R's defined output rows in blocks of equal width, and each row's input (`row_blocks` order).

        `zero_quiet` zeroes values within the input's tie tolerance of 0 first (relevance mass).
        A non-finite value is read as 0 and its row marked not finite (scored NaN).
        """
        memo = (id(truth), zero_quiet)
        if memo not in self._blocks:
            values = np.where(np.abs(self.values) <= self.atol[:, None, None], 0.0, self.values) if zero_quiet else self.values
            raw, inputs = token_batch.row_blocks(values, truth)
            blocks = []
            for blk in raw:
                finite = np.isfinite(blk.r)
                r = np.where(finite, blk.r, 0.0)
                r.flags.writeable = False  # read-only: token_batch may keep its sort order by identity
                blocks.append(ScoreBlock(blk.where, r, finite.all(axis=1), blk.g, blk.gg))
            self._blocks[memo] = (blocks, inputs)
        return self._blocks[memo]


@dataclasses.dataclass(frozen=True)
class ScoreBlock:
    """Rows of equal width ready to score: where they go, R (non-finite read as 0), which rows are finite, G, Gg."""

    where: np.ndarray
    r: np.ndarray
    finite: np.ndarray
    g: np.ndarray
    gg: np.ndarray


_LAST: list[tuple[np.ndarray, GroundTruth, float, ScoredRelevance]] = []


def scored_relevance(explanation: Explanation, truth: GroundTruth) -> ScoredRelevance:
    """The explanation's token relevance after `snap_ties` at its declared `tie_tolerance`.

    The scorer asks for it once per token metric of a cell; the last result is kept
    (matched by the very same relevance array and truth object, which the entry holds
    on to, so no other array can take their identity) and snapping runs once per cell.
    """
    r = explanation.token_relevance
    if r is None:
        raise ValueError("explanation has no token_relevance")
    tol = float(explanation.tie_tolerance)
    if _LAST and _LAST[0][0] is r and _LAST[0][1] is truth and _LAST[0][2] == tol:
        return _LAST[0][3]
    values, atol = snap_ties(r, truth.valid_in, tol)
    scored = ScoredRelevance(values, atol)
    _LAST[:] = [(r, truth, tol, scored)]
    return scored


def token_rows(relevance: ScoredRelevance, truth: GroundTruth, row_fn: RowFn) -> RowScores:
    """Applies `row_fn(R row, G row, Gg row)` to every defined output row over real input positions.

    A row holding a non-finite value is NaN (undefined) without calling `row_fn`.
    """
    values, inputs = [], []
    for b, i in zip(*np.nonzero(truth.valid_out)):
        cols = truth.valid_in[b]
        r = relevance.values[b, i, cols]
        ok = bool(np.isfinite(r).all())
        values.append(row_fn(r, truth.relevance[b, i, cols], truth.graded[b, i, cols]) if ok else float("nan"))
        inputs.append(b)
    return RowScores(np.asarray(values, dtype=np.float64), np.asarray(inputs, dtype=np.int64))


def _tie_groups(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(size, positives) of each group of equal scores, highest score first."""
    _, inv = np.unique(-np.asarray(scores, dtype=np.float64), return_inverse=True)
    size = np.bincount(inv).astype(np.float64)
    positives = np.bincount(inv, weights=labels.astype(np.float64), minlength=len(size))
    return size, positives


def _both_classes(labels: np.ndarray) -> bool:
    n_pos = int(np.count_nonzero(labels))
    return 0 < n_pos < labels.size


def auroc_row(scores: np.ndarray, labels: np.ndarray) -> float:
    """P(score of a positive > score of a negative) + 1/2 P(tie); NaN without both classes.

    Exact through average ranks (Mann-Whitney U / (n+ n-)); equal scores are tied.
    """
    labels = np.asarray(labels).astype(bool)
    if not _both_classes(labels):
        return float("nan")
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    ranks = rankdata(np.asarray(scores, dtype=np.float64), method="average")
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def average_precision_row(scores: np.ndarray, labels: np.ndarray) -> float:
    """Expected average precision over every order of tied scores; NaN without both classes.

    AP = (1/P) sum over positives of precision at the positive's rank. Groups of equal
    scores are ranked in a uniformly random order (McSherry & Najork 2008): a group of m
    items holding p positives, after N items holding Q positives, puts a positive at its
    j-th place with probability p/m, with (j-1)(p-1)/(m-1) of its other positives ahead
    of it on average, so it adds sum_j (p/m) (Q + 1 + (j-1)(p-1)/(m-1)) / (N + j). Without
    ties this is sklearn's `average_precision_score`.
    """
    labels = np.asarray(labels).astype(bool)
    if not _both_classes(labels):
        return float("nan")
    size, positives = _tie_groups(scores, labels)
    before_n = np.cumsum(size) - size
    before_p = np.cumsum(positives) - positives
    total = 0.0
    for m, p, n_ahead, p_ahead in zip(size, positives, before_n, before_p):
        if p == 0:
            continue
        j = np.arange(1.0, m + 1.0)
        others = (j - 1.0) * (p - 1.0) / (m - 1.0) if m > 1 else np.zeros(1)
        total += float(np.sum((p / m) * (p_ahead + 1.0 + others) / (n_ahead + j)))
    return total / float(labels.sum())


def precision_at_k_row(scores: np.ndarray, labels: np.ndarray) -> float:
    """Expected share of positives among the k = |G| highest scores (R-precision); NaN without both classes.

    The tied group straddling rank k fills the remaining places in random order, so it
    adds (places left) * (its positives / its size) in expectation.
    """
    labels = np.asarray(labels).astype(bool)
    if not _both_classes(labels):
        return float("nan")
    k = float(labels.sum())
    size, positives = _tie_groups(scores, labels)
    before_n = np.cumsum(size) - size
    g = int(np.searchsorted(np.cumsum(size), k))  # first group reaching rank k
    hits = positives[:g].sum() + (k - before_n[g]) * positives[g] / size[g]
    return float(hits / k)


def pointing_game_row(scores: np.ndarray, labels: np.ndarray) -> float:
    """Chance that a position drawn uniformly from the tied maxima is in G; NaN without both classes."""
    labels = np.asarray(labels).astype(bool)
    if not _both_classes(labels):
        return float("nan")
    size, positives = _tie_groups(scores, labels)
    return float(positives[0] / size[0])


def relevance_mass_row(scores: np.ndarray, labels: np.ndarray, atol: float = 0.0) -> float:
    """Share of sum |R| that falls inside G; NaN without both classes or when R carries nothing.

    A row whose every |R| is within `atol` of 0 carries no relevance to share: it is
    undefined, as an all-zero row is (the metric zeroes values within the input's tie
    tolerance before calling this).
    """
    labels = np.asarray(labels).astype(bool)
    a = np.abs(np.asarray(scores, dtype=np.float64))
    if not _both_classes(labels) or not a.max() > atol:
        return float("nan")
    return float(a[labels].sum() / a.sum())


def _constant(x: np.ndarray) -> bool:
    return bool(np.all(x == x[0]))


def spearman_row(scores: np.ndarray, graded: np.ndarray) -> float:
    """Spearman's rho of R against Gg (Pearson of average ranks); NaN when either row is constant."""
    scores, graded = np.asarray(scores, dtype=np.float64), np.asarray(graded, dtype=np.float64)
    if scores.size < 2 or _constant(scores) or _constant(graded):
        return float("nan")
    x = rankdata(scores, method="average")
    y = rankdata(graded, method="average")
    x, y = x - x.mean(), y - y.mean()
    return float(np.clip(np.sum(x * y) / np.sqrt(np.sum(x * x) * np.sum(y * y)), -1.0, 1.0))


def kendall_tau_b_row(scores: np.ndarray, graded: np.ndarray) -> float:
    """Kendall's tau-b of R against Gg; NaN when either row is constant.

    (concordant - discordant) / sqrt((pairs untied in R) (pairs untied in Gg)), over all
    pairs of positions: a pair tied in one row counts in neither numerator term.
    """
    scores, graded = np.asarray(scores, dtype=np.float64), np.asarray(graded, dtype=np.float64)
    if scores.size < 2 or _constant(scores) or _constant(graded):
        return float("nan")
    upper = np.triu(np.ones((scores.size, scores.size), dtype=bool), 1)
    s = np.sign(scores[:, None] - scores[None, :])[upper]
    g = np.sign(graded[:, None] - graded[None, :])[upper]
    return float(np.clip(np.sum(s * g) / np.sqrt(np.count_nonzero(s) * np.count_nonzero(g)), -1.0, 1.0))


def batched_rows(explanation: Explanation, compiled: CompiledCase, batch_fn: BatchFn, *, graded: bool = False,
                 zero_quiet: bool = False) -> RowScores:
    """`batch_fn` (a `token_batch` statistic) over every defined output row, in `token_rows` order.

    Equal to `token_rows` with the matching `*_row` function (tests/test_token_metrics.py),
    computed a block of equal-width rows at a time. `graded` passes Gg instead of G;
    `zero_quiet` zeroes values within the input's tie tolerance of 0 first (relevance mass).
    A row holding a non-finite value is NaN.
    """
    blocks, inputs = scored_relevance(explanation, compiled.truth).blocks(compiled.truth, zero_quiet)
    out = np.full(len(inputs), np.nan)
    for blk in blocks:
        got = batch_fn(blk.r, blk.gg if graded else blk.g)
        out[blk.where] = np.where(blk.finite, got, np.nan)
    return RowScores(out, inputs.astype(np.int64))


_TOKEN = {"level": "token", "kind": "token_relevance", "higher_is_better": True, "high": 1.0}


@metric("auroc", low=0.0, **_TOKEN)
def auroc(explanation: Explanation, compiled: CompiledCase) -> RowScores:
    """Token AUROC of R against G per output row (ties count 1/2); undefined if the G row is constant."""
    return batched_rows(explanation, compiled, token_batch.auroc)


@metric("average_precision", low=0.0, **_TOKEN)
def average_precision(explanation: Explanation, compiled: CompiledCase) -> RowScores:
    """Average precision of R against G, expected over orders of tied scores; undefined if G is constant."""
    return batched_rows(explanation, compiled, token_batch.average_precision)


@metric("precision_at_k", low=0.0, **_TOKEN)
def precision_at_k(explanation: Explanation, compiled: CompiledCase) -> RowScores:
    """Share of G among the |G| highest R (R-precision), expected over ties; undefined if G is constant."""
    return batched_rows(explanation, compiled, token_batch.precision_at_k)


@metric("relevance_mass", low=0.0, **_TOKEN)
def relevance_mass(explanation: Explanation, compiled: CompiledCase) -> RowScores:
    """Share of |R| inside G; undefined if G is constant or R is 0 within its tie tolerance."""
    return batched_rows(explanation, compiled, token_batch.relevance_mass, zero_quiet=True)


@metric("pointing_game", low=0.0, **_TOKEN)
def pointing_game(explanation: Explanation, compiled: CompiledCase) -> RowScores:
    """Chance that a uniformly drawn maximum of R lies in G (tied maxima share); undefined if G is constant."""
    return batched_rows(explanation, compiled, token_batch.pointing_game)


@metric("spearman", low=-1.0, **_TOKEN)
def spearman(explanation: Explanation, compiled: CompiledCase) -> RowScores:
    """Spearman rank correlation of R with graded truth Gg; undefined if R or Gg is constant."""
    return batched_rows(explanation, compiled, token_batch.spearman, graded=True)


@metric("kendall_tau_b", low=-1.0, **_TOKEN)
def kendall_tau_b(explanation: Explanation, compiled: CompiledCase) -> RowScores:
    """Kendall's tau-b of R with graded truth Gg; undefined if R or Gg is constant."""
    return batched_rows(explanation, compiled, token_batch.kendall_tau_b, graded=True)
