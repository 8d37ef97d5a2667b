"""Head-level metrics: predicted attention patterns against the true selector patterns.

Rows are (truth head, input, query row) over `truth.pattern_rows`, heads being the keys of
`truth.patterns` (heads implementing an Aggregate or SelectorWidth). A row compares the
predicted and true query row over that input's real key columns 0..length (BOS and the
input's tokens); PAD columns are not keys of the input and are ignored. A truth head the
explanation does not cover gives NaN rows (undefined, counted); so does a predicted row
that is not a weight vector (a negative or non-finite entry). Extra predicted heads
(padding heads, MLP-only layers) are not scored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from interpbench.explanation import Explanation
from interpbench.metrics import RowScores, metric

if TYPE_CHECKING:
    from interpbench.compiled import CompiledCase

RowsFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
# `argmax_agreement`: keys within TIE_RTOL * |row maximum| of the row maximum are tied maxima.
TIE_RTOL = 1e-6


def _prepare(
    p: np.ndarray, a: np.ndarray, keys: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(p, a) as float64 [R, K] with non-key entries 0, the key mask, and which rows of `a` are valid."""
    p = np.atleast_2d(np.asarray(p, dtype=np.float64))
    a = np.atleast_2d(np.asarray(a, dtype=np.float64))
    if p.shape != a.shape:
        raise ValueError(f"pattern rows differ in shape: true {p.shape}, predicted {a.shape}")
    k = np.ones(p.shape, dtype=bool) if keys is None else np.broadcast_to(np.asarray(keys, dtype=bool), p.shape)
    valid = (np.isfinite(a) & (a >= 0) | ~k).all(axis=-1)
    return np.where(k, p, 0.0), np.where(k & np.isfinite(a), a, 0.0), k, valid


def soft_iou_rows(p: np.ndarray, a: np.ndarray, keys: np.ndarray | None = None) -> np.ndarray:
    """sum_k min(p, a) / sum_k max(p, a) per row; NaN if both rows are 0 or `a` is invalid.

    Args:
        p: True rows [R, K] (non-negative).
        a: Predicted rows [R, K], compared as given (not renormalised).
        keys: [R, K] or [K] columns that count (default all).

    Returns:
        [R] values in [0, 1]; an all-zero predicted row scores 0.
    """
    p, a, _, valid = _prepare(p, a, keys)
    top = np.maximum(p, a).sum(-1)
    out = np.divide(np.minimum(p, a).sum(-1), top, out=np.full(top.shape, np.nan), where=top > 0)
    return np.where(valid, out, np.nan)


def argmax_agreement_rows(p: np.ndarray, a: np.ndarray, keys: np.ndarray | None = None) -> np.ndarray:
    """Chance that a key drawn uniformly from a's tied-argmax set lies in p's tied-argmax set.

    Keys within `TIE_RTOL` (1e-6) times the row's largest value of the row maximum are
    tied. An all-zero predicted row ties every key, so it scores the chance level
    |argmax p| / K. NaN where `a` is invalid or a row has no key.
    """
    p, a, k, valid = _prepare(p, a, keys)

    def top_set(x: np.ndarray) -> np.ndarray:
        masked = np.where(k, x, -np.inf)
        best = masked.max(-1, keepdims=True)
        return k & (masked >= best - TIE_RTOL * np.abs(best))

    pred, true = top_set(a), top_set(p)
    n_pred = pred.sum(-1)
    out = np.divide((pred & true).sum(-1), n_pred, out=np.full(n_pred.shape, np.nan), where=n_pred > 0)
    return np.where(valid, out, np.nan)


def jsd_rows(p: np.ndarray, a: np.ndarray, keys: np.ndarray | None = None) -> np.ndarray:
    """Jensen-Shannon divergence in bits between the rows, each normalised to sum 1.

    Equals `scipy.spatial.distance.jensenshannon(p, a, base=2) ** 2`. In [0, 1]: 0 for
    equal distributions, 1 for disjoint supports. NaN where a row sums to 0 or `a` is invalid.
    """
    p, a, _, valid = _prepare(p, a, keys)
    sp, sa = p.sum(-1, keepdims=True), a.sum(-1, keepdims=True)
    ok = valid & (sp[:, 0] > 0) & (sa[:, 0] > 0)
    pn = np.divide(p, sp, out=np.zeros_like(p), where=sp > 0)
    an = np.divide(a, sa, out=np.zeros_like(a), where=sa > 0)
    m = (pn + an) / 2.0

    def kl(x: np.ndarray) -> np.ndarray:
        ratio = np.divide(x, m, out=np.ones_like(x), where=x > 0)
        return (x * np.log2(ratio)).sum(-1)

    out = np.clip(0.5 * kl(pn) + 0.5 * kl(an), 0.0, 1.0)
    return np.where(ok, out, np.nan)


