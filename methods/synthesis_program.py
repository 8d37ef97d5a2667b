"""Whole-program synthesis: search RASP programs that reproduce the model's input/output behaviour."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from interpbench.explanation import Explanation
from interpbench.method import Method, method

if TYPE_CHECKING:
    from interpbench.compiled import CompiledCase

SAMPLE_STREAM = 41  # seeds the training/validation sampler together with the cell's seed
BATCH = 256  # inputs per model forward


def sample_inputs(case: CompiledCase, n: int, seed: int) -> list[list[Any]]:
    """Up to `n` distinct inputs from the case's domain, evaluation inputs excluded where possible.

    Draws (seeded) until `n` new inputs are found or the domain stops yielding new ones.
    Evaluation inputs are added back for lengths that have no other input (every input of
    length 1 may be an evaluation input) and to top up a small domain; the result is
    shuffled, so training and validation both see every length.
    """
    c = case.case
    rng = np.random.default_rng([SAMPLE_STREAM, seed])
    held = list(dict.fromkeys(tuple(xs) for xs in case.inputs))
    held_set = set(held)
    fresh: dict[tuple[Any, ...], None] = {}
    for _ in range(20):
        before = len(fresh)
        for xs in c.domain.sample(rng, 2 * n, c.vocab, c.max_seq_len):
            if tuple(xs) not in held_set:
                fresh.setdefault(tuple(xs))
        if len(fresh) >= n or len(fresh) == before:
            break
    lengths = {len(x) for x in fresh}
    extra = [x for x in held if len(x) not in lengths][: max(n // 4, 1)]
    chosen = list(fresh)[: max(n - len(extra), 0)] + extra
    taken = set(chosen)
    chosen += [x for x in held if x not in taken][: max(n - len(chosen), 0)]
    order = rng.permutation(len(chosen))
    return [list(chosen[int(i)]) for i in order][:n]


def model_outputs(case: CompiledCase, inputs: Sequence[Sequence[Any]], undefined_logit: float) -> list[tuple[Any, ...]]:
    """The model's decoded output values on `inputs` (batched forwards).

    A categorical read-out whose logits are all below `undefined_logit` in magnitude
    carries no value (tracr writes nothing to the output space where the program's value
    is None, so every logit is ~0 and the argmax is noise); it decodes to None.
    """
    import torch

    values = case.weights.output_values
    out: list[tuple[Any, ...]] = []
    for start in range(0, len(inputs), BATCH):
        chunk = inputs[start : start + BATCH]
        ids, lengths = case.encode(chunk)
        with torch.no_grad():
            logits = case.model(torch.from_numpy(ids)).numpy()
        decoded = case.decode(logits)
        empty = np.abs(logits).max(-1) < undefined_logit
        for row, none, n in zip(decoded, empty, lengths):
            if values is None:
                out.append(tuple(float(y) for y in row[1 : n + 1]))
            else:
                out.append(tuple(None if e else values[int(y)] for y, e in zip(row[1 : n + 1], none[1 : n + 1])))
    return out


def head_hints(case: CompiledCase, inputs: Sequence[Sequence[Any]], backend: str, budget: int,
               seed: int, found_iou: float = 0.99) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:  # fmt: skip
    """Selector programs of the model's live heads, searched on their attention over `inputs`.

    Returns:
        ({head: selector/1 spec} for heads with a found or partial program, {head: search summary}).
    """
    from interpbench.methods.attention import live_heads
    from interpbench.synthesis import get_synthesizer, head_tasks

    live = [f"L{l}H{h}" for l, heads in enumerate(live_heads(case.weights)) for h in heads]
    synth = get_synthesizer(backend)
    programs, summaries = {}, {}
    for task in head_tasks(case, inputs, live, budget=budget, seed=seed, threshold=found_iou):
        result = synth.synthesize_head(task)
        summaries[task.head] = result.summary()
        if result.program is not None and result.status in ("found", "partial"):
            programs[task.head] = result.program
    return programs, summaries


@method("program_synthesis", family="synthesis", kinds=("program",))
class ProgramSynthesis(Method):
    """Bottom-up RASP program search from the model's input/output behaviour alone.

    The model is run on `n_train` training and `n_valid` validation inputs drawn (seeded)
    from the case's domain, excluding the evaluation inputs where the domain is large
    enough; its decoded outputs form a `ProgramTask` for the synthesizer `backend`
    (`enumerative`: `interpbench.rasp_search`). The result is the program as an
    `interpbench.rasp/1` spec and as Python source; the search's status, score, candidates
    used and note go to `diagnostics["search"]`. The ground truth is never read.

    Settings:
        backend: Synthesizer name (default "enumerative").
        n_train: Training inputs (default 64).
        n_valid: Validation inputs a program must also fit (default 64).
        budget: Most candidate expressions the search may build (default 100000, about 5 s).
        max_size: Largest expression size searched (default 12).
        atol: Tolerance for numerical outputs (default 1e-3).
        undefined_logit: A categorical read-out with every |logit| below this decodes to None
            (the model emits no value there; default 0.5, tracr's read-out is 0 or 1).
    """

    behaviour_only: ClassVar[bool] = True  # decoded outputs on token inputs only
    defaults: ClassVar[dict[str, Any]] = {"backend": "enumerative", "n_train": 64, "n_valid": 64,
                                          "budget": 100000, "max_size": 12, "atol": 1e-3,
                                          "undefined_logit": 0.5}  # fmt: skip

    def hints(self, case: CompiledCase, inputs: list[list[Any]], seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """Head programs to seed the search with (none for behaviour-only synthesis)."""
        return {}, {}

    def check_settings(self) -> None:
        """Refuses unusable settings with one line naming the setting."""
        from interpbench.errors import BadInputError
        from interpbench.setting_checks import require_positive_int

        require_positive_int(self.settings, "n_train", "n_valid", "budget", "max_size")
        for key in ("atol", "undefined_logit"):
            value = self.settings[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise BadInputError(f"{key} must be a positive number, got {value!r}")

    def explain(self, case: CompiledCase, *, seed: int = 0) -> Explanation:
        from interpbench.rasp_spec import render_source
        from interpbench.synthesis import ProgramTask, get_synthesizer

        self.check_settings()
        start = time.perf_counter()
        s = self.settings
        want = int(s["n_train"]) + int(s["n_valid"])
        inputs = sample_inputs(case, want, seed)
        evaluation = {tuple(xs) for xs in case.inputs}
        overlap = sum(tuple(xs) in evaluation for xs in inputs)
        n_train = int(s["n_train"]) if len(inputs) == want else max(1, len(inputs) * int(s["n_train"]) // want)
        train, valid = inputs[:n_train], inputs[n_train:]
        outputs = model_outputs(case, inputs, float(s["undefined_logit"]))
        head_programs, head_search = self.hints(case, train, seed)
        values = case.weights.output_values
        task = ProgramTask(
            inputs=tuple(tuple(x) for x in train), outputs=tuple(outputs[:n_train]),
            valid_inputs=tuple(tuple(x) for x in valid), valid_outputs=tuple(outputs[n_train:]),
            vocab=tuple(case.case.vocab), output_values=None if values is None else tuple(values),
            numerical=values is None, max_seq_len=case.case.max_seq_len, budget=int(s["budget"]),
            seed=seed, selector_hints=tuple(head_programs[k] for k in sorted(head_programs)), atol=float(s["atol"]),
            max_size=int(s["max_size"]),
        )  # fmt: skip
        search_start = time.perf_counter()
        result = get_synthesizer(str(s["backend"])).synthesize_program(task)
        # the spec carries the search's own verdict: only a found program is scored as one
        spec = None if result.program is None else {**result.program, "status": result.status}
        if spec is not None and spec.get("output") is not None:
            source = render_source(spec)
            if result.status != "found":
                source = f"# best candidate, not a found program ({result.note})\n{source}"
        else:
            source = f"# no program found: {result.note}\n"
        diagnostics: dict[str, Any] = {
            "search": result.summary(), "n_train": len(train), "n_valid": len(valid), "train_eval_overlap": overlap,
            "search_seconds": time.perf_counter() - search_start, "seconds": time.perf_counter() - start,
        }  # fmt: skip
        if head_search:
            diagnostics["head_search"] = head_search
        return Explanation(program=spec if spec is not None else _empty(result.status), source=source,
                           head_programs=head_programs or None, diagnostics=diagnostics)  # fmt: skip


def _empty(status: str) -> dict[str, Any]:
    """A spec with no output: the adapter still returns a program explanation, scored as nothing found."""
    return {"format": "interpbench.rasp/1", "status": status, "nodes": [], "output": None}


@method("program_synthesis_heads", family="synthesis", kinds=("program",))
class ProgramSynthesisHeads(ProgramSynthesis):
    """`program_synthesis` seeded with the head programs found on the model's attention.

    Each live head's attention on the training inputs is handed to the backend's head
    search (`synthesize_head`, budget `head_budget`); the selector programs found (or the
    best partial ones) become `selector_hints`, which the whole-program search translates
    into RASP selectors and features at the cost of a leaf. The head programs are kept
    in the explanation (`head_programs`) and their search summaries in
    `diagnostics["head_search"]`.

    Settings:
        As `program_synthesis`, plus head_budget: most selector programs scored per head
        (default 5000), and head_found_iou: training soft IoU at which a head program
        counts as found (default 0.99).
    """

    behaviour_only: ClassVar[bool] = False  # reads the model's attention

    defaults: ClassVar[dict[str, Any]] = {**ProgramSynthesis.defaults, "head_budget": 5000, "head_found_iou": 0.99}

    def check_settings(self) -> None:
        """As `program_synthesis`, plus the head search's budget and threshold."""
        from interpbench.errors import BadInputError
        from interpbench.setting_checks import require_positive_int

        super().check_settings()
        require_positive_int(self.settings, "head_budget")
        f = self.settings["head_found_iou"]
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1:
            raise BadInputError(f"head_found_iou must be a number in (0, 1], got {f!r}")

    def hints(self, case: CompiledCase, inputs: list[list[Any]], seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """Selector programs of the model's live heads (see `head_hints`)."""
        s = self.settings
        return head_hints(case, inputs, str(s["backend"]), int(s["head_budget"]), seed, float(s["head_found_iou"]))
