"""Attention inspection on real tracr compiles and hand-built graphs: raw, rollout, flow, value norm."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest

from interpbench import BadInputError
from interpbench.compiled import CompiledCase
from interpbench.explanation import Explanation
from interpbench.method import get_method
from interpbench.attention_graphs import augment_residual, layered_max_flow, networkx_max_flow, rollout
from interpbench.attention_relevance import live_heads
from interpbench.methods.attention import AttentionAllLayers, AttentionLastLayer
from interpbench.methods.attention_graphs import AttentionFlow, AttentionRollout
from interpbench.methods.attention_value_norm import AttentionValueNorm


METHODS = [
    "attention_last_layer",
    "attention_last_layer_max",
    "attention_all_layers_mean",
    "attention_all_layers_max",
    "attention_rollout",
    "attention_flow",
    "attention_value_norm",
]
LAST_LAYER = ["attention_last_layer", "attention_last_layer_max", "attention_value_norm"]
# reverse: 2 live layers (flow by closed form); shuffle_dyck2: 4 live layers, a 4-head layer
# (flow by networkx); double_mod5: an elementwise map, no live head at all
CASES = ["tracr_lib/reverse", "tracr_lib/shuffle_dyck2", "algorithmic/double_mod5"]


@pytest.fixture(scope="session")
def reverse(compiled: Callable[[str], CompiledCase]) -> CompiledCase:
    return compiled("tracr_lib/reverse")


@pytest.fixture(scope="session")
def attn(reverse: CompiledCase) -> Explanation:
    return AttentionLastLayer().explain(reverse)


@pytest.fixture(scope="module")
def explained(compiled: Callable[[str], CompiledCase]) -> Callable[..., Explanation]:
    """(method, case, **settings) -> Explanation, computed once."""
    memo: dict[tuple, Explanation] = {}

    def get(name: str, case: str, **settings: object) -> Explanation:
        key = (name, case, tuple(sorted(settings.items())))
        if key not in memo:
            memo[key] = get_method(name)(**settings).explain(compiled(case))
        return memo[key]

    return get


def _real(case: CompiledCase) -> np.ndarray:
    """[n, T] True at BOS and real tokens, from the input lengths."""
    return np.arange(case.n_positions)[None, :] <= case.lengths[:, None]


def _outputs(case: CompiledCase) -> np.ndarray:
    """[n, T] True at real non-BOS positions (one output each)."""
    return _real(case) & (np.arange(case.n_positions) >= 1)[None, :]


def _augmented_layers(case: CompiledCase, exp: Explanation, w: float = 0.5) -> list[np.ndarray]:
    """A'_l [n, T, T] per layer with a non-zero head, from the explanation's head patterns."""
    out = []
    for l, layer in enumerate(case.weights.layers):
        heads = [h for h in range(case.weights.n_heads)
                 if any(np.abs(layer[k][h]).max() > 0 for k in ("w_q", "w_k", "w_v", "w_o"))]  # fmt: skip
        if heads:
            a = np.mean([exp.head_patterns[f"L{l}H{h}"] for h in heads], axis=0)
            out.append(augment_residual(a, w))
    return out


# ---------------------------------------------------------------- registration and contract


@pytest.mark.parametrize("name", METHODS)
def test_registered(name: str) -> None:
    cls = get_method(name)
    assert cls.name == name
    assert cls.family == "attention"
    assert set(cls.kinds) == {"token_relevance", "head_patterns"}
    assert set(cls().params()) == set(cls.defaults)
    assert cls().params()["drop_bos"] is True


def test_named_classes() -> None:
    assert get_method("attention_last_layer") is AttentionLastLayer
    assert get_method("attention_all_layers_mean") is AttentionAllLayers
    assert get_method("attention_rollout") is AttentionRollout
    assert get_method("attention_flow") is AttentionFlow
    assert get_method("attention_value_norm") is AttentionValueNorm
    assert get_method("attention_last_layer_max")().params()["head_reduce"] == "max"
    assert get_method("attention_all_layers_max")().params()["head_reduce"] == "max"


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", METHODS)
def test_shapes_and_zeros(name: str, case: str, compiled, explained) -> None:
    cc = compiled(case)
    exp = explained(name, case)
    n, t = cc.tokens.shape
    r = exp.token_relevance
    real = _real(cc)
    assert r.shape == (n, t, t)
    assert np.isfinite(r).all()
    assert (r >= 0).all()
    assert (r[:, 0] == 0).all()  # no output at BOS
    assert (r[~real] == 0).all()  # no output at PAD
    assert (r.transpose(0, 2, 1)[~real] == 0).all()  # PAD keys
    assert (r[:, :, 0] == 0).all()  # drop_bos=True by default
    assert list(exp.head_patterns) == cc.head_names()
    for pattern in exp.head_patterns.values():
        assert pattern.shape == (n, t, t)
        assert np.isfinite(pattern).all()
    assert 0.0 <= exp.diagnostics["zero_row_share"] <= 1.0


def test_head_patterns_are_the_observed_patterns(reverse: CompiledCase, explained) -> None:
    base = explained("attention_last_layer", "tracr_lib/reverse").head_patterns
    for name in METHODS[1:]:
        other = explained(name, "tracr_lib/reverse").head_patterns
        for head in base:
            np.testing.assert_array_equal(other[head], base[head], err_msg=f"{name} {head}")


def test_head_pattern_rows_sum_to_one(reverse: CompiledCase, attn: Explanation) -> None:
    real = _real(reverse)
    for name, pattern in attn.head_patterns.items():
        sums = pattern.sum(axis=-1)
        np.testing.assert_allclose(sums[real], 1.0, atol=1e-9, err_msg=name)
        assert (pattern[~real] == 0).all(), name  # PAD query rows
        assert (pattern.transpose(0, 2, 1)[~real] == 0).all(), name  # PAD key columns


# ---------------------------------------------------------------- last layer


@pytest.mark.parametrize("name", LAST_LAYER)
def test_reverse_attends_to_mirrored_position(name: str, reverse: CompiledCase, explained) -> None:
    # reverse: output token k (position k + 1) reads input token length - 1 - k,
    # i.e. query position i attends to key position length + 1 - i.
    r = explained(name, "tracr_lib/reverse").token_relevance
    checked = 0
    for b, length in enumerate(reverse.lengths):
        for i in range(1, length + 1):
            assert int(r[b, i].argmax()) == length + 1 - i, (name, reverse.inputs[b], i)
            others = np.delete(r[b, i], length + 1 - i)
            assert r[b, i, length + 1 - i] > 100 * max(others.max(), 1e-12), (name, reverse.inputs[b], i)
            checked += 1
    assert checked == int(reverse.lengths.sum())


def test_reverse_last_layer_is_nearly_one_hot(reverse: CompiledCase, attn: Explanation) -> None:
    for b, length in enumerate(reverse.lengths):
        for i in range(1, length + 1):
            assert attn.token_relevance[b, i, length + 1 - i] > 0.99


def test_uses_last_layer_with_live_heads(reverse: CompiledCase, attn: Explanation) -> None:
    layer = attn.diagnostics["layer"]
    assert any(np.abs(reverse.weights.layers[layer][k]).max() > 0 for k in ("w_q", "w_k", "w_v", "w_o"))
    for later in reverse.weights.layers[layer + 1 :]:
        assert all(np.abs(later[k]).max() == 0 for k in ("w_q", "w_k", "w_v", "w_o"))
    assert attn.diagnostics["heads"] == live_heads(reverse.weights)[layer]


def test_token_relevance_zero_outside_outputs(reverse: CompiledCase, attn: Explanation) -> None:
    r = attn.token_relevance
    real = _real(reverse)
    assert (r[:, 0] == 0).all()  # no output at BOS
    assert (r[~real] == 0).all()  # no output at PAD
    assert (r.transpose(0, 2, 1)[~real] == 0).all()  # PAD keys
    assert (r[:, :, 0] == 0).all()  # drop_bos=True by default


def test_drop_bos_false_keeps_the_softmax_rows(reverse: CompiledCase, attn: Explanation) -> None:
    kept = AttentionLastLayer(drop_bos=False).explain(reverse).token_relevance
    np.testing.assert_allclose(kept.sum(axis=-1)[_outputs(reverse)], 1.0, atol=1e-9)
    np.testing.assert_array_equal(kept[:, :, 1:], attn.token_relevance[:, :, 1:])


def test_head_reduce_max(reverse: CompiledCase, attn: Explanation) -> None:
    r_max = AttentionLastLayer(head_reduce="max").explain(reverse).token_relevance
    assert (r_max >= attn.token_relevance - 1e-12).all()


# ---------------------------------------------------------------- all layers


def test_all_layers_pool_every_live_head(compiled, explained) -> None:
    cc = compiled("tracr_lib/shuffle_dyck2")
    live = [f"L{l}H{h}" for l, heads in enumerate(live_heads(cc.weights)) for h in heads]
    case = "tracr_lib/shuffle_dyck2"
    assert explained("attention_all_layers_mean", case).diagnostics["heads"] == live
    stack = np.stack([explained("attention_last_layer", case).head_patterns[h] for h in live])
    mask = _outputs(cc)[:, :, None] & (_outputs(cc)[:, None, :])
    for name, pooled in (("attention_all_layers_mean", stack.mean(0)), ("attention_all_layers_max", stack.max(0))):
        r = explained(name, case).token_relevance
        np.testing.assert_allclose(r, np.where(mask, pooled, 0.0), atol=1e-12, err_msg=name)
    # the max over all layers is at least the max over the last layer's heads
    top = explained("attention_all_layers_max", case).token_relevance
    assert (top >= explained("attention_last_layer_max", case).token_relevance - 1e-12).all()


# ---------------------------------------------------------------- rollout


def test_rollout_hand_computed_product() -> None:
    # Non-commuting layers, so the order (first layer applied first) matters.
    a1 = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
    a2 = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.5, 0.5, 0.0]])
    p1, p2 = augment_residual(a1, 0.5), augment_residual(a2, 0.5)
    np.testing.assert_allclose(p1, [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.25, 0.75]])
    np.testing.assert_allclose(p2, [[0.5, 0.0, 0.5], [0.0, 1.0, 0.0], [0.25, 0.25, 0.5]])
    # p2 @ p1 by hand: row 0 = .5*[1,0,0] + .5*[0,.25,.75]; row 1 = [.5,.5,0];
    # row 2 = .25*[1,0,0] + .25*[.5,.5,0] + .5*[0,.25,.75]
    expected = np.array([[0.5, 0.125, 0.375], [0.5, 0.5, 0.0], [0.375, 0.25, 0.375]])
    np.testing.assert_allclose(rollout([p1, p2]), expected)
    np.testing.assert_allclose(rollout(np.stack([[p1, p2], [p1, p2]], axis=1)), np.stack([expected] * 2))
    assert not np.allclose(rollout([p2, p1]), expected)
    # residual weight 0.2: A' = 0.8 A + 0.2 I (rows already sum to 1)
    np.testing.assert_allclose(augment_residual(a2, 0.2), 0.8 * a2 + 0.2 * np.eye(3))


def test_rollout_rows_sum_to_one_before_dropping_bos(compiled) -> None:
    for case in ("tracr_lib/reverse", "tracr_lib/shuffle_dyck2"):
        cc = compiled(case)
        r = AttentionRollout(drop_bos=False).explain(cc).token_relevance
        np.testing.assert_allclose(r.sum(axis=-1)[_outputs(cc)], 1.0, atol=1e-9, err_msg=case)


def test_rollout_is_the_product_of_the_observed_layers(compiled, explained) -> None:
    case = "tracr_lib/shuffle_dyck2"
    cc = compiled(case)
    exp = explained("attention_rollout", case, drop_bos=False)
    layers = _augmented_layers(cc, exp)
    assert len(layers) == 4
    expected = layers[0]
    for a in layers[1:]:
        expected = np.einsum("bij,bjk->bik", a, expected)
    mask = _outputs(cc)[:, :, None] & _real(cc)[:, None, :]
    np.testing.assert_allclose(exp.token_relevance, np.where(mask, expected, 0.0), atol=1e-12)


def test_attention_free_program_rolls_out_to_identity(compiled, explained) -> None:
    # double_mod5 is an elementwise map: output i depends on input i alone, and with no
    # head nothing moves between positions, so rollout and flow are the identity.
    cc = compiled("algorithmic/double_mod5")
    eye = np.where(_outputs(cc)[:, :, None], np.eye(cc.n_positions)[None], 0.0)
    for name in ("attention_rollout", "attention_flow"):
        np.testing.assert_array_equal(explained(name, "algorithmic/double_mod5").token_relevance, eye)
    truth = np.where(_outputs(cc)[:, :, None], cc.truth.relevance, 0)
    np.testing.assert_array_equal(eye.astype(np.int8), truth)
    for name in ("attention_last_layer", "attention_all_layers_mean", "attention_value_norm"):
        exp = explained(name, "algorithmic/double_mod5")
        assert (exp.token_relevance == 0).all(), name
        assert exp.diagnostics["zero_row_share"] == 1.0


def test_residual_weight_one_is_the_identity(reverse: CompiledCase) -> None:
    eye = np.where(_outputs(reverse)[:, :, None], np.eye(reverse.n_positions)[None], 0.0)
    for cls in (AttentionRollout, AttentionFlow):
        np.testing.assert_allclose(cls(residual_weight=1.0).explain(reverse).token_relevance, eye, atol=1e-12)


# ---------------------------------------------------------------- flow

C1 = np.array([[0.5, 0.5, 0.0], [0.25, 0.75, 0.0], [0.0, 0.5, 0.5]])
C2 = np.array([[0.5, 0.25, 0.25], [0.0, 1.0, 0.0], [0.5, 0.0, 0.5]])


def _lp_max_flow(capacities: list[np.ndarray], sink: int, source: int) -> float:
    """Max-flow as a linear programme (scipy HiGHS), independent of networkx."""
    from scipy.optimize import linprog

    p = capacities[0].shape[0]
    edges = [(l, i, k) for l, c in enumerate(capacities) for i in range(p) for k in range(p)]
    node = lambda layer, pos: layer * p + pos  # noqa: E731
    tail = [node(l, k) for l, i, k in edges]
    head = [node(l + 1, i) for l, i, k in edges]
    n_nodes = (len(capacities) + 1) * p
    s, t = node(0, source), node(len(capacities), sink)
    inner = [v for v in range(n_nodes) if v not in (s, t)]
    a_eq = np.zeros((len(inner), len(edges)))
    for row, v in enumerate(inner):
        for e in range(len(edges)):
            a_eq[row, e] = (head[e] == v) - (tail[e] == v)
    gain = np.array([(head[e] == t) - (tail[e] == t) for e in range(len(edges))], dtype=float)
    bounds = [(0.0, capacities[l][i, k]) for l, i, k in edges]
    res = linprog(-gain, A_eq=a_eq, b_eq=np.zeros(len(inner)), bounds=bounds, method="highs")
    assert res.status == 0
    return float(-res.fun)


def test_flow_two_layers_hand_computed() -> None:
    # Two layers: paths j -> k -> i are edge-disjoint, flow = sum_k min(C1[k, j], C2[i, k]).
    # i=0, j=1: min(.5,.5) + min(.75,.25) + min(.5,.25) = 1.0
    # i=0, j=0: min(.5,.5) + min(.25,.25) + min(0,.25) = 0.75
    # i=2, j=0: min(.5,.5) + min(.25,0) + min(0,.5) = 0.5
    # i=1, j=2: min(0,0) + min(0,1) + min(.5,0) = 0
    by_hand = {(0, 1): 1.0, (0, 0): 0.75, (2, 0): 0.5, (1, 2): 0.0}
    closed = layered_max_flow([C1, C2], range(3), range(3))
    nx_flow = networkx_max_flow([C1, C2], range(3), range(3))
    for (i, j), value in by_hand.items():
        assert closed[i, j] == pytest.approx(value)
        assert nx_flow[i, j] == pytest.approx(value)
    np.testing.assert_allclose(closed, nx_flow, atol=1e-12)
    assert (C2 @ C1)[0, 0] == pytest.approx(0.3125)  # rollout differs from flow here
    # only the requested sinks and sources are filled
    part = layered_max_flow([C1, C2], [0], [1, 2])
    assert part[0, 1] == pytest.approx(1.0) and (np.delete(part.ravel(), [1, 2]) == 0).all()


def test_flow_one_layer_is_the_capacity() -> None:
    np.testing.assert_allclose(networkx_max_flow([C1], range(3), range(3)), C1, atol=1e-12)
    np.testing.assert_array_equal(layered_max_flow([C1], range(3), range(3)), C1)


def test_flow_three_layers_matches_linear_programme() -> None:
    rng = np.random.default_rng(0)
    caps = [augment_residual(rng.dirichlet(np.ones(4) * 0.5, size=4), 0.5) for _ in range(3)]
    flow = layered_max_flow(caps, range(4), range(4))
    for i, j in itertools.product(range(4), range(4)):
        assert flow[i, j] == pytest.approx(_lp_max_flow(caps, i, j), abs=1e-9), (i, j)


def test_flow_symmetric_toy() -> None:
    s = np.array([[0.5, 0.5, 0.0], [0.5, 0.25, 0.25], [0.0, 0.25, 0.75]])
    # j=0 -> i=2 over two layers: min(S[0,0],S[2,0]) + min(S[1,0],S[2,1]) + min(S[2,0],S[2,2]) = .25
    two = layered_max_flow([s, s], range(3), range(3))
    assert two[2, 0] == pytest.approx(0.25)
    for layers in ([s, s], [s, s, s], [s, s, s, s]):
        f = layered_max_flow(layers, range(3), range(3))
        np.testing.assert_allclose(f, f.T, atol=1e-12)


def test_flow_within_path_and_cut_bounds(compiled, explained) -> None:
    # networkx path on a real case: widest single path <= flow <= capacity into the
    # output (1) and out of the input in the first layer (column sum of A'_1)
    case = "tracr_lib/shuffle_dyck2"
    cc = compiled(case)
    exp = explained("attention_flow", case, drop_bos=False)
    assert exp.diagnostics["graph"] == "networkx"
    layers = _augmented_layers(cc, exp)
    f = exp.token_relevance
    for b in range(0, len(cc.lengths), 6):
        p = int(cc.lengths[b]) + 1
        caps = [a[b, :p, :p] for a in layers]
        widest = caps[0]  # [i, j]: best bottleneck of one path
        for c in caps[1:]:
            widest = np.max(np.minimum(c[:, :, None], widest[None, :, :]), axis=1)
        upper = np.minimum(caps[-1].sum(axis=1)[:, None], caps[0].sum(axis=0)[None, :])
        fb = f[b, 1:p, :p]
        assert (fb >= widest[1:] - 1e-9).all()
        assert (fb <= upper[1:] + 1e-9).all()
        assert (fb <= 1 + 1e-9).all()
    b = 0
    p = int(cc.lengths[b]) + 1
    caps = [a[b, :p, :p] for a in layers]
    for i, j in ((1, 0), (1, p - 1), (p - 1, 1)):
        assert f[b, i, j] == pytest.approx(_lp_max_flow(caps, i, j), abs=1e-7), (i, j)


def test_flow_closed_form_matches_networkx_on_a_real_case(reverse: CompiledCase, explained) -> None:
    exp = explained("attention_flow", "tracr_lib/reverse", drop_bos=False)
    assert exp.diagnostics["graph"] == "closed_form"
    layers = _augmented_layers(reverse, exp)
    assert len(layers) == 2
    for b in range(0, len(reverse.lengths), 8):
        p = int(reverse.lengths[b]) + 1
        nx_flow = networkx_max_flow([a[b, :p, :p] for a in layers], range(1, p), range(p))
        np.testing.assert_allclose(exp.token_relevance[b, :p, :p], nx_flow, atol=1e-9)


def test_flow_normalize_rows(compiled) -> None:
    cc = compiled("tracr_lib/reverse")
    raw = AttentionFlow().explain(cc).token_relevance
    norm = AttentionFlow(normalize_rows=True).explain(cc).token_relevance
    np.testing.assert_allclose(norm.sum(axis=-1)[_outputs(cc)], 1.0, atol=1e-9)
    np.testing.assert_allclose(norm * raw.sum(axis=-1, keepdims=True), raw, atol=1e-12)


# ---------------------------------------------------------------- value norm


def _numpy_layer_inputs(case: CompiledCase, upto: int) -> np.ndarray:
    """Residual stream entering layer `upto`, recomputed from the weights in numpy."""
    w = case.weights
    tokens, lengths = case.tokens, case.lengths
    b, t = tokens.shape
    x = w.token_embed[tokens] + w.pos_embed[np.arange(t)][None]
    allowed = (np.arange(t)[None, :] <= lengths[:, None])[:, None, None, :]
    if w.causal:
        allowed = allowed & np.tril(np.ones((t, t), bool))[None, None]
    for layer in w.layers[:upto]:
        q = np.einsum("btd,hdk->bhtk", x, layer["w_q"]) + layer["b_q"][None, :, None]
        k = np.einsum("btd,hdk->bhtk", x, layer["w_k"]) + layer["b_k"][None, :, None]
        v = np.einsum("btd,hdk->bhtk", x, layer["w_v"]) + layer["b_v"][None, :, None]
        scores = np.where(allowed, np.einsum("bhqk,bhsk->bhqs", q, k) / np.sqrt(w.key_size), -1e30)
        e = np.exp(scores - scores.max(-1, keepdims=True))
        z = np.einsum("bhqs,bhsk->bqhk", e / e.sum(-1, keepdims=True), v)
        x = x + np.einsum("bqhk,hkd->bqd", z, layer["w_o"]) + layer["b_o"]
        x = x + np.maximum(x @ layer["w_in"] + layer["b_in"], 0.0) @ layer["w_out"] + layer["b_out"]
    return x


def test_value_norm_is_attention_times_value_norms(reverse: CompiledCase, explained) -> None:
    exp = explained("attention_value_norm", "tracr_lib/reverse", drop_bos=False)
    layer = exp.diagnostics["layer"]
    (head,) = exp.diagnostics["heads"]
    weights = reverse.weights.layers[layer]
    x = _numpy_layer_inputs(reverse, layer)
    moved = (x @ weights["w_v"][head] + weights["b_v"][head]) @ weights["w_o"][head]  # [n, key, d_model]
    norms = np.sqrt((moved**2).sum(-1))
    expected = exp.head_patterns[f"L{layer}H{head}"] * norms[:, None, :]
    mask = _outputs(reverse)[:, :, None] & _real(reverse)[:, None, :]
    np.testing.assert_allclose(exp.token_relevance, np.where(mask, expected, 0.0), atol=1e-9)
    # reverse copies one-hot tokens: every real key moves a vector of the same norm, BOS none
    real_keys = _outputs(reverse)
    assert np.ptp(norms[real_keys]) < 1e-9 and norms[real_keys].min() > 0
    assert np.abs(norms[:, 0]).max() < 1e-9


def test_value_norm_head_reduce(compiled) -> None:
    cc = compiled("tracr_lib/pair_balance")  # last live layer has two heads
    assert len(live_heads(cc.weights)[-1]) == 2
    total = AttentionValueNorm().explain(cc).token_relevance
    mean = AttentionValueNorm(head_reduce="mean").explain(cc).token_relevance
    vector = AttentionValueNorm(head_reduce="vector").explain(cc).token_relevance
    np.testing.assert_allclose(mean, total / 2, atol=1e-12)
    assert (vector <= total + 1e-9).all()  # triangle inequality


def test_bad_settings(reverse: CompiledCase) -> None:
    with pytest.raises(BadInputError):
        AttentionLastLayer(head_reduce="median").explain(reverse)
    with pytest.raises(BadInputError):
        AttentionLastLayer(n_steps=3)
    with pytest.raises(BadInputError):
        AttentionRollout(residual_weight=1.5).explain(reverse)
    with pytest.raises(BadInputError):
        AttentionFlow(head_reduce="vector").explain(reverse)
    with pytest.raises(BadInputError):
        AttentionValueNorm(head_reduce="max").explain(reverse)
