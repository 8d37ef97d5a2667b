"""Ground truth against hand-worked RASP semantics (never against the model).

Arrays are in model coordinates: position 0 is BOS and input token k sits at k + 1.
The hand-worked cases use max_seq_len 5, so their arrays have 6 positions.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import numpy as np

from tracr.compiler import lib
from tracr.rasp import rasp

from interpbench import Case, Domain
from interpbench.ground_truth import Substitutions, compute_ground_truth, head_patterns, token_relevance
from interpbench.program import graph_json, relabel, walk

T = 6  # max_seq_len 5 + BOS
LETTERS = ("a", "b", "c", "d")

# The hand-worked numbers below depend on vocab and domain, so the cases are pinned here
# (same programs as suites/tracr_lib.py) rather than read from the editable suite.
CASES = {
    "reverse": Case("t", "reverse", lambda: lib.make_reverse(rasp.tokens), LETTERS, 5),
    "hist": Case("t", "hist", lib.make_hist, LETTERS, 5),
    "length": Case("t", "length", lib.make_length, LETTERS, 5),
    "shift_by": Case("t", "shift_by", lambda: lib.shift_by(2, rasp.tokens), LETTERS, 5),
    "sort_unique": Case(
        "t", "sort_unique", lambda: lib.make_sort_unique(rasp.tokens, rasp.tokens),
        (1, 2, 3, 4, 5), 5, domain=Domain(distinct=True),
    ),
}


def truth_for(name: str | Case, inputs: list[list]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    case = CASES[name] if isinstance(name, str) else name
    return token_relevance(case, relabel(case.program()), inputs)


def embed(rows: list[list], length: int) -> np.ndarray:
    """An input-coordinate [out, in] matrix placed into model coordinates [T, T]."""
    m = np.zeros((T, T))
    m[1 : length + 1, 1 : length + 1] = np.asarray(rows, dtype=float)
    return m


def mask(length: int, defined: list[bool] | None = None) -> np.ndarray:
    m = np.zeros(T, dtype=bool)
    m[1 : length + 1] = True if defined is None else defined
    return m


# --- reverse -----------------------------------------------------------------


def test_reverse_relevance_is_the_antidiagonal() -> None:
    # reverse(x)[i] = x[n-1-i]: output i is changed by every substitution at n-1-i and
    # by nothing else. Hand-built for n = 3 in input coordinates:
    expected = embed([[0, 0, 1], [0, 1, 0], [1, 0, 0]], 3)
    g, gg, valid_in, valid_out = truth_for("reverse", [["a", "b", "c"]])
    assert g.shape == gg.shape == (1, T, T)
    assert g.dtype == np.int8
    np.testing.assert_array_equal(g[0], expected)
    np.testing.assert_array_equal(gg[0], expected)  # every substitution changes the output
    np.testing.assert_array_equal(valid_in[0], mask(3))
    np.testing.assert_array_equal(valid_out[0], mask(3))


def test_reverse_relevance_batch_of_mixed_lengths() -> None:
    inputs = [["d", "a", "c", "a", "b"], ["b"], ["c", "c"]]
    g, gg, valid_in, valid_out = truth_for("reverse", inputs)
    # n = 5: model position q reads model position 6 - q; n = 1: 1 -> 1; n = 2: 1 -> 2, 2 -> 1.
    e5 = np.zeros((T, T))
    for q in range(1, 6):
        e5[q, 6 - q] = 1
    e1 = embed([[1]], 1)
    e2 = embed([[0, 1], [1, 0]], 2)
    for b, e in enumerate([e5, e1, e2]):
        np.testing.assert_array_equal(g[b], e)
        np.testing.assert_array_equal(gg[b], e)
    np.testing.assert_array_equal(valid_in, np.stack([mask(5), mask(1), mask(2)]))
    np.testing.assert_array_equal(valid_out, valid_in)


# --- hist --------------------------------------------------------------------


def test_hist_graded_fractions_by_hand() -> None:
    # hist(x)[i] = #{j : x_j == x_i}. Input a b a -> [2, 1, 2]; vocab a, b, c, d.
    # j=0 ('a' -> b, c, d): b b a -> [2,2,1]; c b a -> [1,1,1]; d b a -> [1,1,1]
    #   out0 changes 2/3, out1 changes 1/3, out2 changes 3/3.
    # j=1 ('b' -> a, c, d): a a a -> [3,3,3]; a c a -> [2,1,2]; a d a -> [2,1,2]
    #   every output changes 1/3.
    # j=2 ('a' -> b, c, d): a b b -> [1,2,2]; a b c -> [1,1,1]; a b d -> [1,1,1]
    #   out0 3/3, out1 1/3, out2 2/3.
    f = Fraction
    expected_in_coords = [
        [f(2, 3), f(1, 3), f(3, 3)],
        [f(1, 3), f(1, 3), f(1, 3)],
        [f(3, 3), f(1, 3), f(2, 3)],
    ]
    g, gg, _, valid_out = truth_for("hist", [["a", "b", "a"]])
    np.testing.assert_allclose(gg[0], embed([[float(x) for x in r] for r in expected_in_coords], 3), atol=1e-12)
    # Some substitution always changes it, so G is 1 on every real (out, in) pair.
    np.testing.assert_array_equal(g[0], embed(np.ones((3, 3)).tolist(), 3))
    np.testing.assert_array_equal(valid_out[0], mask(3))


def test_hist_graded_when_all_tokens_differ() -> None:
    # a b c -> [1,1,1]. Substituting x_j by another token t:
    #   t in the input (2 of 3 choices): x_j now counts 2, the position holding t counts 2,
    #     the third position stays 1.
    #   t = d (1 of 3): nothing changes.
    # So Gg[j, j] = 2/3 and Gg[i, j] = 1/3 for i != j.
    g, gg, _, _ = truth_for("hist", [["a", "b", "c"]])
    expected = np.full((3, 3), 1 / 3)
    np.fill_diagonal(expected, 2 / 3)
    np.testing.assert_allclose(gg[0], embed(expected.tolist(), 3), atol=1e-12)
    np.testing.assert_array_equal(g[0], embed(np.ones((3, 3)).tolist(), 3))


def test_hist_substitutions_leaving_a_predicate_domain_are_not_counted() -> None:
    # Domain: `a` occurs at most twice. Input a b a -> [2, 1, 2].
    # j=1 ('b' -> a) would give a a a, outside the domain; c and d change nothing,
    # so position 1 is relevant to no output. Columns 0 and 2 are as in the plain case.
    case = dataclasses.replace(CASES["hist"], domain=Domain(predicate=lambda xs: list(xs).count("a") <= 2))
    g, gg, _, _ = truth_for(case, [["a", "b", "a"]])
    expected = [[2 / 3, 0, 1], [1 / 3, 0, 1 / 3], [1, 0, 2 / 3]]
    np.testing.assert_allclose(gg[0], embed(expected, 3), atol=1e-12)
    np.testing.assert_array_equal(g[0], embed([[1, 0, 1], [1, 0, 1], [1, 0, 1]], 3))


def test_hist_substitutions_draw_from_the_domain_alphabet() -> None:
    # Alphabet {a, b}: each position has exactly one substitution.
    # j=0: b b a -> [2,2,1]; j=1: a a a -> [3,3,3]; j=2: a b b -> [1,2,2]  (base [2,1,2])
    case = dataclasses.replace(CASES["hist"], domain=Domain(alphabet=("a", "b")))
    g, gg, _, _ = truth_for(case, [["a", "b", "a"]])
    expected = embed([[0, 1, 1], [1, 1, 1], [1, 1, 0]], 3)
    np.testing.assert_array_equal(g[0], expected)
    np.testing.assert_array_equal(gg[0], expected)


# --- sort_unique: the domain requires distinct tokens -----------------------------


def test_sort_unique_substitutions_creating_duplicates_are_not_counted() -> None:
    # vocab 1..5, distinct. Input [2, 4] sorts to [2, 4].
    # j=0 (2 -> 1, 3, 5; 4 would duplicate): [1,4]->[1,4]; [3,4]->[3,4]; [5,4]->[4,5]
    #   out0 changes 3/3, out1 changes 1/3.
    # j=1 (4 -> 1, 3, 5; 2 would duplicate): [2,1]->[1,2]; [2,3]->[2,3]; [2,5]->[2,5]
    #   out0 changes 1/3, out1 changes 3/3.
    # Counting the duplicate substitution as well would make every denominator 4.
    g, gg, _, _ = truth_for("sort_unique", [[2, 4]])
    np.testing.assert_allclose(gg[0], embed([[1, 1 / 3], [1 / 3, 1]], 2), atol=1e-12)
    np.testing.assert_array_equal(g[0], embed([[1, 1], [1, 1]], 2))


def test_sort_unique_three_tokens() -> None:
    # [3, 1, 2] sorts to [1, 2, 3]; only 4 and 5 are in-domain substitutions anywhere.
    # j=0 (3): [4,1,2]->[1,2,4], [5,1,2]->[1,2,5]: only out2 changes.
    # j=1 (1): [3,4,2]->[2,3,4], [3,5,2]->[2,3,5]: all change.
    # j=2 (2): [3,1,4]->[1,3,4], [3,1,5]->[1,3,5]: out1 and out2 change.
    expected = embed([[0, 1, 0], [0, 1, 1], [1, 1, 1]], 3)
    g, gg, _, _ = truth_for("sort_unique", [[3, 1, 2]])
    np.testing.assert_array_equal(g[0], expected)
    np.testing.assert_allclose(gg[0], expected, atol=1e-12)


def test_sort_unique_position_without_in_domain_substitution_gets_zero() -> None:
    # All five tokens are used: every substitution makes a duplicate, so nothing counts.
    g, gg, valid_in, valid_out = truth_for("sort_unique", [[5, 3, 1, 4, 2]])
    assert not g.any()
    assert not gg.any()
    np.testing.assert_array_equal(valid_in[0], mask(5))
    np.testing.assert_array_equal(valid_out[0], mask(5))


# --- shift_by: undefined outputs ---------------------------------------------------


def test_shift_by_first_two_outputs_are_undefined() -> None:
    # shift_by(2)[i] = x[i-2] for i >= 2, None (no key selected) for i < 2.
    case = CASES["shift_by"]
    program = relabel(case.program())
    inputs = [["a", "b", "c", "d"], ["c"], ["a", "b"]]
    g, gg, valid_in, valid_out = token_relevance(case, program, inputs)
    np.testing.assert_array_equal(valid_out[0], mask(4, [False, False, True, True]))
    np.testing.assert_array_equal(valid_out[1], mask(0))  # length 1: nothing defined
    np.testing.assert_array_equal(valid_out[2], mask(0))
    np.testing.assert_array_equal(valid_in, np.stack([mask(4), mask(1), mask(2)]))
    expected = embed([[0, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0]], 4)
    np.testing.assert_array_equal(g[0], expected)
    np.testing.assert_array_equal(gg[0], expected)
    assert not g[1:].any() and not gg[1:].any()  # undefined rows carry no truth

    truth = compute_ground_truth(case, program, inputs, [], [], graph_json(program))
    assert truth.n_undefined_outputs == 2 + 1 + 2


def test_shift_by_compiled_counts_undefined_outputs(compiled) -> None:
    cc = compiled("tracr_lib/shift_by")
    lengths = cc.lengths
    # Each input of length n has min(n, 2) undefined outputs.
    assert cc.truth.n_undefined_outputs == int(np.minimum(lengths, 2).sum())
    assert cc.info["undefined_positions"] == cc.truth.n_undefined_outputs
    assert not cc.truth.valid_out[:, 1:3].any()
    assert np.isnan(cc.outputs[:, :3]).all()


# --- length: no dependence on token identity -----------------------------------------


def test_length_relevance_is_all_zero() -> None:
    # length(x)[i] = n: a single-token substitution never changes n.
    g, gg, valid_in, valid_out = truth_for("length", [["a", "b", "c"], ["d"] * 5])
    assert not g.any()
    assert not gg.any()
    np.testing.assert_array_equal(valid_out, np.stack([mask(3), mask(5)]))
    np.testing.assert_array_equal(valid_in, valid_out)


# --- head patterns ---------------------------------------------------------------------


def _reverse_pattern(n: int, t: int = T) -> np.ndarray:
    """Query q (model coords, 1..n) attends only to key n + 1 - q; rows 0 and PAD empty."""
    m = np.zeros((t, t))
    for q in range(1, n + 1):
        m[q, n + 1 - q] = 1.0
    return m


def _length_pattern(n: int, t: int = T) -> np.ndarray:
    """SelectorWidth's all-true selector plus the always-kept BOS column, row-normalised."""
    m = np.zeros((t, t))
    m[1 : n + 1, 0 : n + 1] = 1.0 / (n + 1)
    return m


