"""Vectorised values of candidate RASP expressions on a set of inputs, and the target they must equal.

Values are numpy arrays over training and validation inputs at once: an SOp is [n, T]
values plus a defined mask (None where an aggregate selects nothing), a selector
[n, T, T] booleans (query, key). Token values are their ranks in the sorted vocabulary, so
comparisons keep Python's order. The target (the model's outputs) is held as dense codes,
vocabulary ranks and numbers, with its own code where the model emits no value (`None`
in the task's outputs: tracr writes nothing to the output space there).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from interpbench.rasp_expr import Expr
from interpbench.synthesis import ProgramTask

UFUNC = {"EQ": np.equal, "NEQ": np.not_equal, "LT": np.less, "LEQ": np.less_equal, "GT": np.greater,
         "GEQ": np.greater_equal, "==": np.equal, "!=": np.not_equal, "<": np.less, "<=": np.less_equal,
         ">": np.greater, ">=": np.greater_equal}  # fmt: skip


@dataclasses.dataclass(eq=False)
class Sop:
    """An SOp in the bank: values on all inputs (train rows first) and where they are defined."""

    expr: Expr
    size: int
    vals: np.ndarray
    defined: np.ndarray
    kind: str  # "tok" (vocabulary ranks) or "num"
    numerical: bool = False
    _codes: tuple[np.ndarray, list[Any]] | None = None

    def codes(self, data: Data) -> tuple[np.ndarray, list[Any]]:
        """Dense codes [n, T] (-1 where undefined) and the Python value of each code."""
        if self._codes is None:
            uniq, inv = np.unique(self.vals[self.defined], return_inverse=True)
            codes = np.full(self.vals.shape, -1, dtype=np.int32)
            codes[self.defined] = inv
            self._codes = (codes, [data.py_value(v, self.kind) for v in uniq])
        return self._codes


@dataclasses.dataclass(eq=False)
class Sel:
    """A selector in the bank: [n, query, key] booleans, stored bit-packed along the keys."""

    expr: Expr
    size: int
    packed: np.ndarray
    n_keys: int

    def matrix(self) -> np.ndarray:
        """[n, query, key] booleans."""
        return np.unpackbits(self.packed, axis=-1, count=self.n_keys).astype(bool)


class Data:
    """Training and validation inputs and the target, as padded arrays."""

    def __init__(self, task: ProgramTask) -> None:
        self.task = task
        self.rows = [list(x) for x in task.inputs] + [list(x) for x in task.valid_inputs]
        outs = [list(y) for y in task.outputs] + [list(y) for y in task.valid_outputs]
        self.n_train, n = len(task.inputs), len(self.rows)
        self.T = t = max([len(x) for x in self.rows] + [1])
        lengths = np.array([len(x) for x in self.rows])
        self.valid = np.arange(t)[None, :] < lengths[:, None]
        self.pair_valid = self.valid[:, :, None] & self.valid[:, None, :]
        vocab = list(dict.fromkeys(task.vocab))
        self.numeric_vocab = all(_is_num(v) for v in vocab)
        try:
            self.vocab = sorted(vocab)
            self.ordered = True
        except TypeError:
            self.vocab, self.ordered = vocab, False
        self.tok_kind = "num" if self.numeric_vocab else "tok"
        rank = {v: i for i, v in enumerate(self.vocab)}
        self.tokens = np.zeros((n, t))
        for b, xs in enumerate(self.rows):
            self.tokens[b, : len(xs)] = [float(x) if self.numeric_vocab else rank[x] for x in xs]
        # target in three spaces: dense codes, vocabulary ranks, numbers
        self.tol = task.atol if task.numerical else 1e-9
        self.t_tok = np.full((n, t), -1.0)
        self.t_num = np.full((n, t), np.nan)
        self.t_none = np.zeros((n, t), dtype=bool)
        for b, ys in enumerate(outs):
            self.t_none[b, : len(ys)] = [y is None for y in ys]
        flat = [(b, i, y) for b, ys in enumerate(outs) for i, y in enumerate(ys) if y is not None]
        if task.numerical:
            for b, i, y in flat:
                self.t_num[b, i] = float(y)
            self.t_code, self.code_values = _cluster(self.t_num, self.valid & ~self.t_none, task.atol)
        else:
            values = list(dict.fromkeys([*(task.output_values or ()), *(y for _, _, y in flat)]))
            index = {_key(v): k for k, v in enumerate(values)}
            self.t_code = np.full((n, t), -1, dtype=np.int64)
            for b, i, y in flat:
                self.t_code[b, i] = index[_key(y)]
                if _is_num(y):
                    self.t_num[b, i] = float(y)
                if not self.numeric_vocab and y in rank and not isinstance(y, bool):
                    self.t_tok[b, i] = rank[y]
            self.code_values = values
        self.t_code[self.t_none] = len(self.code_values)  # its own code: no fitted value equals it
        tv = self.t_num[self.valid & ~self.t_none]
        self.t_binary = bool(np.isfinite(tv).all() and np.isin(tv, (0.0, 1.0)).all())
        self.t_integral = bool(np.isfinite(tv).all() and (tv == np.round(tv)).all())

    def py_value(self, v: float, kind: str) -> Any:
        """The Python value of an array entry."""
        if kind == "tok":
            return self.vocab[int(v)]
        return int(v) if float(v).is_integer() else float(v)

    def agree(self, pred: np.ndarray, space: str) -> np.ndarray:
        """[n, T] where `pred` equals the target ("tok" ranks, "num" values, "code" target codes)."""
        if space == "tok":
            return pred == self.t_tok
        if space == "code":
            return pred == self.t_code
        with np.errstate(invalid="ignore"):
            return np.abs(pred - self.t_num) <= self.tol

    def out_value(self, code: int) -> Any:
        """The output value a target code stands for (JSON-safe)."""
        v = self.code_values[code]
        return float(v) if self.task.numerical else v

    def accept(self, agree: np.ndarray, defined: np.ndarray) -> bool:
        """Whether a candidate matches: None exactly where the model is silent, equal elsewhere."""
        live = self.valid & ~self.t_none
        return bool((agree | ~live).all() and (defined == live).all()) if self.valid.any() else False


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating))


def _key(v: Any) -> Any:
    return (type(v) is bool, v)


def _cluster(vals: np.ndarray, mask: np.ndarray, atol: float) -> tuple[np.ndarray, list[float]]:
    """Dense codes for real numbers, values closer than `atol` in one code; code -> mean value."""
    flat = vals[mask]
    order = np.argsort(flat, kind="stable")
    starts = np.r_[True, np.diff(flat[order]) > atol]
    code_sorted = np.cumsum(starts) - 1
    codes = np.full(vals.shape, -1, dtype=np.int64)
    inv = np.empty(len(flat), dtype=np.int64)
    inv[order] = code_sorted
    codes[mask] = inv
    means = [float(flat[inv == k].mean()) for k in range(int(code_sorted[-1]) + 1 if len(flat) else 0)]
    return codes, means


def same_output(got: Any, want: Any, *, numerical: bool, atol: float) -> bool:
    """Whether a program's output value equals the model's: within `atol` if numerical, else by ==.

    Args:
        got: The program's value at one position (not None).
        want: The model's value there (not None).
        numerical: Whether the outputs are numbers compared with a tolerance.
        atol: The absolute tolerance of numerical outputs.
    """
    if numerical:
        try:
            return abs(float(got) - float(want)) <= atol
        except (TypeError, ValueError):
            return False
    return bool(got == want)


def select_matrix(keys: np.ndarray, queries: np.ndarray, op: str, offset: int, pair_valid: np.ndarray) -> np.ndarray:
    """Selector values `key OP query + offset`: keys [..., n, T] and queries [..., n, T] -> [..., n, query, key]."""
    return UFUNC[op](keys[..., None, :], queries[..., :, None] + offset) & pair_valid


def aggregate_values(mat: np.ndarray, vals: np.ndarray, is_tok: np.ndarray,
                     valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Mean aggregates of M SOps by one selector.

    Args:
        mat: The selector [n, query, key] as floats.
        vals: The SOps' values [M, n, T, 1].
        is_tok: [M] whether each SOp is token-valued.
        valid: [n, T] real positions.

    Returns:
        The means [M, n, T] (0 where nothing is selected), where they are defined [n, T],
        and [M] whether a categorical aggregate is wrong: tracr's evaluator takes one
        value, so a query selecting several keys must see equal (and non-token) values.
    """
    cnt = mat.sum(-1)
    multi = (cnt > 1) & valid
    s1 = (mat @ vals)[..., 0]  # [M, n, T]: sums of the selected values
    bad = is_tok & multi.any()
    if multi.any():
        s2 = (mat @ (vals * vals))[..., 0]
        bad |= ((cnt * s2 != s1 * s1) & multi).any((1, 2))  # unequal values would be averaged
    defined = valid & (cnt > 0)
    return np.where(defined, s1 / np.maximum(cnt, 1), 0.0), defined, bad
