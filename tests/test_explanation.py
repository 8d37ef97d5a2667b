"""Explanation storage across schema versions, and a committed run directory that must keep loading."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from interpbench.errors import BadInputError
from interpbench.explanation import DEFAULT_TIE_TOLERANCE, SCHEMA, Explanation
from interpbench.storage import npz_bytes

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "run_schema2"


def test_round_trip_keeps_programs_and_patterns(tmp_path: Path) -> None:
    e = Explanation(head_patterns={"L0H0": np.eye(3)}, program={"format": "interpbench.rasp/1", "nodes": [], "output": None},
                    head_programs={"L0H0": {"query": "index"}}, source="def program(): ...", diagnostics={"x": 1})  # fmt: skip
    e.save(tmp_path)
    back = Explanation.load(tmp_path)
    assert json.loads((tmp_path / "explanation.json").read_text())["schema"] == SCHEMA
    assert (back.program, back.head_programs, back.source, back.diagnostics) == (e.program, e.head_programs, e.source, e.diagnostics)
    np.testing.assert_array_equal(back.head_patterns["L0H0"], np.eye(3))
    assert back.tie_tolerance == DEFAULT_TIE_TOLERANCE == 1e-6


def test_round_trip_keeps_raw_relevance_and_its_tie_tolerance(tmp_path: Path) -> None:
    r = np.array([[[0.0, 0.0], [0.0, 0.3 + 1e-7]]])
    Explanation(token_relevance=r, tie_tolerance=1e-5).save(tmp_path)
    assert json.loads((tmp_path / "explanation.json").read_text())["tie_tolerance"] == 1e-5
    back = Explanation.load(tmp_path)
    assert back.tie_tolerance == 1e-5
    np.testing.assert_array_equal(back.token_relevance, r)  # saved as returned, nothing snapped


@pytest.mark.parametrize("tol", [-1e-6, 1.0, float("nan"), "1e-6", True])
def test_bad_tie_tolerance_is_refused(tol: object, tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="tie_tolerance"):
        Explanation(token_relevance=np.zeros((1, 2, 2)), tie_tolerance=tol)  # type: ignore[arg-type]
    Explanation(token_relevance=np.zeros((1, 2, 2))).save(tmp_path)
    meta = json.loads((tmp_path / "explanation.json").read_text())
    (tmp_path / "explanation.json").write_text(json.dumps({**meta, "tie_tolerance": tol}))
    with pytest.raises(BadInputError, match="tie_tolerance"):
        Explanation.load(tmp_path)


def test_schema_1_explanations_load(tmp_path: Path) -> None:
    # exactly what schema 1 wrote: no schema key, program as source text, no head programs
    (tmp_path / "explanation.npz").write_bytes(npz_bytes({"token_relevance": np.ones((1, 2, 2))}))
    (tmp_path / "explanation.json").write_text(json.dumps(
        {"program": "def f(): pass", "circuit": None, "diagnostics": {"a": 1}, "has_head_patterns": False}))  # fmt: skip
    e = Explanation.load(tmp_path)
    assert e.program is None and e.source == "def f(): pass" and e.head_patterns is None
    assert e.kinds == ("token_relevance",)
    assert e.tie_tolerance == DEFAULT_TIE_TOLERANCE


def test_schema_2_explanations_load_with_the_default_tie_tolerance() -> None:
    meta = json.loads((FIXTURE / "cells/tracr_lib__reverse/base/uniform/seed0/explanation.json").read_text())
    assert meta["schema"] == 2 and "tie_tolerance" not in meta
    e = Explanation.load(FIXTURE / "cells/tracr_lib__reverse/base/uniform/seed0")
    assert e.tie_tolerance == DEFAULT_TIE_TOLERANCE and e.token_relevance is not None


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    Explanation(token_relevance=np.zeros((1, 2, 2))).save(tmp_path)
    meta = json.loads((tmp_path / "explanation.json").read_text())
    (tmp_path / "explanation.json").write_text(json.dumps({**meta, "schema": SCHEMA + 1}))
    with pytest.raises(BadInputError, match="schema"):
        Explanation.load(tmp_path)


def test_committed_run_directory_rescores_to_its_own_rows(tmp_path: Path) -> None:
    from interpbench.rescore import rescore
    from interpbench.run import collect_rows

    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    before = collect_rows(run)
    assert set(before["method"]) == {"uniform", "head_program_synthesis", "program_synthesis"}
    after = rescore(run)
    cols = ["suite", "case", "method", "metric", "value", "ci_low", "ci_high", "n", "n_undefined"]
    # every stored row comes back unchanged; metrics added since (token metrics beyond
    # auroc) are new rows of the cells that carry token relevance
    kept = before[cols].merge(after[cols], on=["suite", "case", "method", "metric"], how="left", suffixes=("", "_new"))
    for c in ("value", "n", "n_undefined"):
        np.testing.assert_array_equal(kept[c].to_numpy(), kept[f"{c}_new"].to_numpy(), err_msg=c)
    for c in ("ci_low", "ci_high"):  # same draws; resample means are now one matrix product (other rounding)
        np.testing.assert_allclose(kept[c].to_numpy(), kept[f"{c}_new"].to_numpy(), rtol=0, atol=1e-12, err_msg=c)
    added = after.merge(before[["method", "metric"]], how="left", indicator=True).query("_merge == 'left_only'")
    assert set(added["method"]) == {"uniform"} and set(added["level"]) == {"token"}
    assert len(added) == 6
