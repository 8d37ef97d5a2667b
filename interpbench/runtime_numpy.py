"""The runtime's no-gradient fast path: the fused forward (`runtime_fused`) in numpy, without torch's per-op overhead.

On these small matrices most of a torch op's time is dispatch; numpy runs the same
products and elementwise steps, in the same order, for a fraction of it. Used when no
gradient is asked for and every matrix product is small enough for numpy's OpenBLAS to
run it on the calling thread (`fits_numpy`): above that bound OpenBLAS starts its own
threads, which the harness's one-thread-per-process setting does not govern and which
make a loaded machine many times slower; the torch fused path (one thread) runs those.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from interpbench.runtime_fused import MASKED_LOGIT, FusedForward
from interpbench.weights import reshuffle_pattern

OPENBLAS_ONE_THREAD_MACS = 65536 * 4  # OpenBLAS runs a GEMM of at most m*n*k multiply-adds on one thread


def widest_product(f: FusedForward) -> int:
    """The largest k * n of the fused forward's weight matrices [k, n] (a product's work per residual row)."""
    mats = [f.unembed]
    for layer in f.layers:
        mats += [m for m in (layer.qkv, layer.w_in) if m is not None] + [h.out.w for h in layer.heads]
        mats += [layer.mlp_out.w] if layer.mlp_out is not None else []
    return max(int(m.shape[0]) * int(m.shape[1]) for m in mats)


def fits_numpy(rows: int, widest: int) -> bool:
    """Whether every product of a forward over `rows` residual rows stays on OpenBLAS's calling thread."""
    return rows * widest <= OPENBLAS_ONE_THREAD_MACS


def as_numpy(obj: Any) -> Any:
    """The same fused structure with numpy arrays (sharing memory) in place of its tensors."""
    if isinstance(obj, torch.Tensor):
        return obj.numpy()
    if isinstance(obj, tuple):
        return tuple(as_numpy(o) for o in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **{f.name: as_numpy(getattr(obj, f.name)) for f in dataclasses.fields(obj)})
    return obj


def numpy_forward(f: FusedForward, token_embeddings: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Read-out [batch, pos, n_out] of `as_numpy(fused)` from token embeddings [batch, pos, d_model] and the key mask.

    Step for step `FusedForward.__call__`: the same reads, products, masked softmax and
    in-place writes of the residual stream.
    """
    b, t, d = token_embeddings.shape
    x = (token_embeddings + f.pos_embed[:t]).reshape(b * t, d)
    allowed = keys[:, None, :]
    if f.causal:
        allowed = allowed & np.tril(np.ones((t, t), dtype=bool))
    bias = np.where(allowed, 0.0, MASKED_LOGIT).astype(x.dtype, copy=False)
    for layer in f.layers:
        if layer.qkv is not None:
            qkv = x[:, layer.attn_cols] @ layer.qkv
            if layer.qkv_bias is not None:
                qkv += layer.qkv_bias
            qkv = qkv.reshape(b, t, -1)
            for head in layer.heads:
                scores = qkv[:, :, head.q] @ qkv[:, :, head.k].transpose(0, 2, 1)
                scores *= f.inv_scale
                scores += bias
                scores -= scores.max(-1, keepdims=True)
                pattern = np.exp(scores, out=scores)
                pattern /= pattern.sum(-1, keepdims=True)
                v = qkv[:, :, head.v]
                if head.reshuffled:
                    pattern = reshuffle_pattern(pattern, v, np.broadcast_to(allowed, (b, t, t)))
                x[:, head.out.cols] += (pattern @ v).reshape(b * t, -1) @ head.out.w
        if layer.b_o is not None:
            x += layer.b_o
        if layer.w_in is not None and layer.mlp_out is not None:
            hidden = x[:, layer.mlp_cols] @ layer.w_in
            if layer.b_in is not None:
                hidden += layer.b_in
            x[:, layer.mlp_out.cols] += np.maximum(hidden, 0.0, out=hidden) @ layer.mlp_out.w
        if layer.b_out is not None:
            x += layer.b_out
    return (x[:, f.out_cols] @ f.unembed).reshape(b, t, -1)


@dataclasses.dataclass(frozen=True)
class FastPath:
    """The runtime's fast path: its fused forward in torch (for gradients) and in numpy (for speed).

    Attributes:
        fused: The torch fused forward.
        arrays: The same forward on numpy arrays sharing its memory (`as_numpy`).
        widest: `widest_product(fused)`.
    """

    fused: FusedForward
    arrays: FusedForward
    widest: int

    @classmethod
    def of(cls, fused: FusedForward) -> FastPath:
        return cls(fused, as_numpy(fused), widest_product(fused))

    def _numpy_runs(self, keys: torch.Tensor) -> bool:
        return keys.device.type == "cpu" and fits_numpy(keys.numel(), self.widest)

    def __call__(self, token_embeddings: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """Read-out from token embeddings and the key mask: numpy unless a gradient is asked for or the batch is big."""
        if self._numpy_runs(keys) and not (torch.is_grad_enabled() and token_embeddings.requires_grad):
            return torch.from_numpy(numpy_forward(self.arrays, token_embeddings.detach().numpy(), keys.numpy()))
        return self.fused(token_embeddings, keys)

    def from_tokens(self, table: torch.Tensor, tokens: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """Read-out from token ids, embedded by `table` (which asks for no gradient)."""
        if self._numpy_runs(keys):
            return torch.from_numpy(numpy_forward(self.arrays, table.detach().numpy()[tokens.numpy()], keys.numpy()))
        return self.fused(torch.nn.functional.embedding(tokens, table), keys)
