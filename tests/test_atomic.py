"""simulation.atomic: files appear whole or not at all, with the user's umask."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from simulation.atomic import atomic_open, atomic_path, write_text_atomic


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_mode_follows_the_umask_not_mkstemp(tmp_path, umask_027):
    p = write_text_atomic(tmp_path / "a.json", "{}")
    assert _mode(p) == 0o640  # mkstemp would give 0600


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    p = tmp_path / "keep.txt"
    p.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(p, "w") as f:
        f.write("half")
        raise RuntimeError("disk gone")
    assert p.read_text() == "old"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["keep.txt"]


def test_atomic_path_for_writers_that_open_the_file(tmp_path):
    p = tmp_path / "m.npz"
    with atomic_path(p) as tmp:
        assert tmp.exists() and not p.exists()
        np.savez(open(tmp, "wb"), a=np.arange(3))
    assert np.load(p)["a"].tolist() == [0, 1, 2]
    assert [x.name for x in tmp_path.iterdir()] == ["m.npz"]


def test_read_mode_is_refused(tmp_path):
    with pytest.raises(ValueError, match="mode"), atomic_open(tmp_path / "x", "r"):
        pass


@pytest.mark.parametrize("writer", ["mask", "decoder", "json", "calibration"])
def test_every_output_writer_uses_the_umask(tmp_path, umask_027, writer):
    if writer == "mask":
        from hil.masks import save_mask, vortex_mask

        p = save_mask(vortex_mask((1, 3)), tmp_path / "m.npz")
    elif writer == "decoder":
        from simulation import DualVortexEncoder, LinearDecoder, speckle

        enc = DualVortexEncoder()
        imgs = speckle(64, 15, seed=0)
        p = tmp_path / "d.pt"
        LinearDecoder().fit(enc(imgs), imgs, method="ridge", encoder=enc).save(p)
    elif writer == "calibration":
        from calibration import CalibrationSet

        p = CalibrationSet().save(tmp_path / "cal")
        assert list(CalibrationSet.load(p).steps()) == []
    else:
        from hil.runs import write_json_atomic

        p = write_json_atomic(tmp_path / "r.json", {"a": 1})
    assert _mode(p) == 0o640
