"""``hil live BENCH``: live camera frames with the model windows and expected spots drawn.

Each frame shows, over the camera image (saturated pixels in red):

* the N x N model window of every encoder channel (``calibration.imaging.BenchImager``:
  the calibration's geometry when ``--calibration`` has one, else the nominal one from
  the bench file's focal length), and the box the decoder reads around it;
* with ``--pattern spots`` (default) the SLM cycles four gratings at (±N/4, 0) and
  (0, ±N/4) model pixels: the spot's expected position (a cross) and the measured one
  (a circle), their offset in camera pixels; ``--pattern encoder`` shows the encoder of
  each channel on a blank object, ``--pattern flat`` a flat phase;
* exposure, peak counts against full scale, the saturated fraction, frames/s.

With a display (``$DISPLAY``/``$WAYLAND_DISPLAY`` and no ``--out``) the frames go to an
OpenCV window (``q`` or Esc quits). Without one, or with ``--out DIR``, they are written
as ``DIR/live_00000.png`` ... and ``DIR/live.json`` (one record per frame: exposure,
peak, saturated fraction, expected and measured spot, offset), ``--frames`` of them
(default 10 headless, until quit with a window). ``--laser-on`` switches the laser output
on for the session. However it ends (the last frame, ``q``, Ctrl-C, SIGTERM, a device
error) the bench is closed with the laser output off. ``--json`` prints, at the end, the
folder and the per-frame records that ``live.json`` holds.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from hil.cli import UserError
from hil.cli_args import add_json, add_out, positive_float, positive_int, print_json
from hil.output_paths import check_output_dir
from simulation.atomic import write_image_atomic, write_text_atomic

__all__ = ["register", "render_overlay", "LivePatterns"]

SPOT_FRACTION = 0.25  # spot gratings at ±N/4 model pixels
MIN_WIDTH_PX = 640  # small frames are enlarged (nearest neighbour) so the text is legible
GREEN, YELLOW, CYAN, RED, WHITE = (0, 220, 0), (0, 220, 220), (220, 220, 0), (0, 0, 255), \
    (255, 255, 255)


class LivePatterns:
    """What the SLM shows, frame by frame, and where the light is expected on the camera."""

    def __init__(self, imager: Any, pattern: str) -> None:
        from calibration.capture import grating_phase

        self.imager, self.pattern = imager, pattern
        n, s = imager.size, imager.block
        slm = imager.slm
        k = SPOT_FRACTION * n
        self.spots = [(k, 0.0), (0.0, k), (-k, 0.0), (0.0, -k)]
        self._gratings = [grating_phase(slm, kx, ky, n, s) for kx, ky in self.spots]
        self._flat = np.zeros(tuple(slm.shape), np.float32)
        self._blank = np.zeros((n, n), np.float32)

    def __call__(self, i: int) -> tuple[np.ndarray, tuple[float, float] | None, int | None]:
        """(phase to show, expected spot (x, y) camera px or None, channel window or None)."""
        n = self.imager.size
        if self.pattern == "spots":
            kx, ky = self.spots[i % len(self.spots)]
            a = np.asarray(self.imager.model_to_camera[0], float)
            unshifted = a @ np.array([n / 2, n / 2, 1.0]) - a[:, :2] @ np.asarray(
                self.imager.shifts[0], float)
            x, y = unshifted + a[:, :2] @ np.array([kx, ky])
            return self._gratings[i % len(self.spots)], (float(x), float(y)), None
        if self.pattern == "encoder":
            frame = i % self.imager.frames_per_image
            return self.imager.slm_phase(self._blank, frame=frame), None, frame
        return self._flat, None, None


def _corners(a: np.ndarray, n: int) -> np.ndarray:
    c = np.array([[-0.5, -0.5, 1], [n - 0.5, -0.5, 1], [n - 0.5, n - 0.5, 1], [-0.5, n - 0.5, 1]])
    return c @ np.asarray(a, float).T


def render_overlay(frame: np.ndarray, full_scale: float, *, windows: list[np.ndarray],
                   size: int, boxes: list[tuple[int, int, int, int, int]] | None = None,
                   expected: tuple[float, float] | None = None,
                   measured: tuple[float, float] | None = None,
                   lines: list[str] | None = None) -> np.ndarray:
    """An 8-bit BGR picture of ``frame`` (square root of counts between its minimum and
    peak, saturated pixels red; enlarged to at least ``MIN_WIDTH_PX`` wide) with the
    model windows (green), the decoder's boxes (cyan), the expected spot (yellow cross),
    the measured one (white circle) and ``lines`` of text."""
    import cv2

    f = np.asarray(frame, dtype=np.float32)
    low, peak = float(f.min()), float(f.max())
    # square-root scale (field amplitude) above the frame's floor: a bright spot does
    # not hide the faint light
    grey = (np.sqrt(np.clip((f - low) / (peak - low), 0, 1)) * 255).astype(np.uint8) \
        if peak > low else np.zeros(f.shape, np.uint8)
    img = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    img[f >= full_scale] = RED
    zoom = max(1, int(np.ceil(MIN_WIDTH_PX / f.shape[1])))
    if zoom > 1:
        img = cv2.resize(img, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST)

    def pt(x: float, y: float) -> tuple[int, int]:  # pixel centre (x, y) -> zoomed pixel
        return int(round((x + 0.5) * zoom - 0.5)), int(round((y + 0.5) * zoom - 0.5))

    for a in windows:
        poly = np.array([pt(x, y) for x, y in _corners(a, size)], np.int32)
        cv2.polylines(img, [poly], True, GREEN, 1, cv2.LINE_8)
    for _, r0, r1, c0, c1 in boxes or []:
        cv2.rectangle(img, pt(c0 - 0.5, r0 - 0.5), pt(c1 - 0.5, r1 - 0.5), CYAN, 1)
    if expected is not None:
        cv2.drawMarker(img, pt(*expected), YELLOW, cv2.MARKER_CROSS, 6 * zoom, 1)
    if measured is not None:
        cv2.circle(img, pt(*measured), 4 * zoom, WHITE, 1, cv2.LINE_AA)
    for k, text in enumerate(lines or []):
        cv2.putText(img, text, (6, 18 + 18 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.5, YELLOW, 1,
                    cv2.LINE_AA)
    return img


def _has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _imager(bench: Any, calibration: Any, size: int) -> Any:
    from calibration.imaging import BenchImager
    from calibration.imaging_config import ImagingConfig

    config = getattr(calibration, "imaging_config", None) if calibration is not None else None
    if config is None:
        config = ImagingConfig(size=size)
    try:
        return BenchImager(bench, calibration, config=config)
    except ValueError as exc:
        raise UserError(f"live: cannot place the model windows ({exc})") from None


def _locate(frame: np.ndarray, dark: np.ndarray | None, near: tuple[float, float],
            radius: int) -> tuple[float, float] | None:
    """The spot's centroid in a window around where it is expected (None if not found)."""
    from calibration.registration import locate_spot

    f = np.asarray(frame, np.float32) - (dark if dark is not None else float(np.median(frame)))
    rows, cols = f.shape
    half = 4 * radius
    x0, y0 = max(int(near[0]) - half, 0), max(int(near[1]) - half, 0)
    x1, y1 = min(int(near[0]) + half + 1, cols), min(int(near[1]) + half + 1, rows)
    if x1 - x0 < 2 * radius + 3 or y1 - y0 < 2 * radius + 3:
        return None
    try:
        x, y = locate_spot(f[y0:y1, x0:x1], radius=radius)
    except ValueError:
        return None
    return x + x0, y + y0


