"""The attribution figure's two sides compute the same integrated gradients (no timing asserted)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.parametrize("name", ["tracr_lib/sort", "tracr_lib/frac_prevs"])
def test_naive_integrated_gradients_loop_equals_the_batched_adapter(name: str, compiled) -> None:
    from interpbench.perf_attribution import EQUAL_ATOL, adapter_relevance, naive_integrated_gradients
    from interpbench.perf_forward import subset

    case = subset(compiled(name), 6)
    fast, slow = adapter_relevance(case), naive_integrated_gradients(case)
    assert fast.shape == slow.shape == (6, case.n_positions, case.n_positions)
    assert EQUAL_ATOL == 1e-10
    assert np.abs(fast - slow).max() <= 1e-10
    assert np.abs(fast).max() > 1e-3  # not two arrays of zeros


def test_quick_figure_checks_equality_and_reports_both_sides() -> None:
    from interpbench.perf_attribution import ig_batched_vs_captum_loop

    value, details = ig_batched_vs_captum_loop(quick=True)
    (case,) = details["cases"].values()
    assert case["max_abs_diff"] <= 1e-10
    assert value == case["ratio"] > 0
    assert case["rows"] > 0 and case["n_inputs"] == 4
    assert details["settings"]["n_steps"] == 32 and details["settings"]["method"] == "gausslegendre"
