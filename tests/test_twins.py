"""Adversarial twins: each transform preserves the function, and its truth follows its internals."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from interpbench import VerificationError, list_cases
from interpbench.compiled import CompiledCase
from interpbench.errors import UnknownNameError
from interpbench.runtime import build_runtime
from interpbench.twins import LOGIT_ATOL, TwinNotApplicable, get_twin, list_twins, make_twin, verify_twin
from interpbench.weights import ModelWeights, numpy_forward

NAMES = ["rotated", "qk_ov_reparam", "mlp_permuted_scaled", "split_head", "decoy_pair", "dead_decoy",
         "reshuffled_attention"]  # fmt: skip
CASE_SPECIFIC = ["dyck_stack"]  # hand-built for one family of cases (tests/test_twin_dyck.py)


def _run(cc: CompiledCase, names: list[str] | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    logits, cache = cc.model.run_with_cache(torch.from_numpy(cc.tokens), names)
    return logits.numpy(), {k: v.numpy() for k, v in cache.items()}


def _real(cc: CompiledCase) -> np.ndarray:
    return np.arange(cc.n_positions)[None, :] <= cc.lengths[:, None]


def _max_logit_diff(a: CompiledCase, b: CompiledCase) -> float:
    la, lb = _run(a, [])[0], _run(b, [])[0]
    return float(np.abs(la - lb)[_real(a)].max())


# --- the registry -------------------------------------------------------------------------


def test_registry_lists_every_twin_with_description_and_source() -> None:
    twins = list_twins()
    assert [t.name for t in twins] == NAMES + CASE_SPECIFIC
    assert {t.name for t in twins if t.exact} == {"rotated", "qk_ov_reparam", "mlp_permuted_scaled", "split_head"}
    for t in twins:
        assert t.description and "\n" not in t.description
        assert t.reference
    with pytest.raises(UnknownNameError, match="did you mean 'rotated'"):
        get_twin("rotate")


def test_make_twin_records_key_variant_and_verification(compiled) -> None:
    cc = compiled("tracr_lib/reverse")
    tw = make_twin(cc, "split_head")
    assert tw.key == f"{cc.key}:split_head"
    assert tw.info["variant"] == "split_head"
    assert tw.info["n_heads"] == 2 and tw.info["twin"]["seed"] == 0
    v = tw.info["twin_verification"]
    assert v["verified_positions"] == int(cc.truth.valid_out.sum()) > 0
    assert v["max_logit_error"] <= LOGIT_ATOL
    assert v["patterns_checked"] == 4  # L0H0, L3H0 and their second halves
    json.dumps(tw.info)  # JSON-safe
    # token-level truth is carried over unchanged
    np.testing.assert_array_equal(tw.truth.relevance, cc.truth.relevance)
    np.testing.assert_array_equal(tw.truth.graded, cc.truth.graded)
    np.testing.assert_array_equal(tw.outputs, cc.outputs)


# --- exact transforms, by hand --------------------------------------------------------------


def test_rotated_is_an_orthogonal_change_of_basis(compiled) -> None:
    cc = compiled("tracr_lib/reverse")
    tw = make_twin(cc, "rotated", seed=3)
    r = tw.weights.residual_basis
    assert r is not None and r.shape == (43, 43)
    np.testing.assert_allclose(r @ r.T, np.eye(43), atol=1e-12)
    assert np.abs(r - np.eye(43)).max() > 0.1  # really rotated
    # label i names row i of R: the twin's embeddings are the base's features in that basis
    np.testing.assert_allclose(tw.weights.token_embed, cc.weights.token_embed @ r, atol=1e-12)
    names = ["blocks.1.hook_resid_post", "blocks.3.attn.hook_pattern", "blocks.0.attn.hook_pattern"]
    base_logits, base = _run(cc, names)
    twin_logits, twin = _run(tw, names)
    np.testing.assert_allclose(twin["blocks.1.hook_resid_post"], base["blocks.1.hook_resid_post"] @ r, atol=1e-9)
    for n in names[1:]:
        np.testing.assert_allclose(twin[n], base[n], atol=1e-9)
    assert np.abs(twin_logits - base_logits)[_real(cc)].max() <= LOGIT_ATOL
    assert tw.truth.components == cc.truth.components


def test_qk_ov_reparam_changes_weights_but_not_circuits(compiled) -> None:
    cc = compiled("tracr_lib/reverse")
    tw = make_twin(cc, "qk_ov_reparam")
    for l in (0, 3):
        a, b = cc.weights.layers[l], tw.weights.layers[l]
        assert np.abs(a["w_q"] - b["w_q"]).max() > 0.1 and np.abs(a["w_o"] - b["w_o"]).max() > 0.1
        qk = lambda w: w["w_q"][0] @ w["w_k"][0].T  # noqa: E731
        ov = lambda w: w["w_v"][0] @ w["w_o"][0]  # noqa: E731
        np.testing.assert_allclose(qk(b), qk(a), atol=1e-9 * np.abs(qk(a)).max())
        np.testing.assert_allclose(ov(b), ov(a), atol=1e-12)
    assert tw.info["twin"]["heads"] == ["L0H0", "L3H0"]
    assert 1.0 < tw.info["twin"]["max_condition_number"] <= np.exp(2.0)
    assert _max_logit_diff(cc, tw) <= LOGIT_ATOL


def test_mlp_permuted_scaled_maps_neurons(compiled) -> None:
    cc = compiled("tracr_lib/reverse")
    tw = make_twin(cc, "mlp_permuted_scaled")
    where = tw.info["twin"]["permutation"]
    assert sorted(where[1]) == list(range(30)) and where[1] != list(range(30))
    _, base = _run(cc, ["blocks.1.mlp.hook_post"])
    _, twin = _run(tw, ["blocks.1.mlp.hook_post"])
    w_b, w_t = cc.weights.layers[1], tw.weights.layers[1]
    for i in range(30):
        j = where[1][i]
        col = np.append(w_b["w_in"][:, i], w_b["b_in"][i])
        k = int(np.abs(col).argmax())
        c = np.append(w_t["w_in"][:, j], w_t["b_in"][j])[k] / col[k]  # the neuron's scale
        assert np.exp(-1) <= c <= np.exp(1)
        np.testing.assert_allclose(np.append(w_t["w_in"][:, j], w_t["b_in"][j]), c * col, atol=1e-12)
        post_t, post_b = twin["blocks.1.mlp.hook_post"][..., j], base["blocks.1.mlp.hook_post"][..., i]
        np.testing.assert_allclose(post_t, c * post_b, atol=1e-9)
        np.testing.assert_allclose(w_t["w_out"][j] * c, w_b["w_out"][i], atol=1e-12)
    for a, b in zip(cc.truth.components, tw.truth.components):
        assert (a.name, a.node) == (b.name, b.node)
        assert b.neurons == tuple(sorted(where[a.layer][i] for i in a.neurons))
    assert _max_logit_diff(cc, tw) <= LOGIT_ATOL


def test_split_head_halves_sum_to_the_base_head(compiled) -> None:
    cc = compiled("tracr_lib/reverse")
    tw = make_twin(cc, "split_head")
    assert tw.info["twin"]["split"] == {"L0H0": ["L0H0", "L0H1"], "L3H0": ["L3H0", "L3H1"]}
    assert tw.weights.n_heads == 2
    _, base = _run(cc, ["blocks.3.attn.hook_z"])
    _, twin = _run(tw, ["blocks.3.attn.hook_z", "blocks.3.attn.hook_pattern"])
    w_b, w_t = cc.weights.layers[3]["w_o"], tw.weights.layers[3]["w_o"]
    halves = [twin["blocks.3.attn.hook_z"][:, :, h] @ w_t[h] for h in (0, 1)]
    np.testing.assert_allclose(halves[0], halves[1], atol=1e-12)
    np.testing.assert_allclose(halves[0] + halves[1], base["blocks.3.attn.hook_z"][:, :, 0] @ w_b[0], atol=1e-12)
    rows = tw.truth.pattern_rows
    for h in (0, 1):
        got = twin["blocks.3.attn.hook_pattern"][:, h]
        assert np.abs(got - tw.truth.patterns[f"L3H{h}"])[rows].max() <= 1e-4
    first, second = tw.truth.component("L3H0"), tw.truth.component("L3H1")
    assert (second.node, second.role, second.head) == (first.node, "aggregate", 1)
    assert tw.truth.component("L1H1").role == "inert" and tw.truth.component("L1H1").node is None
    edges = {(e.src, e.dst) for e in tw.truth.edges}
    assert {("L2MLP", "L3H0"), ("L2MLP", "L3H1"), ("L3H0", "unembed"), ("L3H1", "unembed")} <= edges
    assert {("L0H1", "L0MLP")} <= edges


# --- decoys and reshuffled attention ---------------------------------------------------------


def _previous_token_pattern(cc: CompiledCase) -> np.ndarray:
    """[n, pos, pos]: query at position p >= 2 on key p - 1, position 1 on BOS (worked by hand)."""
    n, t = cc.tokens.shape
    want = np.zeros((n, t, t))
    for p in range(1, t):
        want[:, p, p - 1 if p >= 2 else 0] = 1.0
    return want


def test_decoy_pair_each_alone_changes_outputs_together_nothing(compiled) -> None:
    cc = compiled("tracr_lib/reverse")
    tw = make_twin(cc, "decoy_pair")
    assert tw.info["twin"]["decoys"] == ["L3H1", "L3H2"] and tw.weights.n_heads == 3
    assert _max_logit_diff(cc, tw) <= LOGIT_ATOL
    _, cache = _run(tw, ["blocks.3.attn.hook_pattern"])
    rows = cc.input_mask()
    for h in (1, 2):
        got = cache["blocks.3.attn.hook_pattern"][:, h]
        assert np.abs(got - _previous_token_pattern(cc))[rows].max() <= 1e-6  # sharp and plausible
        comp = tw.truth.component(f"L3H{h}")
        assert comp.role == "inert" and comp.node is None and comp.inert
        assert set(comp.writes) <= {lab for lab in cc.weights.residual_labels if lab.startswith("reverse_1:")}
        assert f"L3H{h}" not in tw.truth.patterns
    tokens, defined = torch.from_numpy(cc.tokens), cc.truth.valid_out
    for partner in (2, 1):

        def ablate(z: torch.Tensor, partner: int = partner) -> torch.Tensor:
            z = z.clone()
            z[:, :, partner] = 0.0
            return z

        with torch.no_grad(), tw.model.hooks({"blocks.3.attn.hook_z": ablate}):
            alone = tw.decode(tw.model(tokens).numpy())
        assert (alone != cc.outputs)[defined].any()


def test_dead_decoy_writes_a_direction_nobody_reads(compiled) -> None:
    cc = compiled("tracr_lib/reverse")
    tw = make_twin(cc, "dead_decoy")
    w = tw.weights
    assert w.d_model == cc.weights.d_model + 1 and w.residual_labels[-1] == "decoy:dead"
    for layer in w.layers:
        for k in ("w_q", "w_k", "w_v"):
            assert not layer[k][:, -1].any()
        assert not layer["w_in"][-1].any()
    assert not w.unembed[-1].any()
    _, cache = _run(tw, ["blocks.0.attn.hook_pattern", "blocks.3.hook_resid_post"])
    rows = cc.input_mask()
    got = cache["blocks.0.attn.hook_pattern"][:, 1]
    assert np.abs(got - _previous_token_pattern(cc))[rows].max() <= 1e-6
    dead = cache["blocks.3.hook_resid_post"][..., -1]
    assert dead[:, 2:][rows[:, 2:]].min() >= 1.0 - 1e-6  # the previous token's bucket + 1
    assert np.abs(dead[:, 1]).max() <= 1e-6  # the first token attends BOS, whose value is 0
    # the twin's logits are bit-for-bit the base model's: nothing reads the new direction
    np.testing.assert_array_equal(_run(tw, [])[0][_real(cc)], _run(cc, [])[0][_real(cc)])
    assert tw.truth.component("L0H1").role == "inert" and tw.truth.component("L0H1").writes == ("decoy:dead",)


def test_reshuffled_attention_moves_attention_not_outputs(compiled) -> None:
    cc = compiled("tracr_lib/hist")
    tw = make_twin(cc, "reshuffled_attention")
    assert tw.weights.reshuffled_heads == ((0, 0),)
    assert _max_logit_diff(cc, tw) <= LOGIT_ATOL
    _, base = _run(cc, ["blocks.0.attn.hook_pattern"])
    _, twin = _run(tw, ["blocks.0.attn.hook_pattern"])
    # hist's head is a SelectorWidth: BOS always, plus the keys with the query's token. Every
    # token key has the same (zero) value, so their mass spreads over all of them; on
    # "a a b" the query at the first "a" had 1/3 on BOS and on each "a", and now has
    # 1/3 on BOS and 2/9 on each token: a total-variation distance of 2/9.
    b = next(i for i, xs in enumerate(cc.inputs) if xs[:2] == [xs[0], xs[0]] and len(set(xs)) > 1)
    n = int(cc.lengths[b])
    same = sum(1 for x in cc.inputs[b] if x == cc.inputs[b][0])
    row = twin["blocks.0.attn.hook_pattern"][b, 0, 1, : n + 1]
    want = np.array([1 / (same + 1)] + [same / (same + 1) / n] * n)
    np.testing.assert_allclose(row, want, atol=1e-6)
    before = base["blocks.0.attn.hook_pattern"][b, 0, 1, : n + 1]
    s_ = same / (same + 1)
    tv_row = 0.5 * (same * abs(1 / (same + 1) - s_ / n) + (n - same) * s_ / n)
    assert 0.5 * np.abs(row - before).sum() == pytest.approx(tv_row, abs=1e-6)
    tv = 0.5 * np.abs(twin["blocks.0.attn.hook_pattern"][:, 0] - base["blocks.0.attn.hook_pattern"][:, 0]).sum(-1)
    mean_tv = tv[cc.input_mask()].mean()
    assert mean_tv > 0.1
    assert tw.info["twin"]["reshuffled"]["L0H0"]["mean_tv"] == pytest.approx(mean_tv, abs=1e-9)
    np.testing.assert_allclose(twin["blocks.0.attn.hook_pattern"][:, 0].sum(-1)[cc.input_mask()], 1.0, atol=1e-12)
    # the truth keeps the selector pattern; verification records how far the head moved
    assert "L0H0" in tw.truth.patterns
    assert tw.info["twin_verification"]["reshuffled_tv_from_truth"]["L0H0"] > 0.1


def test_not_applicable_says_why(compiled) -> None:
    with pytest.raises(TwinNotApplicable, match="no MLP neurons to permute"):
        make_twin(compiled("tracr_lib/shift_by"), "mlp_permuted_scaled")
    with pytest.raises(TwinNotApplicable, match="no head attends unequally"):
        make_twin(compiled("tracr_lib/length"), "reshuffled_attention")  # all-true selector: already uniform


# --- verification can fail ---------------------------------------------------------------------


def test_verification_refuses_a_twin_that_changes_the_function(compiled) -> None:
    cc = compiled("tracr_lib/reverse")
    good = make_twin(cc, "split_head")
    layers = [dict(layer) for layer in good.weights.layers]
    layers[3]["w_o"] = layers[3]["w_o"].copy()
    layers[3]["w_o"][1] = 0.0  # drop one half: outputs halve, argmax may survive, logits do not
    bad = dataclasses.replace(good, weights=dataclasses.replace(good.weights, layers=tuple(layers)))
    with pytest.raises(VerificationError, match="read-out differs"):
        verify_twin(cc, bad)
    patterns = {**good.truth.patterns, "L3H1": good.truth.patterns["L0H0"]}
    wrong_truth = dataclasses.replace(good.truth, patterns=patterns)
    with pytest.raises(VerificationError, match="head L3H1"):
        verify_twin(cc, dataclasses.replace(good, truth=wrong_truth))
    flipped = dataclasses.replace(cc.weights, unembed=-cc.weights.unembed)
    with pytest.raises(VerificationError, match="decoded output differs"):
        verify_twin(cc, dataclasses.replace(cc, weights=flipped), logit_atol=None)


# --- saving, numpy reference, determinism ----------------------------------------------------


@pytest.mark.parametrize("variant", NAMES)
def test_twin_saves_loads_and_matches_numpy_forward(variant: str, compiled, tmp_path: Path) -> None:
    cc = compiled("tracr_lib/reverse")
    tw = make_twin(cc, variant)
    tw.save(tmp_path)
    back = CompiledCase.load(cc.case, tmp_path)
    assert back.key == tw.key and back.info == json.loads(json.dumps(tw.info))
    assert back.truth.components == tw.truth.components and back.truth.edges == tw.truth.edges
    assert set(back.truth.patterns) == set(tw.truth.patterns)
    _assert_same_weights(back.weights, tw.weights)
    ours = back.model(torch.from_numpy(back.tokens)).numpy()
    np.testing.assert_array_equal(ours, tw.model(torch.from_numpy(tw.tokens)).numpy())
    assert np.abs(numpy_forward(back.weights, back.tokens, back.lengths) - ours).max() <= 1e-9


def test_base_files_unchanged_by_twin_fields(compiled, tmp_path: Path) -> None:
    cc = compiled("tracr_lib/hist")
    cc.weights.save(tmp_path)
    assert "reshuffled_heads" not in json.loads((tmp_path / "model.json").read_text())
    with np.load(tmp_path / "weights.npz") as z:
        assert "residual_basis" not in z.files
    back = ModelWeights.load(tmp_path)
    assert back.residual_basis is None and back.reshuffled_heads == ()


def _assert_same_weights(a: ModelWeights, b: ModelWeights) -> None:
    assert a.meta() == b.meta() and a.reshuffled_heads == b.reshuffled_heads
    arr_a, arr_b = a.arrays(), b.arrays()
    assert arr_a.keys() == arr_b.keys()
    for k in arr_a:
        np.testing.assert_array_equal(arr_a[k], arr_b[k], err_msg=k)


@pytest.mark.parametrize("variant", ["rotated", "qk_ov_reparam", "mlp_permuted_scaled", "decoy_pair"])
def test_same_seed_same_twin(variant: str, compiled) -> None:
    cc = compiled("tracr_lib/reverse")
    _assert_same_weights(make_twin(cc, variant, seed=5).weights, make_twin(cc, variant, seed=5).weights)
    other = make_twin(cc, variant, seed=6).weights.arrays()
    assert any(not np.array_equal(v, other[k]) for k, v in make_twin(cc, variant, seed=5).weights.arrays().items())


def test_runtime_reshuffle_equals_numpy_reshuffle(compiled) -> None:
    cc = compiled("tracr_lib/reverse")
    tw = make_twin(cc, "reshuffled_attention")
    runtime = build_runtime(tw.weights)(torch.from_numpy(tw.tokens)).numpy()
    assert np.abs(numpy_forward(tw.weights, tw.tokens, tw.lengths) - runtime).max() <= 1e-9
    # without the rule the patterns differ, but the outputs are still the same function
    plain = dataclasses.replace(tw.weights, reshuffled_heads=())
    assert np.abs(numpy_forward(plain, tw.tokens, tw.lengths) - runtime)[_real(cc)].max() <= LOGIT_ATOL


# --- every case x every twin (slow) ----------------------------------------------------------


def _expect_applicable(cc: CompiledCase, variant: str) -> bool:
    """Applicability from the case's structure, not from the transforms."""
    heads = [c for c in cc.truth.components if c.kind == "head" and c.node is not None]
    if variant in ("qk_ov_reparam", "split_head"):
        return bool(heads)
    if variant == "mlp_permuted_scaled":
        return any(c.kind == "mlp" and c.node is not None and c.neurons for c in cc.truth.components)
    if variant == "reshuffled_attention":
        # Nothing moves where every true pattern is already uniform over BOS and all tokens
        # (SelectorWidth of an all-true selector, as in `length`).
        keys = _real(cc)[:, None, :].astype(float)
        rows = cc.truth.pattern_rows
        flat = np.broadcast_to(keys / keys.sum(-1, keepdims=True), (*rows.shape, rows.shape[1]))
        return not all(np.allclose(cc.truth.patterns[c.name][rows], flat[rows]) for c in heads)
    if variant == "dyck_stack":  # Shuffle-Dyck cases: a vocabulary of bracket pairs
        return set(cc.case.vocab) <= set("()[]{}<>")
    return True  # rotated, decoy_pair, dead_decoy apply to every case


