"""Bottom-up enumerative search for a whole RASP program reproducing a model's input/output behaviour.

Expressions are enumerated by size (leaves 1, each operation 1 plus its children, a
selector offset 1 more) and kept only when their values are new (observational
equivalence, on training and validation inputs: two SOps that agree on the training
inputs alone may still differ where it matters). Values are numpy arrays over training
and validation inputs at once: an SOp is [n, T] values plus a defined mask (None where an aggregate selects
nothing), a selector [n, T, T] booleans (query, key). Token values are their ranks in the
sorted vocabulary, so comparisons keep Python's order.

Grammar: tokens, indices (and `task.selector_hints` translated into RASP, seeded at size
1); Select(keys, queries, key OP query + offset); SelectorWidth; categorical Aggregate
(only where tracr's evaluator takes one value: each query selects one key, or equal
numbers), numerical mean Aggregate (default 0) over element-wise SOps valued in
MEAN_VALUES; Maps (indicators x == v of token-valued SOps, x != v of the tokens at one
size more, the constant 0) and SequenceMaps (x + y, x - y) that grow features. Programs are RASP, not
always tracr-compilable: tracr averages only 0/1 values (a mean of -1/0/1 values recovers
pair_balance) and maps numerical SOps only element-wise and linearly.
A program is a new SOp equal to the target, or a Map (of one SOp) or SequenceMap (of two)
fitted to it: first linear with an optional modulus and small coefficients, then an
indicator or comparison, then a lookup table. A fit must hold on the validation inputs
too, so tables cannot memorise. A candidate must be None (an aggregate selecting nothing)
exactly where the model emits no value (`None` in the task's outputs: tracr writes
nothing to the output space there) and equal to the model's output everywhere else. A
match is re-checked with tracr's own evaluator before it is returned.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from interpbench.synthesis import ProgramTask, SearchResult

COEFS = (1, -1, 2, -2, 3, -3)  # linear-fit coefficients, simplest first
MAX_MOD = 8  # moduli 2..MAX_MOD are tried for integer targets
OFFSETS = (-1, 1, -2, 2)  # selector offsets (numeric keys and queries only)
OFFSET_PREDS = ("EQ", "LEQ", "GEQ")  # other offsets are equivalent on integers
PREDS = ("EQ", "NEQ", "LT", "LEQ", "GT", "GEQ")
ORDER_PREDS = ("LT", "LEQ", "GT", "GEQ")
CMP_OPS = ("==", "!=", "<", "<=", ">", ">=")
UFUNC = {"EQ": np.equal, "NEQ": np.not_equal, "LT": np.less, "LEQ": np.less_equal, "GT": np.greater,
         "GEQ": np.greater_equal, "==": np.equal, "!=": np.not_equal, "<": np.less, "<=": np.less_equal,
         ">": np.greater, ">=": np.greater_equal}  # fmt: skip
SUM_MAX_SIZE = 6  # growth sums x + y, x - y are built up to this size
MEAN_VALUES = (-1.0, 0.0, 1.0)  # element-wise SOps with values in this set get numerical means
MAX_KEYS = 48  # SOps with more distinct values take no part in table fits
PROBE = 24  # linear fits are screened on this many positions before the full check
TABLE_SUPPORT = 2  # a table needs at least this many training positions per key on average
FLIP = {"EQ": "EQ", "NEQ": "NEQ", "LT": "GT", "LEQ": "GEQ", "GT": "LT", "GEQ": "LEQ", "TRUE": "TRUE"}
HINT_OPS = {"==": "EQ", "!=": "NEQ", "<": "LT", "<=": "LEQ", ">": "GT", ">=": "GEQ", "true": "TRUE"}


@dataclasses.dataclass(frozen=True, eq=False)
class Expr:
    """One RASP expression of the search (children by reference)."""

    op: str
    args: tuple[Expr, ...] = ()
    fn: dict[str, Any] | None = None
    pred: dict[str, Any] | None = None
    numerical: bool = False
    default: Any = None


TOKENS, INDICES = Expr("tokens"), Expr("indices")


def linear(coef: Sequence[Any], const: Any = 0, mod: int | None = None) -> dict[str, Any]:
    """A linear FN form."""
    return {"kind": "linear", "coef": list(coef), "const": const, "mod": mod}


def to_spec(out: Expr | None, status: str) -> dict[str, Any]:
    """The `interpbench.rasp/1` spec of an expression DAG (shared sub-expressions emitted once)."""
    nodes: list[dict[str, Any]] = []
    ids: dict[int, str] = {}
    short = {"map": "map", "sequence_map": "seqmap", "select": "select", "aggregate": "aggregate",
             "selector_width": "width"}  # fmt: skip

    def emit(e: Expr) -> str:
        if id(e) in ids:
            return ids[id(e)]
        args = [emit(a) for a in e.args]
        nid = e.op if e.op in ("tokens", "indices") else f"{short[e.op]}{len(nodes) + 1}"
        node: dict[str, Any] = {"id": nid, "op": e.op}
        if e.op in ("map", "sequence_map"):
            node.update(args=args, fn=e.fn, encoding="numerical" if e.numerical else "categorical")
        elif e.op == "select":
            node.update(keys=args[0], queries=args[1], predicate=e.pred)
        elif e.op == "aggregate":
            node.update(selector=args[0], sop=args[1], default=e.default,
                        encoding="numerical" if e.numerical else "categorical")  # fmt: skip
        elif e.op == "selector_width":
            node.update(selector=args[0])
        nodes.append(node)
        ids[id(e)] = nid
        return nid

    output = emit(out) if out is not None else None
    return {"format": "interpbench.rasp/1", "status": status, "nodes": nodes, "output": output}


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


class Exhausted(Exception):
    """The candidate budget ran out."""


class Found(Exception):
    """A candidate matched and passed tracr's evaluator."""

    def __init__(self, expr: Expr) -> None:
        super().__init__()
        self.expr = expr


