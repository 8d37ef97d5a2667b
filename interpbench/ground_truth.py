"""GroundTruth at four levels, derived from RASP semantics (never from the model).

Arrays use model coordinates: position 0 is BOS, input token k sits at position k + 1,
and every array is padded to max_seq_len + 1 positions. Masks say which entries count.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from interpbench.case import Case
from interpbench.components import Component, Edge

NUMERIC_ATOL = 1e-9


@dataclasses.dataclass(frozen=True)
class GroundTruth:
    """What the compiled model is known to compute, at every level.

    Attributes:
        relevance: G [n, pos, pos] int8; 1 where some in-domain substitution of the
            input token at `in_pos` changes the program's output at `out_pos`.
        graded: Gg [n, pos, pos]; fraction of in-domain substitutions that change it.
        valid_in: [n, pos] bool; real input positions (BOS and PAD excluded).
        valid_out: [n, pos] bool; positions where the program's output is defined.
        patterns: {head name: [n, query, key]} the row-normalised true selector
            pattern (BOS fallback for aggregates; BOS always kept for SelectorWidth).
        pattern_rows: [n, pos] bool; query rows where `patterns` count.
        components: Every head and MLP slice with its RASP node and role.
        edges: The component DAG with residual subspaces on the edges.
        program_source: Source text of the case's program factory.
        program_graph: The RASP DAG as JSON records.
        n_undefined_outputs: Output positions excluded because RASP gives None.
    """

    relevance: np.ndarray
    graded: np.ndarray
    valid_in: np.ndarray
    valid_out: np.ndarray
    patterns: dict[str, np.ndarray]
    pattern_rows: np.ndarray
    components: tuple[Component, ...]
    edges: tuple[Edge, ...]
    program_source: str
    program_graph: list[dict[str, Any]]
    n_undefined_outputs: int

    def component(self, name: str) -> Component:
        """The component called `name` (e.g. `L0H1`)."""
        for c in self.components:
            if c.name == name:
                return c
        raise KeyError(name)

    def arrays(self) -> dict[str, np.ndarray]:
        """npz form."""
        out = {
            "relevance": self.relevance,
            "graded": self.graded,
            "valid_in": self.valid_in,
            "valid_out": self.valid_out,
            "pattern_rows": self.pattern_rows,
        }
        out.update({f"pattern.{k}": v for k, v in self.patterns.items()})
        return out

    def meta(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "components": [c.to_json() for c in self.components],
            "edges": [e.to_json() for e in self.edges],
            "program_source": self.program_source,
            "program_graph": self.program_graph,
            "n_undefined_outputs": self.n_undefined_outputs,
        }

    @classmethod
    def from_saved(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> GroundTruth:
        """Inverse of (`arrays`, `meta`)."""
        return cls(
            relevance=arrays["relevance"],
            graded=arrays["graded"],
            valid_in=arrays["valid_in"],
            valid_out=arrays["valid_out"],
            patterns={k[len("pattern.") :]: v for k, v in arrays.items() if k.startswith("pattern.")},
            pattern_rows=arrays["pattern_rows"],
            components=tuple(Component.from_json(c) for c in meta["components"]),
            edges=tuple(Edge.from_json(e) for e in meta["edges"]),
            program_source=meta["program_source"],
            program_graph=meta["program_graph"],
            n_undefined_outputs=int(meta["n_undefined_outputs"]),
        )


def same_value(a: Any, b: Any) -> bool:
    """Program-output equality: None only equals None; numbers within NUMERIC_ATOL."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=0.0, abs_tol=NUMERIC_ATOL)
    return a == b


