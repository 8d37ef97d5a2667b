"""The ground-truth figure: its naive loop of plain `rasp.evaluate` calls gives exactly our ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from interpbench.case import list_cases
from interpbench.ground_truth import token_relevance
from interpbench.perf_truth import fast_ground_truth, ground_truth_vs_naive_rasp, max_difference, naive_ground_truth
from interpbench.program import relabel


@pytest.mark.parametrize("name", ["tracr_lib/sort_unique", "tracr_lib/shift_by", "algorithmic/prev_token",
                                  "tracr_lib/frac_prevs", "tracr_lib/reverse", "tracr_lib/sort"])  # fmt: skip
def test_naive_ground_truth_equals_ground_truth(name: str, compiled) -> None:
    cc = compiled(name)
    program, inputs = relabel(cc.case.program()), cc.inputs
    naive = naive_ground_truth(cc.case, program, inputs, cc.truth.components)
    fast = fast_ground_truth(cc.case, program, inputs, cc.truth).arrays()
    assert max_difference(naive, fast) == 0.0
    assert max_difference(naive, cc.truth.arrays()) == 0.0  # and the truth stored at compile time
    assert naive["relevance"].any() and any(k.startswith("pattern.") for k in naive)
    by_sequence = naive_ground_truth(cc.case, program, inputs, cc.truth.components, by_sequence=True)
    assert max_difference(naive, by_sequence) == 0.0
    broken = dict(naive, relevance=naive["relevance"] * 0)
    assert max_difference(broken, fast) == 1.0  # the comparison is not vacuous


def test_token_relevance_equals_the_naive_loop_on_every_registered_case() -> None:
    # No compile needed: token-level truth is RASP semantics alone. Fresh inputs (not
    # the evaluation ones) from each case's own domain, so the comparison is not tuned.
    rng = np.random.default_rng(7)
    checked = 0
    for case in list_cases():
        program = relabel(case.program())
        inputs = case.domain.sample(rng, 12, case.vocab, case.max_seq_len)
        naive = naive_ground_truth(case, program, inputs, ())
        del naive["pattern_rows"]
        g, gg, valid_in, valid_out = token_relevance(case, program, inputs)
        ours = {"relevance": g, "graded": gg, "valid_in": valid_in, "valid_out": valid_out}
        assert max_difference(naive, ours) == 0.0, case.full_name
        assert g.dtype == np.int8 and gg.dtype == np.float64
        checked += bool(g.any())
    assert checked >= 20  # most cases have some relevant token: not a comparison of zeros


def test_quick_figure_checks_equality_and_reports_a_ratio() -> None:
    value, details = ground_truth_vs_naive_rasp(True)
    (case,) = details["cases"].values()
    assert case["max_abs_diff"] == 0.0 and case["equals_cached_truth"] is True
    assert case["n_inputs"] == 4 and case["repeats"] == 1
    assert value == case["ratio"] > 0 and case["fast_seconds"] > 0 and case["slow_seconds"] > 0
    assert 0 < case["distinct_sequences"] <= case["n_inputs"] + case["n_substitutions"]