def soft_iou_row(p: np.ndarray, a: np.ndarray) -> float:
    """`soft_iou_rows` of one true row `p` and one predicted row `a`."""
    return float(soft_iou_rows(p, a)[0])


def argmax_agreement_row(p: np.ndarray, a: np.ndarray) -> float:
    """`argmax_agreement_rows` of one true row `p` and one predicted row `a`."""
    return float(argmax_agreement_rows(p, a)[0])


def jsd_row(p: np.ndarray, a: np.ndarray) -> float:
    """`jsd_rows` of one true row `p` and one predicted row `a`."""
    return float(jsd_rows(p, a)[0])


def _predicted(explanation: Explanation, compiled: CompiledCase, head: str) -> np.ndarray | None:
    """The explanation's pattern for `head` as float64 [n, T, T], or None if it has none."""
    patterns = explanation.head_patterns
    if patterns is None:
        raise ValueError("explanation has no head_patterns")
    if head not in patterns:
        return None
    pred = np.asarray(patterns[head], dtype=np.float64)
    want = compiled.truth.patterns[head].shape
    if pred.shape != want:
        raise ValueError(f"head pattern {head} has shape {pred.shape}, expected {want}")
    return pred


def pattern_rows(explanation: Explanation, compiled: CompiledCase, rows_fn: RowsFn) -> RowScores:
    """Applies `rows_fn(true, predicted, keys)` to every (truth head, input, query row)."""
    truth = compiled.truth
    bs, qs = np.nonzero(truth.pattern_rows)
    t = truth.pattern_rows.shape[1]
    keys = np.arange(t)[None, :] <= np.asarray(compiled.lengths)[bs, None]
    values, inputs = [], []
    for head, true in truth.patterns.items():
        pred = _predicted(explanation, compiled, head)
        if pred is None:
            values.append(np.full(bs.size, np.nan))
        else:
            values.append(rows_fn(true[bs, qs], pred[bs, qs], keys))
        inputs.append(bs)
    if not values:
        return RowScores(np.zeros(0), np.zeros(0, dtype=np.int64))
    return RowScores(np.concatenate(values), np.concatenate(inputs).astype(np.int64))


@metric("soft_iou", level="head", kind="head_patterns", higher_is_better=True, low=0.0, high=1.0)
def soft_iou(explanation: Explanation, compiled: CompiledCase) -> RowScores:
    """Soft IoU sum min(P, A) / sum max(P, A) of predicted vs true attention per (head, input, query) row."""
    return pattern_rows(explanation, compiled, soft_iou_rows)


@metric("argmax_agreement", level="head", kind="head_patterns", higher_is_better=True, low=0.0, high=1.0)
def argmax_agreement(explanation: Explanation, compiled: CompiledCase) -> RowScores:
    """Chance a key drawn from the predicted row's tied argmax is in the true row's tied argmax."""
    return pattern_rows(explanation, compiled, argmax_agreement_rows)


@metric("jsd", level="head", kind="head_patterns", higher_is_better=False, low=0.0, high=1.0)
def jsd(explanation: Explanation, compiled: CompiledCase) -> RowScores:
    """Jensen-Shannon divergence (bits) of predicted vs true attention per row; undefined if a row sums to 0."""
    return pattern_rows(explanation, compiled, jsd_rows)


LOGIT_TIE_RTOL = 1e-9  # read-out classes within this share of the largest |logit| of the top one are tied


