"""The language-model backend, against a local scripted OpenAI-compatible HTTP server.

No language model is reachable offline, so these tests check the backend's own work:
configuration, the chat-completions protocol over real HTTP, parsing, validation,
scoring and the refinement round. Replies are scripted; nothing in them is executed.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from interpbench.errors import BadInputError
from interpbench.llm_backend import ENV_KEY, ENV_MODEL, ENV_URL, BackendReplyError, extract_json
from interpbench.synthesis import HeadTask, ProgramTask, get_synthesizer


class _Scripted(http.server.BaseHTTPRequestHandler):
    replies: list[str] = []
    seen: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        content = type(self).replies.pop(0) if type(self).replies else "no more answers"
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_Scripted]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Scripted.replies, _Scripted.seen = [], []
    monkeypatch.setenv(ENV_URL, f"http://127.0.0.1:{server.server_address[1]}/v1")
    monkeypatch.setenv(ENV_MODEL, "test-model")
    monkeypatch.setenv(ENV_KEY, "secret")
    yield _Scripted
    server.shutdown()


def test_off_unless_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_URL, raising=False)
    monkeypatch.delenv(ENV_MODEL, raising=False)
    with pytest.raises(BadInputError, match=ENV_URL):
        get_synthesizer("openai_compatible")
    with pytest.raises(BadInputError, match="did you mean"):
        get_synthesizer("enumerativ")


def test_extract_json_fenced_bare_and_missing() -> None:
    assert extract_json('Here:\n```json\n{"a": 1}\n```') == {"a": 1}
    assert extract_json('prose {"a": {"b": [1, 2]}} trailing') == {"a": {"b": [1, 2]}}
    with pytest.raises(BackendReplyError):
        extract_json("def attention(tokens): return []")


def _reverse_evidence() -> tuple[dict, HeadTask]:
    from interpbench.selector_dsl import SelectorProgram, pattern

    truth = {"format": "interpbench.selector/1", "query": "rev_index", "key": "index", "op": "==",
             "offset": 0, "bos": "fallback", "causal": False}  # fmt: skip
    rng = np.random.default_rng(0)
    inputs = tuple(tuple(rng.choice(list("abcd"), size=int(rng.integers(1, 6))).tolist()) for _ in range(16))
    att = pattern(SelectorProgram.from_json(truth), [list(x) for x in inputs], 6)
    return truth, HeadTask("L1H0", inputs, att, tuple("abcd"), False, budget=3)


def test_head_refines_after_an_unusable_and_a_wrong_reply(endpoint: type[_Scripted]) -> None:
    truth, task = _reverse_evidence()
    wrong = {**truth, "query": "index"}  # identity attention: a real but wrong program
    endpoint.replies = ["I think it reverses.", json.dumps(wrong), f"```json\n{json.dumps(truth)}\n```"]
    result = get_synthesizer("openai_compatible").synthesize_head(task)
    assert result.status == "found" and result.searched == 3
    assert result.program == truth and result.score == pytest.approx(1.0)
    assert [s["path"] for s in endpoint.seen] == ["/v1/chat/completions"] * 3
    assert endpoint.seen[0]["auth"] == "Bearer secret" and endpoint.seen[0]["body"]["model"] == "test-model"
    third = endpoint.seen[2]["body"]["messages"]
    assert "Soft IoU" in third[-1]["content"]  # the wrong program's score and worst case were fed back


def test_head_budget_runs_out_with_only_unusable_replies(endpoint: type[_Scripted]) -> None:
    _, task = _reverse_evidence()
    endpoint.replies = ['{"format": "interpbench.selector/1", "query": "__import__", "key": "index"}', "nothing"]
    result = get_synthesizer("openai_compatible").synthesize_head(dataclasses.replace(task, budget=2))
    assert result.status == "not_found" and result.program is None
    assert "not found within budget of 2" in result.note


def test_program_reply_is_validated_and_scored(endpoint: type[_Scripted]) -> None:
    from interpbench.program import evaluate
    from tracr.compiler import lib

    rng = np.random.default_rng(1)
    inputs = [tuple(rng.choice(list("abc"), size=int(rng.integers(1, 6))).tolist()) for _ in range(12)]
    outputs = [tuple(evaluate(lib.make_length(), list(x))) for x in inputs]
    length = {"format": "interpbench.rasp/1", "status": "found", "output": "w", "nodes": [
        {"id": "t", "op": "tokens"},
        {"id": "s", "op": "select", "keys": "t", "queries": "t", "predicate": {"op": "TRUE", "offset": 0}},
        {"id": "w", "op": "selector_width", "selector": "s"}]}  # fmt: skip
    endpoint.replies = [json.dumps({**length, "nodes": length["nodes"][:2]}), json.dumps(length)]
    task = ProgramTask(tuple(inputs[:8]), tuple(outputs[:8]), tuple(inputs[8:]), tuple(outputs[8:]), tuple("abc"),
                       tuple(range(6)), False, 5, budget=2)  # fmt: skip
    result = get_synthesizer("openai_compatible").synthesize_program(task)
    assert result.status == "found" and result.searched == 2 and result.program == length
