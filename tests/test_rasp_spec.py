"""The interpbench.rasp/1 spec: real tracr objects, JSON round trip, faithful source, one-line errors."""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np
import pytest
from tracr.compiler import lib
from tracr.rasp import rasp

from interpbench.errors import BadInputError
from interpbench.program import evaluate
from interpbench.rasp_spec import render_source, run_spec, spec_to_rasp, validate

VOCAB = ("a", "b", "c")


def spec(nodes: list[dict[str, Any]], output: str | None) -> dict[str, Any]:
    return {"format": "interpbench.rasp/1", "status": "found", "nodes": nodes, "output": output}


def reverse_spec() -> dict[str, Any]:
    """reverse as tracr's lib writes it: opp = length - indices - 1; Aggregate(Select(indices, opp, EQ), tokens)."""
    return spec([
        {"id": "t", "op": "tokens"}, {"id": "i", "op": "indices"},
        {"id": "all", "op": "select", "keys": "t", "queries": "t", "predicate": {"op": "TRUE", "offset": 0}},
        {"id": "n", "op": "selector_width", "selector": "all"},
        {"id": "opp", "op": "sequence_map", "args": ["n", "i"], "encoding": "categorical",
         "fn": {"kind": "linear", "coef": [1, -1], "const": -1, "mod": None}},
        {"id": "flip", "op": "select", "keys": "i", "queries": "opp", "predicate": {"op": "EQ", "offset": 0}},
        {"id": "rev", "op": "aggregate", "selector": "flip", "sop": "t", "default": None, "encoding": "categorical"},
    ], "rev")  # fmt: skip


def kitchen_sink_spec() -> dict[str, Any]:
    """Every op, FN kind and predicate form, a numerical mean and a 3-ary sequence map."""
    return spec([
        {"id": "t", "op": "tokens"}, {"id": "i", "op": "indices"},
        {"id": "is_a", "op": "map", "args": ["t"], "fn": {"kind": "indicator", "value": "a"}, "encoding": "numerical"},
        {"id": "not_c", "op": "map", "args": ["t"], "fn": {"kind": "indicator", "value": "c", "op": "!="}},
        {"id": "prefix", "op": "select", "keys": "i", "queries": "i", "predicate": {"op": "LEQ", "offset": 0}},
        {"id": "frac", "op": "aggregate", "selector": "prefix", "sop": "is_a", "default": 0, "encoding": "numerical"},
        {"id": "prev", "op": "select", "keys": "i", "queries": "i", "predicate": {"op": "EQ", "offset": -1}},
        {"id": "prev_t", "op": "aggregate", "selector": "prev", "sop": "t", "default": None},
        {"id": "bigram", "op": "sequence_map", "args": ["prev_t", "t"], "encoding": "categorical",
         "fn": {"kind": "table", "table": [[["a", "b"], 1], [["b", "a"], 2]], "default": 0}},
        {"id": "smaller", "op": "select", "keys": "t", "queries": "t", "predicate": {"op": "LT", "offset": 0}},
        {"id": "rank", "op": "selector_width", "selector": "smaller"},
        {"id": "near", "op": "select", "keys": "i", "queries": "rank", "predicate": {"op": "GEQ", "offset": 2}},
        {"id": "far", "op": "selector_width", "selector": "near"},
        {"id": "same", "op": "sequence_map", "args": ["rank", "far"], "fn": {"kind": "compare", "op": "<="}},
        {"id": "mix", "op": "sequence_map", "args": ["same", "not_c", "far"],
         "fn": {"kind": "linear", "coef": [2, -1, 3], "const": 1, "mod": 5}},
        {"id": "scaled", "op": "map", "args": ["frac"], "encoding": "numerical",
         "fn": {"kind": "linear", "coef": [-0.5], "const": 0.25, "mod": None}},
        {"id": "is_b", "op": "map", "args": ["t"], "fn": {"kind": "indicator", "value": "b"}, "encoding": "numerical"},
        {"id": "balance", "op": "sequence_map", "args": ["is_a", "is_b"], "encoding": "numerical",
         "fn": {"kind": "linear", "coef": [1, -1], "const": 0, "mod": None}},
        {"id": "out", "op": "sequence_map", "args": ["mix", "bigram"],
         "fn": {"kind": "linear", "coef": [1, 10], "const": 0, "mod": None}},
    ], "out")  # fmt: skip


