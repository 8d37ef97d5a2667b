"""Fits of the search's target as a function of one SOp (a Map) or two (a SequenceMap).

Forms are tried simplest first: linear with small coefficients and an optional modulus,
then an indicator or comparison, then a lookup table. Linear and indicator forms cannot
memorise, so they are fitted on training and validation inputs at once; a table is fitted
on the training inputs only and must reproduce the validation outputs too. A fit is
yielded only when it equals the target everywhere the model emits a value and its
arguments are defined exactly there.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from interpbench.rasp_expr import linear
from interpbench.rasp_values import UFUNC, Data, Sop

COEFS = (1, -1, 2, -2, 3, -3)  # linear-fit coefficients, simplest first
MAX_MOD = 8  # moduli 2..MAX_MOD are tried for integer targets
CMP_OPS = ("==", "!=", "<", "<=", ">", ">=")
MAX_KEYS = 48  # SOps with more distinct values take no part in table fits
PROBE = 24  # linear fits are screened on this many positions before the full check
TABLE_SUPPORT = 2  # a table needs at least this many training positions per key on average

Fit = tuple[dict[str, Any], np.ndarray, str]  # (FN form, prediction [n, T], space of Data.agree)


def functional_sops(sops: list[Sop], d: Data) -> np.ndarray:
    """[M] whether the target is a function of each SOp, which is defined exactly where the model speaks.

    Being a function on training and validation inputs together is necessary for any fit
    to be accepted (linear and indicator forms are functions, and a table fitted on the
    training inputs must also reproduce the validation outputs), so the test runs on all.
    """
    on = d.valid
    vals = np.stack([x.vals[on] for x in sops])  # [M, P]
    defined = np.stack([x.defined[on] for x in sops])
    t, t_none = d.t_code[on], d.t_none[on]
    keyed = np.where(defined, vals, np.inf)
    order = np.argsort(keyed, axis=1, kind="stable")
    sv, st = np.take_along_axis(keyed, order, 1), t[order]
    sd = np.take_along_axis(defined, order, 1)
    clash = (sv[:, 1:] == sv[:, :-1]) & sd[:, 1:] & sd[:, :-1] & (st[:, 1:] != st[:, :-1])
    return ~clash.any(1) & (defined == ~t_none).all(1)


def functional_pairs(x: Sop, yc: np.ndarray, ky: int, d: Data) -> np.ndarray:
    """[M] whether the target is a function of (x, y) for M SOps y, given by codes yc [M, P] on the valid positions.

    `ky` bounds the number of codes of every y. Positions where x or y is undefined are ignored.
    """
    tc = d.t_code[d.valid]
    xc, kx = x.codes(d)[0][d.valid], len(x.codes(d)[1])
    both = (xc[None] >= 0) & (yc >= 0)
    m = len(yc)
    cells = (np.arange(m)[:, None] * kx + xc[None]) * ky + yc
    cells = np.where(both, cells, m * kx * ky)
    w = np.broadcast_to(tc.astype(float), cells.shape)
    cnt = np.bincount(cells.ravel(), minlength=m * kx * ky + 1)[:-1]
    s1 = np.bincount(cells.ravel(), weights=w.ravel(), minlength=m * kx * ky + 1)[:-1]
    s2 = np.bincount(cells.ravel(), weights=(w * w).ravel(), minlength=m * kx * ky + 1)[:-1]
    return ~(cnt * s2 - s1 * s1 > 0.5).reshape(m, -1).any(1)


def map_fits(x: Sop, d: Data) -> Iterable[dict[str, Any]]:
    """FN forms f with target = f(x) on every input, simplest first."""
    for fn, pred, space in _map_candidates(x, d):
        if d.accept(d.agree(pred, space) & x.defined, x.defined):
            yield fn


def pair_fits(x: Sop, y: Sop, d: Data) -> Iterable[dict[str, Any]]:
    """FN forms f with target = f(x, y) on every input: linear (with modulus), comparison, then table."""
    defined = x.defined & y.defined
    if (defined != (d.valid & ~d.t_none)).any():
        return
    train = defined.copy()
    train[d.n_train :] = False
    fits: list[Fit] = []
    if x.kind == y.kind == "num" and np.isfinite(d.t_num[defined]).all():
        for coef, const, mod in _linear_fits([x.vals[defined], y.vals[defined]], d.t_num[defined], d):
            pred = coef[0] * x.vals + coef[1] * y.vals + const
            fits.append((linear(coef, const, mod), pred % mod if mod else pred, "num"))
    if d.t_binary and x.kind == y.kind:
        for op in CMP_OPS if (x.kind == "num" or d.ordered) else CMP_OPS[:2]:
            fits.append(({"kind": "compare", "op": op}, UFUNC[op](x.vals, y.vals).astype(float), "num"))
    for fn, pred, space in [*fits, *table_fit([x, y], train, d)]:
        if d.accept(d.agree(pred, space) & defined, defined):
            yield fn


def _map_candidates(x: Sop, d: Data) -> Iterable[Fit]:
    """Candidate fits of target = f(x), simplest first.

    Linear and indicator forms cannot memorise, so they are fitted on every input at
    once; a table is fitted on the training inputs only (the validation inputs judge it).
    """
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
    yield from table_fit([x], train, d)


def table_fit(xs: list[Sop], train: np.ndarray, d: Data) -> Iterable[Fit]:
    """A lookup table from the arguments' values to the target, fitted where `train` is True.

    Unseen argument tuples map to the most common training output. No table when the
    target is not a function of the arguments there, or when keys have too little support.
    """
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
        entries.append([key, d.out_value(int(table[k]))])
    yield {"kind": "table", "table": entries, "default": d.out_value(default)}, pred, "code"


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
