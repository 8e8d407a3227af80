"""Benchmark: what the devices layer costs on top of slmsuite.

In one process, at realistic sizes (1920x1152 SLM, 1440x1080 camera, 12 bit), with
zero simulated latency and settle time:

1. SLM path: ``SLM.set_phase`` through our layer (checks, block upsampling, wrap and
   quantise, hand-over to the wrapped slmsuite ``SimulatedSLM``) against slmsuite's
   ``SimulatedSLM.set_phase`` called directly on the same float32 phase.
2. Camera path: ``Camera.get_image`` through our layer (simulated camera, noise and
   zero-order leakage off, so it renders exactly slmsuite's frame) against the wrapped
   slmsuite ``SimulatedCamera.get_image`` called directly; and, for information, our
   camera with shot/read noise and leakage on.

Both sides are timed in alternating rounds; the median per-call time is reported, and
the best round of each side (least disturbed by other load on a shared machine).
Reports rates (Hz), the ratio ours/direct (goal >= 0.9) and the time our layer adds
per frame. ``python -m experiments.bench_devices
[--out DIR] [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from simulation.atomic import write_text_atomic

SLM_SHAPE = (1152, 1920)
CAMERA_SHAPE = (1080, 1440)


def _median_call_s(fn, calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls


def _compare(ours, direct, *, rounds: int, calls: int) -> dict[str, float]:
    ours()
    direct()  # warm-up: first-call allocations, caches
    t_ours, t_direct = [], []
    for r in range(rounds):
        pair = ((ours, t_ours), (direct, t_direct))
        for fn, acc in (pair if r % 2 == 0 else pair[::-1]):
            acc.append(_median_call_s(fn, calls))
    o, d = statistics.median(t_ours), statistics.median(t_direct)
    o_min, d_min = min(t_ours), min(t_direct)
    return {
        "ours_s": o, "direct_s": d, "ours_hz": 1 / o, "direct_hz": 1 / d,
        "ratio": d / o, "added_ms_per_call": (o - d) * 1e3,
        # best round of each side: least disturbed by other load on a shared machine
        "ours_min_s": o_min, "direct_min_s": d_min, "ratio_best": d_min / o_min,
        "added_ms_per_call_best": (o_min - d_min) * 1e3,
        # each round's difference, ours minus the direct round next to it: drift cancels
        "added_ms_paired": statistics.median(a - b for a, b in zip(t_ours, t_direct,
                                                                    strict=True)) * 1e3,
        "rounds": rounds, "calls_per_round": calls,
    }


def _inner_overhead_ms(cam: Any, frames: int) -> float:
    """Median time one ``get_image`` spends outside the wrapped slmsuite ``get_image``.

    Both times come from the same call, so load on the machine cancels out.
    """
    wrapped = cam.wrapped
    original = wrapped.get_image
    inner: list[float] = []

    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            inner.append(time.perf_counter() - t0)

    wrapped.get_image = timed
    try:
        outer = []
        for _ in range(frames):
            t0 = time.perf_counter()
            cam.get_image()
            outer.append(time.perf_counter() - t0)
    finally:
        del wrapped.get_image  # back to the class method
    return statistics.median(o - i for o, i in zip(outer, inner, strict=True)) * 1e3


def run(out_dir: str | Path | None = None, *, quick: bool = False) -> dict[str, Any]:
    """Run both comparisons; write ``bench_devices.json`` into ``out_dir`` when given."""
    import warnings

    from devices.flaws import draw_flaws
    from devices.simulated import SimCamera, SimSLM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from slmsuite.hardware.slms.simulated import SimulatedSLM

    flaws = draw_flaws(0)
    ours_slm = SimSLM(shape=SLM_SHAPE, bitdepth=8, pitch_um=8.0, wav_um=0.633,
                      settle_time_s=0.0, flaws=flaws)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        direct_slm = SimulatedSLM(SLM_SHAPE[::-1], bitdepth=8, pitch_um=(8, 8), wav_um=0.633,
                                  settle_time_s=0.0, gpu=False)
    rng = np.random.default_rng(0)
    yy, xx = np.indices(SLM_SHAPE, dtype=np.float32)
    # a realistic mask: vortex (m = 3) + lens + a random object phase, unwrapped
    vortex = 3 * np.arctan2(yy - SLM_SHAPE[0] / 2, xx - SLM_SHAPE[1] / 2)
    lens = -((xx - SLM_SHAPE[1] / 2) ** 2 + (yy - SLM_SHAPE[0] / 2) ** 2) * 2e-5
    phase = (vortex + lens + rng.uniform(0, np.pi, SLM_SHAPE)).astype(np.float32)

    # same grey levels on both sides (our conversion is slmsuite's, bit for bit)
    ours_slm.set_phase(phase, settle=False)
    direct_slm.set_phase(phase, settle=False)
    same_display = bool(np.array_equal(ours_slm.wrapped.display, direct_slm.display))

    slm = _compare(lambda: ours_slm.set_phase(phase, settle=False),
                   lambda: direct_slm.set_phase(phase, settle=False),
                   rounds=3 if quick else 7, calls=5 if quick else 20)
    slm["same_display"] = same_display

    cam = SimCamera(ours_slm, shape=CAMERA_SHAPE, bitdepth=12, pitch_um=3.45,
                    focal_length_mm=80.0, exposure_s=1e-3, photons_per_s=5e9, noise=False,
                    zero_order_fraction=0.0, frame_latency_s=0.0, seed=0, flaws=flaws)
    same_frame = bool(np.array_equal(cam.get_image(), cam.wrapped.get_image()))
    camera = _compare(lambda: cam.get_image(), lambda: cam.wrapped.get_image(),
                      rounds=2 if quick else 9, calls=1)
    camera["same_frame"] = same_frame
    camera["layer_overhead_ms"] = _inner_overhead_ms(cam, frames=2 if quick else 6)
    camera["fft_shape"] = [int(v) for v in cam.wrapped.shape_padded]

    cam.noise, cam.zero_order_fraction = True, 0.02
    cam.dark_level_counts = flaws.dark_level_frac * (2**cam.bitdepth - 1)
    physics = _compare(lambda: cam.get_image(), lambda: cam.wrapped.get_image(),
                       rounds=1 if quick else 5, calls=1)

    result = {
        "slm_set_phase": slm,
        "camera_get_image": camera,
        "camera_get_image_with_noise_and_leakage": physics,
        "sizes": {"slm": list(SLM_SHAPE), "camera": list(CAMERA_SHAPE)},
        "goal_ratio": 0.9,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform()},
    }
    ours_slm.close()
    cam.close()
    if out_dir is not None:
        write_text_atomic(Path(out_dir) / "bench_devices.json", json.dumps(result, indent=2))
    return result


def _summary(r: dict[str, Any]) -> str:
    lines = []
    for key, label in (("slm_set_phase", "SLM set_phase"),
                       ("camera_get_image", "camera get_image"),
                       ("camera_get_image_with_noise_and_leakage", "camera + noise/leak")):
        v = r[key]
        lines.append(f"{label:<22} ours {v['ours_hz']:8.2f} Hz  direct {v['direct_hz']:8.2f} Hz"
                     f"  ratio {v['ratio']:.3f}  added {v['added_ms_per_call']:+.2f} ms/call"
                     f"  (best rounds: ratio {v['ratio_best']:.3f}, "
                     f"{v['added_ms_per_call_best']:+.2f} ms; "
                     f"paired {v['added_ms_paired']:+.2f} ms)")
    lines.append(f"camera layer overhead inside one get_image: "
                 f"{r['camera_get_image']['layer_overhead_ms']:.3f} ms/frame")
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None, help="directory for bench_devices.json")
    ap.add_argument("--quick", action="store_true", help="fewer rounds (smoke test)")
    a = ap.parse_args()
    res = run(a.out, quick=a.quick)
    print(_summary(res))
