"""Small algorithmic RASP programs: histograms, order checks, copies, maps, counts and means."""

from __future__ import annotations

from collections.abc import Sequence

from tracr.rasp import rasp

from interpbench import Domain, case

RASP_REF = "Weiss et al. 2021, Thinking Like Transformers (RASP)"
INDUCTION_REF = "Olsson et al. 2022, In-context Learning and Induction Heads (previous-token head)"
OWN_REF = "interpbench"
LETTERS = ("a", "b", "c", "d")


def _length() -> rasp.SOp:
    """Input length at every position (SelectorWidth of an all-true selector)."""
    everything = rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.TRUE).named("all")
    return rasp.SelectorWidth(everything).named("length")


def _token_index_pair() -> rasp.SOp:
    """(token, index) at every position, so one Select can test both at once."""
    return rasp.SequenceMap(lambda t, i: (t, i), rasp.tokens, rasp.indices).named("token_index")


def _descents(xs: Sequence[int]) -> int:
    """Number of adjacent pairs with x[i] > x[i + 1]."""
    return sum(a > b for a, b in zip(xs, xs[1:]))


def _mismatched_pairs(xs: Sequence[object]) -> int:
    """Number of mirrored pairs (i, len - 1 - i), i < len - 1 - i, holding different tokens."""
    return sum(xs[i] != xs[-1 - i] for i in range(len(xs) // 2))


def at_most_one_descent(xs: Sequence[int]) -> bool:
    """Sorted or one adjacent swap away from it, so substitutions can make or break order."""
    return _descents(xs) <= 1


def at_most_one_mismatch(xs: Sequence[object]) -> bool:
    """A palindrome or one mirrored pair away from it."""
    return _mismatched_pairs(xs) <= 1


def at_most_one_top(xs: Sequence[int]) -> bool:
    """The top token 2 occurs at most once, so only its position fixes the maximum."""
    return list(xs).count(2) <= 1


def sparse(xs: Sequence[int]) -> bool:
    """At most two tokens are nonzero."""
    return sum(x != 0 for x in xs) <= 2


@case(vocab=("a", "b", "c"), max_seq_len=5, domain=Domain(min_len=3), reference=RASP_REF)
def double_hist():
    """Each position holds how many distinct tokens occur exactly as often as its own token."""
    hist = rasp.SelectorWidth(rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.EQ)).named("hist")
    same_freq = rasp.SelectorWidth(rasp.Select(hist, hist, rasp.Comparison.EQ)).named("same_freq_positions")
    # Positions sharing frequency f, divided by f, is the number of distinct such tokens.
    return rasp.SequenceMap(lambda n, f: n // f if f else 0, same_freq, hist).named("double_hist")


@case(
    vocab=(0, 1, 2, 3),
    max_seq_len=5,
    domain=Domain(min_len=2, predicate=at_most_one_descent),
    reference=OWN_REF,
)
def is_sorted():
    """Every position holds 1 if the input is non-decreasing, else 0."""
    pair = _token_index_pair()
    descent_here = rasp.SelectorWidth(
        rasp.Select(pair, pair, lambda k, q: k[1] == q[1] - 1 and k[0] > q[0])
    ).named("descent_here")
    any_descent = rasp.Select(descent_here, descent_here, lambda k, q: k > 0).named("any_descent")
    n_descents = rasp.SelectorWidth(any_descent).named("n_descents")
    return rasp.Map(lambda n: 1 if n == 0 else 0, n_descents).named("is_sorted")


@case(
    vocab=LETTERS,
    max_seq_len=5,
    domain=Domain(min_len=2, predicate=at_most_one_mismatch),
    reference=OWN_REF,
)
def palindrome():
    """Every position holds 1 if the input reads the same reversed, else 0."""
    opp = rasp.SequenceMap(lambda n, i: n - 1 - i, _length(), rasp.indices).named("opp_index")
    mirror = rasp.Aggregate(rasp.Select(rasp.indices, opp, rasp.Comparison.EQ), rasp.tokens).named("mirror")
    mismatch = rasp.SequenceMap(lambda x, y: 1 if x != y else 0, rasp.tokens, mirror).named("mismatch")
    n_mismatch = rasp.SelectorWidth(rasp.Select(mismatch, mismatch, lambda k, q: k == 1)).named("n_mismatch")
    return rasp.Map(lambda n: 1 if n == 0 else 0, n_mismatch).named("is_palindrome")


@case(vocab=LETTERS, max_seq_len=5, domain=Domain(min_len=2), reference=OWN_REF)
def copy_first():
    """Every position holds the first token of the input."""
    first = rasp.Select(rasp.indices, rasp.indices, lambda k, q: k == 0).named("select_first")
    return rasp.Aggregate(first, rasp.tokens).named("copy_first")


@case(vocab=LETTERS, max_seq_len=5, domain=Domain(min_len=2), reference=OWN_REF)
def copy_last():
    """Every position holds the last token of the input."""
    last = rasp.Map(lambda n: n - 1, _length()).named("last_index")
    return rasp.Aggregate(rasp.Select(rasp.indices, last, rasp.Comparison.EQ), rasp.tokens).named("copy_last")


@case(vocab=LETTERS, max_seq_len=5, domain=Domain(min_len=2), reference=OWN_REF)
def token_at_1():
    """Every position holds the token at index 1."""
    second = rasp.Select(rasp.indices, rasp.indices, lambda k, q: k == 1).named("select_index_1")
    return rasp.Aggregate(second, rasp.tokens).named("token_at_1")


@case(vocab=(0, 1, 2, 3), max_seq_len=5, domain=Domain(min_len=2), reference=OWN_REF)
def running_max():
    """Each position holds the largest token at or before it."""
    pair = _token_index_pair()
    seen = [
        rasp.SelectorWidth(
            rasp.Select(pair, rasp.indices, lambda k, q, v=v: k[1] <= q and k[0] >= v)
        ).named(f"seen_at_least_{v}")
        for v in (1, 2, 3)
    ]
    # With tokens 0..3 the prefix max is the number of thresholds 1, 2, 3 already reached.
    low = rasp.SequenceMap(lambda a, b: int(a > 0) + int(b > 0), seen[0], seen[1]).named("max_below_3")
    return rasp.SequenceMap(lambda m, c: 3 if c > 0 else m, low, seen[2]).named("running_max")


@case(vocab=("a", "b", "c"), max_seq_len=5, domain=Domain(min_len=3), reference=OWN_REF)
def count_first():
    """Number of positions at or before this one holding the first token of the input."""
    first = rasp.Aggregate(
        rasp.Select(rasp.indices, rasp.indices, lambda k, q: k == 0), rasp.tokens
    ).named("first")
    query = rasp.SequenceMap(lambda t, i: (t, i), first, rasp.indices).named("first_index")
    same_before = rasp.Select(
        _token_index_pair(), query, lambda k, q: k[0] == q[0] and k[1] <= q[1]
    ).named("first_token_up_to_here")
    return rasp.SelectorWidth(same_before).named("count_first")


@case(vocab=(0, 1, 2, 3, 4), max_seq_len=5, domain=Domain(min_len=2), reference=OWN_REF)
def double_mod5():
    """Each token t becomes (2 * t) mod 5 (an elementwise map)."""
    return rasp.Map(lambda t: (2 * t) % 5, rasp.tokens).named("double_mod5")


@case(vocab=(0, 1, 2, 3), max_seq_len=5, domain=Domain(min_len=2), reference=OWN_REF)
def token_plus_index():
    """Each position holds (token + index) mod 4 (a two-input sequence map)."""
    return rasp.SequenceMap(lambda t, i: (t + i) % 4, rasp.tokens, rasp.indices).named("token_plus_index")


@case(vocab=(0, 1, 2, 3), max_seq_len=5, domain=Domain(min_len=3, predicate=sparse), reference=RASP_REF)
def frac_nonzero():
    """Every position holds the fraction of input tokens that are nonzero (a numerical mean)."""
    nonzero = rasp.numerical(rasp.Map(lambda t: 1 if t != 0 else 0, rasp.tokens)).named("is_nonzero")
    everything = rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.TRUE).named("all")
    return rasp.numerical(rasp.Aggregate(everything, nonzero, default=0)).named("frac_nonzero")


@case(vocab=(1, 2, 3, 4, 5, 6), max_seq_len=5, domain=Domain(min_len=2, distinct=True), reference=RASP_REF)
def count_smaller():
    """Each position holds how many tokens of the (distinct-token) input are smaller than its own."""
    smaller = rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.LT).named("smaller")
    return rasp.SelectorWidth(smaller).named("count_smaller")


