"""Captum surrogate-model attributions on token ids: Lime and KernelShap, one linear fit per output row."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from interpbench.attribution_rows import expand_output_rows, flat_targets, pad_baseline, scatter_rows
from interpbench.errors import BadInputError
from interpbench.explanation import Explanation
from interpbench.method import method
from interpbench.perturbation_relevance import (
    TIE_TOLERANCE,
    PerturbationMethod,
    empty_explanation,
    relevance_explanation,
    seeded_torch,
    token_features,
)
from interpbench.setting_checks import require_choice

if TYPE_CHECKING:
    import torch

    from interpbench.compiled import CompiledCase

LIME_MODELS = ("ridge", "linear_regression")
LIME_SIMILARITIES = ("exp_kernel_kept_fraction",)
SAMPLE_BLOCK = 256  # samples drawn per call by the Lime / KernelShap samplers


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
        return empty_explanation(case)
    n, t = case.tokens.shape
    # Memoise only when the coalition table is smaller than the samples it replaces.
    memoize = bool(settings["memoize_forward"]) and n * 2 ** (t - 1) <= len(targets) * settings["n_samples"]
    explainer = make(_row_forward(case, memoize=memoize))
    lengths = np.asarray(case.lengths)[index[0]]
    flat = flat_targets(targets, int(case.weights.unembed.shape[1]))
    single = (lengths == 1)[:, None]
    features = np.where(single, token_features(lengths, t, null_feature=True),
                        token_features(lengths, t, null_feature=False))  # fmt: skip
    row_input = torch.from_numpy(np.asarray(index[0], dtype=np.int64))
    scores = np.zeros((len(targets), t))
    with seeded_torch(seed), torch.no_grad(), warnings.catch_warnings():
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
    return relevance_explanation(case, relevance, settings["tie_tolerance"], n_rows=len(targets), memoized=memoize)


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


def from_interp_rep(curr_sample: torch.Tensor, original_inputs: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """captum's `default_from_interp_rep_transform` (mask * inputs + (1 - mask) * baselines) on token ids.

    On integer ids that is exactly one `torch.where`: fewer tensor operations per sample.
    """
    import torch

    return torch.where(curr_sample[0][kwargs["feature_mask"]].bool(), original_inputs, kwargs["baselines"])


def _block_sampled_kernel_shap() -> Any:
    """captum KernelShap with its coalition sampler vectorised (same distribution), cheaper per sample.

    captum's `kernel_shap_perturb_generator` yields the full and the empty coalition,
    then for each sample a size k from its Shapley-kernel distribution and a uniformly
    random subset of that size, costing ~0.15 ms of Python per sample (more than the
    model). This subclass draws the same, SAMPLE_BLOCK samples at a time; its per-sample
    transform (`from_interp_rep`) and kernel give captum's values with fewer tensor ops.
    """
    import torch
    from captum.attr import KernelShap as CaptumKernelShap

    class BlockSampledKernelShap(CaptumKernelShap):
        def __init__(self, forward_func: Callable[..., torch.Tensor]) -> None:
            super().__init__(forward_func)
            self.from_interp_rep_transform = from_interp_rep
            self._weights = {True: torch.tensor([float(self.inf_weight)]), False: torch.tensor([1.0])}

        def kernel_shap_similarity_kernel(self, _: Any, __: Any, interpretable_sample: torch.Tensor,
                                          **kwargs: Any) -> torch.Tensor:  # fmt: skip
            """captum's kernel (inf_weight at the two end points, else 1), its two tensors made once."""
            selected = int(interpretable_sample.sum(dim=1).item())
            return self._weights[selected in (0, kwargs["num_interp_features"])]

        def kernel_shap_perturb_generator(self, original_inp: Any, **kwargs: Any) -> Iterator[torch.Tensor]:
            m = int(kwargs["num_interp_features"])
            yield torch.ones(1, m, dtype=torch.long)
            yield torch.zeros(1, m, dtype=torch.long)
            while True:
                k = kwargs["num_select_distribution"].sample((SAMPLE_BLOCK,))
                rank = torch.rand(SAMPLE_BLOCK, m).argsort(dim=1).argsort(dim=1)
                yield from (rank < k[:, None]).long().unsqueeze(1)

    return BlockSampledKernelShap


