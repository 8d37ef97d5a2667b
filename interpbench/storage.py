"""Atomic, pickle-free file writing and reading (npz, JSON, Parquet) and content hashing."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Writes `data` to `path` so readers see the old file or the new one, never half.

    The file gets the permissions a plain `open` would give it (0666 less the umask),
    not mkstemp's owner-only 0600: leaderboards and reports are meant to be shared.
    `durable=False` skips the fsync before the rename: still atomic for a killed
    process, but after a power loss the file may be empty, so callers that skip it must
    detect that on reading (run cells record their files' hashes).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    """The process umask (reading it means setting it; it is put back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_json(path: Path, obj: Any, *, durable: bool = True, indent: int | None = 1) -> None:
    """Atomically writes `obj` as JSON (`durable` as in `atomic_write_bytes`).

    `indent=None` writes compact JSON with the C encoder (Python's indenting encoder is
    several times slower; run cells are written by the thousand).
    """
    text = json.dumps(obj, indent=indent, default=_json_default, separators=None if indent else (",", ":"))
    atomic_write_bytes(path, text.encode(), durable=durable)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """Serialises numeric arrays to compressed npz bytes (object arrays are refused)."""
    for k, a in arrays.items():
        if np.asarray(a).dtype == object:
            raise TypeError(f"array {k!r} has dtype object; only numeric arrays are stored")
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return buf.getvalue()


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Loads every array of an npz file eagerly; numpy refuses pickled (object) arrays by default."""
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def content_hash(obj: Any) -> str:
    """Stable sha256 (hex, 16 chars) of a JSON-serialisable object."""
    blob = json.dumps(obj, sort_keys=True, default=_json_default).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def jsonable(value: Any) -> Any:
    """Token or output values as JSON scalars (numpy scalars unwrapped)."""
    if isinstance(value, np.generic):
        return value.item()
    return value
