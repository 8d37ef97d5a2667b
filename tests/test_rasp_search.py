"""Enumerative whole-program search: recovers the required programs, generalises, stops on budget."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from interpbench.errors import BadInputError
from interpbench.ground_truth import same_value
from interpbench.program import evaluate, relabel
from interpbench.rasp_search import INDICES, TOKENS, Expr, Search, search_program
from interpbench.rasp_spec import run_spec, validate
from interpbench.rasp_values import same_output
from interpbench.synthesis import ProgramTask

REQUIRED = [
    "tracr_lib/reverse", "tracr_lib/hist", "tracr_lib/length", "tracr_lib/frac_prevs", "tracr_lib/shift_by",
    "algorithmic/token_plus_index", "tracr_lib/nary_sequencemap",
]  # fmt: skip
REV_HINT = {"format": "interpbench.selector/1", "query": "rev_index", "key": "index", "op": "==", "offset": 0,
            "bos": "fallback", "causal": False}  # fmt: skip


def sample(compiled: Any, n: int, seed: int) -> list[list[Any]]:
    """`n` distinct domain inputs that are not evaluation inputs (where the domain has enough)."""
    case = compiled.case
    held = {tuple(x) for x in compiled.inputs}
    rng = np.random.default_rng([11, seed])
    out: dict[tuple[Any, ...], None] = {}
    for _ in range(10):
        for xs in case.domain.sample(rng, 2 * n, case.vocab, case.max_seq_len):
            if tuple(xs) not in held:
                out.setdefault(tuple(xs))
    return [list(x) for x in list(out)[:n]]


def make_task(compiled: Any, *, budget: int = 100_000, seed: int = 0, n: int = 64,
              outputs: Callable[[list[Any]], list[Any]] | None = None, **kw: Any) -> ProgramTask:  # fmt: skip
    """A task whose target is the case's RASP program (None where RASP is None)."""
    truth = relabel(compiled.case.program())
    inputs = sample(compiled, 2 * n, seed)
    outs = [tuple((outputs or (lambda xs: evaluate(truth, xs)))(xs)) for xs in inputs]
    values = compiled.weights.output_values
    k = len(inputs) // 2
    return ProgramTask(
        inputs=tuple(map(tuple, inputs[:k])), outputs=tuple(outs[:k]),
        valid_inputs=tuple(map(tuple, inputs[k:])), valid_outputs=tuple(outs[k:]), vocab=compiled.case.vocab,
        output_values=None if values is None else tuple(values), numerical=values is None,
        max_seq_len=compiled.case.max_seq_len, budget=budget, seed=seed, **kw,
    )  # fmt: skip


def held_out(compiled: Any) -> tuple[list[list[Any]], list[list[Any]]]:
    """(evaluation inputs, inputs of length max_seq_len + 1 and + 2 drawn from the domain)."""
    case = compiled.case
    longer: list[list[Any]] = []
    if case.domain.max_len is None:
        for n in (case.max_seq_len + 1, case.max_seq_len + 2):
            domain = dataclasses.replace(case.domain, min_len=n, max_len=n)
            try:
                longer += domain.sample(np.random.default_rng([5, n]), 16, case.vocab, n)
            except BadInputError:
                pass
    return [list(x) for x in compiled.inputs], longer


def accuracy(spec: dict[str, Any], compiled: Any, inputs: list[list[Any]]) -> float:
    """Share of inputs where the spec's output equals the true program's wherever the truth is defined."""
    truth = relabel(compiled.case.program())
    hits = []
    for xs in inputs:
        want, got = evaluate(truth, xs), run_spec(spec, xs)
        hits.append(all(w is None or same_value(g, w) for g, w in zip(got, want)))
    return float(np.mean(hits))


@pytest.mark.parametrize("name", REQUIRED)
def test_recovers_required_programs_and_generalises(name: str, compiled) -> None:
    cc = compiled(name)
    result = search_program(make_task(cc))
    assert result.status == "found", result.note
    assert result.program is not None and validate(result.program)
    assert result.searched <= result.budget and result.score == 1.0
    evaluation, longer = held_out(cc)
    assert longer, "these cases allow longer inputs"
    assert accuracy(result.program, cc, evaluation) == 1.0
    assert accuracy(result.program, cc, longer) == 1.0, "must generalise to lengths never seen in training"


