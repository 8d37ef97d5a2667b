"""Finds drop-in suites and method adapters: built-in folders plus user folders.

Built-ins live in the repository's `suites/` and `methods/` folders (installed as
`interpbench.suites` and `interpbench.methods`). More folders can be named in the
environment variables `INTERPBENCH_SUITES_PATH` and `INTERPBENCH_METHODS_PATH`
(os.pathsep-separated). A file that fails to import is recorded with its reason and
never stops the harness.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import sys
import traceback
from pathlib import Path
from types import ModuleType

_LOADED: dict[str, set[str]] = {"suites": set(), "methods": set()}
BROKEN: dict[str, dict[str, str]] = {"suites": {}, "methods": {}}

_ENV = {"suites": "INTERPBENCH_SUITES_PATH", "methods": "INTERPBENCH_METHODS_PATH"}


def _reason(exc: BaseException) -> str:
    """One line: exception type, message and the innermost user-file line."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {msg}{where}"


def _import_file(kind: str, path: Path) -> ModuleType:
    name = f"interpbench_user_{kind}.{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def extra_dirs(kind: str) -> list[Path]:
    """User folders for `kind` ("suites" or "methods") named in the environment."""
    raw = os.environ.get(_ENV[kind], "")
    return [Path(p) for p in raw.split(os.pathsep) if p]


def _load(kind: str) -> None:
    package = importlib.import_module(f"interpbench.{kind}")
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        key = f"builtin:{info.name}"
        if key in _LOADED[kind]:
            continue
        _LOADED[kind].add(key)
        try:
            importlib.import_module(f"interpbench.{kind}.{info.name}")
        except Exception as exc:  # a broken drop-in file must not break the harness
            BROKEN[kind][info.name] = _reason(exc)
    for folder in extra_dirs(kind):
        for path in sorted(folder.glob("*.py")):
            if path.name.startswith("_"):
                continue
            key = str(path.resolve())
            if key in _LOADED[kind]:
                continue
            _LOADED[kind].add(key)
            try:
                _import_file(kind, path)
            except Exception as exc:
                BROKEN[kind][path.stem] = _reason(exc)


def load_suites() -> None:
    """Imports every suite file once, registering its cases."""
    _load("suites")


def load_methods() -> None:
    """Imports every method adapter file once, registering its methods."""
    _load("methods")
