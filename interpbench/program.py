"""RASP program utilities: stable labels, a memoised evaluator and a text form of the graph.

Program-level ground truth lives here: the evaluator is the semantics every other
level of truth is derived from.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Sequence
from typing import Any

from tracr.rasp import rasp

Value = Hashable


def walk(expr: rasp.RASPExpr) -> list[rasp.RASPExpr]:
    """Every expression reachable from `expr`, each once, children before parents."""
    seen: dict[int, rasp.RASPExpr] = {}
    order: list[rasp.RASPExpr] = []

    def visit(e: rasp.RASPExpr) -> None:
        if id(e) in seen:
            return
        seen[id(e)] = e
        for c in e.children:
            visit(c)
        order.append(e)

    visit(expr)
    return order


def relabel(program: rasp.SOp) -> rasp.SOp:
    """Gives the program's expressions labels that depend only on the program.

    tracr draws ids from one global counter and caches them on first use, so labels
    change with import and compile order (shared globals such as `lib.length` keep
    stale ids). We drop cached ids, restart the counter and assign ids in a fixed
    traversal order.
    """
    exprs = walk(program)
    for e in exprs:
        e.__dict__.pop("unique_id", None)
    rasp.RASPExpr._ids = itertools.count(1)
    for e in reversed(exprs):  # parents first, like tracr's graph extraction
        _ = e.label
    return program


class MemoEvaluator(rasp.DefaultRASPEvaluator):
    """tracr's reference evaluator, memoised per input so shared sub-graphs run once."""

    def __init__(self) -> None:
        super().__init__()
        self._memo: dict[int, Any] = {}

    def evaluate(self, expr: rasp.RASPExpr, xs: Sequence[Value]) -> Any:
        key = id(expr)
        if key not in self._memo:
            self._memo[key] = super().evaluate(expr, xs)
        return self._memo[key]


def evaluate(expr: rasp.RASPExpr, xs: Sequence[Value]) -> list[Any]:
    """RASP value of `expr` on input `xs` (None where an aggregate selects nothing)."""
    return list(MemoEvaluator().evaluate(expr, list(xs)))


def evaluate_many(exprs: Sequence[rasp.RASPExpr], xs: Sequence[Value]) -> list[Any]:
    """Values of several expressions on one input, sharing one memo."""
    ev = MemoEvaluator()
    return [ev.evaluate(e, list(xs)) for e in exprs]


def describe(expr: rasp.RASPExpr) -> dict[str, Any]:
    """JSON description of one expression: label, type, encoding, children, detail."""
    kind = type(expr).__name__
    info: dict[str, Any] = {
        "label": expr.label,
        "type": kind,
        "children": [c.label for c in expr.children],
    }
    if isinstance(expr, rasp.SOp):
        info["encoding"] = rasp.get_encoding(expr).value
    if isinstance(expr, rasp.Select):
        pred = expr.predicate
        info["predicate"] = getattr(pred, "name", None) or getattr(pred, "__name__", type(pred).__name__)
    if isinstance(expr, rasp.Aggregate):
        info["default"] = expr.default
    if isinstance(expr, rasp.LinearSequenceMap):
        info["factors"] = [expr.fst_fac, expr.snd_fac]
    return info


def graph_json(program: rasp.SOp) -> list[dict[str, Any]]:
    """The program DAG, children first, as a list of `describe` records."""
    return [describe(e) for e in walk(program)]


def graph_text(program: rasp.SOp) -> str:
    """A readable one-line-per-node listing of the program DAG."""
    lines = []
    for node in graph_json(program):
        extra = f" [{node['predicate']}]" if "predicate" in node else ""
        enc = f" ({node['encoding']})" if "encoding" in node else ""
        args = ", ".join(node["children"])
        lines.append(f"{node['label']} = {node['type']}({args}){extra}{enc}")
    return "\n".join(lines)
