"""CompiledCase: a verified model, its evaluation inputs and outputs, and its ground truth.

`compile_case` runs the compile stage once per content key and caches the result as
npz + JSON; later loads never import JAX or tracr's compiler.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from interpbench.case import Case
from interpbench.errors import VerificationError
from interpbench.ground_truth import GroundTruth
from interpbench.storage import atomic_write_bytes, content_hash, jsonable, npz_bytes, read_npz
from interpbench.weights import ModelWeights

FORMAT_VERSION = 2
RESIDUAL_ATOL = 1e-6
NUMERIC_OUTPUT_ATOL = 1e-4  # numerical read-outs are real numbers; tracr's numerical MLPs approximate
PATTERN_ATOL = 1e-4  # attention is a softmax at inverse temperature ~100, not a hard max
DATA_SEED = 0


@dataclasses.dataclass(frozen=True)
class CompiledCase:
    """A compiled, verified case. Methods see this (and torch) only.

    Attributes:
        case: The case it was compiled from.
        key: Content hash of everything that determines the artefacts.
        weights: The model's parameters.
        tokens: [n, max_seq_len + 1] evaluation input ids, BOS first, PAD-filled.
        lengths: [n] input lengths (BOS excluded).
        outputs: [n, pos] true outputs (class index, or value if numerical); NaN where undefined.
        truth: Ground truth at all levels.
        info: Versions and verification figures recorded at compile time.
    """

    case: Case
    key: str
    weights: ModelWeights
    tokens: np.ndarray
    lengths: np.ndarray
    outputs: np.ndarray
    truth: GroundTruth
    info: dict[str, Any]

    @functools.cached_property
    def model(self) -> Any:
        """The torch runtime (built on first use).

        Built outside inference mode whatever the caller's context: a runtime whose
        parameters were made under `torch.inference_mode()` could never take part in
        autograd again, and this one is cached for every later method.
        """
        import torch

        from interpbench.runtime import build_runtime

        with torch.inference_mode(False):
            return build_runtime(self.weights)

    @property
    def inputs(self) -> list[list[Any]]:
        """Evaluation inputs as token values."""
        toks = self.weights.input_tokens
        return [[toks[i] for i in row[1 : n + 1]] for row, n in zip(self.tokens, self.lengths)]

    @property
    def n_positions(self) -> int:
        return int(self.tokens.shape[1])

    def input_mask(self) -> np.ndarray:
        """[n, pos] True at real input positions (BOS and PAD excluded); from the inputs alone."""
        pos = np.arange(self.tokens.shape[1])
        return (pos[None, :] >= 1) & (pos[None, :] <= self.lengths[:, None])

    def output_mask(self) -> np.ndarray:
        """[n, pos] True where the program's output is defined (real position, RASP not None)."""
        return self.input_mask() & ~np.isnan(self.outputs)

    def head_names(self) -> list[str]:
        """Every head of the model, `L{layer}H{head}`, padding heads included."""
        return [f"L{l}H{h}" for l in range(self.weights.n_layers) for h in range(self.weights.n_heads)]

    def encode(self, inputs: Sequence[Sequence[Any]]) -> tuple[np.ndarray, np.ndarray]:
        """Token values -> (ids [n, max_seq_len + 1], lengths)."""
        index = {v: i for i, v in enumerate(self.weights.input_tokens)}
        t = self.case.max_seq_len + 1
        ids = np.full((len(inputs), t), self.weights.pad_id, dtype=np.int64)
        ids[:, 0] = self.weights.bos_id
        for b, xs in enumerate(inputs):
            if len(xs) > self.case.max_seq_len:
                raise ValueError(f"input longer than max_seq_len {self.case.max_seq_len}: {list(xs)}")
            ids[b, 1 : len(xs) + 1] = [index[jsonable(x)] for x in xs]
        return ids, np.array([len(xs) for xs in inputs], dtype=np.int64)

    def decode(self, logits: np.ndarray) -> np.ndarray:
        """Read-out -> class index (categorical) or the scalar itself (numerical)."""
        if self.weights.categorical:
            return logits.argmax(-1).astype(np.float64)
        return logits[..., 0]

    def targets(self) -> np.ndarray:
        """Attribution target class per (input, position): the true output class (0 if undefined)."""
        if not self.weights.categorical:
            return np.zeros(self.outputs.shape, dtype=np.int64)
        return np.nan_to_num(self.outputs, nan=0.0).astype(np.int64)

    def save(self, folder: Path, *, durable: bool = True) -> None:
        """Writes the artefact folder; `manifest.json` (file hashes) is written last.

        `durable=False` skips the fsync of each file (see `storage.atomic_write_bytes`):
        `load` checks every file against the manifest, so a file a power cut emptied is
        found, not read.
        """
        self.weights.save(folder, durable=durable)
        atomic_write_bytes(
            folder / "data.npz",
            npz_bytes({"tokens": self.tokens, "lengths": self.lengths, "outputs": self.outputs}),
            durable=durable,
        )
        atomic_write_bytes(folder / "truth.npz", npz_bytes(self.truth.arrays()), durable=durable)
        meta = {
            "format_version": FORMAT_VERSION,
            "case": self.case.full_name,
            "key": self.key,
            "info": self.info,
            "truth": self.truth.meta(),
        }
        atomic_write_bytes(folder / "case.json", json.dumps(meta, indent=1).encode(), durable=durable)
        files = ["weights.npz", "model.json", "data.npz", "truth.npz", "case.json"]
        manifest = {f: hashlib.sha256((folder / f).read_bytes()).hexdigest() for f in files}
        atomic_write_bytes(folder / "manifest.json", json.dumps(manifest, indent=1).encode(), durable=durable)

    @classmethod
    def load(cls, case: Case, folder: Path) -> CompiledCase:
        """Reads a folder written by `save`, checking file hashes first."""
        manifest = json.loads((folder / "manifest.json").read_text())
        for f, digest in manifest.items():
            if hashlib.sha256((folder / f).read_bytes()).hexdigest() != digest:
                raise ValueError(f"{folder / f} does not match its recorded hash")
        meta = json.loads((folder / "case.json").read_text())
        data = read_npz(folder / "data.npz")
        return cls(
            case=case,
            key=meta["key"],
            weights=ModelWeights.load(folder),
            tokens=data["tokens"],
            lengths=data["lengths"],
            outputs=data["outputs"],
            truth=GroundTruth.from_saved(read_npz(folder / "truth.npz"), meta["truth"]),
            info=meta["info"],
        )


