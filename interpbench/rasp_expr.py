"""Expressions of the whole-program search: a RASP DAG by reference, written out as an `interpbench.rasp/1` spec."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any


@dataclasses.dataclass(frozen=True, eq=False)
class Expr:
    """One RASP expression of the search (children by reference)."""

    op: str
    args: tuple[Expr, ...] = ()
    fn: dict[str, Any] | None = None
    pred: dict[str, Any] | None = None
    numerical: bool = False
    default: Any = None


TOKENS, INDICES = Expr("tokens"), Expr("indices")


def linear(coef: Sequence[Any], const: Any = 0, mod: int | None = None) -> dict[str, Any]:
    """A linear FN form."""
    return {"kind": "linear", "coef": list(coef), "const": const, "mod": mod}


def to_spec(out: Expr | None, status: str) -> dict[str, Any]:
    """The `interpbench.rasp/1` spec of an expression DAG (shared sub-expressions emitted once)."""
    nodes: list[dict[str, Any]] = []
    ids: dict[int, str] = {}
    short = {"map": "map", "sequence_map": "seqmap", "select": "select", "aggregate": "aggregate",
             "selector_width": "width"}  # fmt: skip

    def emit(e: Expr) -> str:
        if id(e) in ids:
            return ids[id(e)]
        args = [emit(a) for a in e.args]
        nid = e.op if e.op in ("tokens", "indices") else f"{short[e.op]}{len(nodes) + 1}"
        node: dict[str, Any] = {"id": nid, "op": e.op}
        if e.op in ("map", "sequence_map"):
            node.update(args=args, fn=e.fn, encoding="numerical" if e.numerical else "categorical")
        elif e.op == "select":
            node.update(keys=args[0], queries=args[1], predicate=e.pred)
        elif e.op == "aggregate":
            node.update(selector=args[0], sop=args[1], default=e.default,
                        encoding="numerical" if e.numerical else "categorical")  # fmt: skip
        elif e.op == "selector_width":
            node.update(selector=args[0])
        nodes.append(node)
        ids[id(e)] = nid
        return nid

    output = emit(out) if out is not None else None
    return {"format": "interpbench.rasp/1", "status": status, "nodes": nodes, "output": output}


def numerical_output(expr: Expr) -> Expr:
    """The expression as a numerical SOp (a numerical identity Map where it cannot be annotated)."""
    if expr.op in ("map", "sequence_map", "aggregate"):
        return dataclasses.replace(expr, numerical=True)
    return Expr("map", (expr,), linear([1]), numerical=True)
