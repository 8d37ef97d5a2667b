"""Head metrics: hand-worked rows, scipy cross-check, and anchors on real compiled cases."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon

from interpbench.explanation import Explanation
from interpbench.head_metrics import (
    argmax_agreement_row,
    argmax_agreement_rows,
    jsd_row,
    jsd_rows,
    soft_iou_row,
    soft_iou_rows,
)
from interpbench.metrics import aggregate, get_metric, list_metrics

HEAD_METRICS = ("soft_iou", "argmax_agreement", "jsd", "replacement_accuracy")
CASES = ("tracr_lib/reverse", "tracr_lib/hist", "tracr_lib/frac_prevs", "algorithmic/prev_token")


# ---- row functions on hand-worked rows -------------------------------------------------


def test_soft_iou_by_hand() -> None:
    p = np.array([0.0, 0.5, 0.5, 0.0])
    assert soft_iou_row(p, p) == 1.0
    assert soft_iou_row(p, np.array([0.0, 1.0, 0.0, 0.0])) == pytest.approx(0.5 / 1.5)  # max: 1 + 0.5
    assert soft_iou_row(p, np.array([1.0, 0.0, 0.0, 0.0])) == 0.0
    assert soft_iou_row(p, np.zeros(4)) == 0.0  # an all-zero prediction is defined and scores 0
    assert np.isnan(soft_iou_row(np.zeros(4), np.zeros(4)))


def test_soft_iou_counts_bos_mass() -> None:
    # The true row falls back to BOS (nothing selected); the prediction splits BOS and token 1.
    p, a = np.array([1.0, 0.0, 0.0]), np.array([0.5, 0.5, 0.0])
    assert soft_iou_row(p, a) == pytest.approx(0.5 / 1.5)
    assert jsd_row(p, a) == pytest.approx(jensenshannon(p, a, base=2) ** 2)
    assert argmax_agreement_row(p, a) == 0.5


def test_argmax_agreement_ties() -> None:
    p = np.array([0.0, 0.5, 0.5, 0.0])  # true argmax {1, 2}
    assert argmax_agreement_row(p, np.array([0.0, 0.4, 0.4, 0.2])) == 1.0
    assert argmax_agreement_row(p, np.array([0.3, 0.3, 0.2, 0.2])) == 0.5  # predicted {0, 1}
    assert argmax_agreement_row(p, np.array([0.0, 0.5, 0.5 - 1e-9, 0.0])) == 1.0  # tied within 1e-6
    assert argmax_agreement_row(p, np.array([0.0, 0.5, 0.4, 0.1])) == 1.0  # {1} inside {1, 2}
    assert argmax_agreement_row(p, np.array([0.6, 0.2, 0.2, 0.0])) == 0.0
    assert argmax_agreement_row(p, np.zeros(4)) == 0.5  # every key tied: chance level 2/4


def test_jsd_extremes_scale_and_zero_rows() -> None:
    p = np.array([0.0, 0.5, 0.5, 0.0])
    assert jsd_row(p, p) == 0.0
    assert jsd_row(p, 3.0 * p) == 0.0  # rows are normalised
    assert jsd_row(p, np.array([0.5, 0.0, 0.0, 0.5])) == pytest.approx(1.0)  # disjoint supports
    assert np.isnan(jsd_row(p, np.zeros(4)))


def test_jsd_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    p = rng.random((30, 6)) * (rng.random((30, 6)) < 0.6)  # many zeros
    a = rng.random((30, 6)) * (rng.random((30, 6)) < 0.6)
    p[:, 0] += 0.1  # keep every true row non-zero
    a[:, 1] += 0.1
    expected = np.array([jensenshannon(x, y, base=2) ** 2 for x, y in zip(p, a)])
    np.testing.assert_allclose(jsd_rows(p, a), expected, atol=1e-12)


def test_keys_mask_ignores_pad_columns() -> None:
    p = np.array([[0.0, 1.0, 0.0, 0.0]])
    a = np.array([[0.0, 1.0, 0.0, 7.0]])  # mass on a PAD column
    keys = np.array([True, True, True, False])
    assert soft_iou_rows(p, a, keys)[0] == 1.0
    assert argmax_agreement_rows(p, a, keys)[0] == 1.0
    assert jsd_rows(p, a, keys)[0] == 0.0
    assert soft_iou_rows(p, a)[0] == pytest.approx(1.0 / 8.0)  # without the mask it counts


def test_invalid_predicted_rows_are_undefined() -> None:
    p = np.array([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    a = np.array([[0.0, 1.0], [np.nan, 1.0], [-0.5, 1.5]])
    for fn in (soft_iou_rows, argmax_agreement_rows, jsd_rows):
        out = fn(p, a)
        assert out[0] in (0.0, 1.0) and np.isnan(out[1]) and np.isnan(out[2])


def test_row_functions_do_not_mutate_inputs() -> None:
    p, a = np.array([[0.0, 0.5, 0.5]]), np.array([[0.2, 0.2, np.nan]])
    keys = np.array([True, True, False])
    for fn in (soft_iou_rows, argmax_agreement_rows, jsd_rows):
        fn(p, a, keys)
    assert p.tolist() == [[0.0, 0.5, 0.5]] and a[0, :2].tolist() == [0.2, 0.2] and np.isnan(a[0, 2])
    assert keys.tolist() == [True, True, False]


def test_metrics_registered_with_descriptions() -> None:
    by_name = {m.name: m for m in list_metrics()}
    for name in HEAD_METRICS:
        m = by_name[name]
        assert m.kind == "head_patterns" and m.level == "head" and m.description
    assert not by_name["jsd"].higher_is_better and by_name["soft_iou"].higher_is_better


# ---- anchors on real compiled cases -----------------------------------------------------


def _scores(explanation: Explanation, case: object) -> dict[str, object]:
    return {name: aggregate(get_metric(name).fn(explanation, case)) for name in HEAD_METRICS}


def _own_attention(case: object) -> dict[str, np.ndarray]:
    """The model's own attention on the evaluation inputs (what attention methods report)."""
    n_layers, n_heads = case.weights.n_layers, case.weights.n_heads
    names = [f"blocks.{l}.attn.hook_pattern" for l in range(n_layers)]
    _, cache = case.model.run_with_cache(torch.from_numpy(case.tokens), names)
    return {f"L{l}H{h}": cache[names[l]][:, h].numpy() for l in range(n_layers) for h in range(n_heads)}


