"""Exact batched RASP evaluation: each expression evaluated once over many inputs of one length.

tracr's reference evaluator (`rasp.evaluate`) walks Python lists one input at a time and
calls a predicate for every (query, key) pair. Ground truth evaluates thousands of
substituted inputs, so here an SOp's values over a batch are integer codes into a table of
the distinct values it takes: a Map or SequenceMap calls its function once per distinct
(pair of) value(s), a Select calls its predicate once per pair of distinct values, and
selectors are boolean arrays. Every value is the very object tracr's evaluator would
produce (same functions on the same arguments, tracr's own `_mean` for aggregates), so
results are equal to per-input evaluation, not merely close; only integer means are
computed in numpy, where that is provably the same float.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, Union

import numpy as np
from tracr.rasp import rasp

INT_MEAN_LIMIT = 2**52  # integer sums below this are exact in float64, so numpy's mean equals Python's


class Unbatchable(Exception):
    """The program holds an expression this evaluator does not batch (use per-input evaluation)."""


@dataclasses.dataclass(frozen=True)
class Column:
    """An SOp's values over a batch: `table[codes[b, i]]` is its value at position i of input b.

    Attributes:
        codes: [batch, length] int64 indices into `table`; every table entry is used.
        table: The distinct values taken (the objects per-input evaluation returns).
    """

    codes: np.ndarray
    table: tuple[Any, ...]

    def values(self, b: int) -> list[Any]:
        """The values on input `b`, as `rasp.evaluate` returns them."""
        return [self.table[c] for c in self.codes[b].tolist()]

    def is_none(self) -> np.ndarray:
        """[batch, length] True where the value is None (e.g. an aggregate that selects nothing)."""
        return np.array([v is None for v in self.table], dtype=bool)[self.codes]


Value = Union[Column, np.ndarray]  # an SOp's column or a selector's [batch, query, key] bool array
Groups = dict[int, tuple[np.ndarray, list[Value]]]  # length -> (rows of that length, values of the expressions)


def _key(v: Any) -> tuple[Any, ...]:
    """Identity of a value for sharing a code: same type and equal (floats: same sign of zero too)."""
    if type(v) is float:
        return (float, v, math.copysign(1.0, v))
    return (type(v), v)


def intern(values: Sequence[Any]) -> tuple[np.ndarray, tuple[Any, ...]]:
    """Codes of `values` into a table of their distinct values, each kept as first seen.

    Unhashable values get one code each (nothing is shared, nothing is wrong).
    """
    kinds = set(map(type, values))
    plain = len(kinds) == 1 and kinds <= {str, int, bool}  # equal values of one such type are interchangeable
    try:
        keys = values if plain else list(map(_key, values))
        index = {k: i for i, k in enumerate(dict.fromkeys(keys))}  # codes in order of first appearance
    except TypeError:
        return np.arange(len(values), dtype=np.int64), tuple(values)
    codes = np.fromiter(map(index.__getitem__, keys), dtype=np.int64, count=len(values))
    first = dict(zip(reversed(keys), reversed(values)))  # key -> the value seen first (earlier ones overwrite)
    return codes, tuple(first[k] for k in index)


def column(codes: np.ndarray, table: Sequence[Any]) -> Column:
    """A Column from codes into `table`, keeping only the used entries, equal ones merged."""
    shape = codes.shape
    used = np.flatnonzero(np.bincount(codes.ravel(), minlength=len(table)))
    sub, kept = intern([table[u] for u in used.tolist()])
    remap = np.zeros(len(table), dtype=np.int64)
    remap[used] = sub
    return Column(remap[codes].reshape(shape), kept)


def _pairwise(fst: tuple[Any, ...], snd: tuple[Any, ...], codes: np.ndarray, f: Callable[[Any, Any], Any]) -> Column:
    """Column of `f(fst[c // len(snd)], snd[c % len(snd)])` at each pair code c, one call per distinct code."""
    uniq, inverse = np.unique(codes, return_inverse=True)
    out = [f(fst[u // len(snd)], snd[u % len(snd)]) for u in uniq.tolist()]
    return column(inverse.reshape(codes.shape), out)


class BatchEvaluator:
    """Evaluates RASP expressions over a batch of equal-length inputs, each expression once.

    Example:
        ev = BatchEvaluator([[1, 2, 3], [3, 2, 1]])
        ev.evaluate(program).values(0)  # == rasp.evaluate(program, [1, 2, 3])
    """

    def __init__(self, inputs: Sequence[Sequence[Any]]) -> None:
        """Args: inputs: The batch; every input must have the same length (at least one input)."""
        lengths = {len(xs) for xs in inputs}
        if len(lengths) != 1:
            raise ValueError(f"a batch needs inputs of one length, got lengths {sorted(lengths)}")
        if 0 in lengths:
            raise Unbatchable("empty inputs")
        self.inputs = [list(xs) for xs in inputs]
        self.batch, self.length = len(self.inputs), lengths.pop()
        self._memo: dict[int, Value] = {}
        self._keep: list[Any] = []  # the expressions memoised by id stay alive
        self._by_type: dict[type, Callable[[Any], Value]] = {
            rasp.TokensType: self._tokens, rasp.IndicesType: self._indices, rasp.LengthType: self._length,
            rasp.Map: self._map, rasp.SequenceMap: self._sequence_map, rasp.LinearSequenceMap: self._sequence_map,
            rasp.Full: self._full, rasp.ConstantSOp: self._constant_sop, rasp.SelectorWidth: self._selector_width,
            rasp.Aggregate: self._aggregate, rasp.Select: self._select, rasp.SelectorAnd: self._selector_and,
            rasp.SelectorOr: self._selector_or, rasp.SelectorNot: self._selector_not,
            rasp.ConstantSelector: self._constant_selector,
        }  # fmt: skip

    def evaluate(self, expr: rasp.RASPExpr) -> Value:
        """The expression's Column (SOp) or [batch, query, key] bool array (selector).

        Raises:
            Unbatchable: An expression type tracr's evaluator would not evaluate either,
                or a constant selector with non-boolean entries.
        """
        key = id(expr)
        if key not in self._memo:
            fn = self._by_type.get(type(expr))  # tracr dispatches on the exact type too
            if fn is None:
                raise Unbatchable(f"cannot batch {type(expr).__name__} {expr.label}")
            self._memo[key] = fn(expr)
            self._keep.append(expr)
        return self._memo[key]

    def _broadcast(self, values: Sequence[Any]) -> Column:
        codes, table = intern(values)
        return Column(np.broadcast_to(codes, (self.batch, len(values))).copy(), table)

    def _tokens(self, expr: Any) -> Column:
        codes, table = intern([x for xs in self.inputs for x in xs])
        return Column(codes.reshape(self.batch, self.length), table)

    def _indices(self, expr: Any) -> Column:
        return self._broadcast(list(range(self.length)))

    def _length(self, expr: Any) -> Column:
        return self._broadcast([self.length] * self.length)

    def _full(self, expr: Any) -> Column:
        return self._broadcast([expr.fill] * self.length)

    def _constant_sop(self, expr: Any) -> Column:
        if len(expr.value) != self.length:
            if expr.check_length:
                raise ValueError(f"Constant len {len(expr.value)} doesn't match input len {self.length}.")
            raise Unbatchable(f"{expr.label}: constant of another length than the input")
        return self._broadcast(list(expr.value))

    def _map(self, expr: Any) -> Column:
        inner = self.evaluate(expr.inner)
        out = [expr.f(x) if x is not None else None for x in inner.table]
        return column(inner.codes, out)

    def _sequence_map(self, expr: Any) -> Column:
        fst, snd = self.evaluate(expr.fst), self.evaluate(expr.snd)
        return _pairwise(fst.table, snd.table, fst.codes * len(snd.table) + snd.codes,
                         lambda x, y: expr.f(x, y) if None not in [x, y] else None)  # fmt: skip

    def _select(self, expr: Any) -> np.ndarray:
        keys, queries = self.evaluate(expr.keys), self.evaluate(expr.queries)
        q, k = queries.codes[:, :, None], keys.codes[:, None, :]
        try:  # every pair of distinct values; the pairs that never meet may be ones the predicate refuses
            table = np.array([[bool(expr.predicate(kv, qv)) for kv in keys.table] for qv in queries.table], dtype=bool)
            return table[q, k]
        except Exception:  # only the pairs that occur, so an error is raised exactly where tracr's would be
            met = _pairwise(queries.table, keys.table, q * len(keys.table) + k,
                            lambda qv, kv: bool(expr.predicate(kv, qv)))  # fmt: skip
            return np.array(met.table, dtype=bool)[met.codes]

    def _constant_selector(self, expr: Any) -> np.ndarray:
        value = expr.value
        if expr.check_length and self.length != len(value):
            raise ValueError(f"Constant len {self.length} doesn't match input len {len(value)}.")
        if len(value) != self.length or any(type(v) not in (bool, np.bool_) for row in value for v in row):
            raise Unbatchable(f"{expr.label}: constant selector that is not a square boolean matrix")
        return np.broadcast_to(np.array(value, dtype=bool), (self.batch, self.length, self.length))

    def _selector_and(self, expr: Any) -> np.ndarray:
        return np.logical_and(self.evaluate(expr.fst), self.evaluate(expr.snd))

    def _selector_or(self, expr: Any) -> np.ndarray:
        return np.logical_or(self.evaluate(expr.fst), self.evaluate(expr.snd))

    def _selector_not(self, expr: Any) -> np.ndarray:
        return np.logical_not(self.evaluate(expr.inner))

    def _selector_width(self, expr: Any) -> Column:
        sel = self.evaluate(expr.selector)
        return column(sel.sum(-1), list(range(sel.shape[-1] + 1)))

    def _aggregate(self, expr: Any) -> Column:
        sel, values = self.evaluate(expr.selector), self.evaluate(expr.sop)
        count = sel.sum(-1)  # [batch, query]
        rows = np.arange(self.batch)[:, None]
        default = len(values.table)
        codes = np.where(count == 0, default, values.codes[rows, sel.argmax(-1)])  # none or one selected
        table = [*values.table, expr.default]
        multi = np.nonzero(count >= 2)
        if multi[0].size:
            chosen = sel[multi]  # [m, key]
            if all(type(v) in (int, bool) and abs(v) < INT_MEAN_LIMIT // self.length for v in values.table):
                ints = np.array([int(v) for v in values.table], dtype=np.int64)
                means = np.where(chosen, ints[values.codes[multi[0]]], 0).sum(-1) / count[multi]
                uniq, inverse = np.unique(means, return_inverse=True)  # never -0.0 or NaN: an int sum over a count
                codes[multi] = len(table) + inverse.reshape(-1)
                table += uniq.tolist()  # Python's int sum / len: exact integers, one correctly rounded division
            else:
                picked = np.where(chosen, values.codes[multi[0]], -1)
                uniq, inverse = np.unique(picked, axis=0, return_inverse=True)
                means = [rasp._mean([values.table[c] for c in row if c >= 0], expr.default) for row in uniq.tolist()]
                codes[multi] = len(table) + inverse.reshape(-1)
                table += means
        return column(codes, table)


def evaluate_rows(exprs: Sequence[rasp.RASPExpr], sequences: Sequence[Sequence[Any]]) -> Groups:
    """Values of `exprs` on every sequence, one batch per length: {length: (rows, values)}.

    `values[i]` is a `Column` (SOp) or a [batch, query, key] array (selector) over the
    rows of that length, equal to `rasp.evaluate` on each; a program the batched
    evaluator refuses is evaluated one sequence at a time (same values, slower).
    """
    from interpbench.program import evaluate_many

    lengths = np.array([len(xs) for xs in sequences], dtype=np.int64)
    out = {}
    for length in sorted(set(lengths.tolist())):
        rows = np.flatnonzero(lengths == length)
        batch = [sequences[r] for r in rows.tolist()]
        try:
            ev = BatchEvaluator(batch)
            out[length] = (rows, [ev.evaluate(e) for e in exprs])
        except Unbatchable:
            each = [evaluate_many(exprs, xs) for xs in batch]
            values: list[Any] = []
            for i, e in enumerate(exprs):
                if isinstance(e, rasp.Selector):
                    values.append(np.array([np.asarray(v[i], dtype=float) for v in each]))
                else:
                    codes, table = intern([y for v in each for y in v[i]])
                    values.append(Column(codes.reshape(len(batch), length), table))
            out[length] = (rows, values)
    return out