class Search:
    """The enumeration state: banks of SOps and selectors by size, counters, best partial."""

    def __init__(self, task: ProgramTask) -> None:
        self.task, self.data = task, Data(task)
        self.budget, self.searched = task.budget, 0
        self.sops: dict[int, list[Sop]] = {}
        self.sels: dict[int, list[Sel]] = {}
        self.seen: dict[bytes, Sop] = {}
        self.seen_sel: set[bytes] = set()
        self.best: tuple[float, Expr | None] = (-1.0, None)
        self.level = 0
        self.numerical_twins: dict[int, Expr] = {}
        self.tokens: Sop | None = None
        self.n_train_positions = int(self.data.valid[: self.data.n_train].sum())

    # ---- bookkeeping ------------------------------------------------------------------
    def tick(self) -> None:
        """Counts one candidate; raises Exhausted when the budget is spent."""
        if self.searched >= self.budget:
            raise Exhausted
        self.searched += 1

    def add_sop(self, expr: Expr, size: int, vals: np.ndarray, defined: np.ndarray, kind: str,
                numerical: bool = False) -> Sop | None:  # fmt: skip
        """Counts a candidate SOp; keeps it if its values are new, and tries it as the program."""
        self.tick()
        d = self.data
        vals = np.where(defined, vals, 0.0) + 0.0
        key = self.sop_key(vals, defined, kind, numerical)
        if key in self.seen:
            return None
        self.seen[key] = sop = Sop(expr, size, vals, defined, kind, numerical)
        self.sops.setdefault(size, []).append(sop)
        agree = d.agree(vals, kind) & defined
        n, train = d.n_train, d.valid[: d.n_train]
        hit = np.where(defined, agree, d.t_none)[:n][train]
        score = float(hit.sum()) / self.n_train_positions
        if score > self.best[0]:
            self.best = (score, expr)
        if hit.all() and d.accept(agree, defined):
            self.try_program(expr if numerical or not self.task.numerical else _as_numerical(expr))
        return sop

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
        from interpbench.program import evaluate
        from interpbench.rasp_spec import spec_to_rasp

        d = self.data
        program = spec_to_rasp(to_spec(expr, "found"))
        agree = np.zeros(d.valid.shape, dtype=bool)
        defined = np.zeros(d.valid.shape, dtype=bool)
        outs = list(self.task.outputs) + list(self.task.valid_outputs)
        try:
            for b, xs in enumerate(d.rows):
                for i, (g, y) in enumerate(zip(evaluate(program, xs), outs[b])):
                    defined[b, i] = g is not None
                    agree[b, i] = g is not None and y is not None and _same(g, y, self.task)
        except Exception:  # noqa: BLE001 - a candidate tracr cannot evaluate is no match
            return False
        return d.accept(agree, defined)

    # ---- enumeration ------------------------------------------------------------------
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
        spec = to_spec(best, "partial") if best is not None else None
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
        for sel in list(self.sels.get(s - 1, [])):
            self.add_sop(Expr("selector_width", (sel.expr,)), s, sel.matrix().sum(-1).astype(float), d.valid, "num")
        self.aggregates(s)
        if s == 2:
            self.add_sop(Expr("map", (INDICES,), linear([0])), 2, np.zeros(d.valid.shape), d.valid, "num")
        self.grow_maps(s)
        self.grow_sums(s)
        self.fit_maps(s)  # after the new SOps: of two programs of one size, the one without a fit wins
        self.fit_pairs(s)
        self.selects(s)  # last: selectors of size s only feed larger expressions

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

    def selects(self, s: int) -> None:
        """Selectors of size s: every comparison of same-kind SOps (offsets on numbers cost 1 more)."""
        d = self.data
        for a in range(1, s - 1):
            for off_size, offsets in ((1, (0,)), (2, OFFSETS)):
                b = s - off_size - a
                if b < 1:
                    continue
                queries = self.of_size(b, "select")
                for k in self.of_size(a, "select"):
                    qs = [q for q in queries if q.kind == k.kind]
                    if not qs:
                        continue
                    if offsets != (0,):
                        ops = OFFSET_PREDS if k.kind == "num" else ()
                    else:
                        ops = PREDS if (k.kind == "num" or d.ordered) else ("EQ", "NEQ")
                    qv = np.stack([q.vals for q in qs])[:, :, :, None]
                    for op in ops:
                        for off in offsets:
                            mats = UFUNC[op](k.vals[None, :, None, :], qv + off) & d.pair_valid
                            for q, packed in zip(qs, np.packbits(mats, axis=-1)):
                                pred = {"op": op, "offset": off}
                                self.add_sel(Expr("select", (k.expr, q.expr), pred=pred), s, None, packed)
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
            vals = np.stack([x.vals for x in sops])[..., None]  # [M, n, T, 1]
            is_tok = np.array([x.kind == "tok" for x in sops])
            binary = np.array([x.kind == "num" and x.expr.op in ("map", "sequence_map")
                               and bool(np.isin(x.vals[d.valid], MEAN_VALUES).all()) for x in sops])  # fmt: skip
            for sel in self.sels.get(a, []):
                mat = sel.matrix().astype(float)
                cnt = mat.sum(-1)
                multi = (cnt > 1) & d.valid
                s1 = (mat @ vals)[..., 0]  # [M, n, T]: sums of the selected values
                bad = is_tok & multi.any()
                if multi.any():
                    s2 = (mat @ (vals * vals))[..., 0]
                    bad |= ((cnt * s2 != s1 * s1) & multi).any((1, 2))  # unequal values would be averaged
                defined = d.valid & (cnt > 0)
                out = np.where(defined, s1 / np.maximum(cnt, 1), 0.0)
                for x, v, wrong in zip(sops, out, bad):
                    if wrong:
                        self.tick()
                        continue
                    self.add_sop(Expr("aggregate", (sel.expr, x.expr)), s, v, defined, x.kind)
                for x, v in zip(np.array(sops, dtype=object)[binary], out[binary]):
                    e = Expr("aggregate", (sel.expr, self.as_numerical(x.expr)), numerical=True, default=0)
                    self.add_sop(e, s, v, d.valid, "num", numerical=True)

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
        from interpbench.program import evaluate
        from interpbench.rasp_spec import spec_to_rasp

        d = self.data
        every = Expr("select", (TOKENS, TOKENS), pred={"op": "TRUE", "offset": 0})
        length = Expr("selector_width", (every,))

        def width(op: str) -> Expr:
            return Expr("selector_width", (Expr("select", (TOKENS, TOKENS), pred={"op": op, "offset": 0}),))

        def shifted(off: int) -> Expr:
            return Expr("aggregate", (Expr("select", (INDICES, INDICES), pred={"op": "EQ", "offset": off}), TOKENS))

        exprs = {"token": lambda: TOKENS, "index": lambda: INDICES, "length": lambda: length,
                 "rev_index": lambda: Expr("sequence_map", (length, INDICES), linear([1, -1], -1)),
                 "const": lambda: Expr("map", (INDICES,), linear([0])), "prev_token": lambda: shifted(-1),
                 "next_token": lambda: shifted(1), "token_count": lambda: width("EQ"),
                 "lt_count": lambda: width("LT"), "leq_count": lambda: width("LEQ")}  # fmt: skip
        if name.startswith("is:"):
            match = [v for v in d.vocab if repr(v) == name[3:] or str(v) == name[3:]]
            if not match:
                return None
            fn = {"kind": "indicator", "value": match[0], "op": "=="}
            exprs[name] = lambda: Expr("map", (TOKENS,), fn)
        if name not in exprs:
            return None
        expr = exprs[name]()
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
        key = self.sop_key(np.where(defined, vals, 0.0) + 0.0, defined, kind, False)
        return self.seen.get(key) or self.add_sop(expr, 1, vals, defined, kind)

    def seed_hints(self) -> None:
        """Adds each translatable hint's features and selector to the banks at size 1."""
        d = self.data
        for hint in self.task.selector_hints:
            op = HINT_OPS.get(str(hint.get("op")))
            key, query = self.feature(str(hint.get("key"))), self.feature(str(hint.get("query")))
            off = hint.get("offset", 0)
            if op is None or key is None or query is None or not isinstance(off, int):
                continue
            full = (key.defined == d.valid).all() and (query.defined == d.valid).all()
            if op != "TRUE" and (not full or key.kind != query.kind or (off and key.kind != "num")
                                 or (op in ORDER_PREDS and key.kind == "tok" and not d.ordered)):  # fmt: skip
                continue
            if op == "TRUE":
                mat = d.pair_valid.copy()
            else:
                mat = UFUNC[op](key.vals[:, None, :], query.vals[:, :, None] + off) & d.pair_valid
            if hint.get("causal") and (mat & ~np.tril(np.ones((d.T, d.T), dtype=bool))).any():
                continue  # the causal mask changes this selector; the spec has no selector_and
            pred = {"op": op, "offset": off if op != "TRUE" else 0}
            if op == "TRUE":  # reads nothing; on the tokens, as tracr's lib writes it (tracr needs tokens read)
                key = query = self.tokens
            leaves = (TOKENS, INDICES)
            if key.expr not in leaves and query.expr in leaves and (mat == mat.transpose(0, 2, 1)).all():
                # a symmetric selector reads the same either way round: keys on the leaf, as tracr's lib writes it
                key, query = query, key
                pred = {"op": FLIP[op], "offset": -pred["offset"]}
            self.add_sel(Expr("select", (key.expr, query.expr), pred=pred), 1, mat)

    # ---- fitting the target -----------------------------------------------------------
    def fit_maps(self, s: int) -> None:
        """Maps of size s: one per SOp of size s - 1 of which the target is a function.

        Being a function on training and validation inputs together is necessary for any
        fit to be accepted (linear and indicator forms are functions, and a table fitted
        on the training inputs must also reproduce the validation outputs), so the test
        runs on all of them.
        """
        d = self.data
        sops = self.sops.get(s - 1, [])
        if not sops:
            return
        on = d.valid
        vals = np.stack([x.vals[on] for x in sops])  # [M, P]
        defined = np.stack([x.defined[on] for x in sops])
        t, t_none = d.t_code[on], d.t_none[on]
        keyed = np.where(defined, vals, np.inf)
        order = np.argsort(keyed, axis=1, kind="stable")
        sv, st = np.take_along_axis(keyed, order, 1), t[order]
        sd = np.take_along_axis(defined, order, 1)
        clash = (sv[:, 1:] == sv[:, :-1]) & sd[:, 1:] & sd[:, :-1] & (st[:, 1:] != st[:, :-1])
        ok = ~clash.any(1) & (defined == ~t_none).all(1)
        for x, good in zip(sops, ok):
            self.tick()
            if not good:
                continue  # the target is not a function of x on the training inputs
            for fn, pred, space in self.map_fits(x):
                if self.data.accept(self.data.agree(pred, space) & x.defined, x.defined):
                    self.try_program(Expr("map", (x.expr,), fn, numerical=self.task.numerical))

    def map_fits(self, x: Sop) -> Iterable[tuple[dict[str, Any], np.ndarray, str]]:
        """(fn, prediction, space) candidates for target = f(x), simplest first.

        Linear and indicator forms cannot memorise, so they are fitted on every input at
        once; a table is fitted on the training inputs only (the validation inputs judge it).
        """
        d = self.data
        live = x.defined & ~d.t_none
        if x.kind == "num" and np.isfinite(d.t_num[live]).all():
            for coef, const, mod in _linear_fits([x.vals[live]], d.t_num[live], d):
                pred = coef[0] * x.vals + const
                yield linear(coef, const, mod), pred % mod if mod else pred, "num"
        if d.t_binary:
            ops = CMP_OPS if (x.kind == "num" or d.ordered) else CMP_OPS[:2]
            values = np.unique(x.vals[live])
            t = d.t_num[live]
            for op in ops:
                hits = (UFUNC[op](x.vals[live][None, :], values[:, None]) == (t[None, :] == 1)).all(1)
                for v in values[hits]:
                    fn = {"kind": "indicator", "value": d.py_value(v, x.kind), "op": op}
                    yield fn, UFUNC[op](x.vals, v).astype(float), "num"
        train = live.copy()
        train[d.n_train :] = False
        yield from self.table_fit([x], train)

    def table_fit(self, xs: list[Sop], train: np.ndarray) -> Iterable[tuple[dict[str, Any], np.ndarray, str]]:
        """A lookup table from the arguments' values to the target, fitted where `train` is True.

        Unseen argument tuples map to the most common training output. No table when the
        target is not a function of the arguments there, or when keys have too little support.
        """
        d = self.data
        if not train.any():
            return
        codes = [x.codes(d) for x in xs]
        sizes = [len(c[1]) for c in codes]
        if max(sizes) > MAX_KEYS:
            return
        cell = np.zeros(d.valid.shape, dtype=np.int64)
        for c, k in zip(codes, sizes):
            cell = cell * k + np.maximum(c[0], 0)
        tc = d.t_code[train]
        if len(np.unique(cell[train])) * TABLE_SUPPORT > len(tc):
            return  # too few training positions per key: a table would only memorise
        table = np.full(int(np.prod(sizes)), -1, dtype=np.int64)
        table[cell[train]] = tc
        if not (table[cell[train]] == tc).all():
            return  # not a function on the training inputs
        default = int(np.bincount(tc).argmax())
        pred = np.where(table[cell] >= 0, table[cell], default)
        entries = []
        for k in np.flatnonzero(table >= 0):
            idx, rest = [], int(k)
            for size in reversed(sizes):
                idx.append(rest % size)
                rest //= size
            key = [c[1][i] for c, i in zip(codes, reversed(idx))]
            entries.append([key, self.out_value(int(table[k]))])
        yield {"kind": "table", "table": entries, "default": self.out_value(default)}, pred, "code"

    def out_value(self, code: int) -> Any:
        """The output value a target code stands for (JSON-safe)."""
        v = self.data.code_values[code]
        return float(v) if self.task.numerical else v

    def fit_pairs(self, s: int) -> None:
        """SequenceMaps of size s: pairs of SOps of which the target is a function (all inputs, see fit_maps)."""
        d = self.data
        tc = d.t_code[d.valid]
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
                xc, kx = x.codes(d)[0][d.valid], len(x.codes(d)[1])
                both = (xc[None] >= 0) & (yc[lo:] >= 0)
                m = len(ys) - lo
                cells = (np.arange(m)[:, None] * kx + xc[None]) * ky + yc[lo:]
                cells = np.where(both, cells, m * kx * ky)
                w = np.broadcast_to(tc.astype(float), cells.shape)
                cnt = np.bincount(cells.ravel(), minlength=m * kx * ky + 1)[:-1]
                s1 = np.bincount(cells.ravel(), weights=w.ravel(), minlength=m * kx * ky + 1)[:-1]
                s2 = np.bincount(cells.ravel(), weights=(w * w).ravel(), minlength=m * kx * ky + 1)[:-1]
                functional = ~(cnt * s2 - s1 * s1 > 0.5).reshape(m, -1).any(1)
                for j in range(m):
                    self.tick()
                    if functional[j]:
                        self.try_pair(x, ys[lo + j])

    def try_pair(self, x: Sop, y: Sop) -> None:
        """Tries target = f(x, y): linear (with modulus), comparison, then table; raises Found on a match."""
        d = self.data
        defined = x.defined & y.defined
        if (defined != (d.valid & ~d.t_none)).any():
            return
        train = defined.copy()
        train[d.n_train :] = False
        fits: list[tuple[dict[str, Any], np.ndarray, str]] = []
        if x.kind == y.kind == "num" and np.isfinite(d.t_num[defined]).all():
            for coef, const, mod in _linear_fits([x.vals[defined], y.vals[defined]], d.t_num[defined], d):
                pred = coef[0] * x.vals + coef[1] * y.vals + const
                fits.append((linear(coef, const, mod), pred % mod if mod else pred, "num"))
        if d.t_binary and x.kind == y.kind:
            for op in CMP_OPS if (x.kind == "num" or d.ordered) else CMP_OPS[:2]:
                fits.append(({"kind": "compare", "op": op}, UFUNC[op](x.vals, y.vals).astype(float), "num"))
        for fn, pred, space in [*fits, *self.table_fit([x, y], train)]:
            if d.accept(d.agree(pred, space) & defined, defined):
                self.try_program(Expr("sequence_map", (x.expr, y.expr), fn, numerical=self.task.numerical))


