"""Program-level metrics: recovered programs against the true RASP program.

Both metrics run programs with interpbench's RASP evaluator on held-out inputs: the
case's evaluation inputs plus longer inputs (`held_out_inputs`). The longer inputs are
never seen by a method, which only sees the compiled model, and the model cannot run on
them (it is limited to `max_seq_len`); they test whether a recovered program generalises
the way the true program does. The true program is `relabel(case.program())`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any

import networkx as nx
import numpy as np
from tracr.rasp import rasp

from interpbench.errors import BadInputError
from interpbench.explanation import Explanation
from interpbench.ground_truth import same_value
from interpbench.metrics import RowScores, metric
from interpbench.program import evaluate, evaluate_many, walk

if TYPE_CHECKING:
    from interpbench.case import Case
    from interpbench.compiled import CompiledCase

HELD_OUT_SEED = 4  # seeds the longer held-out inputs (one stream per length)
EXTRA_LENGTHS = (1, 2)  # held-out lengths beyond max_seq_len
N_PER_LENGTH = 16  # held-out inputs per extra length
VALUE_DECIMALS = 9  # numbers in skeleton labels are rounded to this (ground_truth.NUMERIC_ATOL)

# Skeleton node kinds kept by `skeleton`; element-wise SOps are contracted.
_KIND = {
    rasp.TokensType: "tokens", rasp.IndicesType: "indices", rasp.LengthType: "length",
    rasp.Select: "select", rasp.Aggregate: "aggregate", rasp.SelectorWidth: "selector_width",
    rasp.SelectorAnd: "selector_and", rasp.SelectorOr: "selector_or", rasp.SelectorNot: "selector_not",
    rasp.ConstantSelector: "constant_selector",
}  # fmt: skip
_ROLES = {
    rasp.Select: ("keys", "queries"), rasp.Aggregate: ("selector", "sop"), rasp.SelectorWidth: ("selector",),
    rasp.SelectorAnd: ("fst", "snd"), rasp.SelectorOr: ("fst", "snd"), rasp.SelectorNot: ("inner",),
}  # fmt: skip


def held_out_inputs(case: Case, compiled: CompiledCase) -> list[list[Any]]:
    """The evaluation inputs, then 16 inputs of each length max_seq_len + 1 and + 2.

    Longer inputs are drawn (seeded, `HELD_OUT_SEED`) only when the case's domain does not
    cap the length (`domain.max_len is None`), from the same domain with its length pinned
    (`dataclasses.replace`), so alphabet, distinctness and predicate still hold. A length
    the sampler cannot fill (BadInputError: too few distinct tokens, a predicate such as
    even length that never holds) is skipped. Methods never see these longer inputs: they
    see only the compiled model, which accepts at most `max_seq_len` tokens.
    """
    inputs = [list(xs) for xs in compiled.inputs]
    if case.domain.max_len is not None:
        return inputs
    for extra in EXTRA_LENGTHS:
        n = case.max_seq_len + extra
        domain = dataclasses.replace(case.domain, min_len=n, max_len=n)
        try:
            inputs += domain.sample(np.random.default_rng([HELD_OUT_SEED, n]), N_PER_LENGTH, case.vocab, n)
        except BadInputError:
            continue
    return inputs


def _try_evaluate(program: rasp.SOp, xs: Sequence[Any]) -> list[Any] | None:
    """The program's output on `xs`, or None if evaluation raises."""
    try:
        out = evaluate(program, xs)
    except Exception:  # noqa: BLE001 - a recovered program may fail in any way; that scores 0
        return None
    return out if len(out) == len(xs) else None


def accuracy_rows(
    recovered: rasp.SOp | None, truth: rasp.SOp, inputs: Sequence[Sequence[Any]],
    wanted: Sequence[list[Any] | None] | None = None,
) -> np.ndarray:
    """Per input: 1.0 if `recovered` equals `truth` wherever the truth is defined, else 0.0.

    Positions where the truth is None are not compared; an input where the truth is
    defined nowhere (or the truth itself raises) is NaN (undefined, counted). A missing
    program, one that raises, or one with a wrong output length scores 0. `wanted` may
    hold the truth's outputs on `inputs` (`_try_evaluate`), computed once per case.
    """
    out = np.zeros(len(inputs))
    for b, xs in enumerate(inputs):
        want = _try_evaluate(truth, xs) if wanted is None else wanted[b]
        if want is None or all(w is None for w in want):
            out[b] = np.nan
            continue
        got = None if recovered is None else _try_evaluate(recovered, xs)
        ok = got is not None and all(w is None or same_value(g, w) for g, w in zip(got, want))
        out[b] = float(ok)
    return out


