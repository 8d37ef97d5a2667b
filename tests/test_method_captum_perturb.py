"""Perturbation attributions (captum and leave-one-out) on real tracr compiles, checked by closed forms."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from interpbench import BadInputError
from interpbench.compiled import CompiledCase
from interpbench.explanation import Explanation
from interpbench.method import Method, get_method
from captum_checks import check_token_relevance, valid_in

from interpbench.methods.captum_perturb import FeatureAblation, Occlusion, ShapleyValues, ShapleyValueSampling
from interpbench.methods.captum_surrogate import KernelShap, Lime
from interpbench.methods.leave_one_out import LeaveOneOut
from interpbench.metrics import aggregate, get_metric
from interpbench.token_metrics import snap_ties

METHODS: dict[str, type[Method]] = {
    "feature_ablation": FeatureAblation,
    "occlusion": Occlusion,
    "shapley_value_sampling": ShapleyValueSampling,
    "shapley_values": ShapleyValues,
    "lime": Lime,
    "kernel_shap": KernelShap,
    "leave_one_out": LeaveOneOut,
}


def _head(case: CompiledCase, n: int) -> CompiledCase:
    """The first n evaluation inputs only (methods never read `truth`), to keep tests fast."""
    return dataclasses.replace(case, tokens=case.tokens[:n], lengths=case.lengths[:n], outputs=case.outputs[:n])


@pytest.fixture(scope="session")
def reverse(compiled: Callable[[str], CompiledCase]) -> CompiledCase:
    return compiled("tracr_lib/reverse")


@pytest.fixture(scope="session")
def small_cases(compiled: Callable[[str], CompiledCase]) -> dict[str, CompiledCase]:
    # one categorical and one numerical program, 12 inputs each
    return {name: _head(compiled(f"tracr_lib/{name}"), 12) for name in ("reverse", "frac_prevs")}


@pytest.fixture(scope="session")
def explained(small_cases: dict[str, CompiledCase]) -> dict[tuple[str, str], Explanation]:
    """Every method at its defaults on both small cases, seed 3."""
    return {(m, c): cls().explain(case, seed=3) for m, cls in METHODS.items() for c, case in small_cases.items()}


def _scores(case: CompiledCase, ids: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Target score per position [k, T] of token ids [k, T], with the key mask of the original inputs.

    rows: which evaluation input each row of `ids` comes from (default: row k is input k).
    """
    rows = np.arange(len(ids)) if rows is None else rows
    model = case.model
    keys = model.key_mask(torch.from_numpy(case.tokens[rows]))
    cls = torch.from_numpy(case.targets()[rows])
    with torch.no_grad():
        logits = model(torch.from_numpy(ids), keys)
    return logits.gather(-1, cls.unsqueeze(-1)).squeeze(-1).numpy()


def _all_pad(case: CompiledCase) -> np.ndarray:
    """Every real token replaced by PAD (BOS and the PAD positions stay)."""
    return np.where(valid_in(case), case.weights.pad_id, case.tokens)


def test_registered() -> None:
    for name, cls in METHODS.items():
        assert get_method(name) is cls
        assert cls.family == "attribution" and cls.kinds == ("token_relevance",)
        assert set(cls().params()) == set(cls.defaults)
    assert Lime().params()["interpretable_model"] == "ridge"
    assert Lime().params()["similarity"] == "exp_kernel_kept_fraction"


@pytest.mark.parametrize("case_name", ["reverse", "frac_prevs"])
@pytest.mark.parametrize("name", list(METHODS))
def test_shapes_finite_masked_nonzero_deterministic(
    name: str, case_name: str, small_cases: dict[str, CompiledCase], explained: dict[tuple[str, str], Explanation]
) -> None:
    case = small_cases[case_name]
    r = check_token_relevance(case, explained[(name, case_name)], larger_than=0.1)
    again = METHODS[name]().explain(case, seed=3).token_relevance
    np.testing.assert_array_equal(again, r)


def test_sampling_methods_use_the_seed_and_leave_global_rng_alone(small_cases: dict[str, CompiledCase]) -> None:
    case = small_cases["reverse"]
    for cls in (ShapleyValueSampling, Lime, KernelShap):
        method = cls(n_samples=16, perturbations_per_eval=16)
        state = torch.random.get_rng_state()
        a = method.explain(case, seed=0).token_relevance
        assert torch.equal(state, torch.random.get_rng_state())
        b = method.explain(case, seed=1).token_relevance
        assert not np.array_equal(a, b), cls.name


