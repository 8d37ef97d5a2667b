"""The Dyck twin: a hand-built stack-attention model computing tracr's Shuffle-Dyck function."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from interpbench.method import get_method
from interpbench.twin_dyck import balanced, bracket_kinds, domain_inputs, matches
from interpbench.twin_metrics import twin_consistency
from interpbench.twins import LOGIT_ATOL, TwinNotApplicable, get_twin, make_twin
from interpbench.weights import numpy_forward

DYCK = ["tracr_lib/shuffle_dyck", "tracr_lib/shuffle_dyck2"]


def _forward(cc, inputs: list[list[str]], hooks: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read-out logits and the real-position mask on `inputs` (optionally with hooks attached)."""
    tokens, lengths = cc.encode(inputs)
    with torch.no_grad(), cc.model.hooks(hooks or {}):
        logits = cc.model(torch.from_numpy(tokens)).numpy()
    return logits, np.arange(tokens.shape[1])[None, :] <= lengths[:, None]


def _pattern(cc, text: str, layer: int, head: int) -> np.ndarray:
    name = f"blocks.{layer}.attn.hook_pattern"
    _, cache = cc.model.run_with_cache(torch.from_numpy(cc.encode([list(text)])[0]), [name])
    return cache[name][0, head].numpy()


def test_stack_reference_by_hand() -> None:
    kinds = [("(", ")")]
    assert matches(list("(())"), kinds) == [-1, -1, 1, 0]
    assert matches(list("()()"), kinds) == [-1, 0, -1, 2]
    assert matches(list(")(()"), kinds) == [-1, -1, -1, 2]  # the first close has nothing to match
    assert [balanced(list(s), kinds) for s in ("()", "(())", "()()", ")(", "(()", "())(")] == [
        True, True, True, False, False, False]  # fmt: skip
    both = [("(", ")"), ("{", "}")]
    assert matches(list("({)}"), both) == [-1, -1, 0, 1] and balanced(list("({)}"), both)  # shuffle: kinds interleave
    assert not balanced(list("(}{)"), both)
    assert bracket_kinds(("(", ")", "{", "}")) == both


@pytest.mark.parametrize("name", DYCK)
def test_twin_verifies_and_equals_the_base_model_on_every_domain_input(name: str, compiled) -> None:
    cc = compiled(name)
    tw = make_twin(cc, "dyck_stack")
    v = tw.info["twin_verification"]
    assert v["exact"] is False and v["verified_positions"] == int(cc.truth.valid_out.sum())
    assert v["max_logit_error"] <= LOGIT_ATOL and v["patterns_checked"] == len(tw.truth.patterns)
    assert tw.info["n_layers"] == 3 and tw.weights.key_size == cc.weights.key_size
    assert tw.weights.causal == cc.weights.causal and tw.weights.bos_id == cc.weights.bos_id
    inputs = domain_inputs(cc, np.random.default_rng(1))
    assert len(inputs) == {"tracr_lib/shuffle_dyck": 4 + 16, "tracr_lib/shuffle_dyck2": 16 + 256}[name]
    assert tw.info["twin"]["domain_inputs_checked"] == len(inputs)
    want, real = _forward(cc, inputs)
    got, _ = _forward(tw, inputs)
    assert np.abs(got - want)[real].max() <= LOGIT_ATOL
    assert (got.argmax(-1) == want.argmax(-1))[real].all()
    # the read-out is exactly tracr's one-hot form: (0, 1) for balanced and at BOS, (1, 0) otherwise
    kinds = bracket_kinds(tuple(cc.case.vocab))
    expect = np.array([[0.0, 1.0] if balanced(xs, kinds) else [1.0, 0.0] for xs in inputs])
    for b, xs in enumerate(inputs):
        np.testing.assert_array_equal(got[b, 1 : len(xs) + 1], np.broadcast_to(expect[b], (len(xs), 2)))
        np.testing.assert_array_equal(got[b, 0], [0.0, 1.0])
    tokens, lengths = tw.encode(inputs)
    assert np.abs(numpy_forward(tw.weights, tokens, lengths) - got)[real].max() <= 1e-9


def test_stack_head_attends_to_the_matching_open_bracket(compiled) -> None:
    tw = make_twin(compiled("tracr_lib/shuffle_dyck"), "dyck_stack")
    # key attended from each query position 1..4 (0 = BOS): opens and unmatched closes go to BOS
    for text, keys in {"(())": [0, 0, 2, 1], "()()": [0, 1, 0, 3], ")(()": [0, 0, 0, 3], "())(": [0, 1, 0, 0]}.items():
        p = _pattern(tw, text, 1, 0)
        expect = np.zeros((5, 5))
        expect[np.arange(1, 5), keys] = 1.0
        assert np.abs(p[1:] - expect[1:]).max() <= 1e-12, text
    # the counting head averages BOS and positions 1..p; the last head the brackets
    np.testing.assert_allclose(_pattern(tw, "()()", 0, 0)[3], [0.25, 0.25, 0.25, 0.25, 0.0], atol=1e-12)
    np.testing.assert_allclose(_pattern(tw, "()", 2, 0)[1], [0.0, 0.5, 0.5, 0.0, 0.0], atol=1e-12)
    # and the truth says the same on the evaluation inputs
    for b, xs in enumerate(tw.inputs):
        if "".join(xs) == "(())":
            assert tw.truth.patterns["L1H0"][b, 3, 2] == 1.0 and tw.truth.patterns["L1H0"][b, 4, 1] == 1.0