class _SurrogateMethod(PerturbationMethod):
    """A per-row captum surrogate (Lime, KernelShap): subclasses build the captum explainer."""

    counts: ClassVar[tuple[str, ...]] = ("n_samples", "perturbations_per_eval")

    def explainer_factory(self, case: CompiledCase) -> Callable[[Callable[..., torch.Tensor]], Any]:
        """forward -> the captum explainer to run on every row."""
        raise NotImplementedError

    def attribute(self, case: CompiledCase, seed: int) -> Explanation:
        """R[b, i, j] from one surrogate per (input, output position) row (see `_row_attributions`)."""
        return _row_attributions(case, seed, self.explainer_factory(case), self.settings)


@method("lime", family="attribution", kinds=("token_relevance",))
class Lime(_SurrogateMethod):
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
        tie_tolerance: As in `occlusion` (captum's float32 fit; default 1e-5).
    """

    defaults = {"baseline": "pad", "n_samples": 128, "perturbations_per_eval": 128,
                "interpretable_model": "ridge", "alpha": 1.0, "similarity": "exp_kernel_kept_fraction",
                "kernel_width": 0.5, "memoize_forward": True, "tie_tolerance": TIE_TOLERANCE}  # fmt: skip

    def check_settings(self) -> None:
        """Adds: the surrogate model and similarity choices, kernel_width > 0 and alpha >= 0."""
        super().check_settings()
        s = self.settings
        require_choice(s, "interpretable_model", LIME_MODELS)
        require_choice(s, "similarity", LIME_SIMILARITIES)
        if not float(s["kernel_width"]) > 0 or not float(s["alpha"]) >= 0:
            raise BadInputError(f"kernel_width must be > 0 and alpha >= 0, got {s['kernel_width']!r}, {s['alpha']!r}")

    def explainer_factory(self, case: CompiledCase) -> Callable[[Callable[..., torch.Tensor]], Any]:
        """forward -> captum Lime with the configured surrogate, kernel and block sampler."""
        from captum._utils.models.linear_model import SkLearnLinearRegression, SkLearnRidge
        from captum.attr import Lime as CaptumLime

        s = self.settings
        width = float(s["kernel_width"])

        pad = int(case.weights.pad_id)

        last: list[Any] = [None, 0]  # the row captum is on (its original tokens), and its number of real tokens

        def similarity(original: torch.Tensor, _perturbed: Any, interpretable: torch.Tensor, **_: Any) -> float:
            if last[0] is not original:  # captum passes one row's tensor for all of its samples
                last[:] = [original, int((original[0, 1:] != pad).sum())]  # real tokens: features 0..n_real - 1
            n_real = last[1]
            kept = interpretable[0, :n_real].sum().item() / n_real
            return math.exp(-((1.0 - kept) ** 2) / (2.0 * width**2))

        def make(forward: Callable[..., torch.Tensor]) -> Any:
            if s["interpretable_model"] == "ridge":
                surrogate = SkLearnRidge(alpha=float(s["alpha"]))
            else:
                surrogate = SkLearnLinearRegression()
            lime = CaptumLime(forward, interpretable_model=surrogate, similarity_func=similarity,
                              perturb_func=_bernoulli_sampler())  # fmt: skip
            lime.from_interp_rep_transform = from_interp_rep
            return lime

        return make


@method("kernel_shap", family="attribution", kinds=("token_relevance",))
class KernelShap(_SurrogateMethod):
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
        tie_tolerance: As in `occlusion` (captum's float32 fit; default 1e-5).
    """

    defaults = {"baseline": "pad", "n_samples": 200, "perturbations_per_eval": 200, "memoize_forward": True,
                "tie_tolerance": TIE_TOLERANCE}  # fmt: skip

    def explainer_factory(self, case: CompiledCase) -> Callable[[Callable[..., torch.Tensor]], Any]:
        """forward -> captum KernelShap with the block sampler."""
        return _block_sampled_kernel_shap()
