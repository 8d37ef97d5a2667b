"""The runtime's hook-free fast path: tracr's forward with its zero blocks dropped and few torch ops per layer.

tracr's weights are sparse: most layers' attention or MLP writes nothing, a head reads
and writes a few residual directions, and many MLP hidden units are dead. The fused
forward keeps only the blocks that can change a sum (an attention head whose output
matrix is nonzero, the query/key dimensions both projections use, the value dimensions
that are written, the MLP hidden units that are read and written, nonzero biases) and
packs what is left: Q, K and V of all heads in one matrix product, the key mask as an
additive bias of the score product. Each product reads only the residual columns its
weights use and adds its result, in place, to only the columns it writes. Dropped terms
are exact zeros, so the result equals the hooked forward up to float64 rounding of the
reordered sums (tests compare both, values and gradients w.r.t. the embeddings). One
limit of "up to rounding": in a dense twin (`rotated`) an MLP input that is exactly zero
in exact arithmetic comes out as +-1e-16 noise, and the ReLU's gradient there (0 or 1)
follows that noise's sign in either path, so gradients at such inputs may differ.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import torch

from interpbench.weights import RESHUFFLE_VALUE_ATOL

MASKED_LOGIT = -1e30  # tracr's value for masked attention logits


def reshuffle_pattern(pattern: torch.Tensor, values: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Torch twin of `interpbench.weights.reshuffle_pattern` (same rule, differentiable in `pattern`).

    Args:
        pattern: [b, q, s] softmax pattern of one head.
        values: [b, s, d_head] its value vectors.
        allowed: [b, q, s] bool, keys the query may attend to.

    Returns:
        The rewritten pattern [b, q, s]; gradients flow through `pattern` and the values.
    """
    diff = (values[:, :, None, :] - values[:, None, :, :]).abs()
    same = (diff.amax(-1) if diff.shape[-1] else diff.sum(-1)) <= RESHUFFLE_VALUE_ATOL
    same = same.to(pattern.dtype)
    mass, count = pattern @ same, allowed.to(pattern.dtype) @ same
    return torch.where(allowed, mass / count.clamp_min(1.0), torch.zeros_like(mass))


Cols = slice | torch.Tensor  # residual columns a product reads or writes: a range (a view) or indices


def used_cols(w: torch.Tensor) -> Cols:
    """The rows of `w` [d, n] that are not all zero: the residual columns a product with `w` reads.

    A range when they are one, or close to one (a slice of the residual costs nothing);
    the indices themselves when they are fewer than half the range (a gather is cheaper
    than multiplying the zero rows between them).
    """
    rows = w.ne(0).any(1).nonzero()[:, 0]
    if not len(rows):
        return slice(0, 0)
    span = slice(int(rows[0]), int(rows[-1]) + 1)
    return rows if 2 * len(rows) <= span.stop - span.start else span


def read(x: torch.Tensor, cols: Cols) -> torch.Tensor:
    """Columns `cols` of the residual stream `x` [n, d]."""
    return x[:, cols] if isinstance(cols, slice) else x.index_select(1, cols)


def add_product(x: torch.Tensor, cols: Cols, a: torch.Tensor, w: torch.Tensor) -> None:
    """Adds `a @ w` to columns `cols` of `x`, in place (autograd sees the in-place write)."""
    if isinstance(cols, slice):
        x[:, cols].addmm_(a, w)
    else:
        x.index_add_(1, cols, a @ w)


