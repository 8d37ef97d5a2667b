"""The Ray executor: a group of cells per Ray task, on a local instance started here or a cluster joined.

A cluster (`address`, the head's address as `ray start` prints it) needs interpbench
installed on every node and the run directory (and the content cache) on a shared file
system; a cluster started by `ray start` uses token authentication, so the driver needs
RAY_AUTH_MODE=token. Ray loses only the cell a dead worker was on: the rest of its group
is submitted again.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from interpbench.errors import BadInputError
from interpbench.executors import DIED, CellRunner, Progress, Tracker, fields_of, groups_of, run_group, worker_env

if TYPE_CHECKING:
    from interpbench.run import Cell


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fails fast on a cluster address nobody answers at (Ray itself retries for minutes).

    Raises:
        BadInputError: `host:port` (or `ray://host:port`) refuses or ignores a TCP connection.
    """
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # e.g. "auto": Ray finds the cluster itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise BadInputError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None


def ray_runner(jobs: int, address: str | None) -> Iterator[CellRunner]:
    """Yields a cell runner on Ray: a local instance with `jobs` CPUs, or the cluster at `address`.

    An instance started here is shut down afterwards; one already initialised by the
    caller is used as it is and left running.

    Raises:
        BadInputError: the cluster cannot be reached or joined, or Ray cannot start.
    """
    import logging

    import ray

    started = not ray.is_initialized()
    if started:
        if address is not None:
            _check_reachable(address)
        try:  # "local": a new instance, even when a `ray start` cluster runs on this machine
            ray.init(address=address or "local", num_cpus=None if address else jobs, include_dashboard=False,
                     logging_level=logging.ERROR, log_to_driver=False)  # fmt: skip
        except (ConnectionError, RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            hint = " (a cluster from `ray start` wants RAY_AUTH_MODE=token)" if address and not os.environ.get(
                "RAY_AUTH_MODE") else ""  # fmt: skip
            raise BadInputError(f"cannot start or join Ray at {address or 'a local instance'}: {first}{hint}") from None
    task = ray.remote(num_cpus=1, max_retries=0)(run_group)

    def run_cells(cells: Sequence[Cell], run_dir: Path, info: dict[str, Any], on_progress: Progress) -> None:
        track = Tracker(run_dir, on_progress)
        refs = {task.remote(fields_of(g), str(run_dir), info, worker_env()): g for g in groups_of(cells)}
        while refs:
            (ref,), _ = ray.wait(list(refs), num_returns=1)
            group = refs.pop(ref)
            try:
                ray.get(ref)
                track.finish(group)
            except ray.exceptions.RayTaskError as exc:  # raised by our code in the worker
                track.fail(group, exc.cause if isinstance(exc.cause, BaseException) else exc)
            except ray.exceptions.RayError:  # the worker died: lose the cell it was on, rerun the rest
                track.finish(track.in_flight(group)[:1] or group, error=DIED)
                rest = track.unfinished(group)
                if rest:
                    refs[task.remote(fields_of(rest), str(run_dir), info, worker_env())] = group
                else:
                    track.finish(group)

    try:
        yield run_cells
    finally:
        if started:
            ray.shutdown()
