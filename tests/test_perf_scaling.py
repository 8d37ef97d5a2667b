"""The scaling figure: sized cases that compile and verify, the table's shape, exponents and Markdown."""

from __future__ import annotations

import math
from typing import Any

import pytest
from tracr.compiler import lib

from interpbench.perf import load_figures
from interpbench.perf_scaling import (
    METHODS,
    QUICK_FIXED_LENGTH,
    QUICK_FIXED_VOCAB,
    QUICK_LENGTHS,
    QUICK_VOCABS,
    STAGES,
    growth_exponent,
    scaling_case,
    scaling_markdown,
    scaling_with_length_and_vocab,
    seconds,
)


@pytest.fixture(scope="module")
def quick() -> tuple[float, dict[str, Any]]:
    return scaling_with_length_and_vocab(True)


def test_scaling_case_has_the_asked_sizes() -> None:
    case = scaling_case(5, 7)
    assert case.max_seq_len == 5 and case.vocab == (1, 2, 3, 4, 5, 6, 7)
    assert case.program is lib.make_hist and case.full_name == "scaling/hist_len5_vocab7"


def test_figure_is_registered_without_a_target() -> None:
    spec = {s.name: s for s in load_figures()}["scaling_with_length_and_vocab"]
    assert spec.target is None and spec.unit == "s"


def test_quick_table_has_every_stage_at_every_size(quick) -> None:
    value, details = quick
    assert set(details["axes"]) == {"max_seq_len", "vocab_size"}
    lengths, vocabs = details["axes"]["max_seq_len"], details["axes"]["vocab_size"]
    assert lengths["sizes"] == list(QUICK_LENGTHS) and lengths["fixed"] == {"vocab_size": QUICK_FIXED_VOCAB}
    assert vocabs["sizes"] == list(QUICK_VOCABS) and vocabs["fixed"] == {"max_seq_len": QUICK_FIXED_LENGTH}
    assert details["stages"] == list(STAGES) and STAGES[3:] == METHODS
    for axis in (lengths, vocabs):
        assert list(axis["seconds"]) == list(STAGES) == list(axis["exponents"])
        for stage, secs in axis["seconds"].items():
            assert len(secs) == 2 and all(t > 0 for t in secs), stage
            assert math.isfinite(axis["exponents"][stage])
    # The two axes share the size (fixed length, fixed vocab): the same measurement.
    shared = lengths["sizes"].index(QUICK_FIXED_LENGTH), vocabs["sizes"].index(QUICK_FIXED_VOCAB)
    assert all(lengths["seconds"][s][shared[0]] == vocabs["seconds"][s][shared[1]] for s in STAGES)
    assert value == max(max(t) for a in (lengths, vocabs) for t in a["seconds"].values())


def test_quick_cases_have_the_asked_sizes_and_verify(quick) -> None:
    _, details = quick
    expected = {(n, QUICK_FIXED_VOCAB) for n in QUICK_LENGTHS} | {(QUICK_FIXED_LENGTH, v) for v in QUICK_VOCABS}
    got = {(c["max_seq_len"], c["vocab_size"]): c for c in details["cases"].values()}
    assert set(got) == expected
    for (n, v), c in got.items():
        assert c["n_positions"] == n + 1 and c["input_tokens"] == v + 2  # the tokens, BOS and PAD
        assert c["n_inputs"] == 48 and c["n_layers"] >= 1
        assert c["verified_positions"] == c["input_positions"] > 0  # hist is defined everywhere: all checked


def test_quick_markdown_lists_every_stage_per_axis(quick) -> None:
    _, details = quick
    text = details["markdown"]
    assert text == scaling_markdown(details)
    for stage in STAGES:
        assert text.count(f"| {stage} |") == 2
    assert "| stage | max_seq_len 1 | max_seq_len 2 | growth |" in text


def test_growth_exponent_by_hand() -> None:
    assert growth_exponent([2, 4, 8], [3, 12, 48]) == pytest.approx(2.0, abs=1e-12)  # t = 0.75 n^2
    assert growth_exponent([4, 8, 16], [5.0, 5.0, 5.0]) == pytest.approx(0.0, abs=1e-12)
    assert growth_exponent([1, 10], [1.0, 10.0]) == pytest.approx(1.0, abs=1e-12)


def test_seconds_repeats_only_fast_calls() -> None:
    calls: list[int] = []
    assert seconds(lambda: calls.append(1), repeat_below=math.inf) >= 0 and len(calls) == 3
    calls.clear()
    assert seconds(lambda: calls.append(1), repeat_below=0.0) >= 0 and len(calls) == 1


def test_markdown_by_hand() -> None:
    details = {"axes": {
        "max_seq_len": {"fixed": {"vocab_size": 8}, "sizes": [4, 8], "seconds": {"compile": [0.5, 2.0]},
                        "exponents": {"compile": 2.0}},
        "vocab_size": {"fixed": {"max_seq_len": 8}, "sizes": [4, 8], "seconds": {"compile": [1.0, 1.0]},
                       "exponents": {"compile": 0.0}}}}  # fmt: skip
    assert scaling_markdown(details) == (
        "Seconds by max_seq_len (make_hist, vocab_size 8):\n\n"
        "| stage | max_seq_len 4 | max_seq_len 8 | growth |\n"
        "|---|---:|---:|---:|\n"
        "| compile | 0.5 | 2 | max_seq_len^2.0 |\n\n"
        "Seconds by vocab (make_hist, max_seq_len 8):\n\n"
        "| stage | vocab 4 | vocab 8 | growth |\n"
        "|---|---:|---:|---:|\n"
        "| compile | 1 | 1 | vocab^0.0 |\n"
    )
