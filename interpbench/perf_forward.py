"""Forward-pass figures: our batched runtime vs tracr's own per-example `apply` and vs a jitted JAX forward.

Both baselines run tracr's assembled haiku model with its own parameters, on the same
evaluation inputs as our runtime; their outputs are checked equal to ours before any
timing, so each ratio compares two ways of computing the same numbers. JAX is imported
here lazily, for the baselines only; the compile stage stays in `interpbench.compile`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from interpbench.perf import figure, time_pair

if TYPE_CHECKING:
    from interpbench.compile import TracrStages
    from interpbench.compiled import CompiledCase

FORWARD_CASES = ("tracr_lib/sort", "tracr_lib/reverse", "tracr_lib/frac_prevs")
QUICK_CASES = ("tracr_lib/frac_prevs",)
QUICK_INPUTS = 4
EQUAL_ATOL = 1e-6  # as the compile-time residual check


@functools.lru_cache(maxsize=8)
def case_and_stages(name: str) -> tuple[CompiledCase, TracrStages]:
    """The compiled case (from the compile cache) and tracr's stages for it (run once per process)."""
    from interpbench import compile as stage
    from interpbench.case import get_case
    from interpbench.compiled import compile_case

    compiled = compile_case(get_case(name))
    return compiled, stage.rasp_to_stages(compiled.case)


def subset(compiled: CompiledCase, n: int | None) -> CompiledCase:
    """The case restricted to its first `n` evaluation inputs (all when None)."""
    import dataclasses

    if n is None:
        return compiled
    return dataclasses.replace(compiled, tokens=compiled.tokens[:n], lengths=compiled.lengths[:n],
                               outputs=compiled.outputs[:n])  # fmt: skip


def runtime_logits(compiled: CompiledCase) -> np.ndarray:
    """Our runtime's read-out [n, T, n_out] on all evaluation inputs, one batched call."""
    import torch

    model = compiled.model  # built (and cached) outside inference mode
    with torch.inference_mode():
        return model(torch.from_numpy(compiled.tokens)).numpy()


def tracr_apply_one(stages: TracrStages, xs: Sequence[Any]) -> Any:
    """tracr's `AssembledTransformerModel.apply` on one input, as a tracr user calls it (BOS first)."""
    from interpbench.compile import BOS

    return stages.assembled.apply([BOS, *xs])


def tracr_apply_logits(stages: TracrStages, compiled: CompiledCase) -> list[np.ndarray]:
    """Read-out [length + 1, n_out] of each input from tracr's `apply`, one input at a time.

    `apply` returns the final residual stream (`transformer_output`) and the decoded
    argmax; the read-out is that residual times our unembedding (the projection on the
    output space's directions, which tracr's unembed applies before its argmax).
    """
    unembed = compiled.weights.unembed
    return [np.asarray(tracr_apply_one(stages, xs).transformer_output)[0] @ unembed for xs in compiled.inputs]


def jax_jit_forward(stages: TracrStages, pad_id: int) -> Callable[[np.ndarray], np.ndarray]:
    """tracr's haiku model, jitted, batched over padded inputs: ids [n, T] -> read-out [n, T, n_out].

    tracr's assembled `forward` does not mask PAD keys (its model gets no pad token), so
    a padded batch would differ from the per-input forward. This builds the same haiku
    model with `pad_token` set (tracr's own key mask) and the argmax off, and applies it
    with the assembled parameters: one XLA program for the whole batch, the fastest JAX
    path we know for these inputs.
    """
    import haiku as hk
    import jax
    import jax.numpy as jnp

    a = stages.assembled

    def forward(tokens: Any) -> Any:
        model = a.get_compiled_model()
        model.pad_token = pad_id
        model.use_unembed_argmax = False
        return model(tokens, use_dropout=False).unembedded_output

    jitted = jax.jit(hk.without_apply_rng(hk.transform(forward)).apply)
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype=jnp.float64), a.params)
    n_out = int(stages_n_out(stages))

    def run(tokens: np.ndarray) -> np.ndarray:
        out = np.asarray(jitted(params, jnp.asarray(tokens)))
        return out.reshape(*tokens.shape, n_out)

    return run


