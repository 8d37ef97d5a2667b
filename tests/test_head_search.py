"""Enumerative head search: recovery of known programs, partial credit, budgets, scoring."""

from __future__ import annotations

import numpy as np
import pytest

from interpbench.head_search import FOUND_IOU, search_head, soft_iou_score
from interpbench.selector_dsl import FEATURES, OPS, SelectorProgram, is_feature, pattern
from interpbench.synthesis import HeadTask, get_synthesizer

LETTERS = ("a", "b", "c", "d")
NUMBERS = (0, 1, 2, 3)
EXACT = 1 - 1e-9  # synthetic attention is exact: accept only a perfect fit, not a simpler near-fit


def sample(rng: np.random.Generator, vocab: tuple, n: int, max_len: int = 5) -> tuple[tuple, ...]:
    return tuple(tuple(rng.choice(np.array(vocab, dtype=object), size=int(rng.integers(1, max_len + 1))).tolist())
                 for _ in range(n))  # fmt: skip


def task_for(program: SelectorProgram, inputs: tuple, vocab: tuple, budget: int = 20000) -> HeadTask:
    return HeadTask("L0H0", inputs, pattern(program, inputs, 6), vocab, program.causal, budget)


def random_program(rng: np.random.Generator, vocab: tuple, inputs: tuple) -> SelectorProgram:
    """A random program of the search space, valid on these tokens and not constant on them.

    The search compares `is:<token>` features with `const` only, so a third of the programs
    pair an `is:` feature with `const` and the rest pair two other features.
    """
    names = list(FEATURES)
    while True:
        query, key = str(rng.choice(names)), str(rng.choice(names))
        if rng.random() < 1 / 3:
            query, key = "const", is_feature(vocab[int(rng.integers(len(vocab)))])
            if rng.integers(2):
                query, key = key, query
        program = SelectorProgram(query, key, str(rng.choice(OPS[:-1])), int(rng.integers(-2, 3)),
                                  str(rng.choice(["fallback", "always"])), bool(rng.integers(2)))  # fmt: skip
        try:
            p = pattern(program, inputs, 6)
        except Exception:
            continue
        if len({m.tobytes() for m in np.round(p[:, 1:, 1:], 9)}) > 3:
            return program


@pytest.mark.parametrize("vocab", [LETTERS, NUMBERS], ids=["letters", "numbers"])
def test_recovers_random_programs_extensionally(vocab: tuple) -> None:
    rng = np.random.default_rng(11)
    train, fresh = sample(rng, vocab, 200), sample(rng, vocab, 200)
    for _ in range(20):
        truth = random_program(rng, vocab, train)
        result = search_head(task_for(truth, train, vocab), threshold=EXACT)
        assert result.status == "found" and result.score == pytest.approx(1.0), (truth, result)
        found = SelectorProgram.from_json(result.program)
        assert found.causal == truth.causal
        np.testing.assert_array_equal(pattern(found, fresh, 6), pattern(truth, fresh, 6), err_msg=f"{truth} vs {found}")


def test_simplest_equal_candidate_wins() -> None:
    rng = np.random.default_rng(0)
    train = sample(rng, LETTERS, 64)
    for truth in (SelectorProgram("const", "const", "true", bos="always"),  # tier 0
                  SelectorProgram("const", "index", "==", 0),  # first key-only feature
                  SelectorProgram("index", "index", "==", 0)):  # first pair  # fmt: skip
        result = search_head(task_for(truth, train, LETTERS))
        assert SelectorProgram.from_json(result.program) == truth


def test_noisy_softmax_attention_is_found() -> None:
    rng = np.random.default_rng(1)
    train = sample(rng, LETTERS, 64)
    truth = SelectorProgram("rev_index", "index", "==")
    a = pattern(truth, train, 6)
    real = a.sum(-1, keepdims=True) > 0
    noisy = np.where(real, 0.995 * a + 0.005 * rng.dirichlet(np.ones(6), size=a.shape[:2]), 0.0)
    result = search_head(HeadTask("L0H0", train, noisy, LETTERS, False, 20000))
    assert result.status == "found" and FOUND_IOU <= result.score < 1.0
    np.testing.assert_array_equal(pattern(SelectorProgram.from_json(result.program), train, 6), a)


