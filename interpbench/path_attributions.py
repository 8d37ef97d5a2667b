"""Integrated gradients and GradientShap rows from batched position gradients, equal to captum's."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    from interpbench.attribution_rows import Rows
    from interpbench.compiled import CompiledCase
    from interpbench.jacobian_plan import JacobianPlan


@functools.lru_cache(maxsize=16)
def _rule(method: str, n_steps: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """captum's step sizes and alphas for an integration rule."""
    from captum.attr._utils.approximation_methods import approximation_parameters

    step_sizes, alphas = approximation_parameters(method)
    return tuple(step_sizes(n_steps)), tuple(alphas(n_steps))


def _length_groups(lengths: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(length, indices) for each nonzero length, increasing."""
    for length in sorted(set(lengths.tolist()) - {0}):
        yield length, np.flatnonzero(lengths == length)


def _setup(case: CompiledCase) -> tuple[JacobianPlan, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The plan, tokens [n, T], key mask, token embeddings and target classes [n, T] of a case."""
    import torch

    from interpbench.jacobian_plan import jacobian_plan

    model = case.model
    tokens = torch.from_numpy(np.asarray(case.tokens, dtype=np.int64))
    n, t = tokens.shape
    classes = case.targets() if case.weights.categorical else np.zeros((n, t), dtype=np.int64)
    with torch.no_grad():
        x = model.embed(tokens)
    return jacobian_plan(model), tokens, model.key_mask(tokens), x, torch.from_numpy(classes)


def integrated_gradients(
    case: CompiledCase, n_steps: int, method: str, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """IG with the PAD baseline for every (input, real output position) row, equal to captum's.

    Inputs of one length run together, cut after their last real position (PAD keys are
    masked, so real positions do not change). Each path point (input, step) gets one
    forward and one backward for all of its output positions (`position_gradients`),
    instead of one per row. The path points, captum's step sizes (rounded to float32,
    as captum does) and the completeness delta follow captum's `IntegratedGradients`.

    Args:
        case: The compiled case.
        n_steps: Integration steps.
        method: captum's integration rule.
        size: At most this many path points (input, step) per pass (at least one
            input's steps), each with a cotangent per output position.

    Returns:
        Attributions [m, T, d_model] in `expand_output_rows` order, and the
        convergence delta [m] (sum of a row's attributions - (F(x) - F(baseline))).
    """
    import torch

    from interpbench.attribution_rows import pad_baseline
    from interpbench.embedding_jacobian import position_gradients

    step_sizes, alphas = _rule(method, n_steps)
    step_weights = torch.tensor(step_sizes).float().to(torch.float64)
    plan, tokens, keys, x, classes = _setup(case)
    model, dims, grad_dims = case.model, plan.dims, plan.grad_dims
    n, t_all, d_model = x.shape
    lengths = np.asarray(case.lengths, dtype=np.int64)
    with torch.no_grad():
        base = model.embed(torch.from_numpy(pad_baseline(case, case.tokens)))
        f_x = model.forward_from_embeddings(x, tokens, keys)
        f_base = model.forward_from_embeddings(base, tokens, keys)
    first_row = np.cumsum(lengths) - lengths
    out = x.new_zeros(int(lengths.sum()), t_all, d_model)
    for length, bs in _length_groups(lengths):
        t = length + 1
        xb, bb, kb, cls = x[bs, :t][..., dims], base[bs, :t][..., dims], keys[bs, :t], classes[bs, 1:t]
        positions = torch.arange(1, t).expand(len(bs), length)
        total = x.new_zeros(len(bs) * t * length * len(grad_dims))
        per = max(1, size // len(bs))
        for s0 in range(0, n_steps, per):
            a = alphas[s0 : s0 + per]
            path = bb + torch.tensor(a, dtype=torch.float64).view(-1, 1, 1, 1) * (xb - bb)
            path = path.view(len(a) * len(bs), t, len(dims))
            grads = position_gradients(plan, path, kb.repeat(len(a), 1), positions.repeat(len(a), 1),
                                       cls.repeat(len(a), 1))  # fmt: skip
            total.addmv_(grads.view(len(a), len(total)).T, step_weights[s0 : s0 + len(a)])
        part = x.new_zeros(len(bs), length, t, d_model)
        diff = (x[bs, :t] - base[bs, :t])[..., grad_dims]
        part[..., grad_dims] = (total.view(len(bs), t, length, len(grad_dims)) * diff[:, :, None]).transpose(1, 2)
        out[torch.from_numpy((first_row[bs][:, None] + np.arange(length)).ravel()), :t] = part.view(-1, t, d_model)
    b = np.repeat(np.arange(n), lengths)
    i = np.arange(len(b)) - np.repeat(first_row, lengths) + 1
    c = classes[b, i]
    delta = out.reshape(len(b), -1).sum(1) - (f_x[b, i, c] - f_base[b, i, c])
    return out, delta


def gradient_shap(
    case: CompiledCase, rows: Rows, baselines: torch.Tensor, n_samples: int, chunk_rows: int, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """captum's `GradientShap` with `stdevs` 0 for every row, with the same random draws.

    captum, called on `chunk_rows` rows at a time, draws per chunk a baseline index per
    (row, sample) with `np.random.choice`, then a path point per (row, sample) with
    `np.random.uniform` (its Gaussian noise is exactly 0 at `stdevs` 0). The same draws,
    in the same order, are made here first; then every (row, sample) point gets one
    forward and one backward on the live part of the model, inputs of one length
    together and cut after their last real position. Call it under seeded global
    generators, as captum would be.

    Args:
        case: The compiled case.
        rows: Its rows (`Rows.of(case)`).
        baselines: [K, T, d_model] embeddings of the baseline distribution.
        n_samples: Draws per row.
        chunk_rows: Rows per captum call whose draws are reproduced.
        size: At most this many path points (row, sample) per pass (at least one row's).

    Returns:
        Attributions [m, T, d_model] (mean over samples of (x - baseline) * gradient)
        and the per-sample convergence delta [m * n_samples].
    """
    import torch

    from interpbench.embedding_jacobian import position_gradients

    m, k = len(rows), n_samples
    idx, u = [], []
    for r0 in range(0, m, chunk_rows):
        bsz = min(chunk_rows, m - r0)
        idx.append(np.asarray(np.random.choice(baselines.shape[0], k * bsz).tolist(), dtype=np.int64))
        u.append(np.random.uniform(0.0, 1.0, bsz * k))
    draw, coef = torch.from_numpy(np.concatenate(idx)), torch.from_numpy(np.concatenate(u))
    plan, tokens, keys, x, classes = _setup(case)
    model, dims, grad_dims = case.model, plan.dims, plan.grad_dims
    n, t_all, d_model = x.shape
    b, i = (torch.from_numpy(a) for a in rows.index)
    target = classes[b, i]
    with torch.no_grad():
        f_x = model.forward_from_embeddings(x, tokens, keys)[b, i, target]
        n_base = baselines.shape[0]
        f_base = model.forward_from_embeddings(
            baselines.repeat(n, 1, 1), tokens.repeat_interleave(n_base, 0), keys.repeat_interleave(n_base, 0)
        ).view(n, n_base, t_all, -1)  # fmt: skip
    out = x.new_zeros(m, t_all, d_model)
    sums = x.new_zeros(m * k)
    lengths = np.asarray(case.lengths, dtype=np.int64)[rows.index[0]]
    for length, rs in _length_groups(lengths):
        t = length + 1
        pairs = torch.from_numpy((rs[:, None] * k + np.arange(k)).ravel())  # (row, sample), row-major
        for p in pairs.split(max(1, size // k) * k):  # whole rows
            pb = b[p // k]
            inp, base = x[pb, :t], baselines[draw[p], :t]
            c = coef[p].view(-1, 1, 1)
            point = (c * inp + (1.0 - c) * base)[..., dims]
            grads = position_gradients(plan, point, keys[pb, :t], i[p // k][:, None], target[p // k][:, None])
            attr = (inp - base)[..., grad_dims] * grads[:, :, 0]  # [pairs, t, |G|]
            sums[p] = attr.sum((1, 2))
            full = x.new_zeros(len(p), t, d_model)
            full[..., grad_dims] = attr
            out[p[::k] // k, :t] += full.view(-1, k, t, d_model).sum(1)
    delta = sums - (f_x.repeat_interleave(k) - f_base[b.repeat_interleave(k), draw, i.repeat_interleave(k),
                                                       target.repeat_interleave(k)])  # fmt: skip
    return out / k, delta