def cache_root() -> Path:
    """Where compiled cases are cached: $INTERPBENCH_CACHE or ~/.cache/interpbench."""
    return Path(os.environ.get("INTERPBENCH_CACHE", Path.home() / ".cache" / "interpbench"))


def case_key(case: Case) -> str:
    """Content key: program text and graph, vocab, length, options, versions."""
    from importlib.metadata import version

    from interpbench import __version__
    from interpbench.program import graph_json, relabel

    program = relabel(case.program())
    d = case.domain
    return content_hash(
        {
            "format": FORMAT_VERSION,
            "source": case.source(),
            "graph": graph_json(program),
            "vocab": [jsonable(v) for v in case.vocab],
            "max_seq_len": case.max_seq_len,
            "causal": case.causal,
            "mlp_exactness": case.mlp_exactness,
            "n_eval": case.n_eval,
            "domain": [d.min_len, d.max_len, d.distinct, d.alphabet, _source(d.predicate)],
            "tracr": version("tracr-pypi"),
            "interpbench": __version__,
        }
    )


def _source(fn: Any) -> str | None:
    """Source text of a callable (for content keys), or its qualified name if unavailable."""
    if fn is None:
        return None
    try:
        return inspect.getsource(fn)
    except (OSError, TypeError):
        return getattr(fn, "__qualname__", repr(type(fn)))


def compile_case(case: Case, *, use_cache: bool = True) -> CompiledCase:
    """Compiles (or loads from cache) and verifies a case.

    Raises:
        CompileError: tracr refuses the program.
        VerificationError: the model disagrees with RASP or with tracr's forward.
    """
    key = case_key(case)
    folder = cache_root() / "compiled" / f"{case.suite}__{case.name}-{key}"
    if use_cache and (folder / "manifest.json").exists():
        try:
            return CompiledCase.load(case, folder)
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            shutil.rmtree(folder, ignore_errors=True)  # corrupt: rebuild below
    compiled = _compile_fresh(case, key)
    if use_cache:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
        try:
            compiled.save(tmp)
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return compiled


def _compile_fresh(case: Case, key: str) -> CompiledCase:
    from interpbench import compile as stage
    from interpbench.ground_truth import compute_ground_truth
    from interpbench.program import evaluate, graph_json

    case.validate()
    stages = stage.rasp_to_stages(case)
    weights = stage.stages_to_weights(stages, case)
    components, edges = stage.stages_to_components(stages)
    rng = np.random.default_rng([DATA_SEED, int(content_hash(case.full_name), 16) % (2**32)])
    inputs = case.domain.sample(rng, case.n_eval, case.vocab, case.max_seq_len)
    truth = compute_ground_truth(case, stages.program, inputs, components, edges, graph_json(stages.program))
    out_index = {v: i for i, v in enumerate(weights.output_values or ())}
    t = case.max_seq_len + 1
    outputs = np.full((len(inputs), t), np.nan)
    for b, xs in enumerate(inputs):
        for i, v in enumerate(evaluate(stages.program, xs)):
            if v is not None:
                outputs[b, i + 1] = out_index[jsonable(v)] if weights.categorical else float(v)
    draft = CompiledCase(case, key, weights, np.zeros((0, t), np.int64), np.zeros(0, np.int64),
                         outputs, truth, {})  # fmt: skip
    tokens, lengths = draft.encode(inputs)
    compiled = dataclasses.replace(draft, tokens=tokens, lengths=lengths)
    info = verify(compiled, stages)
    info.update({"tracr_version": stage.tracr_version(), "n_layers": weights.n_layers,
                 "n_heads": weights.n_heads, "d_model": weights.d_model})  # fmt: skip
    stage.release_jax_memory()
    return dataclasses.replace(compiled, info=info)


