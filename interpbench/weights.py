"""ModelWeights: a compiled transformer's parameters and vocabularies, saved as npz + JSON.

This is the framework-free form of a compiled case: the torch runtime is built from it,
`export` writes it, and a reader with only numpy can run it (see `numpy_forward`).
Twins (interpbench.twins) may add a residual basis and the reshuffled-attention rule;
both are written only when set, so a base model's files are unchanged by them.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from interpbench.storage import atomic_write_bytes, npz_bytes, read_npz

LAYER_KEYS = (
    "w_q", "b_q", "w_k", "b_k", "w_v", "b_v", "w_o", "b_o",
    "w_in", "b_in", "w_out", "b_out",
)  # fmt: skip
RESHUFFLE_VALUE_ATOL = 1e-9  # keys whose value vectors agree this closely share attention mass


@dataclasses.dataclass(frozen=True)
class ModelWeights:
    """Parameters of a tracr-assembled transformer, in TransformerLens orientation.

    Attributes:
        token_embed: [n_tokens, d_model]; row i embeds token id i (BOS and PAD included).
        pos_embed: [max_seq_len + 1, d_model]; row 0 (the BOS position) is zero.
        layers: One dict per layer with `w_q, w_k, w_v` [n_heads, d_model, d_head],
            `b_q, b_k, b_v` [n_heads, d_head], `w_o` [n_heads, d_head, d_model],
            `b_o` [d_model], `w_in` [d_model, d_mlp], `b_in` [d_mlp],
            `w_out` [d_mlp, d_model], `b_out` [d_model].
        unembed: [d_model, n_out]; column k reads output class k (or the scalar).
        residual_labels: Name of each residual direction, e.g. `tokens:3`, `one`.
        input_tokens: Token value of each id (JSON-safe: str/int/float/bool).
        output_values: Output value of each class, or None for a numerical output.
        key_size: Attention scale divisor is sqrt(key_size), as in tracr.
        causal: Whether attention is causally masked.
        bos_id: Id of the BOS token (always at position 0).
        pad_id: Id of the PAD token (masked out as a key).
        residual_basis: [d_model, d_model] or None (the identity): row i is the direction,
            in this model's residual coordinates, that `residual_labels[i]` names. A
            rotated twin keeps its labels this way.
        reshuffled_heads: (layer, head) pairs whose attention pattern is rewritten by
            `reshuffle_pattern` after the softmax (the `reshuffled_attention` twin).
    """

    token_embed: np.ndarray
    pos_embed: np.ndarray
    layers: tuple[dict[str, np.ndarray], ...]
    unembed: np.ndarray
    residual_labels: tuple[str, ...]
    input_tokens: tuple[Any, ...]
    output_values: tuple[Any, ...] | None
    key_size: int
    causal: bool
    bos_id: int
    pad_id: int
    residual_basis: np.ndarray | None = None
    reshuffled_heads: tuple[tuple[int, int], ...] = ()

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def n_heads(self) -> int:
        return int(self.layers[0]["w_q"].shape[0]) if self.layers else 0

    @property
    def d_model(self) -> int:
        return int(self.token_embed.shape[1])

    @property
    def categorical(self) -> bool:
        return self.output_values is not None

    def reshuffled_in(self, layer: int) -> tuple[int, ...]:
        """Heads of `layer` under the reshuffled-attention rule, in increasing order."""
        return tuple(sorted(h for l, h in self.reshuffled_heads if l == layer))

    def meta(self) -> dict[str, Any]:
        """The JSON half of the saved form (`reshuffled_heads` only when there are any)."""
        meta: dict[str, Any] = {
            "residual_labels": list(self.residual_labels),
            "input_tokens": list(self.input_tokens),
            "output_values": None if self.output_values is None else list(self.output_values),
            "key_size": self.key_size,
            "causal": self.causal,
            "bos_id": self.bos_id,
            "pad_id": self.pad_id,
            "n_layers": self.n_layers,
        }
        if self.reshuffled_heads:
            meta["reshuffled_heads"] = [[l, h] for l, h in self.reshuffled_heads]
        return meta

    def arrays(self) -> dict[str, np.ndarray]:
        """The npz half of the saved form: flat keys `blocks.{l}.{name}` (+ `residual_basis` when set)."""
        out = {"token_embed": self.token_embed, "pos_embed": self.pos_embed, "unembed": self.unembed}
        if self.residual_basis is not None:
            out["residual_basis"] = self.residual_basis
        for i, layer in enumerate(self.layers):
            for k in LAYER_KEYS:
                out[f"blocks.{i}.{k}"] = layer[k]
        return out

    def save(self, folder: Path, *, durable: bool = True) -> None:
        """Writes `weights.npz` and `model.json` into `folder`, each atomically (`durable`: fsync each)."""
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(folder / "weights.npz", npz_bytes(self.arrays()), durable=durable)
        atomic_write_bytes(folder / "model.json", json.dumps(self.meta(), indent=1).encode(), durable=durable)

    @classmethod
    def load(cls, folder: Path) -> ModelWeights:
        """Reads the form written by `save`; folders written before twins existed load too."""
        meta = json.loads((folder / "model.json").read_text())
        arr = read_npz(folder / "weights.npz")
        layers = tuple(
            {k: arr[f"blocks.{i}.{k}"] for k in LAYER_KEYS} for i in range(meta["n_layers"])
        )
        outs = meta["output_values"]
        return cls(
            token_embed=arr["token_embed"],
            pos_embed=arr["pos_embed"],
            layers=layers,
            unembed=arr["unembed"],
            residual_labels=tuple(meta["residual_labels"]),
            input_tokens=tuple(meta["input_tokens"]),
            output_values=None if outs is None else tuple(outs),
            key_size=int(meta["key_size"]),
            causal=bool(meta["causal"]),
            bos_id=int(meta["bos_id"]),
            pad_id=int(meta["pad_id"]),
            residual_basis=arr.get("residual_basis"),
            reshuffled_heads=tuple((int(l), int(h)) for l, h in meta.get("reshuffled_heads", [])),
        )


def reshuffle_pattern(pattern: np.ndarray, values: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Moves attention between keys whose value vectors are equal, keeping the head's output.

    For one head: `p'[q, s] = allowed[q, s] * m[q, g(s)] / n[q, g(s)]`, where g(s) is the
    group of keys whose values equal `v_s` (within RESHUFFLE_VALUE_ATOL), m the attention
    mass the group receives and n its number of allowed keys: each group's mass is spread
    uniformly over the group. Since values in a group are equal, `p' @ v == p @ v`. The
    uniform key weighting is the one choice that prefers no key of a group, depends on
    nothing but the values, and makes the most of what can move: a head that picks one
    of several identical keys is shown spread over all of them (Wen et al. 2023).

    Args:
        pattern: [b, q, s] softmax pattern.
        values: [b, s, d_head] value vectors.
        allowed: [b, q, s] bool, keys the query may attend to.

    Returns:
        The rewritten pattern [b, q, s].
    """
    same = (np.abs(values[:, :, None, :] - values[:, None, :, :]).max(-1, initial=0.0)
            <= RESHUFFLE_VALUE_ATOL).astype(pattern.dtype)  # fmt: skip
    a = allowed.astype(pattern.dtype)
    mass, count = pattern @ same, a @ same
    return np.where(allowed, mass / np.maximum(count, 1.0), 0.0)


