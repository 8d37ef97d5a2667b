"""Executors: serial, local processes and a real local Ray instance write the same cells and rows."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from interpbench.case import get_case
from interpbench.cli import app
from interpbench.errors import BadInputError
from interpbench.executors import DIED, make_executor
from interpbench.method import METHODS as REGISTRY
from interpbench.method import get_method
from interpbench.run import collect_failures, run_grid

CASES = ["tracr_lib/reverse", "tracr_lib/hist", "tracr_lib/frac_prevs"]
METHODS = ["random", "attention_last_layer", "saliency"]
VARIANTS = ["base", "rotated"]
VOLATILE = ["seconds", "created_at"]  # wall time of the explain call, and when the run started


def _grid(run_dir: Path, kind: str, methods: list[str] = METHODS, labels: list[str] | None = None) -> pd.DataFrame:
    return run_grid([get_case(c) for c in CASES], [get_method(m) for m in methods], run_dir, variants=VARIANTS,
                    executor=make_executor(kind, 2), on_progress=None if labels is None else labels.append)  # fmt: skip


def _statuses(run_dir: Path) -> dict[str, str]:
    return {str(p.parent.relative_to(run_dir)): json.loads(p.read_text())["status"]
            for p in (run_dir / "cells").glob("*/*/*/*/cell.json")}  # fmt: skip


ADAPTERS = '''
import os

from interpbench.method import Method, method


@method("raises_in_worker", family="baseline", kinds=("token_relevance",))
class RaisesInWorker(Method):
    def explain(self, case, *, seed=0):
        raise RuntimeError("adapter bug\\nsecond line")


@method("kills_its_worker", family="baseline", kinds=("token_relevance",))
class KillsItsWorker(Method):
    def explain(self, case, *, seed=0):
        if case.case.name == "hist" and os.getpid() != TEST_PID:  # never the test process itself
            os._exit(3)
        raise RuntimeError("only hist kills")
'''


@pytest.fixture
def failing_methods(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Two drop-in adapters that fail inside a worker: one raises, one kills its process on hist."""
    methods_dir = tmp_path / "methods"
    methods_dir.mkdir()
    (methods_dir / "worker_failures.py").write_text(f"TEST_PID = {os.getpid()}\n{ADAPTERS}")
    monkeypatch.setenv("INTERPBENCH_METHODS_PATH", str(methods_dir))
    # registered in this process for the test only: later tests see the built-in methods alone
    monkeypatch.setattr(REGISTRY, "_items", dict(REGISTRY._items))
    return ["raises_in_worker", *METHODS, "kills_its_worker"]


def _check_failures(run_dir: Path, rows: pd.DataFrame, serial_rows: pd.DataFrame) -> None:
    """Every cell of the working methods is scored as in the serial run; the failing ones say why."""
    pd.testing.assert_frame_equal(serial_rows.drop(columns=VOLATILE), rows.drop(columns=VOLATILE))
    errors = {(f["case"], f["variant"], f["method"]): f["error"] for f in collect_failures(run_dir)}
    assert len(errors) == 2 * len(CASES) * len(VARIANTS)
    assert {e for (_, _, m), e in errors.items() if m == "raises_in_worker"} == {"RuntimeError: adapter bug"}
    assert errors[("tracr_lib/hist", "base", "kills_its_worker")] == DIED
    assert errors[("tracr_lib/hist", "rotated", "kills_its_worker")] == DIED
    assert errors[("tracr_lib/reverse", "base", "kills_its_worker")] == "RuntimeError: only hist kills"
    assert len(_statuses(run_dir)) == len(CASES) * (len(METHODS) + 2) * len(VARIANTS)


