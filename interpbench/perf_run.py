"""Run-level figures: the harness's share of a serial run, and `make bench` wall time (cold, warm) and peak memory.

`harness_overhead_share` runs a slice of the default grid serially in this process and
splits its wall time into compile (`CaseModels.build_seconds`: compiling or loading the
case, building and saving twins), method calls (each cell's `seconds`) and the rest,
which is the harness: scoring, saving explanations and rows, loading base explanations
for twin metrics, bookkeeping. The slice runs on a warm compile cache (compiled cases
shared with the caller's cache, anything else the cache holds starts empty), so nothing
finished is reused and the share is not diluted by compiling; the imports every worker
process pays once (`interpbench.worker_preload`) are done before timing.

The bench figures run exactly what `make bench` runs (`run --variant all`, `leaderboard`,
`report`) as subprocesses of this interpreter, first with an empty content cache
(cold), then again into a new run directory with the cache that run filled (warm),
while a thread sums the resident memory of the whole process tree every 0.2 s. The
three figures share one measurement per process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from interpbench.perf import figure

OVERHEAD_CASES = ("algorithmic/prev_token", "tracr_lib/hist", "tracr_lib/sort", "tracr_lib/shuffle_dyck")
QUICK_OVERHEAD = (("tracr_lib/hist",), ("oracle", "attention_rollout", "saliency"), ("base",))
QUICK_BENCH = ("--case", "algorithmic/copy_first", "--method", "oracle,saliency")
SAMPLE_EVERY = 0.2
TIMEOUT = 3 * 3600.0


def once(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Memoises `fn` per arguments, failures included: figures sharing one measurement never repeat a failed one."""
    memo: dict[tuple[Any, ...], tuple[bool, Any]] = {}

    @functools.wraps(fn)
    def call(*args: Any) -> Any:
        if args not in memo:
            try:
                memo[args] = (True, fn(*args))
            except Exception as exc:  # remembered, raised again for every figure that asks
                memo[args] = (False, exc)
        ok, value = memo[args]
        if not ok:
            raise value
        return value

    return call


def cli_command(*args: str) -> list[str]:
    """The `interpbench` command as this interpreter runs it."""
    return [sys.executable, "-m", "interpbench.cli", *args]


@contextlib.contextmanager
def fresh_cache(share_compiled: bool) -> Iterator[Path]:
    """A new, empty content cache directory, removed afterwards.

    Args:
        share_compiled: Link its `compiled` folder to the current cache's, so compiled
            cases are warm while everything else the cache may hold (e.g. finished
            cells) starts empty.
    """
    from interpbench.compiled import cache_root

    root = Path(tempfile.mkdtemp(prefix="interpbench-perf-cache-"))
    try:
        if share_compiled:
            shared = cache_root() / "compiled"
            shared.mkdir(parents=True, exist_ok=True)
            (root / "compiled").symlink_to(shared.resolve(), target_is_directory=True)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def cache_env(root: Path) -> Iterator[None]:
    """Points INTERPBENCH_CACHE at `root` in this process for the block."""
    before = os.environ.get("INTERPBENCH_CACHE")
    os.environ["INTERPBENCH_CACHE"] = str(root)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("INTERPBENCH_CACHE", None)
        else:
            os.environ["INTERPBENCH_CACHE"] = before


def tree_pids(root: int) -> list[int]:
    """`root` and every live descendant process (from each /proc/PID/stat's parent id)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # after "(comm)": state, ppid
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def tree_memory(root: int) -> tuple[int, int]:
    """(sum of RSS, sum of PSS) in bytes over `root`'s process tree; PSS splits shared pages among sharers."""
    rss = pss = 0
    page = os.sysconf("SC_PAGE_SIZE")
    for pid in tree_pids(root):
        try:
            rss += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
                    break
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile, or not ours to read
    return rss, pss


