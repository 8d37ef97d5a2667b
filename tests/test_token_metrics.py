"""Token metrics on hand-worked rows, against scipy/sklearn and brute force over tie orders, and on real cases."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import pytest
from scipy.stats import kendalltau, mannwhitneyu, spearmanr
from sklearn.metrics import average_precision_score, roc_auc_score

from interpbench.compiled import CompiledCase
from interpbench.components import Component
from interpbench.explanation import Explanation
from interpbench.ground_truth import GroundTruth
from interpbench.method import get_method
from interpbench.metrics import aggregate, get_metric
from interpbench.token_metrics import (
    ScoredRelevance,
    auroc_row,
    average_precision_row,
    kendall_tau_b_row,
    pointing_game_row,
    precision_at_k_row,
    relevance_mass_row,
    scored_relevance,
    snap_ties,
    spearman_row,
    token_rows,
)

TOKEN_METRICS = ("auroc", "average_precision", "precision_at_k", "relevance_mass", "pointing_game", "spearman",
                 "kendall_tau_b")  # fmt: skip
G_METRICS = (auroc_row, average_precision_row, precision_at_k_row, pointing_game_row, relevance_mass_row)
G_NAMES = ("auroc", "average_precision", "precision_at_k", "relevance_mass", "pointing_game")


# ---------------------------------------------------------------- brute force over tie orders


def _orders(scores: np.ndarray) -> list[list[int]]:
    """Every ranking (best first) that breaks the ties of `scores` differently, each once per permutation."""
    return [sorted(range(len(scores)), key=lambda i: (-scores[i], perm[i]))
            for perm in itertools.permutations(range(len(scores)))]  # fmt: skip


def _brute_ap(scores: np.ndarray, labels: np.ndarray) -> float:
    values = []
    for order in _orders(scores):
        hits, ap = 0, 0.0
        for rank, i in enumerate(order, 1):
            if labels[i]:
                hits += 1
                ap += hits / rank
        values.append(ap / labels.sum())
    return float(np.mean(values))


def _brute_p_at_k(scores: np.ndarray, labels: np.ndarray) -> float:
    k = int(labels.sum())
    return float(np.mean([labels[order[:k]].sum() / k for order in _orders(scores)]))


def _brute_pointing(scores: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean([labels[order[0]] for order in _orders(scores)]))


# ---------------------------------------------------------------- AUROC


def test_auroc_perfect_inverted_and_tied() -> None:
    labels = np.array([1, 0, 0, 1])
    assert auroc_row(np.array([0.9, 0.1, 0.2, 0.8]), labels) == 1.0
    assert auroc_row(np.array([0.1, 0.9, 0.8, 0.2]), labels) == 0.0
    assert auroc_row(np.ones(4), labels) == 0.5


def test_auroc_partial_ties_by_hand() -> None:
    # positives score 2 and 1; negatives score 1 and 0.
    # pairs: (2,1) win, (2,0) win, (1,1) tie -> 1/2, (1,0) win  => 3.5 / 4
    assert auroc_row(np.array([2.0, 1.0, 1.0, 0.0]), np.array([1, 1, 0, 0])) == pytest.approx(3.5 / 4)


def test_auroc_matches_scipy_and_sklearn() -> None:
    rng = np.random.default_rng(3)
    checked = 0
    for _ in range(40):
        scores = rng.integers(0, 4, size=9).astype(float)  # many ties
        labels = rng.integers(0, 2, size=9)
        if labels.all() or not labels.any():
            continue
        u = mannwhitneyu(scores[labels == 1], scores[labels == 0]).statistic
        assert auroc_row(scores, labels) == pytest.approx(u / (labels.sum() * (len(labels) - labels.sum())))
        assert auroc_row(scores, labels) == pytest.approx(roc_auc_score(labels, scores))
        checked += 1
    assert checked > 30


def test_auroc_does_not_mutate_inputs() -> None:
    scores, labels = np.array([0.3, 0.1, 0.2]), np.array([1, 0, 1])
    auroc_row(scores, labels)
    assert scores.tolist() == [0.3, 0.1, 0.2] and labels.tolist() == [1, 0, 1]


# ---------------------------------------------------------------- average precision


def test_average_precision_by_hand() -> None:
    # ranking 0.9(+) 0.8(-) 0.7(+): precisions at the positives 1/1 and 2/3 -> (1 + 2/3) / 2
    assert average_precision_row(np.array([0.9, 0.8, 0.7]), np.array([1, 0, 1])) == pytest.approx(5 / 6)
    # a tied top pair (+, -) then a positive: orders (+ - +) 5/6 and (- + +) (1/2 + 2/3)/2 = 7/12
    assert average_precision_row(np.array([1.0, 1.0, 0.0]), np.array([1, 0, 1])) == pytest.approx((5 / 6 + 7 / 12) / 2)
    # single positive tied with two negatives at the top: E[1 / rank] = (1 + 1/2 + 1/3) / 3
    assert average_precision_row(np.array([2.0, 2.0, 2.0, 0.0]), np.array([0, 1, 0, 0])) == pytest.approx(11 / 18)


def test_average_precision_all_tied_is_the_closed_form() -> None:
    # n items, P positives, one big tie: (1/n) (H_n + (P - 1)(n - H_n)/(n - 1))
    for n, p in ((5, 1), (5, 2), (6, 3), (4, 3)):
        h = sum(1 / k for k in range(1, n + 1))
        labels = np.array([1] * p + [0] * (n - p))
        assert average_precision_row(np.zeros(n), labels) == pytest.approx((h + (p - 1) * (n - h) / (n - 1)) / n)


def test_average_precision_matches_sklearn_without_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(30):
        scores = rng.permutation(8).astype(float) + rng.random(8) * 0.1
        labels = rng.integers(0, 2, size=8)
        if labels.all() or not labels.any():
            continue
        assert average_precision_row(scores, labels) == pytest.approx(average_precision_score(labels, scores))


def test_expected_ranking_metrics_match_brute_force_over_tie_orders() -> None:
    rng = np.random.default_rng(7)
    checked = 0
    for _ in range(60):
        n = int(rng.integers(2, 7))
        scores = rng.integers(0, 3, size=n).astype(float)  # heavy ties
        labels = rng.integers(0, 2, size=n)
        if labels.all() or not labels.any():
            continue
        assert average_precision_row(scores, labels) == pytest.approx(_brute_ap(scores, labels))
        assert precision_at_k_row(scores, labels) == pytest.approx(_brute_p_at_k(scores, labels))
        assert pointing_game_row(scores, labels) == pytest.approx(_brute_pointing(scores, labels))
        checked += 1
    assert checked > 40


# ---------------------------------------------------------------- precision at k, pointing game


def test_precision_at_k_by_hand() -> None:
    # k = 2; top two are (+, -) -> 1/2
    assert precision_at_k_row(np.array([3.0, 2.0, 1.0, 0.0]), np.array([1, 0, 1, 0])) == 0.5
    # k = 2; one positive on top, then a tie of 3 (1 positive) fills 1 place: (1 + 1/3) / 2
    assert precision_at_k_row(np.array([5.0, 1.0, 1.0, 1.0]), np.array([1, 1, 0, 0])) == pytest.approx(2 / 3)
    # a single positive: k = 1, the top item alone
    assert precision_at_k_row(np.array([0.1, 0.9, 0.2]), np.array([0, 1, 0])) == 1.0
    assert precision_at_k_row(np.array([0.1, 0.9, 0.2]), np.array([1, 0, 0])) == 0.0


def test_pointing_game_tied_top_set() -> None:
    assert pointing_game_row(np.array([0.1, 0.9, 0.2]), np.array([0, 1, 0])) == 1.0
    assert pointing_game_row(np.array([0.1, 0.9, 0.2]), np.array([1, 0, 1])) == 0.0
    # maxima tied at positions 0, 1, 3; two of them in G
    assert pointing_game_row(np.array([1.0, 1.0, 0.5, 1.0]), np.array([1, 0, 1, 1])) == pytest.approx(2 / 3)


# ---------------------------------------------------------------- relevance mass


def test_relevance_mass_is_signed_magnitude_share() -> None:
    # |R| = 3, 1, 2, 2: inside G (positions 0 and 2) 5 of 8
    assert relevance_mass_row(np.array([-3.0, 1.0, 2.0, -2.0]), np.array([1, 0, 1, 0])) == pytest.approx(5 / 8)
    assert relevance_mass_row(np.array([0.0, 4.0, 0.0]), np.array([0, 1, 0])) == 1.0
    assert relevance_mass_row(np.array([0.0, 4.0, 0.0]), np.array([1, 0, 1])) == 0.0


def test_relevance_mass_of_a_zero_row_is_undefined() -> None:
    assert np.isnan(relevance_mass_row(np.zeros(3), np.array([1, 0, 0])))
    # every |R| within the tie tolerance of 0: nothing to share
    assert np.isnan(relevance_mass_row(np.array([1e-9, -1e-9, 0.0]), np.array([1, 0, 0]), atol=1e-8))
    assert relevance_mass_row(np.array([1e-9, -1e-9, 0.0]), np.array([1, 0, 0])) == 0.5


# ---------------------------------------------------------------- rank correlations against Gg


def test_spearman_and_kendall_by_hand() -> None:
    gg = np.array([0.0, 0.5, 1.0])
    assert spearman_row(np.array([1.0, 2.0, 3.0]), gg) == 1.0
    assert kendall_tau_b_row(np.array([1.0, 2.0, 3.0]), gg) == 1.0
    assert spearman_row(np.array([3.0, 2.0, 1.0]), gg) == -1.0
    assert kendall_tau_b_row(np.array([3.0, 2.0, 1.0]), gg) == -1.0
    # R = (1, 1, 2) vs Gg = (0, .5, 1): pairs (0,1) tied in R; (0,2), (1,2) concordant.
    # tau-b = 2 / sqrt(2 * 3); ranks (1.5, 1.5, 3) vs (1, 2, 3): rho = 1.5 / sqrt(1.5 * 2)
    assert kendall_tau_b_row(np.array([1.0, 1.0, 2.0]), gg) == pytest.approx(2 / math.sqrt(6))
    assert spearman_row(np.array([1.0, 1.0, 2.0]), gg) == pytest.approx(1.5 / math.sqrt(3))


def test_rank_correlations_undefined_on_constant_rows() -> None:
    for fn in (spearman_row, kendall_tau_b_row):
        assert np.isnan(fn(np.ones(3), np.array([0.0, 0.5, 1.0])))  # R constant
        assert np.isnan(fn(np.array([1.0, 2.0, 3.0]), np.full(3, 0.5)))  # Gg constant
        assert np.isnan(fn(np.array([1.0]), np.array([1.0])))  # one position
        # Gg all nonzero (G all 1) but graded: still defined
        assert fn(np.array([1.0, 2.0]), np.array([0.5, 1.0])) == 1.0


def test_rank_correlations_match_scipy() -> None:
    rng = np.random.default_rng(11)
    checked = 0
    for _ in range(40):
        n = int(rng.integers(2, 8))
        scores = rng.integers(0, 3, size=n).astype(float)
        graded = rng.integers(0, 4, size=n) / 3.0
        if len(set(scores)) == 1 or len(set(graded)) == 1:
            assert np.isnan(spearman_row(scores, graded)) and np.isnan(kendall_tau_b_row(scores, graded))
            continue
        assert spearman_row(scores, graded) == pytest.approx(spearmanr(scores, graded).statistic)
        assert kendall_tau_b_row(scores, graded) == pytest.approx(kendalltau(scores, graded, variant="b").statistic)
        checked += 1
    assert checked > 25


def test_every_metric_against_g_is_undefined_when_g_is_constant() -> None:
    scores = np.array([0.3, 0.2, 0.1])
    for fn in G_METRICS:
        assert np.isnan(fn(scores, np.zeros(3, dtype=int))), fn.__name__
        assert np.isnan(fn(scores, np.ones(3, dtype=int))), fn.__name__


# ---------------------------------------------------------------- the one tie rule (scorer level)


def test_snap_ties_by_hand() -> None:
    valid_in = np.array([[False, True, True, True, False]])  # BOS, three tokens, PAD
    r = np.zeros((1, 5, 5))
    r[0, 1, 1:4] = [0.2 + 1e-7, 0.5, 0.2 - 1e-7]  # 2e-7 apart < 1e-5 * 1.0: tied
    r[0, 2, 1:4] = [1.0, 1.0 + 4e-6, 1.0 + 8e-6]  # a chain of neighbours closer than tol: one run
    r[0, 3, 1:4] = [-1e-17, 0.0, 1e-17]  # float64 noise around 0: one tie
    r[0, 1, 0] = r[0, 1, 4] = 1e3  # BOS / PAD: no part in the scale or the runs
    snapped, atol = snap_ties(r, valid_in, 1e-5)
    assert atol == pytest.approx(1e-5 * (1.0 + 8e-6))  # the largest |R| at real positions, not 1e3
    np.testing.assert_array_equal(snapped[0, 1, 1:4], [0.2, 0.5, 0.2])
    assert len(set(snapped[0, 2, 1:4])) == 1
    np.testing.assert_array_equal(snapped[0, 3], 0.0)
    np.testing.assert_allclose(snapped[0, 1:4, 1:4].sum(-1), r[0, 1:4, 1:4].sum(-1), atol=1e-15)  # means keep the sum
    assert snapped[0, 1, 0] == snapped[0, 1, 4] == 0.0
    raw, atol0 = snap_ties(r, valid_in, 0.0)
    assert atol0 == 0.0
    np.testing.assert_array_equal(raw[0, 1:4, 1:4], r[0, 1:4, 1:4])


def test_snap_ties_scales_by_each_input_not_by_other_inputs() -> None:
    # Input 1 is 1e-4 the size of input 0; its differences of 1e-3 of its own scale are signal.
    # With one explanation-wide scale (1e-6 * 1.0 = 1e-6) they would be merged into a tie.
    valid_in = np.array([[False, True, True], [False, True, True]])
    r = np.zeros((2, 3, 3))
    r[0, 1, 1:] = [1.0, 0.0]
    r[1, 1, 1:] = [1e-4, 1e-4 + 1e-7]
    snapped, atol = snap_ties(r, valid_in, 1e-6)
    assert atol.tolist() == pytest.approx([1e-6, max(1e-6 * (1e-4 + 1e-7), 1e-12)])
    assert snapped[1, 1, 1] < snapped[1, 1, 2]


def test_snap_ties_uses_the_input_scale_not_the_row_scale() -> None:
    # Row 2's values differ by 1e-5 of its own scale (a ranking for a per-row tolerance of
    # 1e-6), but its scale is 1e-3 of its input's: 1e-8 < 1e-6 * 1.0, one tie.
    valid_in = np.array([[False, True, True]])
    r = np.zeros((1, 3, 3))
    r[0, 1, 1:] = [1.0, 0.0]
    r[0, 2, 1:] = [1e-3, 1e-3 + 1e-8]
    snapped, _ = snap_ties(r, valid_in, 1e-6)
    assert snapped[0, 2, 1] == snapped[0, 2, 2]
    assert snapped[0, 1, 1] == 1.0 and snapped[0, 1, 2] == 0.0


def test_an_explanation_of_pure_noise_is_one_tie() -> None:
    # Vanishing gradients through a rotated basis come out ~1e-17 instead of 0: relative to
    # their own maximum they would rank; below ZERO_ATOL (1e-12) they are one tie.
    valid_in = np.array([[False, True, True, True]])
    r = np.zeros((1, 4, 4))
    r[0, 1, 1:] = [3e-17, -1e-17, 2e-18]
    snapped, atol = snap_ties(r, valid_in, 1e-6)
    assert atol.tolist() == [1e-12]
    assert len(set(snapped[0, 1, 1:].tolist())) == 1
    assert auroc_row(snapped[0, 1, 1:], np.array([1, 0, 0])) == 0.5


def test_snap_ties_chains_across_any_grid() -> None:
    # Rounding to a 1e-6 grid would split 0.5000004 and 0.5000006 (to 0.500000 and
    # 0.500001); the neighbour rule ties them (2e-7 < 1e-6 * 1.0) wherever they fall.
    valid_in = np.array([[False, True, True, True]])
    r = np.zeros((1, 4, 4))
    r[0, 1, 1:] = [0.5000004, 0.5000006, 1.0]
    snapped, _ = snap_ties(r, valid_in, 1e-6)
    assert snapped[0, 1, 1] == snapped[0, 1, 2] == pytest.approx(0.5000005)
    assert snapped[0, 1, 3] == 1.0


def _truth(g: np.ndarray, valid_in: np.ndarray, valid_out: np.ndarray, gg: np.ndarray | None = None) -> GroundTruth:
    n, t = valid_in.shape
    return GroundTruth(
        relevance=g.astype(np.int8), graded=(g if gg is None else gg).astype(float), valid_in=valid_in,
        valid_out=valid_out, patterns={}, pattern_rows=np.zeros((n, t), bool), components=tuple[Component, ...](),
        edges=(), program_source="", program_graph=[], n_undefined_outputs=0,
    )  # fmt: skip


class _Case:
    """What token metrics read of a compiled case: its ground truth."""

    def __init__(self, truth: GroundTruth) -> None:
        self.truth = truth


def test_token_rows_count_undefined_rows_and_ignore_bos_and_pad() -> None:
    # one input of length 2 in a 4-position frame (BOS + 2 tokens + PAD)
    valid_in = np.array([[False, True, True, False]])
    valid_out = np.array([[False, True, True, False]])
    g = np.zeros((1, 4, 4))
    g[0, 1, 1] = 1  # row 1: position 1 relevant, position 2 not -> defined
    g[0, 2, 1:3] = 1  # row 2: all relevant -> undefined
    r = np.zeros((1, 4, 4))
    r[0, 1] = [100.0, 1.0, 0.0, 100.0]  # huge BOS/PAD scores must not matter
    truth = _truth(g, valid_in, valid_out)
    rows = token_rows(scored_relevance(Explanation(token_relevance=r), truth), truth, lambda r, g, _gg: auroc_row(r, g))
    assert rows.values[0] == 1.0 and np.isnan(rows.values[1])
    s = aggregate(rows)
    assert (s.value, s.n, s.n_undefined) == (1.0, 1, 1)


def test_non_finite_rows_are_undefined() -> None:
    valid_in = np.array([[False, True, True]])
    g = np.zeros((1, 3, 3))
    g[0, 1:, 1] = 1
    r = np.zeros((1, 3, 3))
    r[0, 1, 1:] = [np.nan, 1.0]
    r[0, 2, 1:] = [2.0, 1.0]
    truth = _truth(g, valid_in, valid_in)
    rows = token_rows(ScoredRelevance(*snap_ties(r, valid_in, 1e-6)), truth, lambda r, g, _gg: auroc_row(r, g))
    assert np.isnan(rows.values[0]) and rows.values[1] == 1.0


def test_declared_tolerance_decides_what_is_a_tie() -> None:
    # Two tokens 1e-7 apart (relative to the max |R| = 1): a tie at 1e-6, a ranking at 1e-9.
    valid_in = np.array([[False, True, True, True]])
    g = np.zeros((1, 4, 4))
    g[0, 1, 1] = 1
    r = np.zeros((1, 4, 4))
    r[0, 1, 1:] = [0.3, 0.3 + 1e-7, 1.0]  # the positive sits just below a negative, far below another
    truth = _truth(g, valid_in, np.array([[False, True, False, False]]))

    def score(tol: float) -> float:
        return float(get_metric("auroc").fn(Explanation(token_relevance=r, tie_tolerance=tol), _Case(truth)).values[0])

    assert score(1e-6) == 0.25  # beats nothing, ties one of two negatives
    assert score(1e-9) == 0.0


def test_every_token_metric_on_a_hand_worked_explanation() -> None:
    # one input, 3 tokens; two defined rows.
    valid_in = np.array([[False, True, True, True]])
    valid_out = np.array([[False, True, True, False]])
    g = np.zeros((1, 4, 4))
    gg = np.zeros((1, 4, 4))
    g[0, 1, 1:] = [1, 0, 1]
    gg[0, 1, 1:] = [1.0, 0.0, 0.5]
    g[0, 2, 1:] = [0, 1, 0]  # a single positive
    gg[0, 2, 1:] = [0.0, 0.5, 0.0]
    r = np.zeros((1, 4, 4))
    r[0, 1, 1:] = [2.0, -1.0, 2.0]  # both positives tied on top
    r[0, 2, 1:] = [1.0, 1.0, 0.0]  # the positive tied with a negative on top
    truth = _truth(g, valid_in, valid_out, gg)
    e = Explanation(token_relevance=r)
    got = {m: get_metric(m).fn(e, _Case(truth)).values.tolist() for m in TOKEN_METRICS}
    # row 1: perfect separation; |R| inside G 4 of 5; R ranks (2.5, 1, 2.5) vs Gg ranks (3, 1, 2):
    #   centred (.5, -1, .5) and (1, -1, 0): rho = 1.5 / sqrt(1.5 * 2), tau-b: pairs (0,1) +, (0,2) R tie, (1,2) + -> 2 / sqrt(2 * 3)
    # row 2: AUROC (1/2 + 1) / 2; AP E[1/rank] over {1, 2} = 3/4; P@1 = pointing = 1/2; mass 1/2;
    #   Gg (0, .5, 0) vs R (1, 1, 0): rho = 0.75 / sqrt(1.5 * 1.5) = 1/2, tau-b: pairs (0,1) Gg -, R tie;
    #   (0,2) R +, Gg tie; (1,2) + + -> 1 / sqrt(2 * 2)
    expected = {
        "auroc": [1.0, 0.75], "average_precision": [1.0, 0.75], "precision_at_k": [1.0, 0.5],
        "relevance_mass": [0.8, 0.5], "pointing_game": [1.0, 0.5],
        "spearman": [1.5 / math.sqrt(3), 0.5], "kendall_tau_b": [2 / math.sqrt(6), 0.5],
    }  # fmt: skip
    for m in TOKEN_METRICS:
        np.testing.assert_allclose(got[m], expected[m], rtol=1e-12, err_msg=m)


def test_registry_metadata() -> None:
    ranges = {"spearman": (-1.0, 1.0), "kendall_tau_b": (-1.0, 1.0)}
    for name in TOKEN_METRICS:
        m = get_metric(name)
        assert (m.level, m.kind, m.higher_is_better) == ("token", "token_relevance", True)
        assert (m.low, m.high) == ranges.get(name, (0.0, 1.0))
        assert m.description


# ---------------------------------------------------------------- sanity anchors on real compiled cases

CASES = ("tracr_lib/reverse", "tracr_lib/hist", "tracr_lib/frac_prevs")


def _chance(g: np.ndarray) -> dict[str, float]:
    """What one big tie scores on a G row, by the closed forms (n positions, P positives)."""
    n, p = len(g), int(g.sum())
    h = sum(1 / k for k in range(1, n + 1))
    ap = (h + (p - 1) * (n - h) / (n - 1)) / n
    return {"auroc": 0.5, "average_precision": ap, "precision_at_k": p / n, "relevance_mass": p / n, "pointing_game": p / n}


@pytest.fixture(scope="module")
def anchors(compiled: Callable[[str], CompiledCase]) -> dict[tuple[str, str, str], np.ndarray]:
    """Row values of every token metric for oracle, uniform and random on each case."""
    out = {}
    for name in CASES:
        case = compiled(name)
        for method in ("oracle", "uniform", "random"):
            e = get_method(method)().explain(case, seed=0)
            for m in TOKEN_METRICS:
                out[(name, method, m)] = get_metric(m).fn(e, case).values
    return out


@pytest.mark.parametrize("name", CASES)
def test_oracle_scores_the_best_value_on_every_token_metric(
    name: str, anchors: dict[tuple[str, str, str], np.ndarray]
) -> None:
    for m in TOKEN_METRICS:
        values = anchors[(name, "oracle", m)]
        defined = values[~np.isnan(values)]
        assert len(defined) > 0, m
        assert (defined == get_metric(m).high).all(), m


@pytest.mark.parametrize("name", CASES)
def test_uniform_scores_the_chance_value_row_by_row(
    name: str, anchors: dict[tuple[str, str, str], np.ndarray], compiled: Callable[[str], CompiledCase]
) -> None:
    truth = compiled(name).truth
    g_rows = [truth.relevance[b, i, truth.valid_in[b]] for b, i in zip(*np.nonzero(truth.valid_out))]
    checked = 0
    for k, g in enumerate(g_rows):
        if g.all() or not g.any():
            for m in G_NAMES:
                assert np.isnan(anchors[(name, "uniform", m)][k]), m
            continue
        for m, chance in _chance(g).items():
            assert anchors[(name, "uniform", m)][k] == pytest.approx(chance, abs=1e-12), m
        checked += 1
    assert checked > 0
    assert (anchors[(name, "uniform", "auroc")][~np.isnan(anchors[(name, "uniform", "auroc")])] == 0.5).all()
    for m in ("spearman", "kendall_tau_b"):  # a constant R has no rank correlation: every row undefined
        assert np.isnan(anchors[(name, "uniform", m)]).all()


def test_random_sits_near_chance(anchors: dict[tuple[str, str, str], np.ndarray]) -> None:
    for m in TOKEN_METRICS:
        gaps = []
        for name in CASES:
            rand = np.nanmean(anchors[(name, "random", m)])
            chance = 0.0 if m in ("spearman", "kendall_tau_b") else np.nanmean(anchors[(name, "uniform", m)])
            gaps.append(rand - chance)
        assert abs(np.mean(gaps)) < 0.05, (m, gaps)
        assert max(abs(x) for x in gaps) < 0.12, (m, gaps)
