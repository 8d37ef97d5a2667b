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

While no hook is attached anywhere in the module (and no parameter asks for a
gradient), `forward` and `forward_from_embeddings` take the fast path: tracr's zero
blocks dropped and the rest fused (`interpbench.runtime_fused`), run in numpy when no
gradient is asked for and the batch is small (`interpbench.runtime_numpy`), in torch
otherwise (gradients w.r.t. the embeddings flow). Same numbers as the hooked modules up
to float64 rounding (tested). Attaching a hook, by `hooks`, `run_with_cache` or torch's
own `register_forward_hook` (or a pre- or backward hook, on any submodule or globally),
switches back to the hooked modules for as long as it stays attached.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from interpbench.runtime_fused import MASKED_LOGIT, FusedForward, FusedLayer, fuse_layer, reshuffle_pattern, used_cols
from interpbench.runtime_numpy import FastPath
from interpbench.weights import ModelWeights


class HookPoint(nn.Module):
    """Identity module whose output forward hooks can read or replace."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _param(a: np.ndarray) -> nn.Parameter:
    return nn.Parameter(torch.from_numpy(np.array(a, dtype=np.float64, copy=True)), requires_grad=False)


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

    def fused(self) -> FusedLayer:
        """This layer's current parameters with their zero blocks dropped (the fast path's form)."""
        a, m = self.attn, self.mlp
        return fuse_layer((a.W_Q, a.b_q, a.W_K, a.b_k, a.W_V, a.b_v, a.W_O, a.b_o), (m.W_in, m.b_in, m.W_out, m.b_out),
                          a.reshuffled)  # fmt: skip

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
        # The very dicts torch registers hooks in: one is non-empty while a hook is attached.
        self._hook_dicts = tuple(
            d for m in self.modules()
            for d in (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks, m._backward_pre_hooks)
        )  # fmt: skip
        self._params = tuple(self.parameters())
        self._fast: tuple[list[int], FastPath] | None = None  # parameter versions it was built from, and it

    def hooked(self) -> bool:
        """Whether any forward, pre- or backward hook is attached to this module, a submodule, or all modules.

        Submodules are those present at construction (the runtime never replaces one).
        """
        g = nn.modules.module
        return bool(
            any(self._hook_dicts) or g._global_forward_hooks or g._global_forward_pre_hooks
            or g._global_backward_hooks or g._global_backward_pre_hooks
        )  # fmt: skip

    def fast_path(self) -> FastPath | None:
        """The fused forward of the current parameters, or None when the hooked modules must run.

        They must while a hook is attached (it reads or replaces an activation) and while
        a parameter asks for gradients (the fused weights are copies). The fused weights
        are rebuilt when a parameter was changed in place since they were built.
        """
        if self.hooked():
            return None
        if torch.is_grad_enabled() and any(p.requires_grad for p in self._params):
            return None
        versions = [p._version for p in self._params]
        if self._fast is None or self._fast[0] != versions:
            # Built as normal tensors even when the first call comes under inference mode:
            # inference tensors could never be saved for a later gradient.
            with torch.inference_mode(False), torch.no_grad():
                layers = tuple(block.fused() for block in self.blocks)
                rows = used_cols(self.W_U)
                unembed, pos = self.W_U.detach()[rows].contiguous(), self.W_pos.detach()
            fused = FusedForward(layers, pos, rows, unembed, 1.0 / float(np.sqrt(self.weights.key_size)), self.causal)
            self._fast = (versions, FastPath.of(fused))
        return self._fast[1]

    def _apply(self, *args: Any, **kwargs: Any) -> CompiledTransformer:
        """`.to()`, `.double()` and the like may swap parameters: the fused weights are rebuilt on the next call."""
        out = super()._apply(*args, **kwargs)
        self._params, self._fast = tuple(self.parameters()), None
        return out

    def key_mask(self, tokens: torch.Tensor) -> torch.Tensor:
        """True at real positions (not PAD)."""
        return tokens != self.weights.pad_id

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        fast = self.fast_path()
        if fast is not None:
            return fast.from_tokens(self.embed.weight, tokens, self.key_mask(tokens) if mask is None else mask.bool())
        return self.forward_from_embeddings(self.hook_embed(self.embed(tokens)), tokens, mask)

    def forward_from_embeddings(
        self, token_embeddings: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Forward from token embeddings [batch, pos, d_model] (for gradient methods; differentiable in them)."""
        keys = self.key_mask(tokens) if mask is None else mask.bool()
        fast = self.fast_path()
        if fast is not None:
            return fast(token_embeddings, keys)
        t = tokens.shape[1]
        pos = self.hook_pos_embed(self.W_pos[:t]).unsqueeze(0)
        x = token_embeddings + pos
        allowed = keys[:, None, None, :]
        if self.causal:
            allowed = allowed & torch.ones(t, t, dtype=torch.bool, device=tokens.device).tril()
        for block in self.blocks:
            x = block(x, allowed)
        return self.hook_logits(x @ self.W_U)

    def forward_with_patterns(
        self, tokens: torch.Tensor, replace: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]]
    ) -> torch.Tensor:
        """Read-out with some heads' attention rows replaced (no gradient), on the fast path when it may run.

        Args:
            tokens: [batch, pos] token ids.
            replace: (layer, head) -> (where [batch, pos, 1] bool, rows [batch, pos, pos]):
                that head's pattern takes `rows` at the query rows where `where` holds,
                exactly as a hook on `blocks.{layer}.attn.hook_pattern` replacing them.
        """
        with torch.no_grad():
            fast = self.fast_path()
            keys = self.key_mask(tokens)
            if fast is not None:
                return fast.fused(nn.functional.embedding(tokens, self.embed.weight), keys, replace)

            def swap(layer: int) -> Callable[[torch.Tensor], torch.Tensor]:
                def fn(out: torch.Tensor) -> torch.Tensor:
                    out = out.clone()
                    for (l, h), (where, rows) in replace.items():
                        if l == layer:
                            out[:, h] = torch.where(where, rows.to(out.dtype), out[:, h])
                    return out

                return fn

            with self.hooks({f"blocks.{l}.attn.hook_pattern": swap(l) for l in {l for l, _ in replace}}):
                return self(tokens)

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
