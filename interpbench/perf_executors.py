"""Executor figures: the same grid run by `interpbench run` serially, on local worker processes and on Ray, end to end.

Each run is the CLI as a user starts it (a subprocess of this interpreter, interpreter
start, worker or Ray start-up and the leaderboard it writes included), into its own run
directory, with a warm compile cache of its own: compiled cases are shared, everything
else (finished cells the cache could reuse) starts empty, so every run computes every
cell. The grid is a slice of the default grid: the heavier methods that still balance
(perturbation and sampling attributions, integrated gradients, head and program
synthesis: about 0.1 to 1 s a cell) on ten cases of different sizes and every variant,
540 cells in 60 groups of one case and one method (the unit the executors spread). That
is well over a minute of serial work, so the fixed start-up costs (interpreter, worker
processes or Ray, the leaderboard) do not decide the ratio, and no group is so long that
one worker is left finishing it alone (`program_synthesis_heads`, the slowest method, is
left out for that reason). Before a ratio is reported, the parallel run's rows must
equal the serial run's (seconds and creation time aside; floats within float64 rounding).
"""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from interpbench.perf import figure
from interpbench.perf_run import cell_summary, fresh_cache, once, run_cli

GRID_CASES = ("algorithmic/prev_token", "algorithmic/double_hist", "tracr_lib/hist", "tracr_lib/reverse",
              "tracr_lib/sort", "tracr_lib/sort_unique", "tracr_lib/sort_freq", "tracr_lib/frac_prevs",
              "tracr_lib/count_less_freq", "tracr_lib/shuffle_dyck")  # fmt: skip
GRID_METHODS = ("lime", "kernel_shap", "gradient_shap", "head_program_synthesis", "integrated_gradients",
                "program_synthesis")  # fmt: skip
QUICK_CASES = ("algorithmic/copy_first",)
QUICK_METHODS = ("attention_rollout", "saliency")
QUICK_VARIANTS = "base,rotated"
JOBS = 2
ROW_KEY = ["suite", "case", "variant", "method", "seed", "metric"]
VOLATILE = ["seconds", "created_at"]  # wall time of each explain call, and when the run started
FLOAT_TOLERANCE = 1e-12  # relative and absolute: float64 rounding, far below any score's precision


class RowsDifferError(RuntimeError):
    """Two runs of the same grid wrote different rows: a speed ratio between them would mean nothing."""


