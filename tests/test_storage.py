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


def test_atomic_write_gives_plain_file_permissions(tmp_path) -> None:
    import os
    import stat

    from interpbench.storage import atomic_write_bytes

    old = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "a.csv", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.csv").stat().st_mode) == 0o640  # 0666 less umask, not mkstemp's 0600
