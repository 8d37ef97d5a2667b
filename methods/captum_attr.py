"""Captum gradient attributions on the token embedding, one relevance row per output position."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from interpbench.errors import BadInputError
from interpbench.explanation import Explanation
from interpbench.method import Method, method

if TYPE_CHECKING:
    import torch

    from interpbench.compiled import CompiledCase

BASELINES = ("pad",)
REDUCTIONS = ("sum", "l2")
ZERO_ATOL = 1e-12  # a relevance row counts as all-zero when every |entry| is at most this


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
    pos = np.arange(t)
    valid_in = (pos[None, :] >= 1) & (pos[None, :] <= np.asarray(case.lengths)[:, None])  # [n, T]
    return np.where(valid_in[:, None, :], relevance, 0.0)


def zero_row_share(case: CompiledCase, relevance: np.ndarray, atol: float = ZERO_ATOL) -> float:
    """Share of defined output rows (real position, RASP output not None) whose relevance is all zero."""
    t = case.n_positions
    pos = np.arange(t)
    real = (pos[None, :] >= 1) & (pos[None, :] <= np.asarray(case.lengths)[:, None])
    defined = real & np.isfinite(np.asarray(case.outputs, dtype=np.float64))
    if not defined.any():
        return 0.0
    zero = (np.abs(relevance) <= atol).all(axis=-1)
    return float(zero[defined].mean())


def masked_forward(model: Any) -> Any:
    """forward_func(ids, mask_ids) -> flattened logits [m, T * n_out] for captum.

    Embeds `ids` but masks keys by `mask_ids`; captum runs the baseline forward (and
    its convergence check) through the same function with the original tokens as
    `mask_ids`, so the key mask never changes. The logits are flattened so that the
    per-row target is one int (`flat_targets`): captum's list-of-tuples targets select
    row by row, and the backward of that costs time growing with the square of the rows.
    """

    def forward(ids: torch.Tensor, mask_ids: torch.Tensor) -> torch.Tensor:
        return model(ids, model.key_mask(mask_ids)).flatten(1)

    return forward


def flat_targets(targets: list[tuple[int, int]], n_out: int) -> torch.Tensor:
    """(position, class) targets -> int64 tensor [m] indexing `masked_forward`'s flattened logits."""
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


@method("integrated_gradients", family="attribution", kinds=("token_relevance",))
class IntegratedGradients(Method):
    """Integrated gradients (captum `LayerIntegratedGradients`) on the token embedding.

    Every (input, real output position i) pair is one row with target `(i, class)`:
    the true output class at i for categorical programs, column 0 (the scalar) for
    numerical ones. IG integrates the gradient of that logit along the straight line
    from the baseline's token embeddings to the input's, in the output of
    `model.embed` (positional embeddings are not attributed).

    Baseline "pad": the same sequence with every real non-BOS token replaced by the
    PAD token id. The key mask always comes from the original tokens (they are passed
    to the forward as an extra argument), so along the path only token content
    changes, never which positions are attended.

    Attributions [d_model] per token are reduced to one score with `reduce`: "sum"
    (signed; sums over a row to F(x) - F(baseline)) or "l2" (unsigned norm). Columns
    at BOS and PAD, and rows at BOS and PAD positions, are 0.

    Settings (captum names where captum has one):
        n_steps: Integration steps (default 32).
        internal_batch_size: At most this many (row, step) pairs per forward, to cap
            memory (default 512; rows are chunked to this size, captum splits steps).
        method: captum's integration rule (default "gausslegendre").
        baseline: "pad" (the only one so far).
        reduce: "sum" (default) or "l2".

    Diagnostics: `zero_row_share` (share of defined output rows whose relevance is
    all zero), `delta_abs_mean` / `delta_abs_max` (captum's convergence delta,
    |sum of attributions - (F(x) - F(baseline))|, over rows) and `n_rows`. The delta
    is recorded, never corrected: along the path tracr models are often close to step
    functions (attention at inverse temperature ~100, discretising MLPs), so a few
    dozen steps can miss most of F(x) - F(baseline). captum multiplies by float32 step
    sizes, so even a linear path only reaches ~1e-8 relative.
    """

    defaults = {"n_steps": 32, "internal_batch_size": 512, "method": "gausslegendre", "baseline": "pad",
                "reduce": "sum"}  # fmt: skip

    def explain(self, case: CompiledCase, *, seed: int = 0) -> Explanation:
        """Attributes every real output position of every evaluation input.

        Args:
            case: The compiled case.
            seed: Unused (IG with a fixed baseline is deterministic).

        Returns:
            An Explanation with token_relevance [n, T, T] and diagnostics.
        """
        import torch
        from captum.attr import LayerIntegratedGradients

        s = self.settings
        if s["baseline"] not in BASELINES:
            raise BadInputError(f"baseline must be one of {BASELINES}, got {s['baseline']!r}")
        if s["reduce"] not in REDUCTIONS:
            raise BadInputError(f"reduce must be one of {REDUCTIONS}, got {s['reduce']!r}")

        n, t = case.tokens.shape
        tokens_rep, targets, index = expand_output_rows(case)
        if not targets:
            empty = {"n_rows": 0, "zero_row_share": 0.0}
            return Explanation(token_relevance=np.zeros((n, t, t)), diagnostics=empty)
        model = case.model
        ids = torch.from_numpy(tokens_rep)
        base = torch.from_numpy(pad_baseline(case, tokens_rep))
        target = flat_targets(targets, int(case.weights.unembed.shape[1]))
        lig = LayerIntegratedGradients(masked_forward(model), model.embed)
        parts, deltas = [], []
        for rows in row_chunks(len(targets), int(s["internal_batch_size"])):
            attr, delta = lig.attribute(
                ids[rows],
                baselines=base[rows],
                target=target[rows],
                additional_forward_args=(ids[rows],),
                n_steps=int(s["n_steps"]),
                method=s["method"],
                internal_batch_size=int(s["internal_batch_size"]),
                return_convergence_delta=True,
            )
            parts.append(attr.detach().numpy())
            deltas.append(delta.detach().numpy())
        attributions = np.concatenate(parts)  # [m, T, d_model]
        delta_abs = np.abs(np.concatenate(deltas))
        scores = reduce_embedding(attributions, s["reduce"])  # [m, T]
        relevance = scatter_rows(case, scores, index)
        diagnostics = {
            "n_rows": len(targets),
            "zero_row_share": zero_row_share(case, relevance),
            "delta_abs_mean": float(delta_abs.mean()),
            "delta_abs_max": float(delta_abs.max()),
        }
        return Explanation(token_relevance=relevance, diagnostics=diagnostics)
