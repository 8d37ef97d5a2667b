"""twin_consistency by hand, and twins in a real run: variant cells, base vs twin rows, re-scoring."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from interpbench.case import get_case
from interpbench.errors import BadInputError
from interpbench.leaderboard import method_summary, twin_table
from interpbench.method import get_method
from interpbench.rescore import rescore
from interpbench.run import BEHAVIOUR_ONLY, collect_failures, expand_variants, known_variants, plan, run_grid
from interpbench.twin_metrics import consistency, consistency_row

VARIANTS = ["base", "rotated", "reshuffled_attention", "mlp_permuted_scaled"]
METHODS = ["oracle", "attention_last_layer", "integrated_gradients", "feature_ablation"]


def test_consistency_row_by_hand() -> None:
    a = np.array([0.1, 0.5, 0.3, 0.9])
    assert consistency_row(a, a * 7 + 1) == pytest.approx(1.0)  # same order, other scale
    assert consistency_row(a, -a) == pytest.approx(-1.0)
    # ranks (1, 3, 2, 4) vs (1, 2, 3, 4): d^2 = 0 + 1 + 1 + 0, rho = 1 - 6 * 2 / (4 * 15) = 0.8
    assert consistency_row(a, np.array([1.0, 2.0, 3.0, 4.0])) == pytest.approx(0.8)
    assert consistency_row(np.zeros(3), np.zeros(3)) == 1.0  # no ranking on either side: unmoved
    assert consistency_row(np.zeros(3), np.array([0.0, 1.0, 0.0])) == 0.0  # a ranking appeared
    assert consistency_row(np.array([2.0, 1.0, 0.0]), np.ones(3)) == 0.0  # a ranking vanished


def test_variant_names() -> None:
    known = known_variants()
    assert known[0] == "base" and {"rotated", "reshuffled_attention", "decoy_pair", "dead_decoy"} <= set(known)
    assert expand_variants(["all"]) == known
    assert expand_variants(["rotated", "base", "rotated"]) == ["rotated", "base"]
    cells = plan([get_case("tracr_lib/reverse")], [get_method("oracle")], ["rotated", "base"], [0])
    assert [c.variant for c in cells] == ["base", "rotated"]  # base first: twins compare with it
    with pytest.raises(BadInputError, match="rotated"):
        plan([get_case("tracr_lib/reverse")], [get_method("oracle")], ["rotatd"], [0])


@pytest.fixture(scope="module")
def twin_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("twin_run")
    cases = [get_case("tracr_lib/reverse"), get_case("algorithmic/prev_token")]
    rows = run_grid(cases, [get_method(m) for m in METHODS], out, variants=VARIANTS)
    return out, rows


def _consistency(rows: pd.DataFrame, method: str, variant: str, case: str = "reverse") -> float:
    sel = rows[(rows["metric"] == "twin_consistency") & (rows["method"] == method) & (rows["variant"] == variant)
               & (rows["case"] == case)]  # fmt: skip
    (value,) = sel["value"].tolist()
    return float(value)


def test_integrated_gradients_is_not_moved_by_a_rotation(twin_run: tuple[Path, pd.DataFrame]) -> None:
    # IG sums (x - x') . grad over embedding dimensions: a rotation of the residual basis cancels.
    _, rows = twin_run
    assert _consistency(rows, "integrated_gradients", "rotated") > 0.999
    # Baselines ignore the model: consistent by construction, so not scored.
    assert not ((rows["method"] == "oracle") & (rows["metric"] == "twin_consistency")).any()
    assert (rows[(rows["method"] == "oracle") & (rows["variant"] == "rotated")]["metric"] == "auroc").any()


def test_raw_attention_is_moved_by_reshuffled_attention(twin_run: tuple[Path, pd.DataFrame]) -> None:
    _, rows = twin_run
    assert _consistency(rows, "attention_last_layer", "reshuffled_attention") < 0.9
    assert _consistency(rows, "attention_last_layer", "rotated") > 0.999
    # Head-level truth of the twin keeps the selector: raw attention now scores lower against it.
    t = twin_table(rows).set_index(["method", "variant", "metric"])
    assert t.loc[("attention_last_layer", "reshuffled_attention", "soft_iou"), "delta"] < -0.05
    assert t.loc[("attention_last_layer", "rotated", "soft_iou"), "delta"] == pytest.approx(0.0, abs=1e-9)


def test_twin_cells_rows_and_folders(twin_run: tuple[Path, pd.DataFrame]) -> None:
    out, rows = twin_run
    assert set(rows["variant"]) == set(VARIANTS)
    assert not (rows[rows["variant"] == "base"]["metric"] == "twin_consistency").any()
    assert (out / "cases" / "tracr_lib__reverse" / "twins" / "rotated" / "manifest.json").is_file()
    # prev_token has no MLP neurons: its mlp_permuted_scaled cells say why and hold no rows.
    skipped = collect_failures(out, status="not_applicable")
    no_mlp = [s for s in skipped if s["reason"] == "no MLP neurons to permute"]
    assert {(s["case"], s["variant"]) for s in no_mlp} == {("algorithmic/prev_token", "mlp_permuted_scaled")}
    assert len(no_mlp) == len(METHODS) - 1  # feature_ablation is skipped on every twin anyway
    assert rows[(rows["case"] == "prev_token") & (rows["variant"] == "mlp_permuted_scaled")].empty
    # A behaviour-only method runs on base models only: a twin has the same function on every token input.
    behaviour = [s for s in skipped if s["method"] == "feature_ablation"]
    assert len(behaviour) == 2 * (len(VARIANTS) - 1) and all(s["reason"] == BEHAVIOUR_ONLY for s in behaviour)
    assert set(rows[rows["method"] == "feature_ablation"]["variant"]) == {"base"}
    assert len(skipped) == len(no_mlp) + len(behaviour)
    assert collect_failures(out) == []
    meta = json.loads((out / "cases" / "tracr_lib__reverse" / "twins" / "rotated" / "case.json").read_text())
    assert meta["info"]["variant"] == "rotated"


def test_summary_counts_base_models_only(twin_run: tuple[Path, pd.DataFrame]) -> None:
    _, rows = twin_run
    s = method_summary(rows, "auroc").set_index("method")
    assert s.loc["oracle", "cases"] == 2  # two cases, not two cases x four variants


def test_twin_table_pairs_each_twin_with_its_base() -> None:
    rows = pd.DataFrame([
        {"suite": "s", "case": c, "method": "m", "family": "f", "seed": 0, "metric": "auroc", "level": "token",
         "higher_is_better": True, "variant": v, "value": val}
        for c, v, val in [("a", "base", 0.9), ("a", "rotated", 0.7), ("b", "base", 0.5), ("b", "rotated", 0.5),
                          ("c", "rotated", 0.1)]  # case c has no base row: left out
    ] + [{"suite": "s", "case": "a", "method": "m", "family": "f", "seed": 0, "metric": "twin_consistency",
          "level": "twin", "higher_is_better": True, "variant": "rotated", "value": 0.25}])  # fmt: skip
    t = twin_table(rows).set_index("metric")
    assert t.loc["auroc", ["base", "twin", "cases"]].tolist() == pytest.approx([0.7, 0.6, 2])
    assert t.loc["auroc", "delta"] == pytest.approx(-0.1)
    assert t.loc["twin_consistency", "twin"] == 0.25 and math.isnan(t.loc["twin_consistency", "base"])
    assert twin_table(rows[rows["variant"] == "base"]).empty


def test_rescore_reproduces_twin_rows(twin_run: tuple[Path, pd.DataFrame]) -> None:
    out, rows = twin_run
    again = rescore(out)
    cols = ["suite", "case", "variant", "method", "seed", "metric", "value", "ci_low", "ci_high", "n", "n_undefined"]
    pd.testing.assert_frame_equal(rows[cols], again[cols])


def test_behaviour_only_methods_run_on_a_twin_built_for_the_domain(tmp_path: Path) -> None:
    # dyck_stack equals its base on the Dyck domain only; perturbations leave the domain (PAD),
    # so feature_ablation is run on it and may move.
    rows = run_grid([get_case("tracr_lib/shuffle_dyck")], [get_method("feature_ablation")], tmp_path,
                    variants=["base", "dyck_stack", "rotated"])  # fmt: skip
    assert set(rows["variant"]) == {"base", "dyck_stack"}
    assert ((rows["variant"] == "dyck_stack") & (rows["metric"] == "twin_consistency")).any()
    (skipped,) = collect_failures(tmp_path, status="not_applicable")
    assert skipped["variant"] == "rotated" and skipped["reason"] == BEHAVIOUR_ONLY


def test_consistency_of_blocks_equals_the_row_definition() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 2, 4, 7):
        base = rng.integers(0, 3, size=(300, n)).astype(float)
        twin = np.where(rng.random((300, n)) < 0.3, rng.integers(0, 3, size=(300, n)), base).astype(float)
        twin[:20] = 1.0  # constant twin rows
        base[10:30] = 2.0  # constant base rows (10-19: both constant)
        want = [consistency_row(base[k], twin[k]) for k in range(len(base))]
        np.testing.assert_allclose(consistency(base, twin), want, rtol=0, atol=1e-12, equal_nan=True)
