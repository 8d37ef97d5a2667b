"""Batched candidates of the whole-program search: the same counts, banks and programs as one at a time.

The search (`interpbench.rasp_search`) meets most of its candidates in runs: the widths of
every selector of a size, the aggregates of every SOp by one selector, the comparisons of
one key with every query. Here a run's values and its comparison with the target are
computed at once, and the run is then walked in order (`Bank.add_sops`, of which
`Bank.add_sop` is the run of one), so the budget, the banks, the best partial candidate
and the programs tried are exactly those of offering each candidate alone
(tests/test_search_batch.py checks it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np

from interpbench.rasp_values import UFUNC, Data, Sel, Sop, aggregate_values

SELECT_BATCH = 1 << 22  # selector entries (keys x ops x queries x n x T x T) computed per batch
INTEGRAL_LIMIT = 2.0**20  # integer values up to this size have exact sums (and sums of squares)
POPCOUNT = np.array([bin(b).count("1") for b in range(256)], dtype=np.int64)  # set bits of each byte


def aggregate_runs(
    mats: np.ndarray, vals: np.ndarray, is_tok: np.ndarray, valid: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`aggregate_values` of M SOps by each of S selectors, equal to it selector by selector.

    SOps whose values are all integers (|v| <= INTEGRAL_LIMIT) are aggregated by every
    selector in one matrix product: their sums are exact, so they do not depend on the
    order of summation. The other SOps go through `aggregate_values` one selector at a
    time, as the search always did (their sums are rounded, and rounding depends on order).

    Args:
        mats: [S, n, query, key] selectors (booleans).
        vals: [M, n, T] the SOps' values.
        is_tok: [M] whether each SOp is token-valued.
        valid: [n, T] real positions.

    Returns:
        The means [S, M, n, T], where they are defined [S, n, T], and [S, M] whether a
        categorical aggregate is wrong (see `aggregate_values`).
    """
    n_sel, n, t = len(mats), len(valid), mats.shape[-1]
    out = np.empty((n_sel, len(vals), *valid.shape))
    bad = np.empty((n_sel, len(vals)), dtype=bool)
    cnt = mats.sum(-1, dtype=np.int64).astype(float)  # [S, n, T], as a float matrix sums
    multi = (cnt > 1) & valid
    some = multi.any((1, 2))[:, None]  # [S, 1]
    defined = valid & (cnt > 0)
    integral = ((vals == np.round(vals)) & (np.abs(vals) <= INTEGRAL_LIMIT)).all((1, 2))
    if integral.any():  # laid out [n, Mi, S, T]: one product per input
        v = np.ascontiguousarray(vals[integral].transpose(1, 0, 2))  # [n, Mi, key]
        by_input = np.ascontiguousarray(mats.transpose(1, 3, 0, 2)).reshape(n, t, -1).astype(float)  # [n, key, S q]
        s1, s2 = ((x @ by_input).reshape(n, len(x[0]), n_sel, t) for x in (v, v * v))
        c, mu, de = (np.ascontiguousarray(x.transpose(1, 0, 2))[:, None] for x in (cnt, multi, defined))
        wrong = ((c * s2 != s1 * s1) & mu).any((0, 3)).T  # [S, Mi]
        means = np.where(de, s1 / np.maximum(c, 1), 0.0).transpose(2, 1, 0, 3)  # [S, Mi, n, T]
        if integral.all():
            out, bad = means, (is_tok[None] & some) | (some & wrong)
        else:
            out[:, integral], bad[:, integral] = means, (is_tok[integral][None] & some) | (some & wrong)
    if not integral.all():
        rest, rest_tok = vals[~integral][..., None], is_tok[~integral]
        for i in range(n_sel):
            out[i, ~integral], _, bad[i, ~integral] = aggregate_values(mats[i].astype(float), rest, rest_tok, valid)
    return out, defined, bad


def selector_widths(sels: Sequence[Sel]) -> np.ndarray:
    """[S, n, T] how many keys each query selects (float), counted from the selectors' packed bits."""
    packed = np.stack([x.packed for x in sels])
    return POPCOUNT[packed].sum(-1).astype(float)