def _linear_fits(xs: list[np.ndarray], t: np.ndarray, d: Data) -> Iterable[tuple[list[Any], Any, int | None]]:
    """Small-coefficient fits t = sum(a * x) + c, then t = (sum(a * x) + c) % m, simplest first.

    Every (coefficients, modulus) pair is screened on the first PROBE positions, and the
    survivors are checked on all of them.
    """
    if not len(t):
        return
    grid = np.array([(a,) for a in COEFS] if len(xs) == 1 else [(a, b) for a in COEFS for b in COEFS])
    x = np.stack(xs)
    r = t[None, :PROBE] - grid @ x[:, :PROBE]  # [G, probe]: what the constant must explain
    for g in np.flatnonzero(np.ptp(r, axis=1) <= d.tol):
        full = t - grid[g] @ x
        if np.ptp(full) <= d.tol:
            integral = d.t_integral and (full == np.round(full)).all()
            yield grid[g].tolist(), int(round(full[0])) if integral else _nice(float(np.median(full)), d.tol), None
    if not d.t_integral or t.min() < 0 or d.task.numerical or not (x == np.round(x)).all():
        return
    mods = np.arange(max(2, int(t.max()) + 1), MAX_MOD + 1)
    rm = np.mod(r[None, :, :].astype(np.int64), mods[:, None, None])  # [mods, G, probe]
    for m, g in zip(*np.nonzero((rm == rm[:, :, :1]).all(2))):
        full = np.mod((t - grid[g] @ x).astype(np.int64), mods[m])
        if (full == full[0]).all():
            yield grid[g].tolist(), int(full[0]), int(mods[m])


