"""Perturbation relevance: signed score changes under token perturbations, with their rounding tolerance.

Every perturbation adapter reports a SIGNED relevance R[b, i, j] = F_bi(x) - F_bi(x perturbed
at j) (captum's sign: positive = token j supports the score), where F_bi is the score of output
position i of input b: the logit of its true class (`case.targets()`) for categorical
programs, the scalar read-out for numerical ones. R is returned as computed; the adapter
declares how much of it is rounding noise (`tie_tolerance`) and the scorer groups ties
(`interpbench.token_metrics.snap_ties`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from interpbench.attribution_rows import expand_output_rows, pad_baseline, scatter_rows
from interpbench.compiled import zero_row_share
from interpbench.errors import BadInputError
from interpbench.explanation import Explanation
from interpbench.method import Method
from interpbench.setting_checks import require_choice, require_positive_int

if TYPE_CHECKING:
    import torch

    from interpbench.compiled import CompiledCase

BASELINES = ("pad",)
# Declared on the Explanation, relative to max |R|: values of one row closer than this are
# rounding noise, tied by the scorer (token_metrics.snap_ties). Tokens with the same true
# effect come out a few ulps apart: exact Shapley on tracr_lib/reverse scores AUROC 0.78 as
# captum returns it and 0.46 with its ties restored; feature_ablation 0.79 and 0.63.
TIE_TOLERANCE = 1e-5  # captum's float32 accumulations (Shapley, Occlusion's window counts) and fits
TIE_TOLERANCE_FLOAT64 = 1e-9  # float64 forwards (feature_ablation, leave_one_out): ~1e-16 noise


class PerturbationMethod(Method):
    """Shared explain() of the perturbation adapters: check the settings, then `attribute`.

    `counts` names the settings that must be positive ints; `baseline` (when present)
    must be in BASELINES and `tie_tolerance` (when present) in [0, 1).
    """

    counts: ClassVar[tuple[str, ...]] = ()
    behaviour_only: ClassVar[bool] = True  # forwards on perturbed token inputs only

    def check_settings(self) -> None:
        """Raises BadInputError on a bad setting (before any work)."""
        s = self.settings
        if "baseline" in s:
            require_choice(s, "baseline", BASELINES)
        tol = s.get("tie_tolerance", 0.0)
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 <= tol < 1:
            raise BadInputError(f"tie_tolerance must be in [0, 1), got {s['tie_tolerance']!r}")
        require_positive_int(s, *self.counts)

    def attribute(self, case: CompiledCase, seed: int) -> Explanation:
        """The explanation of `case` (settings already checked)."""
        raise NotImplementedError

    def explain(self, case: CompiledCase, *, seed: int = 0) -> Explanation:
        """Attributes every real output position of every evaluation input.

        Args:
            case: The compiled case.
            seed: Seeds the sampled perturbations (unused by the deterministic methods).

        Returns:
            An Explanation with signed token_relevance [n, T, T] and diagnostics.
        """
        self.check_settings()
        return self.attribute(case, seed)


def position_scores(model: Any) -> Callable[..., torch.Tensor]:
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


def example_tensors(case: CompiledCase) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, PAD baseline, true class per position), each [n, T] int64."""
    import torch

    ids = torch.from_numpy(np.asarray(case.tokens, dtype=np.int64))
    base = torch.from_numpy(pad_baseline(case, case.tokens))
    cls = torch.from_numpy(np.asarray(case.targets(), dtype=np.int64))
    return ids, base, cls


def token_features(lengths: np.ndarray, t: int, *, null_feature: bool) -> np.ndarray:
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


def multi_output_relevance(case: CompiledCase, attributions: np.ndarray) -> np.ndarray:
    """[n, T_out, T_in] -> R with BOS/PAD output rows and BOS/PAD input columns zeroed."""
    _, _, index = expand_output_rows(case)
    b, i = index
    return scatter_rows(case, attributions[b, i], index)


def relevance_explanation(case: CompiledCase, relevance: np.ndarray, rel_tol: float, **diagnostics: Any) -> Explanation:
    """R as computed, declaring `rel_tol` as its tie tolerance, with `zero_row_share` and the absolute tolerance.

    The adapters' `tie_tolerance` setting is recorded in `params` and declared here on
    the Explanation; `tie_tolerance_abs` is what it amounts to on the input with the
    largest |R| (rel_tol * that maximum; the scorer uses each input's own maximum), for
    people reading the diagnostics.
    """
    return Explanation(token_relevance=relevance, tie_tolerance=rel_tol, diagnostics={
        "zero_row_share": zero_row_share(case, relevance),
        "tie_tolerance_abs": rel_tol * float(np.abs(relevance).max(initial=0.0)), **diagnostics,
    })  # fmt: skip


def empty_explanation(case: CompiledCase) -> Explanation:
    """All-zero relevance for a case without any real output position."""
    n, t = case.tokens.shape
    return Explanation(token_relevance=np.zeros((n, t, t)), diagnostics={"zero_row_share": 0.0, "n_rows": 0})


@contextmanager
def seeded_torch(seed: int) -> Iterator[None]:
    """captum samples from torch's global generator: seed it here and restore it afterwards."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def multi_output_attribute(case: CompiledCase, explainer: Any, seed: int, **kwargs: Any) -> np.ndarray:
    """Runs a captum perturbation method whose forward returns all T output scores per example.

    captum 0.9's FeatureAblation, Occlusion, ShapleyValueSampling and ShapleyValues
    accept a forward returning [batch, T] with `target=None` and attribute every output
    element separately; the result is [batch * T, T] (ablation family) or [batch, T, T]
    (Shapley family), reshaped here to [n, T_out, T_in] in float64.
    """
    import torch

    ids, base, cls = example_tensors(case)
    n, t = ids.shape
    with seeded_torch(seed), torch.no_grad():
        attr = explainer.attribute(ids, baselines=base, target=None, additional_forward_args=(ids, cls), **kwargs)
    return attr.reshape(n, t, t).double().numpy()