@pytest.mark.slow
@pytest.mark.parametrize("name", [c.full_name for c in list_cases()])
def test_every_twin_of_every_case_verifies_or_says_why(name: str, compiled) -> None:
    cc = compiled(name)
    matrix = {}
    for t in list_twins():
        try:
            tw = make_twin(cc, t.name)
        except TwinNotApplicable as exc:
            reason = str(exc)
            assert reason and "\n" not in reason
            matrix[t.name] = f"n/a: {reason}"
            continue
        v = tw.info["twin_verification"]
        assert v["max_logit_error"] <= LOGIT_ATOL and v["exact"] == t.exact
        assert v["verified_positions"] == int(cc.truth.valid_out.sum())
        moved = set(tw.weights.reshuffled_heads)
        heads = [tw.truth.component(k) for k in tw.truth.patterns]
        assert v["patterns_checked"] == sum(1 for c in heads if (c.layer, c.head) not in moved)
        ref = numpy_forward(tw.weights, tw.tokens, tw.lengths)
        assert np.abs(ref - tw.model(torch.from_numpy(tw.tokens)).numpy()).max() <= 1e-9
        matrix[t.name] = "ok"
    got = {k: v == "ok" for k, v in matrix.items()}
    assert got == {t.name: _expect_applicable(cc, t.name) for t in list_twins()}, matrix


