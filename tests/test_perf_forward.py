"""Forward figures: each baseline (tracr's `apply`, the jitted haiku model) computes our runtime's numbers, and the figures run."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def sort_case():
    from interpbench.perf_forward import case_and_stages, subset

    full, stages = case_and_stages("tracr_lib/sort")
    return subset(full, 8), stages


def test_tracr_apply_per_example_equals_our_runtime(sort_case) -> None:
    from interpbench.perf_forward import max_diff_apply, runtime_logits, tracr_apply_logits, tracr_apply_one

    compiled, stages = sort_case
    ours = runtime_logits(compiled)
    theirs = tracr_apply_logits(stages, compiled)
    assert [t.shape for t in theirs] == [(n + 1, ours.shape[2]) for n in compiled.lengths.tolist()]
    assert max_diff_apply(compiled, theirs, ours) <= 1e-6
    decoded = compiled.decode(ours)
    values = compiled.weights.output_values
    for b, xs in enumerate(compiled.inputs):
        applied = tracr_apply_one(stages, xs).decoded[1:]
        assert applied == [values[int(c)] for c in decoded[b, 1 : len(xs) + 1]]
        assert applied == sorted(xs)  # the program itself: sort
    nudged = ours.copy()
    nudged[0, 1, 0] += 1e-3  # the comparison sees a change at a real position
    assert max_diff_apply(compiled, theirs, nudged) == pytest.approx(1e-3)


def test_jax_jit_batched_forward_equals_our_runtime(sort_case) -> None:
    from interpbench.perf_forward import jax_jit_forward, max_diff_padded, runtime_logits

    compiled, stages = sort_case
    assert (compiled.lengths < compiled.case.max_seq_len).any()  # the batch really is padded
    ours = runtime_logits(compiled)
    theirs = jax_jit_forward(stages, compiled.weights.pad_id)(compiled.tokens)
    assert theirs.shape == ours.shape
    assert max_diff_padded(compiled, theirs, ours) <= 1e-6
    assert (theirs.argmax(-1)[compiled.output_mask()] == compiled.outputs[compiled.output_mask()]).all()


def test_runtime_logits_times_the_fast_path_and_hooked_logits_the_hooked_one(sort_case) -> None:
    from interpbench.perf_forward import hooked_logits, runtime_logits

    compiled, _ = sort_case
    model = compiled.model
    seen = []
    handle = model.blocks[0].hook_resid_pre.register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    try:
        hooked_logits(compiled)  # our own no-op hook is attached next to this one
        assert len(seen) == 1
    finally:
        handle.remove()
    assert not model.hooked()
    fast = runtime_logits(compiled)
    assert len(seen) == 1  # no hook point ran
    np.testing.assert_allclose(fast, hooked_logits(compiled), rtol=0, atol=1e-12)
    assert not model.hooked()


@pytest.mark.parametrize("name", ["forward_vs_tracr_apply", "forward_vs_jax_jit"])
def test_quick_forward_figures_report_a_ratio_per_case(name: str) -> None:
    from interpbench.perf import load_figures
    from interpbench.perf_forward import QUICK_CASES

    spec = {s.name: s for s in load_figures()}[name]
    value, details = spec.measure(True)
    assert set(details["cases"]) == set(QUICK_CASES)
    ratios = [c["ratio"] for c in details["cases"].values()]
    assert value == min(ratios) and value > 0
    for c in details["cases"].values():
        assert c["max_abs_diff"] <= 1e-6
        assert c["n_inputs"] == 4
