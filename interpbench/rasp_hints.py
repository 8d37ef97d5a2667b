"""Selector hints for the whole-program search: `interpbench.selector/1` features and selectors as RASP.

A hint (a head program found by the head search) names a key and a query feature, a
comparison and an offset. Each feature is translated into a RASP expression (the tokens,
the indices, the length as a SelectorWidth, shifted tokens as an Aggregate, token counts,
indicators) and evaluated with tracr's evaluator; the hint becomes a Select of the two.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from interpbench.program import evaluate
from interpbench.rasp_expr import INDICES, TOKENS, Expr, linear, to_spec
from interpbench.rasp_spec import spec_to_rasp
from interpbench.rasp_values import Data, Sop, select_matrix

ORDER_PREDS = ("LT", "LEQ", "GT", "GEQ")
FLIP = {"EQ": "EQ", "NEQ": "NEQ", "LT": "GT", "LEQ": "GEQ", "GT": "LT", "GEQ": "LEQ", "TRUE": "TRUE"}
HINT_OPS = {"==": "EQ", "!=": "NEQ", "<": "LT", "<=": "LEQ", ">": "GT", ">=": "GEQ", "true": "TRUE"}


def feature_expr(name: str, d: Data) -> Expr | None:
    """The RASP expression of a selector/1 feature, or None if it has none."""
    every = Expr("select", (TOKENS, TOKENS), pred={"op": "TRUE", "offset": 0})
    length = Expr("selector_width", (every,))

    def width(op: str) -> Expr:
        return Expr("selector_width", (Expr("select", (TOKENS, TOKENS), pred={"op": op, "offset": 0}),))

    def shifted(off: int) -> Expr:
        return Expr("aggregate", (Expr("select", (INDICES, INDICES), pred={"op": "EQ", "offset": off}), TOKENS))

    exprs: dict[str, Callable[[], Expr]] = {
        "token": lambda: TOKENS, "index": lambda: INDICES, "length": lambda: length,
        "rev_index": lambda: Expr("sequence_map", (length, INDICES), linear([1, -1], -1)),
        "const": lambda: Expr("map", (INDICES,), linear([0])), "prev_token": lambda: shifted(-1),
        "next_token": lambda: shifted(1), "token_count": lambda: width("EQ"),
        "lt_count": lambda: width("LT"), "leq_count": lambda: width("LEQ"),
    }  # fmt: skip
    if name.startswith("is:"):
        match = [v for v in d.vocab if repr(v) == name[3:] or str(v) == name[3:]]
        if not match:
            return None
        fn = {"kind": "indicator", "value": match[0], "op": "=="}
        exprs[name] = lambda: Expr("map", (TOKENS,), fn)
    return exprs[name]() if name in exprs else None


def feature_values(name: str, d: Data) -> tuple[Expr, np.ndarray, np.ndarray, str] | None:
    """(expression, values [n, T], defined [n, T], kind) of a feature, or None if untranslatable."""
    expr = feature_expr(name, d)
    if expr is None:
        return None
    token_valued = name in ("token", "prev_token", "next_token")
    kind = d.tok_kind if token_valued else "num"
    program = spec_to_rasp(to_spec(expr, "found"))
    vals, defined = np.zeros(d.valid.shape), np.zeros(d.valid.shape, dtype=bool)
    rank = {v: i for i, v in enumerate(d.vocab)}
    try:
        for b, xs in enumerate(d.rows):
            for i, v in enumerate(evaluate(program, xs)):
                if v is not None:
                    defined[b, i] = True
                    vals[b, i] = rank[v] if kind == "tok" else float(v)
    except (TypeError, ValueError, KeyError):  # e.g. token counts of tokens without an order
        return None
    return expr, vals, defined, kind


def hint_selector(hint: dict[str, Any], key: Sop, query: Sop, tokens: Sop, d: Data) -> tuple[Expr, np.ndarray] | None:
    """The Select a hint denotes on its key and query features, with its matrix; None if RASP cannot express it.

    Skipped: comparisons of features undefined somewhere or of different kinds, offsets
    on token features, orders of unordered tokens, and causal selectors the causal mask
    would change (the spec has no selector_and). A symmetric selector is keyed on the leaf.
    """
    op = HINT_OPS.get(str(hint.get("op")))
    off = hint.get("offset", 0)
    if op is None or not isinstance(off, int):
        return None
    full = (key.defined == d.valid).all() and (query.defined == d.valid).all()
    if op != "TRUE" and (not full or key.kind != query.kind or (off and key.kind != "num")
                         or (op in ORDER_PREDS and key.kind == "tok" and not d.ordered)):  # fmt: skip
        return None
    mat = d.pair_valid.copy() if op == "TRUE" else select_matrix(key.vals, query.vals, op, off, d.pair_valid)
    if hint.get("causal") and (mat & ~np.tril(np.ones((d.T, d.T), dtype=bool))).any():
        return None
    pred = {"op": op, "offset": off if op != "TRUE" else 0}
    if op == "TRUE":  # reads nothing; on the tokens, as tracr's lib writes it (tracr needs tokens read)
        key = query = tokens
    leaves = (TOKENS, INDICES)
    if key.expr not in leaves and query.expr in leaves and (mat == mat.transpose(0, 2, 1)).all():
        # a symmetric selector reads the same either way round: keys on the leaf, as tracr's lib writes it
        key, query = query, key
        pred = {"op": FLIP[op], "offset": -pred["offset"]}
    return Expr("select", (key.expr, query.expr), pred=pred), mat
