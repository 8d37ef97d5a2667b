"""Scaling figure: how compile, ground truth and the main methods grow with max_seq_len and vocabulary size.

One parametrised program, tracr's `make_hist` (a categorical Select, a SelectorWidth
and its MLP), is built at each size as a fresh case and compiled without the on-disk
cache, so every stage really runs. Stages: `compile` is RASP -> tracr -> our weights,
components and torch runtime; `compile_verified` is the whole compile stage of an
uncached run (`compile_case(use_cache=False)`: compile, evaluation inputs, ground truth,
and the verification against RASP and tracr's JAX model, which jit-compiles tracr's model
once per input length); `ground_truth` is its truth part timed alone; each method is one
`explain` call on the case's evaluation inputs, as the harness makes it. `make_hist` is
the lib program that compiles and verifies at every size here (sort_unique, reverse and
shift_by leave the verification tolerances at length 12-16 or vocab 32). Growth is
summarised per stage by the slope of log seconds over log size (1 = linear). Timings are
single wall-clock measurements (best of 3 below 0.5 s): read the exponents, not the third
digit. No target: the figure reports and the README shows the table.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from interpbench.perf import figure

if TYPE_CHECKING:
    from interpbench.case import Case
    from interpbench.compiled import CompiledCase

PROGRAM = "make_hist"
METHODS = ("attention_last_layer", "attention_rollout", "saliency", "integrated_gradients", "feature_ablation",
           "head_program_synthesis")  # fmt: skip  # one or two per family: attention, gradient, perturbation, synthesis
STAGES = ("compile", "compile_verified", "ground_truth", *METHODS)
LENGTHS, FIXED_VOCAB = (4, 8, 12, 16), 8
VOCABS, FIXED_LENGTH = (4, 8, 16, 32), 8
QUICK_LENGTHS, QUICK_FIXED_VOCAB = (1, 2), 2
QUICK_VOCABS, QUICK_FIXED_LENGTH = (2, 3), 1
REPEAT_BELOW = 0.5  # seconds: a faster call is repeated and the best of 3 kept


def scaling_case(max_seq_len: int, vocab_size: int) -> Case:
    """`make_hist` over the tokens 1..vocab_size with inputs up to max_seq_len long (any input in the domain)."""
    from tracr.compiler import lib

    from interpbench.case import Case

    return Case(suite="scaling", name=f"hist_len{max_seq_len}_vocab{vocab_size}", program=lib.make_hist,
                vocab=tuple(range(1, vocab_size + 1)), max_seq_len=max_seq_len,
                description="Each position holds how often its token occurs in the input.",
                reference="tracr compiler/lib.py make_hist, sized for the scaling figure")  # fmt: skip


def seconds(fn: Callable[[], Any], repeat_below: float = REPEAT_BELOW) -> float:
    """Wall seconds of one call of `fn`; calls under `repeat_below` seconds are repeated, best of 3 kept."""
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
        if best >= repeat_below:
            break
    return best


def growth_exponent(sizes: Sequence[float], times: Sequence[float]) -> float:
    """Least-squares slope of log(time) over log(size): time ~ size ** exponent."""
    return float(np.polyfit(np.log(np.asarray(sizes, float)), np.log(np.asarray(times, float)), 1)[0])


def time_stages(case: Case, methods: Sequence[str]) -> tuple[dict[str, float], CompiledCase]:
    """Seconds of each stage on one case (compile uncached first), and the compiled case."""
    from interpbench import compile as stage
    from interpbench.compiled import compile_case
    from interpbench.method import get_method
    from interpbench.perf_truth import fast_ground_truth
    from interpbench.program import relabel
    from interpbench.runtime import build_runtime

    start = time.perf_counter()
    compiled = compile_case(case, use_cache=False)  # the compile stage of an uncached run, nothing on disk
    out = {"compile_verified": time.perf_counter() - start}

    def build() -> None:  # RASP -> tracr -> our weights and components -> our torch runtime
        stages = stage.rasp_to_stages(case)
        build_runtime(stage.stages_to_weights(stages, case))
        stage.stages_to_components(stages)

    out["compile"] = seconds(build)
    program, inputs = relabel(case.program()), compiled.inputs
    out["ground_truth"] = seconds(lambda: fast_ground_truth(case, program, inputs, compiled.truth))
    _ = compiled.model  # the runtime is built (and verified) by compile; here it is only re-attached
    for name in methods:
        adapter = get_method(name)()
        out[name] = seconds(lambda: adapter.explain(compiled, seed=0))
    return out, compiled


def measure_scaling(
    lengths: Sequence[int],
    fixed_vocab: int,
    vocabs: Sequence[int],
    fixed_length: int,
    methods: Sequence[str] = METHODS,
    *,
    warm_up: bool = True,
) -> dict[str, Any]:
    """Times every stage along both axes; each size is compiled and timed once (the shared one too).

    `warm_up` first runs every stage once untimed on a tiny case (imports, JAX's backend,
    captum), so the first timed size does not pay them.

    Returns:
        `axes`: {"max_seq_len" | "vocab_size": {"fixed", "sizes", "seconds": {stage: [s per size]},
        "exponents": {stage: slope}}} and `cases`: {case name: sizes, model shape, verification}.
    """
    sizes = {(n, fixed_vocab) for n in lengths} | {(fixed_length, v) for v in vocabs}
    if warm_up:
        time_stages(scaling_case(1, 2), methods)  # untimed: imports, JAX backend, captum
    timed: dict[tuple[int, int], dict[str, float]] = {}
    cases: dict[str, dict[str, Any]] = {}
    for n, v in sorted(sizes):
        timed[n, v], compiled = time_stages(scaling_case(n, v), methods)
        w = compiled.weights
        cases[compiled.case.full_name] = {
            "max_seq_len": compiled.case.max_seq_len, "vocab_size": len(compiled.case.vocab),
            "n_positions": compiled.n_positions, "n_inputs": len(compiled.tokens), "d_model": w.d_model,
            "n_layers": w.n_layers, "n_heads": w.n_heads, "input_tokens": len(w.input_tokens),
            "input_positions": int(compiled.lengths.sum()), "verified_positions": compiled.info["verified_positions"],
        }  # fmt: skip
    axes = {}
    along = {"max_seq_len": ([(n, fixed_vocab) for n in lengths], lengths, {"vocab_size": fixed_vocab}),
             "vocab_size": ([(fixed_length, v) for v in vocabs], vocabs, {"max_seq_len": fixed_length})}  # fmt: skip
    for axis, (points, ticks, fixed) in along.items():
        ticks = list(ticks)
        secs = {s: [timed[p][s] for p in points] for s in (*STAGES[:3], *methods)}
        axes[axis] = {"fixed": fixed, "sizes": ticks, "seconds": secs,
                      "exponents": {s: growth_exponent(ticks, t) for s, t in secs.items()}}  # fmt: skip
    return {"axes": axes, "cases": cases}


def scaling_markdown(details: dict[str, Any]) -> str:
    """The scaling table for the README: one row per stage, seconds per size, and the growth exponent."""
    lines = []
    for axis, label in (("max_seq_len", "max_seq_len"), ("vocab_size", "vocab")):
        data = details["axes"][axis]
        fixed = ", ".join(f"{k} {v}" for k, v in data["fixed"].items())
        head = [f"{label} {s}" for s in data["sizes"]]
        lines += [f"Seconds by {label} ({PROGRAM}, {fixed}):", "",
                  "| stage | " + " | ".join(head) + " | growth |",
                  "|---|" + "---:|" * (len(head) + 1)]  # fmt: skip
        for stage_name, secs in data["seconds"].items():
            cells = " | ".join(f"{t:.3g}" for t in secs)
            lines.append(f"| {stage_name} | {cells} | {label}^{data['exponents'][stage_name]:.1f} |")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


@figure("scaling_with_length_and_vocab", target=None, unit="s", higher_is_better=False)
def scaling_with_length_and_vocab(quick: bool) -> tuple[float, dict[str, Any]]:
    """Seconds of compile, ground truth and six methods as max_seq_len and vocab grow; value: the slowest cell.

    Details: per axis the seconds per stage and size and the fitted growth exponents, per
    case its sizes and verification; `markdown` is the README table.
    """
    if quick:
        details = measure_scaling(QUICK_LENGTHS, QUICK_FIXED_VOCAB, QUICK_VOCABS, QUICK_FIXED_LENGTH, warm_up=False)
    else:
        details = measure_scaling(LENGTHS, FIXED_VOCAB, VOCABS, FIXED_LENGTH)
    value = max(max(t) for axis in details["axes"].values() for t in axis["seconds"].values())
    return value, {**details, "program": PROGRAM, "stages": list(STAGES),
                   "aggregate": "max seconds over stages and sizes", "markdown": scaling_markdown(details),
                   "warmup": "none (quick)" if quick else "every stage once, untimed, at max_seq_len 1, vocab 2",
                   "timing": f"one call per cell; calls under {REPEAT_BELOW} s best of 3"}  # fmt: skip