def random_inputs(n: int, seed: int, max_len: int = 6) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    return [[VOCAB[int(k)] for k in rng.integers(0, len(VOCAB), int(rng.integers(1, max_len + 1)))] for _ in range(n)]


def test_builds_real_tracr_objects_equal_to_tracr_lib() -> None:
    program = spec_to_rasp(reverse_spec())
    assert isinstance(program, rasp.Aggregate)
    assert isinstance(program.selector, rasp.Select) and isinstance(program.sop, rasp.TokensType)
    truth = lib.make_reverse(rasp.tokens)
    for xs in random_inputs(40, 0):
        assert evaluate(program, xs) == evaluate(truth, xs) == xs[::-1]


def test_semantics_of_each_form() -> None:
    program = spec_to_rasp(kitchen_sink_spec())
    scaled = spec_to_rasp({**kitchen_sink_spec(), "output": "scaled"})
    assert rasp.is_numerical(_find(scaled, "frac")) and rasp.is_numerical(_find(scaled, "is_a"))
    assert rasp.is_categorical(_find(program, "rank")) and rasp.is_numerical(scaled)
    for xs in random_inputs(60, 1):
        n = len(xs)
        frac = [sum(x == "a" for x in xs[: p + 1]) / (p + 1) for p in range(n)]
        prev = [None] + xs[:-1]
        bigram = [None if p is None else {("a", "b"): 1, ("b", "a"): 2}.get((p, x), 0) for p, x in zip(prev, xs)]
        rank = [sum(y < x for y in xs) for x in xs]
        far = [sum(k >= r + 2 for k in range(n)) for r in rank]
        same = [1 if r <= f else 0 for r, f in zip(rank, far)]
        mix = [(2 * s - (1 if x != "c" else 0) + 3 * f + 1) % 5 for s, x, f in zip(same, xs, far)]
        want = [None if b is None else m + 10 * b for m, b in zip(mix, bigram)]
        assert run_spec(kitchen_sink_spec(), xs) == want
        assert evaluate(_find(scaled, "frac"), xs) == pytest.approx(frac)
        assert evaluate(scaled, xs) == pytest.approx([-0.5 * f + 0.25 for f in frac])


def test_numerical_linear_sequence_maps_are_tracr_linear_sequence_maps() -> None:
    """tracr compiles a numerical SequenceMap only as a LinearSequenceMap; categorical ones stay general."""
    balance = spec_to_rasp({**kitchen_sink_spec(), "output": "balance"})
    assert isinstance(balance, rasp.LinearSequenceMap) and rasp.is_numerical(balance)
    assert (balance.fst_fac, balance.snd_fac) == (1, -1)
    out = spec_to_rasp(kitchen_sink_spec())
    assert isinstance(out, rasp.SequenceMap) and not isinstance(out, rasp.LinearSequenceMap)
    source = render_source({**kitchen_sink_spec(), "output": "balance"})
    assert "rasp.LinearSequenceMap(is_a, is_b, 1, -1)" in source
    namespace: dict[str, Any] = {}
    exec(compile(source, "<rendered>", "exec"), namespace)  # our own renderer's output
    for xs in random_inputs(20, 4):
        want = [(x == "a") - (x == "b") for x in xs]
        assert evaluate(balance, xs) == evaluate(namespace["program"](), xs) == want


def _find(program: rasp.RASPExpr, label: str) -> rasp.RASPExpr:
    from interpbench.program import walk

    return next(e for e in walk(program) if e.name == label)


@pytest.mark.parametrize("make", [reverse_spec, kitchen_sink_spec])
def test_json_round_trip_keeps_behaviour(make) -> None:
    original = make()
    loaded = json.loads(json.dumps(original))
    for xs in random_inputs(30, 2):
        assert run_spec(loaded, xs) == run_spec(original, xs)


