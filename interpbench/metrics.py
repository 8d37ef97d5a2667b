"""Metrics: functions (explanation, compiled case) -> per-row scores, registered with metadata.

A metric reads the ground truth (`compiled.truth`) and, where its definition needs the
model (e.g. `replacement_accuracy`), the compiled model itself. Every metric scores rows (one output position of one input, or one query row of one
head); rows where the metric is undefined are NaN and counted, never dropped. The
aggregate is the mean over defined rows with a seeded 95% bootstrap interval over inputs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from scipy.stats import rankdata

from interpbench.explanation import Explanation
from interpbench.ground_truth import GroundTruth
from interpbench.registry import Registry

if TYPE_CHECKING:
    from interpbench.compiled import CompiledCase

MetricFn = Callable[[Explanation, "CompiledCase"], "RowScores"]


@dataclasses.dataclass(frozen=True)
class RowScores:
    """Per-row metric values with the input each row belongs to (NaN = undefined)."""

    values: np.ndarray
    inputs: np.ndarray


@dataclasses.dataclass(frozen=True)
class Metric:
    """A registered metric.

    Attributes:
        name: Registry name, also the leaderboard's `metric` column.
        fn: (explanation, compiled case) -> RowScores.
        level: "token", "head", "program" or "twin".
        kind: Explanation kind it needs (e.g. "token_relevance").
        higher_is_better: Direction.
        low: Smallest attainable value.
        high: Largest attainable value (the oracle's score).
        description: One line for `list metrics` and the README.
    """

    name: str
    fn: MetricFn
    level: str
    kind: str
    higher_is_better: bool
    low: float
    high: float
    description: str


@dataclasses.dataclass(frozen=True)
class Score:
    """An aggregated metric value for one cell."""

    value: float
    ci_low: float
    ci_high: float
    n: int
    n_undefined: int


METRICS: Registry[Metric] = Registry("metric")


def metric(
    name: str, *, level: str, kind: str, higher_is_better: bool, low: float, high: float
) -> Callable[[MetricFn], MetricFn]:
    """Decorator registering a row-scoring function as a metric; its docstring's first line describes it."""

    def register(fn: MetricFn) -> MetricFn:
        doc = (fn.__doc__ or "").strip().split("\n")[0]
        METRICS.add(name, Metric(name, fn, level, kind, higher_is_better, low, high, doc))
        return fn

    return register


TIE_RTOL = 1e-6


def snap_ties(scores: np.ndarray, rtol: float = TIE_RTOL) -> np.ndarray:
    """Rounds a row's scores to `rtol` of its largest magnitude, so rounding noise cannot rank.

    captum computes in float32 in places (step sizes, Shapley sums), and float64 forwards
    leave ~1e-16 noise: without this, tokens that are truly tied get an order decided by
    arithmetic. Differences below one part in a million of the row's scale are not signal.
    """
    scale = float(np.max(np.abs(scores))) if scores.size else 0.0
    if scale == 0.0 or not np.isfinite(scale):
        return scores
    return np.round(scores / (scale * rtol)) * rtol


def auroc_row(scores: np.ndarray, labels: np.ndarray) -> float:
    """P(score of a positive > score of a negative) + 1/2 P(tie); NaN without both classes.

    Ties are handled exactly through average ranks (Mann-Whitney U), after `snap_ties`.
    """
    scores = snap_ties(np.asarray(scores, dtype=np.float64))
    labels = labels.astype(bool)
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores, method="average")
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def token_rows(
    explanation: Explanation, truth: GroundTruth, row_fn: Callable[[np.ndarray, np.ndarray, np.ndarray], float]
) -> RowScores:
    """Applies `row_fn(relevance, G, Gg)` to every defined output row over valid input positions."""
    r = explanation.token_relevance
    if r is None:
        raise ValueError("explanation has no token_relevance")
    values, inputs = [], []
    for b, i in zip(*np.nonzero(truth.valid_out)):
        cols = truth.valid_in[b]
        values.append(row_fn(np.asarray(r[b, i, cols], dtype=np.float64), truth.relevance[b, i, cols], truth.graded[b, i, cols]))
        inputs.append(b)
    return RowScores(np.asarray(values, dtype=np.float64), np.asarray(inputs, dtype=np.int64))


@metric("auroc", level="token", kind="token_relevance", higher_is_better=True, low=0.0, high=1.0)
def auroc(explanation: Explanation, compiled: CompiledCase) -> RowScores:
    """Token AUROC of relevance against G per output row (ties count 1/2); undefined if G row is constant."""
    return token_rows(explanation, compiled.truth, lambda r, g, _gg: auroc_row(r, g))


def aggregate(rows: RowScores, *, seed: int = 0, n_boot: int = 1000) -> Score:
    """Mean over defined rows with a percentile 95% bootstrap interval over inputs.

    Resampling whole inputs keeps rows of one input together, so the interval reflects
    input-to-input variation rather than treating correlated rows as independent.
    """
    defined = ~np.isnan(rows.values)
    n, n_undef = int(defined.sum()), int((~defined).sum())
    if n == 0:
        return Score(float("nan"), float("nan"), float("nan"), 0, n_undef)
    vals, inp = rows.values[defined], rows.inputs[defined]
    uniq, inv = np.unique(inp, return_inverse=True)
    sums = np.bincount(inv, weights=vals, minlength=len(uniq))
    counts = np.bincount(inv, minlength=len(uniq)).astype(np.float64)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(uniq), size=(n_boot, len(uniq)))
    boot = sums[picks].sum(1) / counts[picks].sum(1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return Score(float(vals.mean()), float(lo), float(hi), n, n_undef)


def load_metrics() -> None:
    """Registers the head- and program-level metrics (their modules import this one)."""
    import interpbench.head_metrics  # noqa: F401
    import interpbench.program_metrics  # noqa: F401


def get_metric(name: str) -> Metric:
    """The metric called `name`, with "did you mean"."""
    load_metrics()
    return METRICS.get(name)


def list_metrics() -> list[Metric]:
    """Every registered metric."""
    load_metrics()
    return [m for _, m in METRICS.items()]


def applicable(explanation: Explanation) -> list[Metric]:
    """Metrics whose required explanation kind the explanation carries."""
    kinds = set(explanation.kinds)
    return [m for m in list_metrics() if m.kind in kinds]
