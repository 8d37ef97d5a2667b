"""attention_last_layer on real tracr compiles: the reversing head and well-formed patterns."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from interpbench import BadInputError
from interpbench.compiled import CompiledCase
from interpbench.explanation import Explanation
from interpbench.method import get_method
from interpbench.methods.attention import AttentionLastLayer, live_heads


@pytest.fixture(scope="session")
def reverse(compiled: Callable[[str], CompiledCase]) -> CompiledCase:
    return compiled("tracr_lib/reverse")


@pytest.fixture(scope="session")
def attn(reverse: CompiledCase) -> Explanation:
    return AttentionLastLayer().explain(reverse)


def _real(case: CompiledCase) -> np.ndarray:
    """[n, T] True at BOS and real tokens, from the input lengths."""
    return np.arange(case.n_positions)[None, :] <= case.lengths[:, None]


def test_registered() -> None:
    cls = get_method("attention_last_layer")
    assert cls is AttentionLastLayer
    assert cls.family == "attention"
    assert set(cls.kinds) == {"token_relevance", "head_patterns"}


def test_shapes_and_keys(reverse: CompiledCase, attn: Explanation) -> None:
    n, t = reverse.tokens.shape
    assert attn.token_relevance.shape == (n, t, t)
    w = reverse.weights
    names = {f"L{l}H{h}" for l in range(w.n_layers) for h in range(w.n_heads)}
    assert set(attn.head_patterns) == names
    for pattern in attn.head_patterns.values():
        assert pattern.shape == (n, t, t)
        assert np.isfinite(pattern).all()


def test_reverse_attends_to_mirrored_position(reverse: CompiledCase, attn: Explanation) -> None:
    # reverse: output token k (position k + 1) reads input token length - 1 - k,
    # i.e. query position i attends to key position length + 1 - i.
    r = attn.token_relevance
    checked = 0
    for b, length in enumerate(reverse.lengths):
        for i in range(1, length + 1):
            assert int(r[b, i].argmax()) == length + 1 - i, (reverse.inputs[b], i)
            assert r[b, i, length + 1 - i] > 0.99
            checked += 1
    assert checked == int(reverse.lengths.sum())


def test_uses_last_layer_with_live_heads(reverse: CompiledCase, attn: Explanation) -> None:
    layer = attn.diagnostics["layer"]
    assert any(np.abs(reverse.weights.layers[layer][k]).max() > 0 for k in ("w_q", "w_k", "w_v", "w_o"))
    for later in reverse.weights.layers[layer + 1 :]:
        assert all(np.abs(later[k]).max() == 0 for k in ("w_q", "w_k", "w_v", "w_o"))
    assert attn.diagnostics["heads"] == live_heads(reverse.weights)[layer]


def test_head_pattern_rows_sum_to_one(reverse: CompiledCase, attn: Explanation) -> None:
    real = _real(reverse)
    for name, pattern in attn.head_patterns.items():
        sums = pattern.sum(axis=-1)
        np.testing.assert_allclose(sums[real], 1.0, atol=1e-9, err_msg=name)
        assert (pattern[~real] == 0).all(), name  # PAD query rows
        assert (pattern.transpose(0, 2, 1)[~real] == 0).all(), name  # PAD key columns


def test_token_relevance_zero_outside_outputs(reverse: CompiledCase, attn: Explanation) -> None:
    r = attn.token_relevance
    real = _real(reverse)
    assert (r[:, 0] == 0).all()  # no output at BOS
    assert (r[~real] == 0).all()  # no output at PAD
    assert (r.transpose(0, 2, 1)[~real] == 0).all()  # PAD keys
    assert (r[:, :, 0] == 0).all()  # drop_bos=True by default


def test_drop_bos_false_keeps_the_softmax_rows(reverse: CompiledCase, attn: Explanation) -> None:
    kept = AttentionLastLayer(drop_bos=False).explain(reverse).token_relevance
    outputs = _real(reverse) & (np.arange(reverse.n_positions) >= 1)[None, :]
    np.testing.assert_allclose(kept.sum(axis=-1)[outputs], 1.0, atol=1e-9)
    np.testing.assert_array_equal(kept[:, :, 1:], attn.token_relevance[:, :, 1:])


def test_head_reduce_max(reverse: CompiledCase, attn: Explanation) -> None:
    r_max = AttentionLastLayer(head_reduce="max").explain(reverse).token_relevance
    assert (r_max >= attn.token_relevance - 1e-12).all()


def test_bad_settings(reverse: CompiledCase) -> None:
    with pytest.raises(BadInputError):
        AttentionLastLayer(head_reduce="median").explain(reverse)
    with pytest.raises(BadInputError):
        AttentionLastLayer(n_steps=3)
