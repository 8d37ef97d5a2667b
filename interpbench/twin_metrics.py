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


@metric("twin_consistency", level="twin", kind="token_relevance", higher_is_better=True, low=-1.0, high=1.0)
def twin_consistency(explanation: Explanation, compiled: CompiledCase, base: Explanation) -> RowScores:
    """Rank correlation (Spearman) of the twin's and the base model's relevance per output row; 1 = unmoved."""
    truth = compiled.truth
    twin_r = scored_relevance(explanation, truth).values
    base_r = scored_relevance(base, truth).values
    if base_r.shape != twin_r.shape:
        raise ValueError(f"base relevance has shape {base_r.shape}, twin {twin_r.shape}")
    values, inputs = [], []
    for b, i in zip(*np.nonzero(truth.valid_out)):
        cols = truth.valid_in[b]
        x, y = base_r[b, i, cols], twin_r[b, i, cols]
        ok = bool(np.isfinite(x).all() and np.isfinite(y).all()) and cols.any()
        values.append(consistency_row(x, y) if ok else float("nan"))
        inputs.append(b)
    return RowScores(np.asarray(values, dtype=np.float64), np.asarray(inputs, dtype=np.int64))
