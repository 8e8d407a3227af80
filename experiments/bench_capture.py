"""Capture throughput of the ``hil run`` path against the bound the bench timing allows,
and the bytes each capture costs on disk.

``python -m experiments.bench_capture [--n 60] [--out runs/bench_capture]`` runs
``hil.session.run_session`` (the code behind ``hil run``) on a small simulated bench with
realistic timing, serial and pipelined in the same process, then once more with
``store_frames`` (full frames, gzip), and prints one JSON document.

The bench: ``[slm] refresh_hz = 60`` (a write lands on the next refresh),
``settle_time_s = 0.010``, ``[camera] frame_rate_hz = 100``, exposure 1 ms, dual vortex
in sequential mode (K = 2 frames per image), noise on. Small SLM and camera (256×256) so
that the simulated render stays inside a frame period.

The bound
---------
Every frame needs its own pattern on the SLM, settled, for the whole exposure:

* a pattern lands on a refresh tick (period R = 1/refresh_hz = 16.7 ms) and must then
  settle (S = 10 ms) and be exposed (E = 1 ms) before the next pattern may land, so two
  landings are at least ``R·ceil((S + E)/R)`` apart (= R here: 11 ms fit in one refresh);
* the camera starts at most one exposure per frame period ``P = max(1/frame_rate_hz, E)``
  (10 ms), so landings are also at least ``R·ceil(P/R)`` apart (= R);
* so one frame per ``T = R·max(ceil((S + E)/R), ceil(P/R))`` = 16.7 ms: 60 frames/s, and
  ``60 / K`` = **30 images/s** for the two-frame dual vortex.

The old serial loop writes the next pattern only once the frame has been read out
(readout ends P after the exposure starts), so its landings are ``R·ceil((S + P)/R)`` =
33.3 ms apart: 15 images/s at best. The pipelined loop writes the next pattern as soon as
the camera says the exposure is over (``Camera.signals_exposure_end``; on a real camera,
its stated frame timing), composes the patterns in a thread ahead, and stores while the
SLM settles.

Two cameras: ``physics`` is the simulated bench as it is (slmsuite's far-field render,
noise, flaws); ``stand-in`` keeps the same bench, devices, timing and fault handling but
replaces the render by a copy of the SLM's grey levels (no physics), so the figure
measures the capture path itself against the bound. Serial and pipelined run on both.

The simulated camera takes a snapshot of the SLM when an exposure starts, says the
exposure is over after E, and renders the frame from the snapshot during its readout
(``devices.sim_camera``), so the render holds no SLM time. It still delays the frame when
it lasts longer than the readout: the next exposure starts at least ``max(P, E + W)``
after the last (W: the render's wall time), which gives a second bound,
``T_W = R·max(ceil((S + E)/R), ceil(P/R), ceil((E + W)/R))``, equal to the first while
``E + W`` fits in one refresh period. The output carries W (``render_wall_s``, measured in
the same process), the render's CPU time and both fractions for the physics camera.
Images/s is measured from the capture timestamps in ``captures.h5``:
``(n − 1) / (t_last − t_first)``; bytes per capture: the size of ``captures.h5`` over n,
against the full frames the old layout stored uncompressed (K·H·W·2 bytes + patterns).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REFRESH_HZ, SETTLE_S, FRAME_RATE_HZ, EXPOSURE_S, FRAMES_PER_IMAGE = 60.0, 0.010, 100.0, 1e-3, 2


def timed_bench(shape: int = 256, seed: int = 3) -> dict[str, Any]:
    """The benchmark's simulated bench (see the module docstring)."""
    return {
        "name": "bench-capture", "seed": seed, "flaws": False,
        "slm": {"backend": "sim", "shape": [shape, shape], "refresh_hz": REFRESH_HZ,
                "settle_time_s": SETTLE_S},
        "camera": {"backend": "sim", "shape": [shape, shape], "exposure_s": EXPOSURE_S,
                   "frame_rate_hz": FRAME_RATE_HZ},
    }


def bound_images_per_s(refresh_hz: float = REFRESH_HZ, settle_s: float = SETTLE_S,
                       frame_rate_hz: float = FRAME_RATE_HZ, exposure_s: float = EXPOSURE_S,
                       frames_per_image: int = FRAMES_PER_IMAGE, render_s: float = 0.0
                       ) -> float:
    """``1 / (K·T)``, ``T = R·max(ceil((S + E)/R), ceil(P/R), ceil((E + W)/R))`` with
    ``W = render_s`` (module docstring; W = 0: the bound of the timings alone)."""
    r = 1.0 / refresh_hz
    p = max(1.0 / frame_rate_hz, exposure_s)
    t = r * max(math.ceil((settle_s + exposure_s) / r - 1e-9), math.ceil(p / r - 1e-9),
                math.ceil((exposure_s + render_s) / r - 1e-9))
    return 1.0 / (frames_per_image * t)


