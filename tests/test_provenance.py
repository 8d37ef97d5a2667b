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


def test_a_copy_inside_another_repository_reports_unknown(tmp_path: Path) -> None:
    """A non-editable install under someone else's git repository must not record their commit."""
    import shutil
    import sys

    repo = tmp_path / "their_project"
    pkg = repo / ".venv" / "site-packages" / "interpbench"
    pkg.mkdir(parents=True)
    shutil.copy(ROOT / "interpbench" / "provenance.py", pkg / "provenance.py")
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(git + ["init", "-q"], cwd=repo, check=True)
    subprocess.run(git + ["commit", "-q", "--allow-empty", "-m", "theirs"], cwd=repo, check=True)
    code = ("import importlib.util as u; s = u.spec_from_file_location('p', 'provenance.py'); m = u.module_from_spec(s);"
            "s.loader.exec_module(m); print(m.git_sha())")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], cwd=pkg, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "unknown"
