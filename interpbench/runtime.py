"""CompiledTransformer: a batched float64 PyTorch module equal to tracr's forward, with hooks.

Hook points follow TransformerLens names so circuit tools feel at home:
`hook_embed`, `hook_pos_embed`, `blocks.{l}.hook_resid_pre`,
`blocks.{l}.attn.hook_q/k/v` [batch, pos, head, d_head], `blocks.{l}.attn.hook_attn_scores`
and `blocks.{l}.attn.hook_pattern` [batch, head, query, key], `blocks.{l}.attn.hook_z`,
`blocks.{l}.hook_attn_out`, `blocks.{l}.hook_resid_mid`, `blocks.{l}.mlp.hook_pre`,
`blocks.{l}.mlp.hook_post` [batch, pos, d_mlp], `blocks.{l}.hook_mlp_out`,
`blocks.{l}.hook_resid_post`, and `hook_logits` (the read-out before any argmax).

Heads listed in `ModelWeights.reshuffled_heads` get their pattern rewritten after the
softmax (`reshuffle_pattern`); `hook_pattern` shows the rewritten pattern, the one used.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

from interpbench.weights import RESHUFFLE_VALUE_ATOL, ModelWeights

MASKED_LOGIT = -1e30  # tracr's value for masked attention logits


class HookPoint(nn.Module):
    """Identity module whose output forward hooks can read or replace."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _param(a: np.ndarray) -> nn.Parameter:
    return nn.Parameter(torch.from_numpy(np.array(a, dtype=np.float64, copy=True)), requires_grad=False)


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


class Attention(nn.Module):
    """Multi-head softmax attention exactly as tracr assembles it (no LayerNorm)."""

    def __init__(self, weights: dict[str, np.ndarray], key_size: int, reshuffled: tuple[int, ...] = ()) -> None:
        super().__init__()
        for k in ("w_q", "b_q", "w_k", "b_k", "w_v", "b_v", "w_o", "b_o"):
            setattr(self, k.upper() if k.startswith("w") else k, _param(weights[k]))
        self.scale = float(np.sqrt(key_size))
        self.reshuffled = reshuffled
        for name in ("hook_q", "hook_k", "hook_v", "hook_attn_scores", "hook_pattern", "hook_z"):
            setattr(self, name, HookPoint())

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        q = self.hook_q(torch.einsum("btd,hdk->bthk", x, self.W_Q) + self.b_q)
        k = self.hook_k(torch.einsum("btd,hdk->bthk", x, self.W_K) + self.b_k)
        v = self.hook_v(torch.einsum("btd,hdk->bthk", x, self.W_V) + self.b_v)
        scores = torch.einsum("bqhk,bshk->bhqs", q, k) / self.scale
        scores = self.hook_attn_scores(torch.where(allowed, scores, torch.full_like(scores, MASKED_LOGIT)))
        pattern = torch.softmax(scores, dim=-1)
        if self.reshuffled:
            full = allowed.expand(pattern.shape[0], 1, *pattern.shape[2:])[:, 0]
            heads = [reshuffle_pattern(pattern[:, h], v[:, :, h], full) if h in self.reshuffled else pattern[:, h]
                     for h in range(pattern.shape[1])]  # fmt: skip
            pattern = torch.stack(heads, dim=1)
        pattern = self.hook_pattern(pattern)
        z = self.hook_z(torch.einsum("bhqs,bshk->bqhk", pattern, v))
        return torch.einsum("bqhk,hkd->bqd", z, self.W_O) + self.b_o


