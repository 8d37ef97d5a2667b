"""Storage: atomic writes and pickle-free reads."""

from __future__ import annotations

import numpy as np
import pytest

from interpbench.storage import atomic_write_bytes, read_npz


def test_read_npz_refuses_pickled_arrays(tmp_path) -> None:
    """Caches and runs are never unpickled: an object array in an npz file is refused."""
    path = tmp_path / "evil.npz"
    np.savez(path, a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match="pickle"):
        read_npz(path)


def test_atomic_write_leaves_no_temporary_files(tmp_path) -> None:
    target = tmp_path / "sub" / "f.bin"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["f.bin"]
