"""Per-frame cost of the simulated camera: slmsuite's render (before) against ours (after).

For each bench (``sim.toml``, ``sim-realistic.toml``) and in one process, so the ratios
share the machine's load: CPU seconds (``time.process_time``, all threads) and wall
seconds per ``camera.get_image()`` of a random phase pattern, for

* ``slmsuite``: the bench without ``[sim_flaws]``, far field from slmsuite's
  ``SimulatedCamera._render`` (the code path every frame took before ``devices.sim_render``);
* ``fast``: the same bench through ``devices.sim_render``;
* ``fast+flaws``: the bench file as shipped (``sim-realistic`` has every flaw on).

Also the cost of a 10,000-capture set (one get_image per capture) at that rate, and the
load average. ``--workers`` sets the fast render's FFT workers (``FarFieldRenderer.workers``,
default 1); slmsuite's render is numpy's, single-threaded. Usage:
``python -m experiments.bench_sim_camera [--frames N] [--workers W]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from typing import Any

import numpy as np
import tomllib

from devices import open_bench
from devices.config import resolve_bench_path

__all__ = ["frame_cost", "run"]


def _bench_dict(name: str, flaws: bool) -> dict[str, Any]:
    raw = tomllib.loads(resolve_bench_path(name).read_text())
    raw = copy.deepcopy(raw)
    if not flaws:
        raw.pop("sim_flaws", None)
    raw["camera"]["frame_latency_s"] = 0.0  # CPU cost only: no simulated waits
    return raw


def frame_cost(name: str, renderer: str, flaws: bool, frames: int,
               workers: int = 1) -> dict[str, float]:
    """Median-free mean CPU-s and wall-s per frame (after one warm-up frame)."""
    with open_bench(_bench_dict(name, flaws)) as b:
        b.camera.renderer = renderer
        b.camera.fast_renderer().workers = workers
        rng = np.random.default_rng(0)
        pats = [rng.uniform(0, 2 * np.pi, (32, 32)).astype(np.float32) for _ in range(4)]
        b.slm.set_phase(pats[0], settle=False)
        b.camera.get_image()  # warm-up: caches, FFT plans
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for i in range(frames):
            b.slm.set_phase(pats[i % 4], settle=False)
            b.camera.get_image()
        cpu = (time.process_time() - cpu0) / frames
        wall = (time.perf_counter() - wall0) / frames
    return {"cpu_s_per_frame": cpu, "wall_s_per_frame": wall, "frames": frames,
            "images_per_cpu_s": 1.0 / cpu, "cpu_h_per_10k": cpu * 1e4 / 3600}


def run(frames: int = 10, workers: int = 1) -> dict[str, Any]:
    out: dict[str, Any] = {"load_avg_start": os.getloadavg(), "fft_workers": workers}
    for name, n in (("sim.toml", frames * 3), ("sim-realistic.toml", frames)):
        r = {"slmsuite": frame_cost(name, "slmsuite", False, n),
             "fast": frame_cost(name, "fast", False, n, workers),
             "fast+flaws": frame_cost(name, "fast", True, n, workers)}
        r["speedup_cpu"] = r["slmsuite"]["cpu_s_per_frame"] / r["fast"]["cpu_s_per_frame"]
        out[name] = r
    out["load_avg_end"] = os.getloadavg()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--workers", type=int, default=1,
                    help="FFT workers of the fast render (default 1)")
    a = ap.parse_args()
    print(json.dumps(run(a.frames, a.workers), indent=1))


if __name__ == "__main__":
    main()