def token_relevance(
    case: Case, program: Any, inputs: Sequence[Sequence[Any]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """G, Gg, valid_in, valid_out from in-domain single-token substitutions.

    Substitutions that leave the domain (e.g. a duplicate in `sort_unique`) are not
    counted; a position with no in-domain substitution gets G = 0 and Gg = 0.
    """
    from interpbench.program import evaluate

    n, t = len(inputs), case.max_seq_len + 1
    g = np.zeros((n, t, t), dtype=np.int8)
    gg = np.zeros((n, t, t), dtype=np.float64)
    valid_in = np.zeros((n, t), dtype=bool)
    valid_out = np.zeros((n, t), dtype=bool)
    alphabet = case.domain.tokens(case.vocab)
    seen: dict[tuple[Any, ...], list[Any]] = {}  # a substituted sequence often recurs (another input, another position)

    def run(seq: list[Any]) -> list[Any]:
        key = tuple(seq)
        if key not in seen:
            seen[key] = evaluate(program, seq)
        return seen[key]

    for b, xs in enumerate(inputs):
        xs = list(xs)
        length = len(xs)
        base = run(xs)
        valid_in[b, 1 : length + 1] = True
        defined = [v is not None for v in base]
        valid_out[b, 1 : length + 1] = defined
        for j in range(length):
            changed = np.zeros(length)
            count = 0
            for v in alphabet:
                if v == xs[j]:
                    continue
                alt = xs[:j] + [v] + xs[j + 1 :]
                if not case.domain.contains(alt, case.vocab, case.max_seq_len):
                    continue
                count += 1
                out = run(alt)
                changed += [0.0 if same_value(o, p) else 1.0 for o, p in zip(out, base)]
            if count:
                gg[b, 1 : length + 1, j + 1] = changed / count
                g[b, 1 : length + 1, j + 1] = changed > 0
        g[b] *= valid_out[b][:, None]
        gg[b] *= valid_out[b][:, None]
    return g, gg, valid_in, valid_out


def head_patterns(
    case: Case,
    exprs_by_label: dict[str, Any],
    components: Sequence[Component],
    inputs: Sequence[Sequence[Any]],
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """True attention pattern of each head implementing an Aggregate or SelectorWidth."""
    from interpbench.program import evaluate_many

    heads = [c for c in components if c.kind == "head" and c.role in ("aggregate", "selector_width")]
    n, t = len(inputs), case.max_seq_len + 1
    patterns = {c.name: np.zeros((n, t, t)) for c in heads}
    rows = np.zeros((n, t), dtype=bool)
    selectors = [exprs_by_label[c.node].selector for c in heads]
    for b, xs in enumerate(inputs):
        length = len(xs)
        rows[b, 1 : length + 1] = True
        values = evaluate_many(selectors, xs)
        for c, sel in zip(heads, values):
            m = np.zeros((t, t))
            m[1 : length + 1, 1 : length + 1] = np.asarray(sel, dtype=float)
            if case.causal:
                m = np.tril(m)
            if c.role == "selector_width":
                m[1 : length + 1, 0] = 1.0
            else:
                empty = m[1 : length + 1].sum(1) == 0
                m[1 : length + 1, 0] = empty
            sums = m.sum(1, keepdims=True)
            patterns[c.name][b] = np.divide(m, sums, out=np.zeros_like(m), where=sums > 0)
    return patterns, rows


def compute_ground_truth(
    case: Case,
    program: Any,
    inputs: Sequence[Sequence[Any]],
    components: Sequence[Component],
    edges: Sequence[Edge],
    program_graph: list[dict[str, Any]],
) -> GroundTruth:
    """All four levels for the case's evaluation inputs."""
    from interpbench.program import walk

    g, gg, valid_in, valid_out = token_relevance(case, program, inputs)
    exprs = {e.label: e for e in walk(program)}
    patterns, rows = head_patterns(case, exprs, components, inputs)
    n_undefined = int(valid_in.sum() - valid_out.sum())
    return GroundTruth(
        relevance=g,
        graded=gg,
        valid_in=valid_in,
        valid_out=valid_out,
        patterns=patterns,
        pattern_rows=rows,
        components=tuple(components),
        edges=tuple(edges),
        program_source=case.source(),
        program_graph=program_graph,
        n_undefined_outputs=n_undefined,
    )
