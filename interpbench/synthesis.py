"""Synthesizer backends: what a program search sees (tasks) and returns (results), by name.

The synthesis adapters in `methods/` gather evidence from the model (attention on
training inputs, input/output behaviour) into a task, hand it to a backend, and turn the
result into an Explanation. Backends are registered with `@synthesizer(name)`; the
enumerative search ships as `enumerative` (the default), and `openai_compatible` asks a
language model behind an OpenAI-compatible endpoint (off unless configured).

Results are JSON specs (`interpbench.selector/1`, `interpbench.rasp/1`) that interpbench
interprets; no backend output is ever executed as code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np

from interpbench.registry import Registry

if TYPE_CHECKING:
    from interpbench.compiled import CompiledCase

Value = Any
STATUSES = ("found", "partial", "not_found")


@dataclasses.dataclass(frozen=True)
class HeadTask:
    """Evidence about one attention head.

    Attributes:
        head: Head name, `L{layer}H{head}`.
        inputs: Training inputs as token values (BOS excluded).
        attention: [n, T, T] the head's observed pattern on them; position 0 is BOS,
            input token k sits at position k + 1; rows and columns past the input are 0.
        vocab: The model's input vocabulary, in a stable order.
        causal: Whether the model masks attention causally.
        budget: Most candidate programs the search may score.
        seed: Seed for any randomness in the search.
        threshold: Training soft IoU at which a program counts as found.
    """

    head: str
    inputs: tuple[tuple[Value, ...], ...]
    attention: np.ndarray
    vocab: tuple[Value, ...]
    causal: bool
    budget: int
    seed: int = 0
    threshold: float = 0.99


@dataclasses.dataclass(frozen=True)
class ProgramTask:
    """Input/output behaviour of a whole model, split into training and validation.

    Attributes:
        inputs: Training inputs as token values.
        outputs: The model's decoded output values on them (numbers for numerical models;
            None where the model emits no value, e.g. where an aggregate selects nothing).
        valid_inputs: Held-out inputs a found program must also fit.
        valid_outputs: The model's outputs on them.
        vocab: The model's input vocabulary.
        output_values: Every output value the model can emit (None for numerical models).
        numerical: Whether outputs are real numbers (compared within `atol`).
        max_seq_len: Longest input the model accepts.
        budget: Most candidate expressions the search may build.
        seed: Seed for any randomness in the search.
        selector_hints: Head programs (`interpbench.selector/1` specs) the search may use
            as ready-made selectors; empty when synthesizing from behaviour alone.
        atol: Tolerance for numerical outputs.
        max_size: Largest expression size (number of operations) the search may build.
    """

    inputs: tuple[tuple[Value, ...], ...]
    outputs: tuple[tuple[Value, ...], ...]
    valid_inputs: tuple[tuple[Value, ...], ...]
    valid_outputs: tuple[tuple[Value, ...], ...]
    vocab: tuple[Value, ...]
    output_values: tuple[Value, ...] | None
    numerical: bool
    max_seq_len: int
    budget: int
    seed: int = 0
    selector_hints: tuple[dict[str, Any], ...] = ()
    atol: float = 1e-3
    max_size: int = 12


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """What a backend found.

    Attributes:
        status: "found" (fits all training and validation evidence), "partial" (the best
            candidate, which does not fit everything) or "not_found" (nothing usable within
            the budget; `program` may be None).
        program: The JSON spec, or None.
        score: Fit on the training evidence (soft IoU for heads, exact-match share for
            programs); NaN when nothing was scored.
        searched: Candidates scored.
        budget: The budget that applied.
        note: One line on how the result was reached or why the search stopped.
    """

    status: str
    program: dict[str, Any] | None
    score: float
    searched: int
    budget: int
    note: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")

    def summary(self) -> dict[str, Any]:
        """JSON-safe record for an Explanation's diagnostics."""
        return {"status": self.status, "score": self.score, "searched": self.searched,
                "budget": self.budget, "note": self.note}  # fmt: skip


class Synthesizer:
    """A search backend. Subclasses implement one or both tasks."""

    name: ClassVar[str] = ""

    @classmethod
    def unavailable(cls) -> str | None:
        """Why this backend cannot run here (e.g. not configured), or None."""
        return None

    def synthesize_head(self, task: HeadTask) -> SearchResult:
        """A selector program reproducing `task.attention`."""
        raise NotImplementedError(f"synthesizer {self.name!r} does not synthesize head programs")

    def synthesize_program(self, task: ProgramTask) -> SearchResult:
        """A RASP program reproducing `task.outputs`."""
        raise NotImplementedError(f"synthesizer {self.name!r} does not synthesize whole programs")


def head_tasks(
    case: CompiledCase, inputs: Sequence[Sequence[Value]], heads: Sequence[str], *, budget: int, seed: int,
    threshold: float = 0.99,
) -> list[HeadTask]:
    """One HeadTask per named head, from the model's attention on `inputs` (one batched forward).

    Rows and columns past each input (PAD) are zeroed, so a task holds only what the head
    does on the real tokens and BOS.
    """
    import torch

    ids, lengths = case.encode(inputs)
    names = [f"blocks.{l}.attn.hook_pattern" for l in range(case.weights.n_layers)]
    with torch.no_grad():
        _, cache = case.model.run_with_cache(torch.from_numpy(ids), names)
    real = np.arange(ids.shape[1])[None, :] <= lengths[:, None]  # BOS and the input's tokens
    pair = real[:, :, None] & real[:, None, :]
    shown = tuple(tuple(x) for x in inputs)
    tasks = []
    for name in heads:
        layer, head = (int(v) for v in name[1:].split("H"))
        attention = np.where(pair, cache[names[layer]][:, head].numpy(), 0.0)
        tasks.append(HeadTask(name, shown, attention, tuple(case.case.vocab), bool(case.case.causal),
                              int(budget), seed, float(threshold)))  # fmt: skip
    return tasks


SYNTHESIZERS: Registry[type[Synthesizer]] = Registry("synthesizer")

S = TypeVar("S", bound=type[Synthesizer])


def synthesizer(name: str) -> Callable[[S], S]:
    """Class decorator registering a Synthesizer backend under `name`."""

    def register(cls: S) -> S:
        cls.name = name
        SYNTHESIZERS.add(name, cls, replace=True)
        return cls

    return register


def get_synthesizer(name: str) -> Synthesizer:
    """An instance of the backend called `name` ("did you mean" on a typo).

    Raises:
        BadInputError: The name is unknown or the backend is unavailable here.
    """
    from interpbench.errors import BadInputError

    import interpbench.llm_backend  # noqa: F401  (registers openai_compatible)

    cls = SYNTHESIZERS.get(name)
    why = cls.unavailable()
    if why:
        raise BadInputError(f"synthesizer {name!r} is unavailable: {why}")
    return cls()


@synthesizer("enumerative")
class Enumerative(Synthesizer):
    """Exhaustive search, simplest candidates first, deterministic under the task's seed."""

    def synthesize_head(self, task: HeadTask) -> SearchResult:
        from interpbench.head_search import search_head

        return search_head(task, threshold=task.threshold)

    def synthesize_program(self, task: ProgramTask) -> SearchResult:
        from interpbench.rasp_search import search_program

        return search_program(task)
