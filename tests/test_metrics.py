"""The metric registry and aggregation: bootstrap over inputs, undefined rows counted (token metrics: test_token_metrics)."""

from __future__ import annotations

import numpy as np
import pytest

from interpbench.explanation import Explanation
from interpbench.metrics import METRICS, RowScores, aggregate, applicable, get_metric, list_metrics, percentiles


def test_aggregate_pools_rows_and_bootstraps_over_inputs() -> None:
    rows = RowScores(np.array([1.0, 0.0, 0.5, np.nan]), np.array([0, 0, 1, 1]))
    s = aggregate(rows, seed=1)
    assert s.value == pytest.approx(0.5)
    assert s.n == 3 and s.n_undefined == 1
    assert s.ci_low <= s.value <= s.ci_high
    assert aggregate(rows, seed=1) == s  # seeded


def test_aggregate_interval_resamples_whole_inputs() -> None:
    # input 0: nine rows scoring 1; input 1: one row scoring 0. Drawing both inputs as
    # input 1 happens in 1/4 of the draws, so the interval reaches 0; resampling the ten
    # rows independently would need all ten draws to hit the 0 row (1e-10).
    rows = RowScores(np.array([1.0] * 9 + [0.0]), np.array([0] * 9 + [1]))
    s = aggregate(rows, seed=0, n_boot=2000)
    assert s.value == pytest.approx(0.9)
    assert (s.ci_low, s.ci_high) == (0.0, 1.0)


def test_aggregate_interval_equals_the_resample_by_resample_definition() -> None:
    rng = np.random.default_rng(7)
    inputs = np.sort(rng.integers(0, 9, 60))
    values = rng.random(60)
    values[[3, 17]] = np.nan
    s = aggregate(RowScores(values, inputs), seed=5, n_boot=400)
    keep = ~np.isnan(values)
    uniq = np.unique(inputs[keep])
    picks = np.random.default_rng(5).integers(0, len(uniq), size=(400, len(uniq)))  # the documented draws
    boot = [np.concatenate([values[keep][inputs[keep] == uniq[j]] for j in row]).mean() for row in picks]
    lo, hi = np.percentile(boot, [2.5, 97.5])
    assert s.ci_low == pytest.approx(lo, abs=1e-12) and s.ci_high == pytest.approx(hi, abs=1e-12)
    assert s.value == pytest.approx(values[keep].mean(), abs=1e-15) and (s.n, s.n_undefined) == (58, 2)


@pytest.mark.parametrize("n", [1, 2, 7, 1000])
def test_percentiles_follow_numpys_linear_rule(n: int) -> None:
    x = np.random.default_rng(n).normal(size=n)
    qs = (0.0, 2.5, 50.0, 97.5, 100.0)
    np.testing.assert_allclose(percentiles(x, qs), np.percentile(x, qs), rtol=0, atol=1e-12)


def test_aggregate_all_undefined_is_nan() -> None:
    s = aggregate(RowScores(np.array([np.nan, np.nan]), np.array([0, 1])))
    assert np.isnan(s.value) and s.n == 0 and s.n_undefined == 2


def test_load_metrics_registers_every_level() -> None:
    levels = {m.level for m in list_metrics()}
    assert {"token", "head", "program"} <= levels
    assert get_metric("auroc") is METRICS.get("auroc")
    for m in list_metrics():
        assert m.low < m.high and m.description, m.name


def test_applicable_follows_the_explanation_kinds() -> None:
    token = {m.name for m in applicable(Explanation(token_relevance=np.zeros((1, 2, 2))))}
    assert token == {m.name for m in list_metrics() if m.kind == "token_relevance"}
    assert {"auroc", "average_precision", "spearman", "kendall_tau_b"} <= token
    assert applicable(Explanation()) == []