def _decoder(path: Path) -> Path:
    from simulation import DualVortexEncoder, LinearDecoder, speckle

    enc = DualVortexEncoder()
    imgs = speckle(400, 15, seed=0)
    LinearDecoder(alpha=1.0, device="cpu").fit(enc(imgs), imgs, encoder=enc).save(path)
    return path


def _stand_in(bench: Any) -> None:
    """Replace the camera's render by a copy of the SLM's grey levels at up to half the
    camera's full scale (timing kept; the run's saturation watch stays quiet)."""
    cam, slm = bench.camera, bench.slm
    rows, cols = cam.shape
    per_level = max(1, (2**cam.bitdepth - 1) // (2 * (2**slm.bitdepth - 1)))

    def render_frame(state: Any = None) -> np.ndarray:
        shown = slm.display if state is None else state.displayed.display  # exposure start
        d = np.asarray(shown)[:rows, :cols].astype(np.uint32)
        return (d * per_level).astype(cam.dtype)

    cam.render_frame = render_frame


def render_cost(frames: int = 10) -> dict[str, float]:
    """CPU and wall seconds of one simulated render (exposure snapshot included) on the
    benchmark bench, after one warm-up render."""
    from devices import open_bench

    with open_bench(timed_bench()) as bench:
        cam = bench.camera
        cam.render_frame()
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(frames):
            cam.render_frame(cam.exposure_state())
        return {"render_cpu_s": (time.process_time() - cpu) / frames,
                "render_wall_s": (time.perf_counter() - wall) / frames}


def _one_run(out: Path, decoder: Path, n: int, *, pipelined: bool, store_frames: bool,
             camera: str) -> dict[str, Any]:
    from devices import open_bench
    from hil.runs import CAPTURES_FILE, read_captures
    from hil.session import RunConfig, run_session

    if out.exists():
        shutil.rmtree(out)
    with open_bench(timed_bench()) as bench:
        if camera == "stand-in":
            _stand_in(bench)
        cfg = RunConfig(bench=bench, decoder=decoder, out=out, dataset="digits", n=n,
                        seed=None, progress=False, pipelined=pipelined,
                        store_frames=store_frames)
        t0 = time.perf_counter()
        status = run_session(cfg)
        wall = time.perf_counter() - t0
    caps = read_captures(out / CAPTURES_FILE)
    ts = np.sort(caps["timestamp"])
    rate = (len(ts) - 1) / float(ts[-1] - ts[0])
    size = (out / CAPTURES_FILE).stat().st_size
    res = json.loads((out / "results.json").read_text())
    return {"camera": camera, "pipelined": pipelined, "store_frames": store_frames,
            "status": status,
            "images_per_s": rate, "bytes_per_capture": size / len(ts),
            "ssim_mean": res.get("ssim_mean"), "wall_s_with_decode_and_report": wall}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=60, help="images per run (default 60)")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_capture"))
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    dec = _decoder(args.out / "decoder.pt")
    render = render_cost()
    bound = bound_images_per_s()
    bound_w = bound_images_per_s(render_s=render["render_wall_s"])
    runs = [_one_run(args.out / f"{cam}-{mode}", dec, args.n, pipelined=mode == "pipelined",
                     store_frames=False, camera=cam)
            for cam in ("stand-in", "physics") for mode in ("serial", "pipelined")]
    runs.append(_one_run(args.out / "physics-frames", dec, args.n, pipelined=True,
                         store_frames=True, camera="physics"))
    shape = timed_bench()["camera"]["shape"]
    full = FRAMES_PER_IMAGE * shape[0] * shape[1] * 2 + FRAMES_PER_IMAGE * 32 * 32 * 4
    for r in runs:
        r["fraction_of_bound"] = r["images_per_s"] / bound
        if r["camera"] == "physics":
            r["fraction_of_bound_with_render"] = r["images_per_s"] / bound_w
    doc = {"bound_images_per_s": bound, "bound_with_render_images_per_s": bound_w,
           "timing": {
               "refresh_hz": REFRESH_HZ, "settle_s": SETTLE_S, "frame_rate_hz": FRAME_RATE_HZ,
               "exposure_s": EXPOSURE_S, "frames_per_image": FRAMES_PER_IMAGE},
           "old_layout_bytes_per_capture": full, "runs": runs,
           "pipelined_over_serial": {
               "stand-in": runs[1]["images_per_s"] / runs[0]["images_per_s"],
               "physics": runs[3]["images_per_s"] / runs[2]["images_per_s"]},
           **render,
           "render_cost_after_runs": render_cost(),
           "load_average_start": load_start,
           "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}
    json.dump(doc, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
