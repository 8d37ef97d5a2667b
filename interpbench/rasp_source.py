"""Readable Python source of an `interpbench.rasp/1` spec, built with `from tracr.rasp import rasp`."""

from __future__ import annotations

import keyword
import re
from typing import Any

from interpbench.rasp_format import PRED_SYMBOL, linear_factors, validate

ARG_NAMES = ("x", "y", "z")


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


def render_predicate(pred: dict[str, Any]) -> str:
    """Python source of a PRED."""
    op, offset = pred["op"], pred.get("offset", 0)
    symbol = PRED_SYMBOL[op]
    if offset == 0 or symbol is None:
        return f"rasp.Comparison.{op}"
    return f"lambda k, q: k {symbol} q {'+' if offset > 0 else '-'} {abs(offset)}"


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
