"""Batched position gradients, and IG / GradientShap rows built on them, equal autograd and captum on real compiles."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from interpbench.attribution_rows import Rows, embedding_forward, pad_baseline
from interpbench.compiled import CompiledCase
from interpbench.embedding_attribution import EmbeddingAttribution, seeded_global_rngs
from interpbench.jacobian_plan import jacobian_plan
from interpbench.embedding_jacobian import position_gradients
from interpbench.methods.captum_attr import GradientShap, IntegratedGradients
from interpbench.path_attributions import gradient_shap, integrated_gradients

ATOL = 1e-10

# categorical, numerical, causal, a reshuffled head, two heads per layer, attention read by nothing
CASES = [("tracr_lib/reverse", "base"), ("tracr_lib/frac_prevs", "base"), ("algorithmic/prev_token", "base"),
         ("tracr_lib/reverse", "reshuffled_attention"), ("tracr_lib/sort", "split_head"),
         ("tracr_lib/hist", "base")]  # fmt: skip


@pytest.fixture(scope="session")
def variant(compiled: Callable[[str], CompiledCase]) -> Callable[[str, str], CompiledCase]:
    """(case, variant) -> the compiled case or its twin, built once."""
    from interpbench.twins import make_twin

    memo: dict[tuple[str, str], CompiledCase] = {}

    def get(name: str, twin: str) -> CompiledCase:
        if (name, twin) not in memo:
            memo[(name, twin)] = compiled(name) if twin == "base" else make_twin(compiled(name), twin)
        return memo[(name, twin)]

    return get


def captum_integrated_gradients(case: CompiledCase, n_steps: int, method: str) -> tuple[np.ndarray, np.ndarray]:
    """captum's IntegratedGradients on every row at once (per-row targets): attributions and deltas."""
    from captum.attr import IntegratedGradients as Captum

    rows = Rows.of(case)
    with torch.no_grad():
        base = case.model.embed(torch.from_numpy(pad_baseline(case, rows.ids.numpy())))
    attr, delta = Captum(embedding_forward(case.model)).attribute(
        rows.inputs(slice(None)), baselines=base, target=rows.target, additional_forward_args=(rows.ids,),
        n_steps=n_steps, method=method, return_convergence_delta=True,
    )  # fmt: skip
    return attr.detach().numpy(), delta.detach().numpy()


def test_plan_drops_exactly_the_zero_parts_of_sort(compiled: Callable[[str], CompiledCase]) -> None:
    # tracr_lib/sort: layer 0 has an MLP and an all-zero attention, layer 1 both, layer 2
    # an attention and an all-zero MLP (checked on the weights below).
    case = compiled("tracr_lib/sort")
    blocks = case.model.blocks
    assert not blocks[0].attn.W_O.ne(0).any() and not blocks[2].mlp.W_out.ne(0).any()
    plan = jacobian_plan(case.model)
    assert [len(layer.heads) for layer in plan.layers] == [0, 1, 1]
    assert [layer.w_in is not None for layer in plan.layers] == [True, True, False]
    dims = set(plan.dims.tolist())
    assert set(plan.grad_dims.tolist()) <= dims < set(range(case.weights.d_model))
    read_out = set(np.flatnonzero(case.weights.unembed.any(1)).tolist())
    assert read_out <= dims