def _canonical(v: Any) -> Hashable:
    """A hashable form of a RASP value in which equal outputs (per `same_value`) coincide."""
    if isinstance(v, (bool, int, float, np.integer, np.floating)):
        return round(float(v), VALUE_DECIMALS) + 0.0  # + 0.0 turns -0.0 into 0.0
    if isinstance(v, (list, tuple)):
        return tuple(_canonical(x) for x in v)
    return v


def _kind(expr: rasp.RASPExpr) -> str | None:
    """Skeleton kind of a kept expression, or None for an element-wise SOp (contracted)."""
    return _KIND.get(type(expr))


def _children_by_role(expr: rasp.RASPExpr) -> list[tuple[str, rasp.RASPExpr]]:
    """(role, child) pairs of a RASP node; roles label skeleton edges (keys, queries, selector, sop)."""
    roles = _ROLES.get(type(expr), ())
    return [(roles[i] if i < len(roles) else "arg", c) for i, c in enumerate(expr.children)]


def skeleton(expr: rasp.SOp, inputs: Sequence[Sequence[Any]]) -> nx.DiGraph:
    """The program's skeleton: attention-level operations as a labelled DAG.

    Kept: leaves (tokens, indices), Select (and selector combinators), Aggregate,
    SelectorWidth, and the output. Element-wise Map/SequenceMap/Full/ConstantSOp nodes are
    contracted: the kept nodes they read become parents of their readers, with the role of
    the slot they fed (keys, queries, selector, sop; "arg" into an element-wise output).
    Each node is labelled by its kind and its value on every input of `inputs` (selector
    matrices, SOp values; numbers rounded to 9 decimals), the output additionally marked.
    A selector whose value is constant (every pair selected, or none) on every input reads
    nothing, so its key/query edges are dropped: `Select(tokens, tokens, TRUE)` and
    `Select(indices, indices, TRUE)` are the same selector. Nodes with the same label and
    the same labelled parents are merged (one computation, however often it was built),
    and nodes the output no longer depends on (e.g. what a constant selector compared) go.

    Raises:
        Whatever evaluating the program on an input raises.
    """
    exprs = walk(expr)
    kept = [e for e in exprs if e is expr or _kind(e) is not None]
    values = [evaluate_many(kept, xs) for xs in inputs]
    label: dict[int, str] = {}
    constant: set[int] = set()
    for j, e in enumerate(kept):
        value = tuple(_canonical(v[j]) for v in values)
        kind = _kind(e) or "elementwise"
        digest = hashlib.sha256(repr((kind, e is expr, value)).encode()).hexdigest()[:16]
        label[id(e)] = f"{kind}{'(output)' if e is expr else ''}:{digest}"
        if isinstance(e, rasp.Select) and len({c for v in value for row in v for c in row}) <= 1:
            constant.add(id(e))

    sources: dict[int, frozenset[int]] = {}

    def kept_sources(e: rasp.RASPExpr) -> frozenset[int]:
        """Kept expressions `e` reads through contracted element-wise nodes."""
        if id(e) in label and e is not expr:
            return frozenset({id(e)})
        if id(e) not in sources:
            sources[id(e)] = frozenset().union(*[kept_sources(c) for c in e.children])
        return sources[id(e)]

    graph = nx.DiGraph()
    canon: dict[int, int] = {}
    seen: dict[tuple[str, frozenset[tuple[int, tuple[str, ...]]]], int] = {}
    for e in kept:
        roles: dict[int, set[str]] = {}
        if id(e) not in constant:
            for role, child in _children_by_role(e):
                for s in kept_sources(child):
                    roles.setdefault(canon[s], set()).add(role)
        parents = frozenset((p, tuple(sorted(r))) for p, r in roles.items())
        key = (label[id(e)], parents)
        if key not in seen:
            seen[key] = node = len(seen)
            graph.add_node(node, label=label[id(e)])
            for p, r in parents:
                graph.add_edge(p, node, roles=r)
        canon[id(e)] = seen[key]
    output = canon[id(expr)]
    return graph.subgraph(nx.ancestors(graph, output) | {output}).copy()


