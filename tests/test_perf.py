"""Speed figures: the registry, perf.json, `met`, the CLI, and that each naive baseline computes the fast path's numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from interpbench.cli import app
from interpbench.errors import BadInputError, UnknownNameError
from interpbench.perf import (
    Figure,
    FigureSpec,
    best_of,
    figure,
    load_figures,
    measure_figure,
    meets,
    select_figures,
    time_pair,
    write_perf,
)

runner = CliRunner()
CORE = {"forward_vs_tracr_apply", "forward_vs_jax_jit", "ig_batched_vs_captum_loop", "ground_truth_vs_naive_rasp"}
RECORD_KEYS = {"name", "value", "target", "unit", "higher_is_better", "met", "details"}


# --- registry, met, timing bookkeeping ---------------------------------------------------------


def test_registry_holds_the_figures_with_targets_and_directions() -> None:
    specs = {s.name: s for s in load_figures()}
    assert CORE <= set(specs)
    assert specs["forward_vs_tracr_apply"].target == 1000.0
    assert specs["forward_vs_jax_jit"].target == 1.0
    assert specs["ig_batched_vs_captum_loop"].target == 10.0
    assert all(specs[n].higher_is_better and specs[n].unit == "x" for n in CORE)
    assert all(specs[n].description for n in CORE)


def test_a_figure_name_registered_twice_is_refused() -> None:
    load_figures()
    with pytest.raises(BadInputError, match="registered twice"):
        figure("forward_vs_jax_jit", target=1, unit="x", higher_is_better=True)(lambda quick: (1.0, {}))


def test_unknown_figure_name_suggests_the_near_one() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'forward_vs_jax_jit'"):
        select_figures(["forward_vs_jax"])
    assert [s.name for s in select_figures(["ground_truth_vs_naive_rasp", "forward_vs_jax_jit"])] == [
        "ground_truth_vs_naive_rasp", "forward_vs_jax_jit"]  # fmt: skip


@pytest.mark.parametrize(
    ("value", "target", "higher", "expected"),
    [
        (1000.0, 1000.0, True, True),  # reaching the target exactly meets it
        (999.9, 1000.0, True, False),
        (0.10, 0.10, False, True),
        (0.11, 0.10, False, False),
        (0.09, 0.10, False, True),
        (2.0, 0.10, True, True),
        (None, 1.0, True, False),
        (math.nan, 1.0, True, False),
        (math.nan, 1.0, False, False),
    ],
)
def test_met_follows_direction_and_target(value: float | None, target: float, higher: bool, expected: bool) -> None:
    assert meets(value, target, higher) is expected


def test_measure_figure_computes_met_and_keeps_failures() -> None:
    low = FigureSpec("share", lambda quick: (0.05, {"n": 3}), 0.10, "%", False, "a share")
    fig = measure_figure(low, quick=True)
    assert (fig.value, fig.met, fig.details["n"], fig.details["quick"]) == (0.05, True, 3, True)
    high = FigureSpec("ratio", lambda quick: (0.05, {}), 0.10, "x", True, "a ratio")
    assert measure_figure(high).met is False

    def broken(quick: bool) -> tuple[float, dict]:
        raise ValueError("no such case")

    failed = measure_figure(FigureSpec("broken", broken, 1.0, "x", True, ""))
    assert failed.value is None and failed.met is False
    assert failed.details["error"].startswith("ValueError: no such case")
    nan = measure_figure(FigureSpec("nan", lambda quick: (math.nan, {}), 1.0, "x", True, ""))
    assert nan.value is None and nan.met is False


def test_a_figure_without_target_is_reported_with_met_none() -> None:
    table = FigureSpec("table", lambda quick: (3.5, {"rows": 2}), None, "s", False, "a scaling table")
    fig = measure_figure(table)
    assert (fig.value, fig.target, fig.met) == (3.5, None, None)
    assert fig.table_row() == ["table", "3.5", "(reported)", "s", "-"]
    assert json.loads(json.dumps(fig.to_json()))["met"] is None
    assert meets(1.0, None, True) is None
    missed = measure_figure(FigureSpec("r", lambda quick: (2.0, {}), 10.0, "x", True, ""))
    assert missed.table_row() == ["r", "2", ">= 10", "x", "NO"]


def test_time_pair_calls_each_side_as_documented() -> None:
    calls = {"fast": 0, "slow": 0}

    def side(name: str):
        def fn() -> None:
            calls[name] += 1

        return fn

    out = time_pair(side("fast"), side("slow"), repeats=3, fast_number=5, slow_number=2)
    assert calls == {"fast": 1 + 3 * 5, "slow": 1 + 3 * 2}
    assert out["ratio"] == out["slow_seconds"] / out["fast_seconds"]
    calls.update(fast=0, slow=0)
    time_pair(side("fast"), side("slow"), repeats=2, warm_slow=False)
    assert calls == {"fast": 3, "slow": 2}
    calls.update(fast=0, slow=0)
    assert best_of(side("fast"), 4) >= 0.0
    assert calls == {"fast": 5, "slow": 0}


# --- perf.json --------------------------------------------------------------------------------


def _fig(name: str, value: float | None, target: float = 1.0, higher: bool = True) -> Figure:
    return Figure(name, value, target, "x", higher, meets(value, target, higher), {"case": "c"})


def test_write_perf_writes_a_list_of_records_atomically(tmp_path: Path) -> None:
    path = tmp_path / "results" / "perf.json"
    write_perf([_fig("a", 2.0), _fig("b", None)], path)
    records = json.loads(path.read_text())
    assert [r["name"] for r in records] == ["a", "b"]
    assert all(set(r) == RECORD_KEYS for r in records)
    assert records[0] == {"name": "a", "value": 2.0, "target": 1.0, "unit": "x", "higher_is_better": True,
                          "met": True, "details": {"case": "c"}}  # fmt: skip
    assert records[1]["value"] is None and records[1]["met"] is False
    assert sorted(p.name for p in path.parent.iterdir()) == ["perf.json"]  # no temporary file left


def test_write_perf_merge_replaces_by_name_and_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "perf.json"
    write_perf([_fig("a", 2.0), _fig("b", 3.0)], path)
    write_perf([_fig("b", 0.5), _fig("c", 4.0)], path, merge=True)
    records = json.loads(path.read_text())
    assert [(r["name"], r["value"], r["met"]) for r in records] == [("a", 2.0, True), ("b", 0.5, False), ("c", 4.0, True)]
    write_perf([_fig("c", 1.0)], path)  # without merge the file holds exactly the figures given
    assert [r["name"] for r in json.loads(path.read_text())] == ["c"]
    path.write_text('{"not": "a list"}')
    with pytest.raises(BadInputError, match="not a perf.json list"):
        write_perf([_fig("a", 1.0)], path, merge=True)


# --- the CLI ----------------------------------------------------------------------------------


def test_cli_quick_runs_every_figure_end_to_end(tmp_path: Path) -> None:
    path = tmp_path / "perf.json"
    res = runner.invoke(app, ["perf", "--quick", "--out", str(path)])
    assert res.exit_code == 0, res.output
    records = {r["name"]: r for r in json.loads(path.read_text())}
    assert set(records) == {s.name for s in load_figures()}
    for name, r in records.items():
        assert name in res.stdout
        assert r["value"] is not None and math.isfinite(r["value"]) and r["value"] > 0, r["details"]
        assert r["met"] is meets(r["value"], r["target"], r["higher_is_better"])
        assert r["details"]["quick"] is True
    for name in CORE:
        (case,) = records[name]["details"]["cases"].values()
        assert case["n_inputs"] == 4 and case["repeats"] == 1 and case["max_abs_diff"] <= 1e-6


def test_cli_unknown_figure_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "perf.json"
    res = runner.invoke(app, ["perf", "--only", "ground_truth_vs_naive_rasp,forward_vs_jax", "--out", str(path)])
    assert res.exit_code == 2
    assert "did you mean" in res.output and "forward_vs_jax_jit" in res.output
    assert not path.exists()


@pytest.fixture
def broken_figure():
    from interpbench.perf import FIGURES

    load_figures()

    @figure("test_broken_figure", target=1.0, unit="x", higher_is_better=True)
    def broken(quick: bool) -> tuple[float, dict]:
        raise RuntimeError("cannot measure")

    yield "test_broken_figure"
    FIGURES._items.pop("test_broken_figure")


def test_cli_a_figure_that_fails_is_reported_and_exits_1(tmp_path: Path, broken_figure: str) -> None:
    path = tmp_path / "perf.json"
    res = runner.invoke(app, ["perf", "--only", broken_figure, "--out", str(path)])
    assert res.exit_code == 1
    assert "error: test_broken_figure not measured: RuntimeError: cannot measure" in res.output
    (record,) = json.loads(path.read_text())
    assert record["value"] is None and record["met"] is False and "cannot measure" in record["details"]["error"]