def test_budget_runs_out_with_a_clear_note(compiled) -> None:
    task = make_task(compiled("tracr_lib/reverse"), budget=300)
    result = search_program(task)
    assert result.status == "not_found"
    assert result.note == "not found within budget of 300 candidates"
    assert result.searched == result.budget == 300
    assert result.program is not None  # the best partial candidate, kept for inspection
    assert validate(result.program) and result.program["status"] == "not_found"
    assert 0.0 <= result.score < 1.0
    run_spec(result.program, ["a", "b"])


def test_deterministic(compiled) -> None:
    task = make_task(compiled("tracr_lib/reverse"), seed=3)
    first, second = search_program(task), search_program(task)
    assert first.program == second.program and first.searched == second.searched


@pytest.mark.parametrize("hint", [REV_HINT, {**REV_HINT, "query": "index", "key": "rev_index"}])
def test_selector_hints_are_seeded_cheaply(hint: dict[str, Any], compiled) -> None:
    cc = compiled("tracr_lib/reverse")
    plain = search_program(make_task(cc))
    hinted = search_program(make_task(cc, selector_hints=(hint,)))
    assert hinted.status == "found" and hinted.searched * 10 < plain.searched
    nodes = {n["id"]: n for n in hinted.program["nodes"]}
    out = nodes[hinted.program["output"]]
    select = nodes[out["selector"]]
    # the hint's selector as tracr's lib writes it, whichever way round the (symmetric) hint came:
    # Select(indices, length - indices - 1, EQ)
    assert out["op"] == "aggregate" and nodes[out["sop"]]["op"] == "tokens"
    assert nodes[select["keys"]]["op"] == "indices" and nodes[select["queries"]]["op"] == "sequence_map"
    evaluation, longer = held_out(cc)
    assert accuracy(hinted.program, cc, evaluation + longer) == 1.0


def test_untranslatable_hints_are_skipped(compiled) -> None:
    cc = compiled("tracr_lib/hist")
    odd = (
        {**REV_HINT, "query": "mystery_feature"},
        {**REV_HINT, "query": "token", "key": "token", "offset": 1},  # offsets need numbers
        {**REV_HINT, "query": "index", "key": "index", "op": ">", "causal": True},  # the causal mask matters
    )
    plain, hinted = search_program(make_task(cc)), search_program(make_task(cc, selector_hints=odd))
    assert hinted.status == plain.status == "found"
    assert hinted.program == plain.program and hinted.searched == plain.searched


def shift_expr(offset: int) -> Expr:
    """Aggregate(Select(indices, indices, k == q - offset), tokens): None at the first `offset` positions."""
    return Expr("aggregate", (Expr("select", (INDICES, INDICES), pred={"op": "EQ", "offset": -offset}), TOKENS))


def test_none_exactly_where_the_model_is_silent(compiled) -> None:
    """A candidate may be None only where the model emits no value, and must be None there."""
    cc = compiled("tracr_lib/shift_by")
    truth = relabel(cc.case.program())
    silent = Search(make_task(cc))
    assert silent.verify(shift_expr(2))
    assert not silent.verify(shift_expr(1)) and not silent.verify(shift_expr(3))
    assert not silent.verify(TOKENS)  # defined where the model is silent
    # a model that emitted a constant where RASP is None: being None there is no match
    constant = Search(make_task(cc, outputs=lambda xs: [y if y is not None else "a" for y in evaluate(truth, xs)]))
    assert not constant.verify(shift_expr(2))


def test_numerical_outputs_within_tolerance(compiled) -> None:
    cc = compiled("tracr_lib/frac_prevs")
    truth = relabel(cc.case.program())
    rng = np.random.default_rng(0)
    noisy = make_task(cc, outputs=lambda xs: [y + float(rng.uniform(-1e-4, 1e-4)) for y in evaluate(truth, xs)])
    result = search_program(noisy)
    assert result.status == "found"
    evaluation, longer = held_out(cc)
    assert accuracy(result.program, cc, evaluation + longer) == 1.0


def test_same_output_compares_with_the_task_tolerance() -> None:
    """The public output comparison: a tolerance for numerical outputs, equality otherwise."""
    assert same_output(0.5, 0.5 + 1e-4, numerical=True, atol=1e-3)
    assert not same_output(0.5, 0.5 + 1e-2, numerical=True, atol=1e-3)
    assert not same_output("a", 0.5, numerical=True, atol=1e-3)  # not a number: no match, no error
    assert same_output("a", "a", numerical=False, atol=1e-3) and not same_output(1, 2, numerical=False, atol=5.0)
