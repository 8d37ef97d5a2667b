"""Checks shared by the captum adapter tests: real-token masks and the shape/mask contract of R."""

from __future__ import annotations

import numpy as np

from interpbench.compiled import CompiledCase
from interpbench.explanation import Explanation


def valid_in(case: CompiledCase) -> np.ndarray:
    """[n, T] True at real input tokens (BOS and PAD excluded), from the input lengths."""
    pos = np.arange(case.n_positions)[None, :]
    return (pos >= 1) & (pos <= case.lengths[:, None])


def check_token_relevance(case: CompiledCase, explanation: Explanation, *, larger_than: float = 0.0) -> np.ndarray:
    """Asserts R is [n, T, T], finite, zero at BOS/PAD rows and columns, and somewhere above `larger_than`.

    Returns:
        R, for further checks.
    """
    r = np.asarray(explanation.token_relevance)
    n, t = case.tokens.shape
    assert r.shape == (n, t, t)
    assert np.isfinite(r).all()
    valid = valid_in(case)
    assert (r.transpose(0, 2, 1)[~valid] == 0).all()  # BOS and PAD input columns
    assert (r[~valid] == 0).all()  # no output row at BOS or PAD
    assert np.abs(r).max() > larger_than
    assert 0.0 <= explanation.diagnostics["zero_row_share"] <= 1.0
    return r
