"""Ground-truth figure: `compute_ground_truth` vs a naive loop of plain RASP evaluations, one per substitution.

Token-level truth is defined by enumeration (every in-domain single-token substitution
of every input), so both sides evaluate the same substitutions. The naive side is what
a plain user writes: tracr's stock evaluator (`rasp.evaluate`) once per substituted
input and once per head selector. Ours evaluates each distinct sequence once, all
sequences of one length in one batch (`interpbench.rasp_batch`: a function or predicate
is called once per distinct value, selectors are numpy arrays), and derives relevance and
head patterns from that one pass. Both give equal arrays (checked before timing). The
target is 2x: the production path must be clearly cheaper than the plain definition
(masks, padding, the domain filter and the pattern bookkeeping included); the truth is
then cached with the compiled case, so it is paid once per content key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from interpbench.perf import figure, time_pair
from interpbench.perf_forward import FORWARD_CASES, QUICK_CASES, QUICK_INPUTS

if TYPE_CHECKING:
    from interpbench.case import Case
    from interpbench.components import Component
    from interpbench.ground_truth import GroundTruth

ARRAYS = ("relevance", "graded", "valid_in", "valid_out", "pattern_rows")


def naive_ground_truth(
    case: Case,
    program: Any,
    inputs: Sequence[Sequence[Any]],
    components: Sequence[Component],
    *,
    by_sequence: bool = False,
) -> dict[str, np.ndarray]:
    """G, Gg, masks and head patterns with one plain `rasp.evaluate` per (substituted) input and selector.

    Args:
        case: The case (vocab, length, domain).
        program: Its relabelled RASP program.
        inputs: The inputs to derive truth for.
        components: The model's components (which heads carry a true pattern).
        by_sequence: Evaluate each distinct input sequence once per call (a dict keyed
            by the sequence): substitutions of different inputs often coincide. The
            figure times this as evidence of what such a cache would give.

    Returns:
        The arrays of `GroundTruth.arrays()` (patterns as `pattern.{head}`).
    """
    from tracr.rasp import rasp

    seen: dict[tuple[Any, ...], list[Any]] = {}

    def run(xs: list[Any]) -> Any:
        if not by_sequence:
            return rasp.evaluate(program, xs)
        key = tuple(xs)
        if key not in seen:
            seen[key] = rasp.evaluate(program, xs)
        return seen[key]

    from interpbench.ground_truth import same_value
    from interpbench.program import walk

    n, t = len(inputs), case.max_seq_len + 1
    out = {"relevance": np.zeros((n, t, t), np.int8), "graded": np.zeros((n, t, t)),
           "valid_in": np.zeros((n, t), bool), "valid_out": np.zeros((n, t), bool),
           "pattern_rows": np.zeros((n, t), bool)}  # fmt: skip
    exprs = {e.label: e for e in walk(program)}
    heads = [c for c in components if c.kind == "head" and c.role in ("aggregate", "selector_width")]
    for c in heads:
        out[f"pattern.{c.name}"] = np.zeros((n, t, t))
    for b, xs in enumerate(inputs):
        xs, k = list(xs), len(inputs[b])
        base = run(xs)
        out["valid_in"][b, 1 : k + 1] = out["pattern_rows"][b, 1 : k + 1] = True
        out["valid_out"][b, 1 : k + 1] = [v is not None for v in base]
        for j in range(k):
            changed, count = np.zeros(k), 0
            for v in case.domain.tokens(case.vocab):
                alt = xs[:j] + [v] + xs[j + 1 :]
                if v == xs[j] or not case.domain.contains(alt, case.vocab, case.max_seq_len):
                    continue
                count += 1
                changed += [not same_value(o, p) for o, p in zip(run(alt), base)]
            if count:
                rows = out["valid_out"][b, 1 : k + 1]
                out["graded"][b, 1 : k + 1, j + 1] = np.where(rows, changed / count, 0.0)
                out["relevance"][b, 1 : k + 1, j + 1] = rows & (changed > 0)
        for c in heads:
            m = np.zeros((t, t))
            m[1 : k + 1, 1 : k + 1] = np.asarray(rasp.evaluate(exprs[c.node].selector, xs), dtype=float)
            if case.causal:
                m = np.tril(m)
            m[1 : k + 1, 0] = 1.0 if c.role == "selector_width" else m[1 : k + 1].sum(1) == 0
            sums = m.sum(1, keepdims=True)
            out[f"pattern.{c.name}"][b] = np.divide(m, sums, out=np.zeros_like(m), where=sums > 0)
    return out


def fast_ground_truth(case: Case, program: Any, inputs: Sequence[Sequence[Any]], like: GroundTruth) -> GroundTruth:
    """`compute_ground_truth` as the compile stage calls it, with `like`'s components, edges and graph."""
    from interpbench.ground_truth import compute_ground_truth

    return compute_ground_truth(case, program, inputs, like.components, like.edges, like.program_graph)


