"""Captum gradient attributions on the token embedding, one relevance row per output position."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from interpbench.compiled import zero_row_share  # also used by the other adapters
from interpbench.errors import BadInputError
from interpbench.explanation import Explanation
from interpbench.method import Method, method

if TYPE_CHECKING:
    import torch

    from interpbench.compiled import CompiledCase

BASELINES = ("pad",)
GSHAP_BASELINES = ("pad+random", "pad", "random")
REDUCTIONS = ("sum", "l2")


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


def embedding_forward(model: Any) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """forward_func(token_embeddings, ids) -> flattened logits [m, T * n_out] for captum.

    The plain captum methods (Saliency, InputXGradient, IntegratedGradients,
    GradientShap) attribute to the token embeddings [m, T, d_model], which they
    scale, interpolate or add noise to; `ids` (the original tokens, passed as
    `additional_forward_args`) only set the key mask, so which positions attend never
    changes, also for baselines and noisy samples. Positional embeddings are added
    inside the runtime and are not attributed. Flattened like `masked_forward`, so the
    per-row target is one int (`flat_targets`).
    """

    def forward(token_embeddings: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return model.forward_from_embeddings(token_embeddings, ids, model.key_mask(ids)).flatten(1)

    return forward


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


class EmbeddingAttribution(Method):
    """Shared explain() of the gradient family; subclasses implement `attribute`.

    Rows come from `expand_output_rows`, attributions [m, T, d_model] are reduced to
    one score per token with the `reduce` setting and placed with `scatter_rows`
    (BOS/PAD columns and rows are 0). Diagnostics always hold `n_rows` and
    `zero_row_share`, plus whatever `attribute` adds.
    """

    def check_settings(self) -> None:
        """Raises BadInputError on a bad setting (before any work)."""
        s = self.settings
        if s["reduce"] not in REDUCTIONS:
            raise BadInputError(f"reduce must be one of {REDUCTIONS}, got {s['reduce']!r}")
        if int(s["internal_batch_size"]) < 1:
            raise BadInputError(f"internal_batch_size must be at least 1, got {s['internal_batch_size']}")

    def attribute(self, case: CompiledCase, rows: Rows, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
        """Attributions [m, T, d_model] for every row, and extra diagnostics."""
        raise NotImplementedError

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


def _delta_diagnostics(deltas: list[np.ndarray]) -> dict[str, float]:
    delta_abs = np.abs(np.concatenate(deltas))
    return {"delta_abs_mean": float(delta_abs.mean()), "delta_abs_max": float(delta_abs.max())}


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

        sal = CaptumSaliency(embedding_forward(case.model))
        grads = np.concatenate([
            sal.attribute(rows.inputs(r), target=rows.target[r], abs=False,
                          additional_forward_args=(rows.ids[r],)).detach().numpy()
            for r in row_chunks(len(rows), int(self.settings["internal_batch_size"]))
        ])  # fmt: skip
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

        ixg = CaptumInputXGradient(embedding_forward(case.model))
        parts = [
            ixg.attribute(rows.inputs(r), target=rows.target[r],
                          additional_forward_args=(rows.ids[r],)).detach().numpy()
            for r in row_chunks(len(rows), int(self.settings["internal_batch_size"]))
        ]  # fmt: skip
        return np.concatenate(parts), {}


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

    def check_settings(self) -> None:
        """Adds: `baseline` must be in BASELINES."""
        if self.settings["baseline"] not in BASELINES:
            raise BadInputError(f"baseline must be one of {BASELINES}, got {self.settings['baseline']!r}")
        super().check_settings()

    def attribute(self, case: CompiledCase, rows: Rows, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
        """IG attributions [m, T, d_model] and the convergence delta."""
        import torch
        from captum.attr import IntegratedGradients as CaptumIntegratedGradients

        s = self.settings
        with torch.no_grad():
            base = case.model.embed(torch.from_numpy(pad_baseline(case, rows.ids.numpy())))
        ig = CaptumIntegratedGradients(embedding_forward(case.model))
        parts, deltas = [], []
        for r in row_chunks(len(rows), int(s["internal_batch_size"])):
            attr, delta = ig.attribute(
                rows.embeddings[r],
                baselines=base[r],
                target=rows.target[r],
                additional_forward_args=(rows.ids[r],),
                n_steps=int(s["n_steps"]),
                method=s["method"],
                internal_batch_size=int(s["internal_batch_size"]),
                return_convergence_delta=True,
            )
            parts.append(attr.detach().numpy())
            deltas.append(delta.detach().numpy())
        return np.concatenate(parts), _delta_diagnostics(deltas)


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
    """

    defaults = {"n_samples": 16, "stdevs": 0.0, "baseline": "pad+random", "n_random_baselines": 15,
                "reduce": "sum", "internal_batch_size": 512}  # fmt: skip

    def check_settings(self) -> None:
        """Adds: baseline choice, n_samples >= 1, stdevs >= 0, n_random_baselines >= 1 when used."""
        s = self.settings
        if s["baseline"] not in GSHAP_BASELINES:
            raise BadInputError(f"baseline must be one of {GSHAP_BASELINES}, got {s['baseline']!r}")
        if int(s["n_samples"]) < 1:
            raise BadInputError(f"n_samples must be at least 1, got {s['n_samples']}")
        if not float(s["stdevs"]) >= 0:
            raise BadInputError(f"stdevs must be >= 0, got {s['stdevs']}")
        if "random" in s["baseline"] and int(s["n_random_baselines"]) < 1:
            raise BadInputError(f"n_random_baselines must be at least 1, got {s['n_random_baselines']}")
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
        gs = CaptumGradientShap(embedding_forward(case.model))
        parts, deltas = [], []
        with seeded_global_rngs(seed):
            for r in row_chunks(len(rows), max(1, int(s["internal_batch_size"]) // n_samples)):
                attr, delta = gs.attribute(
                    rows.embeddings[r],
                    baselines=base,
                    target=rows.target[r],
                    additional_forward_args=(rows.ids[r],),
                    n_samples=n_samples,
                    stdevs=float(s["stdevs"]),
                    return_convergence_delta=True,
                )
                parts.append(attr.detach().numpy())
                deltas.append(delta.detach().numpy())
        return np.concatenate(parts), {"n_baselines": len(ids), **_delta_diagnostics(deltas)}


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
