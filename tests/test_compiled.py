"""Compiling every case, the artefact cache, verification and label stability."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from tracr.rasp import rasp

from interpbench import VerificationError, get_case, list_cases
from interpbench.compiled import CompiledCase, cache_root, case_key, compile_case
from interpbench.program import evaluate, relabel

FAST = {
    "tracr_lib/reverse",
    "tracr_lib/hist",
    "tracr_lib/length",
    "tracr_lib/frac_prevs",
    "tracr_lib/shift_by",
}
NUMERIC_ATOL = 1e-4  # tracr's numerical MLPs are approximate


def _case_params() -> list:
    return [
        pytest.param(c.full_name, id=c.full_name, marks=() if c.full_name in FAST else pytest.mark.slow)
        for c in list_cases()
    ]


def test_fast_cases_are_registered() -> None:
    names = {c.full_name for c in list_cases()}
    assert FAST <= names


@pytest.mark.parametrize("name", _case_params())
def test_case_compiles_and_model_matches_rasp(name: str, compiled) -> None:
    cc = compiled(name)
    case = cc.case
    assert cc.tokens.shape == (case.n_eval, case.max_seq_len + 1)
    assert cc.lengths.shape == (case.n_eval,)
    assert (cc.tokens[:, 0] == cc.weights.bos_id).all()
    for xs in cc.inputs:
        assert case.domain.contains(xs, case.vocab, case.max_seq_len), xs

    # Independently of the cache: run the model and compare with a fresh RASP evaluation.
    program = relabel(case.program())
    decoded = cc.decode(cc.model(torch.from_numpy(cc.tokens)).numpy())
    valid_out = cc.truth.valid_out
    checked = 0
    for b, xs in enumerate(cc.inputs):
        assert (cc.tokens[b, len(xs) + 1 :] == cc.weights.pad_id).all()
        for i, want in enumerate(evaluate(program, xs)):
            p = i + 1
            if want is None:
                assert not valid_out[b, p] and np.isnan(cc.outputs[b, p])
                continue
            assert valid_out[b, p]
            if cc.weights.categorical:
                assert cc.weights.output_values[int(cc.outputs[b, p])] == want
                assert cc.weights.output_values[int(decoded[b, p])] == want, (xs, i)
            else:
                assert cc.outputs[b, p] == pytest.approx(float(want), abs=1e-12)
                assert abs(decoded[b, p] - float(want)) <= NUMERIC_ATOL, (xs, i)
            checked += 1
    assert checked > 0
    assert not valid_out[:, 0].any()
    assert cc.info["verified_positions"] == checked == int(valid_out.sum())
    assert cc.info["max_residual_error"] <= 1e-6


# --- the artefact cache ------------------------------------------------------------------


def _assert_same(a: CompiledCase, b: CompiledCase) -> None:
    assert a.key == b.key
    for name in ("tokens", "lengths", "outputs"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)
    wa, wb = a.weights.arrays(), b.weights.arrays()
    assert wa.keys() == wb.keys()
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)
    assert a.weights.meta() == b.weights.meta()
    ta, tb = a.truth.arrays(), b.truth.arrays()
    assert ta.keys() == tb.keys()
    for k in ta:
        assert ta[k].dtype == tb[k].dtype, k
        np.testing.assert_array_equal(ta[k], tb[k], err_msg=k)
    assert a.truth.components == b.truth.components
    assert a.truth.edges == b.truth.edges
    assert a.truth.n_undefined_outputs == b.truth.n_undefined_outputs
    assert a.truth.program_graph == b.truth.program_graph
    assert a.info == b.info


@pytest.mark.parametrize("name", ["tracr_lib/reverse", "tracr_lib/frac_prevs", "tracr_lib/shift_by"])
def test_save_load_round_trip(name: str, compiled, tmp_path: Path) -> None:
    cc = compiled(name)
    folder = tmp_path / "art"
    cc.save(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert {"weights.npz", "model.json", "data.npz", "truth.npz", "case.json"} <= set(manifest)
    back = CompiledCase.load(cc.case, folder)
    _assert_same(cc, back)
    # Saving the loaded copy reproduces the same files byte for byte.
    again = tmp_path / "again"
    back.save(again)
    assert json.loads((again / "manifest.json").read_text()) == manifest


def _flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    for k in range(mid, mid + 8):
        data[k] ^= 0xFF
    path.write_bytes(bytes(data))


def test_load_refuses_a_corrupted_file(compiled, tmp_path: Path) -> None:
    cc = compiled("tracr_lib/hist")
    cc.save(tmp_path)
    _flip_bytes(tmp_path / "data.npz")
    with pytest.raises(ValueError, match="data.npz"):
        CompiledCase.load(cc.case, tmp_path)


def test_corrupted_cache_is_detected_and_rebuilt(compiled, tmp_path: Path, monkeypatch) -> None:
    name = "tracr_lib/hist"
    good = compiled(name)
    case = good.case
    monkeypatch.setenv("INTERPBENCH_CACHE", str(tmp_path))
    assert cache_root() == tmp_path
    folder = tmp_path / "compiled" / f"{case.suite}__{case.name}-{case_key(case)}"
    good.save(folder)  # seed the private cache with a good artefact
    assert compile_case(case).key == good.key  # served from the seeded folder

    _flip_bytes(folder / "data.npz")
    corrupted = (folder / "data.npz").read_bytes()
    rebuilt = compile_case(case)
    _assert_same(good, rebuilt)
    # The cache now holds a fresh, intact artefact again.
    assert (folder / "data.npz").read_bytes() != corrupted
    reloaded = CompiledCase.load(case, folder)
    _assert_same(good, reloaded)
    assert [p for p in (tmp_path / "compiled").iterdir() if p.name.startswith(".")] == []


# --- verification bites -------------------------------------------------------------------


def test_miscompiled_causal_reverse_is_refused() -> None:
    # reverse reads later positions; under a causal mask tracr still compiles it, silently wrong.
    case = dataclasses.replace(get_case("tracr_lib/reverse"), causal=True)
    with pytest.raises(VerificationError) as info:
        compile_case(case, use_cache=False)
    msg = str(info.value)
    assert "tracr_lib/reverse" in msg
    assert re.search(r"input \[('[a-d]'(, )?)+\]", msg), msg


# --- label stability ----------------------------------------------------------------------


def _components(name: str):
    from interpbench import compile as stage

    stages = stage.rasp_to_stages(get_case(name))
    return stage.stages_to_components(stages)


def _bump_counter(n: int = 101) -> None:
    for _ in range(n):
        _ = rasp.Map(lambda x: x, rasp.tokens).label


def test_component_labels_are_stable_within_a_process(compiled) -> None:
    first_comps, first_edges = _components("tracr_lib/reverse")
    _components("tracr_lib/length")  # other compiles in between draw from tracr's counter
    _components("tracr_lib/hist")
    _bump_counter()
    second_comps, second_edges = _components("tracr_lib/reverse")
    assert [c.node for c in first_comps] == [c.node for c in second_comps]
    assert first_comps == second_comps
    assert first_edges == second_edges
    assert any(c.node and c.node.startswith("length_") for c in first_comps)
    # ...and equal to what the cached (possibly other-process) compile recorded.
    cached = compiled("tracr_lib/reverse").truth
    assert tuple(first_comps) == cached.components
    assert tuple(first_edges) == cached.edges


def test_component_labels_survive_another_case_using_lib_globals() -> None:
    # reverse and shuffle_dyck both use tracr's module-level `lib.length`, at different
    # places in their graphs; labelling shuffle_dyck gives that shared object another id.
    from tracr.compiler import lib

    a, _ = _components("tracr_lib/reverse")
    in_reverse = lib.length.label
    relabel(get_case("tracr_lib/shuffle_dyck").program())
    assert lib.length.label != in_reverse  # the hazard is real
    b, _ = _components("tracr_lib/reverse")
    assert [(c.name, c.node) for c in a] == [(c.name, c.node) for c in b]
    assert in_reverse in {c.node for c in b}


# --- regressions: NaN must never verify; the cache key must see the domain's code ------------


def test_verify_refuses_a_model_that_outputs_nan(compiled) -> None:
    from interpbench import compile as stage
    from interpbench.compiled import verify

    cc = compiled("tracr_lib/frac_prevs")
    stages = stage.rasp_to_stages(cc.case)
    verify(cc, stages)  # the real model passes
    poisoned = dataclasses.replace(
        cc, weights=dataclasses.replace(cc.weights, unembed=np.full_like(cc.weights.unembed, np.nan))
    )
    assert np.isnan(poisoned.decode(poisoned.model(torch.from_numpy(poisoned.tokens)).numpy())).all()
    with pytest.raises(VerificationError):
        verify(poisoned, stages)


def test_case_key_changes_when_the_domain_predicate_changes() -> None:
    from interpbench import Domain

    case = get_case("tracr_lib/frac_prevs")

    def precondition(xs):
        return len(xs) % 2 == 0

    even = dataclasses.replace(case, domain=Domain(predicate=precondition))

    def precondition(xs):  # noqa: F811 - same name, different body, as after editing a suite
        return True

    anything = dataclasses.replace(case, domain=Domain(predicate=precondition))
    # The two domains draw different evaluation inputs, so they must not share artefacts.
    rng = np.random.default_rng(0)
    assert any(len(x) % 2 for x in anything.domain.sample(rng, 20, case.vocab, case.max_seq_len))
    assert case_key(even) != case_key(anything)


def test_runtime_built_under_inference_mode_still_supports_autograd(compiled) -> None:
    """The cached runtime must not inherit a caller's inference mode (it would poison every later gradient method)."""
    import dataclasses

    import torch

    cc = dataclasses.replace(compiled("tracr_lib/reverse"))  # a fresh copy: its model is not built yet
    with torch.inference_mode():
        cc.model(torch.from_numpy(cc.tokens[:2]))
    emb = cc.model.embed(torch.from_numpy(cc.tokens[:2])).detach().requires_grad_(True)
    out = cc.model.forward_from_embeddings(emb, torch.from_numpy(cc.tokens[:2]))
    out.sum().backward()
    assert emb.grad is not None


