"""Enumerative search for a selector program reproducing one head's attention.

Candidates (`interpbench.selector/1` programs) come in a fixed order, simplest first, grouped
in tiers:

0. every key / no key (`const`, `const`);
1. key-only predicates `key f OP c` (query `const`), for |c| = 0, 1, 2, ...;
2. query-only predicates `0 OP query f + c` (key `const`: a row attends everywhere or to BOS);
3. pairs `key f OP query g + c`, for |offset| = 0, 1, 2, ...

Within a tier: query then key features in the order of KEY_ORDER / QUERY_ORDER (then
`is:<token>` in vocab order), ops in OPS order, offset -d before +d, bos "fallback" before
"always". Offsets stay within the range of key - query differences seen on the training
inputs (outside it a predicate is constant there) and within MAX_OFFSET; a feature pair whose
difference is constant is skipped. Token-valued features of non-numeric vocabularies are
compared only with each other, without offset (only == and != if the tokens have no order);
`is:<token>` features only with `const`, by == (1: is the token, 0: is not).

Each candidate is scored by soft IoU pooled over the real query rows of the training inputs
(keys including BOS): sum of min(P, A) / sum of max(P, A). Scoring is vectorised over a chunk
of candidates at a time. The search stops after the tier in which the score first reaches the
threshold (the best in that tier wins; ties go to the earliest, i.e. simplest, candidate), or
when `task.budget` candidates have been scored. The search uses no randomness (`task.seed` is
not needed): the same task always gives the same result.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from interpbench.selector_dsl import (
    COMPARE, IS_PREFIX, OPS, ORDER_FEATURES, TOKEN_FEATURES, Features, SelectorProgram, describe, is_feature,
)  # fmt: skip
from interpbench.synthesis import HeadTask, SearchResult

FOUND_IOU = 0.99
MAX_OFFSET = 8
CHUNK_ELEMENTS = 1 << 22  # candidates per scoring batch x n x width x width
KEY_ORDER = ("index", "token", "rev_index", "prev_token", "next_token", "token_count", "lt_count",
             "leq_count", "rank", "length")  # fmt: skip
QUERY_ORDER = KEY_ORDER
COMPARE_OPS = tuple(op for op in OPS if op != "true")
_Candidate = tuple[str, str, str, int]  # query, key, op, offset


def _usable(name: str, feats: Features, *, with_const: bool) -> bool:
    """Whether feature `name` can take part in a comparison on these inputs."""
    if name in ORDER_FEATURES and not feats.ordered:
        return False
    return not (with_const and name in TOKEN_FEATURES and not feats.numeric)


def _ops(q: str, k: str, feats: Features) -> tuple[str, ...]:
    """The comparison operators worth trying between query feature `q` and key feature `k`."""
    if IS_PREFIX in q + k:  # 0/1 features: "== 1" (is the token) and "== 0" (is not)
        return ("==",)
    tokens = not feats.numeric and q in TOKEN_FEATURES
    return ("==", "!=") if tokens and not feats.ordered else COMPARE_OPS


def _difference_range(q: np.ndarray, k: np.ndarray, causal: bool) -> tuple[float, float] | None:
    """(min, max) of key - query over the pairs where both are defined, or None if constant/empty."""
    d = k[:, None, :] - q[:, :, None]
    if causal:
        d = np.where(np.tri(d.shape[-1], dtype=bool)[None], d, np.nan)
    if np.isnan(d).all():
        return None
    lo, hi = float(np.nanmin(d)), float(np.nanmax(d))
    return None if lo == hi else (lo, hi)


def _groups(feats: Features, vocab: Sequence[object], causal: bool) -> list[list[tuple[str, str, list[int]]]]:
    """Tiers of (query, key, offsets) groups in search order (ops are expanded when scoring)."""
    keys_single = [f for f in KEY_ORDER if _usable(f, feats, with_const=True)]
    keys_single += [is_feature(v) for v in vocab if isinstance(v, (str, int, float))]
    pair_keys = [f for f in KEY_ORDER if _usable(f, feats, with_const=False)]
    pair_queries = [f for f in QUERY_ORDER if _usable(f, feats, with_const=False)]
    levels: list[list[tuple[str, str]]] = [
        [("const", k) for k in keys_single],
        [(q, "const") for q in keys_single],
        [(q, k) for q in pair_queries for k in pair_keys
         if feats.numeric or (q in TOKEN_FEATURES) == (k in TOKEN_FEATURES)],
    ]  # fmt: skip
    tiers: list[list[tuple[str, str, list[int]]]] = []
    for pairs in levels:
        ranges = {}
        for q, k in pairs:
            if not feats.numeric and q in TOKEN_FEATURES:
                ranges[(q, k)] = (0.0, 0.0)
            else:
                r = _difference_range(feats.get(q), feats.get(k), causal)
                if r is not None:
                    ranges[(q, k)] = r
        for d in range(MAX_OFFSET + 1):
            tier = []
            for (q, k), (lo, hi) in ranges.items():
                offs = [o for o in dict.fromkeys((-d, d)) if lo <= o <= hi]
                if offs:
                    tier.append((q, k, offs))
            if tier:
                tiers.append(tier)
    return tiers


def _chunks(
    feats: Features, tier: list[tuple[str, str, list[int]]], causal: bool, size: int
) -> Iterator[tuple[list[_Candidate], np.ndarray]]:
    """(candidates, selections [C, n, width, width]) for one tier, at most `size` per chunk."""
    metas: list[_Candidate] = []
    sels: list[np.ndarray] = []
    mask = np.tri(feats.width, dtype=bool)[None, None] if causal else True
    for q_name, k_name, offs in tier:
        q, k = feats.get(q_name), feats.get(k_name)
        offsets = np.array(offs, dtype=np.float64)[:, None, None, None]
        qo = q[None, :, :, None] + offsets  # [O, n, width, 1]
        kk = k[None, :, None, :]
        valid = ~np.isnan(qo) & ~np.isnan(kk) & mask
        for op in _ops(q_name, k_name, feats):
            with np.errstate(invalid="ignore"):
                sel = valid & COMPARE[op](kk, qo)
            metas += [(q_name, k_name, op, int(o)) for o in offs]
            sels.append(sel)
            if len(metas) >= size:
                yield metas, np.concatenate(sels)
                metas, sels = [], []
    if metas:
        yield metas, np.concatenate(sels)


class _Scorer:
    """Pooled soft IoU of candidate selections against one head's observed attention."""

    def __init__(self, attention: np.ndarray, real: np.ndarray) -> None:
        w = real.shape[1]
        a = np.asarray(attention, dtype=np.float64)
        if a.ndim != 3 or a.shape[0] != real.shape[0] or a.shape[1] < w + 1 or a.shape[2] < w + 1:
            raise ValueError(f"attention of shape {a.shape} does not fit {real.shape[0]} inputs of length <= {w}")
        rows = real.astype(np.float64)
        self.rows = rows
        self.keys = np.where(real[:, :, None] & real[:, None, :], a[:, 1 : w + 1, 1 : w + 1], 0.0)
        self.bos = np.where(real, a[:, 1 : w + 1, 0], 0.0)
        self.mass_p = float(rows.sum())  # every predicted real row sums to 1
        self.mass_a = float(self.keys.sum() + self.bos.sum())

    def score(self, sel: np.ndarray) -> np.ndarray:
        """[C, 2] IoU for bos "fallback" (column 0) and "always" (column 1)."""
        count = sel.sum(-1)  # [C, n, width]
        out = np.empty((len(sel), 2))
        for col, (weight, bos) in enumerate((
            (1.0 / np.maximum(count, 1), (count == 0).astype(np.float64)),
            (1.0 / (count + 1), None),
        )):  # fmt: skip
            inter = np.where(sel, np.minimum(weight[..., None], self.keys), 0.0).sum(-1)
            inter += np.minimum(weight if bos is None else bos, self.bos)
            m = (inter * self.rows).sum(axis=(1, 2))
            out[:, col] = m / np.maximum(self.mass_p + self.mass_a - m, 1e-300)
        return out


