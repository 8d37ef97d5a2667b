"""Executors: where a run's cells run (this process, local worker processes, or Ray), with the same rows.

The unit of parallel work is a group: every cell of one case and one method (its base
cell first, then its twins, each seed). A twin cell reads the base cell's explanation
(`twin_consistency`), so keeping a method's cells of a case together keeps that
dependency inside one worker, while groups of different methods spread a case's work
over the workers. A worker keeps the case it is on in memory (loaded from the content
cache; the first worker to reach a case compiles it under a lock, see `run_models`).
Names travel instead of objects: each worker finds cases and methods again, user
folders included (the INTERPBENCH_* variables travel with each group). Every write is
the serial run's atomic write, so resuming works whatever ran the cells before.

A worker process that dies takes no other cell with it: the local executor reruns the
cells that were in flight one at a time, each in its own process, and records the one
whose process dies again as failed. The Ray executor lives in `executor_ray`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING, Any

from interpbench.errors import BadInputError
from interpbench.registry import unknown_name_message

if TYPE_CHECKING:  # interpbench.run (torch, scoring) is imported on first use: start_workers runs before it
    from interpbench.run import Cell

KINDS = ("serial", "local", "ray")
DIED = "the worker process died while running this cell"
Progress = Callable[[str], None] | None
CellRunner = Callable[[Sequence["Cell"], Path, dict[str, Any], Progress], None]


@dataclasses.dataclass(frozen=True)
class Executor:
    """Where cells run.

    Attributes:
        kind: `serial` (this process), `local` (worker processes) or `ray`.
        jobs: Worker processes (`local`), or CPUs of the Ray instance started here.
        address: A Ray cluster to join (`ray` only); None starts a local instance.
    """

    kind: str = "serial"
    jobs: int = 1
    address: str | None = None


SERIAL = Executor()


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def make_executor(kind: str, jobs: int | None = None, address: str | None = None) -> Executor:
    """A checked Executor; `jobs` defaults to the available cores.

    Raises:
        BadInputError: unknown kind, jobs < 1, an address without `ray`, or Ray not installed.
    """
    if kind not in KINDS:
        raise BadInputError(unknown_name_message("executor", kind, list(KINDS)))
    if jobs is not None and jobs < 1:
        raise BadInputError(f"--jobs must be at least 1, got {jobs}")
    if address is not None and kind != "ray":
        raise BadInputError("--ray-address needs --executor ray")
    if kind == "ray" and importlib.util.find_spec("ray") is None:
        raise BadInputError("the ray executor needs Ray: pip install 'interpbench[ray]'")
    return Executor(kind, available_cores() if jobs is None else jobs, address)


def check_registered(cases: Sequence[Any], methods: Sequence[Any]) -> None:
    """Workers find cases and methods again by name: each must be the registered one.

    Raises:
        BadInputError: a case or method object is not what its name resolves to.
    """
    from interpbench.case import CASES
    from interpbench.method import METHODS

    for kind, registry, items, name in (("case", CASES, cases, "full_name"), ("method", METHODS, methods, "name")):
        for item in items:
            key = getattr(item, name)
            if key not in registry or registry.get(key) is not item:
                raise BadInputError(f"{kind} {key!r} is not registered, so worker processes cannot find it; "
                                    "register it or use the serial executor")  # fmt: skip


def groups_of(cells: Sequence[Cell]) -> list[list[Cell]]:
    """Cells grouped by (case, method), groups and cells in plan order."""
    groups: dict[tuple[str, str], list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.case, cell.method), []).append(cell)
    return list(groups.values())


_MODELS: dict[str, Any] = {}
BLAS_THREADS_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
ENV_PREFIX = "INTERPBENCH_"


def worker_env() -> dict[str, str]:
    """The environment a worker must share with this process: cache and user folders."""
    return {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIX)}


def run_group(
    cells: Sequence[tuple[str, str, str, int]], run_dir: str, info: dict[str, Any], env: dict[str, str]
) -> None:
    """Worker side: runs one group's unfinished cells in order, as the serial run would.

    `env` replaces the worker's INTERPBENCH_* variables: a pre-started worker (fork
    server, Ray) may have been started before the caller set them.
    """
    import torch

    from interpbench.case import get_case
    from interpbench.method import get_method
    from interpbench.run import Cell, run_pending_cell
    from interpbench.run_models import CaseModels

    for key in [k for k in os.environ if k.startswith(ENV_PREFIX) and k not in env]:
        del os.environ[key]
    os.environ.update(env)
    torch.set_num_threads(1)  # the models are tiny: parallelism belongs to processes
    models = _MODELS.setdefault(run_dir, CaseModels(Path(run_dir)))
    for fields in cells:
        cell = Cell(*fields)
        run_pending_cell(cell, get_case(cell.case), get_method(cell.method), models, Path(run_dir), info)


def fields_of(cells: Sequence[Cell]) -> list[tuple[str, str, str, int]]:
    return [dataclasses.astuple(c) for c in cells]


class Tracker:
    """Reports each cell once, and records the unfinished cells of a group that could not run."""

    def __init__(self, run_dir: Path, on_progress: Progress) -> None:
        from interpbench import run

        self.run, self.run_dir, self.on_progress = run, run_dir, on_progress
        self.reported: set[Cell] = set()

    def finish(self, group: Sequence[Cell], error: str | None = None) -> None:
        """Reports `group`'s cells; with `error`, first records its unfinished cells failed with it."""
        for cell in group:
            if error is not None and not self.run.is_done(cell, self.run_dir):
                self.run.record_status(cell, self.run_dir, "failed", error=error)
            if self.on_progress and cell not in self.reported:
                self.reported.add(cell)
                self.on_progress(self.run.cell_label(cell))

    def fail(self, group: Sequence[Cell], exc: BaseException) -> None:
        """The group raised outside its cells (e.g. a name the worker cannot resolve)."""
        for cell in self.unfinished(group):
            self.run.record_failure(cell, self.run_dir, exc)
        self.finish(group)

    def unfinished(self, group: Sequence[Cell]) -> list[Cell]:
        """The cells of `group` without a final cell.json."""
        return [c for c in group if not self.run.is_done(c, self.run_dir)]

    def in_flight(self, group: Sequence[Cell]) -> list[Cell]:
        """Cells a dead worker had started: their folder exists, their cell.json does not."""
        return [c for c in self.unfinished(group) if c.folder(self.run_dir).exists()]