def verify(compiled: CompiledCase, stages: Any) -> dict[str, Any]:
    """Checks the runtime against RASP (decoded outputs), tracr (residuals) and the true patterns.

    Returns the verification figures; raises VerificationError naming the case and the
    first mismatching input.
    """
    import torch

    from interpbench import compile as stage

    name = compiled.case.full_name
    model = compiled.model
    tokens = torch.from_numpy(compiled.tokens)
    names = ["hook_embed", "hook_pos_embed"]
    for l in range(compiled.weights.n_layers):
        names += [f"blocks.{l}.hook_resid_mid", f"blocks.{l}.hook_resid_post", f"blocks.{l}.attn.hook_pattern"]
    logits, cache = model.run_with_cache(tokens, names)
    decoded = compiled.decode(logits.numpy())
    truth = compiled.truth
    defined = truth.valid_out
    tol = 0.0 if compiled.weights.categorical else NUMERIC_OUTPUT_ATOL
    for b in range(len(compiled.tokens)):
        for p in np.flatnonzero(defined[b]):
            if not abs(float(decoded[b, p]) - float(compiled.outputs[b, p])) <= tol:  # NaN fails
                raise VerificationError(
                    f"{name}: compiled model disagrees with RASP on input {compiled.inputs[b]} "
                    f"at position {p - 1}: model {_show(compiled, decoded[b, p])}, "
                    f"RASP {_show(compiled, compiled.outputs[b, p])}"
                )
    ours = [cache["hook_embed"] + cache["hook_pos_embed"]]
    for l in range(compiled.weights.n_layers):
        ours += [cache[f"blocks.{l}.hook_resid_mid"], cache[f"blocks.{l}.hook_resid_post"]]
    worst = 0.0
    real = np.arange(compiled.tokens.shape[1])[None, :] <= compiled.lengths[:, None]  # BOS and the tokens
    theirs = stage.tracr_residuals(stages, compiled.tokens, compiled.weights.pad_id)
    for mine, ref in zip(ours, theirs):
        diff = np.where(real[:, :, None], np.abs(mine.numpy() - ref), 0.0).max(axis=(1, 2))
        worst = max(worst, float(np.nan_to_num(diff.max(), nan=np.inf)))
        if not diff.max() <= RESIDUAL_ATOL:  # NaN fails
            bad = int(diff.argmax())
            raise VerificationError(
                f"{name}: residual stream differs from tracr's by {diff.max():.2e} on input {compiled.inputs[bad]}"
            )
    worst_pattern = 0.0
    for comp_name, pattern in truth.patterns.items():
        c = truth.component(comp_name)
        got = cache[f"blocks.{c.layer}.attn.hook_pattern"][:, c.head].numpy()
        err = np.where(truth.pattern_rows[:, :, None], np.abs(got - pattern), 0.0).max(axis=(1, 2))
        worst_pattern = max(worst_pattern, float(np.nan_to_num(err.max(), nan=np.inf)))
        if not err.max() <= PATTERN_ATOL:  # NaN fails
            bad = int(err.argmax())
            raise VerificationError(
                f"{name}: head {comp_name} ({c.node}) attention differs from its selector by "
                f"{err.max():.2e} on input {compiled.inputs[bad]}"
            )
    return {
        "verified_positions": int(defined.sum()),
        "undefined_positions": truth.n_undefined_outputs,
        "max_residual_error": worst,
        "max_pattern_error": worst_pattern,
    }


def _show(compiled: CompiledCase, v: float) -> Any:
    if compiled.weights.categorical and not np.isnan(v):
        return compiled.weights.output_values[int(v)]
    return v


ZERO_ATOL = 1e-12


def zero_row_share(case: CompiledCase, relevance: np.ndarray, atol: float = ZERO_ATOL) -> float:
    """Share of defined output rows whose relevance is all zero within `atol` (vanishing gradients show here).

    Uses only the inputs and outputs, never the ground truth, so adapters may call it too.
    """
    defined = case.output_mask()
    if not defined.any():
        return float("nan")
    zero = (np.abs(relevance) <= atol).all(axis=-1)
    return float(zero[defined].mean())