def _nice(c: float, tol: float) -> float | int:
    """A readable constant within `tol` of `c`: an integer, a fraction k/d (d <= 12), or 6 decimals."""
    if abs(c - round(c)) <= tol:
        return int(round(c))
    for den in range(2, 13):
        k = round(c * den)
        if abs(c - k / den) <= tol:
            return k / den
    return round(c, 6)


def _same(got: Any, want: Any, task: ProgramTask) -> bool:
    if task.numerical:
        try:
            return abs(float(got) - float(want)) <= task.atol
        except (TypeError, ValueError):
            return False
    return bool(got == want)


def _as_numerical(expr: Expr) -> Expr:
    """The expression as a numerical SOp (a numerical identity Map where it cannot be annotated)."""
    if expr.op in ("map", "sequence_map", "aggregate"):
        return dataclasses.replace(expr, numerical=True)
    return Expr("map", (expr,), linear([1]), numerical=True)


def search_program(task: ProgramTask) -> SearchResult:
    """Searches RASP programs by size for one reproducing `task` (see the module docstring).

    Returns:
        "found" with the program once a candidate fits the training and validation
        outputs and tracr's evaluator agrees; otherwise "not_found", with the best partial
        candidate (highest share of training positions equal to the target) as the program
        and the note "not found within budget of N candidates".
    """
    return Search(task).run()