def test_two_kinds_get_one_stack_head_each(compiled) -> None:
    tw = make_twin(compiled("tracr_lib/shuffle_dyck2"), "dyck_stack")
    assert tw.info["twin"]["stack_heads"] == ["L1H0", "L1H1"]
    round_, curly = _pattern(tw, "({)}", 1, 0), _pattern(tw, "({)}", 1, 1)
    assert round_[3].argmax() == 1 and round_[4].argmax() == 0  # ')' finds '(' ; '}' is not its kind: BOS
    assert curly[4].argmax() == 2 and curly[3].argmax() == 0
    assert min(round_[3, 1], curly[4, 2]) >= 1.0 - 1e-12
    comp = tw.truth.component("L1H1")
    assert comp.node == "match:{}" and comp.role == "aggregate" and comp.on_output_path


def test_the_decision_flows_through_the_stack_head(compiled) -> None:
    cc = compiled("tracr_lib/shuffle_dyck")
    tw = make_twin(cc, "dyck_stack")
    inputs = domain_inputs(cc, np.random.default_rng(0))

    def no_stack(z: torch.Tensor) -> torch.Tensor:
        z = z.clone()
        z[:, :, 0] = 0.0
        return z

    plain, real = _forward(tw, inputs)
    ablated, _ = _forward(tw, inputs, {"blocks.1.attn.hook_z": no_stack})
    changed = [b for b in range(len(inputs)) if (plain[b].argmax(-1) != ablated[b].argmax(-1))[real[b]].any()]
    # without matches every bracket looks unmatched: exactly the balanced inputs flip to "no"
    assert sorted("".join(inputs[b]) for b in changed) == ["(())", "()", "()()"]
    assert (ablated.argmax(-1)[:, 1:][real[:, 1:]] == 0).all()


def test_not_applicable_to_other_cases_with_reasons(compiled) -> None:
    with pytest.raises(TwinNotApplicable, match=r"^not a Dyck case: vocabulary \['a', 'b', 'c', 'd'\]"):
        make_twin(compiled("tracr_lib/reverse"), "dyck_stack")
    cc = compiled("tracr_lib/shuffle_dyck")
    flipped = dataclasses.replace(cc, outputs=np.where(np.isnan(cc.outputs), np.nan, 1.0 - cc.outputs))
    with pytest.raises(TwinNotApplicable, match="not a Dyck case: the program's output on"):
        make_twin(flipped, "dyck_stack")
    narrow = dataclasses.replace(cc, weights=dataclasses.replace(cc.weights, key_size=6))
    with pytest.raises(TwinNotApplicable, match="key size 6 < max_seq_len"):
        make_twin(narrow, "dyck_stack")
    assert get_twin("dyck_stack").exact is False and "Wen et al. 2023" in get_twin("dyck_stack").reference


def test_raw_attention_moves_while_behaviour_does_not(compiled) -> None:
    cc = compiled("tracr_lib/shuffle_dyck")
    tw = make_twin(cc, "dyck_stack")
    method = get_method("attention_last_layer")
    base_e, twin_e = method().explain(cc, seed=0), method().explain(tw, seed=0)
    # the twin's last layer attends to every bracket alike, so each of its rows is flat, while
    # the base's last layer ranks its input positions: a ranking vanished, consistency 0 per row
    for b, i in zip(*np.nonzero(tw.truth.valid_out)):
        row = np.asarray(twin_e.token_relevance)[b, i, tw.truth.valid_in[b]]
        assert np.ptp(row) == 0.0 and np.ptp(np.asarray(base_e.token_relevance)[b, i, cc.truth.valid_in[b]]) > 0
    rows = twin_consistency(twin_e, tw, base_e)
    assert len(rows.values) == int(cc.truth.valid_out.sum()) and (rows.values == 0.0).all()
    # substitution behaviour (flip one bracket, which output changes) is identical on every domain input
    inputs = domain_inputs(cc, np.random.default_rng(0))
    other = {"(": ")", ")": "("}
    flips = [xs[:j] + [other[xs[j]]] + xs[j + 1 :] for xs in inputs for j in range(len(xs))]
    base_out, real = _forward(cc, inputs + flips)
    twin_out, _ = _forward(tw, inputs + flips)
    np.testing.assert_array_equal(base_out.argmax(-1)[real], twin_out.argmax(-1)[real])