@case(vocab=LETTERS, max_seq_len=5, domain=Domain(min_len=2), causal=True, reference=OWN_REF)
def prefix_count_a():
    """Number of `a` tokens at or before each position, compiled with a causal mask."""
    a_index = rasp.SequenceMap(lambda t, i: i if t == "a" else -1, rasp.tokens, rasp.indices).named("a_index")
    earlier_a = rasp.Select(a_index, rasp.indices, lambda k, q: 0 <= k <= q).named("earlier_a")
    return rasp.SelectorWidth(earlier_a).named("prefix_count_a")


@case(vocab=LETTERS, max_seq_len=5, domain=Domain(min_len=2), causal=True, reference=INDUCTION_REF)
def prev_token():
    """Each position holds the previous token (None at the first), compiled with a causal mask."""
    prev = rasp.Select(rasp.indices, rasp.indices, lambda k, q: k == q - 1).named("select_prev")
    return rasp.Aggregate(prev, rasp.tokens).named("prev_token")


@case(vocab=(0, 1, 2), max_seq_len=5, domain=Domain(min_len=3, predicate=at_most_one_top), reference=OWN_REF)
def max_token():
    """Every position holds the largest token of the input."""
    greater = rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.GT).named("greater")
    n_greater = rasp.SelectorWidth(greater).named("n_greater")
    is_max = rasp.Map(lambda n: 1 if n == 0 else 0, n_greater).named("is_max")
    at_max = rasp.Select(is_max, rasp.indices, lambda k, q: k == 1).named("at_max")
    return rasp.Aggregate(at_max, rasp.tokens).named("max_token")


@case(vocab=("a", "b", "c"), max_seq_len=5, domain=Domain(min_len=3), reference=OWN_REF)
def first_occurrence():
    """Each position holds 1 if no earlier position holds its token, else 0."""
    pair = _token_index_pair()
    earlier_same = rasp.Select(pair, pair, lambda k, q: k[0] == q[0] and k[1] < q[1]).named("earlier_same")
    n_earlier = rasp.SelectorWidth(earlier_same).named("n_earlier_same")
    return rasp.Map(lambda n: 1 if n == 0 else 0, n_earlier).named("first_occurrence")
