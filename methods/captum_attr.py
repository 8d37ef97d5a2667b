"""Captum gradient attributions on the token embedding, one relevance row per output position."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from interpbench.attribution_rows import Rows, embedding_forward, pad_baseline, scatter_rows
from interpbench.compiled import zero_row_share
from interpbench.embedding_attribution import (
    EmbeddingAttribution,
    delta_summary,
    random_token_baselines,
    seeded_global_rngs,
    token_difference_basis,
)
from interpbench.errors import BadInputError
from interpbench.explanation import Explanation
from interpbench.method import Method, method
from interpbench.setting_checks import require_at_least_one, require_choice

if TYPE_CHECKING:
    from interpbench.compiled import CompiledCase

BASELINES = ("pad",)
GSHAP_BASELINES = ("pad+random", "pad", "random")


@method("saliency", family="attribution", kinds=("token_relevance",))
class Saliency(EmbeddingAttribution):
    """Saliency (captum `Saliency`): the gradient of each row's target logit w.r.t. the token embeddings.

    Every (input, real output position i) pair is one row with target `(i, class)`:
    the true class at i for categorical programs, column 0 for numerical ones. The
    gradient is taken at the input's token embeddings through `embedding_forward`
    (key mask from the original tokens; positional embeddings not attributed), over
    all d_model dims as captum does.

    Settings:
        abs: Take |gradient| per embedding dim, as captum does by default (True).
        reduce: "sum" (default; with `abs` this is the L1 norm over d_model) or "l2".
        internal_batch_size: At most this many rows per forward (default 512).

    Diagnostics: `n_rows`, `zero_row_share`, and two numbers on where the gradient
    lies. The gradient w.r.t. the embedding input includes directions no token
    substitution can move: `one` (every token writes it; MLPs read it as a bias) and
    the output variable's directions at j = i (the unembedding reads the residual at
    i directly), so saliency rows are almost never zero even where tracr's saturated
    attention (inverse temperature ~100) stops all gradient through queries and keys.
    `off_token_span_share` is the share of the squared gradient norm at real input
    positions outside the span of differences between real-token embeddings;
    `token_span_zero_row_share` is the share of defined rows whose gradient inside
    that span is zero at every real input position (the gradient a token
    substitution could see has vanished).
    """

    defaults = {"abs": True, "reduce": "sum", "internal_batch_size": 512}

    def check_settings(self) -> None:
        """Adds: `abs` must be a bool."""
        super().check_settings()
        if not isinstance(self.settings["abs"], bool):
            raise BadInputError(f"abs must be true or false, got {self.settings['abs']!r}")

    def attribute(self, case: CompiledCase, rows: Rows, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
        """Gradients [m, T, d_model] (absolute when `abs`) and where they lie.

        captum's Saliency runs with abs=False so the diagnostics can project the
        signed gradient; `abs` is then applied here (captum's abs is the same
        elementwise |.|).
        """
        from captum.attr import Saliency as CaptumSaliency

        grads = self.attribute_leaves(CaptumSaliency(embedding_forward(case.model)), rows, abs=False)
        b, _ = rows.index
        pos = np.arange(case.n_positions)
        real = (pos[None, :] >= 1) & (pos[None, :] <= np.asarray(case.lengths)[b][:, None])  # [m, T]
        inside = grads @ token_difference_basis(case)  # [m, T, r] coordinates in the span
        total_sq = float((grads**2).sum(-1)[real].sum())
        inside_sq = float((inside**2).sum(-1)[real].sum())
        in_span_rows = scatter_rows(case, np.sqrt((inside**2).sum(-1)), rows.index)
        diagnostics = {
            "off_token_span_share": (total_sq - inside_sq) / total_sq if total_sq > 0 else 0.0,
            "token_span_zero_row_share": zero_row_share(case, in_span_rows),
        }
        return (np.abs(grads) if self.settings["abs"] else grads), diagnostics


@method("input_x_gradient", family="attribution", kinds=("token_relevance",))
class InputXGradient(EmbeddingAttribution):
    """Input x gradient (captum `InputXGradient`) on the token embeddings.

    Per row (input b, output position i, target `(i, class)` as in `saliency`), the
    attribution of token j is `embed(x_j) * d logit / d embed(x_j)`, reduced over
    d_model with `reduce`. This is gradient x (input - 0): the zero vector is an
    implicit baseline, not a token.

    Settings:
        reduce: "sum" (default; signed) or "l2".
        internal_batch_size: At most this many rows per forward (default 512).

    Diagnostics: `n_rows`, `zero_row_share`.
    """

    defaults = {"reduce": "sum", "internal_batch_size": 512}

    def attribute(self, case: CompiledCase, rows: Rows, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
        """Embedding times gradient [m, T, d_model]."""
        from captum.attr import InputXGradient as CaptumInputXGradient

        return self.attribute_leaves(CaptumInputXGradient(embedding_forward(case.model)), rows), {}


@method("integrated_gradients", family="attribution", kinds=("token_relevance",))
class IntegratedGradients(EmbeddingAttribution):
    """Integrated gradients (captum `IntegratedGradients`) on the token embeddings.

    Every (input, real output position i) pair is one row with target `(i, class)`:
    the true output class at i for categorical programs, column 0 (the scalar) for
    numerical ones. IG integrates the gradient of that logit along the straight line
    from the baseline's token embeddings to the input's, through
    `embedding_forward` (positional embeddings are not attributed).

    Baseline "pad": the same sequence with every real non-BOS token replaced by the
    PAD token id. The key mask always comes from the original tokens (they are passed
    to the forward as an extra argument), so along the path only token content
    changes, never which positions are attended.

    Attributions [d_model] per token are reduced to one score with `reduce`: "sum"
    (signed; sums over a row to F(x) - F(baseline)) or "l2" (unsigned norm). Columns
    at BOS and PAD, and rows at BOS and PAD positions, are 0.

    Computed by `interpbench.path_attributions.integrated_gradients`: one forward and
    one backward per path point (input, step) for all of its output positions, on the
    part of the model the read-out depends on, with captum's path points, step sizes and
    delta; equal to captum's `IntegratedGradients` per row (tests: within 1e-10).

    Settings (captum names where captum has one):
        n_steps: Integration steps (default 32).
        internal_batch_size: At most this many path points (input, step) per forward
            and backward pass, to cap memory (default 512; the backward carries one
            cotangent per output position of each; results do not depend on it beyond
            rounding).
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

    def check_settings(self) -> None:
        """Adds: `baseline` must be in BASELINES."""
        require_choice(self.settings, "baseline", BASELINES)
        super().check_settings()

    def attribute(self, case: CompiledCase, rows: Rows, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
        """IG attributions [m, T, d_model] and the convergence delta."""
        from interpbench.path_attributions import integrated_gradients

        s = self.settings
        attributions, delta = integrated_gradients(case, int(s["n_steps"]), s["method"], int(s["internal_batch_size"]))
        return attributions.numpy(), delta_summary(delta.numpy())


@method("gradient_shap", family="attribution", kinds=("token_relevance",))
class GradientShap(EmbeddingAttribution):
    """GradientShap (captum `GradientShap`) on the token embeddings, with token baselines.

    Per row (input b, output position i, target `(i, class)` as in `saliency`), captum
    averages over `n_samples` draws: a baseline drawn uniformly from the baseline
    distribution, Gaussian noise (`stdevs`) added to the input embeddings, a point
    drawn uniformly on the line between them, and gradient x (noisy input - baseline)
    at that point. In expectation this is expected gradients (an IG averaged over
    baselines and path points).

    Baseline distribution (`baseline`): "pad+random" (default) is the PAD baseline of
    `integrated_gradients` (BOS, then PAD everywhere) plus `n_random_baselines`
    sequences of uniformly random input tokens after BOS, drawn with the seed; "pad" or
    "random" use one part only. The key mask always comes from the original tokens.

    Settings (captum names where captum has one):
        n_samples: Draws per row (default 16).
        stdevs: Standard deviation of the noise on the input embeddings (default 0.0,
            as captum; tracr embeddings are 0/1 one-hot blocks).
        baseline: "pad+random" (default), "pad" or "random".
        n_random_baselines: Random-token baselines in the distribution (default 15).
        reduce: "sum" (default; signed) or "l2".
        internal_batch_size: At most this many (row, sample) pairs per forward
            (default 512).

    Diagnostics: `n_rows`, `zero_row_share`, `n_baselines` (size of the
    distribution), `delta_abs_mean` / `delta_abs_max` (captum's per-sample
    convergence delta against each drawn baseline; only its expectation is 0 for a
    smooth model).

    Seeded: the random-token baselines come from `numpy.random.default_rng(seed)`,
    and captum's draws (np.random, torch.normal) run under global generators seeded
    with `seed` and restored afterwards. Results depend on `internal_batch_size`
    (the draws are consumed chunk by chunk).

    With `stdevs` 0 (the default) `interpbench.path_attributions.gradient_shap` makes
    captum's draws in captum's order and computes every (row, sample) gradient in
    batched passes on the part of the model the read-out depends on: equal to captum's
    `GradientShap` (tests: within 1e-10). With noise, captum itself runs (the noise
    moves directions the batched path carries no gradient for).
    """

    defaults = {"n_samples": 16, "stdevs": 0.0, "baseline": "pad+random", "n_random_baselines": 15,
                "reduce": "sum", "internal_batch_size": 512}  # fmt: skip

    def check_settings(self) -> None:
        """Adds: baseline choice, n_samples >= 1, stdevs >= 0, n_random_baselines >= 1 when used."""
        s = self.settings
        require_choice(s, "baseline", GSHAP_BASELINES)
        require_at_least_one(s, "n_samples")
        if not float(s["stdevs"]) >= 0:
            raise BadInputError(f"stdevs must be >= 0, got {s['stdevs']}")
        if "random" in s["baseline"]:
            require_at_least_one(s, "n_random_baselines")
        super().check_settings()

    def baseline_ids(self, case: CompiledCase, seed: int) -> np.ndarray:
        """The baseline distribution as token ids [k, T]."""
        s = self.settings
        parts = []
        if s["baseline"] in ("pad", "pad+random"):
            parts.append(pad_baseline(case, case.tokens[:1]))
        if s["baseline"] in ("random", "pad+random"):
            rng = np.random.default_rng(seed)
            parts.append(random_token_baselines(case, int(s["n_random_baselines"]), rng))
        return np.concatenate(parts)

    def attribute(self, case: CompiledCase, rows: Rows, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
        """GradientShap attributions [m, T, d_model] and the per-sample convergence delta."""
        import torch
        from captum.attr import GradientShap as CaptumGradientShap

        s = self.settings
        n_samples = int(s["n_samples"])
        ids = self.baseline_ids(case, seed)
        with torch.no_grad():
            base = case.model.embed(torch.from_numpy(ids))
        size = int(s["internal_batch_size"])
        chunk_rows = max(1, size // n_samples)
        if float(s["stdevs"]) == 0.0:
            from interpbench.path_attributions import gradient_shap

            with seeded_global_rngs(seed):
                attributions, delta = gradient_shap(case, rows, base, n_samples, chunk_rows, size)
            return attributions.numpy(), {"n_baselines": len(ids), **delta_summary(delta.numpy())}
        with seeded_global_rngs(seed):
            attributions, deltas = self.attribute_from_baselines(
                CaptumGradientShap(embedding_forward(case.model)), rows, chunk_rows, lambda r: base,
                n_samples=n_samples, stdevs=float(s["stdevs"]),
            )  # fmt: skip
        return attributions, {"n_baselines": len(ids), **deltas}


DEEPLIFT_REASON = (
    "not faithful on this runtime: captum DeepLift only rewrites nn.Module nonlinearities, so with the "
    "functional relu/softmax used here it is exactly gradient x (input - baseline); with one "
    "nn.ReLU/nn.Softmax module per use its softmax rule normalises over the whole batch tensor and the "
    "attention products q.k and pattern.v have no DeepLift rule, so summation-to-delta fails "
    "(mean |delta| 2.8 on tracr_lib/reverse)"
)


@method("deeplift", family="attribution", kinds=("token_relevance",))
class DeepLift(Method):
    """DeepLift (captum `DeepLift`): registered as unavailable, see `DEEPLIFT_REASON`.

    Checked on real compiles (PAD baseline, token embeddings): on the runtime as is,
    captum finds no supported nonlinearity module and returns gradient x (input -
    baseline) exactly (so on tracr_lib/hist, whose attention reads tokens, the delta
    is the whole F(x) - F(baseline)). With the runtime patched to one `nn.ReLU` per MLP
    and one `nn.Softmax` per attention, the convergence delta grows (mean 2.8 on
    reverse, 0.8 on sort, 2.2 on hist, where F(x) - F(baseline) is 1) and a row's
    attribution changes with the other rows in the batch, because captum's softmax
    rule subtracts the mean multiplier over the whole tensor. No small runtime change
    fixes the bilinear attention products.
    """

    defaults: ClassVar[dict[str, Any]] = {}

    @classmethod
    def unavailable(cls) -> str | None:
        """Always the reason above."""
        return DEEPLIFT_REASON

    def explain(self, case: CompiledCase, *, seed: int = 0) -> Explanation:
        """Refuses, quoting the reason."""
        raise BadInputError(f"deeplift is unavailable: {DEEPLIFT_REASON}")