def stages_n_out(stages: TracrStages) -> int:
    """Width of the read-out: the output space's size (1 for a numerical program)."""
    from tracr.compiler import nodes

    return len(stages.sink[nodes.OUTPUT_BASIS])


def max_diff_apply(compiled: CompiledCase, per_example: list[np.ndarray], ours: np.ndarray) -> float:
    """Largest |tracr apply - ours| over BOS and the real positions of every input."""
    return max(float(np.abs(ref - ours[b, : n + 1]).max()) for b, (ref, n) in
               enumerate(zip(per_example, compiled.lengths.tolist())))  # fmt: skip


def max_diff_padded(compiled: CompiledCase, theirs: np.ndarray, ours: np.ndarray) -> float:
    """Largest |theirs - ours| over BOS and the real positions (PAD positions carry no output)."""
    keep = compiled.input_mask()
    keep[:, 0] = True
    return float(np.abs(theirs - ours)[keep].max())


def _check(diff: float, what: str, name: str) -> None:
    """Refuses to time two sides that do not compute the same numbers."""
    from interpbench.errors import VerificationError

    if not diff <= EQUAL_ATOL:  # NaN fails
        raise VerificationError(f"{what} differs from our runtime by {diff:.2e} on {name}; the ratio would be meaningless")


def _size(compiled: CompiledCase) -> dict[str, Any]:
    """The batch and model size, and which of the runtime's fast paths runs the batch (no gradient)."""
    from interpbench.runtime_numpy import fits_numpy

    w, fast = compiled.weights, compiled.model.fast_path()
    numpy = fast is not None and fits_numpy(compiled.tokens.size, fast.widest)
    return {"n_inputs": len(compiled.tokens), "positions": compiled.n_positions, "d_model": w.d_model,
            "n_layers": w.n_layers, "n_heads": w.n_heads, "runtime_path": "numpy" if numpy else "torch fused"}  # fmt: skip


def _cases(quick: bool) -> tuple[tuple[str, ...], int | None, int]:
    """(case names, inputs per case or None for all, repetitions)."""
    return (QUICK_CASES, QUICK_INPUTS, 1) if quick else (FORWARD_CASES, None, 3)


@figure("forward_vs_tracr_apply", target=1000, unit="x", higher_is_better=True)
def forward_vs_tracr_apply(quick: bool) -> tuple[float, dict[str, Any]]:
    """Our runtime, one batched call over the evaluation inputs, vs tracr's `apply` one input at a time.

    Both sides produce decoded outputs (ours: batched read-out, then argmax or the
    scalar; tracr: `apply(...).decoded`). The slow side is warmed up by the equality
    check, one `apply` on every input (JAX compiles each primitive once per shape).
    Our side is `compiled.model` as the harness calls it: no hook attached, so its
    fused fast path. Value: the smallest ratio over the cases measured.
    """
    names, n, repeats = _cases(quick)
    per_case = {}
    for name in names:
        full, stages = case_and_stages(name)
        compiled = subset(full, n)
        ours = runtime_logits(compiled)
        diff = max_diff_apply(compiled, tracr_apply_logits(stages, compiled), ours)  # also the slow warm-up
        _check(diff, "tracr apply", name)

        def fast(compiled: CompiledCase = compiled) -> np.ndarray:
            return compiled.decode(runtime_logits(compiled))

        def slow(inputs: list[list[Any]] = compiled.inputs, stages: TracrStages = stages) -> list[Any]:
            return [tracr_apply_one(stages, xs).decoded for xs in inputs]

        timing = time_pair(fast, slow, repeats=repeats, fast_number=20, warm_slow=False)
        per_case[name] = {**timing, **_size(compiled), "max_abs_diff": diff}
    value = min(c["ratio"] for c in per_case.values())
    return value, {"cases": per_case, "aggregate": "min over cases",
                   "warmup": "one untimed call of the fast side; the slow side's untimed pass is the equality check (apply on every input)"}  # fmt: skip


