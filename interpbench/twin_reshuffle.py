"""The reshuffled-attention twin: attention moved between keys with identical values (Wen et al. 2023)."""

from __future__ import annotations

import dataclasses

import numpy as np

from interpbench.compiled import CompiledCase
from interpbench.twins import TwinModel, TwinNotApplicable, twin
from interpbench.weights import RESHUFFLE_VALUE_ATOL, reshuffle_pattern

WEN = "Wen et al. 2023, Transformers are uninterpretable with myopic methods: a case study with bounded Dyck grammars"
MOVE_ATOL = 1e-6  # a head counts as moved when some query row moves more than this (total variation)


def moved_attention(compiled: CompiledCase) -> dict[tuple[int, int], np.ndarray]:
    """Total-variation distance between each head's pattern and its reshuffled pattern.

    Returns:
        (layer, head) -> [n, pos] distance per query row of the evaluation inputs (0 outside
        real input rows), for every head of the model.
    """
    import torch

    w = compiled.weights
    names = [f"blocks.{l}.attn.{k}" for l in range(w.n_layers) for k in ("hook_pattern", "hook_v")]
    _, cache = compiled.model.run_with_cache(torch.from_numpy(compiled.tokens), names)
    n, t = compiled.tokens.shape
    allowed = np.broadcast_to((np.arange(t)[None, :] <= compiled.lengths[:, None])[:, None, :], (n, t, t))
    if w.causal:
        allowed = allowed & np.tril(np.ones((t, t), dtype=bool))[None]
    rows = compiled.input_mask()
    out = {}
    for l in range(w.n_layers):
        patterns = cache[f"blocks.{l}.attn.hook_pattern"].numpy()
        values = cache[f"blocks.{l}.attn.hook_v"].numpy()
        for h in range(w.n_heads):
            p = patterns[:, h]
            moved = reshuffle_pattern(p, values[:, :, h], allowed)
            out[(l, h)] = np.where(rows, 0.5 * np.abs(moved - p).sum(-1), 0.0)
    return out


@twin("reshuffled_attention", exact=False, reference=WEN)
def reshuffled_attention(compiled: CompiledCase, rng: np.random.Generator) -> TwinModel:
    """Attention of every head that can be moved is spread uniformly over keys with identical values.

    A runtime rule, not a weight change: for a flagged head, each group of keys whose value
    vectors are equal keeps the attention mass it had, spread uniformly over its allowed keys
    (`interpbench.weights.reshuffle_pattern`). The head's output, and so the function, is
    unchanged while `hook_pattern` shows the moved attention. A head is flagged when the rule
    moves some query row of the evaluation inputs by more than MOVE_ATOL. The truth keeps the
    selector patterns: the head still implements its Select; its raw attention no longer shows it.
    """
    del rng  # deterministic
    w = compiled.weights
    tv = moved_attention(compiled)
    flagged = tuple(sorted(lh for lh, d in tv.items() if d.max() > MOVE_ATOL))
    if not flagged:
        raise TwinNotApplicable("no head attends unequally to keys with identical values on the evaluation inputs")
    rows = compiled.input_mask()
    notes = {
        "reshuffled": {f"L{l}H{h}": {"mean_tv": float(tv[(l, h)][rows].mean()), "max_tv": float(tv[(l, h)].max())}
                       for l, h in flagged},  # fmt: skip
        "key_weighting": "uniform",
        "value_atol": RESHUFFLE_VALUE_ATOL,
    }
    return TwinModel(dataclasses.replace(w, reshuffled_heads=flagged), compiled.truth, notes)
