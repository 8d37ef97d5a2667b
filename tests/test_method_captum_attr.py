"""The captum gradient family on real tracr compiles: shapes, masks, closed forms, completeness, seeds."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from interpbench import BadInputError
from interpbench.compiled import CompiledCase
from interpbench.explanation import Explanation
from interpbench.method import get_method
from captum_checks import check_token_relevance, valid_in

from interpbench.attribution_rows import expand_output_rows, pad_baseline
from interpbench.embedding_attribution import token_difference_basis
from interpbench.methods.captum_attr import (
    DEEPLIFT_REASON,
    DeepLift,
    GradientShap,
    InputXGradient,
    IntegratedGradients,
    Saliency,
)

GRADIENT_METHODS = {"saliency": Saliency, "input_x_gradient": InputXGradient,
                    "integrated_gradients": IntegratedGradients, "gradient_shap": GradientShap}  # fmt: skip


@pytest.fixture(scope="session")
def reverse(compiled: Callable[[str], CompiledCase]) -> CompiledCase:
    return compiled("tracr_lib/reverse")


@pytest.fixture(scope="session")
def frac_prevs(compiled: Callable[[str], CompiledCase]) -> CompiledCase:
    return compiled("tracr_lib/frac_prevs")


@pytest.fixture(scope="session")
def hist(compiled: Callable[[str], CompiledCase]) -> CompiledCase:
    return compiled("tracr_lib/hist")


@pytest.fixture(scope="session")
def explained(request: pytest.FixtureRequest) -> Callable[[str, str], Explanation]:
    """(method, case fixture name) -> default explanation with seed 0, computed once."""
    memo: dict[tuple[str, str], Explanation] = {}

    def get(method: str, case: str) -> Explanation:
        if (method, case) not in memo:
            memo[(method, case)] = GRADIENT_METHODS[method]().explain(request.getfixturevalue(case), seed=0)
        return memo[(method, case)]

    return get


@pytest.fixture(scope="session")
def reverse_ig(explained: Callable[[str, str], Explanation]) -> Explanation:
    return explained("integrated_gradients", "reverse")


@pytest.fixture(scope="session")
def frac_prevs_ig(explained: Callable[[str, str], Explanation]) -> Explanation:
    return explained("integrated_gradients", "frac_prevs")


def _gradient(case: CompiledCase, b: int, i: int) -> np.ndarray:
    """d logit[i, true class] / d token embeddings [T, d_model] of input b alone, by plain autograd."""
    tokens = torch.from_numpy(case.tokens[b : b + 1])
    emb = case.model.embed(tokens).detach().requires_grad_(True)
    cls = int(case.targets()[b, i]) if case.weights.categorical else 0
    (grad,) = torch.autograd.grad(case.model.forward_from_embeddings(emb, tokens)[0, i, cls], emb)
    return grad[0].numpy()


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


@pytest.mark.parametrize("method", sorted(GRADIENT_METHODS))
@pytest.mark.parametrize("name", ["reverse", "frac_prevs"])
def test_shapes_finite_and_masked(
    method: str, name: str, request: pytest.FixtureRequest, explained: Callable[[str, str], Explanation]
) -> None:
    case: CompiledCase = request.getfixturevalue(name)
    e = explained(method, name)
    check_token_relevance(case, e)
    assert e.diagnostics["n_rows"] == int(case.lengths.sum())


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
    rows = valid_in(case)
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


def test_family_registered() -> None:
    expected = {
        "saliency": {"abs": True, "reduce": "sum", "internal_batch_size": 512},
        "input_x_gradient": {"reduce": "sum", "internal_batch_size": 512},
        "gradient_shap": {"n_samples": 16, "stdevs": 0.0, "baseline": "pad+random", "n_random_baselines": 15,
                          "reduce": "sum", "internal_batch_size": 512},
    }  # fmt: skip
    for name, params in expected.items():
        cls = get_method(name)
        assert cls is GRADIENT_METHODS[name]
        assert (cls.family, cls.kinds) == ("attribution", ("token_relevance",))
        assert cls.unavailable() is None
        assert cls().params() == params


@pytest.mark.parametrize("abs_", [True, False])
def test_saliency_equals_autograd_gradient(reverse: CompiledCase, abs_: bool) -> None:
    r = Saliency(abs=abs_).explain(reverse).token_relevance
    b = int(np.argmax(reverse.lengths >= 4))
    n = int(reverse.lengths[b])
    for i in (1, n):
        grad = _gradient(reverse, b, i)[1 : n + 1]  # real input tokens only
        expected = np.abs(grad).sum(-1) if abs_ else grad.sum(-1)
        assert np.abs(expected).max() > 0  # not vacuous
        np.testing.assert_allclose(r[b, i, 1 : n + 1], expected, rtol=1e-12, atol=1e-15)
    l2 = Saliency(reduce="l2").explain(reverse).token_relevance
    norms = np.linalg.norm(_gradient(reverse, b, n)[1 : n + 1], axis=-1)
    np.testing.assert_allclose(l2[b, n, 1 : n + 1], norms)


def test_saliency_abs_is_the_l1_norm(
    reverse: CompiledCase, explained: Callable[[str, str], Explanation]
) -> None:
    unsigned = explained("saliency", "reverse").token_relevance
    signed = Saliency(abs=False).explain(reverse).token_relevance
    assert (unsigned >= 0).all()
    assert (np.abs(signed) <= unsigned + 1e-12).all()  # |sum g| <= sum |g|
    assert (signed < 0).any() and (signed > 0).any()


def test_input_x_gradient_equals_embedding_times_gradient(reverse: CompiledCase) -> None:
    r = InputXGradient().explain(reverse).token_relevance
    emb = reverse.weights.token_embed[reverse.tokens]  # [n, T, d_model], looked up in numpy
    checked = 0
    for b in (int(np.argmax(reverse.lengths >= 4)), int(np.argmax(reverse.lengths == 1))):
        n = int(reverse.lengths[b])
        for i in range(1, n + 1):
            expected = (emb[b] * _gradient(reverse, b, i)).sum(-1)[1 : n + 1]
            np.testing.assert_allclose(r[b, i, 1 : n + 1], expected, rtol=1e-12, atol=1e-15)
            checked += int(np.abs(expected).max() > 0)
    assert checked >= 3


def test_saliency_sees_vanishing_gradients_only_inside_the_token_span(hist: CompiledCase) -> None:
    # hist reads tokens only through the query-key match of Select(tokens, tokens, EQ),
    # whose softmax is saturated, and through nothing else: every gradient a token
    # substitution could see is 0. The raw gradient is not, because the embedding input
    # also feeds `one` and the output directions at j = i.
    d = Saliency().explain(hist).diagnostics
    assert d["zero_row_share"] == 0.0
    assert d["token_span_zero_row_share"] == 1.0
    assert d["off_token_span_share"] == pytest.approx(1.0, abs=1e-12)
    basis = token_difference_basis(hist)
    n_real = len(hist.weights.input_tokens) - 2
    assert basis.shape == (hist.weights.d_model, n_real - 1)
    np.testing.assert_allclose(basis.T @ basis, np.eye(n_real - 1), atol=1e-12)
    one = list(hist.weights.residual_labels).index("one")
    assert np.abs(basis[one]).max() < 1e-12  # every token writes `one`: not a substitution direction


def test_gradient_shap_seeded(reverse: CompiledCase, explained: Callable[[str, str], Explanation]) -> None:
    first = explained("gradient_shap", "reverse").token_relevance
    np_state, torch_state = np.random.get_state(), torch.get_rng_state()
    again = GradientShap().explain(reverse, seed=0).token_relevance
    other = GradientShap().explain(reverse, seed=1).token_relevance
    np.testing.assert_array_equal(again, first)
    assert np.abs(other - first).max() > 1e-6
    # the caller's global generators are left as they were
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), np_state))
    assert torch.equal(torch.get_rng_state(), torch_state)


def test_gradient_shap_baselines(reverse: CompiledCase) -> None:
    w = reverse.weights
    ids = GradientShap().baseline_ids(reverse, seed=5)
    assert ids.shape == (16, reverse.n_positions)
    assert (ids[:, 0] == w.bos_id).all()
    assert (ids[0, 1:] == w.pad_id).all()  # the PAD baseline comes first
    rand = ids[1:, 1:]
    assert not np.isin(rand, [w.bos_id, w.pad_id]).any()
    assert len(np.unique(rand)) == len(w.input_tokens) - 2  # every real token drawn somewhere
    np.testing.assert_array_equal(GradientShap(baseline="random").baseline_ids(reverse, seed=5), ids[1:])
    assert GradientShap(baseline="pad").baseline_ids(reverse, seed=5).shape == (1, reverse.n_positions)


def test_gradient_shap_completeness_on_a_path_linear_program(frac_prevs: CompiledCase) -> None:
    # With only the PAD baseline and no noise, every GradientShap sample is
    # grad(x0 + a (x - x0)) . (x - x0), which on frac_prevs (linear on that path, see
    # the IG test) is F(x) - F(x0) whatever a is: rows sum to it exactly.
    e = GradientShap(baseline="pad", n_samples=4).explain(frac_prevs, seed=2)
    model, tokens = frac_prevs.model, torch.from_numpy(frac_prevs.tokens)
    base = torch.from_numpy(pad_baseline(frac_prevs, frac_prevs.tokens))
    with torch.no_grad():
        fx = model.forward_from_embeddings(model.embed(tokens), tokens)[..., 0].numpy()
        fb = model.forward_from_embeddings(model.embed(base), tokens)[..., 0].numpy()
    rows = valid_in(frac_prevs)
    assert np.abs((fx - fb)[rows]).max() > 0.1
    np.testing.assert_allclose(e.token_relevance.sum(-1)[rows], (fx - fb)[rows], rtol=1e-9, atol=1e-12)
    assert e.diagnostics["delta_abs_max"] < 1e-9
    assert e.diagnostics["n_baselines"] == 1


@pytest.mark.parametrize("method", ["saliency", "input_x_gradient"])
def test_row_chunking_is_invisible(
    method: str, reverse: CompiledCase, explained: Callable[[str, str], Explanation]
) -> None:
    chunked = GRADIENT_METHODS[method](internal_batch_size=7).explain(reverse).token_relevance
    np.testing.assert_allclose(chunked, explained(method, "reverse").token_relevance, rtol=1e-12, atol=1e-15)


def test_new_methods_bad_settings(reverse: CompiledCase) -> None:
    bad = [
        (Saliency, {"abs": "yes"}), (Saliency, {"reduce": "max"}),
        (InputXGradient, {"internal_batch_size": 0}), (GradientShap, {"baseline": "zeros"}),
        (GradientShap, {"n_samples": 0}), (GradientShap, {"stdevs": -1.0}),
        (GradientShap, {"n_random_baselines": 0}),
    ]  # fmt: skip
    for cls, settings in bad:
        with pytest.raises(BadInputError):
            cls(**settings).explain(reverse)


def test_deeplift_is_unavailable_with_a_reason(reverse: CompiledCase) -> None:
    assert get_method("deeplift") is DeepLift
    assert DeepLift.unavailable() == DEEPLIFT_REASON and "\n" not in DEEPLIFT_REASON
    with pytest.raises(BadInputError, match="unavailable"):
        DeepLift().explain(reverse)


def test_deeplift_on_this_runtime_is_gradient_times_difference(hist: CompiledCase) -> None:
    # The evidence behind DEEPLIFT_REASON: captum finds no nn.Module nonlinearity in
    # the runtime, so DeepLift is gradient x (input - baseline), not DeepLift, and on
    # hist (saturated token attention) it misses all of F(x) - F(baseline).
    import warnings

    from captum.attr import DeepLift as CaptumDeepLift

    class Wrapped(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, emb: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
            return self.model.forward_from_embeddings(emb, ids, self.model.key_mask(ids)).flatten(1)

    tokens, targets, _ = expand_output_rows(hist)
    ids = torch.from_numpy(tokens[:40])
    n_out = int(hist.weights.unembed.shape[1])
    target = torch.tensor([p * n_out + c for p, c in targets[:40]])
    model = hist.model
    emb = model.embed(ids).detach()
    base = model.embed(torch.from_numpy(pad_baseline(hist, tokens[:40]))).detach()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        attr, delta = CaptumDeepLift(Wrapped(model)).attribute(
            emb, baselines=base, target=target, additional_forward_args=(ids,), return_convergence_delta=True
        )
    x = emb.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(Wrapped(model)(x, ids).gather(1, target[:, None]).sum(), x)
    np.testing.assert_allclose(attr.detach().numpy(), (grad * (emb - base)).numpy(), rtol=1e-12, atol=1e-15)
    with torch.no_grad():
        change = (Wrapped(model)(emb, ids) - Wrapped(model)(base, ids)).gather(1, target[:, None])[:, 0]
    assert change.abs().min() > 0.5
    np.testing.assert_allclose(delta.abs().numpy(), change.abs().numpy(), atol=1e-9)  # all of it missed
