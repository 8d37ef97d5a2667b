"""`interpbench compare`: identical leaderboards pass, planted regressions fail, in CSV and Parquet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from interpbench.cli import app
from interpbench.compare import compare, read_long
from interpbench.errors import BadInputError

runner = CliRunner()


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real leaderboard: oracle and uniform on two cases (token and head metrics)."""
    out = tmp_path_factory.mktemp("board") / "run"
    res = runner.invoke(app, ["run", "--case", "tracr_lib/reverse,tracr_lib/hist", "--method", "oracle,uniform",
                              "--out", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    return out


def _planted(long: pd.DataFrame, method: str, metric: str, delta: float) -> pd.DataFrame:
    changed = long.copy()
    rows = (changed["method"] == method) & (changed["metric"] == metric) & (changed["case"] == "reverse")
    assert rows.sum() == 1
    changed.loc[rows, "value"] += delta
    return changed


@pytest.mark.parametrize("name", ["leaderboard.parquet", "leaderboard.csv"])
def test_identical_leaderboards_pass(board: Path, name: str) -> None:
    res = runner.invoke(app, ["compare", str(board / name), str(board / name)])
    assert res.exit_code == 0, res.output
    assert "0 regressed" in res.stdout


def test_csv_and_parquet_of_one_run_agree(board: Path) -> None:
    res = runner.invoke(app, ["compare", str(board / "leaderboard.parquet"), str(board / "leaderboard.csv")])
    assert res.exit_code == 0, res.output
    assert "0 regressed, 0 other changes" in res.stdout


def test_planted_regression_fails_and_is_named(board: Path, tmp_path: Path) -> None:
    long = pd.read_parquet(board / "leaderboard.parquet")
    _planted(long, "uniform", "auroc", -0.1).to_parquet(tmp_path / "worse.parquet")
    res = runner.invoke(app, ["compare", str(board / "leaderboard.parquet"), str(tmp_path / "worse.parquet")])
    assert res.exit_code == 1
    assert "1 regressed" in res.stdout and "uniform" in res.stdout and "auroc" in res.stdout


def test_direction_follows_the_metric(board: Path) -> None:
    old = read_long(board / "leaderboard.parquet")
    # jsd: lower is better, so an increase regresses and a decrease improves
    assert compare(old, _planted(old, "uniform", "jsd", +0.05)).regressed["metric"].tolist() == ["jsd"]
    better = compare(old, _planted(old, "uniform", "jsd", -0.05))
    assert better.regressed.empty and better.moved["status"].tolist() == ["improved"]
    assert compare(old, _planted(old, "uniform", "auroc", +0.05)).regressed.empty


def test_tolerance_nan_and_missing_rows(board: Path) -> None:
    old = read_long(board / "leaderboard.parquet")
    small = _planted(old, "uniform", "auroc", -1e-7)
    assert compare(old, small, tolerance=1e-6).moved.empty
    assert len(compare(old, small, tolerance=0.0).regressed) == 1
    gone = old.copy()
    gone.loc[(gone["method"] == "oracle") & (gone["metric"] == "soft_iou") & (gone["case"] == "hist"), "value"] = np.nan
    assert compare(old, gone).regressed["metric"].tolist() == ["soft_iou"]
    fewer = old[old["method"] != "oracle"]
    result = compare(old, fewer)
    assert set(result.regressed["status"]) == {"removed"} and set(result.regressed["method"]) == {"oracle"}
    assert compare(fewer, old).regressed.empty  # new rows are not regressions
    assert set(compare(fewer, old).moved["status"]) == {"added"}


def test_bad_input_exits_2(board: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["compare", str(tmp_path / "missing.csv"), str(board / "leaderboard.csv")])
    assert res.exit_code == 2 and "does not exist" in res.output
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    res = runner.invoke(app, ["compare", str(tmp_path / "other.csv"), str(board / "leaderboard.csv")])
    assert res.exit_code == 2 and "not a leaderboard" in res.output
    with pytest.raises(BadInputError, match="tolerance"):
        compare(read_long(board / "leaderboard.csv"), read_long(board / "leaderboard.csv"), tolerance=-1.0)


def test_csv_and_parquet_agree_across_method_families() -> None:
    """Empty wide-CSV cells (a metric that does not apply to a method) are no rows, not removed rows."""
    ref = Path(__file__).resolve().parent.parent / "results" / "reference"
    csv, pq = read_long(ref / "leaderboard.csv"), read_long(ref / "leaderboard.parquet")
    assert len(csv) == len(pq)
    for a, b in ((csv, pq), (pq, csv)):
        result = compare(a, b)
        assert result.moved.empty, result.moved.head().to_string()
