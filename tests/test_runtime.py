"""The torch runtime: equal to the numpy reference, batch-invariant, and hookable."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interpbench.weights import numpy_forward

CASES = ["tracr_lib/reverse", "tracr_lib/hist", "tracr_lib/frac_prevs", "tracr_lib/shift_by"]


@pytest.mark.parametrize("name", CASES)
def test_runtime_equals_numpy_forward(name: str, compiled) -> None:
    cc = compiled(name)
    ours = cc.model(torch.from_numpy(cc.tokens))
    assert ours.dtype == torch.float64
    ref = numpy_forward(cc.weights, cc.tokens, cc.lengths)
    assert ours.shape == ref.shape == (*cc.tokens.shape, cc.weights.unembed.shape[1])
    # Every position, BOS and PAD rows included: both mask PAD keys the same way.
    assert np.abs(ours.numpy() - ref).max() <= 1e-9


@pytest.mark.parametrize("name", CASES)
def test_padded_batch_equals_each_sequence_alone(name: str, compiled) -> None:
    cc = compiled(name)
    assert len(set(cc.lengths.tolist())) > 1  # the batch really mixes lengths
    batch = cc.model(torch.from_numpy(cc.tokens)).numpy()
    for b, n in enumerate(cc.lengths.tolist()):
        alone = cc.model(torch.from_numpy(cc.tokens[b : b + 1, : n + 1])).numpy()[0]
        np.testing.assert_array_equal(batch[b, : n + 1], alone, err_msg=str(cc.inputs[b]))


def test_hook_names(compiled) -> None:
    cc = compiled("tracr_lib/reverse")
    names = cc.model.hook_names()
    assert len(names) == len(set(names))
    required = ["hook_embed", "hook_pos_embed", "hook_logits"]
    for l in range(cc.weights.n_layers):
        required += [
            f"blocks.{l}.hook_resid_pre",
            f"blocks.{l}.attn.hook_q",
            f"blocks.{l}.attn.hook_k",
            f"blocks.{l}.attn.hook_v",
            f"blocks.{l}.attn.hook_attn_scores",
            f"blocks.{l}.attn.hook_pattern",
            f"blocks.{l}.attn.hook_z",
            f"blocks.{l}.hook_attn_out",
            f"blocks.{l}.hook_resid_mid",
            f"blocks.{l}.mlp.hook_pre",
            f"blocks.{l}.mlp.hook_post",
            f"blocks.{l}.hook_mlp_out",
            f"blocks.{l}.hook_resid_post",
        ]
    assert set(required) <= set(names)


def test_cached_activation_shapes(compiled) -> None:
    cc = compiled("tracr_lib/reverse")
    w = cc.weights
    tokens = torch.from_numpy(cc.tokens)
    b, t = tokens.shape
    logits, cache = cc.model.run_with_cache(tokens)
    assert set(cache) == set(cc.model.hook_names())
    assert cache["hook_embed"].shape == (b, t, w.d_model)
    assert cache["hook_pos_embed"].shape[-2:] == (t, w.d_model)
    assert cache["blocks.0.attn.hook_pattern"].shape == (b, w.n_heads, t, t)
    assert cache["blocks.0.attn.hook_q"].shape == (b, t, w.n_heads, w.key_size)
    assert cache["blocks.0.mlp.hook_post"].shape == (b, t, w.layers[0]["w_in"].shape[1])
    last = w.n_layers - 1
    torch.testing.assert_close(cache[f"blocks.{last}.hook_resid_post"] @ cc.model.W_U, logits, rtol=0, atol=0)
    torch.testing.assert_close(cache["hook_logits"], logits, rtol=0, atol=0)
    # Pattern rows are distributions, and PAD keys get no weight.
    pattern = cache["blocks.0.attn.hook_pattern"]
    torch.testing.assert_close(pattern.sum(-1), torch.ones_like(pattern.sum(-1)))
    pad_keys = torch.from_numpy(cc.tokens == w.pad_id)[:, None, None, :].expand_as(pattern)
    assert pattern[pad_keys].abs().max() == 0


def _aggregate_head(cc):
    heads = [c for c in cc.truth.components if c.kind == "head" and c.role == "aggregate"]
    return max(heads, key=lambda c: (c.layer, c.head))


def test_hooks_replace_activation_and_are_removed(compiled) -> None:
    cc = compiled("tracr_lib/reverse")
    model = cc.model
    tokens = torch.from_numpy(cc.tokens)
    head = _aggregate_head(cc)
    before = model(tokens)

    seen = []

    def zero_head(pattern: torch.Tensor) -> torch.Tensor:
        seen.append(pattern.shape)
        out = pattern.clone()
        out[:, head.head] = 0.0
        return out

    with model.hooks({f"blocks.{head.layer}.attn.hook_pattern": zero_head}):
        ablated = model(tokens)
    assert seen, "hook never ran"
    real = torch.from_numpy(cc.truth.valid_out)
    assert not torch.equal(ablated[real], before[real])
    # With the reading head silenced, the decoded outputs no longer match the program.
    decoded = cc.decode(ablated.numpy())
    assert (decoded[cc.truth.valid_out] != cc.outputs[cc.truth.valid_out]).any()

    # After the context, the hook is gone and the forward is unchanged.
    after = model(tokens)
    assert torch.equal(after, before)
    assert all(len(m._forward_hooks) == 0 for m in model.modules())


def test_hook_returning_none_only_observes(compiled) -> None:
    cc = compiled("tracr_lib/hist")
    model = cc.model
    tokens = torch.from_numpy(cc.tokens)
    before = model(tokens)
    kept = {}

    def observe(x: torch.Tensor) -> None:
        kept["x"] = x.clone()

    with model.hooks({"blocks.0.mlp.hook_post": observe}):
        during = model(tokens)
    assert torch.equal(before, during)
    assert kept["x"].shape[:2] == tokens.shape


def test_hooks_are_removed_even_when_the_body_raises(compiled) -> None:
    cc = compiled("tracr_lib/hist")
    model = cc.model
    with pytest.raises(RuntimeError, match="boom"):
        with model.hooks({"hook_embed": lambda x: torch.zeros_like(x)}):
            raise RuntimeError("boom")
    assert all(len(m._forward_hooks) == 0 for m in model.modules())


def test_unknown_hook_name_suggests_a_close_one(compiled) -> None:
    cc = compiled("tracr_lib/hist")
    with pytest.raises(KeyError, match="hook_pattern"):
        with cc.model.hooks({"blocks.0.attn.hook_patern": lambda x: x}):
            pass
    assert all(len(m._forward_hooks) == 0 for m in cc.model.modules())


# --- the fused fast path (no hook attached) equals the hooked modules --------------------------

FAST_CASES = [
    ("tracr_lib/sort", None),
    ("tracr_lib/reverse", None),
    ("tracr_lib/frac_prevs", None),  # numerical read-out
    ("algorithmic/prev_token", None),  # causal
    ("tracr_lib/reverse", "reshuffled_attention"),
    ("algorithmic/prev_token", "reshuffled_attention"),  # causal and reshuffled
    ("tracr_lib/sort", "split_head"),  # two heads per layer
    ("tracr_lib/frac_prevs", "decoy_pair"),
]


def _case(compiled, name: str, variant: str | None):
    from interpbench.twins import make_twin

    cc = compiled(name)
    return cc if variant is None else make_twin(cc, variant)


def _observed(model):
    """A no-op observer on the read-out: while attached, the hooked modules run."""
    return model.hooks({"hook_logits": lambda _x: None})


def _logits_and_embedding_grad(model, tokens: torch.Tensor, mask: torch.Tensor | None):
    emb = model.embed(tokens).detach().clone().requires_grad_(True)
    out = model.forward_from_embeddings(emb, tokens, mask)
    weights = torch.linspace(-1.0, 1.0, out.numel(), dtype=torch.float64).view_as(out)
    (out * weights).sum().backward()
    return out.detach(), emb.grad


@pytest.mark.parametrize(("name", "variant"), FAST_CASES)
def test_fast_path_equals_the_hooked_modules(name: str, variant: str | None, compiled) -> None:
    cc = _case(compiled, name, variant)
    model = cc.model
    tokens = torch.from_numpy(cc.tokens)
    if variant == "reshuffled_attention":
        assert model.weights.reshuffled_heads  # the rule really is in force
    assert model.fast_path() is not None
    fast = model(tokens)
    with _observed(model):
        assert model.fast_path() is None
        hooked = model(tokens)
    assert fast.shape == hooked.shape
    assert (fast - hooked).abs().max() <= 1e-12
    # A caller's own key mask (one more real key hidden): no gradient (numpy) and
    # gradients w.r.t. the embeddings (torch), each against the hooked modules.
    mask = model.key_mask(tokens)
    mask[:, 1] = False
    fast_masked = model(tokens, mask)
    fast_out, fast_grad = _logits_and_embedding_grad(model, tokens, mask)
    with _observed(model):
        hooked_out, hooked_grad = _logits_and_embedding_grad(model, tokens, mask)
    assert not torch.equal(hooked_out, hooked)  # the mask changed the forward
    assert (fast_masked - hooked_out).abs().max() <= 1e-12
    assert (fast_out - hooked_out).abs().max() <= 1e-12
    assert hooked_grad.abs().max() > 0
    assert (fast_grad - hooked_grad).abs().max() <= 1e-12


def test_fast_path_drops_the_zero_blocks(compiled) -> None:
    w = compiled("tracr_lib/sort").weights
    # sort's first attention and last MLP read and write nothing: tracr left them empty.
    assert not w.layers[0]["w_o"].any() and not w.layers[2]["w_out"].any()
    assert w.layers[1]["w_o"].any() and w.layers[0]["w_out"].any()
    fused = compiled("tracr_lib/sort").model.fast_path().fused
    layers = fused.layers
    assert [bool(l.heads) for l in layers] == [False, True, True]
    assert [l.w_in is not None for l in layers] == [True, True, False]
    # The read-out reads only the output's residual directions, sort_1:1..4 (a slice, no gather).
    labels = w.residual_labels
    assert fused.out_cols == slice(labels.index("sort_1:1"), labels.index("sort_1:4") + 1)
    assert fused.unembed.shape == (4, 4)
    # tracr's biases are zero: no bias is added.
    assert all(l.qkv_bias is None and l.b_o is None and l.b_in is None and l.b_out is None for l in layers)
    # The kept head reads as many query as key dimensions, fewer than the head's width.
    head = layers[1].heads[0]
    assert head.q.stop - head.q.start == head.k.stop - head.k.start < w.key_size


def test_any_hook_switches_to_the_hooked_modules(compiled) -> None:
    cc = compiled("tracr_lib/reverse")
    model = cc.model
    tokens = torch.from_numpy(cc.tokens)
    before = model(tokens)
    point = model.blocks[0].hook_resid_post
    registrations = [
        lambda: point.register_forward_hook(lambda _m, _i, out: torch.zeros_like(out)),
        lambda: point.register_forward_pre_hook(lambda _m, args: (torch.zeros_like(args[0]),)),
        lambda: torch.nn.modules.module.register_module_forward_hook(
            lambda m, _i, out: torch.zeros_like(out) if m is point else None),
    ]  # fmt: skip
    for register in registrations:
        handle = register()
        try:
            assert model.hooked() and model.fast_path() is None
            zeroed = model(tokens)  # the hook's replacement is used
        finally:
            handle.remove()
        assert not torch.equal(zeroed, before)
        assert not model.hooked()
        assert torch.equal(model(tokens), before)
    handle = point.register_full_backward_hook(lambda _m, _gi, _go: None)
    try:
        assert model.fast_path() is None
    finally:
        handle.remove()
    assert model.fast_path() is not None


def test_fast_path_built_under_inference_mode_still_gives_gradients(compiled) -> None:
    from interpbench.runtime import build_runtime

    cc = compiled("tracr_lib/sort")
    model = build_runtime(cc.weights)
    tokens = torch.from_numpy(cc.tokens)
    with torch.inference_mode():
        model(tokens)  # the first call builds the fused weights
    _, fast_grad = _logits_and_embedding_grad(model, tokens, None)
    with _observed(model):
        _, hooked_grad = _logits_and_embedding_grad(model, tokens, None)
    assert (fast_grad - hooked_grad).abs().max() <= 1e-12 and hooked_grad.abs().max() > 0


def test_fast_path_follows_in_place_weight_edits_and_parameter_gradients(compiled) -> None:
    from interpbench.runtime import build_runtime

    cc = compiled("tracr_lib/hist")
    model = build_runtime(cc.weights)  # a private copy: its weights are edited below
    tokens = torch.from_numpy(cc.tokens)
    before = model(tokens)
    with torch.no_grad():
        model.W_U.mul_(2.0)
    assert torch.equal(model(tokens), 2.0 * before)  # rebuilt from the edited read-out
    with torch.no_grad():
        model.blocks[0].mlp.W_out.zero_()
    edited = model(tokens)
    with _observed(model):
        hooked = model(tokens)
    assert not torch.allclose(edited, 2.0 * before)
    assert (edited - hooked).abs().max() <= 1e-12
    model.W_U.requires_grad_(True)  # a caller wants the read-out's gradient: only the modules give it
    assert model.fast_path() is None
    model(tokens).sum().backward()
    assert model.W_U.grad is not None and model.W_U.grad.abs().sum() > 0
    with torch.no_grad():
        assert model.fast_path() is not None  # no gradient asked for


def test_numpy_runs_small_batches_and_torch_big_ones_with_equal_numbers(compiled) -> None:
    from interpbench.runtime_numpy import OPENBLAS_ONE_THREAD_MACS, fits_numpy

    assert fits_numpy(OPENBLAS_ONE_THREAD_MACS // 8, 8) and not fits_numpy(OPENBLAS_ONE_THREAD_MACS // 8 + 1, 8)
    cc = compiled("tracr_lib/reverse")
    model = cc.model
    small = torch.from_numpy(cc.tokens)
    big = small.repeat(20, 1)
    fast = model.fast_path()
    assert fits_numpy(small.numel(), fast.widest) and not fits_numpy(big.numel(), fast.widest)
    with torch.no_grad():
        out_small, out_big = model(small), model(big)  # numpy, then the torch fused forward
        with _observed(model):
            hooked_big = model(big)
    assert (out_big - hooked_big).abs().max() <= 1e-12
    assert (out_big[: len(small)] - out_small).abs().max() <= 1e-12


@pytest.mark.parametrize("variant", ["base", "reshuffled_attention"])
def test_replacing_patterns_on_the_fast_path_equals_the_hooked_modules(compiled, variant: str) -> None:  # noqa: ANN001
    from interpbench.twins import make_twin

    base = compiled("tracr_lib/reverse")
    case = base if variant == "base" else make_twin(base, variant)
    model, tokens = case.model, torch.from_numpy(case.tokens)
    n, t = case.tokens.shape
    rng = np.random.default_rng(0)
    replace = {}
    for l in range(case.weights.n_layers):
        where = torch.from_numpy(rng.random((n, t, 1)) < 0.5)
        replace[(l, 0)] = (where, torch.from_numpy(rng.random((n, t, t))))
    assert model.fast_path() is not None
    fast = model.forward_with_patterns(tokens, replace)
    with model.hooks({"hook_embed": lambda x: None}):  # any hook: the hooked modules run
        assert model.fast_path() is None
        hooked = model.forward_with_patterns(tokens, replace)
    assert float((fast - hooked).abs().max()) <= 1e-12
    plain = model.forward_with_patterns(tokens, {})
    assert float((plain - model(tokens)).abs().max()) <= 1e-12
    assert float((fast - plain).abs().max()) > 1e-3  # the replacement changed the read-out
