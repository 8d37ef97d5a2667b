"""The `interpbench.selector/1` DSL: selector programs that say where an attention head looks.

A program selects key j for query i iff `key_feature(j) OP query_feature(i) + offset`, then
attends uniformly to the selected keys, with BOS added always (`bos="always"`, tracr's
SelectorWidth heads) or only when nothing is selected (`bos="fallback"`, tracr's Aggregate
heads). Features are per-position functions of the input (see FEATURES). Patterns use model
coordinates: row/column 0 is BOS, token k sits at k + 1; row 0 is all zero.

Specs are JSON dicts interpreted by this module; `render_source` writes the equivalent Python
for people (and for tests that check the renderer is faithful). Nothing here runs spec text.
"""

from __future__ import annotations

import ast
import dataclasses
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from interpbench.errors import BadInputError

FORMAT = "interpbench.selector/1"
OPS = ("==", "!=", "<", "<=", ">", ">=", "true")
BOS_MODES = ("fallback", "always")
TOKEN_FEATURES = ("token", "prev_token", "next_token")  # token-valued; None where undefined
NUMBER_FEATURES = ("index", "length", "rev_index", "const", "token_count", "lt_count", "leq_count", "rank")
FEATURES = TOKEN_FEATURES + NUMBER_FEATURES  # plus "is:<repr of a token>"
ORDER_FEATURES = ("lt_count", "leq_count", "rank")  # need an ordered vocabulary
IS_PREFIX = "is:"
SPEC_KEYS = ("format", "query", "key", "op", "offset", "bos", "causal")
COMPARE: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "==": np.equal, "!=": np.not_equal, "<": np.less, "<=": np.less_equal,
    ">": np.greater, ">=": np.greater_equal,
}  # fmt: skip
_FLIP = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
# Python source of each feature at position `p` of `tokens` (length `n`); None where undefined.
_SOURCE = {
    "token": "tokens[{p}]",
    "index": "{p}",
    "length": "n",
    "rev_index": "n - 1 - {p}",
    "const": "0",
    "prev_token": "tokens[{p} - 1] if {p} > 0 else None",
    "next_token": "tokens[{p} + 1] if {p} + 1 < n else None",
    "token_count": "tokens.count(tokens[{p}])",
    "lt_count": "sum(t < tokens[{p}] for t in tokens)",
    "leq_count": "sum(t <= tokens[{p}] for t in tokens)",
    "rank": "sum((t, m) < (tokens[{p}], {p}) for m, t in enumerate(tokens))",
}
_NULLABLE = ("prev_token", "next_token")


def is_value(name: str) -> Any:
    """The token value named by an `is:<repr>` feature (a str, int, float or bool literal).

    The suffix is parsed as a literal (`ast.literal_eval`, which evaluates no code) and must be
    written canonically (`repr` of the value), so each value has one name.

    Raises:
        BadInputError: `name` is not a valid `is:` feature.
    """
    text = name[len(IS_PREFIX) :]
    try:
        value = ast.literal_eval(text) if len(text) <= 100 else None
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        value = None
    if not isinstance(value, (str, int, float)) or repr(value) != text:
        raise BadInputError(f"feature {name!r}: after 'is:' write a token literal such as is:'a' or is:3")
    return value


def is_feature(value: Any) -> str:
    """The `is:<repr>` feature name of a token value (numpy scalars as their Python value)."""
    if isinstance(value, np.generic):
        value = value.item()
    return f"{IS_PREFIX}{value!r}"


def check_feature(name: Any) -> None:
    """Raises BadInputError unless `name` is a feature of the DSL."""
    if not isinstance(name, str):
        raise BadInputError(f"selector feature must be a string, got {name!r}")
    if name.startswith(IS_PREFIX):
        is_value(name)
    elif name not in FEATURES:
        raise BadInputError(f"unknown selector feature {name!r}; features: {', '.join(FEATURES)}, is:<token>")


