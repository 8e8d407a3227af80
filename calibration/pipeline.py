"""A bench day of calibration: run the steps in order, save after each, write a report.

``run_calibration(bench, out_dir, steps=...)`` runs, in this order (``STEP_ORDER``):

(``settle``, only when asked: the SLM's settle time measured from captures,
``calibration.settle``) -> ``dark`` -> ``geometry`` -> ``lut`` -> ``wavefront`` (source +
aberrations; it also corrects the geometry centre) -> ``model`` (encoded-diffraction
model fit on a captured speckle set) -> ``decoders`` (twin-trained and capture-trained
decoders).

Every step checks its own fit (``calibration.quality``) and stops with a
``CalibrationQualityError`` (a ``CalibrationError``) that names the step, the measured
value, the limit and what to do. The steps after ``dark`` subtract its background model
(``CalibrationSet.dark_model``: offset + rate · exposure) at whatever exposure they set.

A step whose inputs are missing raises ``CalibrationError`` naming the step to run
first; ``calibration=`` continues an earlier ``CalibrationSet`` (the steps asked for are
run again). The set is saved (atomically) after every step, so an interrupted run
keeps what it finished. With ``out_dir`` the report (Markdown + PNG) is written at the end.

Resume: every step records ``inputs_sha256`` (``step_inputs``): the devices' stable
identities, the grid size, the step's options and the earlier steps it reads (their
inputs and when they ran). With ``resume=True`` a step already present with the same
record is skipped (one log line each); a step whose inputs changed runs again, and so
does every step after it that reads it. A step imported from another tool (``values``
``imported_from``, e.g. slmsuite's calibrations) is kept by a resume of all steps
(``steps=None``) and measured again only when ``steps`` names it.

Progress: with ``progress=True`` a ``tqdm.auto`` bar counts the steps and each step
shows a bar of its captures (``capture.progress_bar``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from calibration.capture import device_identities, progress_bar, show_progress
from calibration.geometry import affine_parameters
from calibration.store import CalibrationError, CalibrationSet

__all__ = ["run_calibration", "STEP_ORDER", "parse_steps", "step_inputs", "stable_identities"]

log = logging.getLogger(__name__)

STEP_ORDER = ("settle", "dark", "geometry", "lut", "wavefront", "model", "decoders")
# run only when asked (``--steps settle,...``): it sleeps through many settle times
OPTIONAL_STEPS = ("settle",)


# what each step reads from the steps before it (its results are part of its inputs)
STEP_DEPENDS = {"settle": (), "dark": (), "geometry": ("dark",), "lut": ("dark", "geometry"),
                "wavefront": ("dark", "geometry", "lut"),
                "model": ("dark", "geometry", "lut", "source", "wavefront"),
                "decoders": ("dark", "geometry", "lut", "source", "wavefront", "model")}

# device info() entries that change while a bench runs (counters, switch states, what a
# step loaded): not part of a device's identity
VOLATILE_INFO = frozenset({"frames_delivered", "frames_dropped_total", "exposure_s",
                           "output_on", "interlock_closed", "phase_lut", "error"})


def stable_identities(devices: dict[str, Any]) -> dict[str, Any]:
    """``device_identities`` without the entries that change while the bench runs."""
    return {kind: ({k: v for k, v in info.items() if k not in VOLATILE_INFO}
                   if isinstance(info, dict) else info)
            for kind, info in devices.items()}


def _canonical(x: Any) -> Any:
    if hasattr(x, "to_dict"):
        return _canonical(x.to_dict())
    if isinstance(x, dict):
        return {str(k): _canonical(v) for k, v in sorted(x.items(), key=lambda kv: str(kv[0]))}
    if isinstance(x, (list, tuple)):
        return [_canonical(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return x.item()
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return repr(x)


def step_inputs(name: str, identity: dict[str, Any], size: int, options: dict[str, Any],
                cal: CalibrationSet) -> str:
    """SHA-256 of what step ``name`` depends on: the devices' stable identities, the grid
    size, the step's options (imaging config included) and, for each earlier step it
    reads, that step's own inputs and the time it ran (a re-run changes its results)."""
    upstream = {}
    for dep in STEP_DEPENDS[name]:
        step = getattr(cal, dep, None)
        upstream[dep] = None if step is None else [step.values.get("inputs_sha256"),
                                                   float(step.time)]
    doc = {"step": name, "devices": identity, "size": int(size),
           "options": options, "upstream": upstream}
    text = json.dumps(_canonical(doc), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _complete(name: str, cal: CalibrationSet, inputs: str, out: Path | None) -> bool:
    """Whether step ``name`` is in ``cal`` with the same inputs (and its files in ``out``)."""
    step = getattr(cal, name, None)
    if step is None or step.values.get("inputs_sha256") != inputs:
        return False
    if name == "wavefront" and cal.source is None:
        return False
    if name == "decoders" and out is not None:
        for key in [k for k in step.values if k.endswith("_path")]:  # every decoder file
            if not (out / str(step.values[key])).is_file():
                return False
    return True


def _imported(name: str, cal: CalibrationSet) -> bool:
    """Whether step ``name`` was imported (e.g. ``calibration.slmsuite_import``): a resume
    of all steps keeps it; naming it in ``steps`` measures it again."""
    step = getattr(cal, name, None)
    return step is not None and bool(step.values.get("imported_from"))


def parse_steps(steps: str | Sequence[str] | None) -> tuple[str, ...]:
    """"dark,geometry" or a list -> the steps in bench-day order; None = all but the
    optional ones (``OPTIONAL_STEPS``)."""
    if steps is None:
        return tuple(s for s in STEP_ORDER if s not in OPTIONAL_STEPS)
    items = [s.strip() for s in (steps.split(",") if isinstance(steps, str) else steps)]
    items = [s for s in items if s]
    bad = [s for s in items if s not in STEP_ORDER]
    if bad or not items:
        raise ValueError(f"steps: expected a comma-separated subset of {','.join(STEP_ORDER)}, "
                         f"got {','.join(items) if items else 'nothing'!r}")
    return tuple(s for s in STEP_ORDER if s in items)


def _run_step(name: str, bench: Any, cal: CalibrationSet, size: int,
              options: dict[str, Any], out: Path | None) -> None:
    dark = cal.dark_model  # offset + rate * exposure where measured: right at every exposure
    if name == "settle":  # measured settle time, applied to the SLM at once
        from calibration.settle import calibrate_settle

        cal.set("settle", calibrate_settle(bench, **options))
    elif name == "dark":
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
                    progress: bool = True, report: bool = True,
                    imaging: Any = None, resume: bool = False) -> CalibrationSet:
    """Run the calibration ``steps`` on ``bench``; save to ``out_dir`` after each step.

    ``options`` maps a step name to keyword arguments of its routine, e.g.
    ``{"geometry": {"grid": 4}}``. ``imaging``: the ``ImagingConfig`` the model and
    decoders steps image with (and record); default ``ImagingConfig(size=size)``.
    ``progress`` shows a bar of steps and, inside each step, a bar of its captures.
    ``resume``: a step already in ``calibration`` whose recorded ``inputs_sha256``
    (``step_inputs``) equals this run's is skipped (one log line each); any other step
    asked for runs. Returns the ``CalibrationSet``.
    """
    todo = parse_steps(steps)
    opts = dict(options or {})
    unknown = set(opts) - set(STEP_ORDER)
    if unknown:
        raise ValueError(f"options: unknown steps {sorted(unknown)}; expected {STEP_ORDER}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 2:
        raise ValueError(f"size: expected an integer >= 2, got {size!r}")
    cal = calibration if calibration is not None else CalibrationSet()
    if getattr(cal, "settle", None) is not None:  # every step waits the measured time
        bench.slm.settle_time_s = cal.settle_time_s
    cal.devices = device_identities(bench)
    identity = stable_identities(cal.devices)
    out = Path(out_dir) if out_dir is not None else None
    with show_progress(progress), progress_bar(len(todo), "calibrate", unit="step") as bar:
        for name in todo:
            bar.set_postfix_str(name)
            step_opts = dict(opts.get(name, {}))
            if name in ("model", "decoders") and imaging is not None:
                step_opts.setdefault("imaging", imaging)
            inputs = step_inputs(name, identity, size, step_opts, cal)
            if resume and _complete(name, cal, inputs, out):
                log.info("calibration step %s: already complete with the same inputs "
                         "(devices, settings, earlier steps); skipped", name)
                bar.update()
                continue
            if resume and steps is None and _imported(name, cal):
                log.info("calibration step %s: imported (%s); kept (name it in --steps to "
                         "measure it instead)", name, getattr(cal, name).values["imported_from"])
                bar.update()
                continue
            if resume and getattr(cal, name) is not None:
                log.info("calibration step %s: its inputs changed since it ran (devices, "
                         "settings or an earlier step); running it again", name)
            t0 = time.perf_counter()
            log.info("calibration step %s ...", name)
            try:
                _run_step(name, bench, cal, size, step_opts, out)
            except CalibrationError:
                raise
            except KeyboardInterrupt:
                log.warning("calibration interrupted during %s; finished steps are saved", name)
                raise
            getattr(cal, name).values["inputs_sha256"] = inputs
            log.info("calibration step %s done in %.1f s", name, time.perf_counter() - t0)
            if out is not None:
                cal.save(out)
            bar.update()
    if out is not None and report:
        from calibration.report import write_report

        write_report(cal, out)
    return cal
