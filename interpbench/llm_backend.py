"""Synthesizer backend that asks a language model behind an OpenAI-compatible endpoint.

Off by default: it is available only when `INTERPBENCH_LLM_BASE_URL` (e.g.
`http://localhost:8000/v1`) and `INTERPBENCH_LLM_MODEL` are set; `INTERPBENCH_LLM_API_KEY`
is sent as a bearer token when set, `INTERPBENCH_LLM_TIMEOUT` (seconds, default 60)
bounds each request. Tests and `make bench` never need it.

In the spirit of Hayes et al.: the model sees the evidence (attention as weighted edges,
or input/output examples) and the JSON grammar of our DSL, answers with one JSON spec,
which is validated and scored by interpbench on the training evidence; the worst
example is sent back for a refinement round. Replies are parsed as JSON, never executed.
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from interpbench.synthesis import HeadTask, ProgramTask, SearchResult, Synthesizer, synthesizer

ENV_URL, ENV_MODEL, ENV_KEY, ENV_TIMEOUT = (
    "INTERPBENCH_LLM_BASE_URL", "INTERPBENCH_LLM_MODEL", "INTERPBENCH_LLM_API_KEY", "INTERPBENCH_LLM_TIMEOUT",
)  # fmt: skip
FOUND_SCORE = 0.99
MAX_EXAMPLES = 6


class BackendReplyError(Exception):
    """The endpoint answered, but not with a usable spec (kept per attempt, never fatal)."""


def chat(messages: list[dict[str, str]], *, temperature: float = 0.0) -> str:
    """One chat-completion request to the configured endpoint; returns the reply text.

    Raises:
        BackendReplyError: The endpoint is unreachable or its answer has no message.
    """
    url = os.environ[ENV_URL].rstrip("/") + "/chat/completions"
    body = json.dumps({"model": os.environ[ENV_MODEL], "messages": messages, "temperature": temperature}).encode()
    headers = {"Content-Type": "application/json"}
    if os.environ.get(ENV_KEY):
        headers["Authorization"] = f"Bearer {os.environ[ENV_KEY]}"
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=float(os.environ.get(ENV_TIMEOUT, "60"))) as resp:
            payload = json.loads(resp.read().decode())
        return str(payload["choices"][0]["message"]["content"])
    except (OSError, KeyError, IndexError, TypeError, json.JSONDecodeError) as exc:  # URLError, timeouts, resets
        raise BackendReplyError(f"endpoint {url}: {type(exc).__name__}: {exc}") from None


def extract_json(text: str) -> dict[str, Any]:
    """The first JSON object in a reply (fenced or bare).

    Raises:
        BackendReplyError: No parsable JSON object.
    """
    fenced = re.findall(r"```(?:json)?\s*(\{.*?\})\s*```", text, flags=re.S)
    candidates = fenced + [text[i:] for i, ch in enumerate(text) if ch == "{"][:20]
    decoder = json.JSONDecoder()
    for c in candidates:
        try:
            obj, _ = decoder.raw_decode(c.strip())
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return obj
    raise BackendReplyError("the reply holds no JSON object")


def _edges(tokens: Sequence[Any], attention: np.ndarray) -> str:
    """Attention of one input as weighted edges `q:tok -> k:tok (w)`, strongest first per query."""
    labels = ["BOS", *(f"{i}:{t}" for i, t in enumerate(tokens))]
    lines = []
    for q in range(1, len(tokens) + 1):
        row = attention[q, : len(tokens) + 1]
        keep = [k for k in np.argsort(-row, kind="stable") if row[k] >= 0.05]
        lines.append(f"  {labels[q]} -> " + ", ".join(f"{labels[k]} ({row[k]:.2f})" for k in keep))
    return "\n".join(lines)


HEAD_GRAMMAR = """Answer with ONE JSON object (no prose) of this form:
{"format": "interpbench.selector/1", "query": F, "key": F, "op": OP, "offset": INT, "bos": "fallback"|"always", "causal": BOOL}
Key j is selected for query i iff key_feature(j) OP query_feature(i) + offset. OP is one of
"==", "!=", "<", "<=", ">", ">=", "true". F is one of: token, index, length, rev_index (length-1-index),
const (0), prev_token, next_token, token_count (occurrences of the token), lt_count (tokens smaller than it),
leq_count, rank (position of the token in stable sorted order), is:<token> (1 if the token equals <token>,
written as Python's repr, e.g. is:'a' or is:3). Each query attends uniformly to its selected keys;
with bos "fallback" it attends to BOS only when nothing is selected, with "always" BOS is always attended too."""

PROGRAM_GRAMMAR = """Answer with ONE JSON object (no prose) of the interpbench.rasp/1 form:
{"format": "interpbench.rasp/1", "status": "found", "nodes": [NODE, ...], "output": ID}
NODE is one of {"id": ID, "op": "tokens"}, {"id": ID, "op": "indices"},
{"id": ID, "op": "map", "args": [ID], "fn": FN, "encoding": "categorical"|"numerical"},
{"id": ID, "op": "sequence_map", "args": [ID, ID], "fn": FN, "encoding": ...},
{"id": ID, "op": "select", "keys": ID, "queries": ID, "predicate": {"op": "EQ"|"LT"|"LEQ"|"GT"|"GEQ"|"NEQ"|"TRUE"|"FALSE", "offset": INT}},
{"id": ID, "op": "aggregate", "selector": ID, "sop": ID, "default": VALUE, "encoding": ...},
{"id": ID, "op": "selector_width", "selector": ID}.
The predicate means key OP (query + offset). FN is {"kind": "linear", "coef": [INT, ...], "const": INT, "mod": INT|null}
(sum of coef*arg + const, then modulo), {"kind": "indicator", "value": VALUE} (1 if arg == VALUE else 0), or
{"kind": "table", "table": [[[ARG, ...], VALUE], ...], "default": VALUE}. Nodes are listed children first."""


def _refine(
    first: list[dict[str, str]], budget: int, score: Callable[[dict[str, Any]], tuple[float, str]],
    threshold: float = FOUND_SCORE, unfit: str = "partial",
) -> SearchResult:
    """Ask, score, and ask again with the worst case, `budget` replies at most.

    The best usable reply that does not reach `threshold` is returned with status `unfit`
    ("partial" for heads, whose patterns earn partial credit; "not_found" for programs,
    which count only when found).
    """
    messages = list(first)
    best: tuple[float, dict[str, Any] | None] = (float("-inf"), None)
    notes = []
    for attempt in range(max(budget, 0)):
        try:
            reply = chat(messages)
            spec = extract_json(reply)
            value, feedback = score(spec)
        except BackendReplyError as exc:
            notes.append(f"attempt {attempt + 1}: {exc}")
            reply, value, feedback, spec = "", float("-inf"), f"That answer was unusable ({exc}). Answer with one JSON object.", None
        if spec is not None and value > best[0]:
            best = (value, spec)
        if value >= threshold:
            return SearchResult("found", spec, value, attempt + 1, budget, f"accepted on reply {attempt + 1}")
        messages += [{"role": "assistant", "content": reply}, {"role": "user", "content": feedback}]
    if best[1] is None:
        return SearchResult("not_found", None, float("nan"), max(budget, 0), budget,
                            f"not found within budget of {budget} replies; " + "; ".join(notes[-2:]))  # fmt: skip
    return SearchResult(unfit, best[1], best[0], budget, budget, f"not found within budget of {budget} replies; best kept")


@synthesizer("openai_compatible")
class OpenAICompatible(Synthesizer):
    """A language model proposes specs; interpbench validates and scores them (budget = replies)."""

    @classmethod
    def unavailable(cls) -> str | None:
        missing = [v for v in (ENV_URL, ENV_MODEL) if not os.environ.get(v)]
        return f"set {' and '.join(missing)} to use a language-model backend" if missing else None

    def synthesize_head(self, task: HeadTask) -> SearchResult:
        """Shows the head's attention as weighted edges and asks for a selector/1 spec."""
        from interpbench.errors import BadInputError
        from interpbench.head_search import soft_iou_score
        from interpbench.selector_dsl import SelectorProgram, pattern

        shown = "\n".join(f"input {b}: {' '.join(map(str, xs))}\n{_edges(xs, task.attention[b])}"
                          for b, xs in enumerate(task.inputs[:MAX_EXAMPLES]))  # fmt: skip
        prompt = (f"An attention head of a transformer (causal: {task.causal}) attends as follows "
                  f"(query -> keys with weights; BOS is the start token):\n{shown}\n\n"
                  f"Write the selector program that reproduces this attention.\n{HEAD_GRAMMAR}")  # fmt: skip

        def score(spec: dict[str, Any]) -> tuple[float, str]:
            try:
                program = SelectorProgram.from_json(spec)
            except BadInputError as exc:
                raise BackendReplyError(str(exc)) from None
            predicted = pattern(program, [list(x) for x in task.inputs], task.attention.shape[1])
            iou, worst = soft_iou_score(predicted, task.attention, [len(x) for x in task.inputs])
            xs = task.inputs[worst]
            return iou, (f"Soft IoU {iou:.3f}. Worst input: {' '.join(map(str, xs))}; observed:\n"
                         f"{_edges(xs, task.attention[worst])}\nyours:\n{_edges(xs, predicted[worst])}\n"
                         "Answer with a corrected JSON object.")  # fmt: skip

        return _refine([{"role": "user", "content": prompt}], task.budget, score, task.threshold)

    def synthesize_program(self, task: ProgramTask) -> SearchResult:
        """Shows input/output examples and asks for a rasp/1 spec; validation inputs count too."""
        from interpbench.errors import BadInputError
        from interpbench.rasp_spec import run_spec
        from interpbench.rasp_values import same_output

        def show(xs: Sequence[Any], ys: Sequence[Any]) -> str:
            return f"  {' '.join(map(str, xs))}  ->  {' '.join(map(str, ys))}"

        examples = "\n".join(show(x, y) for x, y in list(zip(task.inputs, task.outputs))[: 4 * MAX_EXAMPLES])
        prompt = (f"A transformer maps token sequences (vocabulary {list(task.vocab)}) to one output per "
                  f"position ({'numbers' if task.numerical else 'values'}):\n{examples}\n\n"
                  f"Write a RASP program computing it.\n{PROGRAM_GRAMMAR}")  # fmt: skip
        pairs = list(zip(task.inputs, task.outputs)) + list(zip(task.valid_inputs, task.valid_outputs))

        def score(spec: dict[str, Any]) -> tuple[float, str]:
            hits, worst = 0, None
            for xs, ys in pairs:
                try:
                    got = run_spec(spec, list(xs))
                except BadInputError as exc:
                    raise BackendReplyError(str(exc)) from None
                except Exception as exc:  # the program fails on this input: a miss, with feedback
                    got = [f"error: {type(exc).__name__}"] * len(xs)
                ok = len(got) == len(ys) and all(  # None exactly where the model emits no value
                    (g is None) == (y is None) and (g is None or same_output(g, y, numerical=task.numerical, atol=task.atol))
                    for g, y in zip(got, ys)
                )
                hits += ok
                if not ok and worst is None:
                    worst = (xs, ys, got)
            acc = hits / max(len(pairs), 1)
            if worst is None:
                return acc, "All examples match."
            xs, ys, got = worst
            return acc, (f"{acc:.0%} of examples match. Counterexample:\n{show(xs, ys)}\nyours:\n{show(xs, got)}\n"
                         "Answer with a corrected JSON object.")  # fmt: skip

        return _refine([{"role": "user", "content": prompt}], task.budget, score, 1.0, unfit="not_found")

