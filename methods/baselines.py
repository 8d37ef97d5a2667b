"""Anchors for every table: random and uniform relevance sit at chance, the oracle at the best value."""

from __future__ import annotations

import numpy as np

from interpbench.compiled import CompiledCase
from interpbench.explanation import Explanation
from interpbench.method import Method, method


def _valid_grid(case: CompiledCase) -> np.ndarray:
    """[n, out_pos, in_pos] True where both positions are real input positions."""
    v = case.truth.valid_in
    return v[:, :, None] & v[:, None, :]


def _key_grid(case: CompiledCase) -> np.ndarray:
    """[n, query, key] True for real queries and their visible keys (BOS included)."""
    real = case.tokens != case.weights.pad_id
    grid = case.truth.valid_in[:, :, None] & real[:, None, :]
    if case.weights.causal:
        grid &= np.tril(np.ones(grid.shape[1:], dtype=bool))[None]
    return grid


def _normalise(p: np.ndarray) -> np.ndarray:
    s = p.sum(-1, keepdims=True)
    return np.divide(p, s, out=np.zeros_like(p), where=s > 0)


@method("random", family="baseline", kinds=("token_relevance", "head_patterns"))
class RandomBaseline(Method):
    """Independent uniform scores per (input, output, input position); random row-stochastic heads."""

    reads_model = False

    def explain(self, case: CompiledCase, *, seed: int = 0) -> Explanation:
        rng = np.random.default_rng(seed)
        r = rng.random(_valid_grid(case).shape) * _valid_grid(case)
        keys = _key_grid(case)
        heads = {name: _normalise(rng.random(keys.shape) * keys) for name in case.head_names()}
        return Explanation(token_relevance=r, head_patterns=heads)


@method("uniform", family="baseline", kinds=("token_relevance", "head_patterns"))
class UniformBaseline(Method):
    """The same score everywhere: every ranking metric sees one big tie (AUROC exactly 0.5)."""

    reads_model = False

    def explain(self, case: CompiledCase, *, seed: int = 0) -> Explanation:
        keys = _key_grid(case).astype(np.float64)
        heads = {name: _normalise(keys) for name in case.head_names()}
        return Explanation(token_relevance=_valid_grid(case).astype(np.float64), head_patterns=heads)


@method("oracle", family="baseline", kinds=("token_relevance", "head_patterns"))
class OracleBaseline(Method):
    """Reads the ground truth: graded relevance Gg and the true selector patterns (the ceiling)."""

    reads_model = False

    def explain(self, case: CompiledCase, *, seed: int = 0) -> Explanation:
        return Explanation(token_relevance=case.truth.graded.copy(), head_patterns=dict(case.truth.patterns))
