"""Twin-level metric: does an input-level explanation stay put when only the model's internals change?

A twin (interpbench.twins) computes the same function as its base model, so the token
truth is identical and a faithful input-level explanation should rank the input tokens
the same way on both. `twin_consistency` compares, row by row, a method's explanation
of the twin with its explanation of the base model on the same inputs. It is scored by
the run for twin cells whose base cell (same case, method, seed) finished.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from interpbench.explanation import Explanation
from interpbench.metrics import RowScores, metric
from interpbench import token_batch
from interpbench.token_metrics import scored_relevance, spearman_row

if TYPE_CHECKING:
    from interpbench.compiled import CompiledCase


def consistency_row(base: np.ndarray, twin: np.ndarray) -> float:
    """Spearman's rho between two relevance rows over the same input positions.

    Where both rows are constant (no ranking at all) they agree: 1. Where exactly one
    is constant, a ranking appeared or vanished and no order is shared: 0.
    """
    base_flat, twin_flat = bool(np.all(base == base[0])), bool(np.all(twin == twin[0]))
    if base_flat or twin_flat:
        return 1.0 if base_flat and twin_flat else 0.0
    return spearman_row(twin, base)


def consistency(base: np.ndarray, twin: np.ndarray) -> np.ndarray:
    """`consistency_row` for every row of two [m, L] blocks at once."""
    base_flat, twin_flat = np.all(base == base[:, :1], axis=1), np.all(twin == twin[:, :1], axis=1)
    rho = token_batch.spearman(twin, base)
    return np.where(base_flat | twin_flat, (base_flat & twin_flat).astype(np.float64), rho)


@metric("twin_consistency", level="twin", kind="token_relevance", higher_is_better=True, low=-1.0, high=1.0)
def twin_consistency(explanation: Explanation, compiled: CompiledCase, base: Explanation) -> RowScores:
    """Rank correlation (Spearman) of the twin's and the base model's relevance per output row; 1 = unmoved."""
    truth = compiled.truth
    twin_r = scored_relevance(explanation, truth).values
    base_r = scored_relevance(base, truth).values
    if base_r.shape != twin_r.shape:
        raise ValueError(f"base relevance has shape {base_r.shape}, twin {twin_r.shape}")
    twin_blocks, inputs = token_batch.row_blocks(twin_r, truth)
    base_blocks, _ = token_batch.row_blocks(base_r, truth)
    out = np.full(len(inputs), np.nan)
    for t, b in zip(twin_blocks, base_blocks):
        finite = np.isfinite(t.r).all(axis=1) & np.isfinite(b.r).all(axis=1)
        got = consistency(np.where(np.isfinite(b.r), b.r, 0.0), np.where(np.isfinite(t.r), t.r, 0.0))
        out[t.where] = np.where(finite, got, np.nan)
    return RowScores(out, inputs.astype(np.int64))
