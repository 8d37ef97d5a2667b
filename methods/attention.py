"""Attention inspection: raw attention, rollout, flow and value-weighted norms as token relevance."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from interpbench.errors import BadInputError
from interpbench.explanation import Explanation
from interpbench.method import Method, method
from interpbench.methods.captum_attr import zero_row_share

if TYPE_CHECKING:
    from interpbench.compiled import CompiledCase
    from interpbench.weights import ModelWeights

HEAD_REDUCE = ("mean", "max")
VALUE_HEAD_REDUCE = ("sum", "mean", "vector")
HEAD_KEYS = ("w_q", "w_k", "w_v", "w_o")
KINDS = ("token_relevance", "head_patterns")


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


def reduce_heads(patterns: np.ndarray, how: str) -> np.ndarray:
    """[..., heads, T, T] -> [..., T, T]: "mean" or "max" over the head axis."""
    return patterns.mean(axis=-3) if how == "mean" else patterns.max(axis=-3)


def augment_residual(attention: np.ndarray, residual_weight: float) -> np.ndarray:
    """A' = rownorm((1 - w) A + w I): attention with the residual connection, rows renormalised.

    Abnar & Zuidema (2020) model the residual stream as an identity edge with the
    same weight as the attention (w = 0.5). Rows summing to 0 (only possible with
    w = 0 at zeroed PAD rows) stay 0.

    Args:
        attention: [..., T, T] attention, one row per query.
        residual_weight: w in [0, 1].

    Returns:
        [..., T, T] row-stochastic where the row total is non-zero.
    """
    t = attention.shape[-1]
    mixed = (1.0 - residual_weight) * attention + residual_weight * np.eye(t)
    sums = mixed.sum(axis=-1, keepdims=True)
    return np.divide(mixed, sums, out=np.zeros_like(mixed), where=sums > 0)


def rollout(layers: Sequence[np.ndarray]) -> np.ndarray:
    """Attention rollout: A'_L @ ... @ A'_2 @ A'_1 (first layer applied first).

    Args:
        layers: Per layer, residual-augmented attention [..., T, T] (rows = queries
            at the layer's output, columns = keys at its input), first layer first.
            At least one layer.

    Returns:
        [..., T, T]: entry [i, j] is how much top position i draws from input j.
    """
    out = layers[0]
    for a in layers[1:]:
        out = a @ out
    return out


def layered_max_flow(
    capacities: Sequence[np.ndarray], sinks: Sequence[int], sources: Sequence[int]
) -> np.ndarray:
    """Max-flow from input node j (bottom) to output node i (top) of a layered graph.

    The graph has len(capacities) + 1 layers of P nodes; layer l's matrix C_l [P, P]
    puts an edge from node k of layer l - 1 to node i of layer l with capacity
    C_l[i, k]. One layer: the flow is C_1[i, j]. Two layers: every path is
    j -> k -> i on its own two edges, so the flow is sum_k min(C_1[k, j], C_2[i, k]).
    Both closed forms are vectorised over leading batch axes. Three or more layers:
    `networkx_max_flow` per batch element.

    Args:
        capacities: C_1 .. C_L, each [..., P, P] with the same leading axes,
            non-negative; at least one.
        sinks: Output nodes i (top layer) to compute rows for.
        sources: Input nodes j (bottom layer) to compute columns for.

    Returns:
        F [..., P, P] with F[..., i, j] the max-flow value for i in sinks and j in
        sources, 0 elsewhere.
    """
    first = np.asarray(capacities[0])
    flow = np.zeros(first.shape)
    rows, cols = np.asarray(sinks, dtype=np.int64), np.asarray(sources, dtype=np.int64)
    if rows.size == 0 or cols.size == 0:
        return flow
    grid = (..., rows[:, None], cols[None, :])
    if len(capacities) == 1:
        flow[grid] = first[grid]
    elif len(capacities) == 2:
        c1, c2 = first, np.asarray(capacities[1])
        # [..., i, k, j] = min(C_2[i, k], C_1[k, j]); sum over the middle node k
        paths = np.minimum(c2[..., rows, :][..., :, :, None], c1[..., :, cols][..., None, :, :])
        flow[grid] = paths.sum(axis=-2)
    else:
        for idx in np.ndindex(first.shape[:-2]):
            graph = [np.asarray(c)[idx] for c in capacities]
            flow[idx] = networkx_max_flow(graph, rows.tolist(), cols.tolist())
    return flow


def networkx_max_flow(
    capacities: Sequence[np.ndarray], sinks: Sequence[int], sources: Sequence[int]
) -> np.ndarray:
    """`layered_max_flow` for one graph (each C_l [P, P]), any number of layers, by networkx.

    Builds the graph once (zero-capacity edges left out) and reuses its residual
    network for every (i, j) pair; preflow-push resets the residual flows each call.
    """
    import networkx as nx
    from networkx.algorithms.flow import build_residual_network, preflow_push

    p = capacities[0].shape[-1]
    graph = nx.DiGraph()
    graph.add_nodes_from(range((len(capacities) + 1) * p))
    for l, cap in enumerate(capacities, start=1):
        i, k = np.nonzero(cap > 0)
        graph.add_weighted_edges_from(
            zip(((l - 1) * p + k).tolist(), (l * p + i).tolist(), cap[i, k].tolist()), weight="capacity"
        )
    residual = build_residual_network(graph, "capacity")
    top = len(capacities) * p
    flow = np.zeros((p, p))
    for i in sinks:
        for j in sources:
            flow[i, j] = nx.maximum_flow_value(graph, j, top + i, flow_func=preflow_push, residual=residual)
    return flow


class _AttentionMethod(Method):
    """Shared forward and masking; subclasses compute the raw relevance in `_relevance`.

    Every subclass returns head_patterns = every head of every layer (inert ones
    included) as the model computes it, keyed `L{layer}H{head}`: BOS column kept,
    query rows and key columns at PAD positions set to 0 (`drop_bos` does not apply).
    token_relevance rows at BOS and PAD (no output there) and columns at PAD are 0;
    with `drop_bos=True` column 0 (BOS) is 0 as well, without renormalising the rest.
    """

    reduces: ClassVar[tuple[str, ...]] = HEAD_REDUCE

    def _hooks(self, case: CompiledCase, live: list[list[int]]) -> list[str]:
        """Extra hook names to cache besides the attention patterns."""
        return []

    def _relevance(
        self, case: CompiledCase, patterns: dict[int, np.ndarray], live: list[list[int]],
        cache: dict[str, Any], real: np.ndarray,
    ) -> tuple[np.ndarray, dict[str, Any]]:  # fmt: skip
        """Raw relevance [n, T, T] before output/PAD/BOS masking, and diagnostics."""
        raise NotImplementedError

    def _check(self) -> None:
        reduce = self.settings.get("head_reduce")
        if reduce not in self.reduces:
            raise BadInputError(f"head_reduce must be one of {self.reduces}, got {reduce!r}")
        if "residual_weight" in self.settings:
            w = self.settings["residual_weight"]
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0.0 <= float(w) <= 1.0:
                raise BadInputError(f"residual_weight must be a number in [0, 1], got {w!r}")

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

        self._check()
        model = case.model
        n_layers = case.weights.n_layers
        live = live_heads(case.weights)
        names = [f"blocks.{l}.attn.hook_pattern" for l in range(n_layers)]
        extra = self._hooks(case, live)
        tokens = torch.from_numpy(np.asarray(case.tokens, dtype=np.int64))
        _, cache = model.run_with_cache(tokens, names + extra)

        real = real_positions(case)  # [n, T]
        pair = real[:, :, None] & real[:, None, :]  # [n, query, key]
        patterns = {l: np.where(pair[:, None], cache[names[l]].numpy(), 0.0) for l in range(n_layers)}
        head_patterns = {
            f"L{l}H{h}": patterns[l][:, h].copy()
            for l in range(n_layers)
            for h in range(patterns[l].shape[1])
        }

        raw, diagnostics = self._relevance(case, patterns, live, {k: cache[k].numpy() for k in extra}, real)
        outputs = real.copy()
        outputs[:, 0] = False  # no output at BOS
        relevance = np.where(outputs[:, :, None] & real[:, None, :], raw, 0.0)
        totals = np.abs(relevance).sum(axis=-1)[outputs]
        bos = np.abs(relevance[:, :, 0])[outputs]
        share = np.divide(bos, totals, out=np.zeros_like(bos), where=totals > 0)
        diagnostics["bos_share_mean"] = float(share.mean()) if share.size else 0.0
        if self.settings["drop_bos"]:
            relevance[:, :, 0] = 0.0
        diagnostics["zero_row_share"] = zero_row_share(case, relevance)
        return Explanation(token_relevance=relevance, head_patterns=head_patterns, diagnostics=diagnostics)


@method("attention_last_layer", family="attention", kinds=KINDS)
class AttentionLastLayer(_AttentionMethod):
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
    dropping it. head_patterns: see `_AttentionMethod`.

    Settings:
        head_reduce: "mean" (default) or "max" over the live heads of the layer.
        drop_bos: Zero the BOS column of token_relevance (default True).
    """

    defaults: ClassVar[dict[str, Any]] = {"head_reduce": "mean", "drop_bos": True}

    def _relevance(
        self, case: CompiledCase, patterns: dict[int, np.ndarray], live: list[list[int]],
        cache: dict[str, Any], real: np.ndarray,
    ) -> tuple[np.ndarray, dict[str, Any]]:  # fmt: skip
        n, t = case.tokens.shape
        layer = max((l for l in range(len(live)) if live[l]), default=None)
        diagnostics: dict[str, Any] = {"layer": layer, "heads": [] if layer is None else live[layer]}
        if layer is None:
            return np.zeros((n, t, t)), diagnostics
        return reduce_heads(patterns[layer][:, live[layer]], self.settings["head_reduce"]), diagnostics


@method("attention_last_layer_max", family="attention", kinds=KINDS)
class AttentionLastLayerMax(AttentionLastLayer):
    """`attention_last_layer` with `head_reduce="max"`: the strongest live head per (query, key)."""

    defaults: ClassVar[dict[str, Any]] = {"head_reduce": "max", "drop_bos": True}


@method("attention_all_layers_mean", family="attention", kinds=KINDS)
class AttentionAllLayers(_AttentionMethod):
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

    def _relevance(
        self, case: CompiledCase, patterns: dict[int, np.ndarray], live: list[list[int]],
        cache: dict[str, Any], real: np.ndarray,
    ) -> tuple[np.ndarray, dict[str, Any]]:  # fmt: skip
        n, t = case.tokens.shape
        heads = [f"L{l}H{h}" for l in range(len(live)) for h in live[l]]
        diagnostics: dict[str, Any] = {"heads": heads}
        if not heads:
            return np.zeros((n, t, t)), diagnostics
        stacked = np.concatenate([patterns[l][:, live[l]] for l in range(len(live)) if live[l]], axis=1)
        return reduce_heads(stacked, self.settings["head_reduce"]), diagnostics


@method("attention_all_layers_max", family="attention", kinds=KINDS)
class AttentionAllLayersMax(AttentionAllLayers):
    """`attention_all_layers_mean` with `head_reduce="max"`: max over all layers and live heads."""

    defaults: ClassVar[dict[str, Any]] = {"head_reduce": "max", "drop_bos": True}


@method("attention_rollout", family="attention", kinds=KINDS)
class AttentionRollout(_AttentionMethod):
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

    def _augmented(self, patterns: dict[int, np.ndarray], live: list[list[int]]) -> list[np.ndarray]:
        """A'_l [n, T, T] for each layer with live heads, first layer first."""
        w = float(self.settings["residual_weight"])
        reduce = self.settings["head_reduce"]
        return [
            augment_residual(reduce_heads(patterns[l][:, live[l]], reduce), w)
            for l in range(len(live))
            if live[l]
        ]

    def _relevance(
        self, case: CompiledCase, patterns: dict[int, np.ndarray], live: list[list[int]],
        cache: dict[str, Any], real: np.ndarray,
    ) -> tuple[np.ndarray, dict[str, Any]]:  # fmt: skip
        n, t = case.tokens.shape
        layers = self._augmented(patterns, live)
        diagnostics: dict[str, Any] = {"layers": [l for l in range(len(live)) if live[l]]}
        if not layers:
            return np.broadcast_to(np.eye(t), (n, t, t)).copy(), diagnostics
        return rollout(layers), diagnostics


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

    def _relevance(
        self, case: CompiledCase, patterns: dict[int, np.ndarray], live: list[list[int]],
        cache: dict[str, Any], real: np.ndarray,
    ) -> tuple[np.ndarray, dict[str, Any]]:  # fmt: skip
        n, t = case.tokens.shape
        layers = self._augmented(patterns, live)
        diagnostics: dict[str, Any] = {"layers": [l for l in range(len(live)) if live[l]]}
        if not layers:
            return np.broadcast_to(np.eye(t), (n, t, t)).copy(), diagnostics
        if len(layers) <= 2:  # closed forms, all inputs at once
            flow = layered_max_flow(layers, range(1, t), range(t))
        else:  # one graph per input, over its real positions only
            flow = np.zeros((n, t, t))
            for b, length in enumerate(np.asarray(case.lengths).tolist()):
                p = length + 1
                flow[b, :p, :p] = networkx_max_flow([a[b, :p, :p] for a in layers], range(1, p), range(p))
        if self.settings["normalize_rows"]:
            first = 1 if self.settings["drop_bos"] else 0
            masked = np.where(real[:, None, :], flow, 0.0)
            masked[:, :, :first] = 0.0
            sums = masked.sum(axis=-1, keepdims=True)
            flow = np.divide(masked, sums, out=np.zeros_like(masked), where=sums > 0)
        diagnostics["graph"] = "closed_form" if len(layers) <= 2 else "networkx"
        return flow, diagnostics


@method("attention_value_norm", family="attention", kinds=KINDS)
class AttentionValueNorm(_AttentionMethod):
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

    @staticmethod
    def _layer(live: list[list[int]]) -> int | None:
        return max((l for l in range(len(live)) if live[l]), default=None)

    def _hooks(self, case: CompiledCase, live: list[list[int]]) -> list[str]:
        layer = self._layer(live)
        return [] if layer is None else [f"blocks.{layer}.attn.hook_v"]

    def _relevance(
        self, case: CompiledCase, patterns: dict[int, np.ndarray], live: list[list[int]],
        cache: dict[str, Any], real: np.ndarray,
    ) -> tuple[np.ndarray, dict[str, Any]]:  # fmt: skip
        n, t = case.tokens.shape
        layer = self._layer(live)
        diagnostics: dict[str, Any] = {"layer": layer, "heads": [] if layer is None else live[layer]}
        if layer is None:
            return np.zeros((n, t, t)), diagnostics
        heads = live[layer]
        v = cache[f"blocks.{layer}.attn.hook_v"][:, :, heads]  # [n, key, head, d_head]
        w_o = np.asarray(case.weights.layers[layer]["w_o"])[heads]  # [head, d_head, d_model]
        moved = np.einsum("bshk,hkd->bhsd", v, w_o)  # f_h(x_j): [n, head, key, d_model]
        alpha = patterns[layer][:, heads]  # [n, head, query, key]
        how = self.settings["head_reduce"]
        if how == "vector":
            relevance = np.linalg.norm(np.einsum("bhqs,bhsd->bqsd", alpha, moved), axis=-1)
        else:
            norms = np.linalg.norm(moved, axis=-1)  # [n, head, key]
            relevance = (alpha * norms[:, :, None, :]).sum(axis=1)
            if how == "mean":
                relevance = relevance / len(heads)
        keys = real.copy()
        keys[:, 0] = False
        norms_all = np.linalg.norm(moved, axis=-1).transpose(0, 2, 1)  # [n, key, head]
        diagnostics["value_norm_mean"] = float(norms_all[keys].mean()) if keys.any() else 0.0
        diagnostics["bos_value_norm_mean"] = float(norms_all[:, 0].mean())
        return relevance, diagnostics