def _heads_by_role(cc) -> dict[str, list]:
    out: dict[str, list] = {}
    for c in cc.truth.components:
        if c.kind == "head" and c.node is not None:
            out.setdefault(c.role, []).append(c)
    return out


def test_reverse_head_patterns_hand_built(compiled) -> None:
    cc = compiled("tracr_lib/reverse")
    case = cc.case
    program = relabel(case.program())
    exprs = {e.label: e for e in walk(program)}
    heads = _heads_by_role(cc)
    assert len(heads["aggregate"]) == 1 and len(heads["selector_width"]) == 1
    agg, width = heads["aggregate"][0], heads["selector_width"][0]
    assert agg.node.startswith("reverse_")
    assert width.node.startswith("length_")

    t = case.max_seq_len + 1
    inputs = [["a", "b", "c"], ["d", "d", "a", "b"], ["b"]]
    patterns, rows = head_patterns(case, exprs, cc.truth.components, inputs)
    assert set(patterns) == {agg.name, width.name}
    for b, xs in enumerate(inputs):
        n = len(xs)
        np.testing.assert_allclose(patterns[agg.name][b], _reverse_pattern(n, t), atol=0)
        np.testing.assert_allclose(patterns[width.name][b], _length_pattern(n, t), atol=1e-15)
        expected_rows = np.zeros(t, dtype=bool)
        expected_rows[1 : n + 1] = True
        np.testing.assert_array_equal(rows[b], expected_rows)


