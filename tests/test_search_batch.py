"""Batched candidates of the whole-program search equal the one-at-a-time search, value for value."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from interpbench.program import evaluate, relabel
from interpbench.rasp_bank import Exhausted, Found
from interpbench.rasp_expr import INDICES, TOKENS, Expr, linear, to_spec
from interpbench.rasp_search import MEAN_VALUES, OFFSET_PREDS, OFFSETS, PREDS, Search
from interpbench.rasp_values import UFUNC, aggregate_values, select_matrix
from interpbench.search_batch import aggregate_runs, packed_select, packed_selects, selector_widths
from interpbench.synthesis import ProgramTask

REV_HINT = {"format": "interpbench.selector/1", "query": "rev_index", "key": "index", "op": "==", "offset": 0,
            "bos": "fallback", "causal": False}  # fmt: skip


class OneAtATime(Search):
    """The search with every candidate offered alone (`add_sop`, `add_sel`), as it was before batching."""

    def grow(self, s: int) -> None:
        d = self.data
        if s == 1:
            return super().grow(s)
        for sel in list(self.sels.get(s - 1, [])):
            self.add_sop(Expr("selector_width", (sel.expr,)), s, sel.matrix().sum(-1).astype(float), d.valid, "num")
        self.aggregates(s)
        if s == 2:
            self.add_sop(Expr("map", (INDICES,), linear([0])), 2, np.zeros(d.valid.shape), d.valid, "num")
        self.grow_maps(s)
        self.grow_sums(s)
        self.fit_maps(s)
        self.fit_pairs(s)
        self.selects(s)

    def selects(self, s: int) -> None:
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
                    qv = np.stack([q.vals for q in qs])
                    for op in ops:
                        for off in offsets:
                            mats = select_matrix(k.vals, qv, op, off, d.pair_valid)
                            for q, packed in zip(qs, np.packbits(mats, axis=-1)):
                                pred = {"op": op, "offset": off}
                                self.add_sel(Expr("select", (k.expr, q.expr), pred=pred), s, None, packed)
        if s == 3:
            self.add_sel(Expr("select", (TOKENS, TOKENS), pred={"op": "TRUE", "offset": 0}), s, d.pair_valid.copy())

    def aggregates(self, s: int) -> None:
        d = self.data
        for a in range(1, s - 1):
            sops = self.of_size(s - 1 - a, "aggregate")
            if not sops:
                continue
            vals = np.stack([x.vals for x in sops])[..., None]
            is_tok = np.array([x.kind == "tok" for x in sops])
            binary = np.array([x.kind == "num" and x.expr.op in ("map", "sequence_map")
                               and bool(np.isin(x.vals[d.valid], MEAN_VALUES).all()) for x in sops])  # fmt: skip
            for sel in self.sels.get(a, []):
                out, defined, bad = aggregate_values(sel.matrix().astype(float), vals, is_tok, d.valid)
                for x, v, wrong in zip(sops, out, bad):
                    if wrong:
                        self.tick()
                        continue
                    self.add_sop(Expr("aggregate", (sel.expr, x.expr)), s, v, defined, x.kind)
                for x, v in zip(np.array(sops, dtype=object)[binary], out[binary]):
                    e = Expr("aggregate", (sel.expr, self.as_numerical(x.expr)), numerical=True, default=0)
                    self.add_sop(e, s, v, d.valid, "num", numerical=True)


def task_of(compiled: Any, budget: int, **kw: Any) -> ProgramTask:
    """The case's RASP program as a task on 2 x 48 domain inputs (None where RASP is None)."""
    case = compiled.case
    truth = relabel(case.program())
    rng = np.random.default_rng([7, budget])
    seen: dict[tuple[Any, ...], None] = {}
    for _ in range(10):
        for xs in case.domain.sample(rng, 96, case.vocab, case.max_seq_len):
            seen.setdefault(tuple(xs))
    inputs = list(seen)[:96]
    outs = [tuple(evaluate(truth, list(xs))) for xs in inputs]
    values = compiled.weights.output_values
    k = len(inputs) // 2
    return ProgramTask(
        inputs=tuple(inputs[:k]), outputs=tuple(outs[:k]), valid_inputs=tuple(inputs[k:]),
        valid_outputs=tuple(outs[k:]), vocab=case.vocab, output_values=None if values is None else tuple(values),
        numerical=values is None, max_seq_len=case.max_seq_len, budget=budget, **kw,
    )  # fmt: skip


def state(search: Search) -> tuple[Any, ...]:
    """Everything a search holds: its banks in order (expressions, values), count and best candidate."""
    sops = [(size, to_spec(x.expr, "s"), x.vals.tobytes(), x.defined.tobytes(), x.kind, x.numerical)
            for size, xs in sorted(search.sops.items()) for x in xs]  # fmt: skip
    sels = [(size, to_spec(x.expr, "s"), x.packed.tobytes()) for size, xs in sorted(search.sels.items()) for x in xs]
    best = (search.best[0], to_spec(search.best[1], "s") if search.best[1] is not None else None)
    return sops, sels, list(search.seen), sorted(search.seen_sel), search.searched, best