def test_tracr_padded_forward_equals_its_forward_per_length(compiled) -> None:  # noqa: ANN001
    import jax
    import jax.numpy as jnp

    from interpbench import compile as stage

    case = compiled("tracr_lib/frac_prevs")
    stages = stage.rasp_to_stages(case.case)
    padded = stage.tracr_residuals(stages, case.tokens, case.weights.pad_id)
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype=jnp.float64), stages.assembled.params)
    for length in sorted(set(case.lengths.tolist()))[:3]:
        rows = np.flatnonzero(case.lengths == length)
        out = stages.assembled.forward(params, jnp.asarray(case.tokens[rows, : length + 1])).transformer_output
        plain = [np.asarray(out.input_embeddings)] + [np.asarray(r) for r in out.residuals]
        assert len(plain) == len(padded) == 1 + 2 * case.weights.n_layers
        for mine, ref in zip(padded, plain):
            np.testing.assert_allclose(mine[rows, : length + 1], ref, rtol=0, atol=1e-12)


def test_verification_catches_a_residual_drift_that_leaves_outputs_right(compiled) -> None:  # noqa: ANN001
    from interpbench import compile as stage
    from interpbench.compiled import verify

    case = compiled("tracr_lib/reverse")
    stages = stage.rasp_to_stages(case.case)
    assert verify(case, stages)["max_residual_error"] <= 1e-6
    pos = case.weights.pos_embed.copy()
    pos[1:, :] += 1e-4  # a drift of every residual direction, far below what flips a decoded output
    drifted = dataclasses.replace(case, weights=dataclasses.replace(case.weights, pos_embed=pos))
    assert np.array_equal(drifted.decode(drifted.model(torch.from_numpy(drifted.tokens)).detach().numpy())[case.output_mask()],
                          case.outputs[case.output_mask()])  # fmt: skip
    with pytest.raises(VerificationError, match="residual stream differs from tracr's"):
        verify(drifted, stages)