@pytest.mark.parametrize(("name", "twin"), CASES)
def test_position_gradients_equal_autograd(name: str, twin: str, variant: Callable[[str, str], CompiledCase]) -> None:
    case = variant(name, twin)
    model, plan = case.model, jacobian_plan(case.model)
    ids = torch.from_numpy(case.tokens[:10])
    with torch.no_grad():  # a point inside the IG path, where attention is not saturated
        x, base = model.embed(ids), model.embed(torch.from_numpy(pad_baseline(case, case.tokens[:10])))
    point = base + 0.37 * (x - base)
    c, t, _ = point.shape
    positions = torch.arange(1, t).repeat(c, 1)
    classes = torch.from_numpy((case.targets()[:10] if case.weights.categorical else np.zeros((c, t), np.int64))[:, 1:])
    ours = position_gradients(plan, point[..., plan.dims], model.key_mask(ids), positions, classes.clamp_min(0))
    emb = point.clone().requires_grad_(True)
    logits = model.forward_from_embeddings(emb, ids, model.key_mask(ids))
    token_dims = np.flatnonzero(case.weights.token_embed.any(0))
    for b in range(c):
        for l in range(t - 1):
            (grad,) = torch.autograd.grad(logits[b, l + 1, int(classes[b, l].clamp_min(0))], emb, retain_graph=True)
            full = torch.zeros_like(grad[b])
            full[:, plan.grad_dims] = ours[b, :, l]
            np.testing.assert_allclose(full[:, plan.grad_dims].numpy(), grad[b][:, plan.grad_dims].numpy(), rtol=1e-9,
                                       atol=ATOL)  # fmt: skip
            np.testing.assert_allclose(full[:, token_dims].numpy(), grad[b][:, token_dims].numpy(), rtol=1e-9,
                                       atol=ATOL)  # fmt: skip
    assert ours.abs().max() > 1e-3  # not all zero


@pytest.mark.parametrize(("name", "twin"), CASES)
def test_integrated_gradients_equal_captum(name: str, twin: str, variant: Callable[[str, str], CompiledCase]) -> None:
    case = variant(name, twin)
    for n_steps, method, size in ((32, "gausslegendre", 512), (7, "riemann_trapezoid", 5)):
        ours, delta = integrated_gradients(case, n_steps, method, size)
        theirs, their_delta = captum_integrated_gradients(case, n_steps, method)
        assert ours.shape == theirs.shape
        assert np.abs(ours.numpy() - theirs).max() <= ATOL
        assert np.abs(delta.numpy() - their_delta).max() <= ATOL


@pytest.mark.parametrize("name", ["tracr_lib/sort", "tracr_lib/reverse"])
def test_integrated_gradients_on_a_rotated_twin_equal_captum_per_token(
    name: str, variant: Callable[[str, str], CompiledCase]
) -> None:
    # Dense weights: the plan keeps every dim. Per embedding dim the two can differ: an
    # MLP unit that reads no token direction sits exactly at its ReLU kink, and in the
    # rotated basis rounding picks the side (the difference is that unit's input
    # direction, orthogonal to every token difference), so per-token sums agree.
    case = variant(name, "rotated")
    plan = jacobian_plan(case.model)
    assert len(plan.dims) == len(plan.grad_dims) == case.weights.d_model
    ours, delta = integrated_gradients(case, 32, "gausslegendre", 512)
    theirs, their_delta = captum_integrated_gradients(case, 32, "gausslegendre")
    assert np.abs(ours.numpy().sum(-1) - theirs.sum(-1)).max() <= ATOL
    assert np.abs(delta.numpy() - their_delta).max() <= ATOL


def test_a_head_without_query_key_dims_and_a_model_without_token_reads(compiled: Callable[[str], CompiledCase]) -> None:
    # frac_prevs with its head's queries zeroed attends uniformly (no query/key dims
    # left); with the read-out zeroed no logit depends on anything (no dims at all).
    import dataclasses

    base = compiled("tracr_lib/frac_prevs")
    layers = [dict(layer) for layer in base.weights.layers]
    layers[1]["w_q"], layers[1]["b_q"] = np.zeros_like(layers[1]["w_q"]), np.zeros_like(layers[1]["b_q"])
    uniform = dataclasses.replace(base, weights=dataclasses.replace(base.weights, layers=tuple(layers)))
    mute = dataclasses.replace(base, weights=dataclasses.replace(base.weights, unembed=0 * base.weights.unembed))
    assert [h.q.stop - h.q.start for h in jacobian_plan(uniform.model).layers[1].heads] == [0]
    assert len(jacobian_plan(mute.model).dims) == 0
    for case in (uniform, mute):
        ours, delta = integrated_gradients(case, 32, "gausslegendre", 512)
        theirs, their_delta = captum_integrated_gradients(case, 32, "gausslegendre")
        assert np.abs(ours.numpy() - theirs).max() <= ATOL
        assert np.abs(delta.numpy() - their_delta).max() <= ATOL
    assert np.abs(integrated_gradients(uniform, 32, "gausslegendre", 512)[0].numpy()).max() > 1e-3
    assert not integrated_gradients(mute, 32, "gausslegendre", 512)[0].numpy().any()
    rows = Rows.of(mute)
    with seeded_global_rngs(0):
        attr, _ = gradient_shap(mute, rows, mute.model.embed(torch.from_numpy(mute.tokens[:2])), 4, 8, 64)
    assert not attr.numpy().any()