def numpy_forward(w: ModelWeights, tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Reference forward in plain numpy: read-out logits [batch, pos, n_out].

    `tokens` is [batch, pos] of ids with BOS at position 0 and PAD after each
    sequence's `lengths + 1` positions. Kept deliberately short: it documents the
    exported format and is what the export test runs.
    """
    b, t = tokens.shape
    x = w.token_embed[tokens] + w.pos_embed[np.arange(t)][None]
    keep = np.arange(t)[None, :] <= lengths[:, None]  # [b, key]
    allowed = np.broadcast_to(keep[:, None, None, :], (b, 1, t, t))
    if w.causal:
        allowed = allowed & np.tril(np.ones((t, t), bool))[None, None]
    for i, layer in enumerate(w.layers):
        q = np.einsum("btd,hdk->bhtk", x, layer["w_q"]) + layer["b_q"][None, :, None]
        k = np.einsum("btd,hdk->bhtk", x, layer["w_k"]) + layer["b_k"][None, :, None]
        v = np.einsum("btd,hdk->bhtk", x, layer["w_v"]) + layer["b_v"][None, :, None]
        scores = np.einsum("bhqk,bhsk->bhqs", q, k) / np.sqrt(w.key_size)
        scores = np.where(allowed, scores, -1e30)
        scores = scores - scores.max(-1, keepdims=True)
        pattern = np.exp(scores)
        pattern /= pattern.sum(-1, keepdims=True)
        for h in w.reshuffled_in(i):
            pattern[:, h] = reshuffle_pattern(pattern[:, h], v[:, h], np.broadcast_to(allowed[:, 0], (b, t, t)))
        z = np.einsum("bhqs,bhsk->bhqk", pattern, v)
        x = x + np.einsum("bhqk,hkd->bqd", z, layer["w_o"]) + layer["b_o"]
        hidden = np.maximum(x @ layer["w_in"] + layer["b_in"], 0.0)
        x = x + hidden @ layer["w_out"] + layer["b_out"]
    return x @ w.unembed