def max_difference(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """Largest absolute difference over arrays of the same names and shapes (inf if they do not match)."""
    if set(a) != set(b) or any(a[k].shape != b[k].shape for k in a):
        return float("inf")
    return max(float(np.abs(a[k].astype(float) - b[k].astype(float)).max(initial=0.0)) for k in a)


@figure("ground_truth_vs_naive_rasp", target=2.0, unit="x", higher_is_better=True)
def ground_truth_vs_naive_rasp(quick: bool) -> tuple[float, dict[str, Any]]:
    """Ground truth (all levels) on the evaluation inputs: `compute_ground_truth` vs plain RASP per substitution.

    Value: the smallest ratio over the cases measured. Details also give
    `ratio_if_sequence_cached`: the plain loop over the same loop evaluating each
    distinct sequence once (`naive_ground_truth(by_sequence=True)`), what a cache keyed
    by the input sequence would buy.
    """
    from interpbench.case import get_case
    from interpbench.compiled import compile_case
    from interpbench.errors import VerificationError
    from interpbench.ground_truth import Substitutions
    from interpbench.program import relabel

    names, n, repeats = (QUICK_CASES, QUICK_INPUTS, 1) if quick else (FORWARD_CASES, None, 3)
    per_case = {}
    for name in names:
        compiled = compile_case(get_case(name))
        case, truth = compiled.case, compiled.truth
        program, inputs = relabel(case.program()), compiled.inputs[:n]
        fast = fast_ground_truth(case, program, inputs, truth).arrays()
        slow = naive_ground_truth(case, program, inputs, truth.components)
        diff = max_difference(fast, slow)
        if not diff <= 0.0:
            raise VerificationError(f"naive ground truth differs from compute_ground_truth by {diff:.2e} on {name}")
        cached = {k: v[: len(inputs)] for k, v in truth.arrays().items()}
        timing = time_pair(lambda: fast_ground_truth(case, program, inputs, truth),
                           lambda: naive_ground_truth(case, program, inputs, truth.components),
                           repeats=repeats, warm_slow=False)  # fmt: skip
        cached_run = time_pair(lambda: naive_ground_truth(case, program, inputs, truth.components, by_sequence=True),
                               lambda: naive_ground_truth(case, program, inputs, truth.components),
                               repeats=repeats)  # fmt: skip
        subs = Substitutions.enumerate(case, inputs)
        per_case[name] = {**timing, "ratio_if_sequence_cached": cached_run["ratio"], "n_inputs": len(inputs),
                          "alphabet": len(case.domain.tokens(case.vocab)), "n_substitutions": len(subs.rows),
                          "distinct_sequences": len(subs.sequences),
                          "max_seq_len": case.max_seq_len, "n_heads_with_truth": len(truth.patterns),
                          "max_abs_diff": diff, "equals_cached_truth": max_difference(fast, cached) == 0.0}  # fmt: skip
    value = min(c["ratio"] for c in per_case.values())
    return value, {"cases": per_case, "aggregate": "min over cases",
                   "target_reason": "truth is exhaustive enumeration, so both sides evaluate the same "
                                    "substitutions; batching them must make ours clearly cheaper than the plain loop",
                   "warmup": "one untimed call of the fast side; "
                             "the slow side's untimed pass is the equality check"}  # fmt: skip