@pytest.mark.parametrize("name", CASES)
def test_true_patterns_score_perfectly(compiled: Callable[[str], object], name: str) -> None:
    case = compiled(name)
    s = _scores(Explanation(head_patterns=dict(case.truth.patterns)), case)
    assert s["soft_iou"].value == 1.0 and s["argmax_agreement"].value == 1.0
    assert s["jsd"].value == 0.0 and s["replacement_accuracy"].value == 1.0
    n_rows = int(case.truth.pattern_rows.sum()) * len(case.truth.patterns)
    assert s["soft_iou"].n == n_rows and s["soft_iou"].n_undefined == 0
    assert s["replacement_accuracy"].n == int(case.output_mask().sum()) * len(case.truth.patterns)


@pytest.mark.parametrize("name", CASES)
def test_model_attention_scores_near_perfectly(compiled: Callable[[str], object], name: str) -> None:
    case = compiled(name)
    s = _scores(Explanation(head_patterns=_own_attention(case)), case)  # extra heads are ignored
    assert s["soft_iou"].value >= 0.99 and s["argmax_agreement"].value == 1.0
    assert s["jsd"].value <= 1e-3 and s["replacement_accuracy"].value == 1.0


def _reverse_head(case: object) -> str:
    (head,) = [h for h in case.truth.patterns if case.truth.component(h).role == "aggregate"]
    return head


def test_uniform_attention_breaks_reverse(compiled: Callable[[str], object]) -> None:
    case = compiled("tracr_lib/reverse")
    head = _reverse_head(case)
    (length_head,) = [h for h in case.truth.patterns if h != head]
    uniform = np.zeros_like(case.truth.patterns[head])
    for b, n in enumerate(case.lengths):
        uniform[b, 1 : n + 1, : n + 1] = 1.0 / (n + 1)  # BOS and every token
    s = _scores(Explanation(head_patterns={head: uniform}), case)
    assert s["replacement_accuracy"].value < 0.7 and s["soft_iou"].value < 0.3
    # The length head is a SelectorWidth of an all-true selector: BOS plus every token,
    # uniformly, which is exactly this pattern.
    s = _scores(Explanation(head_patterns={length_head: uniform}), case)
    assert s["replacement_accuracy"].value == 1.0 and s["soft_iou"].value == pytest.approx(1.0)