def test_feature_ablation_equals_pad_replacement(reverse: CompiledCase) -> None:
    # Independent: replace token j of one input by PAD, rerun the model, subtract.
    r = FeatureAblation().explain(reverse).token_relevance
    b = int(np.argmax(reverse.lengths))
    length = int(reverse.lengths[b])
    x = reverse.tokens[b : b + 1]
    full = _scores(reverse, x, np.array([b]))[0]
    for j in range(1, length + 1):
        ablated = x.copy()
        ablated[0, j] = reverse.weights.pad_id
        diff = full - _scores(reverse, ablated, np.array([b]))[0]
        np.testing.assert_allclose(r[b, 1 : length + 1, j], diff[1 : length + 1], rtol=0, atol=1e-12)
    assert np.abs(r[b]).max() > 0.5  # not vacuous


def test_occlusion_windows(reverse: CompiledCase) -> None:
    # Window 1 is feature ablation; window 2 is the mean over the windows covering a token.
    ones = Occlusion(sliding_window=1).explain(reverse).token_relevance
    np.testing.assert_allclose(ones, FeatureAblation().explain(reverse).token_relevance, atol=1e-6)
    r = Occlusion().explain(reverse).token_relevance
    b = int(np.argmax(reverse.lengths))
    length, t = int(reverse.lengths[b]), reverse.n_positions
    x = reverse.tokens[b : b + 1]
    full = _scores(reverse, x, np.array([b]))[0]
    total, count = np.zeros((t, t)), np.zeros(t)
    for start in range(t - 1):
        window = [p for p in (start, start + 1) if 1 <= p <= length]
        ablated = x.copy()
        ablated[0, window] = reverse.weights.pad_id
        diff = full - _scores(reverse, ablated, np.array([b]))[0]
        for p in (start, start + 1):
            total[:, p] += diff
            count[p] += 1
    expected = total / count
    np.testing.assert_allclose(r[b, 1 : length + 1, 1 : length + 1],
                               expected[1 : length + 1, 1 : length + 1], atol=1e-6)  # fmt: skip


@pytest.mark.parametrize("case_name", ["reverse", "frac_prevs"])
def test_exact_shapley_efficiency(case_name: str, compiled: Callable[[str], CompiledCase]) -> None:
    # sum_j phi[b, i, j] = F_bi(x) - F_bi(every real token PAD), under the original key mask.
    case = compiled(f"tracr_lib/{case_name}")
    r = ShapleyValues().explain(case).token_relevance
    diff = _scores(case, case.tokens) - _scores(case, _all_pad(case))
    rows = valid_in(case)
    assert np.abs(diff[rows]).max() > 0.1  # not vacuous
    np.testing.assert_allclose(r.sum(-1)[rows], diff[rows], rtol=0, atol=1e-6)


def test_exact_shapley_matches_float64_subsets_and_the_scorer_restores_ties(reverse: CompiledCase) -> None:
    # Shapley values from all 2^L coalitions in float64 (one forward), independently of
    # captum. captum accumulates in float32, so equal values come out ~1e-7 apart; at the
    # tolerance the adapter declares, the scorer must tie them exactly (a ranking metric
    # would read the noise), and the adapter must return them as computed.
    case = reverse
    n, t = case.tokens.shape
    f = t - 1
    codes = np.arange(2**f)
    keep = (codes[:, None] >> np.arange(f)[None, :]) & 1  # [C, f]
    ids = np.repeat(case.tokens[:, None, :], len(codes), axis=1)
    ids[:, :, 1:] = np.where(keep[None] == 1, ids[:, :, 1:], case.weights.pad_id)
    values = _scores(case, ids.reshape(-1, t), np.repeat(np.arange(n), len(codes))).reshape(n, len(codes), t)
    fact = [float(np.prod(np.arange(1, k + 1))) for k in range(f + 1)]
    lengths = case.lengths
    phi = np.zeros((n, t, t))
    for j in range(f):
        for code in codes[keep[:, j] == 0]:
            s = int(keep[code].sum())
            # players are the real tokens: input b counts only coalitions of its own tokens
            weight = np.array([fact[s] * fact[m - s - 1] / fact[m] if j < m and code >> m == 0 else 0.0
                               for m in lengths])  # fmt: skip
            phi[:, :, j + 1] += weight[:, None] * (values[:, code | (1 << j)] - values[:, code])
    valid = valid_in(case)
    phi *= valid[:, :, None] * valid[:, None, :]
    e = ShapleyValues().explain(case)
    assert e.tie_tolerance == 1e-5
    raw = e.token_relevance
    np.testing.assert_allclose(raw, phi, atol=1e-5)
    r, _ = snap_ties(raw, valid, e.tie_tolerance)
    ties = 0
    for b, i in zip(*np.nonzero(valid)):
        p = phi[b, i, 1 : lengths[b] + 1]
        same = np.abs(p[:, None] - p[None, :]) < 1e-12
        got = r[b, i, 1 : lengths[b] + 1]
        assert (got[:, None] == got[None, :])[same].all(), (b, i, p, got)
        ties += int(same.sum() - len(p))
        raw_got = raw[b, i, 1 : lengths[b] + 1]
        ties -= int((raw_got[:, None] == raw_got[None, :])[same].sum() - len(p))
    assert ties > 0  # captum's float32 output alone breaks some of the true ties


