"""Token relevance read off attention: live heads, masking, and the shared attention-method base."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from interpbench.compiled import zero_row_share
from interpbench.errors import BadInputError
from interpbench.explanation import Explanation
from interpbench.method import Method

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


def last_live_layer(live: list[list[int]]) -> tuple[int | None, dict[str, Any]]:
    """The last layer with live heads (None without any) and the diagnostics naming it and its heads."""
    layer = max((l for l in range(len(live)) if live[l]), default=None)
    return layer, {"layer": layer, "heads": [] if layer is None else live[layer]}


def real_positions(case: CompiledCase) -> np.ndarray:
    """[n, T] bool: True at BOS and at real input positions, False at PAD."""
    t = case.n_positions
    return np.arange(t)[None, :] <= np.asarray(case.lengths)[:, None]


def reduce_heads(patterns: np.ndarray, how: str) -> np.ndarray:
    """[..., heads, T, T] -> [..., T, T]: "mean" or "max" over the head axis."""
    return patterns.mean(axis=-3) if how == "mean" else patterns.max(axis=-3)


@dataclasses.dataclass(frozen=True)
class AttentionRun:
    """One forward's attention, as the relevance of every attention method reads it.

    Attributes:
        case: The compiled case.
        patterns: Per layer, the patterns [n, head, query, key] with PAD rows and columns 0.
        live: `live_heads` of the case.
        cache: The extra hooks a method asked for (`_hooks`), as arrays.
        real: [n, T] `real_positions` of the case.
    """

    case: CompiledCase
    patterns: dict[int, np.ndarray]
    live: list[list[int]]
    cache: dict[str, np.ndarray]
    real: np.ndarray


class AttentionMethod(Method):
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

    def _relevance(self, run: AttentionRun) -> tuple[np.ndarray | None, dict[str, Any]]:
        """Raw relevance [n, T, T] before output/PAD/BOS masking (None: no live head), and diagnostics."""
        raise NotImplementedError

    def _without_heads(self, n: int, t: int) -> np.ndarray:
        """Raw relevance [n, T, T] of a program without live heads: all zero."""
        return np.zeros((n, t, t))

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

        run = AttentionRun(case, patterns, live, {k: cache[k].numpy() for k in extra}, real)
        raw, diagnostics = self._relevance(run)
        if raw is None:
            raw = self._without_heads(*case.tokens.shape)
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