@pytest.fixture(scope="module")
def serial(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    run_dir = tmp_path_factory.mktemp("serial")
    return run_dir, _grid(run_dir, "serial")


def test_the_serial_grid_scores_twins_against_their_base(serial: tuple[Path, pd.DataFrame]) -> None:
    rows = serial[1]
    assert len(_statuses(serial[0])) == len(CASES) * len(METHODS) * len(VARIANTS) == 18
    twin = rows[(rows["metric"] == "twin_consistency") & (rows["variant"] == "rotated")]
    # read from the base cell's saved explanation; the random baseline does not read the model
    assert set(twin["method"]) == {"attention_last_layer", "saliency"} and len(twin) == 2 * len(CASES)


def test_local_processes_write_the_same_rows_and_cells(serial: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    labels: list[str] = []
    rows = _grid(tmp_path, "local", labels=labels)
    pd.testing.assert_frame_equal(serial[1].drop(columns=VOLATILE), rows.drop(columns=VOLATILE))
    assert _statuses(tmp_path) == _statuses(serial[0])
    assert sorted(labels) == sorted(f"{c} {v} {m}" for c in CASES for v in VARIANTS for m in METHODS)


def test_a_real_local_ray_instance_writes_the_same_rows(
    serial: tuple[Path, pd.DataFrame], failing_methods: list[str], tmp_path: Path
) -> None:
    pytest.importorskip("ray", reason="the ray executor is the optional extra interpbench[ray]")
    run_dir = tmp_path / "run"
    rows = _grid(run_dir, "ray", failing_methods)  # one Ray start: the working methods and the failing ones
    _check_failures(run_dir, rows, serial[1])
    ok = {k: v for k, v in _statuses(run_dir).items() if "_worker" not in k}
    assert ok == _statuses(serial[0])


def test_local_resumes_an_interrupted_run(serial: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(serial[0], run_dir)
    cells = run_dir / "cells"
    # interrupted: a base cell explained but not marked done, a twin cell never started
    base = cells / "tracr_lib__hist" / "base" / "saliency" / "seed0"
    (base / "cell.json").unlink()
    shutil.rmtree(cells / "tracr_lib__reverse" / "rotated" / "attention_last_layer" / "seed0")
    kept = {p: p.stat().st_mtime_ns for p in cells.glob("*/*/*/*/cell.json")}
    rows = _grid(run_dir, "local")
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())  # finished cells are not run again
    assert (base / "cell.json").exists()
    pd.testing.assert_frame_equal(serial[1].drop(columns=VOLATILE), rows.drop(columns=VOLATILE))


def test_a_raising_or_dying_method_in_a_worker_is_recorded_and_the_rest_finish(
    serial: tuple[Path, pd.DataFrame], failing_methods: list[str], tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    _check_failures(run_dir, _grid(run_dir, "local", failing_methods), serial[1])


def test_local_refuses_methods_workers_cannot_find(tmp_path: Path) -> None:
    from interpbench.method import Method

    class Unregistered(Method):
        name, family, kinds = "unregistered", "baseline", ("token_relevance",)

    with pytest.raises(BadInputError, match="not registered"):
        run_grid([get_case(c) for c in CASES], [Unregistered, get_method("oracle")], tmp_path / "run",
                 executor=make_executor("local", 2))  # fmt: skip
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--executor", "locl"], "unknown executor 'locl'; did you mean 'local'?"),
        (["--jobs", "0"], "--jobs must be at least 1, got 0"),
        (["--executor", "local", "--ray-address", "127.0.0.1:6379"], "--ray-address needs --executor ray"),
    ],
)
def test_bad_executor_values_exit_2_and_write_nothing(args: list[str], message: str, tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["run", "--case", CASES[0], "--method", "oracle", "--out", str(tmp_path / "r"), *args])
    assert res.exit_code == 2
    assert res.output.strip().splitlines() == [f"error: {message}"]
    assert not (tmp_path / "r").exists()


def test_ray_executor_without_ray_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # Python's own way to make `import ray` fail
    res = CliRunner().invoke(app, ["run", "--case", CASES[0], "--executor", "ray", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2
    assert res.output.strip() == "error: the ray executor needs Ray: pip install 'interpbench[ray]'"
    assert not (tmp_path / "r").exists()


def test_an_unreachable_ray_cluster_exits_2_at_once(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="the ray executor is the optional extra interpbench[ray]")
    res = CliRunner().invoke(app, ["run", "--case", CASES[0], "--executor", "ray", "--ray-address", "127.0.0.1:1",
                                   "--out", str(tmp_path / "r")])  # fmt: skip
    assert res.exit_code == 2
    assert res.output.strip() == "error: cannot reach the Ray cluster at 127.0.0.1:1: Connection refused"
    assert not (tmp_path / "r").exists()


def test_a_case_that_fails_to_build_fails_its_cells_once_and_the_grid_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from interpbench.case import CASES as CASE_REGISTRY
    from interpbench.case import case
    from interpbench.compiled import compile_case

    monkeypatch.setattr(CASE_REGISTRY, "_items", dict(CASE_REGISTRY._items))  # registered for this test only
    calls: list[int] = []

    @case(vocab=[1, 2], max_seq_len=3, suite="broken_suite")
    def broken() -> None:
        calls.append(1)
        raise RuntimeError("no program here\nsecond line")

    with pytest.raises(RuntimeError):
        compile_case(get_case("broken_suite/broken"))
    per_attempt = len(calls)
    calls.clear()
    rows = run_grid([get_case("broken_suite/broken"), get_case(CASES[0])],
                    [get_method("oracle"), get_method("attention_last_layer")], tmp_path, variants=VARIANTS)  # fmt: skip
    assert len(calls) == per_attempt  # built once, not once per cell
    failures = collect_failures(tmp_path)
    assert len(failures) == 2 * len(VARIANTS)
    assert {(f["case"], f["error"]) for f in failures} == {("broken_suite/broken", "RuntimeError: no program here")}
    assert set(rows["case"]) == {"reverse"} and set(rows["method"]) == {"oracle", "attention_last_layer"}