@dataclasses.dataclass(frozen=True)
class SelectorProgram:
    """One selector program (see the module docstring for its meaning).

    Attributes:
        query: Query feature name.
        key: Key feature name.
        op: Comparison, one of OPS ("true" selects every key).
        offset: Added to the query feature; 0 whenever a token feature is not numeric.
        bos: "fallback" (BOS only when nothing is selected) or "always".
        causal: Keys after the query are never selected.
    """

    query: str
    key: str
    op: str
    offset: int = 0
    bos: str = "fallback"
    causal: bool = False

    def __post_init__(self) -> None:
        check_feature(self.query)
        check_feature(self.key)
        if self.op not in OPS:
            raise BadInputError(f"selector op must be one of {OPS}, got {self.op!r}")
        if isinstance(self.offset, bool) or not isinstance(self.offset, int):
            raise BadInputError(f"selector offset must be an integer, got {self.offset!r}")
        if self.bos not in BOS_MODES:
            raise BadInputError(f"selector bos must be one of {BOS_MODES}, got {self.bos!r}")
        if not isinstance(self.causal, bool):
            raise BadInputError(f"selector causal must be true or false, got {self.causal!r}")

    def to_json(self) -> dict[str, Any]:
        """The `interpbench.selector/1` spec."""
        return {"format": FORMAT, "query": self.query, "key": self.key, "op": self.op,
                "offset": self.offset, "bos": self.bos, "causal": self.causal}  # fmt: skip

    @classmethod
    def from_json(cls, spec: Any) -> SelectorProgram:
        """Validates and reads a spec.

        Raises:
            BadInputError: Anything malformed, missing or unknown (one line).
        """
        if not isinstance(spec, dict):
            raise BadInputError(f"a selector spec must be a JSON object, got {type(spec).__name__}")
        if spec.get("format") != FORMAT:
            raise BadInputError(f"selector spec format must be {FORMAT!r}, got {spec.get('format')!r}")
        unknown = sorted(str(k) for k in spec if k not in SPEC_KEYS)
        if unknown:
            raise BadInputError(f"selector spec has unknown field {unknown[0]!r}; fields: {', '.join(SPEC_KEYS)}")
        missing = [k for k in SPEC_KEYS if k not in spec]
        if missing:
            raise BadInputError(f"selector spec lacks field {missing[0]!r}")
        return cls(spec["query"], spec["key"], spec["op"], spec["offset"], spec["bos"], spec["causal"])