@figure("forward_vs_jax_jit", target=1.0, unit="x", higher_is_better=True)
def forward_vs_jax_jit(quick: bool) -> tuple[float, dict[str, Any]]:
    """Our runtime vs tracr's haiku model under `jax.jit`, both one batched call over the padded evaluation inputs.

    Both return the read-out [n, T, n_out] as a numpy array. The JAX side is compiled
    (jit warm-up) before timing. Value: the smallest ratio over the cases measured;
    details also give the ratio at 512 rows (the batch the attribution methods use) and
    the runtime's hooked path (a no-op hook attached) timed against its fast path.
    """
    names, n, repeats = _cases(quick)
    repeats = max(repeats, 5) if not quick else 1
    per_case = {}
    for name in names:
        full, stages = case_and_stages(name)
        compiled = subset(full, n)
        jitted = jax_jit_forward(stages, compiled.weights.pad_id)
        ours = runtime_logits(compiled)
        diff = max_diff_padded(compiled, jitted(compiled.tokens), ours)
        _check(diff, "jax.jit forward", name)
        timing = time_pair(lambda c=compiled: runtime_logits(c), lambda c=compiled, f=jitted: f(c.tokens),
                           repeats=repeats, fast_number=20, slow_number=20)  # fmt: skip
        record = {**timing, **_size(compiled), "max_abs_diff": diff, **_hooked_speedup(compiled, ours, repeats)}
        if not quick:
            big = subset(full, None)
            reps = -(-512 // len(big.tokens))
            big = _tiled(big, reps, 512)
            t512 = time_pair(lambda c=big: runtime_logits(c), lambda c=big, f=jitted: f(c.tokens),
                             repeats=repeats, fast_number=5, slow_number=5)  # fmt: skip
            record["ratio_at_512_rows"] = t512["ratio"]
            record["runtime_path_at_512_rows"] = _size(big)["runtime_path"]
            record["seconds_at_512_rows"] = {"fast": t512["fast_seconds"], "slow": t512["slow_seconds"]}
        per_case[name] = record
    value = min(c["ratio"] for c in per_case.values())
    return value, {"cases": per_case, "aggregate": "min over cases",
                   "warmup": "one untimed call of each side (the jax.jit compile)"}  # fmt: skip


def hooked_logits(compiled: CompiledCase) -> np.ndarray:
    """The runtime's read-out through its hooked modules (a no-op hook attached), for timing next to the fast path."""
    import torch

    model = compiled.model
    with torch.inference_mode(), model.hooks({"hook_logits": lambda _x: None}):
        return model(torch.from_numpy(compiled.tokens)).numpy()


def _hooked_speedup(compiled: CompiledCase, ours: np.ndarray, repeats: int) -> dict[str, Any]:
    """How much faster the runtime's fast path is than its hooked path on the same batch (evidence only)."""
    diff = max_diff_padded(compiled, hooked_logits(compiled), ours)
    _check(diff, "the hooked path", compiled.case.full_name)
    t = time_pair(lambda: runtime_logits(compiled), lambda: hooked_logits(compiled), repeats=repeats,
                  fast_number=20, slow_number=20)  # fmt: skip
    return {"hooked_seconds": t["slow_seconds"], "fast_path_speedup_over_hooked": t["ratio"]}


def _tiled(compiled: CompiledCase, reps: int, rows: int) -> CompiledCase:
    """The evaluation inputs repeated to `rows` rows (a bigger batch of the same inputs)."""
    import dataclasses

    return dataclasses.replace(
        compiled,
        tokens=np.tile(compiled.tokens, (reps, 1))[:rows],
        lengths=np.tile(compiled.lengths, reps)[:rows],
        outputs=np.tile(compiled.outputs, (reps, 1))[:rows],
    )