def _cmd_live(args: argparse.Namespace) -> int:
    import cv2

    from calibration import CalibrationSet

    show = args.out is None and _has_display()
    if args.out is None and not show:
        raise UserError("live: no display ($DISPLAY is not set): pass --out DIR to write the "
                        "frames as PNG files")
    out = None if args.out is None else Path(args.out)
    if out is not None:
        check_output_dir(out, "--out")
    frames = args.frames if args.frames is not None else (None if show else 10)
    cal = CalibrationSet.load(args.calibration) if args.calibration else None
    records: list[dict[str, Any]] = []
    try:
        _live(args, cal, out, show, frames, records)
    finally:  # records of an interrupted session are kept too
        if out is not None and records:
            write_text_atomic(out / "live.json", json.dumps({"bench": str(args.bench),
                                                             "frames": records}, indent=1))
    if show:
        cv2.destroyAllWindows()
    if args.json:
        print_json(args, {"out": None if out is None else str(out), "bench": str(args.bench),
                          "frames": records})
    elif out is not None:
        print(f"live: {len(records)} frames in {out} (live_*.png, live.json)")
    return 0


def _live(args: argparse.Namespace, cal: Any, out: Path | None, show: bool,
          frames: int | None, records: list[dict[str, Any]]) -> None:
    """The frame loop; appends one record per frame to ``records``."""
    import cv2

    from calibration.capture import device_identities
    from devices import open_bench

    with open_bench(args.bench) as bench:  # closes with the laser off, however it ends
        if cal is not None:
            diff = cal.device_differences(device_identities(bench))
            if diff:
                raise UserError(f"--calibration: made on other devices: {'; '.join(diff)}")
        imager = _imager(bench, cal, args.size).prepare()  # LUT, exposure, settle time
        cam = bench.camera
        if args.exposure is not None:
            cam.set_exposure(args.exposure)
        if args.laser_on:
            if bench.laser is None:
                raise UserError("--laser-on: this bench has no laser controller")
            bench.laser.output_on()
        patterns = LivePatterns(imager, args.pattern)
        full = float(2**cam.bitdepth - 1)
        dark = imager.dark
        radius = 6
        t_last = time.perf_counter()
        for i in itertools.count() if frames is None else range(frames):
            phase, expected, channel = patterns(i)
            bench.slm.set_phase(phase)
            cam.flush()
            frame = np.asarray(cam.get_image())
            now = time.perf_counter()
            fps, t_last = 1.0 / max(now - t_last, 1e-9), now
            measured = None if expected is None else _locate(frame, dark, expected, radius)
            offset = None if measured is None else (measured[0] - expected[0],
                                                    measured[1] - expected[1])
            exposure = float(cam.get_exposure())
            sat = float(np.count_nonzero(frame >= full) / frame.size)
            rec = {"frame": i, "exposure_s": exposure, "peak_counts": int(frame.max()),
                   "full_scale": int(full), "saturated_fraction": sat,
                   "geometry": imager.geometry_source, "pattern": args.pattern,
                   "expected_xy": expected, "measured_xy": measured, "offset_px": offset}
            records.append(rec)
            lines = [f"exposure {1000 * exposure:.3g} ms  peak {int(frame.max())}/{int(full)}"
                     f"  saturated {100 * sat:.2f} %  {fps:.1f} fps",
                     f"geometry {imager.geometry_source}, pattern {args.pattern}"
                     + ("" if offset is None else
                        f", spot offset ({offset[0]:+.2f}, {offset[1]:+.2f}) px")]
            wins = [a for k, a in enumerate(imager.model_to_camera)
                    if channel is None or imager.mode == "split" or k == channel]
            img = render_overlay(frame, full, windows=wins, size=imager.size,
                                 boxes=imager.window_boxes, expected=expected,
                                 measured=measured, lines=lines)
            if out is not None:
                path = out / f"live_{i:05d}.png"
                write_image_atomic(path, img)
            else:
                cv2.imshow("hil live", img)
                if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                    break


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "live", help="live camera frames with model windows and expected spots overlaid",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bench", help="bench TOML file (or a shipped name such as sim.toml)")
    p.add_argument("--calibration", default=None, metavar="DIR",
                   help="calibration directory or .h5 (geometry, dark frame, imaging config)")
    p.add_argument("--pattern", choices=("spots", "encoder", "flat"), default="spots",
                   help="what the SLM shows (default spots: four gratings, expected spots)")
    p.add_argument("--frames", type=positive_int, default=None,
                   help="frames to show (default: 10 to --out, until q with a window)")
    add_out(p, "folder for the PNG frames and live.json (needed without a display)",
            metavar="DIR")
    p.add_argument("--size", type=positive_int, default=32,
                   help="model grid N without a calibration (default 32)")
    p.add_argument("--exposure", type=positive_float, default=None,
                   help="camera exposure, seconds (default: the bench's)")
    p.add_argument("--laser-on", action="store_true",
                   help="switch the laser output on (off again on exit)")
    add_json(p, "the folder and the per-frame records (as in live.json), at the end,")
    p.set_defaults(func=_cmd_live)