def test_adapters_return_raw_relevance_and_declare_their_tolerance(
    explained: dict[tuple[str, str], Explanation], tmp_path: Path
) -> None:
    for (name, _), e in explained.items():
        tol = METHODS[name].defaults["tie_tolerance"]
        assert e.tie_tolerance == tol == (1e-9 if name in ("feature_ablation", "leave_one_out") else 1e-5), name
        assert e.diagnostics["tie_tolerance_abs"] == tol * np.abs(e.token_relevance).max(), name
        assert "ties_snapped" not in e.diagnostics
    e = explained[("occlusion", "reverse")]
    e.save(tmp_path)
    back = Explanation.load(tmp_path)
    assert back.tie_tolerance == 1e-5
    np.testing.assert_array_equal(back.token_relevance, e.token_relevance)


def test_scorer_ties_the_float64_noise_of_feature_ablation(reverse: CompiledCase) -> None:
    # The adapter returns F(x) - F(x') as computed (no snapping: the 0 setting changes
    # nothing); where the true effect is 0 those differences carry ~1e-16 of noise, which
    # the scorer ties at the declared 1e-9. Read as a ranking, the noise lifts AUROC.
    e = FeatureAblation().explain(reverse)
    np.testing.assert_array_equal(e.token_relevance, FeatureAblation(tie_tolerance=0.0).explain(reverse).token_relevance)
    valid = reverse.truth.valid_in
    snapped, atol = snap_ties(e.token_relevance, valid, e.tie_tolerance)
    assert atol.max() == max(e.diagnostics["tie_tolerance_abs"], 1e-12)  # per input; the largest input's
    noisy = 0
    for b, i in zip(*np.nonzero(valid)):
        row, tied = e.token_relevance[b, i, valid[b]], snapped[b, i, valid[b]]
        gap = np.abs(row[:, None] - row[None, :])
        close = (gap > 0) & (gap < atol[b])
        assert (tied[:, None] == tied[None, :])[close].all()
        noisy += int(close.sum())
    assert noisy > 0  # not vacuous

    def auroc(explanation: Explanation) -> float:
        return aggregate(get_metric("auroc").fn(explanation, reverse)).value

    assert auroc(e) < auroc(dataclasses.replace(e, tie_tolerance=0.0)) - 0.1


def test_exact_shapley_refuses_long_inputs(reverse: CompiledCase) -> None:
    with pytest.raises(BadInputError, match="too long for exact Shapley: 5 features > max_features 4"):
        ShapleyValues(max_features=4).explain(reverse)


def test_shapley_sampling_converges_to_exact(compiled: Callable[[str], CompiledCase]) -> None:
    case = _head(compiled("tracr_lib/sort"), 16)
    exact = ShapleyValues().explain(case).token_relevance
    rows = valid_in(case)
    errors = {}
    for n_samples in (4, 256):
        r = ShapleyValueSampling(n_samples=n_samples).explain(case, seed=0).token_relevance
        # efficiency holds for every sample (each ordering telescopes); captum sums in float32
        np.testing.assert_allclose(r.sum(-1)[rows], exact.sum(-1)[rows], atol=1e-5)
        errors[n_samples] = np.abs(r - exact)[rows].mean() / np.abs(exact)[rows].mean()
    assert errors[256] < 0.5 * errors[4]
    assert errors[256] < 0.1