def soft_iou_score(predicted: np.ndarray, attention: np.ndarray, lengths: Sequence[int]) -> tuple[float, int]:
    """Pooled soft IoU of a predicted pattern against observed attention, and the worst input.

    Args:
        predicted: [n, T, T] predicted attention (model coordinates).
        attention: [n, T, T] observed attention.
        lengths: Input lengths; rows 1..length and columns 0..length of input b count.

    Returns:
        (sum min / sum max over all counted entries, index of the input with the lowest IoU).
    """
    p, a = np.asarray(predicted, dtype=np.float64), np.asarray(attention, dtype=np.float64)
    t = p.shape[-1]
    n = np.asarray(lengths)[:, None, None]
    pos = np.arange(t)
    counted = (pos[None, :, None] >= 1) & (pos[None, :, None] <= n) & (pos[None, None, :] <= n)
    lo = np.where(counted, np.minimum(p, a), 0.0).sum(axis=(1, 2))
    hi = np.where(counted, np.maximum(p, a), 0.0).sum(axis=(1, 2))
    per_input = np.divide(lo, hi, out=np.ones_like(lo), where=hi > 0)
    total = float(lo.sum() / hi.sum()) if hi.sum() > 0 else 1.0
    return total, int(np.argmin(per_input)) if len(per_input) else 0


