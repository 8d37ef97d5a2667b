"""Raw attention as an explanation: last-layer patterns as token relevance, all heads as patterns."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from interpbench.errors import BadInputError
from interpbench.explanation import Explanation
from interpbench.method import Method, method

if TYPE_CHECKING:
    from interpbench.compiled import CompiledCase
    from interpbench.weights import ModelWeights

HEAD_REDUCE = ("mean", "max")
HEAD_KEYS = ("w_q", "w_k", "w_v", "w_o")


def live_heads(weights: ModelWeights) -> list[list[int]]:
    """Heads with any non-zero weight, per layer.

    tracr pads every layer to the same number of heads, and a layer that only holds
    an MLP gets all-zero attention weights; such heads attend uniformly and compute
    nothing. A head counts as live if any of its W_Q, W_K, W_V, W_O is non-zero.

    Returns:
        For each layer, the indices of its live heads (empty for a layer without heads).
    """
    out: list[list[int]] = []
    for layer in weights.layers:
        nonzero = np.zeros(int(layer["w_q"].shape[0]), dtype=bool)
        for k in HEAD_KEYS:
            nonzero |= np.abs(layer[k]).reshape(layer[k].shape[0], -1).max(axis=1, initial=0.0) > 0
        out.append([int(h) for h in np.flatnonzero(nonzero)])
    return out


def real_positions(case: CompiledCase) -> np.ndarray:
    """[n, T] bool: True at BOS and at real input positions, False at PAD."""
    t = case.n_positions
    return np.arange(t)[None, :] <= np.asarray(case.lengths)[:, None]


@method("attention_last_layer", family="attention", kinds=("token_relevance", "head_patterns"))
class AttentionLastLayer(Method):
    """Reads attention patterns off one batched forward.

    token_relevance R[b, i, j] is the attention from query position i to key position
    j in the last layer that has live heads (see `live_heads`), reduced over that
    layer's live heads with `head_reduce` ("mean" or "max"). Rows at BOS and PAD
    positions (no output there) and columns at PAD positions are 0. A program with
    no live head at all (MLPs only) gets all-zero token_relevance and
    `diagnostics["layer"] = None`.

    BOS column: tracr's selectors always let a query attend to BOS, and BOS soaks up
    the attention mass wherever the selector selects nothing (for aggregates) or
    carries a fixed share of it (for SelectorWidth). That mass says nothing about
    which input token matters, so `drop_bos=True` (the default) sets column 0 of
    token_relevance to 0. The remaining entries are not renormalised.

    head_patterns holds every head of every layer (including inert ones), keyed
    `L{layer}H{head}`, as the model computes it: BOS column kept, query rows and key
    columns at PAD positions set to 0. `drop_bos` does not apply to them.

    Settings:
        head_reduce: "mean" (default) or "max" over the live heads of the layer.
        drop_bos: Zero the BOS column of token_relevance (default True).
    """

    defaults = {"head_reduce": "mean", "drop_bos": True}

    def explain(self, case: CompiledCase, *, seed: int = 0) -> Explanation:
        """Runs the model once on all evaluation inputs and reads its attention.

        Args:
            case: The compiled case.
            seed: Unused (the method is deterministic).

        Returns:
            An Explanation with token_relevance [n, T, T] and head_patterns
            {"L{l}H{h}": [n, T, T]}.
        """
        import torch

        reduce = self.settings["head_reduce"]
        if reduce not in HEAD_REDUCE:
            raise BadInputError(f"head_reduce must be one of {HEAD_REDUCE}, got {reduce!r}")
        model = case.model
        n_layers = case.weights.n_layers
        names = [f"blocks.{l}.attn.hook_pattern" for l in range(n_layers)]
        _, cache = model.run_with_cache(torch.from_numpy(np.asarray(case.tokens, dtype=np.int64)), names)

        real = real_positions(case)  # [n, T]
        pair = real[:, :, None] & real[:, None, :]  # [n, query, key]
        patterns = {l: np.where(pair[:, None], cache[names[l]].numpy(), 0.0) for l in range(n_layers)}
        head_patterns = {
            f"L{l}H{h}": patterns[l][:, h].copy()
            for l in range(n_layers)
            for h in range(patterns[l].shape[1])
        }

        n, t = case.tokens.shape
        relevance = np.zeros((n, t, t))
        live = live_heads(case.weights)
        layer = max((l for l in range(n_layers) if live[l]), default=None)
        diagnostics: dict[str, Any] = {"layer": layer, "heads": [] if layer is None else live[layer]}
        if layer is not None:
            chosen = patterns[layer][:, live[layer]]  # [n, heads, T, T]
            relevance = chosen.mean(axis=1) if reduce == "mean" else chosen.max(axis=1)
            outputs = real.copy()
            outputs[:, 0] = False  # no output at BOS
            relevance = np.where(outputs[:, :, None], relevance, 0.0)
            if self.settings["drop_bos"]:
                relevance[:, :, 0] = 0.0
            bos_mass = chosen[:, :, :, 0].mean(axis=1)[outputs]
            diagnostics["bos_mass_mean"] = float(bos_mass.mean()) if bos_mass.size else 0.0
        return Explanation(
            token_relevance=relevance, head_patterns=head_patterns, diagnostics=diagnostics
        )
