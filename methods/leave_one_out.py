"""Leave-one-out by key erasure: each token masked out as a key in every attention layer."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from interpbench.explanation import Explanation
from interpbench.method import method
from interpbench.perturbation_relevance import (
    TIE_TOLERANCE_FLOAT64,
    PerturbationMethod,
    empty_explanation,
    example_tensors,
    multi_output_relevance,
    relevance_explanation,
)
from interpbench.setting_checks import require_choice

if TYPE_CHECKING:
    from interpbench.compiled import CompiledCase

ERASURES = ("key_mask",)


@method("leave_one_out", family="attribution", kinds=("token_relevance",))
class LeaveOneOut(PerturbationMethod):
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

    def check_settings(self) -> None:
        """Adds: `erase` must be in ERASURES."""
        super().check_settings()
        require_choice(self.settings, "erase", ERASURES)

    def attribute(self, case: CompiledCase, seed: int) -> Explanation:
        """R[b, i, j] from one forward over every (input, erased key) pair; `seed` is unused."""
        import torch

        s = self.settings
        if not int(np.sum(case.lengths)):
            return empty_explanation(case)
        ids, _, cls = example_tensors(case)
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
        return relevance_explanation(case, multi_output_relevance(case, attributions), s["tie_tolerance"],
                                   n_forward_rows=len(b) + n)  # fmt: skip