def test_reverse_stored_patterns_match_hand_built_and_model(compiled) -> None:
    import torch

    cc = compiled("tracr_lib/reverse")
    agg = _heads_by_role(cc)["aggregate"][0]
    t = cc.n_positions
    stored = cc.truth.patterns[agg.name]
    for b, n in enumerate(cc.lengths):
        np.testing.assert_array_equal(stored[b], _reverse_pattern(int(n), t))
    # The model's own head reproduces the hand-built pattern on real query rows.
    _, cache = cc.model.run_with_cache(torch.from_numpy(cc.tokens), [f"blocks.{agg.layer}.attn.hook_pattern"])
    got = cache[f"blocks.{agg.layer}.attn.hook_pattern"][:, agg.head].numpy()
    for b, n in enumerate(cc.lengths):
        n = int(n)
        np.testing.assert_allclose(got[b, 1 : n + 1], _reverse_pattern(n, t)[1 : n + 1], atol=1e-3)


def test_length_stored_pattern_keeps_bos(compiled) -> None:
    cc = compiled("tracr_lib/length")
    (width,) = _heads_by_role(cc)["selector_width"]
    for b, n in enumerate(cc.lengths):
        np.testing.assert_allclose(
            cc.truth.patterns[width.name][b], _length_pattern(int(n), cc.n_positions), atol=1e-15
        )


