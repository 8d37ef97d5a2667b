"""Adversarial twins: function-preserving rewrites of a compiled model, each with its own truth.

A twin transform takes a verified `CompiledCase` and a seeded generator and returns a
`TwinModel`: new weights plus ground truth rewritten to the twin's internals. Token-level
truth never changes (the function does not); head patterns and components follow the
twin's heads and neurons. `make_twin` applies a transform deterministically and verifies
the result exactly (`verify_twin`) before anyone sees it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from interpbench.compiled import PATTERN_ATOL, CompiledCase
from interpbench.errors import VerificationError
from interpbench.ground_truth import GroundTruth
from interpbench.registry import Registry
from interpbench.weights import ModelWeights

LOGIT_ATOL = 1e-6  # every twin's read-out logits agree this closely with the base model's


class TwinNotApplicable(Exception):  # noqa: N818 (a verdict, not a failure)
    """A transform does not apply to a case; the message is the one-line reason."""


@dataclasses.dataclass(frozen=True)
class TwinModel:
    """What a transform returns.

    Attributes:
        weights: The twin's parameters.
        truth: Ground truth rewritten to the twin's internals (token level unchanged).
        notes: JSON-safe facts about the rewrite (which heads were split or added, ...).
    """

    weights: ModelWeights
    truth: GroundTruth
    notes: dict[str, Any]

    @property
    def residual_basis(self) -> np.ndarray:
        """[d_model, d_model]: row i is the direction `weights.residual_labels[i]` names."""
        w = self.weights
        return np.eye(w.d_model) if w.residual_basis is None else w.residual_basis


Transform = Callable[[CompiledCase, np.random.Generator], TwinModel]


@dataclasses.dataclass(frozen=True)
class Twin:
    """A registered transform.

    Attributes:
        name: Variant name (`rotated`, `split_head`, ...).
        fn: The transform.
        exact: Whether the twin is a reparametrisation (the same computation in other
            coordinates); False for twins that add or re-route mechanisms. Either way
            `make_twin` requires the read-out logits to agree within LOGIT_ATOL.
        reference: Where the idea comes from (paper).
        description: First line of the transform's docstring.
        everywhere: Whether the twin computes the base model's function on every token
            input (PAD substitutions and hidden keys included), as a weight-space
            transform does, or only on the case's domain, as a model built by hand for
            it does. Behaviour-only methods are skipped on the first kind only.
    """

    name: str
    fn: Transform
    exact: bool
    reference: str
    description: str
    everywhere: bool = True


TWINS: Registry[Twin] = Registry("twin")


def twin(name: str, *, exact: bool, reference: str, everywhere: bool = True) -> Callable[[Transform], Transform]:
    """Registers `fn(compiled, rng) -> TwinModel` as the twin `name` (see `Twin` for the flags)."""

    def register(fn: Transform) -> Transform:
        doc = (fn.__doc__ or "").strip().splitlines()
        TWINS.add(name, Twin(name, fn, exact, reference, doc[0] if doc else "", everywhere))
        return fn

    return register


def list_twins() -> list[Twin]:
    """Every registered twin, in registration order."""
    return [t for _, t in TWINS.items()]


def get_twin(name: str) -> Twin:
    """The twin called `name`; an unknown name raises UnknownNameError with suggestions."""
    return TWINS.get(name)


def make_twin(compiled: CompiledCase, variant: str, *, seed: int = 0) -> CompiledCase:
    """Builds, verifies and returns the `variant` twin of a compiled case.

    Deterministic: the transform draws from `np.random.default_rng(seed)` only.

    Raises:
        UnknownNameError: no twin has that name.
        TwinNotApplicable: the transform does not apply to this case (with the reason).
        VerificationError: the twin does not compute the base model's function.
    """
    spec = get_twin(variant)
    made = spec.fn(compiled, np.random.default_rng(seed))
    notes = {**made.notes, "seed": seed}
    candidate = dataclasses.replace(
        compiled,
        weights=made.weights,
        truth=made.truth,
        key=f"{compiled.key}:{variant}",
        info={**compiled.info, "variant": variant, "twin": notes, "n_layers": made.weights.n_layers,
              "n_heads": made.weights.n_heads, "d_model": made.weights.d_model},  # fmt: skip
    )
    figures = verify_twin(compiled, candidate)
    info = {**candidate.info, "twin_verification": {"exact": spec.exact, **figures}}
    return dataclasses.replace(candidate, info=info)


def verify_twin(
    base: CompiledCase, twin_case: CompiledCase, *, logit_atol: float | None = LOGIT_ATOL
) -> dict[str, Any]:
    """Checks that a twin computes the base model's function and has the attention its truth says.

    Decoded outputs must equal the base model's at every defined position of every
    evaluation input (numerical outputs within LOGIT_ATOL), and the read-out logits must
    agree within `logit_atol` at every real position (None: not checked, only recorded;
    `make_twin` always checks). Every head with a true pattern must produce it within
    PATTERN_ATOL, except heads under the reshuffled-attention rule, whose mean
    total-variation distance from the true pattern is recorded instead.

    Returns:
        The verification figures (JSON-safe).

    Raises:
        VerificationError: naming the case, the twin and the first failing input.
    """
    import torch

    name = f"{base.case.full_name} ({twin_case.info.get('variant', 'twin')})"
    tokens = torch.from_numpy(base.tokens)
    with torch.no_grad():
        ref = base.model(tokens).numpy()
    names = [f"blocks.{l}.attn.hook_pattern" for l in range(twin_case.weights.n_layers)]
    logits, cache = twin_case.model.run_with_cache(tokens, names)
    logits = logits.numpy()
    real = np.arange(base.n_positions)[None, :] <= base.lengths[:, None]
    err = np.where(real[:, :, None], np.abs(logits - ref), 0.0).max(axis=(1, 2))
    max_err = float(np.nan_to_num(err.max(), nan=np.inf))
    if logit_atol is not None and not max_err <= logit_atol:
        bad = int(np.nan_to_num(err, nan=np.inf).argmax())
        raise VerificationError(f"{name}: read-out differs from the base model's by {err[bad]:.2e} "
                                f"on input {base.inputs[bad]}")  # fmt: skip
    want, got = base.decode(ref), twin_case.decode(logits)
    tol = 0.0 if base.weights.categorical else LOGIT_ATOL
    defined = base.truth.valid_out
    wrong = defined & ~(np.abs(got - want) <= tol)  # NaN counts as wrong
    if wrong.any():
        b, p = np.argwhere(wrong)[0]
        raise VerificationError(f"{name}: decoded output differs from the base model's on input "
                                f"{base.inputs[b]} at position {p - 1}")  # fmt: skip
    truth = twin_case.truth
    reshuffled = set(twin_case.weights.reshuffled_heads)
    worst, moved = 0.0, {}
    for comp_name, pattern in truth.patterns.items():
        c = truth.component(comp_name)
        seen = cache[f"blocks.{c.layer}.attn.hook_pattern"][:, c.head].numpy()
        if (c.layer, c.head) in reshuffled:
            tv = 0.5 * np.abs(seen - pattern).sum(-1)
            moved[comp_name] = float(tv[truth.pattern_rows].mean())
            continue
        diff = np.where(truth.pattern_rows[:, :, None], np.abs(seen - pattern), 0.0).max(axis=(1, 2))
        worst = max(worst, float(np.nan_to_num(diff.max(), nan=np.inf)))
        if not diff.max() <= PATTERN_ATOL:
            bad = int(np.nan_to_num(diff, nan=np.inf).argmax())
            raise VerificationError(f"{name}: head {comp_name} ({c.node}) attention differs from its "
                                    f"true pattern by {diff[bad]:.2e} on input {base.inputs[bad]}")  # fmt: skip
    figures: dict[str, Any] = {
        "verified_positions": int(defined.sum()),
        "max_logit_error": max_err,
        "max_pattern_error": worst,
        "patterns_checked": len(truth.patterns) - len(moved),
    }
    if moved:
        figures["reshuffled_tv_from_truth"] = moved
    return figures


# Registration order is the order twins are listed and run.
from interpbench import twin_transforms, twin_decoys, twin_reshuffle, twin_dyck  # noqa: E402, F401, I001
