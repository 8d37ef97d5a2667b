"""Which part of a compiled model a read-out logit depends on: live residual dims, heads and MLP units."""

from __future__ import annotations

import dataclasses
import weakref
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    from interpbench.runtime import CompiledTransformer


@dataclasses.dataclass(frozen=True)
class Head:
    """One live head: its columns in the layer's packed projection and its output weights.

    Attributes:
        q: Columns of its queries (the key dims that both projections can make nonzero).
        k: Columns of its keys (as many as `q`).
        v: Columns of its values that are written.
        w_o: [len(v), |D|] output weights on the live dims.
        reshuffled: Whether `reshuffle_pattern` rewrites its pattern (all nonzero values kept).
        w_o_back: [|G|, len(v)] output weights on the gradient dims, transposed.
    """

    q: slice
    k: slice
    v: slice
    w_o: torch.Tensor
    reshuffled: bool
    w_o_back: torch.Tensor | None = None


@dataclasses.dataclass(frozen=True)
class Layer:
    """One layer on the live dims: attention heads packed, then the MLP's live units.

    Attributes:
        qkv: [|D|, width] packed query, key and value weights of the live heads (None: no head).
        qkv_back: [width, |G|] the same on the gradient dims, transposed.
        qkv_bias: [width] their biases.
        heads: The live heads.
        b_o: [|D|] attention output bias.
        w_in: [|D|, U] input weights of the live hidden units (None: no unit).
        b_in: [U] their biases.
        w_out: [U, |D|] their output weights.
        b_out: [|D|] MLP output bias.
        w_in_back: [U, |G|] input weights on the gradient dims, transposed.
        w_out_back: [|G|, U] output weights on the gradient dims, transposed.
    """

    qkv: torch.Tensor | None
    qkv_back: torch.Tensor | None
    qkv_bias: torch.Tensor | None
    heads: tuple[Head, ...]
    b_o: torch.Tensor
    w_in: torch.Tensor | None
    b_in: torch.Tensor | None
    w_out: torch.Tensor | None
    b_out: torch.Tensor
    w_in_back: torch.Tensor | None = None
    w_out_back: torch.Tensor | None = None


@dataclasses.dataclass(frozen=True)
class JacobianPlan:
    """The part of a model a read-out logit depends on, on its live residual dims D.

    Walking from the read-out back, a residual dim is live when the read-out or a live
    part after it reads it; a head or hidden unit is live when it writes a dim read
    after it. The rest adds exact zeros to the read-out's gradient, and its writes go
    to dims nobody after it reads, so both the forward on D and the backward skip it
    (tracr's weights are mostly zero blocks; many layers hold no head or no MLP).

    The backward needs fewer dims, G: those of D that a token embedding or a live part
    writes (a gradient at a dim only the position embedding writes goes nowhere).

    Attributes:
        dims: [|D|] live residual dims, increasing.
        pos: [max_seq_len + 1, |D|] position embeddings on D.
        grad_dims: [|G|] the gradient dims (a subset of `dims`), increasing.
        unembed_back: [n_out, |G|] read-out weights on G, transposed.
        layers: Every layer, in order.
        scale: The score divisor, sqrt(key_size).
        causal: Whether queries only see keys at or before them.
    """

    dims: torch.Tensor
    pos: torch.Tensor
    grad_dims: torch.Tensor
    unembed_back: torch.Tensor
    layers: tuple[Layer, ...]
    scale: float
    causal: bool


def _nonzero_rows(a: np.ndarray, cols: list[int]) -> set[int]:
    """Rows of `a` [r, c] with a nonzero entry in `cols`."""
    return set(np.flatnonzero((a[:, cols] != 0).any(axis=1)).tolist())


_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def jacobian_plan(model: CompiledTransformer) -> JacobianPlan:
    """The live dims and parts of `model`, kept until one of its parameters changes in place."""
    versions = [p._version for p in model.parameters()]
    held = _PLANS.get(model)
    if held is None or held[0] != versions:
        held = (versions, _build_plan(model))
        _PLANS[model] = held
    return held[1]