class Features:
    """Every feature of a batch of inputs as [n, width] float arrays, NaN where undefined.

    Token values become order-preserving codes: the values themselves when every token is a
    number (so offsets and comparisons with indices mean what they mean in Python), else
    their rank in Python's order over the batch's distinct tokens (or first-seen order when
    the tokens cannot be ordered; then only == and != apply to them).
    """

    def __init__(self, inputs: Sequence[Sequence[Any]]) -> None:
        seqs = [list(x) for x in inputs]
        self.lengths = np.array([len(s) for s in seqs], dtype=np.int64)
        self.width = int(self.lengths.max(initial=0))
        distinct = list(dict.fromkeys(v for s in seqs for v in s))
        self.numeric = all(isinstance(v, numbers.Real) for v in distinct)
        try:
            order, self.ordered = sorted(distinct), True
        except TypeError:
            order, self.ordered = distinct, False
        code = {v: float(v) if self.numeric else float(i) for i, v in enumerate(order)}
        self._code = code
        self.real = np.arange(self.width)[None, :] < self.lengths[:, None]  # [n, width]
        self.codes = np.full((len(seqs), self.width), np.nan)
        for b, s in enumerate(seqs):
            self.codes[b, : len(s)] = [code[v] for v in s]
        self._memo: dict[str, np.ndarray] = {}

    def _mask(self, values: np.ndarray) -> np.ndarray:
        return np.where(self.real, values, np.nan)

    def get(self, name: str) -> np.ndarray:
        """[n, width] values of feature `name` (NaN at padding and where it is None)."""
        if name not in self._memo:
            self._memo[name] = self._compute(name)
        return self._memo[name]

    def _compute(self, name: str) -> np.ndarray:
        check_feature(name)
        idx = np.broadcast_to(np.arange(self.width, dtype=np.float64)[None, :], self.real.shape)
        lengths = self.lengths[:, None].astype(np.float64)
        c = self.codes
        if name.startswith(IS_PREFIX):
            value = is_value(name)
            hit = np.zeros(c.shape)
            for v, code in self._code.items():
                if v == value:
                    hit = np.where(c == code, 1.0, hit)
            return self._mask(hit)
        if name in ORDER_FEATURES and not self.ordered:
            raise BadInputError(f"feature {name!r} needs tokens with an order; these tokens have none")
        other, mine = c[:, None, :], c[:, :, None]  # [n, p, q]: token at q, token at p
        simple = {
            "token": lambda: c,
            "index": lambda: idx,
            "length": lambda: np.broadcast_to(lengths, c.shape),
            "rev_index": lambda: lengths - 1 - idx,
            "const": lambda: np.zeros(c.shape),
            "prev_token": lambda: np.pad(c[:, :-1], ((0, 0), (1, 0)), constant_values=np.nan),
            "next_token": lambda: np.where(idx + 1 < lengths, np.pad(c[:, 1:], ((0, 0), (0, 1)),
                                                                     constant_values=np.nan), np.nan),
            "token_count": lambda: (other == mine).sum(-1),
            "lt_count": lambda: (other < mine).sum(-1),
            "leq_count": lambda: (other <= mine).sum(-1),
            "rank": lambda: ((other < mine) | ((other == mine) & (idx[:, None, :] < idx[:, :, None]))).sum(-1),
        }  # fmt: skip
        return self._mask(np.asarray(simple[name](), dtype=np.float64))


def check_comparable(program: SelectorProgram, features: Features) -> None:
    """Raises BadInputError if the program compares things Python cannot compare on these tokens."""
    if program.op == "true" or features.numeric:
        return
    token_side = [f in TOKEN_FEATURES for f in (program.query, program.key)]
    if token_side[0] != token_side[1]:
        raise BadInputError(f"selector compares non-numeric tokens with numbers ({program.key} vs {program.query})")
    if token_side[0] and program.offset != 0:
        raise BadInputError(f"selector adds offset {program.offset} to non-numeric tokens")
    if token_side[0] and not features.ordered and program.op not in ("==", "!="):
        raise BadInputError(f"selector orders tokens ({program.op}) that have no order")


def selection(program: SelectorProgram, features: Features) -> np.ndarray:
    """[n, width, width] bool: key j (last axis) selected for query i, over real positions."""
    check_comparable(program, features)
    q = features.get(program.query)[:, :, None] + program.offset
    k = features.get(program.key)[:, None, :]
    valid = ~np.isnan(q) & ~np.isnan(k)
    if program.op == "true":
        sel = valid
    else:
        with np.errstate(invalid="ignore"):
            sel = valid & COMPARE[program.op](k, q)
    if program.causal:
        sel = sel & np.tri(features.width, dtype=bool)[None]
    return sel


def pattern_from_selection(sel: np.ndarray, real: np.ndarray, bos: str, n_positions: int) -> np.ndarray:
    """Uniform attention over the selected keys plus BOS by `bos`, in model coordinates.

    Args:
        sel: [n, width, width] selected keys per query (real positions only).
        real: [n, width] real query positions.
        bos: "fallback" or "always".
        n_positions: Size of the output's last two axes (at least width + 1).

    Returns:
        [n, n_positions, n_positions]; rows sum to 1 at real queries, 0 elsewhere.
    """
    n, w = real.shape
    if n_positions < w + 1:
        raise BadInputError(f"n_positions {n_positions} is too small for inputs of length {w}")
    count = sel.sum(-1)
    out = np.zeros((n, n_positions, n_positions))
    if bos == "always":
        weight = 1.0 / (count + 1)
        bos_col = np.where(real, weight, 0.0)
    else:
        weight = 1.0 / np.maximum(count, 1)
        bos_col = np.where(real & (count == 0), 1.0, 0.0)
    out[:, 1 : w + 1, 1 : w + 1] = np.where(sel, weight[:, :, None], 0.0)
    out[:, 1 : w + 1, 0] = bos_col
    return out