def test_causal_head() -> None:
    rng = np.random.default_rng(2)
    train = sample(rng, LETTERS, 64)
    truth = SelectorProgram("token", "token", "==", bos="always", causal=True)  # earlier equal tokens
    result = search_head(task_for(truth, train, LETTERS))
    assert result.status == "found" and result.program["causal"] is True
    np.testing.assert_array_equal(pattern(SelectorProgram.from_json(result.program), train, 6), pattern(truth, train, 6))


def test_random_stochastic_head_is_partial() -> None:
    rng = np.random.default_rng(3)
    train = sample(rng, LETTERS, 64)
    real = pattern(SelectorProgram("const", "const", "true", bos="always"), train, 6) > 0
    a = np.where(real, rng.random(real.shape), 0.0)
    a /= np.maximum(a.sum(-1, keepdims=True), 1e-12)
    result = search_head(HeadTask("L0H0", train, a, LETTERS, False, 10**6))
    assert result.status == "partial" and 0.0 < result.score < 1.0 and result.program is not None
    assert "searched the whole DSL" in result.note and result.searched < 10**6


def test_real_inexpressible_head_is_partial(compiled) -> None:
    cc = compiled("algorithmic/first_occurrence")  # earlier positions holding the same token: a conjunction
    (head,) = cc.truth.patterns
    inputs = tuple(tuple(x) for x in cc.inputs)
    result = search_head(HeadTask(head, inputs, cc.truth.patterns[head], cc.case.vocab, False, 10**6))
    assert result.status == "partial" and 0.0 < result.score < FOUND_IOU
    predicted = pattern(SelectorProgram.from_json(result.program), inputs, cc.n_positions)
    assert soft_iou_score(predicted, cc.truth.patterns[head], cc.lengths)[0] == pytest.approx(result.score)


def test_budget_runs_out() -> None:
    rng = np.random.default_rng(4)
    train = sample(rng, LETTERS, 64)
    truth = SelectorProgram("rev_index", "index", "==")
    full = search_head(task_for(truth, train, LETTERS))
    assert full.status == "found" and full.searched > 10
    small = search_head(task_for(truth, train, LETTERS, budget=7))
    assert small.status == "not_found" and small.searched == 7 and small.budget == 7
    assert "not found within budget of 7 candidates" in small.note
    assert small.program is not None and 0.0 < small.score < 1.0  # the best so far, to be scored
    none = search_head(task_for(truth, train, LETTERS, budget=0))
    assert none.status == "not_found" and none.program is None and none.searched == 0
    exact = search_head(task_for(truth, train, LETTERS, budget=full.searched))
    assert exact.status == "found" and exact.program == full.program


def test_threshold_above_one_searches_everything() -> None:
    rng = np.random.default_rng(5)
    train = sample(rng, LETTERS, 32)
    truth = SelectorProgram("index", "index", "<=")
    found = search_head(task_for(truth, train, LETTERS))
    everything = search_head(task_for(truth, train, LETTERS), threshold=1.01)
    assert everything.status == "partial" and everything.searched > found.searched
    assert everything.program == found.program and everything.score == pytest.approx(1.0)


def test_soft_iou_score_matches_definition() -> None:
    rng = np.random.default_rng(6)
    p, a = rng.random((3, 5, 5)), rng.random((3, 5, 5))
    lengths = [2, 4, 1]
    lo = hi = 0.0
    per = []
    for b, n in enumerate(lengths):
        mn = np.minimum(p[b, 1 : n + 1, : n + 1], a[b, 1 : n + 1, : n + 1]).sum()
        mx = np.maximum(p[b, 1 : n + 1, : n + 1], a[b, 1 : n + 1, : n + 1]).sum()
        lo, hi = lo + mn, hi + mx
        per.append(mn / mx)
    score, worst = soft_iou_score(p, a, lengths)
    assert score == pytest.approx(lo / hi) and worst == int(np.argmin(per))
    assert soft_iou_score(a, a, lengths)[0] == pytest.approx(1.0)


def test_enumerative_backend_runs_the_search() -> None:
    rng = np.random.default_rng(8)
    train = sample(rng, LETTERS, 32)
    task = task_for(SelectorProgram("index", "index", "==", -1), train, LETTERS)
    assert get_synthesizer("enumerative").synthesize_head(task) == search_head(task)
