"""Cases: a named RASP program with its vocabulary, length and seeded input domain.

A case is declared by one decorated function in a file under `suites/`; the file name
is the suite name. The function returns a fresh RASP program each time it is called.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

from interpbench.errors import BadInputError
from interpbench.registry import Registry

Value = Hashable
Predicate = Callable[[Sequence[Value]], bool]

RESERVED_TOKENS = ("compiler_bos", "compiler_pad")


@dataclasses.dataclass(frozen=True)
class Domain:
    """The inputs a program is meant for, as a seeded sampler and a membership test.

    Attributes:
        min_len: Shortest input length (at least 1).
        max_len: Longest input length; None means the case's max_seq_len.
        distinct: Every token of an input differs (e.g. `sort_unique`).
        alphabet: Tokens inputs draw from; None means the case's whole vocab.
        predicate: Extra precondition an input must satisfy (rejection-sampled).
    """

    min_len: int = 1
    max_len: int | None = None
    distinct: bool = False
    alphabet: tuple[Value, ...] | None = None
    predicate: Predicate | None = None

    def tokens(self, vocab: Sequence[Value]) -> tuple[Value, ...]:
        """The alphabet inputs draw from, in a stable order."""
        return tuple(self.alphabet) if self.alphabet is not None else tuple(vocab)

    def contains(self, xs: Sequence[Value], vocab: Sequence[Value], max_seq_len: int) -> bool:
        """Whether `xs` is an input of this domain (used to filter substitutions)."""
        hi = self.max_len if self.max_len is not None else max_seq_len
        alphabet = set(self.tokens(vocab))
        if not self.min_len <= len(xs) <= hi or any(x not in alphabet for x in xs):
            return False
        if self.distinct and len(set(xs)) != len(xs):
            return False
        return self.predicate is None or bool(self.predicate(xs))

    def sample(
        self, rng: np.random.Generator, n: int, vocab: Sequence[Value], max_seq_len: int
    ) -> list[list[Value]]:
        """Draws `n` inputs; raises BadInputError when the domain yields none.

        Lengths are drawn uniformly, so short inputs appear as often as long ones.
        """
        alphabet = self.tokens(vocab)
        hi = self.max_len if self.max_len is not None else max_seq_len
        if not 1 <= self.min_len <= hi <= max_seq_len:
            raise BadInputError(
                f"domain lengths {self.min_len}..{hi} do not fit max_seq_len {max_seq_len}"
            )
        if self.distinct and len(alphabet) < self.min_len:
            raise BadInputError(
                f"domain needs {self.min_len} distinct tokens but the alphabet has {len(alphabet)}"
            )
        out: list[list[Value]] = []
        tries = 0
        while len(out) < n:
            tries += 1
            if tries > 200 * n + 1000:
                raise BadInputError(
                    f"domain sampler produced {len(out)} of {n} inputs in {tries} tries"
                )
            top = min(hi, len(alphabet)) if self.distinct else hi
            length = int(rng.integers(self.min_len, top + 1))
            idx = rng.choice(len(alphabet), size=length, replace=not self.distinct)
            xs = [alphabet[int(i)] for i in idx]
            if self.predicate is None or self.predicate(xs):
                out.append(xs)
        return out


@dataclasses.dataclass(frozen=True)
class Case:
    """One benchmark case: a RASP program factory plus everything needed to compile it.

    Attributes:
        suite: Suite name (the file under `suites/` that declares it).
        name: Case name inside the suite; the full name is `suite/name`.
        program: Zero-argument factory returning a fresh RASP SOp.
        vocab: Input tokens, in a stable order.
        max_seq_len: Longest input the compiled model accepts (BOS excluded).
        domain: Seeded input sampler respecting the program's precondition.
        description: One sentence saying what the program computes.
        reference: Where the program comes from.
        causal: Compile with a causal attention mask (the program must be causal).
        n_eval: Number of evaluation inputs drawn from the domain.
        mlp_exactness: tracr's numerical-MLP precision setting.
    """

    suite: str
    name: str
    program: Callable[[], Any]
    vocab: tuple[Value, ...]
    max_seq_len: int
    domain: Domain = Domain()
    description: str = ""
    reference: str = ""
    causal: bool = False
    n_eval: int = 48
    mlp_exactness: int = 100

    @property
    def full_name(self) -> str:
        """`suite/name`, the name users type."""
        return f"{self.suite}/{self.name}"

    def source(self) -> str:
        """Source text of the program factory (program-level ground truth)."""
        try:
            return inspect.getsource(self.program)
        except (OSError, TypeError):
            return repr(self.program)

    def validate(self) -> None:
        """Raises BadInputError for a vocab or length tracr cannot take."""
        if self.max_seq_len < 1:
            raise BadInputError(f"{self.full_name}: max_seq_len must be >= 1, got {self.max_seq_len}")
        if not self.vocab:
            raise BadInputError(f"{self.full_name}: vocab is empty")
        clash = [t for t in self.vocab if t in RESERVED_TOKENS]
        if clash:
            raise BadInputError(f"{self.full_name}: vocab contains reserved token {clash[0]!r}")
        if len(set(self.vocab)) != len(self.vocab):
            raise BadInputError(f"{self.full_name}: vocab has duplicate tokens")


CASES: Registry[Case] = Registry("case")


def case(
    *,
    vocab: Sequence[Value],
    max_seq_len: int,
    domain: Domain | None = None,
    description: str = "",
    reference: str = "",
    causal: bool = False,
    name: str | None = None,
    suite: str | None = None,
    n_eval: int = 48,
    mlp_exactness: int = 100,
) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    """Decorator registering a RASP program factory as a case.

    The suite defaults to the defining module's file name and the case name to the
    function name. The description defaults to the function's docstring.

    Example:
        @case(vocab=[1, 2, 3], max_seq_len=5, reference="tracr lib.make_reverse")
        def reverse():
            "Reverses the input."
            return lib.make_reverse(rasp.tokens)
    """

    def register(fn: Callable[[], Any]) -> Callable[[], Any]:
        suite_name = suite or fn.__module__.rsplit(".", 1)[-1]
        vocab_t = tuple(sorted(vocab, key=lambda v: (str(type(v)), v)))
        c = Case(
            suite=suite_name,
            name=name or fn.__name__,
            program=fn,
            vocab=vocab_t,
            max_seq_len=max_seq_len,
            domain=domain or Domain(),
            description=description or (inspect.getdoc(fn) or "").split("\n")[0],
            reference=reference,
            causal=causal,
            n_eval=n_eval,
            mlp_exactness=mlp_exactness,
        )
        c.validate()
        CASES.add(c.full_name, c, replace=True)
        return fn

    return register


def get_case(name: str) -> Case:
    """Looks a case up by `suite/name` (loading suites first), with "did you mean"."""
    from interpbench.discovery import load_suites

    load_suites()
    return CASES.get(name)


def list_cases(suites: Sequence[str] | None = None) -> list[Case]:
    """All registered cases, optionally restricted to some suites."""
    from interpbench.discovery import load_suites

    load_suites()
    cases = [c for _, c in CASES.items()]
    if suites:
        known = {c.suite for c in cases}
        for s in suites:
            if s not in known:
                from interpbench.registry import unknown_name_message

                raise BadInputError(unknown_name_message("suite", s, sorted(known)))
        cases = [c for c in cases if c.suite in suites]
    return cases