def pattern(program: SelectorProgram, inputs: Sequence[Sequence[Any]], n_positions: int) -> np.ndarray:
    """[n, n_positions, n_positions] attention of `program` on `inputs` (token values, BOS excluded)."""
    features = Features(inputs)
    return pattern_from_selection(selection(program, features), features.real, program.bos, n_positions)


def _offset_text(offset: int) -> str:
    return "" if offset == 0 else f" + {offset}" if offset > 0 else f" - {-offset}"


def describe(program: SelectorProgram) -> str:
    """One line, e.g. "key index == query rev_index; BOS only when nothing matches"."""
    p = program
    if p.op == "true":
        what = "every key"
    elif p.query == "const" and p.key == "const":
        what = "every key" if COMPARE[p.op](np.float64(0), np.float64(p.offset)) else "no key"
    elif p.query == "const":
        what = f"key {p.key} {p.op} {p.offset}"
    elif p.key == "const":
        what = f"every key where query {p.query} {_FLIP[p.op]} {-p.offset}"
    else:
        what = f"key {p.key} {p.op} query {p.query}{_offset_text(p.offset)}"
    bos = "BOS always attended" if p.bos == "always" else "BOS only when nothing matches"
    return f"{what}{'; keys up to the query' if p.causal else ''}; {bos}"


def _feature_source(name: str, p: str) -> str:
    if name.startswith(IS_PREFIX):
        return f"int(tokens[{p}] == {is_value(name)!r})"
    return _SOURCE[name].format(p=p)


def render_source(program: SelectorProgram, head: str = "") -> str:
    """Readable Python `def attention(tokens)` returning the pattern as a list of lists.

    Row/column 0 is BOS and token k sits at k + 1, as in `pattern`, which it equals exactly
    on every input `pattern` accepts.
    """
    p = program
    nullable = [f for f in (p.query, p.key) if f in _NULLABLE]
    test = "True" if p.op == "true" else f"k {p.op} q{_offset_text(p.offset)}"
    if nullable:
        guards = [f"{v} is not None" for v, f in (("q", p.query), ("k", p.key)) if f in _NULLABLE]
        test = " and ".join(guards + ([] if p.op == "true" else [test]))
    title = f"{head}: {describe(p)}" if head else describe(p)
    lines = [
        "def attention(tokens):",
        f'    """{title}."""',
        "    n = len(tokens)",
        "    matrix = [[0.0] * (n + 1) for _ in range(n + 1)]  # row/column 0 is BOS",
        "    for i in range(n):",
        f"        q = {_feature_source(p.query, 'i')}  # query {p.query}",
        "        keys = []",
        f"        for j in range({'i + 1' if p.causal else 'n'}):",
        f"            k = {_feature_source(p.key, 'j')}  # key {p.key}",
        f"            if {test}:",
        "                keys.append(j)",
    ]
    if p.bos == "always":
        lines += [
            "        weight = 1 / (len(keys) + 1)  # BOS is always attended",
            "        matrix[i + 1][0] = weight",
            "        for j in keys:",
            "            matrix[i + 1][j + 1] = weight",
        ]
    else:
        lines += [
            "        if not keys:  # nothing selected: all attention on BOS",
            "            matrix[i + 1][0] = 1.0",
            "        for j in keys:",
            "            matrix[i + 1][j + 1] = 1 / len(keys)",
        ]
    lines.append("    return matrix")
    return "\n".join(lines) + "\n"
