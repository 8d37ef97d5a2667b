"""The selector DSL: semantics against the true patterns, the renderer, and spec validation."""

from __future__ import annotations

import numpy as np
import pytest

from interpbench.errors import BadInputError
from interpbench.selector_dsl import (
    FEATURES, FORMAT, OPS, Features, SelectorProgram, describe, is_feature, pattern, render_source,
)  # fmt: skip

# (case, RASP node the head implements (label without its id), the selector written in the DSL)
EXPRESSIBLE = [
    ("tracr_lib/reverse", "reverse", SelectorProgram("rev_index", "index", "==", 0, "fallback")),
    ("tracr_lib/reverse", "length", SelectorProgram("const", "const", "true", 0, "always")),
    ("tracr_lib/length", "length", SelectorProgram("const", "const", "true", 0, "always")),
    ("tracr_lib/hist", "hist", SelectorProgram("token", "token", "==", 0, "always")),
    ("tracr_lib/shift_by", "shift_by(2)", SelectorProgram("index", "index", "==", -2, "fallback")),
    ("tracr_lib/frac_prevs", "frac_prevs", SelectorProgram("index", "index", "<=", 0, "fallback")),
    ("tracr_lib/count", "count_a", SelectorProgram("const", "is:'a'", "==", 1, "always")),
    ("tracr_lib/count_less_freq", "count_less_freq", SelectorProgram("const", "token_count", "<=", 2, "always")),
    ("tracr_lib/sort_unique", "sort", SelectorProgram("index", "lt_count", "==", 0, "fallback")),
    ("tracr_lib/sort", "target_pos", SelectorProgram("rank", "rank", "<", 0, "always")),
    ("tracr_lib/sort", "sort", SelectorProgram("index", "rank", "==", 0, "fallback")),
    ("algorithmic/copy_first", "copy_first", SelectorProgram("const", "index", "==", 0, "fallback")),
    ("algorithmic/copy_last", "copy_last", SelectorProgram("length", "index", "==", -1, "fallback")),
    ("algorithmic/token_at_1", "token_at_1", SelectorProgram("const", "index", "==", 1, "fallback")),
    ("algorithmic/count_smaller", "count_smaller", SelectorProgram("token", "token", "<", 0, "always")),
    ("algorithmic/max_token", "max_token", SelectorProgram("length", "leq_count", "==", 0, "fallback")),
    ("algorithmic/double_hist", "same_freq_positions", SelectorProgram("token_count", "token_count", "==", 0, "always")),
    ("algorithmic/prev_token", "prev_token", SelectorProgram("index", "index", "==", -1, "fallback", causal=True)),
    ("algorithmic/prefix_count_a", "prefix_count_a", SelectorProgram("const", "is:'a'", "==", 1, "always", causal=True)),
]  # fmt: skip


def head_of(compiled_case: object, node: str) -> str:
    """The head implementing the RASP node labelled `node` (label minus its numeric id)."""
    names = [c.name for c in compiled_case.truth.components
             if c.kind == "head" and c.node and c.node.rsplit("_", 1)[0] == node]  # fmt: skip
    assert len(names) == 1, (node, names)
    return names[0]


@pytest.mark.parametrize(("case_name", "node", "program"), EXPRESSIBLE, ids=lambda v: str(v)[:30])
def test_program_equals_true_pattern(compiled, case_name: str, node: str, program: SelectorProgram) -> None:
    cc = compiled(case_name)
    head = head_of(cc, node)
    got = pattern(program, cc.inputs, cc.n_positions)
    assert got.shape == (len(cc.inputs), cc.n_positions, cc.n_positions)
    rows = cc.truth.pattern_rows
    np.testing.assert_array_equal(got[rows], cc.truth.patterns[head][rows])
    assert not got[~rows].any()  # BOS and PAD query rows are zero


def test_wrong_program_differs_from_true_pattern(compiled) -> None:
    cc = compiled("tracr_lib/reverse")
    head = head_of(cc, "reverse")
    wrong = pattern(SelectorProgram("index", "index", "==", 0), cc.inputs, cc.n_positions)
    assert not np.array_equal(wrong[cc.truth.pattern_rows], cc.truth.patterns[head][cc.truth.pattern_rows])


def test_features_follow_their_definitions() -> None:
    xs = [["b", "a", "b", "c"], ["c"], ["a", "a"]]
    f = Features(xs)
    for b, x in enumerate(xs):
        n = len(x)
        expect = {
            "index": list(range(n)),
            "length": [n] * n,
            "rev_index": [n - 1 - p for p in range(n)],
            "const": [0] * n,
            "token_count": [x.count(t) for t in x],
            "lt_count": [sum(t < x[p] for t in x) for p in range(n)],
            "leq_count": [sum(t <= x[p] for t in x) for p in range(n)],
            "rank": [sorted(range(n), key=lambda m: (x[m], m)).index(p) for p in range(n)],
            "is:'b'": [int(t == "b") for t in x],
        }
        for name, values in expect.items():
            np.testing.assert_array_equal(f.get(name)[b, :n], values, err_msg=name)
            assert np.isnan(f.get(name)[b, n:]).all()
        prev = f.get("prev_token")[b, :n]
        nxt = f.get("next_token")[b, :n]
        assert np.isnan(prev[0]) and np.isnan(nxt[n - 1])
        codes = f.get("token")[b, :n]
        np.testing.assert_array_equal(prev[1:], codes[:-1])
        np.testing.assert_array_equal(nxt[:-1], codes[1:])
    # token codes keep Python's order; numeric tokens keep their values
    assert f.get("token")[0, 1] < f.get("token")[0, 0] < f.get("token")[0, 3]
    np.testing.assert_array_equal(Features([[3, 1, 2]]).get("token")[0], [3, 1, 2])