def same_structure(a: rasp.SOp, b: rasp.SOp, inputs: Sequence[Sequence[Any]]) -> bool:
    """Whether two programs have isomorphic labelled skeletons (`skeleton`) on `inputs`.

    A program that raises on an input has no skeleton there and is not the same.
    """
    try:
        ga, gb = skeleton(a, inputs), skeleton(b, inputs)
    except Exception:  # noqa: BLE001 - a recovered program may fail in any way
        return False
    if sorted(d["label"] for _, d in ga.nodes(data=True)) != sorted(d["label"] for _, d in gb.nodes(data=True)):
        return False
    return nx.is_isomorphic(
        ga, gb, node_match=lambda x, y: x["label"] == y["label"], edge_match=lambda x, y: x["roles"] == y["roles"]
    )


def _programs(explanation: Explanation, compiled: CompiledCase) -> tuple[rasp.SOp | None, rasp.SOp]:
    """(recovered program or None, true program).

    None (scored 0) for a malformed spec, one without output, and one whose status is not
    "found": a search that ran out of budget keeps its best candidate for inspection, but
    says itself that it found nothing, and is scored as such.
    """
    from interpbench.rasp_spec import spec_to_rasp

    if explanation.program is None:
        raise ValueError("explanation has no program")
    truth = _reference(compiled).truth
    if explanation.program.get("status", "found") != "found":
        return None, truth
    try:
        recovered = spec_to_rasp(explanation.program)
    except BadInputError:
        recovered = None
    return recovered, truth


@dataclasses.dataclass(frozen=True)
class Reference:
    """What the program metrics compare with, built once per case.

    Attributes:
        truth: The true program (relabelled).
        inputs: The held-out inputs (`held_out_inputs`).
        wanted: The truth's output on each input, or None where it raises.
    """

    truth: rasp.SOp
    inputs: list[list[Any]]
    wanted: list[list[Any] | None]

    @property
    def defined(self) -> list[list[Any]]:
        """The inputs where the truth evaluates."""
        return [xs for xs, w in zip(self.inputs, self.wanted) if w is not None]


_REFERENCES: dict[tuple[str, bytes], Reference] = {}


def _reference(compiled: CompiledCase) -> Reference:
    """The reference of the compiled case's program, kept for the last few cases.

    Every program cell of a case, on the base model and on every twin (same program, same
    evaluation inputs), needs the same reference; building it samples the longer inputs
    and evaluates the truth on each.
    """
    from interpbench.program import relabel

    key = (compiled.case.full_name, np.asarray(compiled.tokens).tobytes())
    if key not in _REFERENCES:
        truth = relabel(compiled.case.program())
        inputs = held_out_inputs(compiled.case, compiled)
        wanted = [_try_evaluate(truth, xs) for xs in inputs]
        while len(_REFERENCES) >= 4:
            _REFERENCES.pop(next(iter(_REFERENCES)))
        _REFERENCES[key] = Reference(truth, inputs, wanted)
    return _REFERENCES[key]


@metric("program_accuracy", level="program", kind="program", higher_is_better=True, low=0.0, high=1.0)
def program_accuracy(explanation: Explanation, compiled: CompiledCase) -> RowScores:
    """Share of held-out inputs (incl. 2 lengths beyond max_seq_len) where the program's output equals the truth."""
    recovered, truth = _programs(explanation, compiled)
    ref = _reference(compiled)
    return RowScores(accuracy_rows(recovered, truth, ref.inputs, ref.wanted), np.arange(len(ref.inputs), dtype=np.int64))


@metric("program_exact", level="program", kind="program", higher_is_better=True, low=0.0, high=1.0)
def program_exact(explanation: Explanation, compiled: CompiledCase) -> RowScores:
    """1 if the program has the same attention operations and selectors as the truth up to renaming, else 0."""
    recovered, truth = _programs(explanation, compiled)
    exact = recovered is not None and same_structure(recovered, truth, _reference(compiled).defined)
    return RowScores(np.array([float(exact)]), np.zeros(1, dtype=np.int64))
