"""Exact twins: residual rotation, QK/OV reparametrisation, MLP neuron permutation, head splitting.

Also the helpers every twin that adds heads uses (`add_heads`, `with_components`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from interpbench.compiled import CompiledCase
from interpbench.components import Component, Edge
from interpbench.ground_truth import GroundTruth
from interpbench.twins import TwinModel, TwinNotApplicable, twin
from interpbench.weights import ModelWeights

HEAD_KEYS = ("w_q", "b_q", "w_k", "b_k", "w_v", "b_v", "w_o")
SCALE_RANGE = 1.0  # log-scales drawn from uniform(-1, 1): condition numbers up to e^2
CIRCUITS = "Elhage et al. 2021, A Mathematical Framework for Transformer Circuits"
TRACR = "Lindner et al. 2023, Tracr: Compiled Transformers as a Laboratory for Interpretability"


def orthogonal(rng: np.random.Generator, n: int) -> np.ndarray:
    """A random n x n orthogonal matrix (Haar: QR of a Gaussian with the sign of R's diagonal fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.where(np.diag(r) < 0, -1.0, 1.0)[None, :]


def live_heads(weights: ModelWeights) -> list[tuple[int, int]]:
    """(layer, head) of every head with a non-zero parameter."""
    return [(l, h) for l, layer in enumerate(weights.layers) for h in range(weights.n_heads)
            if any(np.abs(layer[k][h]).max(initial=0.0) > 0 for k in HEAD_KEYS)]  # fmt: skip


def add_heads(weights: ModelWeights, extra: dict[int, list[dict[str, np.ndarray]]]) -> ModelWeights:
    """Appends heads to layers; every layer grows to the same head count with zero heads.

    The base heads keep their indices, so their names (`L{l}H{h}`) do not change; the heads
    of `extra[l]` take indices n_heads, n_heads + 1, ... of layer l.

    Args:
        weights: The model.
        extra: Layer -> per-head parameters `w_q, b_q, w_k, b_k, w_v, b_v` ([d, k] and [k])
            and `w_o` [k, d].
    """
    grow = max((len(v) for v in extra.values()), default=0)
    layers = []
    for l, layer in enumerate(weights.layers):
        new = dict(layer)
        for k in HEAD_KEYS:
            pad = np.zeros((grow, *layer[k].shape[1:]))
            for i, head in enumerate(extra.get(l, [])):
                pad[i] = head[k]
            new[k] = np.concatenate([layer[k], pad], axis=0)
        layers.append(new)
    return dataclasses.replace(weights, layers=tuple(layers))


def with_components(
    truth: GroundTruth, n_layers: int, n_heads: int, named: list[Component]
) -> tuple[Component, ...]:
    """The truth's components plus `named`, with an inert component for every other new head slot."""
    comps = {c.name: c for c in truth.components}
    comps.update({c.name: c for c in named})
    for l in range(n_layers):
        for h in range(n_heads):
            name = f"L{l}H{h}"
            comps.setdefault(name, Component(name, "head", l, h, (), None, None, "inert", (), (), False))
    return tuple(sorted(comps.values(), key=lambda c: (c.layer, c.kind != "head", c.head or 0, c.name)))


@twin("rotated", exact=True, reference=CIRCUITS)
def rotated(compiled: CompiledCase, rng: np.random.Generator) -> TwinModel:
    """A random orthogonal change of the residual basis; with no LayerNorm the function is unchanged.

    Every residual vector x becomes x R. Labels keep naming the same features through the
    rotation: `weights.residual_basis` row i (= row i of R for a base model) is the direction
    `residual_labels[i]` names in the twin's coordinates. Heads, neurons and patterns are
    unchanged.
    """
    w = compiled.weights
    r = orthogonal(rng, w.d_model)
    layers = []
    for layer in w.layers:
        new = dict(layer)
        for k in ("w_q", "w_k", "w_v"):
            new[k] = np.einsum("de,hdk->hek", r, layer[k])  # R^T W: x R R^T W = x W
        new["w_o"], new["b_o"] = layer["w_o"] @ r, layer["b_o"] @ r
        new["w_in"] = r.T @ layer["w_in"]
        new["w_out"], new["b_out"] = layer["w_out"] @ r, layer["b_out"] @ r
        layers.append(new)
    basis = r if w.residual_basis is None else w.residual_basis @ r
    weights = dataclasses.replace(w, token_embed=w.token_embed @ r, pos_embed=w.pos_embed @ r,
                                  layers=tuple(layers), unembed=r.T @ w.unembed, residual_basis=basis)  # fmt: skip
    notes = {"d_model": w.d_model, "labels": "residual_basis row i is the direction residual_labels[i] names"}
    return TwinModel(weights, compiled.truth, notes)


def _scaled_orthogonal(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(A, A^-1, condition number) with A = Q diag(exp(u)), Q orthogonal, u ~ uniform(-1, 1)."""
    q = orthogonal(rng, n)
    u = rng.uniform(-SCALE_RANGE, SCALE_RANGE, n)
    cond = float(np.exp(u.max() - u.min())) if n else 1.0
    return q * np.exp(u)[None, :], np.exp(-u)[:, None] * q.T, cond


@twin("qk_ov_reparam", exact=True, reference=CIRCUITS)
def qk_ov_reparam(compiled: CompiledCase, rng: np.random.Generator) -> TwinModel:
    """Each head's query/key and value/output maps reparametrised by invertible matrices; QK and OV unchanged.

    Per head: W_Q A, b_q A, W_K A^-T, b_k A^-T (so q k^T is unchanged) and W_V B, b_v B,
    B^-1 W_O (so the OV circuit is unchanged), with A and B well conditioned (an orthogonal
    matrix times a diagonal of exp(uniform(-1, 1))). Patterns and components are unchanged.
    """
    w = compiled.weights
    live = live_heads(w)
    if not live:
        raise TwinNotApplicable("no attention head has non-zero weights to reparametrise")
    layers = [dict(layer) for layer in w.layers]
    worst = 1.0
    for l, h in live:
        layer = layers[l]
        a, a_inv, ca = _scaled_orthogonal(rng, w.key_size)
        b, b_inv, cb = _scaled_orthogonal(rng, w.key_size)
        worst = max(worst, ca, cb)
        updates = {"w_q": layer["w_q"][h] @ a, "b_q": layer["b_q"][h] @ a,
                   "w_k": layer["w_k"][h] @ a_inv.T, "b_k": layer["b_k"][h] @ a_inv.T,
                   "w_v": layer["w_v"][h] @ b, "b_v": layer["b_v"][h] @ b,
                   "w_o": b_inv @ layer["w_o"][h]}  # fmt: skip
        for k, value in updates.items():
            layer[k] = layer[k].copy()
            layer[k][h] = value
    weights = dataclasses.replace(w, layers=tuple(layers))
    notes = {"heads": [f"L{l}H{h}" for l, h in live], "max_condition_number": worst}
    return TwinModel(weights, compiled.truth, notes)


@twin("mlp_permuted_scaled", exact=True, reference="Dinh et al. 2017, Sharp Minima Can Generalize for Deep Nets")
def mlp_permuted_scaled(compiled: CompiledCase, rng: np.random.Generator) -> TwinModel:
    """Each MLP's hidden neurons permuted and rescaled (in by c > 0, out by 1/c); ReLU makes it exact.

    Components keep their nodes; their neuron indices are mapped through the permutation
    (`notes["permutation"][l][i]` is the twin index of base neuron i of layer l).
    """
    w = compiled.weights
    d_mlp = int(w.layers[0]["w_in"].shape[1]) if w.layers else 0
    live = [l for l, layer in enumerate(w.layers) if np.abs(layer["w_in"]).max(initial=0.0) > 0]
    if d_mlp == 0 or not live:
        raise TwinNotApplicable("no MLP neurons to permute")
    layers, where = [], []
    for layer in w.layers:
        perm = rng.permutation(d_mlp)  # twin neuron j is base neuron perm[j]
        c = np.exp(rng.uniform(-SCALE_RANGE, SCALE_RANGE, d_mlp))
        new = dict(layer)
        new["w_in"], new["b_in"] = layer["w_in"][:, perm] * c, layer["b_in"][perm] * c
        new["w_out"] = layer["w_out"][perm] / c[:, None]
        layers.append(new)
        where.append(np.argsort(perm))  # base neuron i -> twin index
    comps = tuple(
        dataclasses.replace(c, neurons=tuple(sorted(int(where[c.layer][i]) for i in c.neurons)))
        if c.kind == "mlp" else c
        for c in compiled.truth.components
    )  # fmt: skip
    truth = dataclasses.replace(compiled.truth, components=comps)
    notes = {"layers": live, "permutation": [m.tolist() for m in where]}
    return TwinModel(dataclasses.replace(w, layers=tuple(layers)), truth, notes)


@twin("split_head", exact=True, reference=TRACR)
def split_head(compiled: CompiledCase, rng: np.random.Generator) -> TwinModel:
    """Every head that implements a RASP node becomes two heads, each with the full QK and V and half of W_O.

    The first half keeps the head's index; the second is appended to its layer (every
    layer grows to the same head count with zero heads). Both halves carry the node's true
    pattern and a component of the same node; `notes["split"]` maps each base head to its
    two halves. The attention output bias stays once (it belongs to the layer).
    """
    del rng  # deterministic
    w, truth = compiled.weights, compiled.truth
    heads = [c for c in truth.components if c.kind == "head" and c.node is not None]
    if not heads:
        raise TwinNotApplicable("no head implements a RASP node")
    extra: dict[int, list[dict[str, np.ndarray]]] = {}
    halves: dict[str, str] = {}
    named: list[Component] = []
    layers = [dict(layer) for layer in w.layers]
    for c in heads:
        layer = w.layers[c.layer]
        params = {k: layer[k][c.head] for k in HEAD_KEYS}
        params["w_o"] = 0.5 * layer["w_o"][c.head]
        index = w.n_heads + len(extra.setdefault(c.layer, []))
        extra[c.layer].append(params)
        layers[c.layer]["w_o"] = layers[c.layer]["w_o"].copy()
        layers[c.layer]["w_o"][c.head] = params["w_o"]
        halves[c.name] = f"L{c.layer}H{index}"
        named.append(dataclasses.replace(c, name=halves[c.name], head=index))
    weights = add_heads(dataclasses.replace(w, layers=tuple(layers)), extra)
    patterns = dict(truth.patterns)
    patterns.update({halves[k]: v for k, v in truth.patterns.items() if k in halves})
    edges = list(truth.edges)
    for e in truth.edges:
        src, dst = halves.get(e.src), halves.get(e.dst)
        if src:
            edges.append(Edge(src, e.dst, e.subspace))
        if dst:
            edges.append(Edge(e.src, dst, e.subspace))
        if src and dst:
            edges.append(Edge(src, dst, e.subspace))
    new_truth = dataclasses.replace(
        truth,
        patterns=patterns,
        components=with_components(truth, weights.n_layers, weights.n_heads, named),
        edges=tuple(sorted(set(edges), key=lambda e: (e.src, e.dst))),
    )
    notes: dict[str, Any] = {"split": {k: [k, v] for k, v in halves.items()}, "n_heads": weights.n_heads}
    return TwinModel(weights, new_truth, notes)
