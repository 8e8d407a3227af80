"""CaptureStore with model windows (hil run's default) and optional gzip-compressed frames:
written, checked on disk, read back, resumed."""

from __future__ import annotations

import errno
import os

import h5py
import numpy as np
import pytest

from hil.runs import CaptureStore, CaptureWriteError, read_captures

FRAMES = (2, 64, 64)
WINDOWS = (2, 10, 10)
PATTERNS = (2, 8, 8)
BOXES = [[0, 10, 20, 12, 22], [1, 10, 20, 12, 22]]


def _capture(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(i)
    frames = rng.poisson(40, FRAMES).astype(np.uint16)  # noisy counts, as a camera's
    windows = np.stack([frames[k, r0:r1, c0:c1] for k, r0, r1, c0, c1 in BOXES])
    return frames, windows, rng.random(PATTERNS, dtype=np.float32)


def _create(path, store_frames: bool) -> CaptureStore:
    return CaptureStore.create(path, frame_shape=FRAMES, frame_dtype=np.uint16,
                               pattern_shape=PATTERNS, window_shape=WINDOWS,
                               window_boxes=BOXES, store_frames=store_frames)


def test_windows_only_store_is_small_and_refuses_to_invent_frames(tmp_path):
    p = tmp_path / "c.h5"
    with _create(p, store_frames=False) as s:
        assert s.has_windows and not s.has_frames
        for i in range(3):
            frames, windows, patterns = _capture(i)
            s.append(i, None, patterns, windows=windows)
    caps = read_captures(p)
    for i in range(3):
        np.testing.assert_array_equal(caps["windows"][i], _capture(i)[1])
        np.testing.assert_array_equal(caps["patterns"][i], _capture(i)[2])
    with pytest.raises(ValueError, match="--store-frames"):
        read_captures(p, frames=True)
    with h5py.File(p, "r") as f:
        assert f.attrs["format_version"] == 2 and "frames" not in f
    with CaptureStore.resume(p) as s, pytest.raises(ValueError, match="windows"):
        s.append(3, _capture(3)[0], _capture(3)[2])  # a windows store needs windows


def test_frames_on_request_are_gzip_compressed_checked_and_resumed(tmp_path):
    p = tmp_path / "c.h5"
    with _create(p, store_frames=True) as s:
        for i in range(2):
            frames, windows, patterns = _capture(i)
            s.append(i, frames, patterns, windows=windows)
    with CaptureStore.resume(p) as s:
        frames, windows, patterns = _capture(2)
        assert s.append(2, frames, patterns, windows=windows) == 3
    caps = read_captures(p, frames=True)
    for i in range(3):
        np.testing.assert_array_equal(caps["frames"][i], _capture(i)[0])
    with h5py.File(p, "r") as f:
        assert f["frames"].compression == "gzip"
        raw = f["frames"].id.get_chunk_info(0).size
    assert raw < np.prod(FRAMES) * 2  # stored compressed


def test_a_compressed_chunk_that_reads_back_wrong_fails_the_append(tmp_path, monkeypatch):
    """The read-back check inflates the chunk found on disk: a corrupt one is caught."""
    p = tmp_path / "c.h5"
    s = _create(p, store_frames=True)
    frames, windows, patterns = _capture(0)
    s.append(0, frames, patterns, windows=windows)
    real = os.pread

    def flipped(fd, n, offset):
        data = bytearray(real(fd, n, offset))
        if n > 1000:  # the compressed frames chunk (windows: 400 bytes, patterns: 512)
            data[n // 2] ^= 0xFF
        return bytes(data)

    monkeypatch.setattr(os, "pread", flipped)
    frames, windows, patterns = _capture(1)
    with pytest.raises(CaptureWriteError) as info:
        s.append(1, frames, patterns, windows=windows)
    assert info.value.errno == errno.EIO
    monkeypatch.undo()
    caps = read_captures(p, frames=True)
    assert caps["index"].tolist() == [0]  # the failed capture is not counted
