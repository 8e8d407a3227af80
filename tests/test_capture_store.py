"""CaptureStore with model windows (hil run's default) and optional compressed frames:
written, checked on disk, read back, resumed; format version 3 (typed attributes with
units), files of versions 1 and 2 (tests/data, written by the code before version 3), and
damaged or malicious headers refused with the file and the attribute named."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from hil.runs import (
    CaptureFormatError,
    CaptureStore,
    CaptureWriteError,
    read_capture_header,
    read_captures,
)

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
        assert f.attrs["format_version"] == 3 and "frames" not in f
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


# ------------------------------------------------------------------ format version 3
DATA = Path(__file__).resolve().parent / "data"


def test_attributes_are_typed_with_units(tmp_path):
    """Version 3: the run's attributes and the window boxes are native values, not JSON
    text; times, pixels and counts carry units (dataset ``units``, attribute ``x_units``)."""
    p = tmp_path / "c.h5"
    with CaptureStore.create(p, frame_shape=FRAMES, frame_dtype=np.uint16,
                             pattern_shape=PATTERNS, window_shape=WINDOWS, window_boxes=BOXES,
                             attrs={"dataset": "mnist", "split": "test", "seed": None,
                                    "exposure_s": 0.002}, store_frames=True) as s:
        frames, windows, patterns = _capture(0)
        s.append(0, frames, patterns, windows=windows)
    with h5py.File(p, "r") as f:
        a = f.attrs
        assert a["format_version"] == 3
        assert a["dataset"] == "mnist" and a["split"] == "test" and "seed" not in a
        assert a["exposure_s"].dtype == np.float64 and a["exposure_s"] == 0.002
        assert a["window_boxes"].dtype == np.int64 and a["window_boxes"].tolist() == BOXES
        assert a["window_boxes_units"] == "px" and a["created_units"] == "s"
        assert f["windows"].attrs["units"] == "counts" and f["timestamp"].attrs["units"] == "s"
        assert f["drift_x_px"].attrs["units"] == "px"
        assert f["patterns"].attrs["units"] == "sqrt(counts)"
        assert f["frames"].shuffle and f["windows"].compression == "gzip"
    head = read_capture_header(p)
    assert head.version == 3 and head.n_complete == 1
    assert head.attrs == {"dataset": "mnist", "split": "test", "exposure_s": 0.002}
    assert head.window_boxes.tolist() == BOXES and head.window_shape == WINDOWS
    assert head.units["timestamp"] == "s" and head.units["window_boxes"] == "px"
    assert head.created_by and head.created_by.startswith(("0.", "unknown"))


def test_a_run_attribute_that_is_no_plain_value_is_refused(tmp_path):
    with pytest.raises(ValueError, match="'config'.*dict"):
        CaptureStore.create(tmp_path / "c.h5", frame_shape=FRAMES, frame_dtype=np.uint16,
                            pattern_shape=PATTERNS, window_shape=WINDOWS, window_boxes=BOXES,
                            attrs={"config": {"a": 1}})
    assert not (tmp_path / "c.h5").exists()


def _old_capture(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The captures in tests/data/captures_v{1,2}.h5 (written by hil.runs of format 2)."""
    rng = np.random.default_rng(100 + i)
    frames = rng.poisson(40, (2, 24, 24)).astype(np.uint16)
    boxes = [[0, 4, 10, 5, 11], [1, 4, 10, 5, 11]]
    windows = np.stack([frames[k, r0:r1, c0:c1] for k, r0, r1, c0, c1 in boxes])
    return frames, windows, rng.random((2, 4, 4), dtype=np.float32)


def test_a_version_2_file_is_read_and_resumed_as_it_is(tmp_path):
    """tests/data/captures_v2.h5 was written by the code before version 3 (JSON attributes,
    gzip-4 frames): read, then resumed and appended to without changing its format."""
    p = tmp_path / "c.h5"
    shutil.copy(DATA / "captures_v2.h5", p)
    head = read_capture_header(p)
    assert (head.version, head.n_complete) == (2, 3)
    assert head.attrs == {"dataset": "mnist", "split": "test", "seed": 7}
    assert head.window_boxes.tolist() == [[0, 4, 10, 5, 11], [1, 4, 10, 5, 11]]
    caps = read_captures(p, frames=True)
    for i in range(3):
        frames, windows, patterns = _old_capture(i)
        np.testing.assert_array_equal(caps["frames"][i], frames)
        np.testing.assert_array_equal(caps["windows"][i], windows)
        np.testing.assert_array_equal(caps["patterns"][i], patterns)
    assert caps["drift_x_px"].tolist() == [0.0, 0.25, 0.5]
    np.testing.assert_array_equal(caps["dark"], np.full((24, 24), 2.5, np.float32))
    with CaptureStore.resume(p) as s:
        frames, windows, patterns = _old_capture(3)
        assert s.append(3, frames, patterns, windows=windows) == 4
    assert read_capture_header(p).version == 2
    np.testing.assert_array_equal(read_captures(p, frames=True)["frames"][3], frames)


def test_a_version_1_file_is_read_and_resumed(tmp_path):
    p = tmp_path / "c.h5"
    shutil.copy(DATA / "captures_v1.h5", p)
    head = read_capture_header(p)
    assert (head.version, head.n_complete, head.window_shape) == (1, 2, None)
    assert head.attrs == {"dataset": "fashion", "split": "train", "seed": None}
    with CaptureStore.resume(p) as s:
        frames, _, patterns = _old_capture(2)
        assert s.append(2, frames, patterns) == 3
    caps = read_captures(p, frames=True)
    assert "windows" not in caps and "drift_x_px" not in caps
    for i in range(3):
        np.testing.assert_array_equal(caps["frames"][i], _old_capture(i)[0])