class MLP(nn.Module):
    """ReLU MLP; tracr combines the MLPs of one layer in parallel into this one."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.W_in, self.b_in = _param(weights["w_in"]), _param(weights["b_in"])
        self.W_out, self.b_out = _param(weights["w_out"]), _param(weights["b_out"])
        self.hook_pre, self.hook_post = HookPoint(), HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        post = self.hook_post(torch.relu(self.hook_pre(x @ self.W_in + self.b_in)))
        return post @ self.W_out + self.b_out


class Block(nn.Module):
    """One tracr layer: attention then MLP, each added to the residual stream."""

    def __init__(self, weights: dict[str, np.ndarray], key_size: int, reshuffled: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.attn = Attention(weights, key_size, reshuffled)
        self.mlp = MLP(weights)
        for name in ("hook_resid_pre", "hook_attn_out", "hook_resid_mid", "hook_mlp_out", "hook_resid_post"):
            setattr(self, name, HookPoint())

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        x = self.hook_resid_pre(x)
        x = self.hook_resid_mid(x + self.hook_attn_out(self.attn(x, allowed)))
        return self.hook_resid_post(x + self.hook_mlp_out(self.mlp(x)))


class CompiledTransformer(nn.Module):
    """The runtime of a compiled case.

    Call it on token ids [batch, pos] (BOS at position 0, PAD after each sequence)
    and optionally a key mask [batch, pos] (True = real position). Returns read-out
    logits [batch, pos, n_out]: class scores for categorical programs, one scalar for
    numerical ones. Sequences of different lengths run in one batch: PAD keys are
    masked, so each real position equals the unpadded forward exactly.
    """

    def __init__(self, weights: ModelWeights) -> None:
        super().__init__()
        self.weights = weights
        self.W_E = _param(weights.token_embed)
        self.W_pos = _param(weights.pos_embed)
        self.W_U = _param(weights.unembed)
        self.embed = nn.Embedding.from_pretrained(self.W_E.data, freeze=True)
        self.hook_embed, self.hook_pos_embed, self.hook_logits = HookPoint(), HookPoint(), HookPoint()
        self.blocks = nn.ModuleList(
            Block(layer, weights.key_size, weights.reshuffled_in(l)) for l, layer in enumerate(weights.layers)
        )
        self.causal = weights.causal

    def key_mask(self, tokens: torch.Tensor) -> torch.Tensor:
        """True at real positions (not PAD)."""
        return tokens != self.weights.pad_id

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_from_embeddings(self.hook_embed(self.embed(tokens)), tokens, mask)

    def forward_from_embeddings(
        self, token_embeddings: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Forward from token embeddings [batch, pos, d_model] (for gradient methods)."""
        t = tokens.shape[1]
        pos = self.hook_pos_embed(self.W_pos[:t]).unsqueeze(0)
        x = token_embeddings + pos
        keys = self.key_mask(tokens) if mask is None else mask.bool()
        allowed = keys[:, None, None, :]
        if self.causal:
            allowed = allowed & torch.ones(t, t, dtype=torch.bool, device=tokens.device).tril()
        for block in self.blocks:
            x = block(x, allowed)
        return self.hook_logits(x @ self.W_U)

    def hook_names(self) -> list[str]:
        """Every hook point name, in forward order."""
        return [n for n, m in self.named_modules() if isinstance(m, HookPoint)]

    @contextlib.contextmanager
    def hooks(self, fns: dict[str, Callable[[torch.Tensor], torch.Tensor | None]]) -> Iterator[None]:
        """Temporarily attaches `fn(activation) -> replacement or None` to named hook points."""
        modules = dict(self.named_modules())
        handles = []
        try:
            for name, fn in fns.items():
                if name not in modules or not isinstance(modules[name], HookPoint):
                    from interpbench.registry import unknown_name_message

                    raise KeyError(unknown_name_message("hook point", name, self.hook_names()))
                handles.append(modules[name].register_forward_hook(lambda _m, _i, out, fn=fn: fn(out)))
            yield
        finally:
            for h in handles:
                h.remove()

    @torch.no_grad()
    def run_with_cache(
        self, tokens: torch.Tensor, names: list[str] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Runs a forward and returns (logits, {hook name: activation})."""
        cache: dict[str, torch.Tensor] = {}

        def keep(name: str) -> Callable[[torch.Tensor], None]:
            def fn(out: torch.Tensor) -> None:
                cache[name] = out.detach()

            return fn

        wanted = names if names is not None else self.hook_names()
        with self.hooks({n: keep(n) for n in wanted}):
            logits = self(tokens)
        return logits, cache


def build_runtime(weights: ModelWeights) -> CompiledTransformer:
    """Builds the float64 runtime in evaluation mode."""
    return CompiledTransformer(weights).double().eval()
