"""The `interpbench.rasp/1` program spec format: its vocabulary, validation and dependency order.

A spec is JSON (see `FORMAT`): nodes in topological order, each a RASP primitive whose
element-wise functions come from a fixed library (`FN` forms below) and whose selector
predicates are comparisons with an optional integer offset. Specs are interpreted: every
function is a closure over the spec's numbers, never text passed to exec or eval.

FN forms (`arity` = number of arguments):
    {"kind": "linear", "coef": [a, ...], "const": c, "mod": m | null}: (a0*x + a1*y + ... + c) % m,
        arity 1..3, integer or float coefficients, `mod` an integer >= 2 or null.
    {"kind": "indicator", "value": v, "op": "=="}: 1 if x OP v else 0 (op optional, default "=="), arity 1.
    {"kind": "compare", "op": "=="}: 1 if x OP y else 0, arity 2.
    {"kind": "table", "table": [[[x, ...], value], ...], "default": v}: the value listed for the
        argument tuple, `default` for one not listed; keys are JSON lists (tuples once loaded).
PRED: {"op": "EQ"|"LT"|"LEQ"|"GT"|"GEQ"|"NEQ"|"TRUE"|"FALSE", "offset": int}, meaning
    key OP (query + offset); offset 0 is the plain `rasp.Comparison`.
A `sequence_map` takes 2 arguments (or 3, built as tracr's n-ary sequence map: a tuple of
the first two, then the third); a numerical one with a linear fn of 2 arguments without
constant or modulus is built as `rasp.LinearSequenceMap`, the form tracr compiles. Nodes
may come in any order without cycles (children first is the convention).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from interpbench.errors import BadInputError

FORMAT = "interpbench.rasp/1"
SPEC_STATUSES = ("found", "partial", "not_found")
OPS = ("tokens", "indices", "map", "sequence_map", "select", "aggregate", "selector_width")
ENCODINGS = ("categorical", "numerical")
FN_KINDS = ("linear", "indicator", "compare", "table")
CMP: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}  # fmt: skip
PRED_SYMBOL = {"EQ": "==", "NEQ": "!=", "LT": "<", "LEQ": "<=", "GT": ">", "GEQ": ">=", "TRUE": None, "FALSE": None}
SELECTOR_OPS = ("select",)


def spec_error(msg: str) -> BadInputError:
    """The one-line error for a malformed spec."""
    return BadInputError(f"rasp spec: {msg}")


def _is_scalar(v: Any) -> bool:
    """A JSON scalar a spec may hold as a value (None, str, int, float, bool)."""
    return v is None or isinstance(v, (str, int, float, bool))


def _is_number(v: Any) -> bool:
    """A real number (bools are not numbers here)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def fn_arity(fn: Any, where: str) -> int:
    """Validates an FN form and returns how many arguments it takes."""
    if not isinstance(fn, dict) or fn.get("kind") not in FN_KINDS:
        kind = fn.get("kind") if isinstance(fn, dict) else fn
        raise spec_error(f"{where}: unknown fn kind {kind!r}; kinds: {list(FN_KINDS)}")
    kind = fn["kind"]
    if kind == "linear":
        coef, const, mod = fn.get("coef"), fn.get("const", 0), fn.get("mod")
        if not isinstance(coef, list) or not 1 <= len(coef) <= 3 or not all(_is_number(a) for a in coef):
            raise spec_error(f"{where}: linear fn needs 1 to 3 numeric coefficients, got {coef!r}")
        if not _is_number(const):
            raise spec_error(f"{where}: linear fn const must be a number, got {const!r}")
        if mod is not None and not (isinstance(mod, int) and not isinstance(mod, bool) and mod >= 2):
            raise spec_error(f"{where}: linear fn mod must be an integer >= 2 or null, got {mod!r}")
        return len(coef)
    if kind in ("indicator", "compare"):
        op = fn.get("op", "==")
        if op not in CMP:
            raise spec_error(f"{where}: {kind} fn op must be one of {list(CMP)}, got {op!r}")
        if kind == "indicator" and (not _is_scalar(fn.get("value")) or "value" not in fn):
            raise spec_error(f"{where}: indicator fn needs a scalar value")
        return 1 if kind == "indicator" else 2
    table = fn.get("table")
    if not isinstance(table, list) or not table:
        raise spec_error(f"{where}: table fn needs a non-empty list of [[args...], value] entries")
    arity = None
    for entry in table:
        ok = isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], list) and _is_scalar(entry[1])
        if not ok or not 1 <= len(entry[0]) <= 3 or not all(_is_scalar(k) for k in entry[0]):
            raise spec_error(f"{where}: bad table entry {entry!r}; expected [[arg, ...], value]")
        if arity is not None and len(entry[0]) != arity:
            raise spec_error(f"{where}: table keys have different lengths")
        arity = len(entry[0])
    if not _is_scalar(fn.get("default")):
        raise spec_error(f"{where}: table default must be a scalar")
    assert arity is not None
    return arity