def _damaged(tmp_path, edit) -> Path:
    """A genuine one-capture store, copied into a file whose format allows attributes of
    any size (libver "latest"), then edited."""
    good, p = tmp_path / "good.h5", tmp_path / "c.h5"
    with _create(good, store_frames=False) as s:
        frames, windows, patterns = _capture(0)
        s.append(0, None, patterns, windows=windows)
    with h5py.File(good, "r") as src, h5py.File(p, "w", libver="latest") as f:
        for name in src:
            src.copy(src[name], f, name=name)
        for k, v in src.attrs.items():
            f.attrs[k] = v
        edit(f)
    return p


@pytest.mark.parametrize(("edit", "message"), [
    # a count given as text, or beyond what is stored: read silently before version 3
    (lambda f: f.attrs.__setitem__("n_complete", "1"),
     r"'n_complete'.*expected an integer, got str"),
    (lambda f: f.attrs.__setitem__("n_complete", 5), r"holds 1 captures, fewer than the 5"),
    (lambda f: f.attrs.__setitem__("n_complete", -1), r"'n_complete'.*>= 0"),
    # a huge array where a small one belongs: refused before it is read
    (lambda f: f.attrs.__setitem__("window_boxes", np.zeros((40_000, 5), np.int64)),
     r"'window_boxes'.*at most 320 elements.*refused unread"),
    (lambda f: f.attrs.__setitem__("frame_shape", np.zeros(100_000)),
     r"'frame_shape'.*refused unread"),
    (lambda f: f.attrs.__setitem__("window_boxes", np.asarray(BOXES, np.float64)),
     r"'window_boxes'.*integer array.*float64"),
    (lambda f: f.attrs.__setitem__("window_boxes", [[0, 10, 20, 12, 99], BOXES[1]]),
     r"'window_boxes'.*row 0.*10x10 box"),
    (lambda f: f.attrs.__setitem__("pattern_shape", [2, 8]), r"'pattern_shape'.*shape \(3\)"),
    (lambda f: f.attrs.__setitem__("format_version", 99), r"version 99.*newer"),
    (lambda f: f.attrs.__setitem__("format", "something-else"), r"not a capture file"),
    (lambda f: f.attrs.__setitem__("seed", "x" * 100_000), r"'seed'.*at most 65536 char"),
    (lambda f: f.attrs.__setitem__("window_shape", [2, 10, 11]), r"'window_boxes'.*10x11 box"),
    (lambda f: f.create_dataset("dark", data=np.zeros((3, 3))), r"'dark'.*expected float"),
])
def test_a_damaged_or_malicious_header_is_refused_naming_file_and_attribute(tmp_path, edit,
                                                                          message):
    p = _damaged(tmp_path, edit)
    for read in (read_captures, read_capture_header, CaptureStore.resume):
        with pytest.raises(CaptureFormatError, match=message) as info:
            read(p)
        assert str(p) in str(info.value)


def test_a_version_2_file_with_broken_json_is_refused(tmp_path):
    p = tmp_path / "c.h5"
    shutil.copy(DATA / "captures_v2.h5", p)
    with h5py.File(p, "a") as f:
        f.attrs["window_boxes"] = "[[0, 4, 10"
    with pytest.raises(CaptureFormatError, match=r"'window_boxes'.*expected JSON"):
        read_captures(p)


def test_a_corrupt_compressed_windows_chunk_fails_the_append(tmp_path, monkeypatch):
    """The windows are compressed now (gzip + shuffle): their read-back inflates and
    un-shuffles the chunk on disk, so a flipped byte in it is caught too."""
    p = tmp_path / "c.h5"
    s = _create(p, store_frames=False)
    frames, windows, patterns = _capture(0)
    s.append(0, None, patterns, windows=windows)
    with h5py.File(p, "r") as f:  # the size of a compressed windows chunk
        wsize = f["windows"].id.get_chunk_info(0).size
    real = os.pread

    def flipped(fd, n, offset):
        data = bytearray(real(fd, n, offset))
        if abs(n - wsize) < 40:  # the windows chunk (patterns: 512 bytes, raw)
            data[-1] ^= 0x01
        return bytes(data)

    monkeypatch.setattr(os, "pread", flipped)
    with pytest.raises(CaptureWriteError, match="capture 2 could not be written"):
        s.append(1, None, _capture(1)[2], windows=_capture(1)[1])
    monkeypatch.undo()
    assert read_captures(p)["index"].tolist() == [0]


def test_a_new_store_is_synced_before_it_appears(tmp_path, monkeypatch):
    """create goes through simulation.atomic: the empty store is fsync'ed under a temporary
    name, then renamed (a crash right after create cannot leave an unsynced file)."""
    import simulation.atomic

    synced = []
    real = os.fsync

    def fsync(fd):
        synced.append(Path(os.readlink(f"/proc/self/fd/{fd}")).name)
        real(fd)

    monkeypatch.setattr(simulation.atomic.os, "fsync", fsync)
    with _create(tmp_path / "c.h5", store_frames=False):
        pass
    assert synced and synced[0].startswith(".c.h5.") and synced[0].endswith(".tmp")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.h5"]
