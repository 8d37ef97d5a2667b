"""Captum perturbation attributions on token ids (PAD replacement), and leave-one-out by key masking."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from interpbench.errors import BadInputError
from interpbench.explanation import Explanation
from interpbench.method import Method, method
from interpbench.methods.captum_attr import expand_output_rows, pad_baseline, scatter_rows, zero_row_share

if TYPE_CHECKING:
    import torch

    from interpbench.compiled import CompiledCase

# Every adapter here reports a SIGNED relevance R[b, i, j] = F_bi(x) - F_bi(x perturbed at j)
# (captum's sign: positive = token j supports the score), where F_bi is the score of output
# position i of input b: the logit of its true class (`case.targets()`) for categorical
# programs, the scalar read-out for numerical ones. The scorer ranks R as it is (after
# rounding-noise ties are restored, see _snap_ties).

BASELINES = ("pad",)
LIME_MODELS = ("ridge", "linear_regression")
LIME_SIMILARITIES = ("exp_kernel_kept_fraction",)
ERASURES = ("key_mask",)
SAMPLE_BLOCK = 256  # samples drawn per call by the Lime / KernelShap samplers
# Relative to max |R|: values of one row closer than this are rounding noise (see _snap_ties).
TIE_TOLERANCE = 1e-5  # captum's float32 accumulations and fits
TIE_TOLERANCE_FLOAT64 = 1e-9  # float64 forwards (feature_ablation, leave_one_out)


def _check(settings: dict[str, Any], *counts: str) -> None:
    """Raises BadInputError for an unknown baseline or a count setting that is not a positive int."""
    if "baseline" in settings and settings["baseline"] not in BASELINES:
        raise BadInputError(f"baseline must be one of {BASELINES}, got {settings['baseline']!r}")
    tol = settings.get("tie_tolerance", 0.0)
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 <= tol < 1:
        raise BadInputError(f"tie_tolerance must be in [0, 1), got {settings['tie_tolerance']!r}")
    for name in counts:
        value = settings[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadInputError(f"{name} must be a positive integer, got {value!r}")


def _position_scores(model: Any) -> Callable[..., torch.Tensor]:
    """forward(ids, mask_ids, cls) -> [k, T]: the target score of every output position at once.

    `cls` [k, T] is the true class per position (`case.targets()`, all 0 for a numerical
    program, whose read-out has one column), so one gather serves both kinds. Keys are
    masked by `mask_ids`, always the ORIGINAL tokens: replacing a token by PAD changes
    what the position holds, never which positions exist.
    """

    def forward(ids: torch.Tensor, mask_ids: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        logits = model(ids, model.key_mask(mask_ids))
        return logits.gather(-1, cls.unsqueeze(-1)).squeeze(-1)

    return forward


def _example_tensors(case: CompiledCase) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, PAD baseline, true class per position), each [n, T] int64."""
    import torch

    ids = torch.from_numpy(np.asarray(case.tokens, dtype=np.int64))
    base = torch.from_numpy(pad_baseline(case, case.tokens))
    cls = torch.from_numpy(np.asarray(case.targets(), dtype=np.int64))
    return ids, base, cls


def _token_features(lengths: np.ndarray, t: int, *, null_feature: bool) -> np.ndarray:
    """Per-example captum feature mask [n, T]: input token k (position k + 1) is feature k.

    BOS and PAD positions hold their own value in the PAD baseline, so whatever feature
    they join, perturbing them changes nothing. With `null_feature` they form one extra
    feature, number `length` (a null player: its exact attribution is 0); without, they
    join feature 0, which costs no feature and leaves feature 0's value unchanged. Their
    columns are zeroed afterwards either way.
    """
    pos = np.arange(t)[None, :]
    lengths = np.asarray(lengths)[:, None]
    real = (pos >= 1) & (pos <= lengths)
    other = lengths if null_feature else np.zeros_like(lengths)
    return np.where(real, pos - 1, other).astype(np.int64)


def _multi_output_relevance(case: CompiledCase, attributions: np.ndarray) -> np.ndarray:
    """[n, T_out, T_in] -> R with BOS/PAD output rows and BOS/PAD input columns zeroed."""
    _, _, index = expand_output_rows(case)
    b, i = index
    return scatter_rows(case, attributions[b, i], index)


