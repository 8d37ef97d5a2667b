"""Provenance recorded in every leaderboard row: versions, git SHA and creation time."""

from __future__ import annotations

import datetime as dt
import functools
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


@functools.cache
def git_sha() -> str:
    """SHA of the interpbench checkout, "-dirty" when tracked files differ from it; "unknown" outside git.

    A number produced by uncommitted code cannot be traced to a commit, so the row says so.
    Only a checkout of interpbench itself counts: a package installed inside another
    project's repository reports "unknown", not that project's commit.
    """
    here = Path(__file__).resolve().parent
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=here, capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()  # fmt: skip
        if Path(top).resolve() != here.parent:  # installed inside someone else's repository
            return "unknown"
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5,
                             check=True).stdout.strip()  # fmt: skip
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                capture_output=True, text=True, timeout=10, check=True).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if status.strip() else sha


def provenance() -> dict[str, str]:
    """Columns every row carries."""
    from interpbench import __version__

    return {
        "interpbench_version": __version__,
        "tracr_version": _version("tracr-pypi"),
        "torch_version": _version("torch"),
        "captum_version": _version("captum"),
        "git_sha": git_sha(),
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
