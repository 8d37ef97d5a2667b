"""Program metrics on real tracr RASP programs: held-out inputs, accuracy, skeleton comparison."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest
from tracr.compiler import lib
from tracr.rasp import rasp

from interpbench.program import evaluate, relabel
from interpbench.program_metrics import N_PER_LENGTH, accuracy_rows, held_out_inputs, same_structure, skeleton

SHORT = [["a"], ["b", "a"], ["a", "b", "c"], ["c", "a", "a", "b"], ["d", "c", "b", "a", "a"], list("bbcdac")]


def _length(by: rasp.SOp = rasp.tokens) -> rasp.SOp:
    return rasp.SelectorWidth(rasp.Select(by, by, rasp.Comparison.TRUE))


def _reverse_by_sequence_map() -> rasp.SOp:
    """reverse with one SequenceMap n - i - 1 instead of tracr's two maps (length - i, then - 1)."""
    opp = rasp.SequenceMap(lambda n, i: n - i - 1, _length(), rasp.indices)
    return rasp.Aggregate(rasp.Select(rasp.indices, opp, rasp.Comparison.EQ), rasp.tokens)


def _setting(compiled: Callable[[str], object], name: str) -> tuple[rasp.SOp, list[list[object]]]:
    case = compiled(name)
    return relabel(case.case.program()), held_out_inputs(case.case, case)


# ---- held-out inputs -----------------------------------------------------------------------


def test_held_out_inputs_extend_evaluation_inputs_with_longer_ones(compiled: Callable[[str], object]) -> None:
    cc = compiled("tracr_lib/reverse")
    case = cc.case
    inputs = held_out_inputs(case, cc)
    assert inputs[: len(cc.inputs)] == cc.inputs
    longer = inputs[len(cc.inputs) :]
    n = case.max_seq_len
    assert sorted({len(xs) for xs in longer}) == [n + 1, n + 2]
    assert all(sum(len(xs) == m for xs in longer) == N_PER_LENGTH for m in (n + 1, n + 2))
    assert all(case.domain.contains(xs, case.vocab, n + 2) for xs in longer)
    assert held_out_inputs(case, cc) == inputs  # seeded
    capped = dataclasses.replace(case, domain=dataclasses.replace(case.domain, max_len=n))
    assert held_out_inputs(capped, cc) == cc.inputs  # a capped domain gets no longer inputs


def test_held_out_inputs_skip_lengths_the_domain_cannot_fill(compiled: Callable[[str], object]) -> None:
    hist = compiled("tracr_lib/hist")  # 3 letters, each at most twice: length 6 fits, 7 cannot
    lengths = {len(xs) for xs in held_out_inputs(hist.case, hist)[len(hist.inputs) :]}
    assert lengths == {6}
    dyck = compiled("tracr_lib/shuffle_dyck")  # even lengths only: 5 is skipped, 6 kept
    lengths = {len(xs) for xs in held_out_inputs(dyck.case, dyck)[len(dyck.inputs) :]}
    assert lengths == {6}


# ---- program_accuracy rows -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["tracr_lib/reverse", "tracr_lib/hist", "tracr_lib/frac_prevs", "tracr_lib/shift_by"])
def test_true_program_rebuilt_independently_is_accurate_and_exact(compiled: Callable[[str], object], name: str) -> None:
    truth, inputs = _setting(compiled, name)
    again = compiled(name).case.program()  # fresh objects, tracr's own construction
    rows = accuracy_rows(again, truth, inputs)
    assert np.nanmin(rows) == 1.0
    assert same_structure(again, truth, inputs)


def test_rows_where_truth_is_undefined_are_nan(compiled: Callable[[str], object]) -> None:
    truth, inputs = _setting(compiled, "tracr_lib/shift_by")
    rows = accuracy_rows(rasp.Map(lambda x: "z", rasp.tokens), truth, inputs)
    undefined = [all(v is None for v in evaluate(truth, xs)) for xs in inputs]
    assert any(undefined) and np.isnan(rows).tolist() == undefined  # lengths 1 and 2
    assert np.nansum(rows) == 0.0


