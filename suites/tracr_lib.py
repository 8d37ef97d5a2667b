"""Every program of tracr's `compiler/lib.py`, with arguments chosen to compile quickly."""

from collections.abc import Hashable, Sequence

from tracr.compiler import lib
from tracr.rasp import rasp

from interpbench import Domain, case

REF = "Lindner et al. 2023, tracr compiler/lib.py"
LETTERS = ("a", "b", "c", "d")


# Preconditions that keep the relevance ground truth informative: without them every
# token is relevant to every output (whole-input counts) or to none (odd-length brackets).


def at_most_two_a(xs: Sequence[Hashable]) -> bool:
    """The token `a` occurs at most twice."""
    return list(xs).count("a") <= 2


def at_most_twice_each(xs: Sequence[Hashable]) -> bool:
    """No token occurs more than twice."""
    return all(list(xs).count(x) <= 2 for x in xs)


def even_length(xs: Sequence[Hashable]) -> bool:
    """Odd-length bracket strings are never balanced."""
    return len(xs) % 2 == 0


@case(vocab=LETTERS, max_seq_len=5, reference=REF)
def length():
    """Every position holds the input length (SelectorWidth of an all-true selector)."""
    return lib.make_length()


@case(vocab=LETTERS, max_seq_len=5, reference=REF)
def reverse():
    """Reverses the input: position i reads position length - 1 - i."""
    return lib.make_reverse(rasp.tokens)


@case(vocab=("a", "b", "c"), max_seq_len=5, domain=Domain(min_len=3, predicate=at_most_twice_each), reference=REF)
def hist():
    """Each position holds how often its token occurs in the input."""
    return lib.make_hist()


@case(vocab=(1, 2, 3, 4, 5, 6), max_seq_len=5, domain=Domain(min_len=2, distinct=True), reference=REF)
def sort_unique():
    """Sorts inputs of distinct tokens in increasing order."""
    return lib.make_sort_unique(rasp.tokens, rasp.tokens)


# tracr's make_sort builds max_seq_len into its tie-break key, so beyond that length the
# program is not a sort: the domain stops there (held-out longer inputs are not drawn).
@case(vocab=(1, 2, 3, 4), max_seq_len=4, domain=Domain(min_len=2, max_len=4), reference=REF)
def sort():
    """Sorts inputs that may repeat tokens (ties broken by position)."""
    return lib.make_sort(rasp.tokens, rasp.tokens, max_seq_len=4, min_key=1)


@case(vocab=(1, 2, 3), max_seq_len=4, domain=Domain(min_len=2, max_len=4), reference=REF)
def sort_freq():
    """Sorts tokens by decreasing frequency, ties kept in input order."""
    return lib.make_sort_freq(max_seq_len=4)


@case(vocab=LETTERS, max_seq_len=5, reference=REF)
def frac_prevs():
    """Fraction of positions up to here holding the token `a` (numerical)."""
    return lib.make_frac_prevs(rasp.tokens == "a")


@case(vocab=("(", ")", "x"), max_seq_len=5, reference=REF)
def pair_balance():
    """Fraction of open minus fraction of close brackets up to each position."""
    return lib.make_pair_balance(rasp.tokens, "(", ")")


@case(vocab=("(", ")"), max_seq_len=4, domain=Domain(predicate=even_length), reference=REF)
def shuffle_dyck():
    """1 everywhere if the brackets are balanced (Shuffle-Dyck-1), else 0."""
    return lib.make_shuffle_dyck(["()"])


@case(vocab=("(", ")", "{", "}"), max_seq_len=4, domain=Domain(predicate=even_length), reference=REF)
def shuffle_dyck2():
    """1 everywhere if both bracket kinds are balanced (Shuffle-Dyck-2), else 0."""
    return lib.make_shuffle_dyck2()


@case(vocab=LETTERS, max_seq_len=5, domain=Domain(min_len=3), reference=REF)
def count_less_freq():
    """Number of positions whose token occurs at most twice."""
    return lib.make_count_less_freq(2)


@case(vocab=("a", "b"), max_seq_len=5, domain=Domain(min_len=3, predicate=at_most_two_a), reference=REF)
def count():
    """Number of `a` tokens in the input, at every position."""
    return lib.make_count(rasp.tokens, "a")


@case(vocab=("a", "b", "c"), max_seq_len=5, reference=REF)
def detect_pattern():
    """True at the last position of each occurrence of `ab` (None before position 1)."""
    return lib.detect_pattern(rasp.tokens, "ab")


@case(vocab=LETTERS, max_seq_len=5, reference=REF)
def shift_by():
    """The input shifted right by 2 (None at the first two positions)."""
    return lib.shift_by(2, rasp.tokens)


@case(vocab=(0, 1, 2), max_seq_len=4, reference=REF)
def nary_sequencemap():
    """(token + index + length) mod 3 at each position, as one 3-ary sequence map."""
    return lib.make_nary_sequencemap(lambda x, i, n: (x + i + n) % 3, rasp.tokens, rasp.indices, lib.make_length())
