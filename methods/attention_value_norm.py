"""Norm-weighted attention (Kobayashi et al. 2020) as token relevance."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from interpbench.attention_relevance import KINDS, VALUE_HEAD_REDUCE, AttentionMethod, AttentionRun, last_live_layer
from interpbench.method import method

if TYPE_CHECKING:
    from interpbench.compiled import CompiledCase


@method("attention_value_norm", family="attention", kinds=KINDS)
class AttentionValueNorm(AttentionMethod):
    """Norm-weighted attention (Kobayashi et al. 2020) in the last layer with live heads.

    Each head h adds sum_j alpha_h[i, j] f_h(x_j) to position i, with
    f_h(x_j) = v_h[j] @ W_O^h and v_h[j] = x_j @ W_V^h + b_V^h (the output bias b_O
    is shared by all positions and left out). The relevance weighs attention by how
    large the moved vector is:
    R[b, i, j] = sum over live heads h of alpha_h[i, j] * ||f_h(x_j)||_2 (`head_reduce="sum"`);
    "mean" divides by the number of live heads (a per-case constant);
    "vector" is the paper's layer-level ||sum_h alpha_h[i, j] f_h(x_j)||_2, which lets
    heads cancel. A key whose value vector is zero (tracr's BOS carries no value for
    most aggregates) gets no relevance even when it absorbs the attention.
    A program without live heads gets all-zero token_relevance. BOS handling and
    head_patterns as in `attention_last_layer`; `diagnostics["value_norm_mean"]` is the
    mean ||f_h(x_j)|| over live heads and real non-BOS keys.

    Settings:
        head_reduce: "sum" (default), "mean" or "vector" (see above).
        drop_bos: Zero the BOS column of token_relevance (default True).
    """

    defaults: ClassVar[dict[str, Any]] = {"head_reduce": "sum", "drop_bos": True}
    reduces: ClassVar[tuple[str, ...]] = VALUE_HEAD_REDUCE

    def _hooks(self, case: CompiledCase, live: list[list[int]]) -> list[str]:
        layer, _ = last_live_layer(live)
        return [] if layer is None else [f"blocks.{layer}.attn.hook_v"]

    def _relevance(self, run: AttentionRun) -> tuple[np.ndarray | None, dict[str, Any]]:
        layer, diagnostics = last_live_layer(run.live)
        if layer is None:
            return None, diagnostics
        heads = run.live[layer]
        v = run.cache[f"blocks.{layer}.attn.hook_v"][:, :, heads]  # [n, key, head, d_head]
        w_o = np.asarray(run.case.weights.layers[layer]["w_o"])[heads]  # [head, d_head, d_model]
        moved = np.einsum("bshk,hkd->bhsd", v, w_o)  # f_h(x_j): [n, head, key, d_model]
        alpha = run.patterns[layer][:, heads]  # [n, head, query, key]
        how = self.settings["head_reduce"]
        if how == "vector":
            relevance = np.linalg.norm(np.einsum("bhqs,bhsd->bqsd", alpha, moved), axis=-1)
        else:
            norms = np.linalg.norm(moved, axis=-1)  # [n, head, key]
            relevance = (alpha * norms[:, :, None, :]).sum(axis=1)
            if how == "mean":
                relevance = relevance / len(heads)
        keys = run.real.copy()
        keys[:, 0] = False
        norms_all = np.linalg.norm(moved, axis=-1).transpose(0, 2, 1)  # [n, key, head]
        diagnostics["value_norm_mean"] = float(norms_all[keys].mean()) if keys.any() else 0.0
        diagnostics["bos_value_norm_mean"] = float(norms_all[:, 0].mean())
        return relevance, diagnostics