@pytest.mark.parametrize(("name", "twin"), CASES)
def test_gradient_shap_equals_captum_with_the_same_draws(
    name: str, twin: str, variant: Callable[[str, str], CompiledCase]
) -> None:
    from captum.attr import GradientShap as Captum

    case = variant(name, twin)
    rows = Rows.of(case)
    for settings, seed in (({}, 0), ({"n_samples": 3, "baseline": "random", "internal_batch_size": 7}, 5)):
        method = GradientShap(**settings)
        s = method.settings
        k, chunk = int(s["n_samples"]), max(1, int(s["internal_batch_size"]) // int(s["n_samples"]))
        with torch.no_grad():
            base = case.model.embed(torch.from_numpy(method.baseline_ids(case, seed)))
        with seeded_global_rngs(seed):
            ours, delta = gradient_shap(case, rows, base, k, chunk, 64)
        with seeded_global_rngs(seed):
            theirs, their_delta = EmbeddingAttribution.attribute_from_baselines(
                Captum(embedding_forward(case.model)), rows, chunk, lambda r, b=base: b, n_samples=k, stdevs=0.0
            )  # fmt: skip
        assert np.abs(ours.numpy() - theirs).max() <= ATOL
        delta_abs = np.abs(delta.numpy())
        assert abs(delta_abs.mean() - their_delta["delta_abs_mean"]) <= ATOL
        assert abs(delta_abs.max() - their_delta["delta_abs_max"]) <= ATOL


def test_gradient_shap_with_noise_runs_captum(reverse_case: CompiledCase) -> None:
    # With stdevs > 0 the noise moves every embedding dim, also those the batched path
    # carries no gradient for, so captum runs; seeded, it repeats itself.
    a = GradientShap(stdevs=0.1, n_samples=4).explain(reverse_case, seed=1)
    b = GradientShap(stdevs=0.1, n_samples=4).explain(reverse_case, seed=1)
    np.testing.assert_array_equal(a.token_relevance, b.token_relevance)
    assert np.abs(a.token_relevance - GradientShap(n_samples=4).explain(reverse_case, seed=1).token_relevance).max() > 0


@pytest.fixture(scope="session")
def reverse_case(compiled: Callable[[str], CompiledCase]) -> CompiledCase:
    return compiled("tracr_lib/reverse")


def test_adapter_rows_are_the_batched_rows(reverse_case: CompiledCase) -> None:
    e = IntegratedGradients().explain(reverse_case)
    attr, delta = integrated_gradients(reverse_case, 32, "gausslegendre", 512)
    b, i = Rows.of(reverse_case).index
    np.testing.assert_array_equal(e.token_relevance[b, i][reverse_case.input_mask()[b]],
                                  attr.numpy().sum(-1)[reverse_case.input_mask()[b]])  # fmt: skip
    assert e.diagnostics["delta_abs_max"] == float(np.abs(delta.numpy()).max())


def test_plan_is_kept_until_a_parameter_changes_in_place(compiled: Callable[[str], CompiledCase]) -> None:
    from interpbench.runtime import build_runtime

    case = compiled("tracr_lib/frac_prevs")
    model = build_runtime(case.weights)  # a private runtime: its weights are changed below
    plan = jacobian_plan(model)
    assert jacobian_plan(model) is plan
    with torch.no_grad():
        model.W_U.mul_(2.0)
    again = jacobian_plan(model)
    assert again is not plan
    np.testing.assert_array_equal(again.unembed_back.numpy(), 2.0 * plan.unembed_back.numpy())
