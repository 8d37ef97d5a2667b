"""Attention rollout and attention flow (Abnar & Zuidema 2020) as token relevance."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from interpbench.attention_graphs import augment_residual, layered_max_flow, networkx_max_flow, rollout
from interpbench.attention_relevance import KINDS, AttentionMethod, AttentionRun, reduce_heads
from interpbench.method import method


@method("attention_rollout", family="attention", kinds=KINDS)
class AttentionRollout(AttentionMethod):
    """Attention rollout (Abnar & Zuidema 2020).

    Per layer, the live heads' patterns are reduced with `head_reduce`, the residual
    connection is added as an identity and rows are renormalised:
    A'_l = rownorm((1 - w) A_l + w I), w = `residual_weight` (0.5 in the paper).
    Layers without live heads are the identity (tracr's padding heads have zero
    value/output weights and move nothing). Rollout = A'_L @ ... @ A'_1 and
    R[b, i, j] = rollout[i, j]: how much of position i at the top comes from input
    position j, if every layer only mixed positions linearly by its attention. MLPs
    are ignored (they act per position, so they do not move information between
    positions, but they are non-linear and their contribution is not weighed).

    Real query rows of the rollout sum to 1 before `drop_bos`; PAD positions are
    zeroed out of the attention, so they stay isolated (their A' rows are identity).
    A program without live heads gets the identity: each output draws on its own
    position only. BOS handling and head_patterns as in `attention_last_layer`.

    Settings:
        head_reduce: "mean" (default, as in the paper) or "max" over a layer's live heads.
        residual_weight: w, the identity's share in A' (default 0.5).
        drop_bos: Zero the BOS column of token_relevance (default True).
    """

    defaults: ClassVar[dict[str, Any]] = {"head_reduce": "mean", "residual_weight": 0.5, "drop_bos": True}

    def _without_heads(self, n: int, t: int) -> np.ndarray:
        """The identity: without live heads each output draws on its own position only."""
        return np.broadcast_to(np.eye(t), (n, t, t)).copy()

    def _relevance(self, run: AttentionRun) -> tuple[np.ndarray | None, dict[str, Any]]:
        patterns, live = run.patterns, run.live
        w = float(self.settings["residual_weight"])
        reduce = self.settings["head_reduce"]
        # A'_l [n, T, T] for each layer with live heads, first layer first
        layers = [
            augment_residual(reduce_heads(patterns[l][:, live[l]], reduce), w) for l in range(len(live)) if live[l]
        ]
        diagnostics: dict[str, Any] = {"layers": [l for l in range(len(live)) if live[l]]}
        if not layers:
            return None, diagnostics
        return self._combine(run, layers, diagnostics), diagnostics

    def _combine(self, run: AttentionRun, layers: list[np.ndarray], diagnostics: dict[str, Any]) -> np.ndarray:
        """Relevance [n, T, T] from the augmented layers A'_l (at least one): their rollout."""
        return rollout(layers)


@method("attention_flow", family="attention", kinds=KINDS)
class AttentionFlow(AttentionRollout):
    """Attention flow (Abnar & Zuidema 2020): max-flow through the layered attention graph.

    Nodes are (layer, position); layer l's A' (exactly as in `attention_rollout`) puts
    an edge from node k of layer l - 1 to node i of layer l with capacity A'_l[i, k].
    R[b, i, j] is the max-flow value from input node j at the bottom to output node i
    at the top. Layers without live heads are the identity; they are dropped from the
    graph, which leaves every flow unchanged (each node above the bottom has inflow
    capacity at most 1, and no flow exceeds 1). PAD nodes have no edges to real
    nodes, so each input's graph spans its real positions only. One layer: flow =
    A'; two layers: the closed form sum_k min(A'_1[k, j], A'_2[i, k]) (vectorised);
    three or more: networkx preflow-push, one graph per input reused for all (i, j).
    MLPs are ignored. Without live heads the result is the identity.

    Flow is bounded by 1 (the capacity into output i) and by input j's outgoing
    capacity in the first layer. Abnar & Zuidema's code divides each output row by
    its sum; `normalize_rows=True` does that (over the columns left after
    `drop_bos`), which changes no within-row ranking. The flow from BOS is computed
    either way (flows to different inputs are independent max-flow problems), so
    `diagnostics["bos_share_mean"]` reports it before `drop_bos` zeroes it.

    Settings:
        head_reduce: "mean" (default) or "max" over a layer's live heads.
        residual_weight: w, the identity's share in A' (default 0.5).
        normalize_rows: Divide each output row by its total flow (default False).
        drop_bos: Zero the BOS column of token_relevance (default True).
    """

    defaults: ClassVar[dict[str, Any]] = {
        "head_reduce": "mean", "residual_weight": 0.5, "normalize_rows": False, "drop_bos": True,
    }  # fmt: skip

    def _combine(self, run: AttentionRun, layers: list[np.ndarray], diagnostics: dict[str, Any]) -> np.ndarray:
        """Max-flow [n, T, T] through the augmented layers; records how it was computed."""
        case = run.case
        n, t = case.tokens.shape
        if len(layers) <= 2:  # closed forms, all inputs at once
            flow = layered_max_flow(layers, range(1, t), range(t))
        else:  # one graph per input, over its real positions only
            flow = np.zeros((n, t, t))
            for b, length in enumerate(np.asarray(case.lengths).tolist()):
                p = length + 1
                flow[b, :p, :p] = networkx_max_flow([a[b, :p, :p] for a in layers], range(1, p), range(p))
        if self.settings["normalize_rows"]:
            first = 1 if self.settings["drop_bos"] else 0
            masked = np.where(run.real[:, None, :], flow, 0.0)
            masked[:, :, :first] = 0.0
            sums = masked.sum(axis=-1, keepdims=True)
            flow = np.divide(masked, sums, out=np.zeros_like(masked), where=sums > 0)
        diagnostics["graph"] = "closed_form" if len(layers) <= 2 else "networkx"
        return flow