def test_wrong_selector_scores_as_program_semantics_predict(compiled: Callable[[str], object]) -> None:
    case = compiled("tracr_lib/reverse")
    head = _reverse_head(case)
    identity = np.zeros_like(case.truth.patterns[head])
    for b, n in enumerate(case.lengths):
        identity[b, np.arange(1, n + 1), np.arange(1, n + 1)] = 1.0  # attend to self, not the mirror
    s = _scores(Explanation(head_patterns={head: identity}), case)
    # Identity and reverse agree only at the middle of odd-length inputs; reading itself,
    # position i outputs xs[i], which is right only where xs[i] == xs[n - 1 - i].
    middle = [i == n - 1 - i for n in case.lengths for i in range(n)]
    same = [xs[i] == xs[len(xs) - 1 - i] for xs in case.inputs for i in range(len(xs))]
    assert s["soft_iou"].value == pytest.approx(np.mean(middle))
    assert s["argmax_agreement"].value == pytest.approx(np.mean(middle))
    assert s["jsd"].value == pytest.approx(1.0 - np.mean(middle))
    assert s["replacement_accuracy"].value == pytest.approx(np.mean(same))
    assert s["soft_iou"].value < 0.3 and s["replacement_accuracy"].value < 0.6
    # The other truth head (length) is missing: its rows are undefined, counted, not dropped.
    n_missing = int(case.truth.pattern_rows.sum()) * (len(case.truth.patterns) - 1)
    assert n_missing > 0 and s["soft_iou"].n_undefined == n_missing
    assert s["replacement_accuracy"].n_undefined == int(case.output_mask().sum()) * (len(case.truth.patterns) - 1)


def test_bad_shapes_and_missing_patterns_raise(compiled: Callable[[str], object]) -> None:
    case = compiled("tracr_lib/hist")
    (head,) = case.truth.patterns
    with pytest.raises(ValueError, match="shape"):
        get_metric("soft_iou").fn(Explanation(head_patterns={head: np.zeros((2, 3, 3))}), case)
    with pytest.raises(ValueError, match="head_patterns"):
        get_metric("replacement_accuracy").fn(Explanation(program={}), case)


def test_one_forward_for_all_heads_equals_one_forward_per_head(compiled) -> None:  # noqa: ANN001
    from interpbench.head_metrics import replaced_outputs_correct

    case = compiled("tracr_lib/reverse")
    heads = list(case.truth.patterns)
    assert len({case.truth.component(h).layer for h in heads}) >= 2  # heads in different layers
    n, t = case.tokens.shape
    keys = (np.arange(t)[None, :] <= case.lengths[:, None]).astype(np.float64)
    uniform = np.broadcast_to(keys[:, None, :] / keys.sum(1)[:, None, None], (n, t, t)).copy()
    wrong = {heads[0]: case.truth.patterns[heads[0]], heads[1]: uniform}  # the reversing head wrong, the other right
    together = replaced_outputs_correct(case, wrong)
    for head, pattern in wrong.items():
        alone = replaced_outputs_correct(case, {head: pattern})[head]
        np.testing.assert_array_equal(together[head], alone)
    assert np.all(together[heads[0]] == 1.0) and together[heads[1]].mean() < 1.0
    assert replaced_outputs_correct(case, {}) == {}


def test_tied_top_classes_share_the_credit() -> None:
    from interpbench.head_metrics import tied_argmax_share

    logits = np.array([[1.0, 3.0, 3.0], [1.0, 3.0, 2.0], [2.0, 2.0, 2.0 + 1e-12], [5.0, 1.0, 0.0]])
    want = np.array([1, 1, 0, 1])
    np.testing.assert_array_equal(tied_argmax_share(logits, want), [0.5, 1.0, 1 / 3, 0.0])
    a = np.array([[0.0, 1.0, 1.0 + 1e-6]])  # a real difference is not a tie
    assert tied_argmax_share(a, np.array([2]))[0] == 1.0 and tied_argmax_share(a, np.array([1]))[0] == 0.0
