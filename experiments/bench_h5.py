"""Bytes per capture and write throughput of ``captures.h5`` for each HDF5 filter.

``python -m experiments.bench_h5 [--n 12] [--repeat 3] [--bench sim-realistic]`` captures
``--n`` digits through the encoder on a simulated bench (``calibration.imaging.BenchImager``:
the render with shot/read noise and the bench's flaws, so the frames compress as a camera's
do, not as blank frames), then writes the same captures, one capture per chunk, to a fresh
HDF5 file for every filter, the way ``CaptureStore.append`` writes them (resize, write,
flush after every capture), ``--repeat`` times over. It does this for the full frames
(``--store-frames``: K×H×W of the camera dtype per capture) and for the model windows
(C×h×w, what every run stores), and prints one JSON document:

* ``bytes_per_capture``: the stored chunk sizes over the captures (HDF5's own overhead
  left out: it is the same for every filter);
* ``captures_per_s`` (wall) and ``cpu_s_per_capture`` (process CPU time, less disturbed by
  other jobs on the machine);
* ``*_vs_none``: ratios against the uncompressed layout measured in the same process.

Then the real ``CaptureStore.append`` (with its on-disk read-back check) is timed, as the
path ``hil run`` takes, for a windows-only store (windows uncompressed, then gzip-1 with
shuffle) and a windows + frames store (the old gzip-4 frames, then gzip-1 with shuffle
for both): ``file_bytes_per_capture`` (the whole file over n) and ``captures_per_s``.
Everything is written under a temporary directory and removed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np

FILTERS: dict[str, dict[str, Any]] = {
    "none": {},
    "lzf": {"compression": "lzf"},
    "lzf+shuffle": {"compression": "lzf", "shuffle": True},
    "gzip-1": {"compression": "gzip", "compression_opts": 1},
    "gzip-1+shuffle": {"compression": "gzip", "compression_opts": 1, "shuffle": True},
    "gzip-4": {"compression": "gzip", "compression_opts": 4},
    "gzip-4+shuffle": {"compression": "gzip", "compression_opts": 4, "shuffle": True},
}


def realistic_captures(n: int, bench_name: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray,
                                                                         np.ndarray]:
    """``(frames (n, K, H, W), windows (n, C, h, w), patterns (n, C, N, N))`` of ``n``
    digits captured on the simulated bench ``bench_name``."""
    from calibration.imaging import BenchImager
    from devices import open_bench
    from simulation.datasets import load_dataset

    images = np.asarray(load_dataset("digits", "test", n=n, seed=seed)[0], dtype=np.float32)
    with open_bench(bench_name) as bench:
        imager = BenchImager(bench).prepare()
        batch = imager.capture(images)
        frames = np.asarray(batch.frames)
        windows = np.stack([imager.windows(f) for f in frames])
        return frames, windows, np.asarray(batch.patterns)


def time_filter(data: np.ndarray, opts: dict[str, Any], folder: Path,
                repeat: int) -> dict[str, float]:
    """Append ``data`` (n, ...) one row per chunk, flushing after each, ``repeat`` times."""
    n, shape = data.shape[0], data.shape[1:]
    wall = cpu = 0.0
    stored = 0
    for r in range(repeat):
        path = folder / f"f{r}.h5"
        with h5py.File(path, "w") as f:
            d = f.create_dataset("x", shape=(0, *shape), maxshape=(None, *shape),
                                 dtype=data.dtype, chunks=(1, *shape), **opts)
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(n):
                d.resize(i + 1, axis=0)
                d[i] = data[i]
                f.flush()
            wall += time.perf_counter() - t0
            cpu += time.process_time() - c0
            stored = sum(d.id.get_chunk_info(k).size for k in range(d.id.get_num_chunks()))
        path.unlink()
    total = n * repeat
    return {"bytes_per_capture": stored / n, "captures_per_s": total / wall,
            "cpu_s_per_capture": cpu / total}


def time_store(frames: np.ndarray, windows: np.ndarray, patterns: np.ndarray, folder: Path,
               store_frames: bool, repeat: int, windows_filter: str,
               frames_filter: str) -> dict[str, Any]:
    """``CaptureStore.append`` (the run's path, read-back check included), with the
    windows and frames stored with the named ``FILTERS``."""
    import hil.capture_store as store_mod

    saved = store_mod.WINDOWS_FILTER, store_mod.FRAMES_FILTER
    store_mod.WINDOWS_FILTER, store_mod.FRAMES_FILTER = (FILTERS[windows_filter],
                                                         FILTERS[frames_filter])
    try:
        row = _time_store(store_mod.CaptureStore, frames, windows, patterns, folder,
                          store_frames, repeat)
    finally:
        store_mod.WINDOWS_FILTER, store_mod.FRAMES_FILTER = saved
    return {"windows_filter": windows_filter,
            "frames_filter": frames_filter if store_frames else None, **row}


def _time_store(CaptureStore: Any, frames: np.ndarray, windows: np.ndarray,  # noqa: N803
                patterns: np.ndarray, folder: Path, store_frames: bool,
                repeat: int) -> dict[str, float]:

    n = frames.shape[0]
    wall = cpu = 0.0
    size = 0
    for r in range(repeat):
        path = folder / f"s{r}.h5"
        boxes = [[k, 0, windows.shape[2], 0, windows.shape[3]] for k in range(windows.shape[1])]
        with CaptureStore.create(path, frame_shape=frames.shape[1:], frame_dtype=frames.dtype,
                                 pattern_shape=patterns.shape[1:],
                                 window_shape=windows.shape[1:], window_boxes=boxes,
                                 store_frames=store_frames) as s:
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(n):
                s.append(i, frames[i] if store_frames else None, patterns[i],
                         windows=windows[i])
            wall += time.perf_counter() - t0
            cpu += time.process_time() - c0
        size = path.stat().st_size
        path.unlink()
    return {"file_bytes_per_capture": size / n, "captures_per_s": n * repeat / wall,
            "cpu_s_per_capture": cpu / (n * repeat)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=12, help="captures (default 12)")
    ap.add_argument("--repeat", type=int, default=3, help="writes of the set per filter")
    ap.add_argument("--bench", default="sim-realistic", help="simulated bench (default "
                    "sim-realistic: noise and flaws)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    frames, windows, patterns = realistic_captures(args.n, args.bench)
    capture_s = time.perf_counter() - t0
    doc: dict[str, Any] = {
        "bench": args.bench, "n": args.n, "repeat": args.repeat,
        "frames_shape": list(frames.shape[1:]), "windows_shape": list(windows.shape[1:]),
        "dtype": str(frames.dtype), "frame_max": int(frames.max()),
        "simulated_capture_s": capture_s, "load_average": list(os.getloadavg())}
    with tempfile.TemporaryDirectory(prefix="bench_h5_") as tmp:
        folder = Path(tmp)
        for what, data in (("frames", frames), ("windows", windows)):
            rows = {name: time_filter(data, opts, folder, args.repeat)
                    for name, opts in FILTERS.items()}
            base = rows["none"]
            for r in rows.values():
                r["bytes_vs_none"] = r["bytes_per_capture"] / base["bytes_per_capture"]
                r["captures_per_s_vs_none"] = r["captures_per_s"] / base["captures_per_s"]
                r["cpu_vs_none"] = r["cpu_s_per_capture"] / base["cpu_s_per_capture"]
            doc[what] = rows
        doc["capture_store"] = [
            time_store(frames, windows, patterns, folder, store_frames, args.repeat, wf, ff)
            for store_frames, wf, ff in (
                (False, "none", "none"), (False, "gzip-1+shuffle", "none"),
                (True, "none", "gzip-4"), (True, "gzip-1+shuffle", "gzip-1+shuffle"))]
    json.dump(doc, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
