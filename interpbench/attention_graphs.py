"""Attention graphs: residual-augmented attention, rollout and layered max-flow (Abnar & Zuidema 2020)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


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
