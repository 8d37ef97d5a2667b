"""integrated_gradients on real tracr compiles with real captum: shapes, masks, completeness."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch

from interpbench import BadInputError
from interpbench.compiled import CompiledCase
from interpbench.explanation import Explanation
from interpbench.method import get_method
from interpbench.methods.captum_attr import IntegratedGradients, expand_output_rows, pad_baseline


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    # The models are tiny: intra-op threads only add OpenMP spin-waiting, which
    # costs 5-20x on a loaded machine. Restored after this module.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def reverse(compiled: Callable[[str], CompiledCase]) -> CompiledCase:
    return compiled("tracr_lib/reverse")


@pytest.fixture(scope="session")
def frac_prevs(compiled: Callable[[str], CompiledCase]) -> CompiledCase:
    return compiled("tracr_lib/frac_prevs")


@pytest.fixture(scope="session")
def reverse_ig(reverse: CompiledCase) -> Explanation:
    return IntegratedGradients().explain(reverse)


@pytest.fixture(scope="session")
def frac_prevs_ig(frac_prevs: CompiledCase) -> Explanation:
    return IntegratedGradients().explain(frac_prevs)


def _valid_in(case: CompiledCase) -> np.ndarray:
    """[n, T] True at real input tokens (BOS and PAD excluded), from the input lengths."""
    pos = np.arange(case.n_positions)[None, :]
    return (pos >= 1) & (pos <= case.lengths[:, None])


def test_registered() -> None:
    cls = get_method("integrated_gradients")
    assert cls is IntegratedGradients
    assert cls.family == "attribution"
    assert cls.kinds == ("token_relevance",)
    assert IntegratedGradients().params() == {
        "n_steps": 32,
        "internal_batch_size": 512,
        "method": "gausslegendre",
        "baseline": "pad",
        "reduce": "sum",
    }


def test_expand_output_rows(reverse: CompiledCase) -> None:
    tokens, targets, (b, i) = expand_output_rows(reverse)
    assert len(tokens) == len(targets) == len(b) == len(i) == int(reverse.lengths.sum())
    expected = [(bb, ii) for bb, n in enumerate(reverse.lengths) for ii in range(1, n + 1)]
    assert list(zip(b.tolist(), i.tolist())) == expected
    np.testing.assert_array_equal(tokens, reverse.tokens[b])
    assert targets == [(int(ii), int(reverse.targets()[bb, ii])) for bb, ii in zip(b, i)]
    base = pad_baseline(reverse, tokens)
    assert (base[:, 0] == reverse.weights.bos_id).all()
    assert (base[:, 1:] == reverse.weights.pad_id).all()


@pytest.mark.parametrize("name", ["reverse", "frac_prevs"])
def test_shapes_finite_and_masked(name: str, request: pytest.FixtureRequest) -> None:
    case: CompiledCase = request.getfixturevalue(name)
    r = request.getfixturevalue(f"{name}_ig").token_relevance
    n, t = case.tokens.shape
    assert r.shape == (n, t, t)
    assert np.isfinite(r).all()
    valid = _valid_in(case)
    assert (r.transpose(0, 2, 1)[~valid] == 0).all()  # BOS and PAD input columns
    assert (r[~valid] == 0).all()  # no output row at BOS or PAD
    assert np.abs(r).max() > 0


def test_deterministic(reverse: CompiledCase, reverse_ig: Explanation) -> None:
    again = IntegratedGradients().explain(reverse)
    np.testing.assert_array_equal(again.token_relevance, reverse_ig.token_relevance)


def test_row_chunking_does_not_change_results(reverse: CompiledCase, reverse_ig: Explanation) -> None:
    chunked = IntegratedGradients(internal_batch_size=16).explain(reverse)
    np.testing.assert_allclose(
        chunked.token_relevance, reverse_ig.token_relevance, rtol=1e-9, atol=1e-12
    )


def test_completeness_on_a_path_linear_program(
    frac_prevs: CompiledCase, frac_prevs_ig: Explanation
) -> None:
    # frac_prevs reads `tokens == "a"` through a lookup MLP that is linear on the
    # path from the PAD embedding, and averages it with a token-independent selector,
    # so IG must satisfy completeness: sum_j R[b, i, j] = F(x) - F(baseline), with
    # F(baseline) run under the key mask of the ORIGINAL tokens.
    case = frac_prevs
    model = case.model
    tokens = torch.from_numpy(case.tokens)
    base = torch.from_numpy(pad_baseline(case, case.tokens))
    with torch.no_grad():
        fx = model.forward_from_embeddings(model.embed(tokens), tokens)[..., 0].numpy()
        fb = model.forward_from_embeddings(model.embed(base), tokens)[..., 0].numpy()
    rows = _valid_in(case)
    total = frac_prevs_ig.token_relevance.sum(axis=-1)
    diff = fx - fb
    assert np.abs(diff[rows]).max() > 0.1  # the check is not vacuous
    np.testing.assert_allclose(total[rows], diff[rows], rtol=1e-2, atol=1e-6)
    assert frac_prevs_ig.diagnostics["delta_abs_max"] < 1e-6


def test_reverse_credits_the_mirrored_token(reverse: CompiledCase, reverse_ig: Explanation) -> None:
    # Output position i copies input position length + 1 - i, so the attribution of
    # the true class to that token should be positive on (almost) every row.
    r = reverse_ig.token_relevance
    mirrored = [r[b, i, n + 1 - i] for b, n in enumerate(reverse.lengths) for i in range(1, n + 1)]
    assert np.mean(np.array(mirrored) > 0) >= 0.9


def test_diagnostics(reverse: CompiledCase, reverse_ig: Explanation) -> None:
    d = reverse_ig.diagnostics
    assert d["n_rows"] == int(reverse.lengths.sum())
    assert 0.0 <= d["zero_row_share"] <= 1.0
    assert np.isfinite(d["delta_abs_mean"]) and d["delta_abs_mean"] <= d["delta_abs_max"]


def test_reduce_l2(frac_prevs: CompiledCase, frac_prevs_ig: Explanation) -> None:
    r = IntegratedGradients(reduce="l2").explain(frac_prevs).token_relevance
    assert (r >= 0).all()
    # Cauchy-Schwarz: |sum over d_model dims| <= sqrt(d_model) * l2 norm, per token.
    bound = np.sqrt(frac_prevs.weights.d_model) * r
    assert (np.abs(frac_prevs_ig.token_relevance) <= bound + 1e-12).all()
    assert ((r > 0) == (np.abs(frac_prevs_ig.token_relevance) > 0)).mean() > 0.99


def test_bad_settings(reverse: CompiledCase) -> None:
    for settings in ({"reduce": "max"}, {"baseline": "zeros"}, {"internal_batch_size": 0}):
        with pytest.raises(BadInputError):
            IntegratedGradients(**settings).explain(reverse)
    with pytest.raises(BadInputError):
        IntegratedGradients(head_reduce="mean")
