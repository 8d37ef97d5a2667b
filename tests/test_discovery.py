"""Drop-in adapters: a new file in a methods folder is found and ranked; a broken one is reported."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_adapter() -> str:
    """The adapter shown in the README's "Adding a method" section, taken literally."""
    section = README.read_text().split("## Adding a method", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


BROKEN = "import numpy as np\nraise ImportError('needs a package we do not have')\n"


def _cli(args: list[str], methods_dir: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "INTERPBENCH_METHODS_PATH": str(methods_dir)}
    return subprocess.run([sys.executable, "-m", "interpbench.cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def test_drop_in_adapter_is_listed_run_and_ranked(tmp_path: Path) -> None:
    methods_dir = tmp_path / "methods"
    methods_dir.mkdir()
    (methods_dir / "my_attention.py").write_text(readme_adapter())
    (methods_dir / "broken.py").write_text(BROKEN)
    res = _cli(["list", "methods", "--json"], methods_dir, tmp_path)
    assert res.returncode == 0, res.stderr
    listed = {m["name"]: m for m in json.loads(res.stdout)}
    assert listed["my_attention_sum"]["family"] == "attention"
    assert listed["my_attention_sum"]["available"]
    assert not listed["broken"]["available"]
    assert "needs a package we do not have" in listed["broken"]["reason"]
    assert "oracle" in listed  # built-ins still there
    run_dir = tmp_path / "run"
    res = _cli(["run", "--case", "tracr_lib/reverse", "--method", "my_attention_sum,oracle", "--out", str(run_dir)],
               methods_dir, tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    board = pd.read_parquet(run_dir / "leaderboard.parquet")
    row = board[board["method"] == "my_attention_sum"].iloc[0]
    assert row["family"] == "attention"
    assert row["value"] == 1.0  # reverse's last layer is the reversing head: it points at the truth
    assert json.loads(row["params"]) == {"layer": -1}


def test_non_editable_install_finds_builtins(tmp_path: Path) -> None:
    """`pip install .` (not editable) ships suites/ and methods/ as interpbench.suites/methods."""
    repo = README.parent
    target = tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q",
                            "--target", str(target), str(repo)], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert build.returncode == 0, build.stderr
    code = ("import interpbench, json; from interpbench.case import list_cases; from interpbench.method import list_methods;"
            "print(json.dumps([interpbench.__file__, len(list_cases()), sorted(m.name for m in list_methods())]))")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "INTERPBENCH_METHODS_PATH"}
    res = subprocess.run([sys.executable, "-c", code], env={**env, "PYTHONPATH": str(target)}, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr
    where, n_cases, methods = json.loads(res.stdout)
    assert where.startswith(str(target))
    assert n_cases >= 27 and {"oracle", "integrated_gradients", "attention_last_layer"} <= set(methods)
