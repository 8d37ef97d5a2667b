"""A hook-free, fused torch forward of a compiled model: evidence for what the runtime's forward could reach.

Not used by the harness. The forward figures time it next to the runtime (as a detail,
never as the figure's value) to show how much of the runtime's time is per-op overhead
(hook points, one einsum per projection) rather than arithmetic: the same float64 math
with Q, K and V packed in one `addmm`, the key mask as an additive bias in `baddbmm`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from interpbench.runtime import MASKED_LOGIT

if TYPE_CHECKING:
    import torch

    from interpbench.weights import ModelWeights


def fused_forward(weights: ModelWeights) -> Callable[[torch.Tensor], torch.Tensor]:
    """ids [n, T] (BOS first, PAD after) -> read-out [n, T, n_out], equal to the runtime's at real positions.

    Raises:
        ValueError: The weights rewrite attention after the softmax (`reshuffled_heads`),
            which this forward does not implement.
    """
    import torch

    if any(weights.reshuffled_in(l) for l in range(weights.n_layers)):
        raise ValueError("fused_forward does not implement reshuffled attention")

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.array(a, dtype=np.float64, copy=True))

    layers = []
    for w in weights.layers:
        h, d, k = np.asarray(w["w_q"]).shape
        qkv = torch.cat([t(w[n]).permute(1, 0, 2).reshape(d, h * k) for n in ("w_q", "w_k", "w_v")], 1).contiguous()
        bias = torch.cat([t(w[n]).reshape(h * k) for n in ("b_q", "b_k", "b_v")])
        layers.append((qkv, bias, t(w["w_o"]).reshape(h * k, -1), t(w["b_o"]), t(w["w_in"]), t(w["b_in"]),
                       t(w["w_out"]), t(w["b_out"]), h, k))  # fmt: skip
    embed, pos, unembed = t(weights.token_embed), t(weights.pos_embed), t(weights.unembed)
    pad, causal, scale = weights.pad_id, weights.causal, 1.0 / float(np.sqrt(weights.key_size))

    def forward(ids: torch.Tensor) -> torch.Tensor:
        b, n = ids.shape
        x = embed[ids] + pos[:n]
        keep = (ids != pad)[:, None, :].expand(b, n, n)
        if causal:
            keep = keep & torch.ones(n, n, dtype=torch.bool).tril()
        mask = torch.zeros(b, n, n, dtype=torch.float64).masked_fill(~keep, MASKED_LOGIT)
        for qkv, bias, w_o, b_o, w_in, b_in, w_out, b_out, h, k in layers:
            q, key, v = torch.addmm(bias, x.reshape(b * n, -1), qkv).view(b, n, 3, h, k).permute(2, 0, 3, 1, 4)
            m = mask[:, None].expand(b, h, n, n).reshape(b * h, n, n)
            scores = torch.baddbmm(m, q.reshape(b * h, n, k), key.reshape(b * h, n, k).transpose(1, 2), alpha=scale)
            z = torch.bmm(torch.softmax(scores, -1), v.reshape(b * h, n, k))
            z = z.view(b, h, n, k).transpose(1, 2).reshape(b * n, h * k)
            x = x + torch.addmm(b_o, z, w_o).view(b, n, -1)
            x = x + torch.addmm(b_out, torch.relu(torch.addmm(b_in, x.reshape(b * n, -1), w_in)), w_out).view(b, n, -1)
        return x @ unembed

    return forward
