"""Provenance columns: versions of what produced a number, and the commit it came from."""

from __future__ import annotations

import re
import subprocess
from importlib.metadata import version
from pathlib import Path

from interpbench.provenance import git_sha, provenance

ROOT = Path(__file__).resolve().parents[1]


def test_git_sha_names_the_checked_out_commit() -> None:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode != 0:
        assert git_sha() == "unknown"
        return
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    assert git_sha() == head.stdout.strip() + ("-dirty" if dirty else "")


def test_provenance_reports_installed_versions_and_a_utc_time() -> None:
    p = provenance()
    assert p["torch_version"] == version("torch") and p["captum_version"] == version("captum")
    assert p["tracr_version"] == version("tracr-pypi")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", p["created_at"])