def _build_plan(model: CompiledTransformer) -> JacobianPlan:
    """The live dims and parts of `model`, found by walking its layers from the read-out back."""
    import torch

    def arr(p: torch.Tensor) -> np.ndarray:
        return p.detach().numpy()

    read = _nonzero_rows(arr(model.W_U), list(range(model.W_U.shape[1])))
    live: list[tuple[np.ndarray, list[tuple[int, np.ndarray, np.ndarray]]]] = []
    for block in reversed(model.blocks):
        a, m = block.attn, block.mlp
        units = np.array(sorted(_nonzero_rows(arr(m.W_out), sorted(read))), dtype=np.int64)
        read |= _nonzero_rows(arr(m.W_in)[:, units], list(range(len(units))))
        heads = []
        for h in range(a.W_O.shape[0]):
            w_o, b_v = arr(a.W_O[h]), arr(a.b_v[h])
            v_nonzero = (arr(a.W_V[h]) != 0).any(0) | (b_v != 0)
            v = np.flatnonzero(v_nonzero if h in a.reshuffled else v_nonzero & (w_o[:, sorted(read)] != 0).any(1))
            if not (v_nonzero & (w_o[:, sorted(read)] != 0).any(1)).any():
                continue  # writes nothing read after it
            qk = np.flatnonzero(((arr(a.W_Q[h]) != 0).any(0) | (arr(a.b_q[h]) != 0))
                                & ((arr(a.W_K[h]) != 0).any(0) | (arr(a.b_k[h]) != 0)))  # fmt: skip
            heads.append((h, qk, v))
        for h, qk, v in heads:
            for w, cols in ((a.W_Q, qk), (a.W_K, qk), (a.W_V, v)):
                read |= _nonzero_rows(arr(w[h]), cols.tolist())
        live.append((units, heads))
    d = torch.tensor(sorted(read), dtype=torch.int64)
    layers = [_layer(block, units, heads, d) for block, (units, heads) in zip(model.blocks, reversed(live))]
    written = model.W_E.detach()[:, d].ne(0).any(0)
    for layer in layers:
        for head in layer.heads:
            written |= head.w_o.ne(0).any(0)
        if layer.w_out is not None:
            written |= layer.w_out.ne(0).any(0)
    layers = [_backward_weights(layer, written) for layer in layers]
    g = d[written]
    return JacobianPlan(d, model.W_pos.detach()[:, d].contiguous(), g, model.W_U.detach()[g].T.contiguous(),
                        tuple(layers), float(model.blocks[0].attn.scale) if len(model.blocks) else 1.0,
                        bool(model.causal))  # fmt: skip


def _backward_weights(layer: Layer, g: torch.Tensor) -> Layer:
    """`layer` with its weights on the gradient dims (mask `g` over D) added, laid out for the backward."""
    heads = tuple(dataclasses.replace(h, w_o_back=h.w_o[:, g].T.contiguous()) for h in layer.heads)
    return dataclasses.replace(
        layer,
        heads=heads,
        qkv_back=layer.qkv[g].T.contiguous() if layer.qkv is not None else None,
        w_in_back=layer.w_in[g].T.contiguous() if layer.w_in is not None else None,
        w_out_back=layer.w_out[:, g].T.contiguous() if layer.w_out is not None else None,
    )


def _layer(block: torch.nn.Module, units: np.ndarray, heads: list, d: torch.Tensor) -> Layer:
    """One layer's live parts as tensors on the live dims `d`."""
    import torch

    a, m = block.attn, block.mlp
    cols, biases, packed, width = [], [], [], 0
    for h, qk, v in heads:
        qk_t, v_t = torch.from_numpy(qk), torch.from_numpy(v)
        cols += [a.W_Q[h][d][:, qk_t], a.W_K[h][d][:, qk_t], a.W_V[h][d][:, v_t]]
        biases += [a.b_q[h][qk_t], a.b_k[h][qk_t], a.b_v[h][v_t]]
        n_qk, n_v = len(qk), len(v)
        packed.append(Head(slice(width, width + n_qk), slice(width + n_qk, width + 2 * n_qk),
                           slice(width + 2 * n_qk, width + 2 * n_qk + n_v), a.W_O[h][v_t][:, d].contiguous(),
                           h in a.reshuffled))  # fmt: skip
        width += 2 * n_qk + n_v
    qkv = torch.cat(cols, 1).detach().contiguous() if heads else None
    u = torch.from_numpy(units)
    has_units = len(units) > 0
    return Layer(
        qkv=qkv,
        qkv_back=None,
        qkv_bias=torch.cat(biases).detach() if heads else None,
        heads=tuple(packed),
        b_o=a.b_o.detach()[d],
        w_in=m.W_in.detach()[d][:, u].contiguous() if has_units else None,
        b_in=m.b_in.detach()[u] if has_units else None,
        w_out=m.W_out.detach()[u][:, d].contiguous() if has_units else None,
        b_out=m.b_out.detach()[d],
    )
