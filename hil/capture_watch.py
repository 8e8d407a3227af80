"""Per-capture watch of ``hil run``: saturation and signal level, auto-exposure, stop rule.

Every capture's frames are measured as they arrive (``CaptureWatch.check``):

* ``saturated_fraction``: the fraction of the frame's pixels at or above 98 % of full
  scale (a saturated capture loses the brightest features of the pattern);
* ``peak_fraction``: the brightest pixel above the dark level (of the dimmer frame when
  a capture has several), as a fraction of full scale (too little light: the pattern
  drowns in read and shot noise).

A capture is *saturated* when ``saturated_fraction > rule.max_saturated_fraction``
(default 1e-4, about 26 pixels of a 512 x 512 frame), *dark* when
``peak_fraction < rule.min_peak_fraction`` (default 0.05), else *good*. The rule (its
limits and what it did are recorded in run.json under ``capture_watch``):

1. **Auto-exposure, where allowed** (``rule.autoexpose`` and no ``--exposure-s`` fixed
   by the user): after a saturated capture the exposure is halved, after a dark one it
   is raised toward ``rule.target_peak`` of full scale (at most x4), within the camera's
   bounds. The change applies from the next image on (frames already taken keep theirs);
   every capture records the exposure its frames were taken with (the camera's frame
   info) and the watch's measurements. The decoder's input is normalised per channel, so
   a change of exposure does not change what it sees.
2. **Warn**: a saturated or dark capture that the exposure cannot fix (not allowed, or at
   a bound) is logged (the first, then every 100th).
3. **Stop**: ``rule.stop_after`` such captures in a row, or more than
   ``rule.max_bad_fraction`` of the captures once ``rule.min_captures`` are in, stops
   the run: ``CaptureQualityStop`` (the session turns the laser off, keeps every capture
   and writes the reason to run.json, as for a device fault; ``--resume`` continues).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["CaptureQualityStop", "WatchRule", "CaptureWatch", "watch_for_run"]

log = logging.getLogger(__name__)


class CaptureQualityStop(RuntimeError):
    """The captures of a run are too saturated or too dark to go on (the reason says
    which, how many, and what to do)."""


@dataclass(frozen=True)
class WatchRule:
    """Limits and actions of the per-capture watch (module docstring)."""

    max_saturated_fraction: float = 1e-4
    min_peak_fraction: float = 0.05
    autoexpose: bool = True
    target_peak: float = 0.6
    exposure_bounds_s: tuple[float, float] = (1e-6, 1.0)
    stop_after: int = 20
    max_bad_fraction: float = 0.2
    min_captures: int = 50

    def __post_init__(self) -> None:
        for name in ("max_saturated_fraction", "min_peak_fraction", "target_peak",
                     "max_bad_fraction"):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                raise ValueError(f"{name}: expected a fraction in [0, 1], got {v!r}")
        if self.stop_after < 1 or self.min_captures < 1:
            raise ValueError(f"stop_after, min_captures: expected integers >= 1, got "
                             f"{self.stop_after!r}, {self.min_captures!r}")


@dataclass
class CaptureWatch:
    """Watches the captures of one run on ``camera`` (module docstring).

    ``dark_level``: counts subtracted before the peak is measured (the calibration's dark
    frame median; 0 without one). ``allow_exposure``: whether the run may change the
    exposure (False when the user fixed it).
    """

    camera: Any
    rule: WatchRule = field(default_factory=WatchRule)
    dark_level: float = 0.0
    allow_exposure: bool = True
    n: int = 0
    n_saturated: int = 0
    n_dark: int = 0
    n_unfixed: int = 0
    in_a_row: int = 0
    exposure_changes: list[dict[str, Any]] = field(default_factory=list)
    stopped: str | None = None

    @property
    def full_scale(self) -> float:
        return float(2 ** int(self.camera.bitdepth) - 1)

    def measure(self, frames: np.ndarray) -> dict[str, float]:
        """``saturated_fraction`` and ``peak_fraction`` of a capture's frames (K, H, W)."""
        f = np.asarray(frames)
        fs = self.full_scale
        sat = float(np.count_nonzero(f >= 0.98 * fs)) / max(f.size, 1)
        flat = f.reshape(len(f), -1) if f.ndim == 3 else f.reshape(1, -1)
        peak = float(np.min(flat.max(axis=1)))  # the dimmest channel's brightest pixel
        return {"saturated_fraction": sat,
                "peak_fraction": (peak - self.dark_level) / max(fs - self.dark_level, 1.0)}

    def check(self, index: int, frames: np.ndarray, info: Any = None) -> dict[str, Any]:
        """Measure capture ``index``; adjust the exposure or count it (module docstring).

        The measurements (and the action) are added to every frame info dict in
        ``info`` (a dict or a list of dicts), so the capture store records them.
        Returns them. Call ``enforce`` after the capture is stored.
        """
        m = self.measure(frames)
        self.n += 1
        state = ("saturated" if m["saturated_fraction"] > self.rule.max_saturated_fraction
                 else "dark" if m["peak_fraction"] < self.rule.min_peak_fraction else "good")
        action = "none"
        if state == "good":
            self.in_a_row = 0
        else:
            self.n_saturated += state == "saturated"
            self.n_dark += state == "dark"
            action = self._adjust(index, state, m)
            if action == "none":
                self.n_unfixed += 1
                self.in_a_row += 1
                if self.n_unfixed == 1 or self.n_unfixed % 100 == 0:
                    log.warning("hil run: capture %d is %s (saturated %.2g %%, peak %.2f of "
                                "full scale) and the exposure cannot be changed (%d such "
                                "captures so far)", index, state,
                                100 * m["saturated_fraction"], m["peak_fraction"],
                                self.n_unfixed)
            else:
                self.in_a_row = 0
        rec = {"watch_" + k: v for k, v in m.items()}
        rec.update(watch_state=state, watch_action=action)
        for d in ([info] if isinstance(info, dict) else info or []):
            if isinstance(d, dict):
                d.update(rec)
        return rec

    def _adjust(self, index: int, state: str, m: dict[str, float]) -> str:
        if not (self.allow_exposure and self.rule.autoexpose):
            return "none"
        lo, hi = self.rule.exposure_bounds_s
        old = float(self.camera.get_exposure())
        if state == "saturated":
            new = max(lo, old / 2)
        else:
            gain = self.rule.target_peak / max(m["peak_fraction"], 1e-6)
            new = min(hi, old * min(4.0, gain))
        if abs(new - old) <= 1e-3 * old:
            return "none"  # at a bound: the exposure cannot fix it
        new = float(self.camera.set_exposure(new))
        self.exposure_changes.append({"after_capture": int(index), "from_s": old,
                                      "to_s": new, "because": state})
        log.info("hil run: capture %d %s; exposure %.3g s -> %.3g s", index, state, old, new)
        return f"exposure {old:.3g} -> {new:.3g} s"

    def enforce(self) -> None:
        """Raise ``CaptureQualityStop`` when the stop rule says so (module docstring)."""
        r = self.rule
        reason = None
        if self.in_a_row >= r.stop_after:
            reason = (f"{self.in_a_row} captures in a row saturated or too dark that the "
                      "exposure could not fix")
        elif self.n >= r.min_captures and self.n_unfixed > r.max_bad_fraction * self.n:
            reason = (f"{self.n_unfixed} of {self.n} captures saturated or too dark (limit "
                      f"{r.max_bad_fraction:.0%})")
        if reason is None:
            return
        exposure = float(self.camera.get_exposure())
        self.stopped = (f"capture quality: {reason} ({self.n_saturated} saturated, "
                        f"{self.n_dark} too dark; exposure {exposure:.3g} s): "
                        + ("lower the laser power or add an ND filter"
                           if self.n_saturated >= self.n_dark else
                           "raise the laser power, check the beam path and the alignment")
                        + ("" if self.allow_exposure else
                           ", or leave --exposure-s out so the run may adjust it"))
        raise CaptureQualityStop(self.stopped)

    def summary(self) -> dict[str, Any]:
        """What run.json records under ``capture_watch``."""
        return {"rule": asdict(self.rule), "allow_exposure": self.allow_exposure,
                "captures": self.n, "saturated": self.n_saturated, "dark": self.n_dark,
                "unfixed": self.n_unfixed, "exposure_changes": self.exposure_changes[-100:],
                "n_exposure_changes": len(self.exposure_changes), "stopped": self.stopped}


def watch_for_run(bench: Any, imager: Any, exposure_fixed: bool,
                  rule: WatchRule | None = None) -> CaptureWatch:
    """The watch of one ``hil run``: the imager's dark level, exposure allowed unless
    the user fixed it."""
    dark = getattr(imager, "dark", None)
    level = 0.0 if dark is None else float(np.median(np.asarray(dark)))
    return CaptureWatch(bench.camera, rule or WatchRule(), dark_level=level,
                        allow_exposure=not exposure_fixed)
