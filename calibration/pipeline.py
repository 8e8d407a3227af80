"""A bench day of calibration: run the registered steps in order, save after each, report.

``run_calibration(bench, out_dir, steps=...)`` runs the steps of
``calibration.step_registry`` in their order (``step_order()``; the built-ins of
``calibration.steps``: (``settle``, only when asked: the SLM's settle time) -> ``dark``
-> ``geometry`` -> ``lut`` -> ``wavefront`` (source + aberrations, and the spot shift
that corrects the geometry's centre on read) -> ``model`` -> ``decoders``).

Each step's ``run`` gets a ``StepContext`` and returns new records (those of its
``produces``); it never changes another step's record: the pipeline fingerprints the
other records before the step and refuses (``CalibrationError``) a step that changed one.
Every step checks its own fit (``calibration.quality``) and stops with a
``CalibrationQualityError`` (a ``CalibrationError``) that names the step, the measured
value, the limit and what to do. The steps after ``dark`` subtract its background model
(``CalibrationSet.dark_model``: offset + rate · exposure) at whatever exposure they set.

A step whose inputs are missing raises ``CalibrationError`` naming the step to run
first; ``calibration=`` continues an earlier ``CalibrationSet`` (the steps asked for are
run again). The set is saved (atomically) after every step, so an interrupted run
keeps what it finished. With ``out_dir`` the report (Markdown + PNG) is written at the end.

Resume: a step's primary record holds ``inputs_sha256`` (``step_inputs``): the devices'
stable identities, the grid size, the step's options and the records it ``requires``
(their inputs and when they were made). With ``resume=True`` a step whose records are all
present with the same inputs (and whose ``*_path`` values name files present in
``out_dir``) is skipped (one log line each); a step whose inputs changed runs again, and
so does every step after it that reads it. A step imported from another tool (``values``
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

from calibration import step_registry as registry
from calibration.capture import device_identities, progress_bar, show_progress
from calibration.step_registry import CalibrationStep, StepContext
from calibration.store import CalibrationError, CalibrationSet, StepResult
from simulation.validate import check_count

__all__ = [
    "run_calibration",
    "STEP_ORDER",  # noqa: F822 - the module's __getattr__ (read from the registry)
    "parse_steps", "step_inputs", "stable_identities", "run_step",
]

log = logging.getLogger(__name__)


def __getattr__(name: str) -> Any:
    """``STEP_ORDER`` (every step, in order), ``OPTIONAL_STEPS`` and ``STEP_DEPENDS``
    (step -> the records it reads), read from the registry each time."""
    if name == "STEP_ORDER":
        return registry.step_order()
    if name == "OPTIONAL_STEPS":
        return tuple(s.name for s in registry.registered_steps() if s.optional)
    if name == "STEP_DEPENDS":
        return {s.name: s.requires for s in registry.registered_steps()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    size, the step's options (imaging config included) and, for each record it requires,
    that record's own inputs and the time it was made (a re-run changes its results)."""
    upstream = {}
    for dep in registry.get_step(name).requires:
        step = cal.record(dep)
        upstream[dep] = None if step is None else [step.values.get("inputs_sha256"),
                                                   float(step.time)]
    doc = {"step": name, "devices": identity, "size": int(size),
           "options": options, "upstream": upstream}
    text = json.dumps(_canonical(doc), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _complete(step: CalibrationStep, cal: CalibrationSet, inputs: str,
              out: Path | None) -> bool:
    """Whether ``step``'s records are all in ``cal``, its primary one with the same inputs,
    and (with ``out``) every file its ``*_path`` values name is there."""
    records = [cal.record(r) for r in step.produces]
    if any(r is None for r in records) \
            or cal.record(step.primary).values.get("inputs_sha256") != inputs:
        return False
    if out is not None:
        for rec in records:
            for key, rel in rec.values.items():
                if key.endswith("_path") and isinstance(rel, str) \
                        and not (out / rel).is_file():
                    return False
    return True


def _imported(step: CalibrationStep, cal: CalibrationSet) -> bool:
    """Whether ``step`` was imported (e.g. ``calibration.slmsuite_import``): a resume of
    all steps keeps it; naming it in ``steps`` measures it again."""
    rec = cal.record(step.primary)
    return rec is not None and bool(rec.values.get("imported_from"))


def parse_steps(steps: str | Sequence[str] | None) -> tuple[str, ...]:
    """"dark,geometry" or a list -> the steps in bench-day order; None = all but the
    optional ones."""
    order = registry.step_order()
    if steps is None:
        return tuple(s.name for s in registry.registered_steps() if not s.optional)
    items = [s.strip() for s in (steps.split(",") if isinstance(steps, str) else steps)]
    items = [s for s in items if s]
    bad = [s for s in items if s not in order]
    if bad or not items:
        raise ValueError(f"steps: expected a comma-separated subset of {','.join(order)}, "
                         f"got {','.join(items) if items else 'nothing'!r}")
    return tuple(s for s in order if s in items)


def _fingerprint(rec: StepResult) -> str:
    """A digest of a record's values, residuals, data and time (arrays by their bytes)."""
    h = hashlib.sha256()

    def feed(x: Any) -> None:
        if hasattr(x, "detach"):
            x = x.detach().cpu().numpy()
        if isinstance(x, np.ndarray):
            h.update(f"a{x.dtype.str}{x.shape}".encode())
            h.update(np.ascontiguousarray(x).tobytes() if x.dtype != object else repr(x).encode())
        elif isinstance(x, dict):
            h.update(b"{")
            for k in sorted(x, key=str):
                h.update(repr(k).encode())
                feed(x[k])
            h.update(b"}")
        elif isinstance(x, (list, tuple)):
            h.update(b"[")
            for v in x:
                feed(v)
            h.update(b"]")
        else:
            h.update(repr(x).encode())

    feed({"values": rec.values, "residuals": rec.residuals, "data": rec.data,
          "time": rec.time})
    return h.hexdigest()


def run_step(step: CalibrationStep, ctx: StepContext,
             options: dict[str, Any]) -> dict[str, StepResult]:
    """Run ``step`` and return its records by name; refused (``CalibrationError``): a
    result that is not its ``produces`` or a step that changed another step's record."""
    cal = ctx.cal
    others = {n: _fingerprint(cal.record(n)) for n in cal.steps() if n not in step.produces}
    result = registry.resolve(step.run)(ctx, **options)
    results = [result] if isinstance(result, StepResult) else list(result)
    if not all(isinstance(r, StepResult) for r in results):
        raise TypeError(f"step {step.name!r}: run returned "
                        f"{[type(r).__name__ for r in results]}, expected StepResults")
    if len(results) == 1 and len(step.produces) == 1:
        out = {step.produces[0]: results[0]}
    else:
        out = {r.name: r for r in results}
        if sorted(out) != sorted(step.produces) or len(out) != len(results):
            raise CalibrationError(f"step {step.name!r}: returned records "
                                   f"{[r.name for r in results]}, expected one each of "
                                   f"{list(step.produces)}")
    changed = [n for n, digest in others.items() if _fingerprint(cal.record(n)) != digest]
    if changed:
        raise CalibrationError(f"step {step.name!r} changed the record(s) {changed} of other "
                               "steps: a step returns new records and never edits another's "
                               "(derive such values on read instead)")
    return out


def run_calibration(bench: Any, out_dir: str | Path | None = None, *,
                    steps: str | Sequence[str] | None = None, size: int = 32,
                    calibration: CalibrationSet | None = None,
                    options: dict[str, dict[str, Any]] | None = None,
                    progress: bool = True, report: bool = True,
                    imaging: Any = None, resume: bool = False) -> CalibrationSet:
    """Run the calibration ``steps`` on ``bench``; save to ``out_dir`` after each step.

    ``options`` maps a step name to keyword arguments of its routine, e.g.
    ``{"geometry": {"grid": 4}}``. ``imaging``: the ``ImagingConfig`` the steps that
    image (``uses_imaging``: model, decoders) use and record; default
    ``ImagingConfig(size=size)``. ``progress`` shows a bar of steps and, inside each step,
    a bar of its captures. ``resume``: a step already in ``calibration`` whose recorded
    ``inputs_sha256`` (``step_inputs``) equals this run's is skipped (one log line each);
    any other step asked for runs. Returns the ``CalibrationSet``.
    """
    todo = parse_steps(steps)
    order = registry.step_order()
    opts = dict(options or {})
    unknown = set(opts) - set(order)
    if unknown:
        raise ValueError(f"options: unknown steps {sorted(unknown)}; expected {order}")
    check_count(size, "size", 2)
    cal = calibration if calibration is not None else CalibrationSet()
    if cal.settle is not None:  # every step waits the measured time
        bench.slm.settle_time_s = cal.settle_time_s
    cal.devices = device_identities(bench)
    identity = stable_identities(cal.devices)
    out = Path(out_dir) if out_dir is not None else None
    with show_progress(progress), progress_bar(len(todo), "calibrate", unit="step") as bar:
        for name in todo:
            step = registry.get_step(name)
            bar.set_postfix_str(name)
            step_opts = dict(opts.get(name, {}))
            if step.uses_imaging and imaging is not None:
                step_opts.setdefault("imaging", imaging)
            inputs = step_inputs(name, identity, size, step_opts, cal)
            if resume and _complete(step, cal, inputs, out):
                log.info("calibration step %s: already complete with the same inputs "
                         "(devices, settings, earlier steps); skipped", name)
                bar.update()
                continue
            if resume and steps is None and _imported(step, cal):
                log.info("calibration step %s: imported (%s); kept (name it in --steps to "
                         "measure it instead)", name,
                         cal.record(step.primary).values["imported_from"])
                bar.update()
                continue
            if resume and cal.record(step.primary) is not None:
                log.info("calibration step %s: its inputs changed since it ran (devices, "
                         "settings or an earlier step); running it again", name)
            t0 = time.perf_counter()
            log.info("calibration step %s ...", name)
            ctx = StepContext(bench=bench, cal=cal, size=size, out_dir=out, imaging=imaging)
            try:
                records = run_step(step, ctx, step_opts)
            except KeyboardInterrupt:
                log.warning("calibration interrupted during %s; finished steps are saved", name)
                raise
            records[step.primary].values["inputs_sha256"] = inputs
            for rec_name, rec in records.items():
                cal.set(rec_name, rec)
            log.info("calibration step %s done in %.1f s", name, time.perf_counter() - t0)
            if out is not None:
                cal.save(out)
            bar.update()
    if out is not None and report:
        from calibration.report import write_report

        write_report(cal, out)
    return cal
