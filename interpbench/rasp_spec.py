"""The `interpbench.rasp/1` program spec: validated, built into real tracr RASP, rendered as Python.

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

import keyword
import operator
import re
from collections.abc import Callable, Sequence
from typing import Any

from tracr.rasp import rasp

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
ARG_NAMES = ("x", "y", "z")


def _bad(msg: str) -> BadInputError:
    return BadInputError(f"rasp spec: {msg}")


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def fn_arity(fn: Any, where: str) -> int:
    """Validates an FN form and returns how many arguments it takes."""
    if not isinstance(fn, dict) or fn.get("kind") not in FN_KINDS:
        kind = fn.get("kind") if isinstance(fn, dict) else fn
        raise _bad(f"{where}: unknown fn kind {kind!r}; kinds: {list(FN_KINDS)}")
    kind = fn["kind"]
    if kind == "linear":
        coef, const, mod = fn.get("coef"), fn.get("const", 0), fn.get("mod")
        if not isinstance(coef, list) or not 1 <= len(coef) <= 3 or not all(_is_number(a) for a in coef):
            raise _bad(f"{where}: linear fn needs 1 to 3 numeric coefficients, got {coef!r}")
        if not _is_number(const):
            raise _bad(f"{where}: linear fn const must be a number, got {const!r}")
        if mod is not None and not (isinstance(mod, int) and not isinstance(mod, bool) and mod >= 2):
            raise _bad(f"{where}: linear fn mod must be an integer >= 2 or null, got {mod!r}")
        return len(coef)
    if kind in ("indicator", "compare"):
        op = fn.get("op", "==")
        if op not in CMP:
            raise _bad(f"{where}: {kind} fn op must be one of {list(CMP)}, got {op!r}")
        if kind == "indicator" and (not _is_scalar(fn.get("value")) or "value" not in fn):
            raise _bad(f"{where}: indicator fn needs a scalar value")
        return 1 if kind == "indicator" else 2
    table = fn.get("table")
    if not isinstance(table, list) or not table:
        raise _bad(f"{where}: table fn needs a non-empty list of [[args...], value] entries")
    arity = None
    for entry in table:
        ok = isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], list) and _is_scalar(entry[1])
        if not ok or not 1 <= len(entry[0]) <= 3 or not all(_is_scalar(k) for k in entry[0]):
            raise _bad(f"{where}: bad table entry {entry!r}; expected [[arg, ...], value]")
        if arity is not None and len(entry[0]) != arity:
            raise _bad(f"{where}: table keys have different lengths")
        arity = len(entry[0])
    if not _is_scalar(fn.get("default")):
        raise _bad(f"{where}: table default must be a scalar")
    assert arity is not None
    return arity


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


def render_fn(fn: dict[str, Any]) -> str:
    """Python source of an (already validated) FN form as a lambda over x, y, z."""
    kind = fn["kind"]
    if kind == "linear":
        coef, const, mod = fn["coef"], fn.get("const", 0), fn.get("mod")
        names = ARG_NAMES[: len(coef)]
        text = ""
        for a, name in zip(coef, names):
            if a == 0:
                continue
            mag = "" if abs(a) == 1 and isinstance(a, int) else f"{abs(a)!r} * "
            sign = ("-" if a < 0 else "") if not text else (" - " if a < 0 else " + ")
            text += f"{sign}{mag}{name}"
        if const != 0 or not text:
            text += repr(const) if not text else f" {'-' if const < 0 else '+'} {abs(const)!r}"
        body = f"({text}) % {mod}" if mod is not None else text
        return f"lambda {', '.join(names)}: {body}"
    if kind == "indicator":
        return f"lambda x: 1 if x {fn.get('op', '==')} {fn['value']!r} else 0"
    if kind == "compare":
        return f"lambda x, y: 1 if x {fn.get('op', '==')} y else 0"
    arity = len(fn["table"][0][0])
    names = ARG_NAMES[:arity]
    items = ", ".join(f"{tuple(k)!r}: {v!r}" for k, v in fn["table"])
    key = f"({names[0]},)" if arity == 1 else f"({', '.join(names)})"
    return f"lambda {', '.join(names)}: {{{items}}}.get({key}, {fn.get('default')!r})"


def make_predicate(pred: dict[str, Any]) -> Any:
    """`rasp.Comparison` for offset 0 (or TRUE/FALSE), else a closure `key OP (query + offset)`."""
    op, offset = pred["op"], pred.get("offset", 0)
    symbol = PRED_SYMBOL[op]
    if offset == 0 or symbol is None:
        return rasp.Comparison[op]
    cmp = CMP[symbol]
    return lambda key, query: cmp(key, query + offset)


def render_predicate(pred: dict[str, Any]) -> str:
    """Python source of a PRED."""
    op, offset = pred["op"], pred.get("offset", 0)
    symbol = PRED_SYMBOL[op]
    if offset == 0 or symbol is None:
        return f"rasp.Comparison.{op}"
    return f"lambda k, q: k {symbol} q {'+' if offset > 0 else '-'} {abs(offset)}"


def validate(spec: Any) -> list[dict[str, Any]]:
    """Checks a spec and returns its nodes in a dependency order.

    Raises:
        BadInputError: One line naming the first problem (format, unknown op, dangling id,
            cycle, wrong child type, bad fn or predicate).
    """
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        got = spec.get("format") if isinstance(spec, dict) else type(spec).__name__
        raise _bad(f"expected format {FORMAT!r}, got {got!r}")
    if spec.get("status", "found") not in SPEC_STATUSES:
        raise _bad(f"status must be one of {list(SPEC_STATUSES)}, got {spec.get('status')!r}")
    nodes = spec.get("nodes")
    if not isinstance(nodes, list):
        raise _bad("'nodes' must be a list")
    by_id: dict[str, dict[str, Any]] = {}
    for k, node in enumerate(nodes):
        if not isinstance(node, dict) or not isinstance(node.get("id"), str):
            raise _bad(f"node {k} must be an object with a string 'id'")
        if node["id"] in by_id:
            raise _bad(f"duplicate node id {node['id']!r}")
        if node.get("op") not in OPS:
            raise _bad(f"node {node['id']!r}: unknown op {node.get('op')!r}; ops: {list(OPS)}")
        by_id[node["id"]] = node
    for node in nodes:
        _check_node(node, by_id)
    out = spec.get("output")
    if out is not None and (out not in by_id or by_id[out]["op"] in SELECTOR_OPS):
        raise _bad(f"output {out!r} is not the id of an SOp node")
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
    where, op = f"node {node['id']!r}", node["op"]
    if op in ("map", "sequence_map"):
        args = node.get("args")
        want = (1,) if op == "map" else (2, 3)
        if not isinstance(args, list) or len(args) not in want:
            raise _bad(f"{where}: {op} needs {' or '.join(map(str, want))} args, got {args!r}")
        if fn_arity(node.get("fn"), where) != len(args):
            raise _bad(f"{where}: fn takes {fn_arity(node['fn'], where)} arguments but the node has {len(args)}")
    if op == "select":
        pred = node.get("predicate")
        if not isinstance(pred, dict) or pred.get("op") not in PRED_SYMBOL:
            raise _bad(f"{where}: predicate op must be one of {list(PRED_SYMBOL)}, got {pred!r}")
        off = pred.get("offset", 0)
        if not isinstance(off, int) or isinstance(off, bool):
            raise _bad(f"{where}: predicate offset must be an integer, got {off!r}")
    if op == "aggregate" and not _is_scalar(node.get("default")):
        raise _bad(f"{where}: aggregate default must be a scalar or null")
    if op in ("map", "sequence_map", "aggregate") and node.get("encoding", "categorical") not in ENCODINGS:
        raise _bad(f"{where}: encoding must be one of {list(ENCODINGS)}, got {node.get('encoding')!r}")
    for role, child in children(node):
        if not isinstance(child, str) or child not in by_id:
            raise _bad(f"{where}: {role} refers to unknown node {child!r}")
        is_selector = by_id[child]["op"] in SELECTOR_OPS
        if is_selector != (role == "selector"):
            want = "a selector" if role == "selector" else "an SOp"
            raise _bad(f"{where}: {role} {child!r} must be {want}")


def _topological(nodes: list[dict[str, Any]], by_id: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    order: list[dict[str, Any]] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(nid: str, path: list[str]) -> None:
        if state.get(nid) == 2:
            return
        if state.get(nid) == 1:
            cycle = path[path.index(nid):] + [nid]
            raise _bad(f"cycle through nodes {' -> '.join(cycle)}")
        state[nid] = 1
        for _, child in children(by_id[nid]):
            visit(child, path + [nid])
        state[nid] = 2
        order.append(by_id[nid])

    try:
        for node in nodes:
            visit(node["id"], [])
    except RecursionError:
        raise _bad("the program is nested too deeply") from None
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


def _identifiers(order: list[dict[str, Any]]) -> dict[str, str]:
    """A distinct Python identifier for every node id."""
    names: dict[str, str] = {}
    used = {"rasp", "program"}
    for node in order:
        base = re.sub(r"\W", "_", node["id"])
        if not base or base[0].isdigit() or keyword.iskeyword(base):
            base = f"n_{base}"
        name, k = base, 1
        while name in used:
            k += 1
            name = f"{base}_{k}"
        used.add(name)
        names[node["id"]] = name
    return names


def render_source(spec: dict[str, Any]) -> str:
    """Readable Python building an equivalent program: `def program()` returning the output SOp.

    Raises:
        BadInputError: The spec is malformed.
    """
    order = validate(spec)
    names = _identifiers(order)
    lines = ["from tracr.rasp import rasp", "", "", "def program():"]
    if spec.get("output") is None:
        return "\n".join([*lines, "    return None  # no program was found", ""])
    for node in order:
        op, name = node["op"], names[node["id"]]
        if op in ("tokens", "indices"):
            lines.append(f"    {name} = rasp.{op}")
            continue
        if op == "map":
            expr = f"rasp.Map({render_fn(node['fn'])}, {names[node['args'][0]]})"
        elif op == "sequence_map":
            args = [names[a] for a in node["args"]]
            factors = linear_factors(node)
            if factors is not None:
                expr = f"rasp.LinearSequenceMap({args[0]}, {args[1]}, {factors[0]!r}, {factors[1]!r})"
            elif len(args) == 3:
                lines.append(f"    {name}_xy = rasp.SequenceMap(lambda a, b: (a, b), {args[0]}, {args[1]})")
                f = render_fn(node["fn"])
                lines.append(f"    {name}_f = {f}")
                expr = f"rasp.SequenceMap(lambda ab, c: {name}_f(ab[0], ab[1], c), {name}_xy, {args[2]})"
            else:
                expr = f"rasp.SequenceMap({render_fn(node['fn'])}, {args[0]}, {args[1]})"
        elif op == "select":
            pred = render_predicate(node["predicate"])
            expr = f"rasp.Select({names[node['keys']]}, {names[node['queries']]}, {pred})"
        elif op == "aggregate":
            expr = f"rasp.Aggregate({names[node['selector']]}, {names[node['sop']]}, default={node.get('default')!r})"
        else:
            expr = f"rasp.SelectorWidth({names[node['selector']]})"
        expr = f"{expr}.named({node['id']!r})"
        if node.get("encoding", "categorical") == "numerical":
            expr = f"rasp.numerical({expr})"
        lines.append(f"    {name} = {expr}")
    lines += [f"    return {names[spec['output']]}", ""]
    return "\n".join(lines)


def run_spec(spec: dict[str, Any], tokens: Sequence[Any]) -> list[Any]:
    """The spec's output on one input, by tracr's RASP evaluator (None where undefined).

    Raises:
        BadInputError: The spec is malformed or has no output. Errors raised while
            evaluating (e.g. a comparison of incompatible values) propagate unchanged.
    """
    from interpbench.program import evaluate

    program = spec_to_rasp(spec)
    if program is None:
        raise _bad("the spec has no output (nothing was found)")
    return evaluate(program, list(tokens))
