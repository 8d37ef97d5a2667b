"""Cases and domains: sampling, membership, validation and name lookup."""

from __future__ import annotations

import numpy as np
import pytest
from tracr.compiler import lib
from tracr.rasp import rasp

from interpbench import BadInputError, Case, Domain, case, get_case
from interpbench.case import CASES
from interpbench.errors import UnknownNameError

VOCAB = ("a", "b", "c", "d")


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --- Domain.sample ---------------------------------------------------------------------


def test_sample_respects_lengths_and_vocab() -> None:
    d = Domain(min_len=2, max_len=4)
    xs = d.sample(rng(), 300, VOCAB, 6)
    assert len(xs) == 300
    lengths = {len(x) for x in xs}
    assert lengths == {2, 3, 4}  # every allowed length appears, nothing outside
    assert all(t in VOCAB for x in xs for t in x)
    assert any(len(set(x)) < len(x) for x in xs)  # repeats allowed when not distinct


def test_sample_max_len_defaults_to_max_seq_len() -> None:
    xs = Domain().sample(rng(), 300, VOCAB, 3)
    assert {len(x) for x in xs} == {1, 2, 3}


def test_sample_distinct() -> None:
    d = Domain(distinct=True)
    xs = d.sample(rng(), 300, (1, 2, 3, 4, 5), 5)
    assert all(len(set(x)) == len(x) for x in xs)
    assert max(len(x) for x in xs) == 5
    # With fewer tokens than max_seq_len, lengths are capped at the alphabet size.
    xs = Domain(distinct=True).sample(rng(), 200, ("x", "y", "z"), 5)
    assert {len(x) for x in xs} == {1, 2, 3}
    assert all(len(set(x)) == len(x) for x in xs)


def test_sample_alphabet_and_predicate() -> None:
    d = Domain(alphabet=("a", "b"), predicate=lambda xs: xs[0] == "a")
    xs = d.sample(rng(), 200, VOCAB, 4)
    assert all(set(x) <= {"a", "b"} for x in xs)
    assert all(x[0] == "a" for x in xs)
    assert all(d.contains(x, VOCAB, 4) for x in xs)


def test_sample_is_deterministic_under_a_seed() -> None:
    d = Domain(min_len=1, max_len=5)
    a = d.sample(rng(7), 50, VOCAB, 5)
    b = d.sample(rng(7), 50, VOCAB, 5)
    c = d.sample(rng(8), 50, VOCAB, 5)
    assert a == b
    assert a != c


@pytest.mark.parametrize(
    "domain, max_seq_len",
    [
        (Domain(min_len=4), 3),  # shortest input longer than the model takes
        (Domain(max_len=6), 5),  # longest input longer than the model takes
        (Domain(min_len=3, max_len=2), 5),  # empty length range
        (Domain(min_len=0), 5),  # inputs need at least one token
        (Domain(distinct=True, min_len=5), 5),  # 4 tokens cannot make 5 distinct ones
        (Domain(predicate=lambda xs: False), 5),  # precondition never holds
    ],
)
def test_domain_that_cannot_produce_inputs_raises(domain: Domain, max_seq_len: int) -> None:
    with pytest.raises(BadInputError):
        domain.sample(rng(), 5, VOCAB, max_seq_len)


# --- Domain.contains ---------------------------------------------------------------------


def test_contains() -> None:
    d = Domain(min_len=2, max_len=3, distinct=True, predicate=lambda xs: "d" not in xs)
    assert d.contains(["a", "b"], VOCAB, 5)
    assert d.contains(("c", "a", "b"), VOCAB, 5)
    assert not d.contains(["a"], VOCAB, 5)  # too short
    assert not d.contains(["a", "b", "c", "a"], VOCAB, 5)  # too long
    assert not d.contains(["a", "a"], VOCAB, 5)  # not distinct
    assert not d.contains(["a", "z"], VOCAB, 5)  # not in vocab
    assert not d.contains(["a", "d"], VOCAB, 5)  # predicate fails
    plain = Domain()
    assert plain.contains(["a"] * 5, VOCAB, 5)
    assert not plain.contains(["a"] * 6, VOCAB, 5)  # max_len defaults to max_seq_len
    assert not plain.contains([], VOCAB, 5)
    assert not Domain(alphabet=("a",)).contains(["b"], VOCAB, 5)


# --- Case.validate --------------------------------------------------------------------------


def _case(**kw) -> Case:
    base = dict(suite="t", name="c", program=lambda: lib.make_hist(), vocab=VOCAB, max_seq_len=5)
    base.update(kw)
    return Case(**base)


def test_validate_accepts_a_good_case() -> None:
    _case().validate()


@pytest.mark.parametrize(
    "kw, words",
    [
        (dict(vocab=("a", "compiler_bos")), "reserved"),
        (dict(vocab=("compiler_pad", "b")), "reserved"),
        (dict(max_seq_len=0), "max_seq_len"),
        (dict(max_seq_len=-3), "max_seq_len"),
        (dict(vocab=()), "empty"),
        (dict(vocab=("a", "a")), "duplicate"),
    ],
)
def test_validate_refuses(kw: dict, words: str) -> None:
    with pytest.raises(BadInputError, match=words) as info:
        _case(**kw).validate()
    assert "t/c" in str(info.value)


def test_decorator_validates_and_does_not_register_bad_cases() -> None:
    before = len(CASES)
    with pytest.raises(BadInputError, match="reserved"):

        @case(vocab=("compiler_bos", "a"), max_seq_len=3, suite="test_only")
        def bad():
            return lib.make_length()

    assert len(CASES) == before
    assert "test_only/bad" not in CASES


# --- lookup ------------------------------------------------------------------------------


def test_get_case_by_full_name() -> None:
    c = get_case("tracr_lib/reverse")
    assert c.full_name == "tracr_lib/reverse"
    assert c.suite == "tracr_lib" and c.name == "reverse"
    assert isinstance(c.program(), rasp.SOp)
    assert "make_reverse" in c.source()
    assert c.description


def test_get_case_typo_suggests_the_right_name() -> None:
    with pytest.raises(UnknownNameError) as info:
        get_case("tracr_lib/revrse")
    msg = str(info.value)
    assert "did you mean" in msg
    assert "tracr_lib/reverse" in msg
    assert isinstance(info.value, BadInputError)


def test_get_case_bare_name_suggests_the_suite() -> None:
    with pytest.raises(UnknownNameError, match="tracr_lib/reverse"):
        get_case("reverse")


def test_get_case_nonsense_has_no_suggestion() -> None:
    with pytest.raises(UnknownNameError) as info:
        get_case("zzzzzzzz/qqqqqqq")
    assert "did you mean" not in str(info.value)