@pytest.mark.parametrize("case", ["tracr_lib/reverse", "algorithmic/double_hist", "tracr_lib/frac_prevs"])
def test_twins_preserve_the_function_off_the_evaluation_inputs(case: str, compiled) -> None:
    """Behaviour-only methods query the model on perturbed inputs: PAD in place of tokens, keys hidden.

    Every twin must give the base model's read-out there too, not only on the evaluation
    inputs it was verified on; this is why the run skips behaviour-only methods on twins.
    """
    base = compiled(case)
    rng = np.random.default_rng(0)
    n, t = 64, base.n_positions
    w = base.weights
    real = [i for i in range(len(w.input_tokens)) if i != w.bos_id]  # real tokens and PAD
    tokens = rng.choice(real, size=(n, t))
    tokens[:, 0] = w.bos_id
    mask = rng.random((n, t)) < 0.7
    mask[:, 0] = True
    ids, keys = torch.from_numpy(tokens), torch.from_numpy(mask)
    with torch.no_grad():
        want = base.model(ids, keys).numpy()
        for t in list_twins():
            try:
                twin = make_twin(base, t.name)
            except TwinNotApplicable:
                continue
            got = twin.model(ids, keys).numpy()
            assert t.everywhere and np.abs(got - want).max() <= LOGIT_ATOL, t.name


def test_a_twin_built_for_the_domain_says_so(compiled) -> None:
    """dyck_stack is built by hand for the Dyck domain: off it (PAD inside, hidden keys) it differs,
    so it is not `everywhere` and behaviour-only methods do run on it."""
    base = compiled("tracr_lib/shuffle_dyck")
    twin = make_twin(base, "dyck_stack")
    assert not get_twin("dyck_stack").everywhere
    w = base.weights
    tokens = base.tokens.copy()
    tokens[:, 1] = np.where(base.lengths > 0, w.pad_id, tokens[:, 1])  # a PAD substitution, as perturbations do
    ids, keys = torch.from_numpy(tokens), torch.from_numpy(base.tokens != w.pad_id)
    with torch.no_grad():
        assert np.abs(twin.model(ids, keys).numpy() - base.model(ids, keys).numpy()).max() > 0.5