def _random_program(rng: np.random.Generator, vocab: list) -> SelectorProgram:
    names = list(FEATURES) + [is_feature(v) for v in vocab] + ["is:'zz'"]
    return SelectorProgram(
        query=str(rng.choice(names)),
        key=str(rng.choice(names)),
        op=str(rng.choice(OPS)),
        offset=int(rng.integers(-3, 4)),
        bos=str(rng.choice(["fallback", "always"])),
        causal=bool(rng.integers(2)),
    )


def _run_source(program: SelectorProgram, xs: list) -> np.ndarray:
    namespace: dict = {}
    exec(compile(render_source(program, "L0H0"), "<rendered>", "exec"), namespace)  # our own renderer's text
    return np.array(namespace["attention"](list(xs)), dtype=np.float64).reshape(len(xs) + 1, len(xs) + 1)


@pytest.mark.parametrize("vocab", [["a", "b", "c"], [0, 1, 2, 3, 5]], ids=["letters", "numbers"])
def test_rendered_source_equals_pattern(vocab: list) -> None:
    rng = np.random.default_rng(7)
    inputs = [[]] + [list(rng.choice(np.array(vocab, dtype=object), size=int(rng.integers(1, 7)))) for _ in range(40)]
    t = max(len(x) for x in inputs) + 1
    checked = refused = 0
    for _ in range(300):
        program = _random_program(rng, vocab)
        try:
            got = pattern(program, inputs, t)
        except BadInputError:
            refused += 1
            assert isinstance(vocab[0], str) and program.op != "true"  # only non-numeric tokens refuse
            continue
        for b, xs in enumerate(inputs):
            n = len(xs)
            expected = np.zeros((t, t))
            expected[: n + 1, : n + 1] = _run_source(program, xs)
            np.testing.assert_array_equal(got[b], expected, err_msg=f"{program} on {xs}")
            if n:
                np.testing.assert_allclose(got[b, 1 : n + 1].sum(-1), 1.0)
        checked += 1
    assert checked > 150 and (refused > 0) == isinstance(vocab[0], str)


def test_json_round_trip() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        program = _random_program(rng, ["a", 1, 2.5])
        spec = program.to_json()
        assert spec["format"] == FORMAT
        assert SelectorProgram.from_json(spec) == program
        import json

        assert SelectorProgram.from_json(json.loads(json.dumps(spec))) == program


GOOD = {"format": FORMAT, "query": "index", "key": "index", "op": "==", "offset": 0, "bos": "fallback", "causal": False}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "interpbench.selector/2"}, "format"),
        ({"query": "__import__('os')"}, "unknown selector feature"),
        ({"key": 3}, "must be a string"),
        ({"key": "is:foo"}, "token literal"),
        ({"key": "is:__import__('os').getcwd()"}, "token literal"),
        ({"key": 'is:"a"'}, "token literal"),  # not canonical: repr('a') is 'a'
        ({"op": "=~"}, "op must be one of"),
        ({"offset": 1.5}, "offset must be an integer"),
        ({"offset": True}, "offset must be an integer"),
        ({"bos": "never"}, "bos must be one of"),
        ({"causal": "yes"}, "causal must be"),
        ({"extra": 1}, "unknown field 'extra'"),
    ],
)
def test_malformed_spec_is_one_clear_error(change: dict, message: str) -> None:
    with pytest.raises(BadInputError, match=message) as info:
        SelectorProgram.from_json({**GOOD, **change})
    assert "\n" not in str(info.value)


def test_missing_field_and_non_object() -> None:
    spec = dict(GOOD)
    del spec["bos"]
    with pytest.raises(BadInputError, match="lacks field 'bos'"):
        SelectorProgram.from_json(spec)
    with pytest.raises(BadInputError, match="JSON object"):
        SelectorProgram.from_json(["index"])


def test_incomparable_values_are_refused() -> None:
    letters = [["a", "b"]]
    with pytest.raises(BadInputError, match="compares non-numeric tokens with numbers"):
        pattern(SelectorProgram("index", "token", "=="), letters, 3)
    with pytest.raises(BadInputError, match="offset"):
        pattern(SelectorProgram("token", "token", "==", 1), letters, 3)
    mixed = [["a", 1]]
    with pytest.raises(BadInputError, match="no order"):
        pattern(SelectorProgram("token", "token", "<"), mixed, 3)
    with pytest.raises(BadInputError, match="order"):
        pattern(SelectorProgram("const", "lt_count", "=="), mixed, 3)
    assert pattern(SelectorProgram("token", "token", "=="), mixed, 3)[0, 1, 1] == 1.0
    with pytest.raises(BadInputError, match="too small"):
        pattern(SelectorProgram("index", "index", "=="), [["a", "b", "c"]], 3)


def test_describe_reads_the_program() -> None:
    assert describe(SelectorProgram("rev_index", "index", "==")) == (
        "key index == query rev_index; BOS only when nothing matches")
    assert "key index == query index - 1" in describe(SelectorProgram("index", "index", "==", -1, causal=True))
    assert "keys up to the query" in describe(SelectorProgram("index", "index", "==", causal=True))
    assert "BOS always attended" in describe(SelectorProgram("const", "const", "true", bos="always"))
    assert describe(SelectorProgram("const", "const", "==", 1)).startswith("no key")
    assert describe(SelectorProgram("length", "const", "<", -3)).startswith("every key where query length > 3")
