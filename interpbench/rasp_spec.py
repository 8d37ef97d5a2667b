"""The `interpbench.rasp/1` program spec built into real tracr RASP and evaluated.

The format, its validation and its FN/PRED forms are described in `interpbench.rasp_format`;
Python source is rendered by `interpbench.rasp_source`. Both are re-exported here. Specs
are interpreted: every function is a closure over the spec's numbers, never text passed
to exec or eval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from tracr.rasp import rasp

from interpbench.rasp_format import (
    CMP,
    ENCODINGS,
    FN_KINDS,
    FORMAT,
    OPS,
    PRED_SYMBOL,
    SELECTOR_OPS,
    SPEC_STATUSES,
    children,
    fn_arity,
    linear_factors,
    spec_error,
    validate,
)
from interpbench.rasp_source import ARG_NAMES, render_fn, render_predicate, render_source

__all__ = [  # the builder, and the format and renderer re-exported
    "ARG_NAMES", "CMP", "ENCODINGS", "FN_KINDS", "FORMAT", "OPS", "PRED_SYMBOL", "SELECTOR_OPS", "SPEC_STATUSES",
    "children", "fn_arity", "linear_factors", "make_fn", "make_predicate", "render_fn", "render_predicate",
    "render_source", "run_spec", "spec_error", "spec_to_rasp", "validate",
]  # fmt: skip


def make_fn(fn: dict[str, Any]) -> Callable[..., Any]:
    """The Python function an (already validated) FN form denotes, as a closure."""
    kind = fn["kind"]
    if kind == "linear":
        coef, const, mod = tuple(fn["coef"]), fn.get("const", 0), fn.get("mod")

        def linear(*xs: Any) -> Any:
            terms = [a * x for a, x in zip(coef, xs) if a != 0]
            total = terms[0] if terms else 0
            for t in terms[1:]:
                total = total + t
            if const != 0 or not terms:
                total = total + const
            return total % mod if mod is not None else total

        return linear
    if kind == "indicator":
        cmp, value = CMP[fn.get("op", "==")], fn["value"]
        return lambda x: 1 if cmp(x, value) else 0
    if kind == "compare":
        cmp2 = CMP[fn.get("op", "==")]
        return lambda x, y: 1 if cmp2(x, y) else 0
    table = {tuple(k): v for k, v in fn["table"]}
    default = fn.get("default")
    return lambda *xs: table.get(tuple(xs), default)


def make_predicate(pred: dict[str, Any]) -> Any:
    """`rasp.Comparison` for offset 0 (or TRUE/FALSE), else a closure `key OP (query + offset)`."""
    op, offset = pred["op"], pred.get("offset", 0)
    symbol = PRED_SYMBOL[op]
    if offset == 0 or symbol is None:
        return rasp.Comparison[op]
    cmp = CMP[symbol]
    return lambda key, query: cmp(key, query + offset)


def _n_ary(f: Callable[..., Any], args: Sequence[rasp.SOp]) -> rasp.SOp:
    """SequenceMap over 2 args, or over 3 via a tuple of the first two (as tracr's lib does)."""
    if len(args) == 2:
        return rasp.SequenceMap(f, args[0], args[1])
    pair = rasp.SequenceMap(lambda a, b: (a, b), args[0], args[1])
    return rasp.SequenceMap(lambda ab, c: f(ab[0], ab[1], c), pair, args[2])


def spec_to_rasp(spec: dict[str, Any]) -> rasp.SOp | None:
    """The spec's output as a tracr RASP expression (None when `output` is null).

    Raises:
        BadInputError: The spec is malformed (see `validate`).
    """
    order = validate(spec)
    if spec.get("output") is None:
        return None
    built: dict[str, rasp.RASPExpr] = {}
    for node in order:
        op, nid = node["op"], node["id"]
        if op == "tokens":
            expr: rasp.RASPExpr = rasp.tokens
        elif op == "indices":
            expr = rasp.indices
        elif op in ("map", "sequence_map"):
            args = [built[a] for a in node["args"]]
            factors = linear_factors(node)
            if factors is not None:
                expr = rasp.LinearSequenceMap(args[0], args[1], *factors)
            else:
                f = make_fn(node["fn"])
                expr = rasp.Map(f, args[0]) if op == "map" else _n_ary(f, args)
        elif op == "select":
            expr = rasp.Select(built[node["keys"]], built[node["queries"]], make_predicate(node["predicate"]))
        elif op == "aggregate":
            expr = rasp.Aggregate(built[node["selector"]], built[node["sop"]], default=node.get("default"))
        else:
            expr = rasp.SelectorWidth(built[node["selector"]])
        if op not in ("tokens", "indices"):
            expr = expr.named(nid)
            if node.get("encoding", "categorical") == "numerical":
                expr = rasp.numerical(expr)
        built[nid] = expr
    return built[spec["output"]]  # type: ignore[return-value]


def run_spec(spec: dict[str, Any], tokens: Sequence[Any]) -> list[Any]:
    """The spec's output on one input, by tracr's RASP evaluator (None where undefined).

    Raises:
        BadInputError: The spec is malformed or has no output. Errors raised while
            evaluating (e.g. a comparison of incompatible values) propagate unchanged.
    """
    from interpbench.program import evaluate

    program = spec_to_rasp(spec)
    if program is None:
        raise spec_error("the spec has no output (nothing was found)")
    return evaluate(program, list(tokens))
