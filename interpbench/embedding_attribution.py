"""Gradient attributions on the token embedding: the shared explain() of the captum gradient adapters."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from interpbench.attribution_rows import Rows, reduce_embedding, row_chunks, scatter_rows
from interpbench.compiled import zero_row_share
from interpbench.explanation import Explanation
from interpbench.method import Method
from interpbench.setting_checks import require_at_least_one, require_choice

if TYPE_CHECKING:
    import torch

    from interpbench.compiled import CompiledCase

REDUCTIONS = ("sum", "l2")


class EmbeddingAttribution(Method):
    """Shared explain() of the gradient family; subclasses implement `attribute`.

    Rows come from `expand_output_rows`, attributions [m, T, d_model] are reduced to
    one score per token with the `reduce` setting and placed with `scatter_rows`
    (BOS/PAD columns and rows are 0). Diagnostics always hold `n_rows` and
    `zero_row_share`, plus whatever `attribute` adds.
    """

    def check_settings(self) -> None:
        """Raises BadInputError on a bad setting (before any work)."""
        require_choice(self.settings, "reduce", REDUCTIONS)
        require_at_least_one(self.settings, "internal_batch_size")

    def attribute(self, case: CompiledCase, rows: Rows, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
        """Attributions [m, T, d_model] for every row, and extra diagnostics."""
        raise NotImplementedError

    def attribute_leaves(self, explainer: Any, rows: Rows, **kwargs: Any) -> np.ndarray:
        """`explainer.attribute` on fresh leaf copies of the rows, `internal_batch_size` rows a call.

        Returns:
            Attributions [m, T, d_model].
        """
        return np.concatenate([
            explainer.attribute(rows.inputs(r), target=rows.target[r],
                                additional_forward_args=(rows.ids[r],), **kwargs).detach().numpy()
            for r in row_chunks(len(rows), int(self.settings["internal_batch_size"]))
        ])  # fmt: skip

    @staticmethod
    def attribute_from_baselines(
        explainer: Any, rows: Rows, size: int, baselines: Callable[[slice], torch.Tensor], **kwargs: Any
    ) -> tuple[np.ndarray, dict[str, float]]:
        """`explainer.attribute` with baselines and convergence delta, `size` rows a call.

        Args:
            explainer: A captum attribution object taking `baselines`.
            rows: The rows to attribute.
            size: Rows per call.
            baselines: A chunk of rows -> its baselines.
            **kwargs: Passed to `attribute`.

        Returns:
            Attributions [m, T, d_model] and `delta_abs_mean` / `delta_abs_max` over rows.
        """
        parts, deltas = [], []
        for r in row_chunks(len(rows), size):
            attr, delta = explainer.attribute(
                rows.embeddings[r],
                baselines=baselines(r),
                target=rows.target[r],
                additional_forward_args=(rows.ids[r],),
                return_convergence_delta=True,
                **kwargs,
            )
            parts.append(attr.detach().numpy())
            deltas.append(delta.detach().numpy())
        return np.concatenate(parts), delta_summary(np.concatenate(deltas))

    def explain(self, case: CompiledCase, *, seed: int = 0) -> Explanation:
        """Attributes every real output position of every evaluation input.

        Args:
            case: The compiled case.
            seed: Seeds any sampling (only GradientShap samples).

        Returns:
            An Explanation with token_relevance [n, T, T] and diagnostics.
        """
        self.check_settings()
        n, t = case.tokens.shape
        if int(np.sum(case.lengths)) == 0:
            empty = {"n_rows": 0, "zero_row_share": 0.0}
            return Explanation(token_relevance=np.zeros((n, t, t)), diagnostics=empty)
        rows = Rows.of(case)
        attributions, extra = self.attribute(case, rows, seed)
        scores = reduce_embedding(attributions, self.settings["reduce"])  # [m, T]
        relevance = scatter_rows(case, scores, rows.index)
        diagnostics = {"n_rows": len(rows), "zero_row_share": zero_row_share(case, relevance), **extra}
        return Explanation(token_relevance=relevance, diagnostics=diagnostics)


def delta_summary(delta: np.ndarray) -> dict[str, float]:
    """`delta_abs_mean` and `delta_abs_max` of convergence deltas (one per row or per sample)."""
    delta_abs = np.abs(delta)
    return {"delta_abs_mean": float(delta_abs.mean()), "delta_abs_max": float(delta_abs.max())}


@contextlib.contextmanager
def seeded_global_rngs(seed: int) -> Iterator[None]:
    """Seeds numpy's and torch's global generators for captum's sampling, then restores them.

    captum draws GradientShap's baselines and path points from `np.random` and its
    noise from `torch.normal`, both global; the caller's generator states are left as
    they were.
    """
    import torch

    state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            np.random.seed(seed % 2**32)
            torch.manual_seed(seed)
            yield
    finally:
        np.random.set_state(state)


def random_token_baselines(case: CompiledCase, k: int, rng: np.random.Generator) -> np.ndarray:
    """k baseline sequences [k, T]: BOS at 0, tokens drawn uniformly from the input vocabulary after.

    Every position after BOS gets a real token (never BOS or PAD), also positions that
    are PAD in a given input: the key mask of the original tokens hides those, so
    they change nothing. The draws ignore the case's domain (e.g. distinct tokens).
    """
    w = case.weights
    real = np.array([i for i in range(len(w.input_tokens)) if i not in (w.bos_id, w.pad_id)], dtype=np.int64)
    out = rng.choice(real, size=(k, case.n_positions))
    out[:, 0] = w.bos_id
    return out


def token_difference_basis(case: CompiledCase) -> np.ndarray:
    """Orthonormal basis [d_model, r] of the span of differences between real-token embeddings.

    These are the only directions a token substitution can move the token embedding
    in; directions every token shares (tracr's `one`) and directions no token writes
    (positions, intermediate and output variables) are outside it.
    """
    w = case.weights
    real = [i for i in range(len(w.input_tokens)) if i not in (w.bos_id, w.pad_id)]
    diffs = np.asarray(w.token_embed, dtype=np.float64)[real[1:]] - np.asarray(w.token_embed)[real[0]]
    if len(diffs) == 0:
        return np.zeros((w.d_model, 0))
    u, sv, _ = np.linalg.svd(diffs.T, full_matrices=False)
    return u[:, sv > 1e-9 * max(1.0, float(sv.max()))]
