"""The bank of a bottom-up RASP search: observationally distinct candidates by size, the budget, the best partial.

Two SOps (or selectors) are observationally equivalent when their values agree on every
training and validation input; only the first (smallest) is kept. Every new SOp is tried
as the program; a match is re-checked with tracr's own evaluator before it counts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from interpbench.program import evaluate
from interpbench.rasp_expr import Expr, numerical_output, to_spec
from interpbench.rasp_fit import MAX_KEYS
from interpbench.rasp_spec import spec_to_rasp
from interpbench.rasp_values import Data, Sel, Sop, same_output
from interpbench.synthesis import ProgramTask


class Exhausted(Exception):
    """The candidate budget ran out."""


class Found(Exception):
    """A candidate matched and passed tracr's evaluator."""

    def __init__(self, expr: Expr) -> None:
        super().__init__()
        self.expr = expr


class Bank:
    """Banks of observationally distinct SOps and selectors by size, the candidate count and the best partial.

    Every SOp added is tried as the program; the search (`interpbench.rasp_search.Search`)
    grows the banks.
    """

    def __init__(self, task: ProgramTask) -> None:
        self.task, self.data = task, Data(task)
        self.budget, self.searched = task.budget, 0
        self.sops: dict[int, list[Sop]] = {}
        self.sels: dict[int, list[Sel]] = {}
        self.seen: dict[bytes, Sop] = {}
        self.seen_sel: set[bytes] = set()
        self.best: tuple[float, Expr | None] = (-1.0, None)
        self.numerical_twins: dict[int, Expr] = {}
        self.n_train_positions = int(self.data.valid[: self.data.n_train].sum())

    def tick(self) -> None:
        """Counts one candidate; raises Exhausted when the budget is spent."""
        if self.searched >= self.budget:
            raise Exhausted
        self.searched += 1

    def add_sop(self, expr: Expr, size: int, vals: np.ndarray, defined: np.ndarray, kind: str,
                numerical: bool = False) -> Sop | None:  # fmt: skip
        """Counts a candidate SOp; keeps it if its values are new, and tries it as the program (`add_sops` of one)."""
        before = len(self.seen)
        self.add_sops(lambda _m: expr, size, np.asarray(vals)[None], defined, [kind], numerical)
        return self.sops[size][-1] if len(self.seen) > before else None

    def add_sops(self, make: Callable[[int], Expr], size: int, vals: np.ndarray, defined: np.ndarray,
                 kinds: Sequence[str], numerical: bool | Sequence[bool] = False,
                 skip: np.ndarray | None = None) -> None:  # fmt: skip
        """`add_sop` of candidates m = 0, 1, ... in order: expression `make(m)`, values vals[m], kind kinds[m].

        Same counts, banks, best partial and programs tried as one `add_sop` per candidate
        (a candidate with skip[m] is only counted, as a categorical aggregate tracr cannot
        evaluate). The comparison with the target runs once for the run; an expression is
        built only for a candidate with new values.

        Args:
            make: m -> the expression of candidate m.
            size: Their size.
            vals: [M, n, T] values.
            defined: Where they are defined: [n, T] for all, or [M, n, T].
            kinds: [M] "tok" or "num".
            numerical: Whether they are numerical SOps: for all, or [M].
            skip: [M] candidates only counted, or None.
        """
        d = self.data
        clean = np.where(defined, vals, 0.0) + 0.0
        agree = np.zeros(clean.shape, dtype=bool)
        kind_of = np.asarray(kinds)
        for kind in dict.fromkeys(kinds):
            rows = kind_of == kind
            agree[rows] = d.agree(clean[rows], kind)
        agree &= defined
        hit = np.where(defined, agree, d.t_none)[:, : d.n_train][:, d.valid[: d.n_train]]  # [M, training positions]
        counts, full = hit.sum(1), hit.all(1)
        flags = [bool(numerical)] * len(clean) if isinstance(numerical, bool) else [bool(f) for f in numerical]
        shared = defined.ndim == 2
        for m in range(len(clean)):
            self.tick()
            if skip is not None and skip[m]:
                continue
            where = defined if shared else defined[m]
            key = self.sop_key(clean[m], where, kinds[m], flags[m])
            if key in self.seen:
                continue
            expr = make(m)
            sop = Sop(expr, size, clean[m].copy(), where if shared else where.copy(), kinds[m], flags[m])
            self.seen[key] = sop
            self.sops.setdefault(size, []).append(sop)
            score = float(counts[m]) / self.n_train_positions
            if score > self.best[0]:
                self.best = (score, expr)
            if full[m] and d.accept(agree[m], where):
                self.try_program(expr if flags[m] or not self.task.numerical else numerical_output(expr))

    def sop_key(self, vals: np.ndarray, defined: np.ndarray, kind: str, numerical: bool) -> bytes:
        """Observational-equivalence key: the values on every input (training and validation)."""
        return (kind + str(numerical)).encode() + defined.tobytes() + vals.tobytes()

    def add_sel(self, expr: Expr, size: int, mat: np.ndarray | None, packed: np.ndarray | None = None) -> None:
        """Counts a candidate selector (give `mat` or its bit-packed form); keeps it if its values are new."""
        self.tick()
        if packed is None:
            assert mat is not None
            packed = np.packbits(mat, axis=-1)
        key = packed.tobytes()
        if key not in self.seen_sel:
            self.seen_sel.add(key)
            self.sels.setdefault(size, []).append(Sel(expr, size, packed, self.data.T))

    def try_program(self, expr: Expr) -> None:
        """Re-checks a matching candidate with tracr's evaluator; raises Found if it holds."""
        if self.verify(expr):
            raise Found(expr)

    def verify(self, expr: Expr) -> bool:
        """Whether tracr's evaluator, run on the spec of `expr`, reproduces the target on every input."""
        d = self.data
        program = spec_to_rasp(to_spec(expr, "found"))
        agree = np.zeros(d.valid.shape, dtype=bool)
        defined = np.zeros(d.valid.shape, dtype=bool)
        outs = list(self.task.outputs) + list(self.task.valid_outputs)
        try:
            for b, xs in enumerate(d.rows):
                for i, (g, y) in enumerate(zip(evaluate(program, xs), outs[b])):
                    defined[b, i] = g is not None
                    same = same_output(g, y, numerical=self.task.numerical, atol=self.task.atol)
                    agree[b, i] = g is not None and y is not None and same
        except Exception:  # noqa: BLE001 - a candidate tracr cannot evaluate is no match
            return False
        return d.accept(agree, defined)

    def of_size(self, size: int, test: str) -> list[Sop]:
        """SOps of one size usable as select inputs ("select"), aggregated values, or fit inputs."""
        out = []
        for x in self.sops.get(size, []):
            full = bool((x.defined == self.data.valid).all())
            if test == "select" and (x.numerical or not full):
                continue
            if test == "aggregate" and (x.numerical or not full):
                continue
            if test == "fit" and len(x.codes(self.data)[1]) > MAX_KEYS:
                continue
            out.append(x)
        return out

    def as_numerical(self, expr: Expr) -> Expr:
        """One numerical twin per element-wise expression (so a shared SOp is emitted once).

        The arguments of a linear sequence map become numerical too: tracr compiles a
        numerical sequence map only as a LinearSequenceMap of numerical SOps.
        """
        if id(expr) not in self.numerical_twins:
            args = expr.args
            if expr.op == "sequence_map" and expr.fn and expr.fn["kind"] == "linear":
                args = tuple(self.as_numerical(a) if a.op in ("map", "sequence_map") else a for a in args)
            self.numerical_twins[id(expr)] = dataclasses.replace(expr, args=args, numerical=True)
        return self.numerical_twins[id(expr)]
