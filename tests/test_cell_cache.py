"""Reuse of finished explanations across runs: same key -> no method call and the same rows; any change -> a miss."""

from __future__ import annotations

import dataclasses
import json
import uuid
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest

from interpbench import cell_cache
from interpbench.case import get_case
from interpbench.explanation import Explanation
from interpbench.method import Method, get_method, method
from interpbench.run import run_grid

CASE = "tracr_lib/reverse"
VOLATILE = ["created_at"]
RECOMPUTED = ["created_at", "seconds"]  # a method run again takes its own time


@method("counted_random", family="baseline", kinds=("token_relevance", "head_patterns"))
class CountedRandom(Method):
    """Seeded random relevance that counts its calls (to see whether a run called it)."""

    calls: ClassVar[int] = 0

    def explain(self, case, *, seed: int = 0) -> Explanation:  # noqa: ANN001
        type(self).calls += 1
        return get_method("random")().explain(case, seed=seed)


@pytest.fixture
def reuse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cell_cache.REUSE_ENV, "1")


def _run(run_dir: Path, seed: int, variants: tuple[str, ...] = ("base", "rotated")) -> pd.DataFrame:
    return run_grid([get_case(CASE)], [CountedRandom, get_method("uniform")], run_dir, variants=variants, seeds=(seed,))


def _reused(run_dir: Path) -> dict[str, bool]:
    return {str(p.parent.relative_to(run_dir)): json.loads(p.read_text())["reused"]
            for p in sorted((run_dir / "cells").glob("*/*/*/*/cell.json"))}  # fmt: skip


def test_a_second_run_reuses_every_cell_without_calling_the_method(reuse: None, tmp_path: Path) -> None:
    seed = uuid.uuid4().int % 2**31  # a key no earlier run can have stored
    before = CountedRandom.calls
    first = _run(tmp_path / "a", seed)
    assert CountedRandom.calls - before == 2  # base and the rotated twin
    assert not any(v for k, v in _reused(tmp_path / "a").items() if "counted_random" in k)
    second = _run(tmp_path / "b", seed)
    assert CountedRandom.calls - before == 2
    assert all(_reused(tmp_path / "b").values())
    pd.testing.assert_frame_equal(first.drop(columns=VOLATILE), second.drop(columns=VOLATILE))
    a = Explanation.load(tmp_path / "a" / "cells" / "tracr_lib__reverse" / "base" / "counted_random" / f"seed{seed}")
    b = Explanation.load(tmp_path / "b" / "cells" / "tracr_lib__reverse" / "base" / "counted_random" / f"seed{seed}")
    np.testing.assert_array_equal(a.token_relevance, b.token_relevance)


def test_a_damaged_entry_is_dropped_and_the_method_runs_again(reuse: None, tmp_path: Path) -> None:
    seed = uuid.uuid4().int % 2**31
    first = _run(tmp_path / "a", seed, variants=("base",))
    meta = json.loads((tmp_path / "a" / "cells" / "tracr_lib__reverse" / "base" / "counted_random" / f"seed{seed}"
                       / "cell.json").read_text())  # fmt: skip
    entry = cell_cache.entry_folder("counted_random", meta["cell_key"])
    (entry / "explanation.npz").write_bytes(b"truncated")
    before = CountedRandom.calls
    again = _run(tmp_path / "b", seed, variants=("base",))
    assert CountedRandom.calls - before == 1
    assert _reused(tmp_path / "b")[f"cells/tracr_lib__reverse/base/counted_random/seed{seed}"] is False
    pd.testing.assert_frame_equal(first.drop(columns=RECOMPUTED), again.drop(columns=RECOMPUTED))
    assert json.loads((entry / "entry.json").read_text())["files"]  # stored again, whole


def test_reuse_off_runs_every_method(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seed = uuid.uuid4().int % 2**31
    monkeypatch.setenv(cell_cache.REUSE_ENV, "1")
    _run(tmp_path / "a", seed, variants=("base",))
    monkeypatch.setenv(cell_cache.REUSE_ENV, "0")
    before = CountedRandom.calls
    _run(tmp_path / "b", seed, variants=("base",))
    assert CountedRandom.calls - before == 1
    assert not any(_reused(tmp_path / "b").values())


def test_the_key_changes_with_every_part_of_the_content(compiled) -> None:  # noqa: ANN001
    case = compiled(CASE)
    key = cell_cache.cell_key(case, "base", CountedRandom, {"a": 1}, 0)
    assert key == cell_cache.cell_key(case, "base", CountedRandom, {"a": 1}, 0)
    other_inputs = dataclasses.replace(case, tokens=case.tokens[::-1].copy())
    other_weights = dataclasses.replace(case, weights=dataclasses.replace(case.weights, unembed=case.weights.unembed * 2))
    changed = [
        cell_cache.cell_key(case, "rotated", CountedRandom, {"a": 1}, 0),
        cell_cache.cell_key(case, "base", get_method("uniform"), {"a": 1}, 0),
        cell_cache.cell_key(case, "base", CountedRandom, {"a": 2}, 0),
        cell_cache.cell_key(case, "base", CountedRandom, {"a": 1}, 1),
        cell_cache.cell_key(other_inputs, "base", CountedRandom, {"a": 1}, 0),
        cell_cache.cell_key(other_weights, "base", CountedRandom, {"a": 1}, 0),
    ]
    assert len({key, *changed}) == len(changed) + 1


def test_the_method_version_is_part_of_the_key(compiled, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    case = compiled(CASE)
    key = cell_cache.cell_key(case, "base", CountedRandom, {}, 0)
    monkeypatch.setattr(CountedRandom, "version", "2")
    assert cell_cache.cell_key(case, "base", CountedRandom, {}, 0) != key


def test_code_digest_follows_our_imports_including_those_inside_functions() -> None:
    source = (
        "import numpy as np\n"
        "from interpbench.explanation import Explanation\n"
        "from interpbench import storage\n"
        "def f():\n"
        "    from interpbench.runtime import CompiledTransformer\n"
        "    import torch\n"
    )
    found = set(cell_cache._own_imports("interpbench.methods.example", source))
    assert {"interpbench.explanation", "interpbench.storage", "interpbench.runtime"} <= found
    assert not {m for m in found if not m.startswith(("interpbench", "methods"))}
    assert "interpbench.explanation.Explanation" not in found  # a class, not a module
    source, imports = cell_cache._read_module("interpbench.methods.captum_attr")
    assert "integrated_gradients" in source and "interpbench.embedding_attribution" in imports
    closure, todo = set(), ["interpbench.methods.captum_attr"]
    while todo:
        name = todo.pop()
        if name not in closure:
            closure.add(name)
            todo += cell_cache._read_module(name)[1]
    assert {"interpbench.runtime", "interpbench.path_attributions", "interpbench.explanation"} <= closure
    assert all(cell_cache._read_module(name)[0] for name in closure)  # every module's source was read
    digest = cell_cache.code_digest("interpbench.methods.baselines")
    assert len(digest) == 64 and digest != cell_cache.code_digest("interpbench.methods.attention")
