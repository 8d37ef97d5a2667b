"""Finished explanations reused across runs, keyed by content: model, variant, method version and params, seed.

A method's explanation depends only on the model it reads, the evaluation inputs, the
method's code and settings, and the seed. When a later run (a re-run of `make bench`,
say) needs a cell with the same key, the saved explanation and its method seconds are
taken from the cache instead of running the method again; the cell is still scored
afresh, so a change to a metric shows at once. The key holds:

- the compiled model's content (weights and evaluation inputs, hashed) and its case key
  (program, vocab, lengths, versions), so a twin whose construction changed misses;
- the variant, the method's name, declared `version` and params, and a digest of the
  source of the module defining it and of every interpbench/methods module that module
  imports (transitively), so an edited adapter or library code it calls misses even
  when nobody bumped `version`;
- the seed.

Entries live in `$INTERPBENCH_CACHE/cells/{method}/{key}/` (explanation files and
`entry.json` with their hashes). A damaged entry is dropped and the method is run.
`INTERPBENCH_REUSE=0` (the CLI's `--no-reuse`) turns reuse off for a run; entries are
still written.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from interpbench.cell_files import EXPLANATION_FILES, file_sha256
from interpbench.compiled import cache_root
from interpbench.explanation import Explanation
from interpbench.storage import atomic_write_json, content_hash

if TYPE_CHECKING:
    from interpbench.compiled import CompiledCase
    from interpbench.method import Method

CACHE_FORMAT = 1
REUSE_ENV = "INTERPBENCH_REUSE"
_MODEL_DIGESTS: dict[str, tuple[int, str]] = {}


def reuse_enabled() -> bool:
    """Whether finished cells may be taken from the cache (`INTERPBENCH_REUSE` unset or not 0)."""
    return os.environ.get(REUSE_ENV, "1").strip() != "0"


def model_digest(compiled: CompiledCase) -> str:
    """sha256 of the model's weights and evaluation inputs (memoised per compiled object)."""
    memo = _MODEL_DIGESTS.get(compiled.key)
    if memo is not None and memo[0] == id(compiled):
        return memo[1]
    h = hashlib.sha256()
    w = compiled.weights
    arrays = [w.token_embed, w.pos_embed, w.unembed, compiled.tokens, compiled.lengths]
    arrays += [layer[k] for layer in w.layers for k in sorted(layer)]
    if w.residual_basis is not None:
        arrays.append(w.residual_basis)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    h.update(json.dumps([w.reshuffled_heads, w.causal, w.key_size, w.bos_id, w.pad_id], default=str).encode())
    digest = h.hexdigest()
    _MODEL_DIGESTS[compiled.key] = (id(compiled), digest)
    return digest


OWN_PACKAGES = ("interpbench", "methods")


@functools.lru_cache(maxsize=None)
def code_digest(module_name: str) -> str:
    """sha256 of the source of `module_name` and of every interpbench/methods module it imports, transitively.

    Imports are read from the source (`ast`), those inside functions included, so an
    edit to library code an adapter calls (e.g. the shared gradient code) changes the
    digest of every method that uses it. Modules without source count by name.
    """
    seen: dict[str, str] = {}
    todo = [module_name]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen[name], imports = _read_module(name)
        todo += imports
    h = hashlib.sha256()
    for name in sorted(seen):
        h.update(name.encode() + b"\0" + seen[name].encode() + b"\0")
    return h.hexdigest()


@functools.lru_cache(maxsize=None)
def _read_module(name: str) -> tuple[str, tuple[str, ...]]:
    """(source, our modules it imports) of one module, read and parsed once per process."""
    path = _module_file(name)
    source = path.read_text() if path is not None else ""
    return source, tuple(_own_imports(name, source))


@functools.lru_cache(maxsize=None)
def _module_file(name: str) -> Path | None:
    """The source file of module `name`, found without importing it (None: not a module, e.g. a class).

    A loaded module gives its `__file__`; otherwise the name is looked up as a file in
    its parent package's folder, so asking costs no import (some of our modules import
    torch or captum).
    """
    loaded = sys.modules.get(name)
    if loaded is not None:
        file = getattr(loaded, "__file__", None)
        return Path(file) if file else None
    parent, _, leaf = name.rpartition(".")
    if not parent:
        return None
    folder = _module_file(parent)
    if folder is None or folder.name != "__init__.py":  # the parent is not a package: `name` is an attribute
        return None
    for candidate in (folder.parent / f"{leaf}.py", folder.parent / leaf / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _own_imports(name: str, source: str) -> list[str]:
    """Modules of our own packages that `source` (module `name`) imports anywhere."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    package = name.rsplit(".", 1)[0] if "." in name else name
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
            found.append(base)
            found += [f"{base}.{a.name}" for a in node.names]
    return [m for m in found if m.split(".")[0] in OWN_PACKAGES and _module_file(m) is not None]


def cell_key(compiled: CompiledCase, variant: str, method_cls: type[Method], params: dict[str, Any], seed: int) -> str:
    """The content key of one cell's explanation."""
    return content_hash({
        "format": CACHE_FORMAT, "case": compiled.key, "model": model_digest(compiled), "variant": variant,
        "method": method_cls.name, "version": method_cls.version, "code": code_digest(method_cls.__module__),
        "params": json.loads(json.dumps(params, sort_keys=True, default=str)), "seed": seed,
    })  # fmt: skip


def entry_folder(method: str, key: str) -> Path:
    """Where the cache keeps the explanation of `key`."""
    return cache_root() / "cells" / method / key


def lookup(method: str, key: str) -> tuple[Explanation, float] | None:
    """(explanation, method seconds) saved under `key`, or None (missing or damaged: then removed)."""
    folder = entry_folder(method, key)
    try:
        entry = json.loads((folder / "entry.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    try:
        if entry.get("format") != CACHE_FORMAT or any(
            file_sha256(folder / n) != d for n, d in entry["files"].items()
        ):
            raise ValueError("stale or damaged entry")
        return Explanation.load(folder), float(entry["seconds"])
    except Exception:  # noqa: BLE001 - any damage means: run the method again
        shutil.rmtree(folder, ignore_errors=True)
        return None


def store(method: str, key: str, cell_folder: Path, seconds: float, files: dict[str, str]) -> None:
    """Puts a finished cell's explanation files into the cache under `key` (atomic: a folder rename).

    Files are hard-linked where the cache and the run share a file system (both are only
    ever replaced, never written in place), copied otherwise. `files` are their sha256,
    as the cell recorded them.
    """
    folder = entry_folder(method, key)
    if (folder / "entry.json").exists():
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{key}."))
    try:
        for name in EXPLANATION_FILES:
            try:
                os.link(cell_folder / name, tmp / name)
            except OSError:
                shutil.copyfile(cell_folder / name, tmp / name)
        atomic_write_json(tmp / "entry.json", {"format": CACHE_FORMAT, "files": files, "seconds": seconds},
                          durable=False)  # fmt: skip
        try:
            os.replace(tmp, folder)
        except OSError:  # another process stored the same key first
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
