"""Batched RASP evaluation equals tracr's per-input `rasp.evaluate`, values and types, on every program."""

from __future__ import annotations

import numpy as np
import pytest
from tracr.compiler import lib
from tracr.rasp import rasp

from interpbench.case import list_cases
from interpbench.program import relabel, walk
from interpbench.rasp_batch import BatchEvaluator, Column, Unbatchable, evaluate_rows, intern


def per_input(expr: rasp.RASPExpr, xs: list) -> object:
    """tracr's value, or the exception type it raises."""
    try:
        return rasp.evaluate(expr, xs)
    except Exception as exc:  # noqa: BLE001 - the error itself is the value compared
        return type(exc)


def batched(ev: BatchEvaluator, expr: rasp.RASPExpr, b: int) -> object:
    got = ev.evaluate(expr)
    return got.values(b) if isinstance(got, Column) else got[b].tolist()


def test_every_expression_of_every_case_equals_rasp_evaluate_on_all_substitutions() -> None:
    rng = np.random.default_rng(3)
    compared = 0
    for case in list_cases():
        program = relabel(case.program())
        seqs = set()
        for xs in case.domain.sample(rng, 8, case.vocab, case.max_seq_len):
            seqs |= {(*xs[:j], v, *xs[j + 1 :]) for j in range(len(xs)) for v in case.domain.tokens(case.vocab)}
        by_length: dict[int, list] = {}
        for s in sorted(seqs, key=repr):
            by_length.setdefault(len(s), []).append(list(s))
        for batch in by_length.values():
            ev = BatchEvaluator(batch)
            for expr in walk(program):
                for b, xs in enumerate(batch):
                    want, got = per_input(expr, xs), batched(ev, expr, b)
                    assert got == want, (case.full_name, expr.label, xs)
                    if isinstance(got, list) and got and not isinstance(got[0], list):
                        assert [type(v) for v in got] == [type(v) for v in want], (case.full_name, expr.label, xs)
                    compared += 1
    assert compared > 10_000


def test_numerical_mean_keeps_tracr_types_and_values() -> None:
    # Prefix mean of [1, 2, 4]: 1 (the int itself: one value selected), 3/2, 7/3; then of
    # floats [0.1, 0.2, 0.4] through tracr's own _mean: 0.1, (0.1+0.2)/2, (0.1+0.2+0.4)/3.
    prefix = rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.LEQ)
    mean = rasp.numerical(rasp.Aggregate(prefix, rasp.tokens, default=0))
    ev = BatchEvaluator([[1, 2, 4], [0.1, 0.2, 0.4]])
    ints, floats = ev.evaluate(mean).values(0), ev.evaluate(mean).values(1)
    assert ints == [1, 1.5, 7 / 3] and [type(v) for v in ints] == [int, float, float]
    assert floats == [0.1, (0.1 + 0.2) / 2, (0.1 + 0.2 + 0.4) / 3]


def test_categorical_aggregate_default_and_selector_width_by_hand() -> None:
    prev = rasp.Select(rasp.indices, rasp.indices, lambda k, q: k == q - 1)
    shifted = rasp.Aggregate(prev, rasp.tokens, default=None)
    same = rasp.SelectorWidth(rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.EQ))
    ev = BatchEvaluator([["a", "b", "a"], ["c", "c", "c"]])
    assert ev.evaluate(shifted).values(0) == [None, "a", "b"]
    assert ev.evaluate(shifted).values(1) == [None, "c", "c"]
    assert ev.evaluate(same).values(0) == [2, 1, 2] and ev.evaluate(same).values(1) == [3, 3, 3]
    assert ev.evaluate(shifted).is_none().tolist() == [[True, False, False], [True, False, False]]


def test_predicate_is_only_called_on_pairs_that_meet_when_others_fail() -> None:
    # Within each input all tokens are equal, so tracr never calls the predicate on
    # unequal ones; the batch holds both 1 and 2, and (1, 2) would divide by zero.
    sel = rasp.Select(rasp.tokens, rasp.tokens, lambda k, q: k == q or 1 / 0)
    assert BatchEvaluator([[1, 1], [2, 2]]).evaluate(sel).tolist() == [[[True, True]] * 2] * 2
    with pytest.raises(ZeroDivisionError):
        rasp.evaluate(sel, [1, 2])
    with pytest.raises(ZeroDivisionError):
        BatchEvaluator([[1, 2]]).evaluate(sel)


def test_intern_keeps_equal_values_of_other_types_apart() -> None:
    codes, table = intern([1, 1.0, True, 0.0, -0.0, 1, "1"])
    assert codes.tolist() == [0, 1, 2, 3, 4, 0, 5]
    assert [type(v) for v in table] == [int, float, bool, float, float, str]
    assert str(table[4]) == "-0.0"
    codes, table = intern([[1], [1]])  # unhashable: one code each, nothing shared
    assert codes.tolist() == [0, 1] and table == ([1], [1])


def test_one_length_per_batch() -> None:
    with pytest.raises(ValueError, match="one length"):
        BatchEvaluator([[1, 2], [1]])


def test_a_constant_selector_of_counts_falls_back_to_per_input_evaluation() -> None:
    # SelectorWidth of a constant selector holding 2s sums them as tracr does: not batchable
    # as booleans, so evaluate_rows evaluates input by input and gives the same values.
    const = rasp.ConstantSelector([[2, 0], [1, 1]])
    width = rasp.SelectorWidth(const)
    with pytest.raises(Unbatchable):
        BatchEvaluator([[1, 2]]).evaluate(width)
    ((length, (rows, (col, sel))),) = evaluate_rows([width, const], [(1, 2), (3, 4)]).items()
    assert length == 2 and rows.tolist() == [0, 1]
    assert col.values(0) == col.values(1) == [2, 2] == rasp.evaluate(width, [1, 2])
    assert sel.tolist() == [[[2.0, 0.0], [1.0, 1.0]]] * 2


def test_evaluate_rows_groups_by_length() -> None:
    program = lib.make_reverse(rasp.tokens)
    seqs = [("a", "b"), ("a", "b", "c"), ("c", "a")]
    groups = evaluate_rows([program], seqs)
    assert sorted(groups) == [2, 3]
    rows, (col,) = groups[2]
    assert rows.tolist() == [0, 2] and col.values(0) == ["b", "a"] and col.values(1) == ["a", "c"]
    rows, (col,) = groups[3]
    assert rows.tolist() == [1] and col.values(0) == ["c", "b", "a"]
