"""Metrics on hand-worked cases: tie handling, undefined rows, bootstrap aggregation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from interpbench.components import Component
from interpbench.explanation import Explanation
from interpbench.ground_truth import GroundTruth
from interpbench.metrics import METRICS, RowScores, aggregate, auroc_row, token_rows


def test_auroc_perfect_inverted_and_tied() -> None:
    labels = np.array([1, 0, 0, 1])
    assert auroc_row(np.array([0.9, 0.1, 0.2, 0.8]), labels) == 1.0
    assert auroc_row(np.array([0.1, 0.9, 0.8, 0.2]), labels) == 0.0
    assert auroc_row(np.ones(4), labels) == 0.5


def test_auroc_partial_ties_by_hand() -> None:
    # positives score 2 and 1; negatives score 1 and 0.
    # pairs: (2,1) win, (2,0) win, (1,1) tie -> 1/2, (1,0) win  => 3.5 / 4
    assert auroc_row(np.array([2.0, 1.0, 1.0, 0.0]), np.array([1, 1, 0, 0])) == pytest.approx(3.5 / 4)


def test_auroc_undefined_without_both_classes() -> None:
    assert np.isnan(auroc_row(np.array([1.0, 2.0]), np.array([1, 1])))
    assert np.isnan(auroc_row(np.array([1.0, 2.0]), np.array([0, 0])))


def test_auroc_matches_scipy_mann_whitney() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        scores = rng.integers(0, 4, size=9).astype(float)  # many ties
        labels = rng.integers(0, 2, size=9)
        if labels.all() or not labels.any():
            continue
        u = mannwhitneyu(scores[labels == 1], scores[labels == 0]).statistic
        expected = u / (labels.sum() * (len(labels) - labels.sum()))
        assert auroc_row(scores, labels) == pytest.approx(expected)


def test_auroc_does_not_mutate_inputs() -> None:
    scores, labels = np.array([0.3, 0.1, 0.2]), np.array([1, 0, 1])
    auroc_row(scores, labels)
    assert scores.tolist() == [0.3, 0.1, 0.2] and labels.tolist() == [1, 0, 1]


def _truth(g: np.ndarray, valid_in: np.ndarray, valid_out: np.ndarray) -> GroundTruth:
    n, t = valid_in.shape
    return GroundTruth(
        relevance=g.astype(np.int8), graded=g.astype(float), valid_in=valid_in, valid_out=valid_out,
        patterns={}, pattern_rows=np.zeros((n, t), bool), components=tuple[Component, ...](),
        edges=(), program_source="", program_graph=[], n_undefined_outputs=0,
    )  # fmt: skip


def test_token_auroc_counts_undefined_rows_and_ignores_bos_and_pad() -> None:
    # one input of length 2 in a 4-position frame (BOS + 2 tokens + PAD)
    valid_in = np.array([[False, True, True, False]])
    valid_out = np.array([[False, True, True, False]])
    g = np.zeros((1, 4, 4))
    g[0, 1, 1] = 1  # row 1: position 1 relevant, position 2 not -> defined
    g[0, 2, 1:3] = 1  # row 2: all relevant -> undefined
    r = np.zeros((1, 4, 4))
    r[0, 1] = [100.0, 1.0, 0.0, 100.0]  # huge BOS/PAD scores must not matter
    rows = token_rows(Explanation(token_relevance=r), _truth(g, valid_in, valid_out), lambda r, g, _gg: auroc_row(r, g))
    assert rows.values[0] == 1.0 and np.isnan(rows.values[1])
    s = aggregate(rows)
    assert (s.value, s.n, s.n_undefined) == (1.0, 1, 1)


def test_aggregate_pools_rows_and_bootstraps_over_inputs() -> None:
    rows = RowScores(np.array([1.0, 0.0, 0.5, np.nan]), np.array([0, 0, 1, 1]))
    s = aggregate(rows, seed=1)
    assert s.value == pytest.approx(0.5)
    assert s.n == 3 and s.n_undefined == 1
    assert s.ci_low <= s.value <= s.ci_high
    assert aggregate(rows, seed=1) == s  # seeded


def test_aggregate_all_undefined_is_nan() -> None:
    s = aggregate(RowScores(np.array([np.nan, np.nan]), np.array([0, 1])))
    assert np.isnan(s.value) and s.n == 0 and s.n_undefined == 2


def test_registry_metadata() -> None:
    m = METRICS.get("auroc")
    assert (m.level, m.kind, m.higher_is_better, m.low, m.high) == ("token", "token_relevance", True, 0.0, 1.0)


def test_rounding_noise_does_not_rank_but_real_differences_do() -> None:
    from interpbench.metrics import snap_ties

    labels = np.array([1, 0, 1, 0])
    tied = np.array([1.0, 1.0, 0.5, 0.5])
    noisy = tied + np.array([0.0, 3e-8, 0.0, 2e-8])  # float32-level noise favouring negatives
    assert auroc_row(noisy, labels) == auroc_row(tied, labels) == 0.5
    real = tied + np.array([0.0, 1e-3, 0.0, 1e-3])  # a real, if small, preference
    assert auroc_row(real, labels) == 0.25
    assert snap_ties(np.zeros(3)).tolist() == [0.0, 0.0, 0.0]
