"""Drop-in adapters: a new file in a methods folder is found and ranked; a broken one is reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd

GOOD = textwrap.dedent(
    '''
    """A drop-in adapter: relevance = the token ids themselves (a deliberately naive method)."""
    import numpy as np
    from interpbench import Explanation, Method, method

    @method("token_id_relevance", family="attribution", kinds=("token_relevance",))
    class TokenIdRelevance(Method):
        defaults = {"scale": 1.0}

        def explain(self, case, *, seed=0):
            r = np.broadcast_to(case.tokens[:, None, :], case.truth.relevance.shape).astype(float)
            return Explanation(token_relevance=r * self.settings["scale"] * case.truth.valid_in[:, None, :])
    '''
)
BROKEN = "import numpy as np\nraise ImportError('needs a package we do not have')\n"


def _cli(args: list[str], methods_dir: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "INTERPBENCH_METHODS_PATH": str(methods_dir)}
    return subprocess.run([sys.executable, "-m", "interpbench.cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def test_drop_in_adapter_is_listed_run_and_ranked(tmp_path: Path) -> None:
    methods_dir = tmp_path / "methods"
    methods_dir.mkdir()
    (methods_dir / "token_ids.py").write_text(GOOD)
    (methods_dir / "broken.py").write_text(BROKEN)
    res = _cli(["list", "methods", "--json"], methods_dir, tmp_path)
    assert res.returncode == 0, res.stderr
    listed = {m["name"]: m for m in json.loads(res.stdout)}
    assert listed["token_id_relevance"]["family"] == "attribution"
    assert listed["token_id_relevance"]["available"]
    assert not listed["broken"]["available"]
    assert "needs a package we do not have" in listed["broken"]["reason"]
    assert "oracle" in listed  # built-ins still there
    run_dir = tmp_path / "run"
    res = _cli(["run", "--case", "tracr_lib/reverse", "--method", "token_id_relevance,oracle", "--out", str(run_dir)],
               methods_dir, tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    board = pd.read_parquet(run_dir / "leaderboard.parquet")
    row = board[board["method"] == "token_id_relevance"].iloc[0]
    assert row["family"] == "attribution" and 0.0 <= row["value"] <= 1.0
    assert json.loads(row["params"]) == {"scale": 1.0}