def test_missing_raising_and_wrong_programs_score_zero_rows() -> None:
    truth = relabel(lib.make_reverse(rasp.tokens))
    assert accuracy_rows(None, truth, SHORT).tolist() == [0.0] * len(SHORT)
    boom = rasp.Map(lambda x: 1 // 0, rasp.tokens)
    assert accuracy_rows(boom, truth, SHORT).tolist() == [0.0] * len(SHORT)
    assert not same_structure(boom, truth, SHORT)
    identity = rasp.Map(lambda x: x, rasp.tokens)
    rows = accuracy_rows(identity, truth, SHORT)  # right only on palindromes: ["a"] here
    assert rows.tolist() == [float(xs == xs[::-1]) for xs in SHORT]


def test_lookup_table_fits_short_inputs_only(compiled: Callable[[str], object]) -> None:
    truth, inputs = _setting(compiled, "tracr_lib/reverse")
    n_eval = len(compiled("tracr_lib/reverse").inputs)
    # The mirror index from a table that only covers lengths the model accepts (<= 5).
    table = {(n, i): n - i - 1 for n in range(1, 6) for i in range(n)}
    opp = rasp.SequenceMap(lambda n, i: table.get((n, i), 0), _length(), rasp.indices)
    lookup = rasp.Aggregate(rasp.Select(rasp.indices, opp, rasp.Comparison.EQ), rasp.tokens)
    rows = accuracy_rows(lookup, truth, inputs)
    assert rows[:n_eval].tolist() == [1.0] * n_eval
    expected_long = [float(all(x == xs[0] for x in xs)) for xs in inputs[n_eval:]]
    assert rows[n_eval:].tolist() == expected_long and np.mean(rows) < 1.0
    assert not same_structure(lookup, truth, inputs)  # its selector differs on the longer inputs
    assert same_structure(lookup, truth, inputs[:n_eval])


# ---- skeleton comparison (program_exact) ---------------------------------------------------


def test_skeleton_contracts_elementwise_maps() -> None:
    earlier = rasp.Map(lambda x: x - 1, rasp.indices)
    by_map = rasp.Aggregate(rasp.Select(rasp.indices, earlier, rasp.Comparison.EQ), rasp.tokens)
    by_predicate = rasp.Aggregate(rasp.Select(rasp.indices, rasp.indices, lambda k, q: k == q - 1), rasp.tokens)
    assert same_structure(by_map, by_predicate, SHORT)
    g = skeleton(by_map, SHORT)
    assert g.number_of_nodes() == 4  # tokens, indices, select, aggregate (the output)
    roles = sorted(d["roles"] for _, _, d in g.edges(data=True))
    assert roles == [("keys", "queries"), ("selector",), ("sop",)]


def test_reverse_with_other_elementwise_decomposition_is_exact(compiled: Callable[[str], object]) -> None:
    truth, inputs = _setting(compiled, "tracr_lib/reverse")
    mine = _reverse_by_sequence_map()
    assert np.nanmin(accuracy_rows(mine, truth, inputs)) == 1.0
    assert same_structure(mine, truth, inputs)


def test_shift_by_via_shifted_keys_is_exact_and_the_other_direction_is_wrong(compiled: Callable[[str], object]) -> None:
    truth, inputs = _setting(compiled, "tracr_lib/shift_by")  # lib.shift_by(2): q == k + 2
    shifted_keys = rasp.Map(lambda x: x + 2, rasp.indices)
    mine = rasp.Aggregate(rasp.Select(shifted_keys, rasp.indices, rasp.Comparison.EQ), rasp.tokens, default=None)
    assert np.nanmin(accuracy_rows(mine, truth, inputs)) == 1.0
    assert same_structure(mine, truth, inputs)
    backwards = rasp.Aggregate(rasp.Select(rasp.indices, shifted_keys, rasp.Comparison.EQ), rasp.tokens, default=None)
    assert np.nanmean(accuracy_rows(backwards, truth, inputs)) < 0.5
    assert not same_structure(backwards, truth, inputs)


def test_constant_selector_reads_nothing(compiled: Callable[[str], object]) -> None:
    # Choice: a selector that selects every pair on every held-out input does not depend on
    # what it compares, so length via Select(indices, indices, TRUE) is exact against
    # tracr's Select(tokens, tokens, TRUE): the same selector and the same operation.
    truth, inputs = _setting(compiled, "tracr_lib/length")
    assert same_structure(_length(rasp.indices), truth, inputs)
    # A non-constant selector keeps its edges: reading tokens vs indices differs.
    by_tokens = rasp.Aggregate(rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.EQ), rasp.tokens)
    by_both = rasp.Aggregate(
        rasp.Select(rasp.SequenceMap(lambda t, i: t, rasp.tokens, rasp.indices), rasp.tokens, rasp.Comparison.EQ),
        rasp.tokens,
    )
    assert not same_structure(by_tokens, by_both, SHORT)


