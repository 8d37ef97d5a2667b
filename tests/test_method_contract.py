"""The contract every registered method keeps: shapes, finite values, determinism, real components."""

from __future__ import annotations

import json

import numpy as np
import pytest

from interpbench.explanation import Explanation
from interpbench.method import list_methods


METHODS = sorted(m.name for m in list_methods())
AVAILABLE = [m for m in METHODS if not next(c for c in list_methods() if c.name == m).unavailable()]
UNAVAILABLE = [m for m in METHODS if m not in AVAILABLE]
# one categorical and one numerical program
CASES = ["tracr_lib/reverse", "tracr_lib/frac_prevs"]


def _cls(name: str):
    return next(c for c in list_methods() if c.name == name)


@pytest.fixture(scope="module")
def explained(compiled):
    """(method, case) -> (explanation, explanation again with the same seed), computed once."""
    memo: dict[tuple[str, str], tuple[Explanation, Explanation]] = {}

    def get(method: str, case: str) -> tuple[Explanation, Explanation]:
        if (method, case) not in memo:
            cc = compiled(case)
            memo[(method, case)] = (_cls(method)().explain(cc, seed=3), _cls(method)().explain(cc, seed=3))
        return memo[(method, case)]

    return get


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("method", AVAILABLE)
def test_contract(method: str, case: str, compiled, explained) -> None:
    cc = compiled(case)
    cls = _cls(method)
    first, second = explained(method, case)
    assert set(first.kinds) == set(cls.kinds), f"{method} declares {cls.kinds}, returned {first.kinds}"
    n, t = cc.tokens.shape
    real = cc.truth.valid_in
    if first.token_relevance is not None:
        r = np.asarray(first.token_relevance)
        assert r.shape == (n, t, t)
        assert np.isfinite(r).all()
        assert (r[:, :, 0] == 0).all(), "BOS is never an input position"
        assert (r[~real] == 0).all(), "BOS/PAD output rows must be 0"
        assert (np.where(real[:, None, :], 0, r) == 0).all(), "PAD input columns must be 0"
        np.testing.assert_array_equal(r, second.token_relevance)  # deterministic under a seed
    if first.head_patterns is not None:
        assert set(first.head_patterns) <= set(cc.head_names()), "only existing heads"
        for name, p in first.head_patterns.items():
            assert p.shape == (n, t, t) and np.isfinite(p).all()
            np.testing.assert_array_equal(p, second.head_patterns[name])
    json.dumps(cls().params())  # every setting recorded, JSON-safe
    assert set(cls().params()) == set(cls.defaults)


@pytest.mark.parametrize("method", UNAVAILABLE)
def test_unavailable_methods_say_why(method: str) -> None:
    reason = _cls(method).unavailable()
    assert isinstance(reason, str) and len(reason) > 10


def test_every_family_is_present() -> None:
    families = {_cls(m).family for m in AVAILABLE}
    assert {"attention", "attribution", "baseline"} <= families


@pytest.mark.slow
@pytest.mark.parametrize("method", AVAILABLE)
def test_methods_run_on_every_twin(method: str, compiled) -> None:
    """Twins add heads, residual dimensions and an attention rule: every method copes and keeps the contract."""
    from interpbench.twins import TwinNotApplicable, list_twins, make_twin

    base = compiled("tracr_lib/reverse")
    for t in list_twins():
        try:
            twin = make_twin(base, t.name)
        except TwinNotApplicable:  # a twin for one family of cases only (dyck_stack)
            twin = make_twin(compiled("tracr_lib/shuffle_dyck"), t.name)
        e = _cls(method)().explain(twin, seed=0)
        n, pos = twin.tokens.shape
        if e.token_relevance is not None:
            r = np.asarray(e.token_relevance)
            assert r.shape == (n, pos, pos) and np.isfinite(r).all(), t.name
            assert (np.where(twin.input_mask()[:, None, :], 0, r) == 0).all(), t.name
        if e.head_patterns is not None:
            assert set(e.head_patterns) <= set(twin.head_names()), t.name
            assert all(p.shape == (n, pos, pos) and np.isfinite(p).all() for p in e.head_patterns.values()), t.name
