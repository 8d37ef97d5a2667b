"""Across-case statistics: per-case score tables, mean ranks, and paired Wilcoxon tests between methods.

A single mean over cases hides how often one method beats another and whether the gap
is larger than case-to-case noise. Following Demšar (2006), methods are compared on the
cases all of them were scored on (complete blocks): each case ranks the methods (1 =
best, ties share the average rank), and two methods are compared with the Wilcoxon
signed-rank test on their paired per-case values. The per-method summary reports the
test against the best-ranked method with Holm's correction over those comparisons.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon

CASE_KEYS = ["suite", "case", "variant"]


@dataclasses.dataclass(frozen=True)
class PairedTest:
    """A Wilcoxon signed-rank test of method `a` against method `b` over shared cases.

    Attributes:
        a: First method.
        b: Second method.
        n: Cases where both have a value.
        wins: Cases where `a` is strictly better than `b` (in the metric's direction).
        losses: Cases where `a` is strictly worse.
        mean_diff: Mean of a - b over the shared cases (raw values, not direction-adjusted).
        statistic: Wilcoxon's W (smaller of the signed-rank sums; zero differences dropped).
        p_value: Two-sided p-value; NaN when fewer than one non-zero difference.
    """

    a: str
    b: str
    n: int
    wins: int
    losses: int
    mean_diff: float
    statistic: float
    p_value: float


def case_table(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Cases x methods of `metric`, each value the mean over seeds (NaN where undefined)."""
    sub = rows[rows["metric"] == metric] if not rows.empty else rows
    if sub.empty:
        return pd.DataFrame()
    per = sub.groupby(CASE_KEYS + ["method"])["value"].mean()
    return per.unstack("method").sort_index(axis=1)


def case_ranks(table: pd.DataFrame, *, higher_is_better: bool) -> pd.DataFrame:
    """Rank of each method within each complete case (1 = best; ties share the average rank).

    Cases where any method lacks a value are left out, so every method is ranked on the
    same cases and mean ranks are comparable. A method with no value on any case (e.g.
    `uniform` on `spearman`, undefined for a constant R) is not ranked, rather than
    emptying every case.
    """
    complete = table.dropna(axis=1, how="all").dropna(how="any")
    return complete.rank(axis=1, ascending=not higher_is_better, method="average")


def paired_test(x: np.ndarray, y: np.ndarray, a: str, b: str, *, higher_is_better: bool) -> PairedTest:
    """Wilcoxon signed-rank test of paired values x (method a) and y (method b).

    Zero differences are dropped (Wilcoxon's original treatment); with no non-zero
    difference the methods are indistinguishable and the p-value is NaN. scipy chooses
    the exact null distribution for small samples without tied differences.
    """
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    d = x - y
    better = d > 0 if higher_is_better else d < 0
    worse = d < 0 if higher_is_better else d > 0
    mean_diff = float(d.mean()) if d.size else float("nan")
    if not np.any(d != 0):
        stat, p = float("nan"), float("nan")
    else:
        res = wilcoxon(x, y, zero_method="wilcox", alternative="two-sided")
        stat, p = float(res.statistic), float(res.pvalue)
    return PairedTest(a, b, int(d.size), int(better.sum()), int(worse.sum()), mean_diff, stat, p)


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (NaN stays NaN and does not count as a test)."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full_like(p, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = idx.size
    running = 0.0
    for k, i in enumerate(idx[np.argsort(p[idx], kind="stable")]):
        running = max(running, min(1.0, (m - k) * p[i]))
        out[i] = running
    return out


def pairwise_tests(rows: pd.DataFrame, metric: str, *, higher_is_better: bool) -> pd.DataFrame:
    """Every pair of methods compared on `metric`, with Holm-adjusted p-values over all pairs."""
    table = case_table(rows, metric)
    cols = [f.name for f in dataclasses.fields(PairedTest)] + ["p_holm"]
    if table.empty:
        return pd.DataFrame(columns=cols)
    tests = [
        paired_test(table[a].to_numpy(), table[b].to_numpy(), a, b, higher_is_better=higher_is_better)
        for a, b in itertools.combinations(table.columns, 2)
    ]
    out = pd.DataFrame([dataclasses.asdict(t) for t in tests], columns=cols[:-1])
    out["p_holm"] = holm(out["p_value"].to_numpy()) if len(out) else []
    return out


def versus_best(rows: pd.DataFrame, metric: str, *, higher_is_better: bool) -> pd.DataFrame:
    """Per method: mean rank, ranked cases, and the Holm-adjusted Wilcoxon p against the best.

    The best method is the one with the lowest mean rank (ties broken by name); its own
    p-value is NaN. A small `p_vs_best` says the method is reliably different from the
    best across cases, not just on average. When no case has a value for every ranked
    method there is no best: `best` is None and the comparison columns are empty.
    """
    table = case_table(rows, metric)
    cols = ["method", "mean_rank", "ranked_cases", "best", "wins_vs_best", "losses_vs_best", "p_vs_best"]
    if table.empty:
        return pd.DataFrame(columns=cols)
    ranks = case_ranks(table, higher_is_better=higher_is_better)
    mean_rank = ranks.mean(axis=0).reindex(table.columns) if len(ranks) else pd.Series(np.nan, index=table.columns)
    if mean_rank.isna().all():
        return pd.DataFrame({"method": list(table.columns), "mean_rank": np.nan, "ranked_cases": 0, "best": None,
                             "wins_vs_best": np.nan, "losses_vs_best": np.nan, "p_vs_best": np.nan})[cols]  # fmt: skip
    best = min((m for m in table.columns if not np.isnan(mean_rank[m])), key=lambda m: (mean_rank[m], m))
    tests = {
        m: paired_test(table[m].to_numpy(), table[best].to_numpy(), m, best, higher_is_better=higher_is_better)
        for m in table.columns if m != best
    }  # fmt: skip
    adjusted = dict(zip(tests, holm(np.array([t.p_value for t in tests.values()]))))
    out = pd.DataFrame({
        "method": list(table.columns),
        "mean_rank": [float(mean_rank[m]) for m in table.columns],
        "ranked_cases": len(ranks),
        "best": best,
        "wins_vs_best": [tests[m].wins if m in tests else 0 for m in table.columns],
        "losses_vs_best": [tests[m].losses if m in tests else 0 for m in table.columns],
        "p_vs_best": [adjusted.get(m, float("nan")) for m in table.columns],
    })  # fmt: skip
    return out[cols]
