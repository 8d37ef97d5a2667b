"""The head_program_synthesis adapter on real compiled cases, scored against the true patterns."""

from __future__ import annotations

import re

import numpy as np
import pytest

from interpbench.errors import BadInputError
from interpbench.method import get_method
from interpbench.selector_dsl import SelectorProgram, pattern
from interpbench.synthesis import SearchResult

FAST_CASES = ["tracr_lib/reverse", "tracr_lib/hist", "tracr_lib/shift_by"]


def explain(cc: object, seed: int = 0, **settings: object) -> object:
    return get_method("head_program_synthesis")(**settings).explain(cc, seed=seed)


def held_out_iou(cc: object, head: str, predicted: np.ndarray) -> float:
    """Pooled soft IoU against the true pattern over the true pattern rows (BOS key included)."""
    rows = cc.truth.pattern_rows
    truth = cc.truth.patterns[head]
    return float(np.minimum(truth, predicted)[rows].sum() / np.maximum(truth, predicted)[rows].sum())


@pytest.mark.parametrize("case_name", FAST_CASES)
def test_true_heads_recovered(compiled, case_name: str) -> None:
    cc = compiled(case_name)
    e = explain(cc)
    t = cc.n_positions
    assert set(e.head_patterns) == set(cc.head_names()) == set(e.head_programs)
    for head in cc.head_names():
        assert e.head_patterns[head].shape == (len(cc.inputs), t, t)
        assert SelectorProgram.from_json(e.head_programs[head])
    for head in cc.truth.patterns:
        info = e.diagnostics["heads"][head]
        assert info["status"] == "found" and info["score"] >= 0.99, info
        assert held_out_iou(cc, head, e.head_patterns[head]) >= 0.99
    assert e.diagnostics["n_found"] == len(cc.head_names())  # padding heads attend uniformly: in the DSL


def test_source_runs_and_matches_patterns(compiled) -> None:
    cc = compiled("tracr_lib/reverse")
    e = explain(cc)
    blocks = re.split(r"\n(?=# )", e.source.strip())
    assert len(blocks) == len(cc.head_names())
    for head, block in zip(cc.head_names(), blocks):
        assert block.startswith(f"# {head}: found, training IoU")
        namespace: dict = {}
        exec(compile(block, head, "exec"), namespace)  # text written by our renderer
        for b in range(0, len(cc.inputs), 7):
            xs, n = cc.inputs[b], len(cc.inputs[b])
            got = np.array(namespace["attention"](list(xs)))
            np.testing.assert_array_equal(got, e.head_patterns[head][b, : n + 1, : n + 1])


def test_deterministic_under_the_seed(compiled) -> None:
    cc = compiled("tracr_lib/shift_by")
    a, b = explain(cc, seed=3), explain(cc, seed=3)
    assert a.head_programs == b.head_programs and a.source == b.source
    for head in a.head_patterns:
        np.testing.assert_array_equal(a.head_patterns[head], b.head_patterns[head])
    strip = lambda d: {k: v for k, v in d.items() if k != "seconds"}  # noqa: E731
    assert strip(a.diagnostics) == strip(b.diagnostics)


def test_never_reads_the_truth(compiled, blind) -> None:
    cc = compiled("tracr_lib/hist")
    e = explain(blind(cc))
    np.testing.assert_array_equal(e.head_patterns["L0H0"], explain(cc).head_patterns["L0H0"])


def test_tiny_budget_is_not_found_but_scored(compiled) -> None:
    cc = compiled("tracr_lib/reverse")
    (reverse_head,) = [h for h, c in ((h, cc.truth.component(h)) for h in cc.truth.patterns) if c.expr == "Aggregate"]
    e = explain(cc, budget=5)
    info = e.diagnostics["heads"][reverse_head]
    assert info["status"] == "not_found" and info["searched"] == 5 and info["budget"] == 5
    assert "not found within budget of 5 candidates" in info["note"]
    p = e.head_patterns[reverse_head]
    real = cc.input_mask()
    np.testing.assert_allclose(p.sum(-1)[real], 1.0)  # the best candidate's pattern, still scored
    assert held_out_iou(cc, reverse_head, p) < 0.99
    assert f"# {reverse_head}: not_found" in e.source
    assert e.diagnostics["n_not_found"] >= 1


