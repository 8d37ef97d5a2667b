"""Run-level figures: harness overhead of a real serial run, `make bench` cold/warm/memory, and their process-tree tools."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from interpbench.perf import load_figures, measure_figure
from interpbench.perf_run import (
    QUICK_OVERHEAD,
    cli_command,
    fresh_cache,
    phase_timers,
    run_cli,
    tree_cpu,
    tree_memory,
    tree_pids,
)

OVERHEAD_KEYS = {"wall_seconds", "method_seconds", "compile_seconds", "harness_seconds", "harness_parts_seconds",
                 "cells", "rows", "cell_statuses", "reused_cells", "method_seconds_by_method", "cases", "methods",
                 "variants", "compile_cache"}  # fmt: skip
BENCH_KEYS = {"grid", "cold", "warm", "memory_sampled_every_seconds"}
PHASE_KEYS = {"seconds", "phase_seconds", "phase_cpu_seconds", "peak_rss_gb", "peak_pss_gb", "commands", "cells"}


def _spec(name: str):
    return {s.name: s for s in load_figures()}[name]


def test_the_run_figures_are_registered_with_their_targets() -> None:
    specs = {s.name: s for s in load_figures()}
    expected = {"harness_overhead_share": (10.0, "%"), "bench_wall_cold_s": (600.0, "s"),
                "bench_wall_warm_s": (120.0, "s"), "bench_peak_memory_gb": (4.0, "GB")}  # fmt: skip
    for name, (target, unit) in expected.items():
        assert (specs[name].target, specs[name].unit, specs[name].higher_is_better) == (target, unit, False)
        assert specs[name].description


def test_harness_overhead_of_a_real_serial_run_splits_its_wall_time() -> None:
    fig = measure_figure(_spec("harness_overhead_share"), quick=True)
    d = fig.details
    assert "error" not in d, d.get("error")
    assert OVERHEAD_KEYS <= set(d)
    assert fig.value is not None and math.isfinite(fig.value) and 0 < fig.value < 100
    cases, methods, variants = QUICK_OVERHEAD
    assert (d["cases"], d["methods"], d["variants"]) == (list(cases), list(methods), list(variants))
    assert d["cells"] == 3 and d["cell_statuses"] == {"ok": 3} and d["reused_cells"] == 0  # a fresh cell cache
    assert set(d["method_seconds_by_method"]) == set(methods)
    assert d["method_seconds"] == pytest.approx(sum(d["method_seconds_by_method"].values()))
    assert 0 < d["method_seconds"] + d["compile_seconds"] < d["wall_seconds"]
    assert fig.value == pytest.approx(100 * d["harness_seconds"] / d["wall_seconds"])
    parts = d["harness_parts_seconds"]
    assert {"scoring", "writing_cells", "collecting_rows", "other"} <= set(parts)
    assert parts["scoring"] > 0 and parts["writing_cells"] > 0  # every ok cell is scored and written
    assert sum(parts.values()) == pytest.approx(d["harness_seconds"])


def test_phase_timers_time_the_real_function_and_put_it_back() -> None:
    from interpbench import run

    original = run.base_explanation
    cell = run.Cell("tracr_lib/hist", "base", "saliency", 0)
    with phase_timers() as totals:
        assert run.base_explanation is not original
        assert run.base_explanation(cell, Path("/nonexistent")) is None  # a base cell has no base to load
    assert run.base_explanation is original
    assert totals["loading_base_explanations"] > 0
    assert totals["scoring"] == 0.0  # timed only when called


def test_fresh_cache_shares_compiled_cases_only_and_is_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTERPBENCH_CACHE", str(tmp_path / "user-cache"))
    with fresh_cache(share_compiled=True) as root:
        assert (root / "compiled").resolve() == (tmp_path / "user-cache" / "compiled").resolve()
        assert [p.name for p in root.iterdir()] == ["compiled"]
    assert not root.exists() and (tmp_path / "user-cache" / "compiled").is_dir()
    with fresh_cache(share_compiled=False) as cold:
        assert list(cold.iterdir()) == []


def test_tree_memory_sums_a_process_and_its_children() -> None:
    child_code = "import time; time.sleep(60)"
    parent_code = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {child_code!r}]); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", parent_code])
    try:
        for _ in range(100):
            pids = tree_pids(proc.pid)
            if len(pids) == 2:
                break
            time.sleep(0.05)
        assert len(pids) == 2 and pids[0] == proc.pid
        page = os.sysconf("SC_PAGE_SIZE")
        alone = [int(Path(f"/proc/{p}/statm").read_text().split()[1]) * page for p in pids]
        rss, pss = tree_memory(proc.pid)
        assert rss >= sum(alone) * 0.9 and rss > max(alone)  # both interpreters counted
        assert 0 < pss <= rss * 1.1
        assert set(tree_cpu(proc.pid)) == set(pids) and all(t >= 0 for t in tree_cpu(proc.pid).values())
    finally:
        for pid in reversed(tree_pids(proc.pid)):  # the two processes this test started
            os.kill(pid, signal.SIGTERM)
        proc.wait()


def test_run_cli_reports_a_failing_command_with_its_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"exited 2: error: .*nope"):
        run_cli(["run", "--case", "tracr_lib/nope", "--out", str(tmp_path / "r")], tmp_path / "cache")
    assert not (tmp_path / "r").exists()
    assert cli_command("list")[:3] == [sys.executable, "-m", "interpbench.cli"]


def test_make_bench_figures_measure_cold_then_warm_with_memory() -> None:
    names = ("bench_wall_cold_s", "bench_wall_warm_s", "bench_peak_memory_gb")
    figs = {n: measure_figure(_spec(n), quick=True) for n in names}
    for fig in figs.values():
        assert "error" not in fig.details, fig.details.get("error")
        assert BENCH_KEYS <= set(fig.details)
        assert fig.value is not None and math.isfinite(fig.value) and fig.value > 0
    d = figs["bench_wall_cold_s"].details
    cold, warm = d["cold"], d["warm"]
    for phase in (cold, warm):
        assert PHASE_KEYS <= set(phase)
        assert set(phase["phase_seconds"]) == {"run", "leaderboard", "report"}
        assert phase["seconds"] == pytest.approx(sum(phase["phase_seconds"].values()))
        assert phase["phase_cpu_seconds"]["run"] > 1  # importing torch alone takes more
        assert phase["commands"]["run"].startswith("interpbench run --case algorithmic/copy_first --method oracle,saliency")
        assert "--variant all" in phase["commands"]["run"]
    assert figs["bench_wall_cold_s"].value == cold["seconds"] and figs["bench_wall_warm_s"].value == warm["seconds"]
    assert cold["cells"]["cells"] == warm["cells"]["cells"] == 2 * 9  # 2 methods x every variant
    assert cold["cells"]["statuses"] == warm["cells"]["statuses"]
    assert cold["cells"]["reused"] == 0  # an empty cache
    assert warm["cells"]["reused"] == warm["cells"]["statuses"]["ok"]  # every explained cell comes from the cache
    # a Python process with torch loaded holds well over 100 MB
    assert figs["bench_peak_memory_gb"].value == max(cold["peak_rss_gb"].values()) > 0.1
    assert 0 < max(cold["peak_pss_gb"].values()) <= figs["bench_peak_memory_gb"].value
    assert all(v > 0.1 for v in warm["peak_rss_gb"].values())  # each warm command sampled too


def test_a_shared_measurement_runs_once_and_so_does_its_failure() -> None:
    from interpbench.perf_run import once

    calls: list[bool] = []

    @once
    def measure(quick: bool) -> float:
        calls.append(quick)
        if quick:
            raise RuntimeError("cannot measure")
        return 2.5

    assert measure(False) == measure(False) == 2.5
    for _ in range(2):  # the second figure asking gets the same error without measuring again
        with pytest.raises(RuntimeError, match="cannot measure"):
            measure(True)
    assert calls == [False, True]