def test_functionally_equal_but_structurally_different_is_not_exact(compiled: Callable[[str], object]) -> None:
    truth, inputs = _setting(compiled, "tracr_lib/count")  # SelectorWidth of tokens == "a"
    is_a = rasp.numerical(rasp.Map(lambda t: 1 if t == "a" else 0, rasp.tokens))
    frac = rasp.numerical(rasp.Aggregate(rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.TRUE), is_a, default=0))
    count = rasp.SequenceMap(lambda f, n: round(f * n), frac, _length())
    assert np.nanmin(accuracy_rows(count, truth, inputs)) == 1.0
    assert not same_structure(count, truth, inputs)


def test_wrong_program_is_neither_accurate_nor_exact(compiled: Callable[[str], object]) -> None:
    truth, inputs = _setting(compiled, "tracr_lib/hist")
    leq = rasp.SelectorWidth(rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.LEQ))
    assert np.nanmean(accuracy_rows(leq, truth, inputs)) < 1.0
    assert not same_structure(leq, truth, inputs)


def test_shared_and_duplicated_subprograms_compare_equal() -> None:
    shared = _length()
    once = rasp.SequenceMap(lambda a, b: a + b, shared, shared)
    twice = rasp.SequenceMap(lambda a, b: a + b, _length(), _length())
    assert same_structure(once, twice, SHORT)


def test_metrics_registered_with_descriptions() -> None:
    from interpbench.metrics import list_metrics

    by_name = {m.name: m for m in list_metrics()}
    for name in ("program_accuracy", "program_exact"):
        assert by_name[name].kind == "program" and by_name[name].level == "program" and by_name[name].description


# ---- the registered metrics on interpbench.rasp/1 specs -------------------------------------


def _spec(nodes: list[dict[str, object]], output: str | None, status: str = "found") -> dict[str, object]:
    return {"format": "interpbench.rasp/1", "status": status, "nodes": nodes, "output": output}


T, I = {"id": "t", "op": "tokens"}, {"id": "i", "op": "indices"}
REVERSE = _spec([
    T, I,
    {"id": "all", "op": "select", "keys": "t", "queries": "t", "predicate": {"op": "TRUE", "offset": 0}},
    {"id": "n", "op": "selector_width", "selector": "all"},
    {"id": "opp", "op": "sequence_map", "args": ["n", "i"],
     "fn": {"kind": "linear", "coef": [1, -1], "const": -1, "mod": None}, "encoding": "categorical"},
    {"id": "mirror", "op": "select", "keys": "i", "queries": "opp", "predicate": {"op": "EQ", "offset": 0}},
    {"id": "out", "op": "aggregate", "selector": "mirror", "sop": "t", "default": None, "encoding": "categorical"},
], "out")  # fmt: skip
SHIFT_BY = _spec([
    T, I,
    {"id": "back2", "op": "select", "keys": "i", "queries": "i", "predicate": {"op": "EQ", "offset": -2}},
    {"id": "out", "op": "aggregate", "selector": "back2", "sop": "t", "default": None, "encoding": "categorical"},
], "out")  # fmt: skip
FRAC_PREVS = _spec([
    T, I,
    {"id": "is_a", "op": "map", "args": ["t"], "fn": {"kind": "indicator", "value": "a"}, "encoding": "numerical"},
    {"id": "upto", "op": "select", "keys": "i", "queries": "i", "predicate": {"op": "LEQ", "offset": 0}},
    {"id": "out", "op": "aggregate", "selector": "upto", "sop": "is_a", "default": 0, "encoding": "numerical"},
], "out")  # fmt: skip


