"""Weights of the hand-built Dyck stack model (see `interpbench.twin_dyck` for the design and truth).

Three layers of tracr's architecture, written directly in numpy: a counting head and a
depth MLP, one stack head per bracket kind, and a decision head and MLP. Every intended
attention key beats the next best by MARGIN, as in tracr.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from interpbench.compiled import CompiledCase
from interpbench.weights import ModelWeights

MARGIN = 50.0  # attention-score margin of every intended key over the next best (tracr: 50)


@dataclasses.dataclass(frozen=True)
class Layout:
    """The residual labels of the hand-built model and what its builders need to know.

    Attributes:
        labels: Name of each residual direction (module docstring).
        kinds: The bracket kinds, (open, close) each.
        max_len: The case's max_seq_len.
        bos: Label of BOS's token direction.
        real: Labels of the bracket tokens' directions.
        key_size: The base model's key size (every head's query/key width).
    """

    labels: tuple[str, ...]
    kinds: tuple[tuple[str, str], ...]
    max_len: int
    bos: str
    real: tuple[str, ...]
    key_size: int

    def __getitem__(self, label: str) -> int:
        return self.labels.index(label)

    def at(self, p: int) -> int:
        """The direction that marks position p (BOS's token for p = 0, else `indices:{p - 1}`)."""
        return self[self.bos] if p == 0 else self[f"indices:{p - 1}"]

    def empty_layer(self, d_mlp: int) -> dict[str, np.ndarray]:
        """A layer of len(kinds) zero heads and a zero MLP of d_mlp units."""
        h, d, ks = len(self.kinds), len(self.labels), self.key_size
        z = {k: np.zeros((h, d, ks)) for k in ("w_q", "w_k", "w_v")}
        z.update({k: np.zeros((h, ks)) for k in ("b_q", "b_k", "b_v")})
        z.update(w_o=np.zeros((h, ks, d)), b_o=np.zeros(d), w_in=np.zeros((d, d_mlp)),
                 b_in=np.zeros(d_mlp), w_out=np.zeros((d_mlp, d)), b_out=np.zeros(d))  # fmt: skip
        return z


def layout(w: ModelWeights, kinds: list[tuple[str, str]], max_len: int) -> Layout:
    per_kind = [f"{name}:{o}{c}" for o, c in kinds
                for name in ("depth_frac", "depth", "depth_sq", "pre_depth_sq", "match")]  # fmt: skip
    toks = [f"tokens:{t}" for t in w.input_tokens]
    labels = (*toks, "one", *(f"indices:{m}" for m in range(max_len)), *per_kind,
              "unmatched_share", "balanced:False", "balanced:True")  # fmt: skip
    real = tuple(t for i, t in enumerate(toks) if i not in (w.bos_id, w.pad_id))
    return Layout(labels, tuple(kinds), max_len, toks[w.bos_id], real, w.key_size)


def _counting_layer(lay: Layout) -> dict[str, np.ndarray]:
    """L0: the counting head (depth_frac) and the MLP that turns it into depth, depth^2, pre-depth^2.

    MLP units are ReLU(s x - m - gate (1 - [position = p])) for x = depth = (p + 1) depth_frac
    and x = depth - sign (the depth before p), s = +-1, m = 0..|x|max - 1; at integers
    depth = u(+1, 0) - u(-1, 0) and x^2 = sum_s u(s, 0) + 2 sum_{m >= 1} u(s, m).
    """
    n_len, root = lay.max_len, np.sqrt(lay.key_size)
    units = sum(4 * p - 2 for p in range(1, n_len + 1))
    l0 = lay.empty_layer(len(lay.kinds) * units)
    for p in range(n_len + 1):  # position p selects keys 0..p: thermometer query, one-hot key
        l0["w_k"][0, lay.at(p), p] = 1.0
        l0["w_q"][0, lay.at(p), : p + 1] = MARGIN * root
    gate, unit = 2.0 * n_len, 0  # gate keeps a unit off away from its position
    for k, (o, c) in enumerate(lay.kinds):
        name = f"{o}{c}"
        l0["w_v"][0, lay[f"tokens:{o}"], k], l0["w_v"][0, lay[f"tokens:{c}"], k] = 1.0, -1.0
        l0["w_o"][0, k, lay[f"depth_frac:{name}"]] = 1.0
        for p, which, s in itertools.product(range(1, n_len + 1), ("post", "pre"), (1.0, -1.0)):
            for m in range(p if which == "post" else p - 1):
                col = l0["w_in"][:, unit]
                col[lay[f"depth_frac:{name}"]], col[lay["one"]], col[lay.at(p)] = s * (p + 1), -m - gate, gate
                if which == "pre":
                    col[lay[f"tokens:{o}"]], col[lay[f"tokens:{c}"]] = -s, s
                out = "depth_sq" if which == "post" else "pre_depth_sq"
                l0["w_out"][unit, lay[f"{out}:{name}"]] = 1.0 if m == 0 else 2.0
                if which == "post" and m == 0:
                    l0["w_out"][unit, lay[f"depth:{name}"]] = s
                unit += 1
    return l0


def _stack_layer(lay: Layout, d_mlp: int) -> dict[str, np.ndarray]:
    """L1: one stack head per kind; L1MLP is empty.

    Query p, bracket key i: score -A (pre_depth_i - depth_p)^2 + h(p, i), with
    h = -MARGIN (p - i) for i <= p (the latest wins) and -(A/2 + MARGIN) for i > p; BOS
    scores -A/2, and every bracket key loses A more when p is not a close of the head's
    kind. A = 2 MARGIN max_len, so each intended key beats the next best by MARGIN.
    """
    n_len, root = lay.max_len, np.sqrt(lay.key_size)
    a = 2.0 * MARGIN * n_len
    l1 = lay.empty_layer(d_mlp)
    for k, (o, c) in enumerate(lay.kinds):
        name, q, kk = f"{o}{c}", l1["w_q"][k], l1["w_k"][k]
        q[lay[f"depth:{name}"], 0] = a  # a depth_p * 2 pre_depth_i
        kk[lay[f"depth:{name}"], 0], kk[lay[f"tokens:{o}"], 0], kk[lay[f"tokens:{c}"], 0] = 2.0, -2.0, 2.0
        q[lay[f"depth_sq:{name}"], 1], q[lay["one"], 1], q[lay[f"tokens:{c}"], 1] = -a, -a, a
        kk[[lay[t] for t in lay.real], 1] = 1.0  # -a (depth_p^2 + [p not a close]) for brackets
        q[lay["one"], 2] = -a
        kk[lay[f"pre_depth_sq:{name}"], 2], kk[lay[lay.bos], 2] = 1.0, 0.5  # -a pre_depth_i^2; -a/2 for BOS
        for p, i in itertools.product(range(1, n_len + 1), repeat=2):
            q[lay.at(p), 2 + i] = -MARGIN * (p - i) if i <= p else -(a / 2 + MARGIN)
            kk[lay.at(i), 2 + i] = 1.0
        q *= root
        l1["w_v"][k, [lay[t] for t in lay.real], 0] = 1.0
        l1["w_o"][k, 0, lay[f"match:{name}"]] = 1.0
    return l1


def _decision_layer(lay: Layout, d_mlp: int) -> dict[str, np.ndarray]:
    """L2: unmatched_share = mean over brackets of 1 - 2 match; balanced iff it is below 1/8.

    The head scores 2 MARGIN for brackets and MARGIN for BOS (the fallback). The MLP:
    True = ReLU(2 - 8 s + 8 bos) - ReLU(1 - 8 s + 8 bos), exactly 1 for s = 0 or at BOS and
    0 for s >= 1/4 (s is 0 or at least 1/n); False = ReLU(one) - True.
    """
    l2, bos = lay.empty_layer(d_mlp), lay[lay.bos]
    l2["w_q"][0, lay["one"], 0] = 2.0 * MARGIN * np.sqrt(lay.key_size)
    l2["w_k"][0, [lay[t] for t in lay.real], 0], l2["w_k"][0, bos, 0] = 1.0, 0.5
    l2["w_v"][0, [lay[t] for t in lay.real], 0] = 1.0
    for o, c in lay.kinds:
        l2["w_v"][0, lay[f"match:{o}{c}"], 0] = -2.0
    l2["w_o"][0, 0, lay["unmatched_share"]] = 1.0
    for u, const, sign in ((0, 2.0, 1.0), (1, 1.0, -1.0)):
        l2["w_in"][[lay["one"], lay["unmatched_share"], bos], u] = (const, -8.0, 8.0)
        l2["w_out"][u, lay["balanced:True"]], l2["w_out"][u, lay["balanced:False"]] = sign, -sign
    l2["w_in"][lay["one"], 2], l2["w_out"][2, lay["balanced:False"]] = 1.0, 1.0
    return l2


def stack_weights(compiled: CompiledCase, kinds: list[tuple[str, str]]) -> tuple[ModelWeights, Layout]:
    """Builds the three-layer model of the module docstring (tracr's BOS, PAD, key size, causality)."""
    w = compiled.weights
    lay = layout(w, kinds, compiled.case.max_seq_len)
    d = len(lay.labels)
    token_embed = np.zeros((len(w.input_tokens), d))
    for i, t in enumerate(w.input_tokens):
        token_embed[i, lay[f"tokens:{t}"]] = token_embed[i, lay["one"]] = 1.0
    pos_embed = np.zeros((lay.max_len + 1, d))
    for p in range(1, lay.max_len + 1):
        pos_embed[p, lay.at(p)] = 1.0
    l0 = _counting_layer(lay)
    d_mlp = l0["w_in"].shape[1]  # every layer gets the same MLP width (zero units elsewhere)
    unembed = np.zeros((d, 2))
    unembed[lay["balanced:False"], 0] = unembed[lay["balanced:True"], 1] = 1.0
    weights = ModelWeights(token_embed=token_embed, pos_embed=pos_embed, unembed=unembed,
                           layers=(l0, _stack_layer(lay, d_mlp), _decision_layer(lay, d_mlp)),
                           residual_labels=lay.labels, input_tokens=w.input_tokens, output_values=w.output_values,
                           key_size=w.key_size, causal=w.causal, bos_id=w.bos_id, pad_id=w.pad_id)  # fmt: skip
    return weights, lay