def softmax(scores: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension in five elementwise ops (torch's kernel is slow on rows of a few keys)."""
    e = (scores - scores.amax(-1, keepdim=True)).exp_()
    return e / e.sum(-1, keepdim=True)


@dataclasses.dataclass(frozen=True)
class Write:
    """A product added to the residual stream: `x[:, cols] += a @ w`.

    Attributes:
        cols: The residual columns `w` writes (`used_cols` of its transpose).
        w: [k, len(cols)] those columns of the weights.
    """

    cols: Cols
    w: torch.Tensor

    @classmethod
    def of(cls, w: torch.Tensor) -> Write:
        """The write of weights `w` [k, d_model]."""
        cols = used_cols(w.T)
        return cls(cols, w[:, cols].contiguous())


@dataclasses.dataclass(frozen=True)
class FusedHead:
    """One attention head that writes to the residual stream.

    Attributes:
        q: Columns of its queries in the layer's packed projection.
        k: Columns of its keys (as many as `q`).
        v: Columns of its values.
        out: Its output weights, rows of the kept value dimensions.
        reshuffled: Whether its pattern is rewritten by `reshuffle_pattern`; its values
            then keep every dimension that can be nonzero (the rule compares them).
        index: Its head index in the layer.
    """

    q: slice
    k: slice
    v: slice
    out: Write
    reshuffled: bool = False
    index: int = -1


@dataclasses.dataclass(frozen=True)
class FusedLayer:
    """One tracr layer with its zero blocks dropped (None = nothing to compute).

    Attributes:
        attn_cols: The residual columns the heads read.
        qkv: [len(attn_cols), width] queries, keys and values of every kept head, side by side.
        qkv_bias: [width] their biases, None when all zero.
        heads: The kept heads, in head order.
        b_o: [d_model] attention output bias, None when zero.
        mlp_cols: The residual columns the MLP reads.
        w_in: [len(mlp_cols), hidden] the live hidden units' input weights; None when none is live.
        b_in: [hidden] their biases, None when all zero.
        mlp_out: Their output weights.
        b_out: [d_model] MLP output bias, None when zero.
    """

    attn_cols: Cols
    qkv: torch.Tensor | None
    qkv_bias: torch.Tensor | None
    heads: tuple[FusedHead, ...]
    b_o: torch.Tensor | None
    mlp_cols: Cols
    w_in: torch.Tensor | None
    b_in: torch.Tensor | None
    mlp_out: Write | None
    b_out: torch.Tensor | None


def _nonzero(t: torch.Tensor) -> torch.Tensor | None:
    """A contiguous copy of `t`, or None when every entry is zero (adding it changes nothing)."""
    return t.detach().clone().contiguous() if bool(t.ne(0).any()) else None


def fuse_layer(attn: Sequence[torch.Tensor], mlp: Sequence[torch.Tensor], reshuffled: Sequence[int] = ()) -> FusedLayer:
    """Drops the zero blocks of one layer.

    Args:
        attn: `W_Q, b_q, W_K, b_k, W_V, b_v, W_O, b_o` as the runtime holds them
            ([heads, d_model, d_head], [heads, d_head], ..., [heads, d_head, d_model], [d_model]).
        mlp: `W_in, b_in, W_out, b_out` ([d_model, d_mlp], [d_mlp], [d_mlp, d_model], [d_model]).
        reshuffled: Heads whose pattern `reshuffle_pattern` rewrites.
    """
    w_q, b_q, w_k, b_k, w_v, b_v, w_o, b_o = (t.detach() for t in attn)
    cols: list[torch.Tensor] = []
    biases: list[torch.Tensor] = []
    heads: list[FusedHead] = []
    width = 0
    for h in range(w_q.shape[0]):
        v_nonzero = w_v[h].ne(0).any(0) | b_v[h].ne(0)
        v_used = v_nonzero & w_o[h].ne(0).any(1)
        if not bool(v_used.any()):
            continue  # its values are zero or never written: the head adds exactly zero
        if h in reshuffled:
            v_used = v_nonzero
        qk = ((w_q[h].ne(0).any(0) | b_q[h].ne(0)) & (w_k[h].ne(0).any(0) | b_k[h].ne(0))).nonzero()[:, 0]
        v = v_used.nonzero()[:, 0]
        n_qk, n_v = len(qk), len(v)
        cols += [w_q[h][:, qk], w_k[h][:, qk], w_v[h][:, v]]
        biases += [b_q[h][qk], b_k[h][qk], b_v[h][v]]
        start = width + 2 * n_qk
        heads.append(FusedHead(slice(width, width + n_qk), slice(width + n_qk, start), slice(start, start + n_v),
                               Write.of(w_o[h][v]), h in reshuffled, h))  # fmt: skip
        width = start + n_v
    qkv = torch.cat(cols, 1) if heads else None
    attn_cols = used_cols(qkv) if qkv is not None else slice(0, 0)
    w_in, b_in, w_out, b_out = (t.detach() for t in mlp)
    live = (w_in.ne(0).any(0) | b_in.ne(0)) & w_out.ne(0).any(1)
    mlp_cols = used_cols(w_in[:, live])
    return FusedLayer(
        attn_cols=attn_cols,
        qkv=qkv[attn_cols].contiguous() if qkv is not None else None,
        qkv_bias=_nonzero(torch.cat(biases)) if heads else None,
        heads=tuple(heads),
        b_o=_nonzero(b_o),
        mlp_cols=mlp_cols,
        w_in=w_in[mlp_cols][:, live].contiguous() if bool(live.any()) else None,
        b_in=_nonzero(b_in[live]) if bool(live.any()) else None,
        mlp_out=Write.of(w_out[live]) if bool(live.any()) else None,
        b_out=_nonzero(b_out),
    )


Replacements = Mapping[tuple[int, int], tuple[torch.Tensor, torch.Tensor]]


@dataclasses.dataclass(frozen=True)
class FusedForward:
    """The forward of a runtime without hook points, from token embeddings to read-out.

    Attributes:
        layers: The fused layers in order.
        pos_embed: [max_seq_len + 1, d_model] the runtime's position embeddings.
        out_cols: The residual columns the read-out reads.
        unembed: [len(out_cols), n_out] those rows of the runtime's read-out.
        inv_scale: 1 / sqrt(key_size), the score scale.
        causal: Whether queries only see keys at or before them.
    """

    layers: tuple[FusedLayer, ...]
    pos_embed: torch.Tensor
    out_cols: Cols
    unembed: torch.Tensor
    inv_scale: float
    causal: bool

    def __call__(
        self, token_embeddings: torch.Tensor, keys: torch.Tensor, replace: Replacements | None = None
    ) -> torch.Tensor:
        """Read-out [batch, pos, n_out] from token embeddings [batch, pos, d_model] and the key mask [batch, pos].

        Differentiable in `token_embeddings` (the packed weights are constants). The
        residual stream is a fresh tensor, written in place; nothing autograd saves
        reads it, so its in-place writes leave gradients intact. `replace` maps
        (layer, head) to (where [batch, pos, 1] bool, rows [batch, pos, pos]): the head's
        pattern (after any reshuffle) takes `rows` where `where` holds, as a hook on
        `hook_pattern` would; a head this forward dropped adds zero whatever its pattern.
        """
        b, t, d = token_embeddings.shape
        x = (token_embeddings + self.pos_embed[:t]).reshape(b * t, d)
        allowed = keys[:, None, :]
        if self.causal:
            allowed = allowed & torch.ones(t, t, dtype=torch.bool, device=keys.device).tril()
        bias = torch.zeros(allowed.shape, dtype=x.dtype, device=x.device).masked_fill_(~allowed, MASKED_LOGIT)
        for li, layer in enumerate(self.layers):
            if layer.qkv is not None:
                xs = read(x, layer.attn_cols)
                qkv = xs @ layer.qkv if layer.qkv_bias is None else torch.addmm(layer.qkv_bias, xs, layer.qkv)
                qkv = qkv.view(b, t, -1)
                for head in layer.heads:
                    keys_t = qkv[:, :, head.k].transpose(1, 2)
                    scores = torch.baddbmm(bias, qkv[:, :, head.q], keys_t, alpha=self.inv_scale)
                    pattern, v = softmax(scores), qkv[:, :, head.v]
                    if head.reshuffled:
                        pattern = reshuffle_pattern(pattern, v, allowed.expand(b, t, t))
                    if replace and (li, head.index) in replace:
                        where, rows = replace[(li, head.index)]
                        pattern = torch.where(where, rows.to(pattern.dtype), pattern)
                    add_product(x, head.out.cols, torch.bmm(pattern, v).view(b * t, -1), head.out.w)
            if layer.b_o is not None:
                x += layer.b_o
            if layer.w_in is not None and layer.mlp_out is not None:
                xs = read(x, layer.mlp_cols)
                pre = xs @ layer.w_in if layer.b_in is None else torch.addmm(layer.b_in, xs, layer.w_in)
                add_product(x, layer.mlp_out.cols, torch.relu(pre), layer.mlp_out.w)
            if layer.b_out is not None:
                x += layer.b_out
        return (read(x, self.out_cols) @ self.unembed).view(b, t, -1)
