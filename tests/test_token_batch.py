"""The vectorised token statistics equal the row-by-row definitions, ties and undefined rows included."""

from __future__ import annotations

import numpy as np
import pytest

from interpbench import token_batch
from interpbench.method import get_method
from interpbench.metrics import get_metric
from interpbench.token_metrics import (
    auroc_row,
    average_precision_row,
    kendall_tau_b_row,
    pointing_game_row,
    precision_at_k_row,
    relevance_mass_row,
    scored_relevance,
    spearman_row,
    token_rows,
)

PAIRS = [
    (token_batch.auroc, auroc_row, False),
    (token_batch.average_precision, average_precision_row, False),
    (token_batch.precision_at_k, precision_at_k_row, False),
    (token_batch.pointing_game, pointing_game_row, False),
    (token_batch.relevance_mass, relevance_mass_row, False),
    (token_batch.spearman, spearman_row, True),
    (token_batch.kendall_tau_b, kendall_tau_b_row, True),
]


def _heavy_ties(rng: np.random.Generator, m: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores drawn from 3 values (many ties, some all-equal rows), labels and graded truth of every kind."""
    s = rng.integers(-1, 2, size=(m, n)).astype(np.float64) * rng.choice([1.0, 0.5], size=(m, 1))
    s[:5] = 0.7  # constant rows
    y = rng.random((m, n)) < rng.random((m, 1))
    y[5:8] = False  # no positive
    y[8:10] = True  # no negative
    gg = np.where(y, rng.integers(1, 4, size=(m, n)) / 3.0, 0.0)
    return s, y, gg


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
@pytest.mark.parametrize(("batch", "row", "graded"), PAIRS, ids=[p[1].__name__ for p in PAIRS])
def test_batch_equals_rows(batch, row, graded: bool, n: int) -> None:
    rng = np.random.default_rng(n)
    s, y, gg = _heavy_ties(rng, 200, n)
    got = batch(s, gg if graded else y)
    want = np.array([row(s[k], gg[k] if graded else y[k]) for k in range(len(s))])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, equal_nan=True)
    assert np.isnan(want).any() and (n < 3 or np.isfinite(want).any())  # both kinds of row were exercised


def test_average_ranks_match_scipy() -> None:
    from scipy.stats import rankdata

    s = np.random.default_rng(0).integers(0, 3, size=(50, 6)).astype(float)
    np.testing.assert_array_equal(token_batch.average_ranks(s), rankdata(s, axis=1, method="average"))


@pytest.mark.parametrize("method", ["saliency", "attention_last_layer", "random", "feature_ablation"])
def test_registered_metrics_equal_the_row_definitions_on_a_real_case(method: str, compiled) -> None:
    cc = compiled("tracr_lib/sort")
    e = get_method(method)().explain(cc, seed=0)
    rel = scored_relevance(e, cc.truth)
    flat = type(rel)(np.where(np.abs(rel.values) <= rel.atol[:, None, None], 0.0, rel.values), rel.atol)
    for name, row, graded in [("auroc", auroc_row, False), ("average_precision", average_precision_row, False),
                              ("precision_at_k", precision_at_k_row, False), ("pointing_game", pointing_game_row, False),
                              ("spearman", spearman_row, True), ("kendall_tau_b", kendall_tau_b_row, True),
                              ("relevance_mass", relevance_mass_row, False)]:  # fmt: skip
        got = get_metric(name).fn(e, cc)
        source = flat if name == "relevance_mass" else rel
        want = token_rows(source, cc.truth, lambda r, g, gg, row=row, graded=graded: row(r, gg if graded else g))
        np.testing.assert_array_equal(got.inputs, want.inputs)
        np.testing.assert_allclose(got.values, want.values, rtol=0, atol=1e-12, equal_nan=True, err_msg=name)
