"""Raw attention as token relevance: the last layer's or every layer's live heads, pooled."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from interpbench.attention_relevance import (
    KINDS,
    AttentionMethod,
    AttentionRun,
    last_live_layer,
    live_heads,
    reduce_heads,
)
from interpbench.method import method

__all__ = ["AttentionAllLayers", "AttentionAllLayersMax", "AttentionLastLayer", "AttentionLastLayerMax", "live_heads"]


@method("attention_last_layer", family="attention", kinds=KINDS)
class AttentionLastLayer(AttentionMethod):
    """Raw attention of the last layer that has live heads.

    token_relevance R[b, i, j] is the attention from query position i to key position
    j in the last layer with live heads (see `live_heads`), reduced over that layer's
    live heads with `head_reduce`. A program with no live head at all (MLPs only)
    gets all-zero token_relevance and `diagnostics["layer"] = None`.

    BOS column: tracr's selectors always let a query attend to BOS, and BOS soaks up
    the attention mass wherever the selector selects nothing (for aggregates) or
    carries a fixed share of it (for SelectorWidth). That mass says nothing about
    which input token matters, so `drop_bos=True` (the default) sets column 0 of
    token_relevance to 0. The remaining entries are not renormalised.
    `diagnostics["bos_share_mean"]` is the mean share of a row's mass at BOS before
    dropping it. head_patterns: see `AttentionMethod`.

    Settings:
        head_reduce: "mean" (default) or "max" over the live heads of the layer.
        drop_bos: Zero the BOS column of token_relevance (default True).
    """

    defaults: ClassVar[dict[str, Any]] = {"head_reduce": "mean", "drop_bos": True}

    def _relevance(self, run: AttentionRun) -> tuple[np.ndarray | None, dict[str, Any]]:
        layer, diagnostics = last_live_layer(run.live)
        if layer is None:
            return None, diagnostics
        return reduce_heads(run.patterns[layer][:, run.live[layer]], self.settings["head_reduce"]), diagnostics


@method("attention_last_layer_max", family="attention", kinds=KINDS)
class AttentionLastLayerMax(AttentionLastLayer):
    """`attention_last_layer` with `head_reduce="max"`: the strongest live head per (query, key)."""

    defaults: ClassVar[dict[str, Any]] = {"head_reduce": "max", "drop_bos": True}


@method("attention_all_layers_mean", family="attention", kinds=KINDS)
class AttentionAllLayers(AttentionMethod):
    """Raw attention of every live head of every layer, pooled.

    token_relevance R[b, i, j] = `head_reduce` over all live heads of all layers
    (each head counts once, so a layer with more live heads weighs more in the
    mean) of the attention from query i to key j. Layers without live heads are
    left out; a program with none gets all-zero token_relevance. The pattern of a
    head in layer l is attention over layer l's residual stream, which already mixes
    positions; this method ignores that (see `attention_rollout`).
    `diagnostics["heads"]` lists the pooled heads. BOS handling and head_patterns
    as in `attention_last_layer`.

    Settings:
        head_reduce: "mean" (default) or "max" over every live head.
        drop_bos: Zero the BOS column of token_relevance (default True).
    """

    defaults: ClassVar[dict[str, Any]] = {"head_reduce": "mean", "drop_bos": True}

    def _relevance(self, run: AttentionRun) -> tuple[np.ndarray | None, dict[str, Any]]:
        patterns, live = run.patterns, run.live
        heads = [f"L{l}H{h}" for l in range(len(live)) for h in live[l]]
        diagnostics: dict[str, Any] = {"heads": heads}
        if not heads:
            return None, diagnostics
        stacked = np.concatenate([patterns[l][:, live[l]] for l in range(len(live)) if live[l]], axis=1)
        return reduce_heads(stacked, self.settings["head_reduce"]), diagnostics


@method("attention_all_layers_max", family="attention", kinds=KINDS)
class AttentionAllLayersMax(AttentionAllLayers):
    """`attention_all_layers_mean` with `head_reduce="max"`: max over all layers and live heads."""

    defaults: ClassVar[dict[str, Any]] = {"head_reduce": "max", "drop_bos": True}
