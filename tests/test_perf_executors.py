"""Executor figures: real serial, local and Ray runs of one grid, and the rows check that guards their ratio."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from interpbench.perf import load_figures, measure_figure
from interpbench.perf_executors import QUICK_CASES, QUICK_METHODS, RowsDifferError, check_same_rows

REFERENCE = Path(__file__).resolve().parent.parent / "results" / "reference" / "leaderboard.parquet"
DETAIL_KEYS = {"serial_seconds", "serial_grid_seconds", "serial_cpu_seconds", "grid_speedup", "commands", "cells",
               "rows", "rows_equal", "jobs", "cases", "methods", "variants", "timing"}  # fmt: skip


def _spec(name: str):
    return {s.name: s for s in load_figures()}[name]


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return pd.read_parquet(REFERENCE)


def test_the_executor_figures_are_registered_with_their_targets() -> None:
    for name in ("executor_speedup_local", "executor_speedup_ray"):
        spec = _spec(name)
        assert (spec.target, spec.unit, spec.higher_is_better) == (1.6, "x", True) and spec.description


def test_rows_equal_ignoring_seconds_creation_time_order_and_rounding(reference: pd.DataFrame) -> None:
    other = reference.sample(frac=1.0, random_state=0).reset_index(drop=True)  # another order
    other["seconds"] = other["seconds"] * 3 + 1.0
    other["created_at"] = "2030-01-01T00:00:00+00:00"
    assert check_same_rows(reference, other, "shuffled") == len(reference)
    last_bit = reference.assign(ci_high=np.nextafter(reference["ci_high"], np.inf))  # float64 rounding
    assert check_same_rows(reference, last_bit, "last bit") == len(reference)


def test_rows_check_fails_on_two_different_leaderboards(reference: pd.DataFrame) -> None:
    changed = reference.copy()
    i = int(np.flatnonzero(changed["value"].notna())[0])
    changed.loc[i, "value"] = changed.loc[i, "value"] + 1e-9  # far above float64 rounding
    with pytest.raises(RowsDifferError, match="local: rows differ.*value differs in 1 rows"):
        check_same_rows(reference, changed, "local")
    fewer = reference[reference["method"] != "saliency"]  # another grid's leaderboard
    with pytest.raises(RowsDifferError, match="rows differ"):
        check_same_rows(reference, fewer, "ray")
    other_sha = reference.assign(git_sha="0" * 40)  # a column beyond seconds/created_at differs
    with pytest.raises(RowsDifferError):
        check_same_rows(reference, other_sha, "local")
    with pytest.raises(RowsDifferError, match="wrote no rows"):
        check_same_rows(reference.iloc[:0], reference.iloc[:0], "local")


def test_local_executor_speedup_runs_the_grid_twice_with_equal_rows() -> None:
    fig = measure_figure(_spec("executor_speedup_local"), quick=True)
    d = fig.details
    assert "error" not in d, d.get("error")
    assert DETAIL_KEYS | {"local_seconds", "local_grid_seconds", "local_cpu_seconds"} <= set(d)
    assert fig.value is not None and math.isfinite(fig.value) and fig.value > 0
    assert fig.value == pytest.approx(d["serial_seconds"] / d["local_seconds"])
    assert d["rows_equal"] is True and d["rows"] > 0
    assert d["cells"]["cells"] == len(QUICK_CASES) * len(QUICK_METHODS) * 2  # base and rotated
    assert d["cells"]["statuses"] == {"ok": d["cells"]["cells"]} and d["cells"]["reused"] == 0
    assert "--executor local --jobs 2" in d["commands"]["local"] and "--executor serial" in d["commands"]["serial"]
    assert 0 < d["serial_grid_seconds"] < d["serial_seconds"] and 0 < d["local_grid_seconds"] < d["local_seconds"]
    assert d["serial_cpu_seconds"] > 1 and d["local_cpu_seconds"] > 1  # the workers' time counted too


def test_ray_executor_speedup_on_a_real_local_instance() -> None:
    pytest.importorskip("ray", reason="the ray executor is the optional extra interpbench[ray]")
    fig = measure_figure(_spec("executor_speedup_ray"), quick=True)
    d = fig.details
    assert "error" not in d, d.get("error")
    assert DETAIL_KEYS | {"ray_seconds", "ray_grid_seconds", "ray_cpu_seconds"} <= set(d)
    assert fig.value is not None and math.isfinite(fig.value) and fig.value > 0
    assert d["rows_equal"] is True and "--executor ray --jobs 2" in d["commands"]["ray"]


def test_ray_figure_without_ray_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # Python's own way to make `import ray` fail
    fig = measure_figure(_spec("executor_speedup_ray"), quick=True)
    assert fig.value is None and fig.met is False
    assert "Ray is not installed" in fig.details["error"] and "pip install 'interpbench[ray]'" in fig.details["error"]
