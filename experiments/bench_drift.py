"""Drift during a long ``hil run``: SSIM with and without the on-the-fly correction.

On a simulated bench whose camera image drifts (``[sim_flaws] drift_px_per_kframe``, or,
with ``--wrapper``, ``ShiftingBench``: the camera's frames moved by ``cv2.warpAffine`` by a
known amount per frame), three runs of the same ``--n`` images through ``hil run``
(``hil.session.run_session``) with the same calibration and decoder:

* ``no-drift``: the same bench without drift (the reference SSIM);
* ``uncorrected``: drifting, ``drift_every = 0``;
* ``corrected``: drifting, a reference check every ``--every`` images (``calibration.drift``).

It prints one line per run (mean SSIM, ratio to no-drift, extra frames, checks, final
correction; the true final shift is in the JSON) and writes ``drift-<runs>.json`` in
``--out``::

    nice -n 19 python -m experiments.bench_drift --n 2000 --drift 1.0 --every 50 \\
        --out runs/bench_drift

The calibration (``hil calibrate`` steps, on the bench without drift) is made once in
``--out/cal`` and reused; ``--calibration DIR`` uses an existing one; ``--no-cal`` uses
none: the bench's true geometry (``bench.truth``) and a twin-trained decoder.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from simulation.atomic import write_text_atomic

__all__ = ["ShiftingCamera", "ShiftingBench", "main"]


class ShiftingCamera:
    """A camera whose frames move by ``px_per_frame`` (x, y) camera pixels per frame.

    Frame ``k`` (counted from 0 over every ``get_image`` call) is the wrapped camera's frame
    shifted by ``k * px_per_frame`` (bilinear, ``cv2.warpAffine``, edges replicated), so its
    content moves like a drifting image. Frames listed in ``blank_frames`` come back as the
    frame's median everywhere (a blocked beam / a frame with nothing on it). Everything else
    is the wrapped camera's.
    """

    def __init__(self, camera: Any, px_per_frame: tuple[float, float],
                 blank_frames: set[int] | None = None) -> None:
        self._camera = camera
        self.px_per_frame = (float(px_per_frame[0]), float(px_per_frame[1]))
        self.blank_frames = set(blank_frames or ())
        self.frames_shifted = 0

    def shift_px(self, frame: int | None = None) -> tuple[float, float]:
        """The shift of frame ``frame`` (default: the next one)."""
        k = self.frames_shifted if frame is None else int(frame)
        return self.px_per_frame[0] * k, self.px_per_frame[1] * k

    def get_image(self, *args: Any, **kwargs: Any) -> np.ndarray:
        frame = np.asarray(self._camera.get_image(*args, **kwargs))
        k = self.frames_shifted
        self.frames_shifted += 1
        if k in self.blank_frames:
            return np.full_like(frame, np.median(frame))
        dx, dy = self.shift_px(k)
        if dx == 0 and dy == 0:
            return frame
        h, w = frame.shape
        moved = cv2.warpAffine(frame.astype(np.float32),
                               np.array([[1, 0, dx], [0, 1, dy]], np.float64), (w, h),
                               flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if frame.dtype.kind in "iu":
            info = np.iinfo(frame.dtype)
            return np.clip(np.rint(moved), info.min, info.max).astype(frame.dtype)
        return moved.astype(frame.dtype)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._camera, name)


class ShiftingBench:
    """An opened bench with its camera wrapped in ``ShiftingCamera`` (the rest as is)."""

    def __init__(self, bench: Any, px_per_frame: tuple[float, float],
                 blank_frames: set[int] | None = None) -> None:
        self._bench = bench
        self.slm = bench.slm
        self.camera = ShiftingCamera(bench.camera, px_per_frame, blank_frames)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bench, name)


def _bench_dict(bench: str, drift: float, seed: int | None, flaws: bool = True
                ) -> dict[str, Any]:
    import tomllib

    from devices.config import read_bench_text, resolve_bench_path

    cfg = tomllib.loads(read_bench_text(resolve_bench_path(bench)))
    if seed is not None:
        cfg["seed"] = int(seed)
    if not flaws:
        cfg["flaws"] = False
    if drift:
        cfg.setdefault("sim_flaws", {})["drift_px_per_kframe"] = float(drift)
    return cfg


def _calibrate(bench_cfg: dict[str, Any], out: Path) -> Path:
    from calibration.pipeline import run_calibration
    from devices.bench import open_bench

    if (out / "calibration.h5").is_file():
        return out
    with open_bench(bench_cfg) as bench:
        run_calibration(bench, out)
    return out


def _twin_decoder(out: Path, n_train: int = 4000) -> Path:
    """A twin-trained dual-vortex decoder (ridge on simulated speckle), for ``--no-cal``."""
    from simulation import DualVortexEncoder, LinearDecoder, speckle

    path = out / "decoder_twin.pt"
    if not path.is_file():
        enc = DualVortexEncoder()
        imgs = speckle(n_train, 15, seed=0)
        LinearDecoder(alpha=1.0, device="cpu").fit(enc(imgs), imgs, encoder=enc).save(path)
    return path


def _true_geometry(bench: Any) -> Any:
    from calibration.imaging_config import ImagingConfig, plan_layout
    from calibration.truth import truth_model_to_camera

    block = plan_layout(tuple(bench.slm.shape), 2, ImagingConfig()).block
    return truth_model_to_camera(bench, 32, block)


def _one_run(name: str, bench: Any, cal: Path | None, out: Path, n: int, every: int,
             dataset: str, seed: int) -> dict[str, Any]:
    from hil.session import RunConfig, run_session

    run_dir = out / name
    t0 = time.time()
    if cal is not None:
        cfg = RunConfig(bench=bench, out=run_dir, calibration=cal, dataset=dataset, n=n,
                        seed=seed, drift_every=every, progress=False)
    else:  # the true geometry and a twin-trained decoder (no calibration)
        cfg = RunConfig(bench=bench, out=run_dir, decoder=_twin_decoder(out), dataset=dataset,
                        n=n, seed=seed, geometry=_true_geometry(bench), drift_every=every,
                        progress=False, force=True)
    status = run_session(cfg)
    res = json.loads((run_dir / "results.json").read_text())
    run = json.loads((run_dir / "run.json").read_text())
    row = {"name": name, "status": status, "ssim_mean": res.get("ssim_mean"),
           "n_captured": res["n_captured"], "wall_s": time.time() - t0}
    if "drift" in run:
        d = run["drift"]
        row.update(extra_frames=d["extra_frames"], n_checks=d["n_checks"],
                   n_unreliable=d["n_unreliable"], correction_px=d["correction_px"])
    return row


def main(argv: list[str] | None = None) -> int:
    from devices.bench import open_bench

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bench", default="sim.toml")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--drift", type=float, default=1.0, help="camera px per 1,000 frames")
    p.add_argument("--every", type=int, default=50, help="a reference check every K images")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--seed", type=int, default=0, help="image subset seed")
    p.add_argument("--bench-seed", type=int, default=None)
    p.add_argument("--calibration", type=Path, default=None)
    p.add_argument("--no-cal", action="store_true",
                   help="no calibration: the bench's true geometry, a twin-trained decoder")
    p.add_argument("--no-flaws", action="store_true",
                   help="the bench without its hidden calibration flaws (flaws = false)")
    p.add_argument("--wrapper", action="store_true",
                   help="drift by ShiftingBench (cv2.warpAffine) instead of [sim_flaws]")
    p.add_argument("--runs", default="no-drift,uncorrected,corrected",
                   help="which runs, comma-separated (empty: only the calibration)")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    still = _bench_dict(a.bench, 0.0, a.bench_seed, not a.no_flaws)
    cal = None if a.no_cal else (a.calibration or _calibrate(still, a.out / "cal"))
    drifting = _bench_dict(a.bench, 0.0 if a.wrapper else a.drift, a.bench_seed,
                           not a.no_flaws)
    rows = []
    names = [v for v in a.runs.split(",") if v]
    for name in names:
        if (a.out / name).exists():
            raise SystemExit(f"--out: {a.out / name} exists; choose another --out")
        cfg = still if name == "no-drift" else drifting
        with open_bench(copy.deepcopy(cfg)) as bench:
            b: Any = bench
            if a.wrapper and name != "no-drift":
                ang = np.radians(30.0)
                rate = a.drift / 1000.0
                b = ShiftingBench(bench, (rate * np.cos(ang), rate * np.sin(ang)))
            every = a.every if name == "corrected" else 0
            row = _one_run(name, b, cal, a.out, a.n, every, a.dataset, a.seed)
            cam = b.camera
            if isinstance(cam, ShiftingCamera):
                row["true_final_shift_px"] = list(cam.shift_px())
            elif name != "no-drift" and hasattr(getattr(cam, "flaws", None), "drift_px"):
                row["true_final_shift_px"] = list(cam.flaws.drift_px(cam.frames_delivered))
        rows.append(row)
        base = rows[0]["ssim_mean"] if rows[0]["name"] == "no-drift" else None
        ratio = f"{row['ssim_mean'] / base:.3f}" if base else "-"
        print(f"{name:12s} SSIM {row['ssim_mean']:.4f}  ratio {ratio}  "
              f"extra frames {row.get('extra_frames', 0)}  checks {row.get('n_checks', 0)} "
              f"(unreliable {row.get('n_unreliable', 0)})  correction "
              f"{row.get('correction_px')}  {row['wall_s']:.0f} s", flush=True)
    record = {"args": {k: str(v) for k, v in vars(a).items()}, "runs": rows}
    write_text_atomic(a.out / f"drift-{'-'.join(names) or 'cal'}.json",
                      json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