def _explanation(case: CompiledCase, relevance: np.ndarray, **diagnostics: Any) -> Explanation:
    """Wraps R with `zero_row_share` and the method's own diagnostics."""
    return Explanation(token_relevance=relevance,
                       diagnostics={"zero_row_share": zero_row_share(case, relevance), **diagnostics})  # fmt: skip


def _snap_ties(case: CompiledCase, relevance: np.ndarray, rel_tol: float) -> tuple[np.ndarray, int]:
    """Makes values of one relevance row that differ by less than rounding noise exactly equal.

    Tokens with the same true effect come out a few ulps apart, in a direction set by
    the order of the arithmetic, and a ranking metric reads that noise as a ranking.
    captum accumulates ShapleyValues / ShapleyValueSampling in float32, divides
    Occlusion's window counts in float32 and fits Lime / KernelShap in float32: exact
    Shapley on tracr_lib/reverse scores AUROC 0.78 as returned and 0.46 with its ties
    restored. Even float64 differences F(x) - F(x') carry ~1e-16 noise where the true
    effect is 0 (feature_ablation on reverse: 0.79 raw, 0.63 snapped at 1e-9).
    Within each row the real input positions are sorted and every run of neighbours
    closer than `rel_tol * max |R|` (max over the case) is replaced by its mean, which
    keeps the row sum (efficiency). BOS/PAD entries stay 0 and take no part. The
    tolerance is a recorded setting (`tie_tolerance`); 0 turns snapping off.

    Returns:
        The snapped relevance and how many entries changed.
    """
    if rel_tol <= 0 or not np.any(relevance):
        return relevance, 0
    tol = rel_tol * float(np.abs(relevance).max())
    pos = np.arange(case.n_positions)
    valid_in = (pos[None, :] >= 1) & (pos[None, :] <= np.asarray(case.lengths)[:, None])  # [n, T]
    valid = np.broadcast_to(valid_in[:, None, :], relevance.shape).reshape(-1, case.n_positions)
    rows = np.where(valid, relevance.reshape(-1, case.n_positions), np.nan)
    order = np.argsort(rows, axis=1)  # NaN (BOS/PAD) last
    ordered = np.take_along_axis(rows, order, axis=1)
    new_run = np.ones_like(ordered, dtype=bool)
    new_run[:, 1:] = ~(np.diff(ordered, axis=1) < tol)  # NaN comparisons start a new run
    run = np.cumsum(new_run.ravel()) - 1
    finite = np.isfinite(ordered.ravel())
    sums = np.bincount(run[finite], weights=ordered.ravel()[finite], minlength=run[-1] + 1)
    counts = np.bincount(run[finite], minlength=run[-1] + 1)
    means = np.where(finite, sums[run] / np.maximum(counts[run], 1), 0.0).reshape(ordered.shape)
    snapped = np.empty_like(means)
    np.put_along_axis(snapped, order, means, axis=1)
    snapped = np.where(valid, snapped, 0.0).reshape(relevance.shape)
    return snapped, int(np.count_nonzero(snapped != relevance))


def _snapped_explanation(case: CompiledCase, relevance: np.ndarray, rel_tol: float, **diagnostics: Any) -> Explanation:
    """`_explanation` after `_snap_ties`, recording the absolute tolerance and how many values moved."""
    snapped, moved = _snap_ties(case, relevance, rel_tol)
    return _explanation(case, snapped, ties_snapped=moved, tie_tolerance_abs=rel_tol * float(np.abs(relevance).max()),
                        **diagnostics)  # fmt: skip


