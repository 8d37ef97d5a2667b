"""Decoy twins: added heads with sharp, plausible attention that do not change the function.

Both decoys attend to the previous token (BOS for the first token), the pattern of a
classic "previous-token head", built from the index and token directions every tracr
model has. Their values are a bucket of the attended token.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from interpbench.compiled import NUMERIC_OUTPUT_ATOL, CompiledCase
from interpbench.components import Component
from interpbench.twin_transforms import HEAD_KEYS, add_heads, live_heads, with_components
from interpbench.twins import TwinModel, TwinNotApplicable, twin
from interpbench.weights import ModelWeights

SHARPNESS = 100.0  # score margin of the attended key over the next best, as in tracr's attention
DECOY_STRENGTH = 10.0  # logit each decoy of a pair adds or removes (tracr's logits are one-hot)
DEAD_LABEL = "decoy:dead"
MIN_KEY_SIZE = 3  # query/key of the previous-token pattern need three dimensions
MAX_DRAWS = 8  # decoy-pair output maps tried before the twin is declared not applicable


def _label_of(coords: np.ndarray, labels: tuple[str, ...], prefix: str) -> int:
    """Index of the one `prefix` direction with coefficient 1 in `coords`."""
    hits = [i for i, lab in enumerate(labels) if lab.startswith(prefix) and abs(coords[i] - 1.0) < 1e-9]
    if len(hits) != 1:
        raise TwinNotApplicable(f"the embedding has no single {prefix!r} direction to read")
    return hits[0]


def _ensure_key_size(w: ModelWeights) -> ModelWeights:
    """Widens d_head to MIN_KEY_SIZE when every head is zero (exact: no scores to rescale)."""
    if w.key_size >= MIN_KEY_SIZE:
        return w
    if live_heads(w):
        raise TwinNotApplicable(f"key size {w.key_size} leaves no room for a decoy head's query and key")
    grow = MIN_KEY_SIZE - w.key_size
    layers = []
    for layer in w.layers:
        new = dict(layer)
        for k in ("w_q", "w_k", "w_v"):
            new[k] = np.concatenate([layer[k], np.zeros((*layer[k].shape[:2], grow))], axis=2)
        for k in ("b_q", "b_k", "b_v"):
            new[k] = np.concatenate([layer[k], np.zeros((layer[k].shape[0], grow))], axis=1)
        new["w_o"] = np.concatenate([layer["w_o"], np.zeros((layer["w_o"].shape[0], grow, w.d_model))], axis=1)
        layers.append(new)
    return dataclasses.replace(w, layers=tuple(layers), key_size=MIN_KEY_SIZE)


def previous_token_head(
    compiled: CompiledCase, w: ModelWeights, out_rows: np.ndarray
) -> tuple[dict[str, np.ndarray], tuple[str, ...]]:
    """A head attending to the previous token (BOS for the first), writing `out_rows[bucket]`.

    With m the RASP index of a position, the query is (1, m - 1, (m - 1)^2), a token's key
    c (-m^2, 2m, 0) and BOS's key c (-1/2, 0, 1): the score is c (m_q - 1)^2 minus
    c (m_k - m_q + 1)^2 for tokens and minus c / 2 for BOS, so the previous token wins by
    c / 2 over BOS, and BOS by c / 2 over any other token. c / sqrt(key_size) = 2 SHARPNESS.
    The value is the one-hot bucket (token rank mod the number of buckets) of the key's token.

    Args:
        compiled: The case (for its vocabulary and length).
        w: The weights the head joins (key size at least MIN_KEY_SIZE).
        out_rows: [n_buckets, d_model] what each bucket writes to the residual stream.

    Returns:
        The head's parameters and the residual labels it reads.
    """
    labels, d, ks = w.residual_labels, w.d_model, w.key_size
    basis = np.eye(d) if w.residual_basis is None else w.residual_basis
    to_labels = basis.T  # model coordinates -> label coordinates (basis is orthonormal)
    c = 2.0 * SHARPNESS * np.sqrt(ks)
    q, k, v = np.zeros((d, ks)), np.zeros((d, ks)), np.zeros((d, ks))
    bos = _label_of(w.token_embed[w.bos_id] @ to_labels, labels, "tokens:")
    k[bos, :3] = c * np.array([-0.5, 0.0, 1.0])
    reads = [bos]
    for p in range(1, compiled.case.max_seq_len + 1):
        i, m = _label_of(w.pos_embed[p] @ to_labels, labels, "indices:"), p - 1
        q[i, :3] = [1.0, m - 1.0, (m - 1.0) ** 2]
        k[i, :3] = c * np.array([-(m**2), 2.0 * m, 0.0])
        reads.append(i)
    real = [t for t in range(len(w.input_tokens)) if t not in (w.bos_id, w.pad_id)]
    n_buckets = out_rows.shape[0]
    for rank, t in enumerate(real):
        i = _label_of(w.token_embed[t] @ to_labels, labels, "tokens:")
        v[i, rank % n_buckets] = 1.0
        reads.append(i)
    w_o = np.zeros((ks, d))
    w_o[:n_buckets] = out_rows
    params = {"w_q": basis.T @ q, "w_k": basis.T @ k, "w_v": basis.T @ v, "w_o": w_o,
              "b_q": np.zeros(ks), "b_k": np.zeros(ks), "b_v": np.zeros(ks)}  # fmt: skip
    return params, tuple(labels[i] for i in sorted(set(reads)))


def _decoy(name: str, layer: int, head: int, reads: tuple[str, ...], writes: tuple[str, ...]) -> Component:
    return Component(name, "head", layer, head, (), None, None, "inert", reads, writes, False)


def _buckets(w: ModelWeights) -> int:
    return min(w.key_size, len(w.input_tokens) - 2)


@twin("decoy_pair", exact=False, reference="interpbench; cancelling heads in the spirit of Wen et al. 2023")
def decoy_pair(compiled: CompiledCase, rng: np.random.Generator) -> TwinModel:
    """Two added previous-token heads in the last layer with equal values and opposite outputs that cancel.

    Bucket r of the attended token moves DECOY_STRENGTH of logit from output class tau(r) to
    class sigma(r) (sigma, tau drawn from the rng, sigma(r) != tau(r); numerical outputs: adds
    DECOY_STRENGTH (r + 1) / n_buckets to the read-out); the partner does the opposite, so
    each alone changes outputs while the pair sums to zero. The maps are redrawn (up to
    MAX_DRAWS times) until each decoy alone changes some output on the evaluation inputs.
    Both decoys are inert in the truth and have no true pattern.
    """
    w = _ensure_key_size(compiled.weights)
    n_buckets, u, last = _buckets(w), w.unembed, w.n_layers - 1
    n_out = u.shape[1]
    if w.categorical and n_out < 2:
        raise TwinNotApplicable("a single output class leaves no output for a decoy to change")
    unit = u / np.maximum((u * u).sum(0), 1e-300)  # column k adds 1 to logit k (u has orthogonal columns)
    names = [f"L{last}H{w.n_heads}", f"L{last}H{w.n_heads + 1}"]
    for _ in range(MAX_DRAWS):
        maps: dict[str, list[int]] = {}
        if w.categorical:
            sigma = rng.integers(0, n_out, n_buckets)
            tau = (sigma + rng.integers(1, n_out, n_buckets)) % n_out
            rows = DECOY_STRENGTH * (unit[:, sigma] - unit[:, tau]).T
            maps = {"sigma": sigma.tolist(), "tau": tau.tolist()}
        else:
            rows = DECOY_STRENGTH * np.outer(np.arange(1, n_buckets + 1) / n_buckets, unit[:, 0])
        plus, reads = previous_token_head(compiled, w, rows)
        weights = add_heads(w, {last: [plus, {**plus, "w_o": -plus["w_o"]}]})
        alone = _alone_changes(compiled, weights, last, (w.n_heads, w.n_heads + 1), names)
        if min(alone.values()) > 0.0:
            break
    else:
        raise TwinNotApplicable("no decoy pair found whose decoys alone change an output on the evaluation inputs")
    basis = np.eye(w.d_model) if w.residual_basis is None else w.residual_basis
    writes = tuple(w.residual_labels[i] for i in np.flatnonzero(np.abs(basis @ np.abs(rows).sum(0)) > 0))
    comps = [_decoy(n, last, w.n_heads + i, reads, writes) for i, n in enumerate(names)]
    truth = dataclasses.replace(compiled.truth, components=with_components(compiled.truth, weights.n_layers,
                                                                           weights.n_heads, comps))  # fmt: skip
    notes = {"decoys": names, "layer": last, "pattern": "previous token, BOS for the first token",
             "strength": DECOY_STRENGTH, "n_heads": weights.n_heads, "alone_changes": alone, **maps}  # fmt: skip
    return TwinModel(weights, truth, notes)


def _alone_changes(compiled: CompiledCase, weights: ModelWeights, layer: int, heads: tuple[int, int],
                   names: list[str]) -> dict[str, float]:  # fmt: skip
    """Share of defined outputs that change when each decoy runs without its partner (partner's z zeroed)."""
    import torch

    from interpbench.runtime import build_runtime

    model, tokens = build_runtime(weights), torch.from_numpy(compiled.tokens)
    defined = compiled.truth.valid_out
    tol = 0.0 if weights.categorical else NUMERIC_OUTPUT_ATOL
    out: dict[str, float] = {}
    for name, partner in zip(names, heads[::-1]):

        def ablate(z: torch.Tensor, partner: int = partner) -> torch.Tensor:
            z = z.clone()
            z[:, :, partner] = 0.0
            return z

        with torch.no_grad(), model.hooks({f"blocks.{layer}.attn.hook_z": ablate}):
            got = compiled.decode(model(tokens).numpy())
        changed = ~(np.abs(got - np.nan_to_num(compiled.outputs)) <= tol)
        out[name] = float(changed[defined].mean())
    return out


@twin("dead_decoy", exact=False, reference="interpbench; attention without effect, cf. Jain and Wallace 2019")
def dead_decoy(compiled: CompiledCase, rng: np.random.Generator) -> TwinModel:
    """One added previous-token head in layer 0 whose output goes to a new residual direction nobody reads.

    The new direction is the last one, labelled `decoy:dead`; bucket r of the attended token
    writes r + 1 there. Every reader (queries, keys, values, MLP inputs, the unembedding)
    has a zero row for it. The head is inert in the truth and has no true pattern.
    """
    del rng  # deterministic
    w = _widen(_ensure_key_size(compiled.weights))
    n_buckets = _buckets(w)
    rows = np.zeros((n_buckets, w.d_model))
    rows[:, -1] = np.arange(1, n_buckets + 1)
    head, reads = previous_token_head(compiled, w, rows)
    weights = add_heads(w, {0: [head]})
    name = f"L0H{w.n_heads}"
    comp = _decoy(name, 0, w.n_heads, reads, (DEAD_LABEL,))
    truth = dataclasses.replace(compiled.truth, components=with_components(compiled.truth, weights.n_layers,
                                                                           weights.n_heads, [comp]))  # fmt: skip
    notes = {"decoy": name, "layer": 0, "pattern": "previous token, BOS for the first token",
             "dead_direction": w.d_model - 1, "label": DEAD_LABEL, "n_heads": weights.n_heads}  # fmt: skip
    return TwinModel(weights, truth, notes)


def _widen(w: ModelWeights) -> ModelWeights:
    """Adds one zero residual direction, DEAD_LABEL, at the end; every reader ignores it."""

    def col(a: np.ndarray, axis: int) -> np.ndarray:
        shape = list(a.shape)
        shape[axis] = 1
        return np.concatenate([a, np.zeros(shape)], axis=axis)

    layers = []
    for layer in w.layers:
        new = {k: col(layer[k], 1) for k in ("w_q", "w_k", "w_v")}
        new.update({k: layer[k] for k in HEAD_KEYS if k.startswith("b_")})
        new.update(w_o=col(layer["w_o"], 2), b_o=col(layer["b_o"], 0), w_in=col(layer["w_in"], 0),
                   b_in=layer["b_in"], w_out=col(layer["w_out"], 1), b_out=col(layer["b_out"], 0))  # fmt: skip
        layers.append(new)
    basis = None
    if w.residual_basis is not None:
        basis = np.zeros((w.d_model + 1, w.d_model + 1))
        basis[:-1, :-1], basis[-1, -1] = w.residual_basis, 1.0
    return dataclasses.replace(w, token_embed=col(w.token_embed, 1), pos_embed=col(w.pos_embed, 1),
                               layers=tuple(layers), unembed=col(w.unembed, 0), residual_basis=basis,
                               residual_labels=(*w.residual_labels, DEAD_LABEL))  # fmt: skip