@pytest.mark.parametrize(("name", "budget", "hinted"), [
    ("algorithmic/is_sorted", 12_345, False),  # numbers, runs out of budget inside a run
    ("tracr_lib/sort_freq", 9_000, False),  # tokens and fractional means
    ("tracr_lib/frac_prevs", 100_000, False),  # numerical: found
    ("tracr_lib/reverse", 5_000, False),  # letters
    ("algorithmic/palindrome", 6_000, True),  # with a selector hint
    ("algorithmic/first_occurrence", 7_777, False),  # causal
])  # fmt: skip
def test_batched_search_equals_one_at_a_time(name: str, budget: int, hinted: bool, compiled) -> None:
    task = task_of(compiled(name), budget, selector_hints=(REV_HINT,) if hinted else ())
    batched, alone = Search(task), OneAtATime(task)
    assert batched.run() == alone.run()
    assert state(batched) == state(alone)
    assert batched.searched > 500  # the comparison covered real runs of candidates


def test_aggregate_runs_equal_aggregate_values_selector_by_selector() -> None:
    rng = np.random.default_rng(0)
    n, t, s = 40, 6, 9
    valid = np.arange(t)[None] < rng.integers(1, t + 1, n)[:, None]
    mats = (rng.random((s, n, t, t)) < 0.5) & valid[None, :, :, None] & valid[None, :, None, :]
    mats[0] = False  # selects nothing
    mats[1] = np.eye(t, dtype=bool) & valid[:, :, None]  # one key each: never "wrong"
    vals = np.stack([
        rng.integers(0, 4, (n, t)).astype(float),  # token-like integers
        rng.integers(-3, 3, (n, t)).astype(float),
        rng.integers(0, 3, (n, t)) / 3.0,  # fractions: summed in the original order
        np.full((n, t), 1 / 3),  # equal fractions: kept even where several keys are selected
        rng.integers(0, 2, (n, t)) * 2.0**40,  # integers too large for the exact path
    ]) * valid  # fmt: skip
    is_tok = np.array([True, False, False, False, False])
    out, defined, bad = aggregate_runs(mats, vals, is_tok, valid)
    for i in range(s):
        want = aggregate_values(mats[i].astype(float), vals[..., None], is_tok, valid)
        assert np.array_equal(out[i], want[0]) and np.array_equal(defined[i], want[1])
        assert np.array_equal(bad[i], want[2])
    assert bad[2:].any() and not bad[:2].any()  # both verdicts occur
    only_integral = aggregate_runs(mats, vals[:2], is_tok[:2], valid)
    assert np.array_equal(only_integral[0], out[:, :2]) and np.array_equal(only_integral[2], bad[:, :2])


@pytest.mark.parametrize("t", [5, 11])  # one byte per row, and two
def test_packed_selects_equal_packbits_of_select_matrix(t: int) -> None:
    rng = np.random.default_rng(t)
    n = 30
    valid = np.arange(t)[None] < rng.integers(1, t + 1, n)[:, None]
    pair_valid = valid[:, :, None] & valid[:, None, :]
    pair = np.packbits(pair_valid, axis=-1)
    keys = rng.integers(0, 4, (3, 1, n, t)).astype(float) * valid
    queries = (rng.integers(0, 4, (1, 4, n, t)) / 2.0) * valid
    for op in PREDS:
        for off in (0, -1, 2):
            want = np.packbits(select_matrix(keys, queries, op, off, pair_valid), axis=-1)
            assert np.array_equal(packed_select(keys, queries, op, off, pair), want)
    for ops, offsets in ((PREDS, (0,)), (OFFSET_PREDS, OFFSETS), (("EQ", "NEQ"), (0,))):
        got = packed_selects(keys, queries, ops, offsets, pair)
        want = np.stack([np.packbits(select_matrix(keys, queries, op, off, pair_valid), axis=-1)
                         for op in ops for off in offsets], axis=-4)  # fmt: skip
        assert np.array_equal(got, want)
    with_nan = queries.copy()
    with_nan[0, 0, 0, 0] = np.nan  # no predicate follows from another: each is compared itself
    got = packed_selects(keys, with_nan, PREDS, (0,), pair)
    want = np.stack([np.packbits(select_matrix(keys, with_nan, op, 0, pair_valid), axis=-1) for op in PREDS], axis=-4)
    assert np.array_equal(got, want)
    assert UFUNC["NEQ"](np.nan, 1.0) and not UFUNC["EQ"](np.nan, 1.0) and not UFUNC["GEQ"](np.nan, 1.0)


def test_selector_widths_count_the_selected_keys(compiled) -> None:
    search = Search(task_of(compiled("tracr_lib/hist"), 3_000))
    try:
        for size in range(1, 5):
            search.grow(size)
    except (Exhausted, Found):
        pass
    sels = [x for xs in search.sels.values() for x in xs]
    assert len(sels) > 10
    want = np.stack([x.matrix().sum(-1).astype(float) for x in sels])
    assert np.array_equal(selector_widths(sels), want)
