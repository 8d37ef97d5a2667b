"""Attribution figure: our batched `integrated_gradients` adapter vs a naive captum loop over single rows.

The naive loop is what a captum user writes first: one `IntegratedGradients.attribute`
call per (input, output position), on one example, with the target `(position, class)`
on the unflattened read-out. Same settings as the adapter's defaults (PAD baseline, key
mask of the original tokens, n_steps, Gauss-Legendre rule, sum over d_model), so it
computes the same relevance; `naive_integrated_gradients` is checked equal to the
adapter's within 1e-10 before timing. The adapter runs one forward and one backward per
path point (input, step) for all output positions at once, on the live part of the
model (`interpbench.path_attributions`); the loop runs one captum call per row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from interpbench.perf import best_of, figure, time_pair
from interpbench.perf_forward import FORWARD_CASES, QUICK_CASES, QUICK_INPUTS, subset

if TYPE_CHECKING:
    from interpbench.compiled import CompiledCase

EQUAL_ATOL = 1e-10
BATCH_SIZES = (128, 2048)  # path points per pass besides the default 512, for the plateau evidence


def adapter_relevance(compiled: CompiledCase, **settings: Any) -> np.ndarray:
    """Token relevance [n, T, T] from the registered `integrated_gradients` adapter (default settings unless given)."""
    from interpbench.method import get_method

    return get_method("integrated_gradients")(**settings).explain(compiled).token_relevance


def naive_integrated_gradients(compiled: CompiledCase) -> np.ndarray:
    """Token relevance [n, T, T] from one captum call per (input b, real output position i).

    Each call attributes one example [1, T, d_model] (its token embeddings), baseline
    the PAD sequence's embeddings, target `(i, class)` of the read-out [1, T, n_out]
    (class 0 for a numerical program), with the adapter's default n_steps and rule;
    the key mask comes from the original tokens, passed as an extra forward argument.
    Attributions are summed over d_model; BOS and PAD columns are 0, as in the adapter.
    """
    import torch
    from captum.attr import IntegratedGradients

    from interpbench.attribution_rows import pad_baseline
    from interpbench.method import get_method

    defaults = get_method("integrated_gradients").defaults
    model = compiled.model

    def forward(embeddings: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return model.forward_from_embeddings(embeddings, ids, model.key_mask(ids))

    ig = IntegratedGradients(forward)
    targets = compiled.targets()
    n, t = compiled.tokens.shape
    relevance = np.zeros((n, t, t))
    for b in range(n):
        ids = torch.from_numpy(compiled.tokens[b : b + 1])
        with torch.no_grad():
            x = model.embed(ids)
            base = model.embed(torch.from_numpy(pad_baseline(compiled, compiled.tokens[b : b + 1])))
        for i in range(1, int(compiled.lengths[b]) + 1):
            attr = ig.attribute(x, baselines=base, target=(i, int(targets[b, i])), additional_forward_args=(ids,),
                                n_steps=int(defaults["n_steps"]), method=defaults["method"])  # fmt: skip
            relevance[b, i] = attr.detach().numpy()[0].sum(-1)
    return np.where(compiled.input_mask()[:, None, :], relevance, 0.0)


@figure("ig_batched_vs_captum_loop", target=10, unit="x", higher_is_better=True)
def ig_batched_vs_captum_loop(quick: bool) -> tuple[float, dict[str, Any]]:
    """IntegratedGradients over all output positions: our batched adapter vs a captum loop over single rows.

    Value: the smallest ratio over the cases measured. Details also give the adapter's
    seconds at other `internal_batch_size` values (path points per pass): where they
    level off, the batched side is bound by arithmetic, not by per-pass overhead.
    """
    from interpbench.case import get_case
    from interpbench.compiled import compile_case
    from interpbench.errors import VerificationError

    names, n, repeats = (QUICK_CASES, QUICK_INPUTS, 1) if quick else (FORWARD_CASES, None, 3)
    per_case = {}
    for name in names:
        compiled = subset(compile_case(get_case(name)), n)
        fast_r, slow_r = adapter_relevance(compiled), naive_integrated_gradients(compiled)
        diff = float(np.abs(fast_r - slow_r).max())
        if not diff <= EQUAL_ATOL:  # NaN fails
            raise VerificationError(f"naive IG differs from the adapter by {diff:.2e} on {name}")
        timing = time_pair(lambda c=compiled: adapter_relevance(c), lambda c=compiled: naive_integrated_gradients(c),
                           repeats=repeats, warm_slow=False)  # fmt: skip
        per_case[name] = {**timing, "n_inputs": len(compiled.tokens), "rows": int(compiled.lengths.sum()),
                          "positions": compiled.n_positions, "d_model": compiled.weights.d_model,
                          "max_abs_diff": diff}  # fmt: skip
        if not quick:
            per_case[name]["fast_seconds_by_internal_batch_size"] = {
                size: best_of(lambda c=compiled, k=size: adapter_relevance(c, internal_batch_size=k), repeats)
                for size in BATCH_SIZES
            }  # fmt: skip
    value = min(c["ratio"] for c in per_case.values())
    from interpbench.method import get_method

    settings = get_method("integrated_gradients").defaults
    return value, {"cases": per_case, "aggregate": "min over cases", "settings": settings,
                   "warmup": "one untimed call of the fast side; the slow side's untimed pass is the equality check"}  # fmt: skip