def search_head(task: HeadTask, threshold: float = FOUND_IOU) -> SearchResult:
    """Searches the selector DSL for the program whose pattern best matches `task.attention`.

    Args:
        task: Training inputs, the head's attention on them, vocab, causality and budget.
        threshold: Training soft IoU at which a program counts as found.

    Returns:
        "found" (best IoU >= threshold), "partial" (the whole DSL was searched, best below
        threshold) or "not_found" (the budget ran out first); the best candidate either way
        (None only when nothing was scored).
    """
    feats = Features(task.inputs)
    scorer = _Scorer(task.attention, feats.real)
    budget = max(int(task.budget), 0)
    size = max(1, CHUNK_ELEMENTS // max(1, feats.real.size * max(feats.width, 1)))
    tiers = [_trivial_chunk(feats, task.causal)]
    tiers += [_chunks(feats, tier, task.causal, size) for tier in _groups(feats, task.vocab, task.causal)]
    best: tuple[float, _Candidate | None, str] = (-1.0, None, "fallback")
    searched, exhausted = 0, True
    for chunks in tiers:
        for metas, sel in chunks:
            left = budget - searched
            if left < 2 * len(metas):  # this chunk does not fit: score what does, then stop
                exhausted = False
                metas, sel = metas[: (left + 1) // 2], sel[: (left + 1) // 2]
            scores = scorer.score(sel).reshape(-1)[: max(left, 0)]  # candidate c, bos b at 2c + b
            searched += len(scores)
            if len(scores):
                top = int(np.argmax(scores))  # the first maximum: the simplest
                if scores[top] > best[0]:
                    best = (float(scores[top]), metas[top // 2], ("fallback", "always")[top % 2])
            if not exhausted:
                break
        if not exhausted or best[0] >= threshold:
            break
    return _result(task, best, searched, budget, threshold, exhausted)


def _trivial_chunk(feats: Features, causal: bool) -> Iterator[tuple[list[_Candidate], np.ndarray]]:
    """The first tier: every key, or no key, with either BOS mode."""
    real = feats.real[:, :, None] & feats.real[:, None, :]
    if causal:
        real = real & np.tri(feats.width, dtype=bool)[None]
    yield ([("const", "const", "true", 0), ("const", "const", "==", 1)],
           np.stack([real, np.zeros_like(real)]))  # fmt: skip


def _result(
    task: HeadTask, best: tuple[float, _Candidate | None, str], searched: int, budget: int,
    threshold: float, exhausted: bool,
) -> SearchResult:  # fmt: skip
    """found / partial (DSL exhausted) / not_found (budget ran out) for the best candidate."""
    score, cand, bos = best
    if cand is None:
        return SearchResult("not_found", None, float("nan"), searched, budget,
                            f"not found within budget of {budget} candidates (nothing scored)")  # fmt: skip
    program = SelectorProgram(cand[0], cand[1], cand[2], cand[3], bos, bool(task.causal))
    text = describe(program)
    if score >= threshold:
        status, note = "found", f"found after {searched} candidates: {text}"
    elif exhausted:
        status, note = "partial", (f"searched the whole DSL ({searched} candidates); best training IoU "
                                   f"{score:.3f} < {threshold}: {text}")  # fmt: skip
    else:
        status, note = "not_found", (f"not found within budget of {budget} candidates; best training IoU "
                                     f"{score:.3f}: {text}")  # fmt: skip
    return SearchResult(status, program.to_json(), score, searched, budget, note)