def test_shapley_sampling_errors_are_independent_across_inputs(reverse: CompiledCase) -> None:
    # captum draws one feature ordering per sample for the whole batch; the adapter
    # relabels features per input so that 32 copies of one input get independent
    # estimates, whose mean is much closer to the exact value than any single copy.
    b = int(np.argmax(reverse.lengths))
    copies = np.full(32, b)
    case = dataclasses.replace(reverse, tokens=reverse.tokens[copies], lengths=reverse.lengths[copies],
                               outputs=reverse.outputs[copies])  # fmt: skip
    exact = ShapleyValues().explain(case).token_relevance[0]
    r = ShapleyValueSampling(n_samples=4).explain(case, seed=0).token_relevance
    assert np.abs(r - r[:1]).max() > 0.1  # the copies differ
    single = np.abs(r - exact).mean()
    pooled = np.abs(r.mean(0) - exact).mean()
    assert pooled < 0.35 * single


def test_kernel_shap_approximates_exact(compiled: Callable[[str], CompiledCase]) -> None:
    case = _head(compiled("tracr_lib/sort"), 16)
    exact = ShapleyValues().explain(case).token_relevance
    e = KernelShap().explain(case, seed=0)
    rows = valid_in(case)
    err = np.abs(e.token_relevance - exact)[rows].mean() / np.abs(exact)[rows].mean()
    assert err < 0.3
    # the full and empty coalitions carry weight 1e6: efficiency up to the float32 fit
    np.testing.assert_allclose(e.token_relevance.sum(-1)[rows], exact.sum(-1)[rows], atol=1e-3)


def test_lime_is_not_all_zero(
    small_cases: dict[str, CompiledCase], explained: dict[tuple[str, str], Explanation]
) -> None:
    # captum's default Lasso surrogate often returns all-zero maps; the ridge surrogate
    # must be non-zero on every row whose score changes under some PAD replacement
    # (a row with a non-zero exact Shapley value). frac_prevs has rows that never change.
    for case_name in ("reverse", "frac_prevs"):
        case = small_cases[case_name]
        rows = valid_in(case)
        moves = (np.abs(explained[("shapley_values", case_name)].token_relevance) > 1e-9).any(-1)[rows]
        assert moves.mean() > 0.25
        lime = (np.abs(explained[("lime", case_name)].token_relevance) > 1e-9).any(-1)[rows]
        np.testing.assert_array_equal(lime, moves)
    ols = Lime(interpretable_model="linear_regression", n_samples=64).explain(small_cases["reverse"])
    assert ols.diagnostics["zero_row_share"] == 0.0


def test_memoised_forward_is_exact(small_cases: dict[str, CompiledCase]) -> None:
    case = small_cases["frac_prevs"]
    for cls in (Lime, KernelShap):
        memo = cls(n_samples=64).explain(case, seed=5)
        plain = cls(n_samples=64, memoize_forward=False).explain(case, seed=5)
        assert memo.diagnostics["memoized"] and not plain.diagnostics["memoized"]
        np.testing.assert_allclose(memo.token_relevance, plain.token_relevance, atol=1e-5)


@pytest.mark.parametrize("case_name", ["reverse", "frac_prevs"])
def test_surrogate_shortcuts_equal_captum(case_name: str, small_cases: dict[str, CompiledCase]) -> None:
    """Our per-sample shortcuts (one torch.where, KernelShap's two weights made once, Lime's real-token count
    per row) give captum's numbers bit for bit: captum's own transform, kernel and a per-sample similarity."""
    import math

    from captum._utils.models.linear_model import SkLearnRidge
    from captum.attr import KernelShap as CaptumKernelShap
    from captum.attr import Lime as CaptumLime
    from captum.attr._core.lime import default_from_interp_rep_transform

    from interpbench.methods import captum_surrogate as cs

    case = small_cases[case_name]
    pad = int(case.weights.pad_id)
    fast = cs._block_sampled_kernel_shap()

    class CaptumKernel(fast):  # type: ignore[misc, valid-type]
        def __init__(self, forward: Callable[..., torch.Tensor]) -> None:
            super().__init__(forward)
            self.from_interp_rep_transform = default_from_interp_rep_transform

        kernel_shap_similarity_kernel = CaptumKernelShap.kernel_shap_similarity_kernel

    def similarity(original: torch.Tensor, _p: object, interpretable: torch.Tensor, **_: object) -> float:
        n_real = int((original[0, 1:] != pad).sum())
        kept = interpretable[0, :n_real].sum().item() / n_real
        return math.exp(-((1.0 - kept) ** 2) / (2.0 * 0.5**2))

    def plain_lime(forward: Callable[..., torch.Tensor]) -> object:
        return CaptumLime(forward, interpretable_model=SkLearnRidge(alpha=1.0), similarity_func=similarity,
                          perturb_func=cs._bernoulli_sampler())  # fmt: skip

    for cls, make in ((KernelShap, CaptumKernel), (Lime, plain_lime)):
        method = cls(n_samples=48, perturbations_per_eval=48)
        ours = method.explain(case, seed=7).token_relevance
        theirs = cs._row_attributions(case, 7, make, method.settings).token_relevance
        assert ours.tobytes() == theirs.tobytes() and np.abs(ours).max() > 0


