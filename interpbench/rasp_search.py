"""Bottom-up enumerative search for a whole RASP program reproducing a model's input/output behaviour.

Expressions (`interpbench.rasp_expr`) are enumerated by size (leaves 1, each operation 1
plus its children, a selector offset 1 more) and kept only when their values
(`interpbench.rasp_values`: numpy arrays over training and validation inputs at once) are
new (observational equivalence, on training and validation inputs: two SOps that agree on
the training inputs alone may still differ where it matters).

Grammar: tokens, indices (and `task.selector_hints` translated into RASP by
`interpbench.rasp_hints`, seeded at size 1); Select(keys, queries, key OP query + offset);
SelectorWidth; categorical Aggregate (only where tracr's evaluator takes one value: each
query selects one key, or equal numbers), numerical mean Aggregate (default 0) over
element-wise SOps valued in MEAN_VALUES; Maps (indicators x == v of token-valued SOps,
x != v of the tokens at one size more, the constant 0) and SequenceMaps (x + y, x - y)
that grow features. Programs are RASP, not always tracr-compilable: tracr averages only
0/1 values (a mean of -1/0/1 values recovers pair_balance) and maps numerical SOps only
element-wise and linearly.
A program is a new SOp equal to the target, or a Map (of one SOp) or SequenceMap (of two)
fitted to it (`interpbench.rasp_fit`). A candidate must be None (an aggregate selecting
nothing) exactly where the model emits no value and equal to the model's output
everywhere else. A match is re-checked with tracr's own evaluator before it is returned.
Widths, aggregates and selectors are computed a run at a time (`interpbench.search_batch`),
with the counts, banks and programs of offering each candidate alone.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from interpbench.rasp_bank import Bank, Exhausted, Found
from interpbench.rasp_expr import INDICES, TOKENS, Expr, linear, to_spec
from interpbench.rasp_fit import (
    CMP_OPS,
    COEFS,
    MAX_KEYS,
    MAX_MOD,
    PROBE,
    TABLE_SUPPORT,
    functional_pairs,
    functional_sops,
    map_fits,
    pair_fits,
)
from interpbench.rasp_hints import FLIP, HINT_OPS, ORDER_PREDS, feature_values, hint_selector
from interpbench.rasp_values import UFUNC, Data, Sel, Sop
from interpbench.search_batch import aggregate_runs, select_candidates, selector_widths
from interpbench.synthesis import ProgramTask, SearchResult

__all__ = [  # the search, and the names of its parts re-exported
    "CMP_OPS", "COEFS", "FLIP", "HINT_OPS", "INDICES", "MAX_KEYS", "MAX_MOD", "ORDER_PREDS", "PROBE", "TABLE_SUPPORT",
    "TOKENS", "UFUNC", "Bank", "Data", "Exhausted", "Expr", "Found", "Search", "Sel", "Sop", "linear", "search_program",
    "to_spec",
]  # fmt: skip

OFFSETS = (-1, 1, -2, 2)  # selector offsets (numeric keys and queries only)
OFFSET_PREDS = ("EQ", "LEQ", "GEQ")  # other offsets are equivalent on integers
PREDS = ("EQ", "NEQ", "LT", "LEQ", "GT", "GEQ")
SUM_MAX_SIZE = 6  # growth sums x + y, x - y are built up to this size
MEAN_VALUES = (-1.0, 0.0, 1.0)  # element-wise SOps with values in this set get numerical means
WIDTH_BATCH = 1024  # selectors whose widths are computed per batch
AGGREGATE_BATCH = 1 << 21  # aggregate values (candidates x n x T) computed per batch


class Search(Bank):
    """The enumeration: grows the bank size by size from the grammar, fitting the target at each size."""

    def __init__(self, task: ProgramTask) -> None:
        super().__init__(task)
        self.level = 0
        self.tokens: Sop | None = None

    def run(self) -> SearchResult:
        """Grows the banks size by size until a program is found, the budget is spent or max_size is reached."""
        note = ""
        max_size = int(self.task.max_size)
        try:
            for size in range(1, max_size + 1):
                self.level = size
                self.grow(size)
            note = f"not found up to size {max_size} ({self.searched} candidates)"
        except Found as hit:
            spec = to_spec(hit.expr, "found")
            return SearchResult("found", spec, 1.0, self.searched, self.budget,
                                f"found at size {self.level} after {self.searched} candidates")  # fmt: skip
        except Exhausted:
            note = f"not found within budget of {self.budget} candidates"
        score, best = self.best
        spec = to_spec(best, "not_found") if best is not None else None  # kept for inspection; scores 0
        return SearchResult("not_found", spec, score if best is not None else float("nan"), self.searched,
                            self.budget, note)  # fmt: skip

    def grow(self, s: int) -> None:
        """Adds every new SOp of size s (each tried as the program), fits the target, then adds selectors."""
        d = self.data
        if s == 1:
            self.tokens = self.add_sop(TOKENS, 1, d.tokens, d.valid, d.tok_kind)
            self.add_sop(INDICES, 1, np.broadcast_to(np.arange(d.T, dtype=float), d.valid.shape), d.valid, "num")
            self.seed_hints()
            return
        sels = list(self.sels.get(s - 1, []))
        for start in range(0, len(sels), WIDTH_BATCH):
            part = sels[start : start + WIDTH_BATCH]
            self.add_sops(lambda m, part=part: Expr("selector_width", (part[m].expr,)), s, selector_widths(part),
                          d.valid, ["num"] * len(part))  # fmt: skip
        self.aggregates(s)
        if s == 2:
            self.add_sop(Expr("map", (INDICES,), linear([0])), 2, np.zeros(d.valid.shape), d.valid, "num")
        self.grow_maps(s)
        self.grow_sums(s)
        self.fit_maps(s)  # after the new SOps: of two programs of one size, the one without a fit wins
        self.fit_pairs(s)
        self.selects(s)  # last: selectors of size s only feed larger expressions

    def selects(self, s: int) -> None:
        """Selectors of size s: every comparison of same-kind SOps (offsets on numbers cost 1 more)."""
        d = self.data
        for a in range(1, s - 1):
            for off_size, offsets in ((1, (0,)), (2, OFFSETS)):
                b = s - off_size - a
                if b < 1:
                    continue
                queries, keys = self.of_size(b, "select"), self.of_size(a, "select")
                ops = partial(_select_ops, offsets, d.ordered)
                for k, q, op, off, key, packed in select_candidates(keys, queries, offsets, ops, d):
                    if key in self.seen_sel:  # an equivalent selector is banked: only counted
                        self.tick()
                        continue
                    pred = {"op": op, "offset": off}
                    self.add_sel(Expr("select", (k.expr, q.expr), pred=pred), s, None, packed.copy())
        if s == 3:
            true = {"op": "TRUE", "offset": 0}
            self.add_sel(Expr("select", (TOKENS, TOKENS), pred=true), s, d.pair_valid.copy())

    def aggregates(self, s: int) -> None:
        """Categorical aggregates (one value per query, as tracr's evaluator requires) and numerical means."""
        d = self.data
        for a in range(1, s - 1):
            sops = self.of_size(s - 1 - a, "aggregate")
            if not sops:
                continue
            vals = np.stack([x.vals for x in sops])  # [M, n, T]
            is_tok = np.array([x.kind == "tok" for x in sops])
            binary = np.array([x.kind == "num" and x.expr.op in ("map", "sequence_map")
                               and bool(np.isin(x.vals[d.valid], MEAN_VALUES).all()) for x in sops])  # fmt: skip
            sels = self.sels.get(a, [])
            twins = [self.as_numerical(x.expr) for x, m in zip(sops, binary) if m] if sels else []
            kinds = [x.kind for x in sops] + ["num"] * len(twins)
            flags = [False] * len(sops) + [True] * len(twins)
            width = len(kinds)  # candidates per selector: categorical, then numerical means
            per = max(1, AGGREGATE_BATCH // (width * d.valid.size))
            for start in range(0, len(sels), per):
                part = sels[start : start + per]
                mats = np.stack([sel.matrix() for sel in part])
                out, defined, bad = aggregate_runs(mats, vals, is_tok, d.valid)  # [S, M, n, T], [S, n, T], [S, M]
                outs = np.concatenate([out, out[:, binary]], axis=1)  # per selector: categorical, then means
                defs = np.concatenate([np.broadcast_to(defined[:, None], out.shape),
                                       np.broadcast_to(d.valid, out[:, binary].shape)], axis=1)  # fmt: skip
                skips = np.concatenate([bad, np.zeros((len(part), len(twins)), dtype=bool)], axis=1)

                def make(m: int, part: list[Sel] = part) -> Expr:
                    sel, r = part[m // width].expr, m % width
                    if r < len(sops):
                        return Expr("aggregate", (sel, sops[r].expr))
                    return Expr("aggregate", (sel, twins[r - len(sops)]), numerical=True, default=0)

                self.add_sops(make, s, outs.reshape(-1, *d.valid.shape), defs.reshape(-1, *d.valid.shape),
                              kinds * len(part), flags * len(part), skips.reshape(-1))  # fmt: skip

    def grow_maps(self, s: int) -> None:
        """Indicators x == v of token-valued SOps, and x != v of the tokens at one size more."""
        sources = [(x, "==") for x in self.of_size(s - 1, "select") if x.kind == "tok" or x.expr is TOKENS]
        if s == 3:
            sources += [(x, "!=") for x in self.of_size(1, "select") if x.expr is TOKENS]
        for x, op in sources:
            for v in np.unique(x.vals[self.data.valid]):
                fn = {"kind": "indicator", "value": self.data.py_value(v, x.kind), "op": op}
                hit = UFUNC[op](x.vals, v).astype(float)
                self.add_sop(Expr("map", (x.expr,), fn), s, hit, self.data.valid, "num")

    def grow_sums(self, s: int) -> None:
        """x + y and x - y of integer SOps, sizes adding up to s - 1 (only up to size SUM_MAX_SIZE)."""
        d = self.data
        if s > SUM_MAX_SIZE:
            return
        for a in range(1, (s - 1) // 2 + 1):
            xs = [x for x in self.of_size(a, "select") if x.kind == "num"]
            ys = [y for y in self.of_size(s - 1 - a, "select") if y.kind == "num"]
            for i, x in enumerate(xs):
                for j, y in enumerate(ys):
                    if a == s - 1 - a and j <= i:
                        continue
                    for coef in ((1, 1), (1, -1), (-1, 1)):
                        v = coef[0] * x.vals + coef[1] * y.vals
                        self.add_sop(Expr("sequence_map", (x.expr, y.expr), linear(coef)), s, v, d.valid, "num")

    # ---- selector hints -----------------------------------------------------------------
    def feature(self, name: str) -> Sop | None:
        """The bank SOp of a selector/1 feature (added at size 1), or None if untranslatable."""
        made = feature_values(name, self.data)
        if made is None:
            return None
        expr, vals, defined, kind = made
        key = self.sop_key(np.where(defined, vals, 0.0) + 0.0, defined, kind, False)
        return self.seen.get(key) or self.add_sop(expr, 1, vals, defined, kind)

    def seed_hints(self) -> None:
        """Adds each translatable hint's features and selector to the banks at size 1."""
        assert self.tokens is not None
        for hint in self.task.selector_hints:
            key, query = self.feature(str(hint.get("key"))), self.feature(str(hint.get("query")))
            if key is None or query is None:
                continue
            made = hint_selector(hint, key, query, self.tokens, self.data)
            if made is not None:
                self.add_sel(made[0], 1, made[1])

    # ---- fitting the target -----------------------------------------------------------
    def fit_maps(self, s: int) -> None:
        """Maps of size s: one per SOp of size s - 1 of which the target is a function."""
        sops = self.sops.get(s - 1, [])
        if not sops:
            return
        for x, good in zip(sops, functional_sops(sops, self.data)):
            self.tick()
            if not good:
                continue  # the target is not a function of x
            for fn in map_fits(x, self.data):
                self.try_program(Expr("map", (x.expr,), fn, numerical=self.task.numerical))

    def fit_pairs(self, s: int) -> None:
        """SequenceMaps of size s: pairs of SOps of which the target is a function (all inputs, see fit_maps)."""
        d = self.data
        for a in range(1, (s - 1) // 2 + 1):
            xs, ys = self.of_size(a, "fit"), self.of_size(s - 1 - a, "fit")
            if not ys:
                continue
            yc = np.stack([y.codes(d)[0][d.valid] for y in ys])  # [M, P]
            ky = max(len(y.codes(d)[1]) for y in ys)
            for i, x in enumerate(xs):
                lo = i + 1 if a == s - 1 - a else 0
                if lo >= len(ys):
                    continue
                for y, functional in zip(ys[lo:], functional_pairs(x, yc[lo:], ky, d)):
                    self.tick()
                    if functional:
                        for fn in pair_fits(x, y, d):
                            self.try_program(Expr("sequence_map", (x.expr, y.expr), fn, numerical=self.task.numerical))


def _select_ops(offsets: tuple[int, ...], ordered: bool, kind: str) -> tuple[str, ...]:
    """The predicates of selectors with these offsets whose keys are of `kind`."""
    if offsets != (0,):
        return OFFSET_PREDS if kind == "num" else ()
    return PREDS if (kind == "num" or ordered) else ("EQ", "NEQ")


def search_program(task: ProgramTask) -> SearchResult:
    """Searches RASP programs by size for one reproducing `task` (see the module docstring).

    Returns:
        "found" with the program once a candidate fits the training and validation
        outputs and tracr's evaluator agrees; otherwise "not_found", with the best partial
        candidate (highest share of training positions equal to the target) as the program
        and the note "not found within budget of N candidates".
    """
    return Search(task).run()
