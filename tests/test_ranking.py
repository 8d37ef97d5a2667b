"""Across-case statistics: ranks over complete cases, Wilcoxon tests and Holm's correction, worked by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from interpbench.leaderboard import method_summary, summary_table
from interpbench.ranking import case_ranks, case_table, holm, pairwise_tests, paired_test, versus_best


def _rows(values: dict[str, list[float]], *, metric: str = "auroc", higher: bool = True, seeds: int = 1) -> pd.DataFrame:
    """Long rows: one case per list position, one row per (method, seed); seed s adds s/100."""
    out = []
    for method, vals in values.items():
        for i, v in enumerate(vals):
            for s in range(seeds):
                out.append({"suite": "s", "case": f"c{i}", "variant": "base", "method": method, "family": "f",
                            "metric": metric, "higher_is_better": higher, "value": v + s / 100, "seconds": 1.0,
                            "seed": s})  # fmt: skip
    return pd.DataFrame(out)


def test_all_positive_differences_give_the_exact_smallest_p() -> None:
    # Five distinct positive differences: W = 0 and the exact two-sided p is 2 / 2^5.
    x = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    y = x - np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    t = paired_test(x, y, "a", "b", higher_is_better=True)
    assert (t.n, t.wins, t.losses) == (5, 5, 0)
    assert t.statistic == 0.0
    assert t.p_value == pytest.approx(2 / 32)
    assert t.mean_diff == pytest.approx(0.3)


def test_zero_differences_are_dropped_and_direction_is_respected() -> None:
    x = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    y = np.array([0.1, 0.3, 0.5, 0.7, 0.9])  # differences 0, -.1, -.2, -.3, -.4
    lower = paired_test(x, y, "a", "b", higher_is_better=False)  # smaller is better: a wins 4
    assert (lower.wins, lower.losses) == (4, 0)
    assert lower.p_value == pytest.approx(2 / 16)  # four non-zero differences, all one sign
    higher = paired_test(x, y, "a", "b", higher_is_better=True)
    assert (higher.wins, higher.losses) == (0, 4)
    assert higher.p_value == pytest.approx(lower.p_value)


def test_mixed_signs_match_the_hand_computed_statistic() -> None:
    # Differences +1, -2, +3, +4: ranks 1, 2, 3, 4; W+ = 8, W- = 2, W = 2.
    # Exact null over the 16 sign patterns: the subsets of ranks {1, 2, 3, 4} summing to at
    # most 2 are {}, {1}, {2}, so P(W- <= 2) = 3/16 and the two-sided p is 6/16.
    x = np.array([1.0, 0.0, 3.0, 4.0])
    y = np.array([0.0, 2.0, 0.0, 0.0])
    t = paired_test(x, y, "a", "b", higher_is_better=True)
    assert t.statistic == 2.0
    assert t.p_value == pytest.approx(6 / 16)


def test_no_difference_and_missing_values() -> None:
    same = paired_test(np.ones(4), np.ones(4), "a", "b", higher_is_better=True)
    assert math.isnan(same.p_value) and same.n == 4 and same.wins == same.losses == 0
    gaps = paired_test(np.array([1.0, np.nan, 3.0]), np.array([0.0, 1.0, np.nan]), "a", "b", higher_is_better=True)
    assert gaps.n == 1 and gaps.wins == 1


def test_holm_by_hand() -> None:
    # Sorted 0.01, 0.03, 0.04 times 3, 2, 1 = 0.03, 0.06, 0.04 -> monotone 0.03, 0.06, 0.06.
    adj = holm(np.array([0.01, 0.04, 0.03, np.nan]))
    assert adj[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(adj[3])
    assert holm(np.array([0.6, 0.9])) == pytest.approx([1.0, 1.0])  # capped at 1


def test_ranks_use_complete_cases_and_average_ties() -> None:
    rows = _rows({"a": [0.9, 0.5, 0.7], "b": [0.8, 0.5, np.nan], "c": [0.1, 0.2, 0.9]})
    ranks = case_ranks(case_table(rows, "auroc"), higher_is_better=True)
    assert len(ranks) == 2  # case c2 has no value for b
    assert ranks.loc[("s", "c0", "base")].tolist() == [1.0, 2.0, 3.0]
    assert ranks.loc[("s", "c1", "base")].tolist() == [1.5, 1.5, 3.0]
    lower = case_ranks(case_table(rows, "auroc"), higher_is_better=False)
    assert lower.loc[("s", "c0", "base")].tolist() == [3.0, 2.0, 1.0]


def test_versus_best_on_six_cases() -> None:
    rows = _rows({"a": [0.9] * 6, "b": [0.7, 0.6, 0.8, 0.7, 0.6, 0.8], "c": [0.1 * k for k in range(6)]})
    vb = versus_best(rows, "auroc", higher_is_better=True).set_index("method")
    assert vb["mean_rank"].tolist() == [1.0, 2.0, 3.0]
    assert (vb["best"] == "a").all() and vb["ranked_cases"].eq(6).all()
    assert math.isnan(vb.loc["a", "p_vs_best"])
    # b and c lose all six cases: exact p = 2/64 each; Holm over two tests doubles both.
    assert vb.loc["b", "p_vs_best"] == pytest.approx(2 * 2 / 64)
    assert vb.loc["c", "p_vs_best"] == pytest.approx(2 * 2 / 64)
    assert vb.loc["b", "losses_vs_best"] == 6 and vb.loc["b", "wins_vs_best"] == 0


def test_pairwise_tests_cover_every_pair() -> None:
    rows = _rows({"a": [0.9] * 6, "b": [0.5] * 6, "c": [0.1] * 6})
    pw = pairwise_tests(rows, "auroc", higher_is_better=True)
    assert list(zip(pw["a"], pw["b"])) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert pw["p_value"].to_numpy() == pytest.approx([2 / 64] * 3)
    assert pw["p_holm"].to_numpy() == pytest.approx([3 * 2 / 64] * 3)


def test_method_summary_averages_seeds_and_respects_direction() -> None:
    rows = _rows({"low": [0.1, 0.2, 0.1], "high": [0.5, 0.6, 0.7]}, metric="jsd", higher=False, seeds=2)
    s = method_summary(rows, "jsd")
    assert s["method"].tolist() == ["low", "high"]  # smaller JSD is better
    assert s["jsd"].tolist() == pytest.approx([0.4 / 3 + 0.005, 1.8 / 3 + 0.005])
    assert s["mean_rank"].tolist() == [1.0, 2.0]
    assert s["cases"].tolist() == [3, 3]
    assert s["seconds"].tolist() == [6.0, 6.0]  # 3 cases x 2 seeds x 1 s
    both = summary_table(pd.concat([rows, _rows({"x": [0.5, 0.5, 0.5]})]))
    assert set(both["metric"]) == {"jsd", "auroc"} and "value" in both.columns


def test_a_method_undefined_everywhere_is_not_ranked_and_does_not_empty_the_ranking() -> None:
    # `uniform` on spearman: NaN on every case. The others are still ranked, and the best is
    # the true best (not whichever name sorts first).
    rows = _rows({"aaa_weak": [0.1, 0.2, 0.1, 0.0, 0.1, 0.2], "oracle": [1.0] * 6, "uniform": [np.nan] * 6})
    vb = versus_best(rows, "auroc", higher_is_better=True).set_index("method")
    assert (vb["best"] == "oracle").all() and vb["ranked_cases"].eq(6).all()
    assert vb.loc["oracle", "mean_rank"] == 1.0 and vb.loc["aaa_weak", "mean_rank"] == 2.0
    assert math.isnan(vb.loc["uniform", "mean_rank"]) and math.isnan(vb.loc["uniform", "p_vs_best"])
    assert vb.loc["aaa_weak", "losses_vs_best"] == 6
    s = method_summary(rows, "auroc").set_index("method")
    assert s.loc["aaa_weak", "best"] == "oracle" and s.loc["uniform", "cases"] == 0


def test_no_complete_case_means_no_best() -> None:
    rows = _rows({"a": [0.5, np.nan], "b": [np.nan, 0.7]})
    vb = versus_best(rows, "auroc", higher_is_better=True)
    assert vb["best"].isna().all() and vb["mean_rank"].isna().all() and vb["p_vs_best"].isna().all()
