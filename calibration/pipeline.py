"""A bench day of calibration: run the steps in order, save after each, write a report.

``run_calibration(bench, out_dir, steps=...)`` runs, in this order (``STEP_ORDER``):

``dark`` -> ``geometry`` -> ``lut`` -> ``wavefront`` (source + aberrations; it also
corrects the geometry centre) -> ``model`` (encoded-diffraction model fit on a captured
speckle set) -> ``decoders`` (twin-trained and capture-trained decoders).

A step whose inputs are missing raises ``CalibrationError`` naming the step to run
first; ``calibration=`` continues an earlier ``CalibrationSet`` (only the steps asked
for are re-run). The set is saved (atomically) after every step, so an interrupted run
keeps what it finished. With ``out_dir`` the report (Markdown + PNG) is written at the end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from calibration.capture import device_identities
from calibration.geometry import affine_parameters
from calibration.store import CalibrationError, CalibrationSet

__all__ = ["run_calibration", "STEP_ORDER", "parse_steps"]

log = logging.getLogger(__name__)

STEP_ORDER = ("dark", "geometry", "lut", "wavefront", "model", "decoders")


def parse_steps(steps: str | Sequence[str] | None) -> tuple[str, ...]:
    """"dark,geometry" or a list -> the steps in bench-day order; None = all."""
    if steps is None:
        return STEP_ORDER
    items = [s.strip() for s in (steps.split(",") if isinstance(steps, str) else steps)]
    items = [s for s in items if s]
    bad = [s for s in items if s not in STEP_ORDER]
    if bad or not items:
        raise ValueError(f"steps: expected a comma-separated subset of {','.join(STEP_ORDER)}, "
                         f"got {','.join(items) if items else 'nothing'!r}")
    return tuple(s for s in STEP_ORDER if s in items)


def _run_step(name: str, bench: Any, cal: CalibrationSet, size: int,
              options: dict[str, Any], out: Path | None) -> None:
    dark = cal.dark_frame
    if name == "dark":
        from calibration.detector import calibrate_dark

        cal.set("dark", calibrate_dark(bench, **options))
    elif name == "geometry":
        from calibration.registration import calibrate_geometry

        geo = calibrate_geometry(bench, size=size, dark=dark, **options)
        if cal.wavefront is not None and "center_shift_px" in cal.wavefront.values:
            # keep the centre correction of an earlier wavefront step (re-run it to refresh)
            from calibration.registration import shift_center

            spots = np.asarray(geo["model_to_camera"])
            dx, dy = cal.wavefront["center_shift_px"]
            geo.values["model_to_camera_spots"] = spots
            geo.values["model_to_camera"] = shift_center(spots, dx, dy)
            geo.values.update(affine_parameters(geo.values["model_to_camera"], size))
            geo.values["center_corrected_by"] = "wavefront (earlier run)"
        cal.set("geometry", geo)
    elif name == "lut":
        from calibration.lut import calibrate_phase_response

        geo = cal.require("geometry")
        cal.set("lut", calibrate_phase_response(bench, geo["model_to_camera"], size=size,
                                                dark=dark, **options))
    elif name == "wavefront":
        from calibration.wavefront import calibrate_wavefront

        geo = cal.require("geometry")
        spots = geo.values.get("model_to_camera_spots", geo["model_to_camera"])
        source, wf = calibrate_wavefront(bench, spots, size=size, dark=dark,
                                         phase_response_rad=cal.phase_response_rad,
                                         **options)
        cal.set("source", source)
        cal.set("wavefront", wf)
        # the spots' centroids carry the aberrated PSF's offset: correct the centre
        geo.values["model_to_camera_spots"] = np.asarray(spots)
        geo.values["model_to_camera"] = np.asarray(wf["model_to_camera"])
        geo.values.update(affine_parameters(wf["model_to_camera"], size))
        geo.values["center_corrected_by"] = "wavefront"
    elif name == "model":
        from calibration.model_fit import calibrate_model

        cal.set("model", calibrate_model(bench, cal, size=size, **options))
    elif name == "decoders":
        from calibration.decoders import calibrate_decoders

        options.setdefault("out_dir", out)
        cal.set("decoders", calibrate_decoders(bench, cal, size=size, **options))
    else:  # pragma: no cover - parse_steps guards
        raise ValueError(f"steps: unknown step {name!r}")


def run_calibration(bench: Any, out_dir: str | Path | None = None, *,
                    steps: str | Sequence[str] | None = None, size: int = 32,
                    calibration: CalibrationSet | None = None,
                    options: dict[str, dict[str, Any]] | None = None,
                    progress: bool = True, report: bool = True) -> CalibrationSet:
    """Run the calibration ``steps`` on ``bench``; save to ``out_dir`` after each step.

    ``options`` maps a step name to keyword arguments of its routine, e.g.
    ``{"geometry": {"grid": 4}}``. Returns the ``CalibrationSet``.
    """
    todo = parse_steps(steps)
    opts = dict(options or {})
    unknown = set(opts) - set(STEP_ORDER)
    if unknown:
        raise ValueError(f"options: unknown steps {sorted(unknown)}; expected {STEP_ORDER}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 2:
        raise ValueError(f"size: expected an integer >= 2, got {size!r}")
    cal = calibration if calibration is not None else CalibrationSet()
    cal.devices = device_identities(bench)
    out = Path(out_dir) if out_dir is not None else None
    it: Any = todo
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(todo, desc="calibrate", unit="step")
    for name in it:
        if progress:
            it.set_postfix_str(name)
        t0 = time.perf_counter()
        log.info("calibration step %s ...", name)
        try:
            _run_step(name, bench, cal, size, dict(opts.get(name, {})), out)
        except CalibrationError:
            raise
        except KeyboardInterrupt:
            log.warning("calibration interrupted during %s; finished steps are saved", name)
            raise
        log.info("calibration step %s done in %.1f s", name, time.perf_counter() - t0)
        if out is not None:
            cal.save(out)
    if out is not None and report:
        from calibration.report import write_report

        write_report(cal, out)
    return cal
