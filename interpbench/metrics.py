"""Metric registry and aggregation: functions (explanation, compiled case) -> per-row scores.

The metrics live in `token_metrics`, `head_metrics` and `program_metrics`, which register
here (`load_metrics` imports them). A metric reads the ground truth (`compiled.truth`) and,
where its definition needs the model (e.g. `replacement_accuracy`), the compiled model
itself. Every metric scores rows (one output position of one input, or one query row of
one head); rows where the metric is undefined are NaN and counted, never dropped. The
aggregate is the mean over defined rows with a seeded 95% bootstrap interval over inputs.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from interpbench.explanation import Explanation
from interpbench.registry import Registry

if TYPE_CHECKING:
    from interpbench.compiled import CompiledCase

# (explanation, compiled) -> RowScores; twin-level metrics also take the base model's explanation.
MetricFn = Callable[..., "RowScores"]


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
        fn: (explanation, compiled case) -> RowScores; at the twin level
            (explanation of the twin, compiled twin, explanation of the base model).
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


@functools.lru_cache(maxsize=16)
def bootstrap_counts(seed: int, n: int, n_boot: int) -> np.ndarray:
    """[n_boot, n] how often each of `n` inputs is drawn in each resample under `seed` (kept, read-only).

    Every metric of a cell resamples the same inputs under the same seed, so the draws
    are made once and shared; as counts, a resample's sum is one matrix product.
    """
    picks = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    flat = (picks + np.arange(n_boot)[:, None] * n).ravel()
    counts = np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)
    counts.flags.writeable = False
    return counts


def percentiles(values: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """Percentiles of `values` by linear interpolation between order statistics (numpy's default rule)."""
    s = np.sort(values)
    out = []
    for q in qs:
        g = q / 100.0 * (len(s) - 1)
        i = int(np.floor(g))
        j = min(i + 1, len(s) - 1)
        out.append(float(s[i] + (g - i) * (s[j] - s[i])))
    return out


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
    drawn = bootstrap_counts(seed, len(uniq), n_boot)
    lo, hi = percentiles((drawn @ sums) / (drawn @ counts), (2.5, 97.5))
    return Score(float(vals.mean()), lo, hi, n, n_undef)


def load_metrics() -> None:
    """Registers the token-, head-, program- and twin-level metrics (their modules import this one)."""
    import interpbench.token_metrics  # noqa: F401  (first: `list metrics` shows token level first)
    import interpbench.head_metrics  # noqa: F401
    import interpbench.program_metrics  # noqa: F401
    import interpbench.twin_metrics  # noqa: F401


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