@pytest.mark.parametrize("make", [reverse_spec, kitchen_sink_spec])
def test_rendered_source_builds_an_equivalent_program(make) -> None:
    source = render_source(make())
    assert source.startswith("from tracr.rasp import rasp") and "def program():" in source
    namespace: dict[str, Any] = {}
    exec(compile(source, "<rendered>", "exec"), namespace)  # our own renderer's output
    rendered = namespace["program"]()
    assert isinstance(rendered, rasp.SOp)
    for xs in random_inputs(40, 3):
        assert evaluate(rendered, xs) == run_spec(make(), xs)


def test_rendered_functions_read_like_python() -> None:
    source = render_source(kitchen_sink_spec())
    assert "lambda x, y, z: (2 * x - y + 3 * z + 1) % 5" in source
    assert "lambda x: 1 if x == 'a' else 0" in source
    assert "lambda k, q: k == q - 1" in source and "lambda k, q: k >= q + 2" in source
    assert "{('a', 'b'): 1, ('b', 'a'): 2}.get((x, y), 0)" in source
    assert "rasp.numerical(rasp.Aggregate(prefix, is_a, default=0)" in source


def test_no_output_means_no_program() -> None:
    empty = spec([], None)
    assert spec_to_rasp(empty) is None
    assert "no program was found" in render_source(empty)
    with pytest.raises(BadInputError, match="no output"):
        run_spec(empty, ["a"])


def _broken(path: str, value: Any) -> dict[str, Any]:
    s = copy.deepcopy(reverse_spec())
    node_id, key = path.split(".")
    node = next(n for n in s["nodes"] if n["id"] == node_id)
    node[key] = value
    return s


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (_broken("rev.op", "average"), "unknown op 'average'"),
        (_broken("flip.queries", "nowhere"), "unknown node 'nowhere'"),
        (_broken("opp.fn", {"kind": "polynomial"}), "unknown fn kind 'polynomial'"),
        (_broken("opp.fn", {"kind": "linear", "coef": [1], "const": 0}), "fn takes 1 arguments but the node has 2"),
        (_broken("opp.fn", {"kind": "linear", "coef": [1, 1], "const": 0, "mod": 1}), "mod must be an integer >= 2"),
        (_broken("opp.fn", {"kind": "table", "table": [[["a"], 1], [["a", "b"], 2]]}), "different lengths"),
        (_broken("flip.predicate", {"op": "ABOUT", "offset": 0}), "predicate op must be one of"),
        (_broken("flip.predicate", {"op": "EQ", "offset": 0.5}), "offset must be an integer"),
        (_broken("rev.sop", "flip"), "sop 'flip' must be an SOp"),
        (_broken("n.selector", "t"), "selector 't' must be a selector"),
        (_broken("opp.encoding", "binary"), "encoding must be one of"),
        (_broken("all.keys", "rev"), "cycle through nodes"),
        ({**reverse_spec(), "output": "flip"}, "output 'flip' is not the id of an SOp node"),
        ({**reverse_spec(), "format": "interpbench.rasp/0"}, "expected format"),
        ({**reverse_spec(), "nodes": reverse_spec()["nodes"] * 2}, "duplicate node id"),
    ],
)
def test_malformed_specs_fail_with_one_clear_line(bad: dict[str, Any], message: str) -> None:
    for fn in (validate, spec_to_rasp, render_source):
        with pytest.raises(BadInputError, match="^rasp spec: ") as info:
            fn(bad)
        assert message in str(info.value) and "\n" not in str(info.value)


def test_nodes_may_come_in_any_acyclic_order() -> None:
    s = reverse_spec()
    s["nodes"] = s["nodes"][::-1]
    assert [n["id"] for n in validate(s)][-1] == "rev"
    assert run_spec(s, ["a", "b", "c"]) == ["c", "b", "a"]


@pytest.mark.slow
def test_a_spec_compiles_with_tracr_and_the_model_agrees() -> None:
    """The program a spec builds is a real tracr program: it compiles and verifies (outputs, patterns)."""
    from interpbench.case import Case, Domain
    from interpbench.compiled import compile_case

    case = Case(suite="spec_test", name="reverse_spec", program=lambda: spec_to_rasp(reverse_spec()),
                vocab=VOCAB, max_seq_len=4, domain=Domain(), n_eval=12)  # fmt: skip
    compiled = compile_case(case, use_cache=False)  # raises VerificationError on any disagreement
    assert compiled.info["verified_positions"] > 0