# --- substitutions: each distinct sequence once ---------------------------------------


def test_substitutions_list_each_sequence_once_across_inputs() -> None:
    # "ab": position 0 -> "bb", position 1 -> "aa"; "bb": position 0 -> "ab" (input 0
    # itself), position 1 -> "ba". Four distinct sequences for two inputs and four substitutions.
    case = Case("t", "two", lambda: rasp.tokens, ("a", "b"), 2)
    subs = Substitutions.enumerate(case, [["a", "b"], ["b", "b"]])
    assert subs.sequences == [("a", "b"), ("b", "b"), ("a", "a"), ("b", "a")]
    assert subs.base_rows.tolist() == [0, 1]
    assert subs.input_ids.tolist() == [0, 0, 1, 1]
    assert subs.positions.tolist() == [0, 1, 0, 1]
    assert subs.rows.tolist() == [1, 2, 0, 3]


def test_substitutions_leave_out_the_ones_outside_the_domain_but_keep_every_input() -> None:
    # At most one "a": "aa" (from "ab" at position 1) is not listed; the input "aa" itself
    # is evaluated all the same (its substitutions "ba" and "ab" are in the domain).
    case = Case("t", "two", lambda: rasp.tokens, ("a", "b"), 2,
                domain=Domain(predicate=lambda xs: list(xs).count("a") <= 1))  # fmt: skip
    subs = Substitutions.enumerate(case, [["a", "b"], ["a", "a"]])
    assert subs.sequences == [("a", "b"), ("b", "b"), ("a", "a"), ("b", "a")]
    assert subs.input_ids.tolist() == [0, 1, 1] and subs.positions.tolist() == [0, 0, 1]
    assert subs.rows.tolist() == [1, 3, 0]
