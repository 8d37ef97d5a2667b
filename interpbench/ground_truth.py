"""GroundTruth at four levels, derived from RASP semantics (never from the model).

Arrays use model coordinates: position 0 is BOS, input token k sits at position k + 1,
and every array is padded to max_seq_len + 1 positions. Masks say which entries count.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from interpbench.case import Case
from interpbench.components import Component, Edge

if TYPE_CHECKING:
    from interpbench.rasp_batch import Column, Groups

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


@dataclasses.dataclass(frozen=True)
class Substitutions:
    """Every input and each of its in-domain single-token substitutions, as distinct sequences.

    Attributes:
        sequences: The distinct sequences to evaluate (inputs and substitutions, first seen first).
        base_rows: [n] the row of each input in `sequences`.
        input_ids: [k] which input each in-domain substitution comes from.
        positions: [k] which position of it was substituted.
        rows: [k] the row of the substituted sequence in `sequences`.
    """

    sequences: list[tuple[Any, ...]]
    base_rows: np.ndarray
    input_ids: np.ndarray
    positions: np.ndarray
    rows: np.ndarray

    @classmethod
    def enumerate(cls, case: Case, inputs: Sequence[Sequence[Any]]) -> Substitutions:
        """Enumerates them; a sequence reached from several inputs or positions is listed once.

        Substitutions that leave the domain (e.g. a duplicate in `sort_unique`) are not listed.
        """
        alphabet = case.domain.tokens(case.vocab)
        sequences: list[tuple[Any, ...]] = []
        row_of: dict[tuple[Any, ...], int] = {}
        in_domain: dict[tuple[Any, ...], bool] = {}
        base_rows, subs = [], []
        for b, xs in enumerate(inputs):
            xs = tuple(xs)
            base_rows.append(row_of.setdefault(xs, len(row_of)))
            if base_rows[-1] == len(sequences):
                sequences.append(xs)
            for j, x in enumerate(xs):
                head, tail = xs[:j], xs[j + 1 :]
                for v in alphabet:
                    if v == x:
                        continue
                    alt = (*head, v, *tail)
                    ok = in_domain.get(alt)
                    if ok is None:
                        ok = in_domain[alt] = case.domain.contains(list(alt), case.vocab, case.max_seq_len)
                    if ok:
                        subs.append((b, j, row_of.setdefault(alt, len(row_of))))
                        if subs[-1][2] == len(sequences):
                            sequences.append(alt)
        ids = np.array(subs, dtype=np.int64).reshape(-1, 3)
        return cls(sequences, np.array(base_rows, dtype=np.int64), ids[:, 0], ids[:, 1], ids[:, 2])


def _local(groups: Groups) -> np.ndarray:
    """[sequences] each sequence's index inside its length's batch."""
    local = np.zeros(sum(len(rows) for rows, _ in groups.values()), dtype=np.int64)
    for rows, _ in groups.values():
        local[rows] = np.arange(len(rows))
    return local


def _same(outputs: Column, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`same_value` of the outputs at codes `a` and `b` (same shape), called once per distinct pair."""
    n = len(outputs.table)
    uniq, inverse = np.unique(a * n + b, return_inverse=True)
    same = np.array([same_value(outputs.table[u // n], outputs.table[u % n]) for u in uniq.tolist()], dtype=bool)
    return same[inverse].reshape(a.shape)


def _relevance(
    case: Case, subs: Substitutions, groups: Groups, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """G, Gg, valid_in, valid_out from the program's values (`groups[length][1][0]`)."""
    t = case.max_seq_len + 1
    g = np.zeros((n, t, t), dtype=np.int8)
    gg = np.zeros((n, t, t), dtype=np.float64)
    valid_in = np.zeros((n, t), dtype=bool)
    valid_out = np.zeros((n, t), dtype=bool)
    local = _local(groups)
    lengths = np.array([len(subs.sequences[r]) for r in subs.base_rows.tolist()], dtype=np.int64)
    for length, (_, values) in groups.items():
        bases = np.flatnonzero(lengths == length)
        if not bases.size:
            continue
        outputs: Column = values[0]
        base_codes = outputs.codes[local[subs.base_rows[bases]]]  # [bases, length]
        defined = ~np.array([v is None for v in outputs.table], dtype=bool)[base_codes]
        valid_in[bases, 1 : length + 1] = True
        valid_out[bases, 1 : length + 1] = defined
        slot = np.full(n, -1, dtype=np.int64)
        slot[bases] = np.arange(len(bases))
        mine = np.flatnonzero(slot[subs.input_ids] >= 0)
        key = slot[subs.input_ids[mine]] * length + subs.positions[mine]
        changed = np.zeros((len(bases) * length, length))
        if mine.size:
            alt = outputs.codes[local[subs.rows[mine]]]
            differs = ~_same(outputs, alt, base_codes[slot[subs.input_ids[mine]]])
            np.add.at(changed, key, differs.astype(np.float64))
        count = np.bincount(key, minlength=len(bases) * length).astype(np.float64)[:, None]
        frac = np.divide(changed, count, out=np.zeros_like(changed), where=count > 0)
        frac = frac.reshape(len(bases), length, length).transpose(0, 2, 1)  # [input, out, in]
        keep = defined[:, :, None]
        gg[bases, 1 : length + 1, 1 : length + 1] = np.where(keep, frac, 0.0)
        g[bases, 1 : length + 1, 1 : length + 1] = keep & (frac > 0)
    return g, gg, valid_in, valid_out


def token_relevance(
    case: Case, program: Any, inputs: Sequence[Sequence[Any]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """G, Gg, valid_in, valid_out from in-domain single-token substitutions.

    Substitutions that leave the domain (e.g. a duplicate in `sort_unique`) are not
    counted; a position with no in-domain substitution gets G = 0 and Gg = 0. Each
    distinct sequence is evaluated once, in one batch per length (`evaluate_rows`).
    """
    from interpbench.rasp_batch import evaluate_rows

    subs = Substitutions.enumerate(case, inputs)
    return _relevance(case, subs, evaluate_rows([program], subs.sequences), len(inputs))


def _heads(components: Sequence[Component]) -> list[Component]:
    """The heads that carry a true pattern: those implementing an Aggregate or a SelectorWidth."""
    return [c for c in components if c.kind == "head" and c.role in ("aggregate", "selector_width")]


def _patterns(
    case: Case,
    heads: Sequence[Component],
    base_rows: np.ndarray,
    groups: Groups,
    first: int,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Head patterns from the selectors' values (`groups[length][1][first + i]` for head i)."""
    n, t = len(base_rows), case.max_seq_len + 1
    patterns = {c.name: np.zeros((n, t, t)) for c in heads}
    rows = np.zeros((n, t), dtype=bool)
    local = _local(groups)
    for length, (group_rows, values) in groups.items():
        bases = np.flatnonzero(np.isin(base_rows, group_rows))
        if not bases.size:
            continue
        rows[bases, 1 : length + 1] = True
        for i, c in enumerate(heads):
            m = np.zeros((len(bases), t, t))
            m[:, 1 : length + 1, 1 : length + 1] = values[first + i][local[base_rows[bases]]]
            if case.causal:
                m = np.tril(m)
            m[:, 1 : length + 1, 0] = 1.0 if c.role == "selector_width" else m[:, 1 : length + 1].sum(-1) == 0
            sums = m.sum(-1, keepdims=True)
            patterns[c.name][bases] = np.divide(m, sums, out=np.zeros_like(m), where=sums > 0)
    return patterns, rows


def head_patterns(
    case: Case,
    exprs_by_label: dict[str, Any],
    components: Sequence[Component],
    inputs: Sequence[Sequence[Any]],
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """True attention pattern of each head implementing an Aggregate or SelectorWidth."""
    from interpbench.rasp_batch import evaluate_rows

    heads = _heads(components)
    sequences = list(dict.fromkeys(tuple(xs) for xs in inputs))
    row = {xs: i for i, xs in enumerate(sequences)}
    base_rows = np.array([row[tuple(xs)] for xs in inputs], dtype=np.int64)
    groups = evaluate_rows([exprs_by_label[c.node].selector for c in heads], sequences)
    return _patterns(case, heads, base_rows, groups, 0)


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
    from interpbench.rasp_batch import evaluate_rows

    exprs = {e.label: e for e in walk(program)}
    heads = _heads(components)
    subs = Substitutions.enumerate(case, inputs)
    groups = evaluate_rows([program, *(exprs[c.node].selector for c in heads)], subs.sequences)  # one pass for both
    g, gg, valid_in, valid_out = _relevance(case, subs, groups, len(inputs))
    patterns, rows = _patterns(case, heads, subs.base_rows, groups, 1)
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