def _score(name: str, spec: dict[str, object], case: object) -> object:
    from interpbench.explanation import Explanation
    from interpbench.metrics import aggregate, get_metric

    return aggregate(get_metric(name).fn(Explanation(program=spec), case))


SPECS = [("tracr_lib/reverse", REVERSE), ("tracr_lib/shift_by", SHIFT_BY), ("tracr_lib/frac_prevs", FRAC_PREVS)]


@pytest.mark.parametrize(("name", "spec"), SPECS)
def test_specs_of_true_programs_score_one(
    compiled: Callable[[str], object], name: str, spec: dict[str, object]
) -> None:
    case = compiled(name)
    acc = _score("program_accuracy", spec, case)
    assert acc.value == 1.0
    assert acc.n + acc.n_undefined == len(held_out_inputs(case.case, case)) > len(case.inputs)
    exact = _score("program_exact", spec, case)
    assert (exact.value, exact.n) == (1.0, 1)


def test_spec_without_output_or_malformed_scores_zero(compiled: Callable[[str], object]) -> None:
    case = compiled("tracr_lib/reverse")
    for spec in (_spec([T], None, status="not_found"), {"format": "something else"}):
        acc = _score("program_accuracy", spec, case)
        assert acc.value == 0.0 and acc.n == len(held_out_inputs(case.case, case))
        assert _score("program_exact", spec, case).value == 0.0


def test_only_a_found_program_counts(compiled: Callable[[str], object]) -> None:
    name, spec = SPECS[0]
    case = compiled(name)
    assert _score("program_accuracy", spec, case).value == 1.0
    for status in ("not_found", "partial"):  # the same, correct nodes, but the method did not stand behind them
        unfound = {**spec, "status": status}
        assert _score("program_accuracy", unfound, case).value == 0.0
        assert _score("program_exact", unfound, case).value == 0.0


def test_wrong_spec_scores_below_one(compiled: Callable[[str], object]) -> None:
    case = compiled("tracr_lib/shift_by")
    forward = dict(SHIFT_BY, nodes=[
        T, I, {"id": "back2", "op": "select", "keys": "i", "queries": "i", "predicate": {"op": "EQ", "offset": 2}},
        SHIFT_BY["nodes"][3],
    ])  # fmt: skip
    assert _score("program_accuracy", forward, case).value < 0.5
    assert _score("program_exact", forward, case).value == 0.0


def test_a_case_and_its_twins_share_one_reference_with_the_truths_outputs(compiled: Callable[[str], object]) -> None:
    from interpbench.program_metrics import _reference, _try_evaluate
    from interpbench.twins import make_twin

    base = compiled("tracr_lib/reverse")
    ref = _reference(base)
    assert _reference(make_twin(base, "rotated")) is ref  # same program, same inputs: built once
    assert ref.wanted == [_try_evaluate(ref.truth, xs) for xs in ref.inputs]
    program = relabel(base.case.program())
    np.testing.assert_array_equal(accuracy_rows(program, ref.truth, ref.inputs, ref.wanted),
                                  accuracy_rows(program, ref.truth, ref.inputs))  # fmt: skip