def packed_select(keys: np.ndarray, queries: np.ndarray, op: str, offset: int, pair: np.ndarray) -> np.ndarray:
    """`np.packbits(select_matrix(keys, queries, op, offset, pair_valid), axis=-1)`, built a key column at a time.

    Args:
        keys: [..., n, T] key values.
        queries: [..., n, T] query values.
        op: A predicate name of UFUNC.
        offset: Added to the queries.
        pair: The valid (query, key) pairs, bit-packed along the keys [n, T, bytes].

    Returns:
        [..., n, query, bytes]: bit 7 - j % 8 of byte j // 8 is `key j OP query + offset`
        (numpy's big-endian packing, zero padded), without building the boolean matrix.
    """
    q = queries + offset
    t = keys.shape[-1]
    shape = np.broadcast_shapes(keys.shape[:-1] + (1,), q.shape)
    out = np.empty((*shape, pair.shape[-1]), dtype=np.uint8)
    bit = np.empty(shape, dtype=bool)
    bits = bit.view(np.uint8)
    for byte in range(pair.shape[-1]):
        acc = np.zeros(shape, dtype=np.uint8)
        for j in range(8 * byte, min(8 * byte + 8, t)):
            UFUNC[op](keys[..., j, None], q, out=bit)
            np.left_shift(bits, 7 - j % 8, out=bits)
            acc |= bits
        out[..., byte] = acc
    out &= pair
    return out


def packed_selects(keys: np.ndarray, queries: np.ndarray, ops: Sequence[str], offsets: Sequence[int],
                   pair: np.ndarray) -> np.ndarray:  # fmt: skip
    """[..., ops x offsets, n, query, bytes]: `packed_select` of every (op, offset), op-major, stacked at axis -4.

    On values without NaN every predicate follows from two, bit by bit: NEQ = not EQ,
    LEQ = LT or EQ, GT = not LEQ, GEQ = not LT (within `pair`), so only EQ and LT are
    compared; with a NaN each predicate is compared itself.
    """
    derive = not (np.isnan(keys).any() or np.isnan(queries).any())
    out = []
    for off in offsets:
        if not derive:
            out.append({op: packed_select(keys, queries, op, off, pair) for op in ops})
            continue
        got: dict[str, np.ndarray] = {}
        if {"EQ", "NEQ", "LEQ", "GT"} & set(ops):
            got["EQ"] = packed_select(keys, queries, "EQ", off, pair)
        if {"LT", "LEQ", "GT", "GEQ"} & set(ops):
            got["LT"] = packed_select(keys, queries, "LT", off, pair)
        if {"LEQ", "GT"} & set(ops):
            got["LEQ"] = got["LT"] | got["EQ"]
        for op, base in (("NEQ", "EQ"), ("GT", "LEQ"), ("GEQ", "LT")):
            if op in ops:
                got[op] = ~got[base] & pair
        out.append(got)
    return np.stack([out[i][op] for op in ops for i in range(len(offsets))], axis=-4)


def select_candidates(
    keys: Sequence[Sop], queries: Sequence[Sop], offsets: Sequence[int], ops: Callable[[str], Sequence[str]], d: Data
) -> Iterator[tuple[Sop, Sop, str, int, bytes, np.ndarray]]:
    """(key, query, op, offset, bank key, bit-packed values) of every selector `key OP query + offset`, in search order.

    The order is the grammar's: keys, then `ops(key kind)`, then offsets, then the
    queries of the key's kind. Runs of same-kind keys are computed at once (at most
    SELECT_BATCH entries); the bank key is the packed values' bytes, as in `Bank.add_sel`.
    """
    pair = np.packbits(d.pair_valid, axis=-1)
    by_kind = {kind: [q for q in queries if q.kind == kind] for kind in dict.fromkeys(q.kind for q in queries)}
    stacked = {kind: np.stack([q.vals for q in qs]) for kind, qs in by_kind.items()}
    i = 0
    while i < len(keys):
        kind = keys[i].kind
        qs, kind_ops = by_kind.get(kind, []), tuple(ops(kind))
        per_key = max(1, len(kind_ops) * len(offsets) * len(qs) * d.pair_valid.size)
        j = i + 1
        while j < len(keys) and keys[j].kind == kind and (j - i + 1) * per_key <= SELECT_BATCH:
            j += 1
        if qs and kind_ops:
            kv = np.stack([k.vals for k in keys[i:j]])[:, None]  # [c, 1, n, T]
            packed = packed_selects(kv, stacked[kind][None], kind_ops, offsets, pair)  # [c, Q, ops x offs, n, T, b]
            cells = packed.reshape(-1, *packed.shape[3:])
            raw, width, n_ops = cells.tobytes(), cells[0].nbytes, packed.shape[2]
            for ci, k in enumerate(keys[i:j]):
                o = 0
                for op in kind_ops:
                    for off in offsets:
                        for qi, q in enumerate(qs):
                            pos = (ci * len(qs) + qi) * n_ops + o
                            yield k, q, op, off, raw[pos * width : (pos + 1) * width], cells[pos]
                        o += 1
        i = j
