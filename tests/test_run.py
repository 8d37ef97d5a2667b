"""Runs end to end: sanity anchors of the baselines, saved-then-scored cells, re-scoring, resume."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from interpbench.case import get_case
from interpbench.method import get_method
from interpbench.rescore import rescore
from interpbench.run import collect_rows, run_grid

CASES = ["tracr_lib/reverse", "tracr_lib/frac_prevs", "tracr_lib/shift_by"]


@pytest.fixture(scope="module")
def baseline_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    run_dir = tmp_path_factory.mktemp("run")
    methods = [get_method(m) for m in ("oracle", "uniform", "random")]
    rows = run_grid([get_case(c) for c in CASES], methods, run_dir)
    return run_dir, rows


def _values(rows: pd.DataFrame, method: str) -> pd.Series:
    sub = rows[(rows["method"] == method) & (rows["metric"] == "auroc")]
    assert len(sub) == len(CASES)
    return sub["value"]


def test_oracle_scores_one_everywhere(baseline_run: tuple[Path, pd.DataFrame]) -> None:
    assert (_values(baseline_run[1], "oracle") == 1.0).all()
    rows = baseline_run[1]
    token = rows[(rows["method"] == "oracle") & (rows["level"] == "token")]
    assert set(token["metric"]) == {"auroc", "average_precision", "precision_at_k", "relevance_mass",
                                    "pointing_game", "spearman", "kendall_tau_b"}  # fmt: skip
    assert (token["value"] == 1.0).all() and (token["n"] > 0).all()


def test_uniform_scores_exactly_one_half(baseline_run: tuple[Path, pd.DataFrame]) -> None:
    assert (_values(baseline_run[1], "uniform") == 0.5).all()


def test_random_sits_at_chance(baseline_run: tuple[Path, pd.DataFrame]) -> None:
    vals = _values(baseline_run[1], "random")
    assert abs(vals.mean() - 0.5) < 0.06
    assert (vals.between(0.35, 0.65)).all()


def test_rows_carry_counts_and_provenance(baseline_run: tuple[Path, pd.DataFrame]) -> None:
    rows = baseline_run[1]
    shift = rows[(rows["case"] == "shift_by") & (rows["method"] == "oracle")].iloc[0]
    # shift_by(2): first two positions are undefined, and are not scored
    assert shift["n"] > 0
    for col in ("tracr_version", "torch_version", "captum_version", "git_sha", "created_at", "params"):
        assert isinstance(shift[col], str) and shift[col]


def test_cells_are_saved_in_open_formats(baseline_run: tuple[Path, pd.DataFrame]) -> None:
    run_dir = baseline_run[0]
    cell = run_dir / "cells" / "tracr_lib__reverse" / "base" / "oracle" / "seed0"
    assert {p.name for p in cell.iterdir()} == {"explanation.npz", "explanation.json", "cell.json"}
    meta = json.loads((cell / "cell.json").read_text())
    assert meta["status"] == "ok" and {r["metric"] for r in meta["rows"]} >= {"auroc", "spearman"}
    assert meta["files"]["explanation.npz"] == hashlib.sha256((cell / "explanation.npz").read_bytes()).hexdigest()
    with np.load(cell / "explanation.npz", allow_pickle=False) as z:
        assert z["token_relevance"].ndim == 3
    assert (run_dir / "cases" / "tracr_lib__reverse" / "truth.npz").exists()


def test_rescore_reproduces_rows(baseline_run: tuple[Path, pd.DataFrame]) -> None:
    run_dir, rows = baseline_run
    again = rescore(run_dir)
    cols = ["suite", "case", "method", "metric", "value", "ci_low", "ci_high", "n", "n_undefined"]
    pd.testing.assert_frame_equal(rows[cols], again[cols])


def test_resume_skips_finished_cells(baseline_run: tuple[Path, pd.DataFrame]) -> None:
    run_dir, _ = baseline_run
    marker = run_dir / "cells" / "tracr_lib__reverse" / "base" / "oracle" / "seed0" / "cell.json"
    before = marker.stat().st_mtime_ns
    methods = [get_method(m) for m in ("oracle", "uniform", "random")]
    rows = run_grid([get_case(c) for c in CASES], methods, run_dir)
    assert marker.stat().st_mtime_ns == before
    n_metrics = 7 + 4  # 7 token-level metrics, 4 head-level ones (every baseline returns head patterns)
    assert len(rows) == len(collect_rows(run_dir)) == 3 * len(CASES) * n_metrics
    assert set(rows.groupby(["case", "method"]).size()) == {n_metrics}  # no cell scored twice


def test_a_failing_method_is_recorded_and_the_grid_goes_on(tmp_path: Path) -> None:
    from interpbench.method import Method
    from interpbench.run import collect_failures

    class Exploding(Method):
        name, family, kinds = "exploding", "baseline", ("token_relevance",)

        def explain(self, case, *, seed=0):
            raise RuntimeError("adapter bug\nsecond line")

    rows = run_grid([get_case("tracr_lib/reverse")], [Exploding, get_method("oracle")], tmp_path)
    assert set(rows["method"]) == {"oracle"}
    (failure,) = collect_failures(tmp_path)
    assert failure["method"] == "exploding" and failure["error"] == "RuntimeError: adapter bug"


@pytest.mark.parametrize("damage", ["explanation.npz", "manifest.json"])
def test_rescore_of_a_damaged_run_says_where_and_changes_nothing(
    damage: str, baseline_run: tuple[Path, pd.DataFrame], tmp_path: Path
) -> None:
    import shutil

    from typer.testing import CliRunner

    from interpbench.cli import app

    run_dir = tmp_path / "run"
    shutil.copytree(baseline_run[0], run_dir)
    before = {p: p.read_bytes() for p in sorted((run_dir / "cells").rglob("cell.json"))}
    last = sorted((run_dir / "cells").rglob("explanation.npz"))[-1]  # damage the last cell: every other is scored first
    victim = last if damage == "explanation.npz" else run_dir / "cases" / "tracr_lib__shift_by" / "manifest.json"
    victim.write_bytes(b"not what it was")
    res = CliRunner().invoke(app, ["score", str(run_dir)])
    assert res.exit_code == 2
    assert str(victim.parent) in res.output and "Traceback" not in res.output
    assert {p: p.read_bytes() for p in before} == before  # no cell re-scored halfway
