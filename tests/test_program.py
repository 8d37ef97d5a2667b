"""RASP program utilities: stable labels and the memoised evaluator."""

from __future__ import annotations

import numpy as np
import pytest
from tracr.compiler import lib
from tracr.rasp import rasp

from interpbench import get_case, list_cases
from interpbench.program import evaluate, evaluate_many, relabel, walk


def labels(program: rasp.SOp) -> list[str]:
    return [e.label for e in walk(program)]


def bump_global_counter(n: int = 97) -> None:
    """Draws `n` ids from tracr's global counter, as unrelated programs would."""
    for _ in range(n):
        _ = rasp.Map(lambda x: x, rasp.tokens).label


def test_unrelabelled_labels_do_depend_on_counter_state() -> None:
    # Sanity check that the test below can fail: tracr's own labels drift.
    first = labels(lib.make_hist())
    bump_global_counter()
    second = labels(lib.make_hist())
    assert first != second


@pytest.mark.parametrize("name", ["tracr_lib/reverse", "tracr_lib/sort", "tracr_lib/sort_freq", "tracr_lib/count"])
def test_relabel_is_independent_of_global_counter(name: str) -> None:
    case = get_case(name)
    first = labels(relabel(case.program()))
    bump_global_counter()
    # Touch the shared global `lib.length` under a different counter state too.
    _ = lib.length.label
    second = labels(relabel(case.program()))
    bump_global_counter(13)
    third = labels(relabel(case.program()))
    assert first == second == third
    assert len(set(first)) == len(first)  # labels stay unique


def test_relabel_resets_stale_ids_of_shared_globals() -> None:
    # reverse uses the module-level `lib.length`; its cached id must not leak in.
    ref = labels(relabel(lib.make_reverse(rasp.tokens)))
    relabel(lib.make_frac_prevs(rasp.tokens == "a"))
    relabel(rasp.Map(lambda x: x, lib.length))  # gives lib.length a different id
    bump_global_counter()
    assert labels(relabel(lib.make_reverse(rasp.tokens))) == ref


def test_relabel_returns_the_same_object() -> None:
    p = lib.make_hist()
    assert relabel(p) is p


def _sample_inputs(case, n: int = 12) -> list[list]:
    rng = np.random.default_rng(1)
    return case.domain.sample(rng, n, case.vocab, case.max_seq_len)


@pytest.mark.parametrize("case", list_cases(), ids=lambda c: c.full_name)
def test_memo_evaluator_equals_tracr_evaluate(case) -> None:
    program = relabel(case.program())
    for xs in _sample_inputs(case):
        assert evaluate(program, xs) == list(rasp.evaluate(program, xs)), xs


def test_evaluate_known_values() -> None:
    assert evaluate(lib.make_reverse(rasp.tokens), ["a", "b", "c"]) == ["c", "b", "a"]
    assert evaluate(lib.make_hist(), ["a", "b", "a", "c"]) == [2, 1, 2, 1]
    assert evaluate(lib.shift_by(2, rasp.tokens), ["a", "b", "c"]) == [None, None, "a"]
    assert evaluate(lib.make_sort_unique(rasp.tokens, rasp.tokens), [3, 1, 2]) == [1, 2, 3]


def test_evaluator_memoises_shared_subgraphs() -> None:
    calls: list[int] = []

    def f(x: int) -> int:
        calls.append(x)
        return x + 1

    m = rasp.numerical(rasp.Map(f, rasp.tokens))
    program = rasp.numerical(rasp.SequenceMap(lambda a, b: a * b, m, m))
    xs = [1, 2, 3]
    expected = [(x + 1) * (x + 1) for x in xs]

    calls.clear()
    assert list(rasp.evaluate(program, xs)) == expected
    unmemoised = len(calls)

    calls.clear()
    assert evaluate(program, xs) == expected
    assert len(calls) == len(xs) < unmemoised

    calls.clear()
    a, b = evaluate_many([m, program], xs)
    assert a == [2, 3, 4] and b == expected
    assert len(calls) == len(xs)  # one memo shared across the expressions

