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
