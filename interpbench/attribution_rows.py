"""Attribution rows: one relevance row per (input, real output position), and its captum plumbing."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from interpbench.errors import BadInputError

if TYPE_CHECKING:
    import torch

    from interpbench.compiled import CompiledCase


def expand_output_rows(
    case: CompiledCase,
) -> tuple[np.ndarray, list[tuple[int, int]], tuple[np.ndarray, np.ndarray]]:
    """One row per (input b, real output position i), for per-row captum targets.

    Output positions are 1..length of each input (BOS and PAD positions have no
    output and get no row); rows whose RASP output is undefined are kept (their
    target is class 0, as in `case.targets()`).

    Args:
        case: The compiled case.

    Returns:
        tokens_rep: [m, T] int64 token ids; row r is `case.tokens[b_r]`.
        targets: captum targets, one `(i_r, class)` per row: the true class of input
            b_r at position i_r, or column 0 for a numerical output.
        index: (b, i) int64 arrays [m] naming each row's input and output position.
    """
    lengths = np.asarray(case.lengths, dtype=np.int64)
    b = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    i = np.arange(len(b), dtype=np.int64) - starts + 1
    tokens_rep = np.asarray(case.tokens, dtype=np.int64)[b]
    cls = case.targets()[b, i] if case.weights.categorical else np.zeros(len(b), dtype=np.int64)
    targets = [(int(p), int(c)) for p, c in zip(i, cls)]
    return tokens_rep, targets, (b, i)


def pad_baseline(case: CompiledCase, tokens: np.ndarray) -> np.ndarray:
    """The "pad" baseline: every real non-BOS token replaced by the PAD id.

    BOS stays, and so do the PAD positions already there. Used together with the key
    mask of the original tokens, so the baseline changes what each real position
    holds but not which positions attend.
    """
    out = np.array(tokens, dtype=np.int64, copy=True)
    out[:, 1:] = case.weights.pad_id
    return out


def scatter_rows(
    case: CompiledCase, scores: np.ndarray, index: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    """Places per-row scores [m, T] into R [n, T, T], zeroing BOS and PAD input columns.

    Args:
        case: The compiled case.
        scores: One score per (row, input position).
        index: (b, i) from `expand_output_rows`.

    Returns:
        R [n, T, T]; rows without an entry in `index` are 0.
    """
    n, t = case.tokens.shape
    relevance = np.zeros((n, t, t))
    b, i = index
    relevance[b, i] = scores
    return np.where(case.input_mask()[:, None, :], relevance, 0.0)


def flat_targets(targets: list[tuple[int, int]], n_out: int) -> torch.Tensor:
    """(position, class) targets -> int64 tensor [m] indexing flattened logits [m, T * n_out]."""
    import torch

    return torch.tensor([p * n_out + c for p, c in targets], dtype=torch.int64)


def row_chunks(m: int, size: int) -> list[slice]:
    """Slices of at most `size` rows covering range(m).

    captum's `internal_batch_size` splits the integration steps, never the examples
    (it warns and runs every example at once when there are more examples than the
    batch size), so rows are chunked here first: each forward then holds at most
    `size` (row, step) pairs.
    """
    if size < 1:
        raise BadInputError(f"internal_batch_size must be at least 1, got {size}")
    return [slice(a, min(a + size, m)) for a in range(0, m, size)]


def reduce_embedding(attributions: np.ndarray, how: str) -> np.ndarray:
    """[..., d_model] -> [...]: "sum" keeps the sign (completeness holds), "l2" is the norm."""
    if how == "sum":
        return attributions.sum(axis=-1)
    return np.sqrt((attributions**2).sum(axis=-1))


def embedding_forward(model: Any) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """forward_func(token_embeddings, ids) -> flattened logits [m, T * n_out] for captum.

    The plain captum methods (Saliency, InputXGradient, IntegratedGradients,
    GradientShap) attribute to the token embeddings [m, T, d_model], which they
    scale, interpolate or add noise to; `ids` (the original tokens, passed as
    `additional_forward_args`) only set the key mask, so which positions attend never
    changes, also for baselines and noisy samples. Positional embeddings are added
    inside the runtime and are not attributed. The logits are flattened so that the
    per-row target is one int (`flat_targets`): captum's list-of-tuples targets select
    row by row, and the backward of that costs time growing with the square of the rows.
    """

    def forward(token_embeddings: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return model.forward_from_embeddings(token_embeddings, ids, model.key_mask(ids)).flatten(1)

    return forward


@dataclasses.dataclass(frozen=True)
class Rows:
    """The expanded rows of a case, one per (input, real output position).

    Attributes:
        ids: [m, T] token ids of each row's input.
        embeddings: [m, T, d_model] token embeddings of `ids` (no positional part).
        target: [m] flat targets into `embedding_forward`'s logits.
        index: (b, i) arrays [m] naming each row's input and output position.
    """

    ids: torch.Tensor
    embeddings: torch.Tensor
    target: torch.Tensor
    index: tuple[np.ndarray, np.ndarray]

    @classmethod
    def of(cls, case: CompiledCase) -> Rows:
        """Expands `case` with `expand_output_rows`."""
        import torch

        tokens_rep, targets, index = expand_output_rows(case)
        ids = torch.from_numpy(tokens_rep)
        with torch.no_grad():
            embeddings = case.model.embed(ids)
        return cls(ids, embeddings, flat_targets(targets, int(case.weights.unembed.shape[1])), index)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def inputs(self, rows: slice) -> torch.Tensor:
        """A fresh leaf copy of some rows' embeddings that requires grad (captum warns otherwise)."""
        return self.embeddings[rows].detach().clone().requires_grad_(True)