def _local(jobs: int) -> CellRunner:
    def run_cells(cells: Sequence[Cell], run_dir: Path, info: dict[str, Any], on_progress: Progress) -> None:
        track = Tracker(run_dir, on_progress)
        pending = groups_of(cells)
        while pending:
            broken = _pool_pass(pending, min(jobs, len(pending)), run_dir, info, track)
            suspects = [c for g in broken for c in track.in_flight(g)]
            for cell in suspects:  # alone, so a cell that kills its worker is the only one lost
                _pool_pass([[cell]], 1, run_dir, info, track, died=DIED)
            if broken and not suspects:  # died between cells: run the rest one group at a time
                for group in broken:
                    _pool_pass([group], 1, run_dir, info, track, died="the worker process died")
                broken = []
            pending = [rest for rest in map(track.unfinished, broken) if rest]
        for group in groups_of(cells):
            track.finish(group)

    return run_cells


def _context() -> Any:
    """Worker processes forked from a fork server that imported interpbench once.

    The server is a fresh process (never the caller: torch and JAX do not survive a fork
    of a process that ran them) that imports torch, the suites and the methods before
    forking, so each worker starts in milliseconds instead of re-importing everything.
    """
    import multiprocessing

    # One BLAS thread per worker, as torch gets one (run_group): a worker per core already
    # fills the cores. The fork server reads this when it starts and loads numpy.
    for var in BLAS_THREADS_ENV:
        os.environ.setdefault(var, "1")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["interpbench.worker_preload"])
    return ctx


def start_workers(executor: Executor) -> None:
    """Starts the local executor's fork server now, so its imports overlap the caller's own work."""
    if executor.kind == "local" and executor.jobs > 1:
        from multiprocessing import forkserver

        _context()
        forkserver.ensure_running()


@contextlib.contextmanager
def _stop_on_interrupt(pool: ProcessPoolExecutor) -> Iterator[None]:
    """On Ctrl-C, drops the queued groups instead of waiting for them (a later --resume runs them)."""
    try:
        yield
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise


def _pool_pass(
    groups: Sequence[Sequence[Cell]], jobs: int, run_dir: Path, info: dict[str, Any], track: Tracker,
    *, died: str | None = None,
) -> list[Sequence[Cell]]:
    """Runs `groups` in a fresh pool; returns the groups a dying worker took down (or records them `died`)."""
    broken: list[Sequence[Cell]] = []
    with ProcessPoolExecutor(max_workers=jobs, mp_context=_context()) as pool, _stop_on_interrupt(pool):
        futures: dict[Future[None], Sequence[Cell]] = {
            pool.submit(run_group, fields_of(g), str(run_dir), info, worker_env()): g for g in groups
        }
        while futures:
            done, _ = wait(futures, return_when=FIRST_COMPLETED)
            for future in done:
                group = futures.pop(future)
                try:
                    future.result()
                    track.finish(group)
                except BrokenProcessPool:
                    if died is None:
                        broken.append(group)
                    else:  # run alone, so this group is what killed its worker
                        track.finish(group, error=died)
                except Exception as exc:  # noqa: BLE001 - recorded per cell, the grid goes on
                    track.fail(group, exc)
    return broken


@contextlib.contextmanager
def open_executor(executor: Executor) -> Iterator[CellRunner]:
    """A cell runner for a `local` or `ray` executor, set up (Ray started or joined) and torn down around the block.

    The serial executor has no runner: `run.run_serial` runs cells in this process, where
    methods and cases need not be registered.

    Raises:
        BadInputError: Ray cannot be started or its cluster joined.
    """
    if executor.kind == "ray":
        from interpbench.executor_ray import ray_runner

        yield from ray_runner(executor.jobs, executor.address)
    elif executor.kind == "local":
        yield _local(executor.jobs)
    else:
        raise ValueError(f"executor {executor.kind!r} has no cell runner")