def tied_argmax_share(logits: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Per row, the chance that an argmax drawn uniformly among tied maxima is class `want`.

    A replaced pattern can leave two classes with the same logit (a uniform pattern
    averages values into exact ties); which one `argmax` picks then depends on the last
    bit of float rounding, so tied classes share the credit, as tied scores do elsewhere.

    Args:
        logits: [rows, classes] read-out.
        want: [rows] the correct class.
    """
    top = logits.max(axis=-1, keepdims=True)
    tol = LOGIT_TIE_RTOL * np.maximum(np.abs(logits).max(axis=-1, keepdims=True), 1.0)
    tied = logits >= top - tol
    return np.take_along_axis(tied, want[:, None], axis=-1)[:, 0] / tied.sum(axis=-1)


def replaced_outputs_correct(compiled: CompiledCase, replacements: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Runs the model with one head's attention replaced by a predicted pattern, for each head given.

    One batched forward for all heads: the evaluation inputs are repeated once per head,
    and copy k has only its own head replaced, so each copy is the forward with that one
    replacement. Query rows in `truth.pattern_rows` (the real positions) take the
    predicted row on the real key columns and 0 on PAD; the BOS and PAD query rows keep
    the model's own attention (they are never scored, and BOS's residual is read by later
    heads as the fallback value). Rows need not sum to 1.

    Args:
        compiled: The compiled case.
        replacements: Truth head (`L{layer}H{head}`) -> its predicted attention [n, T, T].

    Returns:
        Per head, [n_rows] over `compiled.output_mask()` rows in `np.nonzero` order: for a
        categorical output the share of tied top classes that is the correct one
        (`tied_argmax_share`: 1.0 or 0.0 without ties), for a numerical one 1.0 if within
        NUMERIC_OUTPUT_ATOL of the truth, else 0.0; NaN for every row of an input whose
        replaced rows hold a non-finite value.
    """
    import torch

    from interpbench.compiled import NUMERIC_OUTPUT_ATOL

    if not replacements:
        return {}
    rows = compiled.truth.pattern_rows
    n, t = rows.shape
    keys = np.arange(t)[None, :] <= np.asarray(compiled.lengths)[:, None]
    live = rows[:, :, None] & keys[:, None, :]
    k_total = len(replacements)
    replace: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
    finite = {}
    for k, (head, pattern) in enumerate(replacements.items()):
        comp = compiled.truth.component(head)
        finite[head] = np.where(live, np.isfinite(pattern), True).all(axis=(1, 2))
        where = np.zeros((k_total * n, t, 1), dtype=bool)
        where[k * n : (k + 1) * n] = rows[:, :, None]
        new = np.zeros((k_total * n, t, t))
        new[k * n : (k + 1) * n] = np.where(live, np.nan_to_num(pattern), 0.0)
        replace[(comp.layer, comp.head)] = (torch.from_numpy(where), torch.from_numpy(new))
    tokens = torch.from_numpy(np.tile(np.asarray(compiled.tokens, dtype=np.int64), (k_total, 1)))
    logits = compiled.model.forward_with_patterns(tokens, replace).numpy()
    mask = compiled.output_mask()
    want = compiled.outputs[mask]
    out = {}
    for k, head in enumerate(replacements):
        got = logits[k * n : (k + 1) * n][mask]
        if compiled.weights.categorical:
            correct = tied_argmax_share(got, want.astype(np.int64))
        else:
            correct = (np.abs(got[:, 0] - want) <= NUMERIC_OUTPUT_ATOL).astype(np.float64)
        out[head] = np.where(finite[head][np.nonzero(mask)[0]], correct, np.nan)
    return out


@metric("replacement_accuracy", level="head", kind="head_patterns", higher_is_better=True, low=0.0, high=1.0)
def replacement_accuracy(explanation: Explanation, compiled: CompiledCase) -> RowScores:
    """Share of outputs still correct when one true head's attention is replaced by its predicted pattern."""
    bs = np.nonzero(compiled.output_mask())[0]
    predicted = {head: _predicted(explanation, compiled, head) for head in compiled.truth.patterns}
    correct = replaced_outputs_correct(compiled, {h: p for h, p in predicted.items() if p is not None})
    values, inputs = [], []
    for head in compiled.truth.patterns:
        values.append(correct.get(head, np.full(bs.size, np.nan)))
        inputs.append(bs)
    if not values:
        return RowScores(np.zeros(0), np.zeros(0, dtype=np.int64))
    return RowScores(np.concatenate(values), np.concatenate(inputs).astype(np.int64))
