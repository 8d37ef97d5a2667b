"""Gradients of every output position's target logit w.r.t. the token embeddings, in one batched backward.

Integrated gradients needs, at every path point (input, step), the gradient of each
output position's target logit: a Jacobian with one row per output position. One
forward per path point and one backward with the output positions as a batch dim
replace one forward and backward per (row, step). The backward is written out for the
runtime's ops (tracr's attention and ReLU MLPs, with the rewritten pattern of
reshuffled heads) and carries only what can reach the read-out (`JacobianPlan`).
Tests compare it with autograd and with captum.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from interpbench.jacobian_plan import JacobianPlan, Layer
from interpbench.runtime import MASKED_LOGIT
from interpbench.weights import RESHUFFLE_VALUE_ATOL

if TYPE_CHECKING:
    import torch


@dataclasses.dataclass(frozen=True)
class HeadActivations:
    """What the backward needs of one head's forward.

    Attributes:
        q: [c, t, qk] queries on the head's query/key dims.
        k: [c, t, qk] keys.
        v: [c, t, kv] values.
        soft: [c, t, t] softmax pattern.
        pattern: [c, t, t] the pattern used (rewritten when reshuffled).
        same: [c, t, t] 0/1 key classes of `reshuffle_pattern` (None unless reshuffled).
        count: [c, t, t] allowed keys per class, at least 1 (None unless reshuffled).
    """

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    soft: torch.Tensor
    pattern: torch.Tensor
    same: torch.Tensor | None
    count: torch.Tensor | None


LayerActivations = tuple[list[HeadActivations], "torch.Tensor | None"]


def _forward(plan: JacobianPlan, embeddings: torch.Tensor, allowed: torch.Tensor) -> list[LayerActivations]:
    """The forward on the live dims, keeping what the backward needs, layer by layer.

    Args:
        plan: The model's plan.
        embeddings: [c, t, |D|] token embeddings on the live dims.
        allowed: [c, t, t] bool, keys each query may attend to.

    Returns:
        Per layer: its heads' activations and the ReLU's open units [c, t, 1, U] as 0/1
        (None without MLP units).
    """
    import torch

    c, t, n_d = embeddings.shape
    x = (embeddings + plan.pos[:t]).reshape(c * t, n_d)
    masked = ~allowed
    saved: list[LayerActivations] = []
    for layer in plan.layers:
        heads: list[HeadActivations] = []
        if layer.qkv is not None:
            qkv = torch.addmm(layer.qkv_bias, x, layer.qkv).view(c, t, layer.qkv.shape[1])
            for head in layer.heads:
                q, k, v = qkv[:, :, head.q], qkv[:, :, head.k], qkv[:, :, head.v]
                scores = (torch.bmm(q, k.transpose(1, 2)) / plan.scale).masked_fill_(masked, MASKED_LOGIT)
                soft = torch.softmax(scores, -1)
                pattern, same, count = soft, None, None
                if head.reshuffled:
                    diff = (v[:, :, None, :] - v[:, None, :, :]).abs()
                    same = ((diff.amax(-1) if diff.shape[-1] else diff.sum(-1)) <= RESHUFFLE_VALUE_ATOL).to(x.dtype)
                    count = (allowed.to(x.dtype) @ same).clamp_min(1.0)
                    pattern = torch.where(allowed, (soft @ same) / count, torch.zeros_like(soft))
                heads.append(HeadActivations(q, k, v, soft, pattern, same, count))
                x.addmm_(torch.bmm(pattern, v).view(c * t, v.shape[-1]), head.w_o)
        x.add_(layer.b_o)
        relu_open = None
        if layer.w_in is not None:
            pre = torch.addmm(layer.b_in, x, layer.w_in)
            relu_open = (pre > 0).to(x.dtype).view(c, t, 1, pre.shape[-1])
            x.addmm_(torch.relu(pre), layer.w_out)
        x.add_(layer.b_out)
        saved.append((heads, relu_open))
    return saved


def _attention_backward(
    layer: Layer, heads: list[HeadActivations], g: torch.Tensor, allowed: torch.Tensor, scale: float
) -> torch.Tensor:
    """Adds to g [c, t, L, |G|] (the cotangent of a layer's residual) the part through its heads.

    Per head, z = pattern @ v with pattern = softmax(q k^T / scale) over the allowed
    keys (masked logits are constants), rewritten by `reshuffle_pattern` when
    reshuffled: that rule is linear in the softmax pattern, and its key classes depend
    on the values only through a comparison, so no gradient flows there (as in autograd).
    """
    import torch

    c, t, n_l, n_g = g.shape
    flat = g.view(c * t * n_l, n_g)
    parts = []
    for head, a in zip(layer.heads, heads):
        q, k, v, pattern = a.q, a.k, a.v, a.pattern
        n_qk, n_v = q.shape[-1], v.shape[-1]
        g_z = (flat @ head.w_o_back).view(c, t * n_l, n_v)  # [c, (q, L), kv]
        g_p = torch.bmm(g_z, v.transpose(1, 2)).view(c, t, n_l, t)  # [c, q, L, s]
        g_v = torch.bmm(pattern.transpose(1, 2), g_z.view(c, t, n_l * n_v)).view(c, t, n_l, n_v)  # [c, s, L, kv]
        if a.same is not None and a.count is not None:  # reshuffled
            g_p = torch.where(allowed[:, :, None, :], g_p / a.count[:, :, None, :], torch.zeros_like(g_p))
            g_p = torch.bmm(g_p.view(c, t * n_l, t), a.same.transpose(1, 2)).view(c, t, n_l, t)
        p = a.soft[:, :, None, :]
        g_s = p * (g_p - (g_p * p).sum(-1, keepdim=True)) / scale
        g_q = torch.bmm(g_s.view(c, t * n_l, t), k).view(c, t, n_l, n_qk)  # [c, q, L, qk]
        g_k = torch.bmm(g_s.view(c, t, n_l * t).transpose(1, 2), q).view(c, n_l, t, n_qk).transpose(1, 2)
        parts += [g_q, g_k, g_v]
    flat.addmm_(torch.cat(parts, -1).view(c * t * n_l, layer.qkv_back.shape[0]), layer.qkv_back)
    return g


def position_gradients(
    plan: JacobianPlan, embeddings: torch.Tensor, keys: torch.Tensor, positions: torch.Tensor, classes: torch.Tensor
) -> torch.Tensor:
    """d logits[b, positions[b, l], classes[b, l]] / d embeddings[b] for L targets per sequence at once.

    Args:
        plan: `jacobian_plan(model)`.
        embeddings: [c, t, |D|] token embeddings on the plan's live dims.
        keys: [c, t] bool key mask (True = real position).
        positions: [c, L] int64 output position of each target.
        classes: [c, L] int64 class of each target.

    Returns:
        [c, t, L, |G|]: entry [b, j, l] is the gradient of target l at input position j
        on the plan's gradient dims (every other dim has gradient 0).
    """
    import torch

    c, t, _ = embeddings.shape
    n_l = classes.shape[1]
    allowed = keys[:, None, :].expand(c, t, t)
    if plan.causal:
        allowed = allowed & torch.ones(t, t, dtype=torch.bool).tril()
    saved = _forward(plan, embeddings, allowed)
    n_g = len(plan.grad_dims)
    g = embeddings.new_zeros(c, t, n_l, n_g)
    g[torch.arange(c)[:, None], positions, torch.arange(n_l)] = plan.unembed_back[classes]
    flat = g.view(c * t * n_l, n_g)
    for layer, (heads, relu_open) in zip(reversed(plan.layers), reversed(saved)):
        if relu_open is not None:
            g_pre = (flat @ layer.w_out_back).view(c, t, n_l, layer.w_out_back.shape[1]).mul_(relu_open)
            flat.addmm_(g_pre.view(c * t * n_l, layer.w_out_back.shape[1]), layer.w_in_back)
        if heads:
            g = _attention_backward(layer, heads, g, allowed, plan.scale)
    return g