def test_training_inputs_avoid_evaluation_inputs(compiled) -> None:
    from interpbench.methods.synthesis_heads import training_inputs

    cc = compiled("tracr_lib/reverse")
    train, overlap = training_inputs(cc, 64, seed=0)
    held = {tuple(x) for x in cc.inputs}
    assert len(train) == 64 == len({tuple(x) for x in train}) and overlap == 0
    assert not any(tuple(x) in held for x in train)
    assert all(cc.case.domain.contains(x, cc.case.vocab, cc.case.max_seq_len) for x in train)
    assert training_inputs(cc, 64, seed=1)[0] != train

    small = compiled("tracr_lib/shuffle_dyck")  # 20 even-length bracket strings in all
    train, overlap = training_inputs(small, 64, seed=0)
    distinct = {tuple(x) for x in train}
    assert len(distinct) == len(train) < 64
    assert overlap == sum(x in {tuple(y) for y in small.inputs} for x in distinct) > 0
    e = explain(small)
    assert e.diagnostics["train_eval_overlap"] == overlap and e.diagnostics["n_train"] == len(train)


def test_settings_are_recorded_and_checked() -> None:
    cls = get_method("head_program_synthesis")
    assert cls.family == "synthesis" and cls.kinds == ("head_patterns",)
    assert cls().params() == {"backend": "enumerative", "n_train": 64, "budget": 20000, "found_iou": 0.99}
    assert cls(budget=7).params()["budget"] == 7
    with pytest.raises(BadInputError, match="no setting"):
        cls(threshold=0.5)


@pytest.mark.parametrize(
    ("settings", "message"),
    [({"n_train": 0}, "n_train"), ({"budget": -1}, "budget"), ({"found_iou": 1.5}, "found_iou"),
     ({"backend": "enumerativ"}, "did you mean")],
)  # fmt: skip
def test_bad_settings_fail_cleanly(compiled, settings: dict, message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        explain(compiled("tracr_lib/hist"), **settings)


def test_found_iou_applies_to_any_backend() -> None:
    from interpbench.methods.synthesis_heads import _reclassify

    spec = SelectorProgram("index", "index", "==").to_json()
    high = SearchResult("found", spec, 0.995, 10, 100, "x")
    assert _reclassify(high, 0.99).status == "found"
    assert _reclassify(high, 0.999).status == "partial"
    assert _reclassify(SearchResult("partial", spec, 0.95, 100, 100, "x"), 0.9).status == "found"
    empty = SearchResult("not_found", None, float("nan"), 0, 0, "x")
    assert _reclassify(empty, 0.5) == empty


@pytest.mark.slow
def test_every_case(compiled) -> None:
    from interpbench.case import list_cases

    for case in list_cases():
        cc = compiled(case.full_name)
        e = explain(cc)
        t = cc.n_positions
        real = cc.input_mask()
        for head in cc.head_names():
            info = e.diagnostics["heads"][head]
            assert info["status"] in ("found", "partial"), (case.full_name, head, info)
            p = e.head_patterns[head]
            assert p.shape == (len(cc.inputs), t, t)
            np.testing.assert_allclose(p.sum(-1)[real], 1.0)
            if head not in cc.truth.patterns:
                assert info["status"] == "found", (case.full_name, head)  # padding heads are uniform
            elif info["status"] == "found":
                assert held_out_iou(cc, head, p) >= 0.99, (case.full_name, head)
            else:
                assert 0.0 < info["score"] < 0.99
            program = SelectorProgram.from_json(e.head_programs[head])
            np.testing.assert_array_equal(pattern(program, cc.inputs, t), p)
