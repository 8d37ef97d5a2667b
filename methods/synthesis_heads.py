"""Head-program synthesis: a selector program per attention head, found from its attention."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from interpbench.errors import BadInputError
from interpbench.explanation import Explanation
from interpbench.method import Method, method

if TYPE_CHECKING:
    from interpbench.compiled import CompiledCase
    from interpbench.synthesis import SearchResult

OVERSAMPLE = 20  # domain draws per wanted training input, to find inputs outside the evaluation set
TRAIN_STREAM = 4  # separates this method's draws from other uses of the same seed


def training_inputs(case: CompiledCase, n: int, seed: int) -> tuple[list[list[Any]], int]:
    """`n` distinct inputs from the case's domain, avoiding its evaluation inputs where possible.

    Draws `OVERSAMPLE * n` inputs with the seed, keeps distinct ones in draw order, takes those
    outside `case.inputs` first and fills up with evaluation inputs only when the domain is too
    small. Fewer than `n` come back when the domain has fewer distinct inputs.

    Returns:
        (inputs, how many of them are also evaluation inputs).
    """
    c = case.case
    rng = np.random.default_rng([seed, TRAIN_STREAM])
    draws = c.domain.sample(rng, OVERSAMPLE * n, c.vocab, c.max_seq_len)
    distinct = list({tuple(x): None for x in draws})
    held = {tuple(x) for x in case.inputs}
    fresh = [x for x in distinct if x not in held]
    reused = [x for x in distinct if x in held][: max(0, n - len(fresh))]
    chosen = fresh[:n] + reused
    return [list(x) for x in chosen], len(reused)


def _check(settings: dict[str, Any]) -> None:
    """Refuses unusable settings with one line naming the setting."""
    for key, least in (("n_train", 1), ("budget", 0)):
        v = settings[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < least:
            raise BadInputError(f"{key} must be an integer >= {least}, got {v!r}")
    f = settings["found_iou"]
    if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 < float(f) <= 1.0:
        raise BadInputError(f"found_iou must be a number in (0, 1], got {f!r}")


@method("head_program_synthesis", family="synthesis", kinds=("head_patterns",))
class HeadProgramSynthesis(Method):
    """For every attention head, the simplest selector program matching its attention.

    Runs the model once on `n_train` training inputs drawn from the case's domain with the
    seed (evaluation inputs avoided where the domain is big enough), reads every head's
    attention and asks the synthesizer `backend` for an `interpbench.selector/1` program per
    head (see `interpbench.head_search` for the enumerative default). Every head of the model
    is searched, padding heads included: the method cannot know which heads are inert.

    Returns head_patterns = each program's pattern on the evaluation inputs (all-zero for a
    head with no program), head_programs = the specs, source = every program as Python with
    its head, status and training IoU, and per-head diagnostics. Status per head: "found"
    when the training IoU reaches `found_iou`, "partial" for the best program of a DSL that
    cannot express the head, "not_found" when the budget ran out first.

    Settings:
        backend: Synthesizer name (default "enumerative").
        n_train: Training inputs (default 64).
        budget: Candidate programs scored per head (default 20000).
        found_iou: Training soft IoU at which a head counts as found (default 0.99).
    """

    defaults: ClassVar[dict[str, Any]] = {"backend": "enumerative", "n_train": 64, "budget": 20000,
                                          "found_iou": 0.99}  # fmt: skip

    def explain(self, case: CompiledCase, *, seed: int = 0) -> Explanation:
        """Searches a program for each head and renders its pattern on the evaluation inputs."""
        from interpbench.selector_dsl import SelectorProgram, describe, pattern, render_source
        from interpbench.synthesis import get_synthesizer, head_tasks

        _check(self.settings)
        start = time.perf_counter()
        backend = get_synthesizer(self.settings["backend"])
        found_iou = float(self.settings["found_iou"])
        train, overlap = training_inputs(case, self.settings["n_train"], seed)
        tasks = head_tasks(case, train, case.head_names(), budget=int(self.settings["budget"]), seed=seed,
                           threshold=found_iou)  # fmt: skip
        t = case.n_positions
        patterns: dict[str, np.ndarray] = {}
        programs: dict[str, dict[str, Any]] = {}
        sources: list[str] = []
        heads: dict[str, Any] = {}
        for task in tasks:
            name = task.head
            result = _reclassify(backend.synthesize_head(task), found_iou)
            program = None
            if result.program is not None:
                try:
                    program = SelectorProgram.from_json(result.program)
                    patterns[name] = pattern(program, case.inputs, t)
                except BadInputError as exc:  # a backend's spec we cannot run: no program
                    program, result = None, _unusable(result, str(exc))
            if program is None:
                patterns[name] = np.zeros((len(case.inputs), t, t))
                sources.append(f"# {name}: {result.status}, no program ({result.note})\n")
            else:
                programs[name] = program.to_json()
                sources.append(f"# {name}: {result.status}, training IoU {result.score:.4f}\n"
                               + render_source(program, name))  # fmt: skip
            heads[name] = {**result.summary(), "program": None if program is None else describe(program)}
        statuses = [h["status"] for h in heads.values()]
        diagnostics = {
            "heads": heads,
            **{f"n_{s}": statuses.count(s) for s in ("found", "partial", "not_found")},
            "n_train": len(train),
            "train_eval_overlap": overlap,
            "backend": backend.name,
            "seconds": time.perf_counter() - start,
        }
        return Explanation(head_patterns=patterns, head_programs=programs, source="\n".join(sources),
                           diagnostics=diagnostics)  # fmt: skip


def _reclassify(result: SearchResult, found_iou: float) -> SearchResult:
    """Applies `found_iou` to any backend's result: found iff the training IoU reaches it."""
    import dataclasses

    score = result.score
    if result.program is None or not np.isfinite(score):
        return result
    if score >= found_iou and result.status != "found":
        return dataclasses.replace(result, status="found", note=f"training IoU {score:.4f} >= found_iou; {result.note}")
    if score < found_iou and result.status == "found":
        note = f"training IoU {score:.4f} < found_iou {found_iou}; {result.note}"
        return dataclasses.replace(result, status="partial", note=note)
    return result


def _unusable(result: SearchResult, why: str) -> SearchResult:
    """The result of a backend whose spec cannot run: not found, no program, with the reason."""
    import dataclasses

    return dataclasses.replace(result, status="not_found", program=None, score=float("nan"),
                               note=f"the backend's program is unusable: {why}")  # fmt: skip