def validate(spec: Any) -> list[dict[str, Any]]:
    """Checks a spec and returns its nodes in a dependency order.

    Raises:
        BadInputError: One line naming the first problem (format, unknown op, dangling id,
            cycle, wrong child type, bad fn or predicate).
    """
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        got = spec.get("format") if isinstance(spec, dict) else type(spec).__name__
        raise spec_error(f"expected format {FORMAT!r}, got {got!r}")
    if spec.get("status", "found") not in SPEC_STATUSES:
        raise spec_error(f"status must be one of {list(SPEC_STATUSES)}, got {spec.get('status')!r}")
    nodes = spec.get("nodes")
    if not isinstance(nodes, list):
        raise spec_error("'nodes' must be a list")
    by_id: dict[str, dict[str, Any]] = {}
    for k, node in enumerate(nodes):
        if not isinstance(node, dict) or not isinstance(node.get("id"), str):
            raise spec_error(f"node {k} must be an object with a string 'id'")
        if node["id"] in by_id:
            raise spec_error(f"duplicate node id {node['id']!r}")
        if node.get("op") not in OPS:
            raise spec_error(f"node {node['id']!r}: unknown op {node.get('op')!r}; ops: {list(OPS)}")
        by_id[node["id"]] = node
    for node in nodes:
        _check_node(node, by_id)
    out = spec.get("output")
    if out is not None and (out not in by_id or by_id[out]["op"] in SELECTOR_OPS):
        raise spec_error(f"output {out!r} is not the id of an SOp node")
    return _topological(nodes, by_id)


def children(node: dict[str, Any]) -> list[tuple[str, str]]:
    """(role, child id) pairs of a node."""
    op = node["op"]
    if op in ("map", "sequence_map"):
        return [("arg", a) for a in node.get("args", [])]
    if op == "select":
        return [("keys", node.get("keys")), ("queries", node.get("queries"))]
    if op == "aggregate":
        return [("selector", node.get("selector")), ("sop", node.get("sop"))]
    if op == "selector_width":
        return [("selector", node.get("selector"))]
    return []


def _check_node(node: dict[str, Any], by_id: dict[str, dict[str, Any]]) -> None:
    """Raises a one-line BadInputError if `node` is malformed or names children of the wrong type."""
    where, op = f"node {node['id']!r}", node["op"]
    if op in ("map", "sequence_map"):
        args = node.get("args")
        want = (1,) if op == "map" else (2, 3)
        if not isinstance(args, list) or len(args) not in want:
            raise spec_error(f"{where}: {op} needs {' or '.join(map(str, want))} args, got {args!r}")
        if fn_arity(node.get("fn"), where) != len(args):
            raise spec_error(f"{where}: fn takes {fn_arity(node['fn'], where)} arguments but the node has {len(args)}")
    if op == "select":
        pred = node.get("predicate")
        if not isinstance(pred, dict) or pred.get("op") not in PRED_SYMBOL:
            raise spec_error(f"{where}: predicate op must be one of {list(PRED_SYMBOL)}, got {pred!r}")
        off = pred.get("offset", 0)
        if not isinstance(off, int) or isinstance(off, bool):
            raise spec_error(f"{where}: predicate offset must be an integer, got {off!r}")
    if op == "aggregate" and not _is_scalar(node.get("default")):
        raise spec_error(f"{where}: aggregate default must be a scalar or null")
    if op in ("map", "sequence_map", "aggregate") and node.get("encoding", "categorical") not in ENCODINGS:
        raise spec_error(f"{where}: encoding must be one of {list(ENCODINGS)}, got {node.get('encoding')!r}")
    for role, child in children(node):
        if not isinstance(child, str) or child not in by_id:
            raise spec_error(f"{where}: {role} refers to unknown node {child!r}")
        is_selector = by_id[child]["op"] in SELECTOR_OPS
        if is_selector != (role == "selector"):
            want = "a selector" if role == "selector" else "an SOp"
            raise spec_error(f"{where}: {role} {child!r} must be {want}")


def _topological(nodes: list[dict[str, Any]], by_id: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Nodes children first (depth-first); a cycle is a BadInputError."""
    order: list[dict[str, Any]] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(nid: str, path: list[str]) -> None:
        if state.get(nid) == 2:
            return
        if state.get(nid) == 1:
            cycle = path[path.index(nid):] + [nid]
            raise spec_error(f"cycle through nodes {' -> '.join(cycle)}")
        state[nid] = 1
        for _, child in children(by_id[nid]):
            visit(child, path + [nid])
        state[nid] = 2
        order.append(by_id[nid])

    try:
        for node in nodes:
            visit(node["id"], [])
    except RecursionError:
        raise spec_error("the program is nested too deeply") from None
    return order


def linear_factors(node: dict[str, Any]) -> tuple[Any, Any] | None:
    """(a, b) when a numerical 2-argument sequence map is a*x + b*y: built as tracr's LinearSequenceMap.

    tracr compiles a numerical SequenceMap only in that form (and a non-linear one only
    when categorical), so such nodes become `rasp.LinearSequenceMap`, which evaluates alike.
    """
    fn = node["fn"]
    linear = fn["kind"] == "linear" and fn.get("const", 0) == 0 and fn.get("mod") is None
    if node["op"] == "sequence_map" and len(node["args"]) == 2 and linear and node.get("encoding") == "numerical":
        return fn["coef"][0], fn["coef"][1]
    return None