def check_same_rows(expected: pd.DataFrame, got: pd.DataFrame, label: str) -> int:
    """Checks that `got` holds `expected`'s rows: VOLATILE columns aside, floats equal within float64 rounding.

    Every column but the floats must be equal exactly, NaN equals NaN, and floats may
    differ by FLOAT_TOLERANCE (bootstrap confidence bounds computed in different
    processes have been seen to differ in the last bit).

    Returns:
        The number of rows.

    Raises:
        RowsDifferError: No rows, or the rows, columns or any value differ.
    """
    if expected.empty:
        raise RowsDifferError(f"{label}: the reference run wrote no rows")

    def canonical(df: pd.DataFrame) -> pd.DataFrame:
        df = df.drop(columns=[c for c in VOLATILE if c in df.columns])
        return df.sort_values(ROW_KEY, kind="stable").reset_index(drop=True)[sorted(df.columns)]

    try:
        a, b = canonical(expected), canonical(got)
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=FLOAT_TOLERANCE, atol=FLOAT_TOLERANCE)
    except (AssertionError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RowsDifferError(f"{label}: rows differ from the serial run's: {first_difference(a, b) or first}") from None
    return len(expected)


def first_difference(a: pd.DataFrame, b: pd.DataFrame) -> str | None:
    """Where two sorted row tables of the same shape first differ (column, row key, both values), else None."""
    if a.shape != b.shape or list(a.columns) != list(b.columns):
        return None
    for col in a.columns:
        x, y = a[col].to_numpy(), b[col].to_numpy()
        if x.dtype.kind == "f" and y.dtype.kind == "f":
            same = np.isclose(x, y, rtol=FLOAT_TOLERANCE, atol=FLOAT_TOLERANCE, equal_nan=True)
        else:
            same = (x == y) | (pd.isna(x) & pd.isna(y))
        if not same.all():
            i = int((~same).nonzero()[0][0])
            where = " ".join(str(a.at[i, k]) for k in ROW_KEY)
            return f"{col} differs in {int((~same).sum())} rows, first at {where}: {x[i]!r} vs {y[i]!r}"
    return None


def grid_args(quick: bool) -> list[str]:
    """The `interpbench run` selection of the grid."""
    if quick:
        return ["--case", ",".join(QUICK_CASES), "--method", ",".join(QUICK_METHODS), "--variant", QUICK_VARIANTS]
    return ["--case", ",".join(GRID_CASES), "--method", ",".join(GRID_METHODS), "--variant", "all"]


def grid_seconds(run_dir: Path) -> float:
    """Seconds from run.json (written when cells are about to start) to the last cell.json written (file times)."""
    last = max(p.stat().st_mtime for p in run_dir.glob("cells/*/*/*/*/cell.json"))
    return last - (run_dir / "run.json").stat().st_mtime


@once
def warm_compiled(quick: bool) -> None:
    """Compiles the grid's cases into the current compile cache (once per process), so every timed run finds them."""
    from interpbench.case import get_case
    from interpbench.compiled import compile_case

    for name in QUICK_CASES if quick else GRID_CASES:
        compile_case(get_case(name))


@once
def timed_run(kind: str, quick: bool) -> dict[str, Any]:
    """One end-to-end `interpbench run` of the grid with executor `kind` (once per process and kind).

    Returns:
        Wall, grid and CPU seconds, the command, cell counts, and the run's rows.
    """
    warm_compiled(quick)
    args = [*grid_args(quick), "--executor", kind, *([] if kind == "serial" else ["--jobs", str(JOBS)])]
    with fresh_cache(share_compiled=True) as cache, tempfile.TemporaryDirectory(prefix="interpbench-exec-") as tmp:
        run_dir = Path(tmp) / "run"
        timed = run_cli(["run", *args, "--out", str(run_dir)], cache)
        rows = pd.read_parquet(run_dir / "leaderboard.parquet")
        return {"seconds": timed.seconds, "cpu_seconds": timed.cpu_seconds, "grid_seconds": grid_seconds(run_dir),
                "rows": rows, "command": " ".join(["interpbench", "run", *args, "--out", "DIR"]),
                "cells": cell_summary(run_dir)}  # fmt: skip


def speedup(kind: str, quick: bool) -> tuple[float, dict[str, Any]]:
    """Serial wall time over `kind`'s, after checking both runs wrote the same rows."""
    serial, other = timed_run("serial", quick), timed_run(kind, quick)
    n_rows = check_same_rows(serial["rows"], other["rows"], f"--executor {kind}")
    details = {
        "serial_seconds": serial["seconds"], f"{kind}_seconds": other["seconds"],
        "serial_grid_seconds": serial["grid_seconds"], f"{kind}_grid_seconds": other["grid_seconds"],
        "serial_cpu_seconds": serial["cpu_seconds"], f"{kind}_cpu_seconds": other["cpu_seconds"],
        "grid_speedup": serial["grid_seconds"] / other["grid_seconds"],
        "commands": {"serial": serial["command"], kind: other["command"]},
        "cells": serial["cells"], "rows": n_rows, "rows_equal": True, "jobs": JOBS,
        "cases": list(QUICK_CASES if quick else GRID_CASES), "methods": list(QUICK_METHODS if quick else GRID_METHODS),
        "variants": QUICK_VARIANTS if quick else "all",
        "timing": "end to end: subprocess wall time, interpreter and executor start and the run's leaderboard "
                  "included; grid seconds: run.json written to last cell.json written; cpu seconds: the "
                  "whole process tree (workers, Ray's own processes), sampled every 0.2 s",
    }  # fmt: skip
    return serial["seconds"] / other["seconds"], details


@figure("executor_speedup_local", target=1.6, unit="x", higher_is_better=True)
def executor_speedup_local(quick: bool) -> tuple[float, dict[str, Any]]:
    """`interpbench run --executor local --jobs 2` vs `--executor serial` on the same grid, end to end."""
    return speedup("local", quick)


@figure("executor_speedup_ray", target=1.6, unit="x", higher_is_better=True)
def executor_speedup_ray(quick: bool) -> tuple[float, dict[str, Any]]:
    """`interpbench run --executor ray --jobs 2` (a local Ray instance) vs `--executor serial`, end to end."""
    if importlib.util.find_spec("ray") is None:
        raise RuntimeError("Ray is not installed, so the ray executor cannot be measured: pip install 'interpbench[ray]'")
    return speedup("ray", quick)