def test_leave_one_out_on_reverse(reverse: CompiledCase) -> None:
    # reverse reads index length - 1 - i, with length = SelectorWidth(all-true selector).
    # Masking key e leaves length - 1 visible keys, so query i then reads index
    # length - 2 - i: nothing if that index is e or negative (BOS fallback, zero output),
    # otherwise that token. The true-class logit (~1) drops to ~0 exactly when the read
    # token is not the original output. (So LOO is NOT only the mirrored token here.)
    r = LeaveOneOut().explain(reverse).token_relevance
    inputs = reverse.inputs
    n_checked = 0
    for b, length in enumerate(reverse.lengths):
        xs = inputs[b]
        for i in range(length):
            for e in range(length):
                k = length - 2 - i
                changed = not (k >= 0 and k != e and xs[k] == xs[length - 1 - i])
                value = r[b, i + 1, e + 1]
                assert (value > 0.5) if changed else (abs(value) < 0.5), (xs, i, e, value)
                n_checked += 1
    assert n_checked == int((reverse.lengths**2).sum())


def test_leave_one_out_equals_key_erasure_by_hand(reverse: CompiledCase) -> None:
    # One input by hand: mask key j in every layer, rerun, subtract.
    b = int(np.argmax(reverse.lengths))
    x = reverse.tokens[b : b + 1]
    r = LeaveOneOut().explain(reverse).token_relevance
    model = reverse.model
    keys = model.key_mask(torch.from_numpy(x))
    cls = torch.from_numpy(reverse.targets()[b : b + 1])
    with torch.no_grad():
        full = model(torch.from_numpy(x), keys).gather(-1, cls.unsqueeze(-1))[0, :, 0].numpy()
        for j in range(1, int(reverse.lengths[b]) + 1):
            erased = keys.clone()
            erased[0, j] = False
            drop = model(torch.from_numpy(x), erased).gather(-1, cls.unsqueeze(-1))[0, :, 0].numpy()
            n = int(reverse.lengths[b])
            np.testing.assert_allclose(r[b, 1 : n + 1, j], (full - drop)[1 : n + 1], atol=1e-12)


def test_bad_settings(small_cases: dict[str, CompiledCase]) -> None:
    case = small_cases["reverse"]
    bad: list[tuple[type[Method], dict[str, object]]] = [
        (FeatureAblation, {"baseline": "zeros"}),
        (FeatureAblation, {"perturbations_per_eval": 0}),
        (Occlusion, {"sliding_window": 99}),
        (ShapleyValueSampling, {"n_samples": 0}),
        (Lime, {"interpretable_model": "lasso"}),
        (Lime, {"similarity": "cosine"}),
        (Lime, {"kernel_width": 0.0}),
        (KernelShap, {"n_samples": 1.5}),
        (LeaveOneOut, {"erase": "pad"}),
        (Occlusion, {"tie_tolerance": 1.0}),
        (FeatureAblation, {"tie_tolerance": -1e-9}),
    ]
    for cls, settings in bad:
        with pytest.raises(BadInputError):
            cls(**settings).explain(case)
    with pytest.raises(BadInputError):
        Lime(n_steps=3)


def test_leave_one_out_is_not_pad_replacement(compiled: Callable[[str], CompiledCase]) -> None:
    # double_mod5 is an elementwise map: output i depends on token i alone, through the
    # residual stream, never through attention. Replacing token i by PAD changes output
    # i; erasing key i leaves every output unchanged.
    case = compiled("algorithmic/double_mod5")
    rows = valid_in(case)
    loo = LeaveOneOut().explain(case).token_relevance
    assert np.abs(loo).max() < 1e-9
    ablation = FeatureAblation().explain(case).token_relevance
    diagonal = np.einsum("bii->bi", ablation)[rows]
    assert (diagonal > 0.5).all()
    off_diagonal = ablation * (1 - np.eye(case.n_positions))[None]
    assert np.abs(off_diagonal).max() < 1e-9
