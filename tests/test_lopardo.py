"""Lopardo et al. 2024 on our runtime: captum Saliency equals the closed-form attention gradient.

Lopardo, Precioso and Garreau, "Attention meets post-hoc interpretability: a mathematical
perspective" (2024), study a one-layer multi-head attention model read out at one query
position (their CLS). With `x_t = e_t` (zero positional embeddings), per head h

    q = W_Qᵀ x_q + b_q,  k_s = W_Kᵀ x_s + b_k,  v_s = W_Vᵀ x_s + b_v,
    α_s = softmax_s(q · k_s / √d),   f = u · (x_q + Σ_h W_Oᵀ Σ_s α_s v_s + b_o),

where `u` is the unembedding column of the target output. Writing `w = W_O u` (the
paper's `W_ℓ` seen from the head) and `g_s = w · v_s`, for every position `t ≠ q`

    ∇_{e_t} f = Σ_h α_t [W_V w + (g_t − Σ_s α_s g_s) W_K q / √d]

(only `k_t` and `v_t` depend on `e_t`; the residual term and `q` do not). The paper
averages the heads (factor 1/K); our runtime sums them, so there is no 1/K here. At the
query position itself `q` and the residual also depend on `e_q`, adding
`u + Σ_h W_Q Σ_s α_s (g_s − ḡ) k_s / √d`.

The tests build such a model by hand as `ModelWeights`, run it through `build_runtime`,
and compare captum `Saliency` with that formula evaluated in numpy from the weights
alone. They then show, on a seeded model, that ranking tokens by gradient magnitude can
disagree with ranking them by attention, and that the disagreement vanishes exactly
when the value-dependent term `g_t − ḡ` does: why attention maps and attributions are
scored as separate explanation kinds.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from interpbench.attribution_rows import reduce_embedding
from interpbench.runtime import CompiledTransformer, build_runtime
from interpbench.weights import ModelWeights

VOCAB = 12  # ordinary token ids 0..11; BOS = 12, PAD = 13 (never used in the inputs)
BOS, PAD = VOCAB, VOCAB + 1
D_MODEL, D_HEAD, D_MLP = 8, 4, 2
T = 7  # positions: BOS + 6 tokens




def make_weights(seed: int, *, n_heads: int, n_out: int, causal: bool = False) -> ModelWeights:
    """A random one-layer attention model with zero MLP and zero positional embeddings.

    Scales are chosen so attention logits have standard deviation about 1: neither
    uniform nor saturated.

    Args:
        seed: Seed of every weight.
        n_heads: Number of heads K.
        n_out: 1 for a numerical read-out, more for a categorical one.
        causal: Whether attention is causally masked.

    Returns:
        The hand-built weights.
    """
    rng = np.random.default_rng(seed)
    s = 1.0 / np.sqrt(D_MODEL)

    def normal(*shape: int, scale: float = 1.0) -> np.ndarray:
        return rng.normal(0.0, scale, size=shape)

    layer = {
        "w_q": normal(n_heads, D_MODEL, D_HEAD, scale=s),
        "b_q": normal(n_heads, D_HEAD, scale=0.3),
        "w_k": normal(n_heads, D_MODEL, D_HEAD, scale=s),
        "b_k": normal(n_heads, D_HEAD, scale=0.3),
        "w_v": normal(n_heads, D_MODEL, D_HEAD, scale=s),
        "b_v": normal(n_heads, D_HEAD, scale=0.3),
        "w_o": normal(n_heads, D_HEAD, D_MODEL, scale=1.0 / np.sqrt(D_HEAD)),
        "b_o": normal(D_MODEL, scale=0.3),
        "w_in": np.zeros((D_MODEL, D_MLP)),
        "b_in": np.zeros(D_MLP),
        "w_out": np.zeros((D_MLP, D_MODEL)),
        "b_out": np.zeros(D_MODEL),
    }
    return ModelWeights(
        token_embed=normal(VOCAB + 2, D_MODEL),
        pos_embed=np.zeros((T, D_MODEL)),
        layers=(layer,),
        unembed=normal(D_MODEL, n_out),
        residual_labels=tuple(f"dim:{i}" for i in range(D_MODEL)),
        input_tokens=(*range(VOCAB), "BOS", "PAD"),
        output_values=None if n_out == 1 else tuple(range(n_out)),
        key_size=D_HEAD,
        causal=causal,
        bos_id=BOS,
        pad_id=PAD,
    )


def random_tokens(seed: int, n: int) -> torch.Tensor:
    """[n, T] ids: BOS at position 0, then T - 1 distinct ordinary tokens.

    Distinct tokens per input (no PAD): a repeated token would tie with itself in both
    attention and gradient, leaving "the top token" undefined.
    """
    rng = np.random.default_rng(seed)
    ids = np.stack([rng.choice(VOCAB, size=T - 1, replace=False) for _ in range(n)])
    return torch.from_numpy(np.concatenate([np.full((n, 1), BOS), ids], axis=1))


def attention_numpy(w: ModelWeights, x: np.ndarray, query: int) -> dict[str, np.ndarray]:
    """Per-head q, k, v and the query row's attention, from the weights alone.

    Args:
        w: The weights.
        x: Residual input [n, T, d_model] (token embeddings; positional ones are zero).
        query: The read-out position.

    Returns:
        `q` [n, H, dh], `k` and `v` [n, H, T, dh], `alpha` [n, H, T] (0 at masked keys).
    """
    layer = w.layers[0]
    q = np.einsum("nd,hdk->nhk", x[:, query], layer["w_q"]) + layer["b_q"]
    k = np.einsum("ntd,hdk->nhtk", x, layer["w_k"]) + layer["b_k"][:, None]
    v = np.einsum("ntd,hdk->nhtk", x, layer["w_v"]) + layer["b_v"][:, None]
    scores = np.einsum("nhk,nhtk->nht", q, k) / np.sqrt(w.key_size)
    allowed = np.arange(x.shape[1]) <= query if w.causal else np.ones(x.shape[1], bool)
    scores = np.where(allowed, scores, -np.inf)
    alpha = np.exp(scores - scores.max(-1, keepdims=True))
    alpha /= alpha.sum(-1, keepdims=True)
    return {"q": q, "k": k, "v": v, "alpha": alpha}


def closed_form_gradient(w: ModelWeights, x: np.ndarray, query: int, target: int) -> np.ndarray:
    """∇_{e_t} of logit `target` at `query`, for every position t: [n, T, d_model].

    Rows t ≠ query are Lopardo et al.'s formula (summed over heads); the query row adds
    the residual path and the dependence of q on e_query.
    """
    layer = w.layers[0]
    a = attention_numpy(w, x, query)
    q, k, v, alpha = a["q"], a["k"], a["v"], a["alpha"]
    u = w.unembed[:, target]  # [d_model]
    w_l = np.einsum("hkd,d->hk", layer["w_o"], u)  # W_O u per head: [H, dh]
    g = np.einsum("nhtk,hk->nht", v, w_l)  # W_ℓ · v_t
    g_bar = (alpha * g).sum(-1, keepdims=True)
    value_dir = np.einsum("hdk,hk->hd", layer["w_v"], w_l)  # W_V W_ℓ: [H, d_model]
    key_dir = np.einsum("hdk,nhk->nhd", layer["w_k"], q) / np.sqrt(w.key_size)  # W_K q / √d
    bracket = value_dir[None, :, None] + (g - g_bar)[..., None] * key_dir[:, :, None]  # [n, H, T, d]
    per_head = alpha[..., None] * bracket
    grad = per_head.sum(1)  # heads are summed by the runtime
    # Query row: residual path, and every score depends on q = W_Qᵀ e_query.
    spread = np.einsum("nht,nhtk->nhk", alpha * (g - g_bar), k) / np.sqrt(w.key_size)
    grad[:, query] += u + np.einsum("hdk,nhk->nd", layer["w_q"], spread)
    return grad


def saliency(
    model: CompiledTransformer, emb: torch.Tensor, tokens: torch.Tensor, query: int, target: int
) -> np.ndarray:
    """captum Saliency (abs=False) of logit `target` at `query` w.r.t. the embeddings."""
    from captum.attr import Saliency

    def forward(e: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return model.forward_from_embeddings(e, ids)

    inputs = emb.detach().clone().requires_grad_(True)
    attr = Saliency(forward).attribute(
        inputs, target=(query, target), abs=False, additional_forward_args=(tokens,)
    )
    return attr.detach().numpy()


CONFIGS = [
    # (seed, heads, outputs, causal, query)
    (0, 1, 1, False, 0),  # one head, numerical read-out at BOS (the paper's CLS)
    (1, 3, 1, False, 0),  # K = 3 heads
    (2, 2, 3, False, 0),  # categorical read-out: every class is checked
    (3, 2, 3, True, 3),  # causal, query in the middle: later keys must get exactly 0
]


@pytest.mark.parametrize(("seed", "n_heads", "n_out", "causal", "query"), CONFIGS)
def test_saliency_equals_closed_form(seed: int, n_heads: int, n_out: int, causal: bool, query: int) -> None:
    w = make_weights(seed, n_heads=n_heads, n_out=n_out, causal=causal)
    model = build_runtime(w)
    tokens = random_tokens(seed + 100, 16)
    rng = np.random.default_rng(seed + 200)
    inputs = {
        "token embeddings": model.embed(tokens),
        # Embeddings not tied to the vocabulary: the formula holds for any e_t.
        "free embeddings": torch.from_numpy(rng.normal(size=(16, T, D_MODEL))),
    }
    others = [t for t in range(T) if t != query]
    for kind, emb in inputs.items():
        x = emb.numpy()
        alpha = attention_numpy(w, x, query)["alpha"]
        # The regime the formula is about: attention neither uniform nor saturated.
        real = alpha[..., : query + 1] if causal else alpha
        assert real.max() < 0.995 and np.median(real.max(-1)) < 0.8 and real.std(-1).min() > 1e-3, kind
        for target in range(n_out):
            ours = saliency(model, emb, tokens, query, target)
            expected = closed_form_gradient(w, x, query, target)
            assert np.abs(expected).max() > 0.1  # a non-trivial gradient
            np.testing.assert_allclose(ours[:, others], expected[:, others], rtol=0, atol=1e-8, err_msg=kind)
            # The query row, with the residual and q-dependence terms added.
            np.testing.assert_allclose(ours[:, query], expected[:, query], rtol=0, atol=1e-8, err_msg=kind)
            if causal:
                assert np.all(ours[:, query + 1 :] == 0)


def top_tokens(w: ModelWeights, tokens: torch.Tensor, query: int) -> tuple[np.ndarray, np.ndarray]:
    """Top token (t ≠ query) by head-averaged attention and by gradient L2 norm, per input.

    The gradient is captum Saliency reduced with the benchmark's own `reduce_embedding`.
    """
    model = build_runtime(w)
    emb = model.embed(tokens)
    grad = saliency(model, emb, tokens, query, 0)
    others = np.array([t for t in range(T) if t != query])
    score_grad = reduce_embedding(grad, "l2")[:, others]
    score_attn = attention_numpy(w, emb.numpy(), query)["alpha"].mean(1)[:, others]
    # No near-ties, so the top tokens are well defined.
    for s in (score_grad, score_attn):
        top2 = np.sort(s, -1)[:, -2:]
        assert np.all(top2[:, 1] - top2[:, 0] > 1e-9)
    return others[score_attn.argmax(-1)], others[score_grad.argmax(-1)]


SEEDS = range(10)


@pytest.mark.parametrize("n_heads", [1, 2])
def test_gradient_ranking_can_differ_from_attention(n_heads: int) -> None:
    # Lopardo et al.: the gradient is α_t times a token-dependent vector, so the most
    # attended token need not have the largest gradient, even with a single head. Not a
    # cherry-picked seed: the disagreement shows up for most random models.
    tokens = random_tokens(7, 64)
    rates = []
    for seed in SEEDS:
        top_attn, top_grad = top_tokens(make_weights(seed, n_heads=n_heads, n_out=1), tokens, 0)
        rates.append(float((top_attn != top_grad).mean()))
    assert sum(r > 0 for r in rates) >= len(rates) // 2, rates
    # ... and the two rankings are related: they agree on most inputs overall.
    assert 0 < np.mean(rates) < 0.5, rates


def constant_value_readout(w: ModelWeights) -> ModelWeights:
    """One-head model changed so that w · v_t is the same for every token.

    Token embeddings are made orthogonal to r = the last axis and W_V is projected so
    that W_V W_O u = r; then g_t = e_t · r + b_v · w = b_v · w for every t.
    """
    layer = dict(w.layers[0])
    r = np.zeros(D_MODEL)
    r[-1] = 1.0
    w_l = layer["w_o"][0] @ w.unembed[:, 0]
    w_v = layer["w_v"][0]
    layer["w_v"] = (w_v - np.outer(w_v @ w_l - r, w_l) / (w_l @ w_l))[None]
    np.testing.assert_allclose(layer["w_v"][0] @ w_l, r, atol=1e-12)
    embed = w.token_embed.copy()
    embed[:, -1] = 0.0
    return dataclasses.replace(w, layers=(layer,), token_embed=embed)


def test_ranking_agrees_when_value_readout_is_constant() -> None:
    # Control for the test above. With g_t constant the closed form collapses to
    # ∇_{e_t} f = α_t r: the gradient ranking IS the attention ranking, on every input
    # of every seed, including the seeds that disagree without the change. The
    # disagreement comes from the term g_t − ḡ alone.
    tokens = random_tokens(7, 64)
    disagreeing = 0
    for seed in SEEDS:
        w = make_weights(seed, n_heads=1, n_out=1)
        top_attn, top_grad = top_tokens(constant_value_readout(w), tokens, 0)
        np.testing.assert_array_equal(top_attn, top_grad, err_msg=f"seed {seed}")
        top_attn, top_grad = top_tokens(w, tokens, 0)
        disagreeing += bool((top_attn != top_grad).any())
    assert disagreeing >= len(SEEDS) // 2