def _empty(case: CompiledCase) -> Explanation:
    """All-zero relevance for a case without any real output position."""
    n, t = case.tokens.shape
    return Explanation(token_relevance=np.zeros((n, t, t)), diagnostics={"zero_row_share": 0.0, "n_rows": 0})


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """captum samples from torch's global generator: seed it here and restore it afterwards."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _multi_output_attribute(case: CompiledCase, explainer: Any, seed: int, **kwargs: Any) -> np.ndarray:
    """Runs a captum perturbation method whose forward returns all T output scores per example.

    captum 0.9's FeatureAblation, Occlusion, ShapleyValueSampling and ShapleyValues
    accept a forward returning [batch, T] with `target=None` and attribute every output
    element separately; the result is [batch * T, T] (ablation family) or [batch, T, T]
    (Shapley family), reshaped here to [n, T_out, T_in] in float64.
    """
    import torch

    ids, base, cls = _example_tensors(case)
    n, t = ids.shape
    with _seeded(seed), torch.no_grad():
        attr = explainer.attribute(ids, baselines=base, target=None, additional_forward_args=(ids, cls), **kwargs)
    return attr.reshape(n, t, t).double().numpy()


@method("feature_ablation", family="attribution", kinds=("token_relevance",))
class FeatureAblation(Method):
    """captum `FeatureAblation`: one token at a time replaced by PAD.

    R[b, i, j] = F_bi(x) - F_bi(x with token j replaced by PAD), signed, F_bi the
    true-class logit (categorical) or the scalar read-out (numerical) at output position
    i. The forward returns every output position's score at once ([batch, T],
    `target=None`), so one captum call covers all rows; features are positions (captum's
    default mask, shared by the batch). Baseline "pad": every real token's baseline is
    PAD, BOS's is BOS and PAD's is PAD (so BOS and PAD columns are 0); keys are always
    masked by the ORIGINAL tokens, so ablation changes content, not which positions exist.

    Settings:
        baseline: "pad" (the only one).
        perturbations_per_eval: Positions ablated per forward (default 16: all of them, one
            forward of batch n * T).
        tie_tolerance: Entries of a row closer than this times max |R| are made equal
            (float64 rounding noise, see `_snap_ties`; default 1e-9).
    """

    defaults = {"baseline": "pad", "perturbations_per_eval": 16, "tie_tolerance": TIE_TOLERANCE_FLOAT64}

    def explain(self, case: CompiledCase, *, seed: int = 0) -> Explanation:
        """Attributes every real output position of every evaluation input.

        Args:
            case: The compiled case.
            seed: Unused (ablation is deterministic).

        Returns:
            An Explanation with signed token_relevance [n, T, T].
        """
        from captum.attr import FeatureAblation as CaptumFeatureAblation

        s = self.settings
        _check(s, "perturbations_per_eval")
        attr = _multi_output_attribute(case, CaptumFeatureAblation(_position_scores(case.model)), seed,
                                       perturbations_per_eval=s["perturbations_per_eval"])  # fmt: skip
        return _snapped_explanation(case, _multi_output_relevance(case, attr), s["tie_tolerance"])


@method("occlusion", family="attribution", kinds=("token_relevance",))
class Occlusion(Method):
    """captum `Occlusion`: a window of adjacent tokens replaced by PAD, sliding over the sequence.

    Each window's effect F_bi(x) - F_bi(x with the window replaced by PAD) is credited to
    every position in it, and captum averages over the windows covering a position
    (signed). With the default window of 2 and stride 1, windows run over all T positions,
    BOS and PAD included (their baseline is themselves): the window (BOS, token 1)
    ablates token 1 alone, (last token, PAD) the last token alone, so every token's
    score is the mean of its two windows. Same multi-output forward, PAD baseline and key
    mask as `feature_ablation`. captum returns float32 here (it divides by the window
    counts in float32).

    Settings:
        baseline: "pad".
        sliding_window: Window length in tokens (default 2).
        strides: Window step (default 1).
        perturbations_per_eval: Windows per forward (default 16: all of them).
        tie_tolerance: Entries of a row closer than this times max |R| are made equal
            (captum's float32 noise, see `_snap_ties`; default 1e-5).
    """

    defaults = {"baseline": "pad", "sliding_window": 2, "strides": 1, "perturbations_per_eval": 16,
                "tie_tolerance": TIE_TOLERANCE}  # fmt: skip

    def explain(self, case: CompiledCase, *, seed: int = 0) -> Explanation:
        """Attributes every real output position of every evaluation input.

        Args:
            case: The compiled case.
            seed: Unused (occlusion is deterministic).

        Returns:
            An Explanation with signed token_relevance [n, T, T].
        """
        from captum.attr import Occlusion as CaptumOcclusion

        s = self.settings
        _check(s, "sliding_window", "strides", "perturbations_per_eval")
        if s["sliding_window"] > case.n_positions:
            raise BadInputError(f"sliding_window {s['sliding_window']} exceeds the {case.n_positions} positions")
        attr = _multi_output_attribute(
            case, CaptumOcclusion(_position_scores(case.model)), seed,
            sliding_window_shapes=(s["sliding_window"],), strides=s["strides"],
            perturbations_per_eval=s["perturbations_per_eval"],
        )  # fmt: skip
        return _snapped_explanation(case, _multi_output_relevance(case, attr), s["tie_tolerance"])


@method("shapley_value_sampling", family="attribution", kinds=("token_relevance",))
class ShapleyValueSampling(Method):
    """captum `ShapleyValueSampling`: token Shapley values averaged over random orderings.

    Players are the real tokens of each input; a token outside a coalition holds PAD.
    BOS and PAD positions join a token's feature (their baseline is themselves: no-ops,
    no extra cost). Each sampled ordering adds the tokens one at a time to the all-PAD
    sequence and credits each with the change of every output position's score
    (multi-output forward [batch, T], `target=None`), so every row sums exactly to
    F(x) - F(all tokens PAD) whatever the samples (efficiency). All inputs share one
    call; each input's tokens are numbered by its own random relabelling so that
    captum's batch-wide orderings are independent across inputs (see `_shapley`).
    Signed. Orderings come from torch's generator seeded with `seed` (global state
    restored afterwards), relabellings from numpy's. captum accumulates in float32.

    Settings:
        baseline: "pad".
        n_samples: Orderings (default 64; summed |error| vs exact ~6-13% of summed |value|
            on reverse, sort and hist).
        perturbations_per_eval: Steps of one ordering per forward (default 16: a whole
            ordering in one forward of batch n * longest length).
        tie_tolerance: Entries of a row closer than this times max |R| are made equal
            (captum's float32 noise, see `_snap_ties`; default 1e-5).
    """

    defaults = {"baseline": "pad", "n_samples": 64, "perturbations_per_eval": 16, "tie_tolerance": TIE_TOLERANCE}

    def explain(self, case: CompiledCase, *, seed: int = 0) -> Explanation:
        """Attributes every real output position of every evaluation input.

        Args:
            case: The compiled case.
            seed: Seeds the sampled orderings.

        Returns:
            An Explanation with signed token_relevance [n, T, T].
        """
        from captum.attr import ShapleyValueSampling as CaptumShapleyValueSampling

        s = self.settings
        _check(s, "n_samples", "perturbations_per_eval")
        return _shapley(case, CaptumShapleyValueSampling, seed, s["tie_tolerance"], relabel=True,
                        n_samples=s["n_samples"],
                        perturbations_per_eval=s["perturbations_per_eval"])  # fmt: skip


@method("shapley_values", family="attribution", kinds=("token_relevance",))
class ShapleyValues(Method):
    """captum `ShapleyValues`: exact token Shapley values (every ordering enumerated).

    Same players, PAD baseline and multi-output forward as `shapley_value_sampling`, but
    all F! orderings of F = longest input length features are enumerated: F! forwards of
    batch n * F with the default `perturbations_per_eval` (120 forwards at F = 5, ~1 s).
    BOS and PAD positions join feature 0 instead of forming their own null feature: their
    Shapley value is exactly 0 either way, and a separate feature would multiply the cost
    by F + 1. When F exceeds `max_features` the case is refused with a BadInputError
    ("too long for exact Shapley"; the harness records the cell as failed with that
    reason) rather than silently sampled: `shapley_value_sampling` is the method for that.
    max_features = 6 real tokens matches 7 features counting the BOS/PAD group, 720
    orderings (~7 s); every registered case has max_seq_len <= 5.

    Settings:
        baseline: "pad".
        max_features: Longest input (in tokens) computed exactly (default 6).
        perturbations_per_eval: Steps of one ordering per forward (default 16).
        tie_tolerance: Entries of a row closer than this times max |R| are made equal
            (captum's float32 noise, see `_snap_ties`; default 1e-5).
    """

    defaults = {"baseline": "pad", "max_features": 6, "perturbations_per_eval": 16, "tie_tolerance": TIE_TOLERANCE}

    def explain(self, case: CompiledCase, *, seed: int = 0) -> Explanation:
        """Attributes every real output position of every evaluation input.

        Args:
            case: The compiled case.
            seed: Unused (exact Shapley values are deterministic).

        Returns:
            An Explanation with signed token_relevance [n, T, T].

        Raises:
            BadInputError: The longest input has more than `max_features` tokens.
        """
        from captum.attr import ShapleyValues as CaptumShapleyValues

        s = self.settings
        _check(s, "max_features", "perturbations_per_eval")
        n_features = int(np.max(case.lengths, initial=0))
        if n_features > s["max_features"]:
            raise BadInputError(
                f"{case.case.full_name} is too long for exact Shapley: {n_features} features > "
                f"max_features {s['max_features']} ({math.factorial(n_features)} orderings); "
                "use shapley_value_sampling"
            )
        return _shapley(case, CaptumShapleyValues, seed, s["tie_tolerance"], relabel=False,
                        perturbations_per_eval=s["perturbations_per_eval"])  # fmt: skip


def _shapley(
    case: CompiledCase, captum_cls: Any, seed: int, tie_tolerance: float, *, relabel: bool, **kwargs: Any
) -> Explanation:
    """captum ShapleyValues / ShapleyValueSampling over all inputs and output positions at once.

    With `relabel`, each input's tokens get their feature numbers from a random
    injection into 0..F-1 (numpy generator seeded with `seed`; BOS and PAD join the
    first token's feature). captum draws ONE ordering of the feature numbers per sample
    for the whole batch, so with the plain numbering every input sees the same token
    positions first and the Monte Carlo error pushes every input the same way: the
    benchmark mean over inputs then carries one draw's error, not an average. On
    tracr_lib/shuffle_dyck2 (64 samples, seeds 0-7) AUROC swung from 0.39 to 0.80 (sd
    0.16) with shared orderings, 0.54 to 0.65 (sd 0.03) relabelled. Relabelling makes
    the orderings of different inputs' positions independent. Shapley values do
    not depend on the labels, and unused numbers are empty (no-op) players.
    """
    import torch

    if not int(np.sum(case.lengths)):
        return _empty(case)
    features = _token_features(case.lengths, case.n_positions, null_feature=False)
    if relabel:
        n_features = int(np.max(case.lengths))
        labels = np.random.default_rng(seed).random((len(features), n_features)).argsort(axis=1)
        features = np.take_along_axis(labels, features, axis=1)
    mask = torch.from_numpy(features)
    attr = _multi_output_attribute(case, captum_cls(_position_scores(case.model)), seed, feature_mask=mask, **kwargs)
    return _snapped_explanation(case, _multi_output_relevance(case, attr), tie_tolerance,
                                n_features=int(np.max(case.lengths)))  # fmt: skip


def _row_forward(case: CompiledCase, *, memoize: bool) -> Callable[..., torch.Tensor]:
    """forward(sample_ids, row_input) -> flattened logits [k, T * n_out], keys of input `row_input`.

    With `memoize`, a sample is looked up instead of run. A perturbed sample of input b
    holds at every real position either b's token or PAD, so it is one of b's 2^(T-1)
    coalitions; all of them are run through the model once, in one batch (key mask of
    the original tokens, as everywhere here), and the forward captum calls picks each
    sample's row by its coalition code. The values are the model's own outputs; only
    repeated work goes (captum's Lime/KernelShap evaluate each (input, position) row
    separately, re-running the same few coalitions hundreds of times).
    """
    import torch

    model = case.model
    tokens = torch.from_numpy(np.asarray(case.tokens, dtype=np.int64))
    keys = model.key_mask(tokens)
    if not memoize:

        def forward(sample_ids: torch.Tensor, row_input: torch.Tensor) -> torch.Tensor:
            return model(sample_ids, keys[row_input]).flatten(1)

        return forward

    n, t = tokens.shape
    pad = int(case.weights.pad_id)
    bits = 2 ** torch.arange(t - 1, dtype=torch.int64)
    keep = (torch.arange(2 ** (t - 1))[:, None] // bits[None, :]) % 2 == 1  # [C, T - 1]
    ids = tokens[:, None, :].repeat(1, len(keep), 1)  # [n, C, T]
    ids[:, :, 1:] = torch.where(keep[None], ids[:, :, 1:], torch.full_like(ids[:, :, 1:], pad))
    with torch.no_grad():
        table = model(ids.reshape(-1, t), keys[:, None, :].expand(n, len(keep), t).reshape(-1, t))
    table = table.reshape(n, len(keep), -1)

    def lookup(sample_ids: torch.Tensor, row_input: torch.Tensor) -> torch.Tensor:
        return table[row_input, ((sample_ids[:, 1:] != pad).long() * bits).sum(-1)]

    return lookup


def _row_attributions(
    case: CompiledCase, seed: int, make: Callable[[Callable[..., torch.Tensor]], Any], settings: dict[str, Any]
) -> Explanation:
    """Runs a per-example captum surrogate (Lime, KernelShap) on every (input, output position) row.

    captum's Lime and KernelShap need one scalar per example (they fit one surrogate per
    example, looping over the batch inside captum), so each row is one (input b, output
    position i) pair, target = the flattened index of (i, true class) in the forward's
    logits. Rows are grouped by input length so each surrogate has exactly one
    interpretable feature per real token (BOS and PAD join feature 0, a no-op, so
    KernelShap's efficiency holds over the real tokens). A one-token input gets a second,
    null feature holding BOS and PAD instead: captum's KernelShap builds a NaN
    distribution for a single feature (with two, its fit is exact). One captum call per
    length (at most max_seq_len calls, never one per example); `perturbations_per_eval`
    batches a row's samples into one forward.
    """
    import torch

    tokens_rep, targets, index = expand_output_rows(case)
    if not targets:
        return _empty(case)
    n, t = case.tokens.shape
    n_out = int(case.weights.unembed.shape[1])
    # Memoise only when the coalition table is smaller than the samples it replaces.
    memoize = bool(settings["memoize_forward"]) and n * 2 ** (t - 1) <= len(targets) * settings["n_samples"]
    explainer = make(_row_forward(case, memoize=memoize))
    lengths = np.asarray(case.lengths)[index[0]]
    flat = torch.tensor([p * n_out + c for p, c in targets], dtype=torch.int64)
    single = (lengths == 1)[:, None]
    features = np.where(single, _token_features(lengths, t, null_feature=True),
                        _token_features(lengths, t, null_feature=False))  # fmt: skip
    row_input = torch.from_numpy(np.asarray(index[0], dtype=np.int64))
    scores = np.zeros((len(targets), t))
    with _seeded(seed), torch.no_grad(), warnings.catch_warnings():
        # captum warns that it fits one surrogate per example: that is the point here
        warnings.filterwarnings("ignore", message="You are providing multiple inputs for Lime")
        for length in np.unique(lengths):  # one call per input length
            rows = torch.from_numpy(np.flatnonzero(lengths == length))
            attr = explainer.attribute(
                torch.from_numpy(tokens_rep)[rows],
                baselines=torch.from_numpy(pad_baseline(case, tokens_rep))[rows],
                target=flat[rows],
                additional_forward_args=(row_input[rows],),
                feature_mask=torch.from_numpy(features)[rows],
                n_samples=settings["n_samples"],
                perturbations_per_eval=settings["perturbations_per_eval"],
            )
            scores[rows.numpy()] = attr.double().numpy()
    relevance = scatter_rows(case, scores, index)
    return _snapped_explanation(case, relevance, settings["tie_tolerance"], n_rows=len(targets), memoized=memoize)


def _bernoulli_sampler() -> Callable[..., Iterator[torch.Tensor]]:
    """Lime perturb_func: every feature kept with probability 1/2 (captum's default), drawn in blocks.

    The distribution of captum's `default_perturb_func`, drawn SAMPLE_BLOCK samples per
    call to torch's (seeded) generator instead of one call per sample.
    """
    import torch

    def sampler(_original: Any, **kwargs: Any) -> Iterator[torch.Tensor]:
        m = int(kwargs["num_interp_features"])
        while True:
            yield from torch.bernoulli(torch.full((SAMPLE_BLOCK, m), 0.5)).long().unsqueeze(1)

    return sampler


def _block_sampled_kernel_shap() -> Any:
    """captum KernelShap with its coalition sampler vectorised (same distribution).

    captum's `kernel_shap_perturb_generator` yields the full and the empty coalition,
    then for each sample a size k from its Shapley-kernel distribution and a uniformly
    random subset of that size, costing ~0.15 ms of Python per sample (more than the
    model). This subclass draws the same, SAMPLE_BLOCK samples at a time.
    """
    import torch
    from captum.attr import KernelShap as CaptumKernelShap

    class BlockSampledKernelShap(CaptumKernelShap):
        def kernel_shap_perturb_generator(self, original_inp: Any, **kwargs: Any) -> Iterator[torch.Tensor]:
            m = int(kwargs["num_interp_features"])
            yield torch.ones(1, m, dtype=torch.long)
            yield torch.zeros(1, m, dtype=torch.long)
            while True:
                k = kwargs["num_select_distribution"].sample((SAMPLE_BLOCK,))
                rank = torch.rand(SAMPLE_BLOCK, m).argsort(dim=1).argsort(dim=1)
                yield from (rank < k[:, None]).long().unsqueeze(1)

    return BlockSampledKernelShap


@method("lime", family="attribution", kinds=("token_relevance",))
class Lime(Method):
    """captum `Lime` on tokens: one weighted linear surrogate per (input, output position).

    Interpretable features are the real tokens (see `_row_attributions` for BOS, PAD and
    one-token inputs). A sample keeps each feature with probability 1/2
    (captum's default distribution, drawn in blocks) and puts PAD at the dropped tokens,
    under the key mask of the original tokens. The surrogate regresses the row's target
    score (true-class logit or scalar read-out at that output position) on the kept-token
    indicators: ridge regression (captum `SkLearnRidge(alpha)`, with intercept) by
    default, or ordinary least squares. Similarity is an exponential kernel on the
    fraction of real tokens kept, exp(-(1 - kept)^2 / (2 * kernel_width^2)): captum's
    defaults (Lasso with alpha 0.01, which often returns all-zero maps, and a cosine
    kernel on raw ids, meaningless for token ids) are not used. Relevance = the
    surrogate's coefficients, signed. captum fits one surrogate per row internally;
    rows go to captum one call per input length and `perturbations_per_eval` batches a
    row's samples into one forward. See `_row_forward` for `memoize_forward`.

    Settings:
        baseline: "pad".
        n_samples: Perturbed samples per row (default 128).
        perturbations_per_eval: Samples per forward (default 128: one forward per row).
        interpretable_model: "ridge" (default) or "linear_regression".
        alpha: Ridge penalty (default 1.0; unused by linear_regression).
        similarity: "exp_kernel_kept_fraction" (the only one).
        kernel_width: Width of the exponential kernel (default 0.5).
        memoize_forward: Look samples up in a table of every coalition's output when
            that is cheaper (default True; exact).
        tie_tolerance: Entries of a row closer than this times max |R| are made equal
            (captum's float32 noise, see `_snap_ties`; default 1e-5).
    """

    defaults = {"baseline": "pad", "n_samples": 128, "perturbations_per_eval": 128,
                "interpretable_model": "ridge", "alpha": 1.0, "similarity": "exp_kernel_kept_fraction",
                "kernel_width": 0.5, "memoize_forward": True, "tie_tolerance": TIE_TOLERANCE}  # fmt: skip

    def explain(self, case: CompiledCase, *, seed: int = 0) -> Explanation:
        """Attributes every real output position of every evaluation input.

        Args:
            case: The compiled case.
            seed: Seeds the sampled perturbations.

        Returns:
            An Explanation with signed token_relevance [n, T, T] and diagnostics.
        """
        from captum._utils.models.linear_model import SkLearnLinearRegression, SkLearnRidge
        from captum.attr import Lime as CaptumLime

        s = self.settings
        _check(s, "n_samples", "perturbations_per_eval")
        if s["interpretable_model"] not in LIME_MODELS:
            raise BadInputError(f"interpretable_model must be one of {LIME_MODELS}, got {s['interpretable_model']!r}")
        if s["similarity"] not in LIME_SIMILARITIES:
            raise BadInputError(f"similarity must be one of {LIME_SIMILARITIES}, got {s['similarity']!r}")
        if not float(s["kernel_width"]) > 0 or not float(s["alpha"]) >= 0:
            raise BadInputError(f"kernel_width must be > 0 and alpha >= 0, got {s['kernel_width']!r}, {s['alpha']!r}")
        width = float(s["kernel_width"])

        pad = int(case.weights.pad_id)

        def similarity(original: torch.Tensor, _perturbed: Any, interpretable: torch.Tensor, **_: Any) -> float:
            n_real = int((original[0, 1:] != pad).sum())  # real tokens are features 0..n_real - 1
            kept = interpretable[0, :n_real].sum().item() / n_real
            return math.exp(-((1.0 - kept) ** 2) / (2.0 * width**2))

        def make(forward: Callable[..., torch.Tensor]) -> Any:
            if s["interpretable_model"] == "ridge":
                surrogate = SkLearnRidge(alpha=float(s["alpha"]))
            else:
                surrogate = SkLearnLinearRegression()
            return CaptumLime(forward, interpretable_model=surrogate, similarity_func=similarity,
                              perturb_func=_bernoulli_sampler())  # fmt: skip

        return _row_attributions(case, seed, make, s)


@method("kernel_shap", family="attribution", kinds=("token_relevance",))
class KernelShap(Method):
    """captum `KernelShap`: Shapley values from a Shapley-kernel-weighted linear fit, per row.

    Same rows, features, PAD baseline and key mask as `lime`. captum samples coalitions
    by the Shapley kernel (vectorised here, same distribution), always includes the full
    and the empty coalition with weight 1e6 (so each row sums to F(x) - F(all tokens
    PAD) up to the float32 fit), and fits `SkLearnLinearRegression`. With at most 5
    tokens (32 coalitions), `n_samples` = 200 keeps the summed |error| vs exact Shapley
    to ~10-17% of the summed |value| on reverse, sort and hist. Signed.

    Settings:
        baseline: "pad".
        n_samples: Sampled coalitions per row, the two end points included (default 200).
        perturbations_per_eval: Samples per forward (default 200: one forward per row).
        memoize_forward: As in `lime` (default True; exact).
        tie_tolerance: Entries of a row closer than this times max |R| are made equal
            (captum's float32 noise, see `_snap_ties`; default 1e-5).
    """

    defaults = {"baseline": "pad", "n_samples": 200, "perturbations_per_eval": 200, "memoize_forward": True,
                "tie_tolerance": TIE_TOLERANCE}  # fmt: skip

    def explain(self, case: CompiledCase, *, seed: int = 0) -> Explanation:
        """Attributes every real output position of every evaluation input.

        Args:
            case: The compiled case.
            seed: Seeds the sampled coalitions.

        Returns:
            An Explanation with signed token_relevance [n, T, T] and diagnostics.
        """
        s = self.settings
        _check(s, "n_samples", "perturbations_per_eval")
        return _row_attributions(case, seed, _block_sampled_kernel_shap(), s)


@method("leave_one_out", family="attribution", kinds=("token_relevance",))
class LeaveOneOut(Method):
    """Leave-one-out by erasure: token j masked out as a key in every attention layer.

    R[b, i, j] = F_bi(x) - F_bi(x with key j masked), signed, F_bi as in
    `feature_ablation`. Positions stay fixed (nothing shifts, every positional embedding
    stays) and nothing replaces the token: no query can attend to it. Unlike PAD
    replacement this changes how many keys a query sees, so counting heads
    (SelectorWidth, e.g. tracr's `length`) count one token fewer. Position j still runs
    on its own token through the residual stream, so R[b, j, j] only measures what
    reaches j through attention. One forward over every (input, erased token) pair; no
    captum (captum has no key-masking ablation); deterministic.

    Settings:
        erase: "key_mask" (the only one).
        tie_tolerance: As in `feature_ablation` (default 1e-9).
    """

    defaults = {"erase": "key_mask", "tie_tolerance": TIE_TOLERANCE_FLOAT64}

    def explain(self, case: CompiledCase, *, seed: int = 0) -> Explanation:
        """Attributes every real output position of every evaluation input.

        Args:
            case: The compiled case.
            seed: Unused.

        Returns:
            An Explanation with signed token_relevance [n, T, T].
        """
        import torch

        s = self.settings
        _check(s)
        if s["erase"] not in ERASURES:
            raise BadInputError(f"erase must be one of {ERASURES}, got {s['erase']!r}")
        if not int(np.sum(case.lengths)):
            return _empty(case)
        ids, _, cls = _example_tensors(case)
        n, t = ids.shape
        lengths = np.asarray(case.lengths)
        b = np.repeat(np.arange(n), lengths)  # one row per (input b, erased position j)
        j = np.arange(len(b)) - np.repeat(np.cumsum(lengths) - lengths, lengths) + 1
        model = case.model
        keys = model.key_mask(ids)
        erased = keys[b].clone()
        erased[torch.arange(len(b)), torch.from_numpy(j)] = False
        with torch.no_grad():
            logits = model(torch.cat([ids, ids[b]]), torch.cat([keys, erased]))
        scores = logits.gather(-1, torch.cat([cls, cls[b]]).unsqueeze(-1)).squeeze(-1).numpy()
        attributions = np.zeros((n, t, t))
        attributions[b, :, j] = scores[:n][b] - scores[n:]
        return _snapped_explanation(case, _multi_output_relevance(case, attributions), s["tie_tolerance"],
                                    n_forward_rows=len(b) + n)  # fmt: skip