def tree_cpu(root: int) -> dict[int, float]:
    """CPU seconds (user + system) used so far by each live process of `root`'s tree."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in tree_pids(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out[pid] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile
    return out


@dataclasses.dataclass(frozen=True)
class Timed:
    """One finished subprocess: its wall time, and the CPU time and peak memory of its process tree.

    Attributes:
        seconds: Wall time from start to exit, interpreter start included.
        cpu_seconds: CPU time (user + system) of the whole process tree, each process as
            last sampled (up to SAMPLE_EVERY of each process's end is missed); against
            `seconds` it tells work from waiting.
        peak_rss: Largest sampled sum of RSS over the tree, in bytes.
        peak_pss: Largest sampled sum of PSS over the tree, in bytes.
        output: Its stdout and stderr.
    """

    seconds: float
    cpu_seconds: float
    peak_rss: int
    peak_pss: int
    output: str


def run_cli(args: Sequence[str], cache: Path, *, unset: Sequence[str] = ()) -> Timed:
    """Runs `interpbench ARGS` with INTERPBENCH_CACHE=`cache` (and without the variables `unset`) and times it.

    A thread samples the process tree's memory and CPU time every SAMPLE_EVERY seconds.

    Raises:
        RuntimeError: the command exits non-zero or times out (with its last output line).
    """
    env = {**{k: v for k, v in os.environ.items() if k not in unset}, "INTERPBENCH_CACHE": str(cache)}
    peaks = [0, 0]
    cpu: dict[int, float] = {}
    done = threading.Event()
    start = time.perf_counter()
    proc = subprocess.Popen(cli_command(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)  # fmt: skip

    def sample() -> None:
        while not done.wait(SAMPLE_EVERY):
            rss, pss = tree_memory(proc.pid)
            peaks[:] = max(peaks[0], rss), max(peaks[1], pss)
            cpu.update(tree_cpu(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        output, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)  # the session started for this command: it and its workers
        proc.communicate()
        raise RuntimeError(f"`interpbench {' '.join(args)}` did not finish within {TIMEOUT:.0f} s") from None
    finally:
        done.set()
    seconds = time.perf_counter() - start
    sampler.join()
    if proc.returncode != 0:
        lines = [line.strip() for line in output.splitlines() if any(ch.isalnum() for ch in line)]
        said = [line for line in lines if line.lower().startswith("error")] or lines or ["no output"]
        raise RuntimeError(f"`interpbench {' '.join(args)}` exited {proc.returncode}: {said[-1]}")
    return Timed(seconds, sum(cpu.values()), peaks[0], peaks[1], output)


def cell_summary(run_dir: Path) -> dict[str, Any]:
    """How many cells of a run ended ok, failed or not_applicable, and how many reused a cached explanation."""
    metas = [json.loads(p.read_text()) for p in run_dir.glob("cells/*/*/*/*/cell.json")]
    statuses = Counter(m.get("status") for m in metas)
    return {"cells": len(metas), "statuses": dict(sorted(statuses.items())),
            "reused": sum(1 for m in metas if m.get("reused") is True)}  # fmt: skip


# --- harness overhead ---------------------------------------------------------------------------

PHASES = {  # (module, function) timed around each call during the run, as a per-part breakdown
    "scoring": ("interpbench.run", "score_explanation"),
    "loading_base_explanations": ("interpbench.run", "base_explanation"),
    "writing_cells": ("interpbench.run", "write_finished"),
    "cell_cache_keys": ("interpbench.cell_cache", "cell_key"),
    "cell_cache_lookups": ("interpbench.cell_cache", "lookup"),
    "cell_cache_stores": ("interpbench.cell_cache", "store"),
}


@contextlib.contextmanager
def phase_timers() -> Iterator[dict[str, float]]:
    """Accumulates the seconds spent in each of PHASES while the block runs (the real functions are called).

    A phase whose function does not exist (the harness changed) is left out of the totals.
    """
    import importlib

    totals: dict[str, float] = {}
    restore: list[tuple[Any, str, Any]] = []

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[name] += time.perf_counter() - start

        return call

    try:
        for name, (module_name, attr) in PHASES.items():
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
            original = module.__dict__.get(attr)
            if callable(original):
                totals[name] = 0.0
                restore.append((module, attr, original))
                setattr(module, attr, timed(name, original))
        yield totals
    finally:
        for module, attr, original in reversed(restore):
            setattr(module, attr, original)


def serial_overhead(
    case_names: Sequence[str], method_names: Sequence[str] | None, variants: Sequence[str]
) -> dict[str, Any]:
    """Runs the grid serially in this process on a warm compile cache; returns its time split.

    Args:
        case_names: Cases (suite/case).
        method_names: Methods; None: every available method.
        variants: Variant names (`all` expands).
    """
    import importlib

    from interpbench import run
    from interpbench.case import get_case
    from interpbench.compiled import compile_case
    from interpbench.method import get_method, list_methods

    importlib.import_module("interpbench.worker_preload")  # imports paid once per process, as workers do
    cases = [get_case(n) for n in case_names]
    methods = [get_method(n) for n in method_names] if method_names else [m for m in list_methods() if not m.unavailable()]
    with fresh_cache(share_compiled=True) as cache, cache_env(cache), tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            compile_case(case)  # untimed: the compile cache is warm, as on any run after the first
        run_dir = Path(tmp) / "run"
        with phase_timers() as phases:
            start = time.perf_counter()
            cells = run.plan(cases, methods, run.expand_variants(variants), [0])
            models = run.run_serial(cells, cases, methods, run_dir, run._start(run_dir, cells))
            collect_start = time.perf_counter()
            rows = run.collect_rows(run_dir)
            wall = time.perf_counter() - start
        phases["collecting_rows"] = wall - (collect_start - start)
        metas = [json.loads(p.read_text()) for p in run_dir.glob("cells/*/*/*/*/cell.json")]
    by_method: Counter[str] = Counter()
    for meta in metas:
        by_method[meta["method"]] += meta.get("seconds", 0.0)
    method_s, compile_s = sum(by_method.values()), models.build_seconds
    harness = wall - method_s - compile_s
    phases["other"] = harness - sum(phases.values())
    return {
        "wall_seconds": wall, "method_seconds": method_s, "compile_seconds": compile_s, "harness_seconds": harness,
        "harness_parts_seconds": phases, "cells": len(cells), "rows": len(rows),
        "cell_statuses": dict(sorted(Counter(m["status"] for m in metas).items())),
        "reused_cells": sum(1 for m in metas if m.get("reused") is True),
        "method_seconds_by_method": dict(by_method.most_common()),
        "cases": list(case_names), "methods": [m.name for m in methods], "variants": list(variants),
    }  # fmt: skip


@figure("harness_overhead_share", target=10, unit="%", higher_is_better=False)
def harness_overhead_share(quick: bool) -> tuple[float, dict[str, Any]]:
    """Share of a serial run's wall time outside compile and method calls (scoring, saving, bookkeeping)."""
    if quick:
        details = serial_overhead(*QUICK_OVERHEAD)
    else:
        details = serial_overhead(OVERHEAD_CASES, None, ["all"])
    details["compile_cache"] = "warm (compiled cases loaded; twins built during the run)"
    return 100.0 * details["harness_seconds"] / details["wall_seconds"], details


# --- make bench ---------------------------------------------------------------------------------


def bench_phases(root: Path, label: str, cache: Path, selection: Sequence[str]) -> dict[str, Any]:
    """Runs `make bench`'s three commands into `root/label`; returns per-phase seconds, memory peaks, commands, cells."""
    run_dir, out = root / f"run-{label}", root / f"results-{label}"
    commands = {
        "run": ["run", *selection, "--variant", "all", "--out", str(run_dir)],
        "leaderboard": ["leaderboard", str(run_dir), "--out", str(out)],
        "report": ["report", str(run_dir), "--out", str(out / "report.html")],
    }
    # as `make bench` runs in a plain environment: finished cells are reused (the tests turn reuse off)
    timed = {phase: run_cli(args, cache, unset=["INTERPBENCH_REUSE"])
             for phase, args in commands.items()}  # fmt: skip
    return {
        "seconds": sum(t.seconds for t in timed.values()),
        "phase_seconds": {p: t.seconds for p, t in timed.items()},
        "phase_cpu_seconds": {p: t.cpu_seconds for p, t in timed.items()},
        "peak_rss_gb": {p: t.peak_rss / 1e9 for p, t in timed.items()},
        "peak_pss_gb": {p: t.peak_pss / 1e9 for p, t in timed.items()},
        "commands": {p: " ".join(["interpbench", *args]) for p, args in commands.items()},
        "cells": cell_summary(run_dir),
    }


@once
def bench(quick: bool) -> dict[str, Any]:
    """`make bench` cold (empty cache) then warm (the cache it filled, a new run directory); measured once per process."""
    selection = QUICK_BENCH if quick else ()
    with fresh_cache(share_compiled=False) as cache, tempfile.TemporaryDirectory(prefix="interpbench-bench-") as tmp:
        cold = bench_phases(Path(tmp), "cold", cache, selection)
        warm = bench_phases(Path(tmp), "warm", cache, selection)
    return {"grid": "default grid" if not quick else " ".join(selection), "cold": cold, "warm": warm,
            "memory_sampled_every_seconds": SAMPLE_EVERY}  # fmt: skip


@figure("bench_wall_cold_s", target=600, unit="s", higher_is_better=False)
def bench_wall_cold_s(quick: bool) -> tuple[float, dict[str, Any]]:
    """`make bench` (run --variant all, leaderboard, report) wall time with an empty cache: nothing compiled or reused."""
    b = bench(quick)
    return b["cold"]["seconds"], b


@figure("bench_wall_warm_s", target=120, unit="s", higher_is_better=False)
def bench_wall_warm_s(quick: bool) -> tuple[float, dict[str, Any]]:
    """`make bench` wall time again, into a new run directory, with the cache the cold run filled (compiles, cells)."""
    b = bench(quick)
    return b["warm"]["seconds"], b


@figure("bench_peak_memory_gb", target=4, unit="GB", higher_is_better=False)
def bench_peak_memory_gb(quick: bool) -> tuple[float, dict[str, Any]]:
    """Peak summed RSS of the `make bench` process tree (CLI and workers) over the cold run."""
    b = bench(quick)
    return max(b["cold"]["peak_rss_gb"].values()), b
