"""Device sub-commands: `hil devices list`, `hil devices check BENCH`, `hil devices schema`.

``list`` says which backends are usable here. For VISA instruments that is what pyvisa
itself finds: ``pyvisa.ResourceManager()`` (the default: an IVI library such as NI-VISA,
else pyvisa-py) and ``ResourceManager("@py")`` are opened and closed, and a backend is
usable only if its resource manager opened (``visa_libraries``); the error pyvisa gave
is reported otherwise.

``check`` opens the bench and reports what a bench day starts with (``measure_bench``):
one frame's saturation, the dark level (laser output off, then restored), the frame rate
against the camera's bound and the power meter's reading; ``--json`` for machines.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import sys
import time
from typing import Any

from hil.cli_args import add_json, positive_int, print_json

# the bench file's visa_library values probed by `hil devices list`: (value, what it is)
VISA_LIBRARIES = (("", "IVI VISA or pyvisa-py"), ("@py", "pyvisa-py"))


def visa_libraries() -> list[dict[str, Any]]:
    """What pyvisa really finds here, for each ``visa_library`` value of a bench file.

    Each is opened as ``pyvisa.ResourceManager(spec)`` and closed again; one row per value:
    ``{"visa_library", "usable", "library", "error"}``. pyvisa reports a missing library as
    ``ValueError`` ("Could not locate a VISA implementation", "Wrapper not found: No package
    named pyvisa_py") and a library it found but could not load as ``OSError``
    (``pyvisa.errors.LibraryError``); those make the row unusable, with pyvisa's message.
    Without pyvisa itself every row is unusable.
    """
    rows = []
    try:
        import pyvisa
    except ImportError as exc:  # pragma: no cover - pyvisa is a dependency
        return [{"visa_library": spec, "usable": False, "library": None,
                 "error": f"pyvisa is not installed ({exc})"} for spec, _ in VISA_LIBRARIES]
    for spec, _ in VISA_LIBRARIES:
        try:
            rm = pyvisa.ResourceManager(spec) if spec else pyvisa.ResourceManager()
        except (ValueError, OSError) as exc:
            rows.append({"visa_library": spec, "usable": False, "library": None,
                         "error": " ".join(str(exc).split())})
            continue
        try:
            lib = rm.visalib
            rows.append({"visa_library": spec, "usable": True, "error": None,
                         "library": f"{type(lib).__name__} {lib.library_path}".strip()})
        finally:
            rm.close()
    return rows


def _ours() -> list[dict[str, Any]]:
    have_sim = importlib.util.find_spec("pyvisa_sim") is not None
    visa = visa_libraries()
    rows = [
        {"kind": k, "backend": "sim", "sdk": "slmsuite (simulated)", "available": True,
         "note": "slmsuite Simulated* + noise, flaws, faults"}
        for k in ("slm", "camera")
    ]
    for k in ("laser", "power_meter"):
        rows.append({"kind": k, "backend": "sim", "sdk": "pyvisa-sim", "available": have_sim,
                     "note": "shipped YAML (devices/sim/instruments.yaml)"})
        for v, (_, what) in zip(visa, VISA_LIBRARIES, strict=True):
            found = f"found {v['library']}" if v["usable"] else f"pyvisa: {v['error']}"
            rows.append({"kind": k, "backend": "visa:<resource>", "sdk": f"pyvisa + {what}",
                         "available": v["usable"], "visa_library": v["visa_library"],
                         "note": f"visa_library = \"{v['visa_library']}\": {found}"})
    return rows


def backend_table() -> list[dict[str, Any]]:
    """Every backend a bench file can name, and whether it is usable here."""
    from devices.slmsuite_adapter import (
        CAMERA_BACKENDS,
        NOT_FROM_A_BENCH_FILE,
        SLM_BACKENDS,
        sdk_available,
    )

    rows = _ours()
    for table in (SLM_BACKENDS, CAMERA_BACKENDS):
        for b in table.values():
            ok, why = sdk_available(b)
            rows.append({"kind": b.kind, "backend": f"slmsuite:{b.cls}",
                         "sdk": b.sdk or "none", "available": ok, "note": why})
    for cls, why in NOT_FROM_A_BENCH_FILE.items():
        rows.append({"kind": "slm/camera" if cls == "Template" else "slm",
                     "backend": f"(slmsuite {cls})", "sdk": "-", "available": False,
                     "note": f"not from a bench file: {why}"})
    return rows


def _cmd_list(args: argparse.Namespace) -> int:
    rows = backend_table()
    if args.json:
        print_json(args, rows)
        return 0
    print(f"{'kind':<12}{'backend':<28}{'usable':<8}{'SDK':<44}note")
    for r in rows:
        print(f"{r['kind']:<12}{r['backend']:<28}{'yes' if r['available'] else 'no':<8}"
              f"{r['sdk'][:43]:<44}{r['note']}")
    return 0


def _frame_stats(frame: Any, bitdepth: int) -> dict[str, Any]:
    import numpy as np

    f = np.asarray(frame)
    full = 2**bitdepth - 1
    return {
        "shape": list(f.shape), "dtype": str(f.dtype), "min": int(f.min()), "max": int(f.max()),
        "mean": float(f.mean()), "std": float(f.std()),
        "saturated_fraction": float(np.count_nonzero(f >= full) / f.size),
    }


SATURATED_WARN = 0.001  # fraction of saturated pixels above which the check warns
LOW_SIGNAL_WARN = 0.05  # peak above the dark level, as a fraction of full scale


def measure_bench(bench: Any, *, frames: int = 5, averaging: int = 1) -> dict[str, Any]:
    """What a bench day starts with: the signal frame (saturation), the dark level (laser
    output switched off, then back on as it was), the frame rate over ``frames`` grabs
    against the camera's own bound, and the power meter's reading where there is one.

    Without a laser controller the dark level is not measured (``dark.measured`` False,
    with the reason): the beam cannot be blocked from here.
    """
    import numpy as np

    cam = bench.camera
    full = 2**cam.bitdepth - 1
    frame = cam.get_image(averaging=averaging)
    stats = _frame_stats(frame, cam.bitdepth)
    capture = cam.last_capture_info.as_dict()
    # frame rate: consecutive single grabs after a flush
    cam.flush()
    t0 = time.perf_counter()
    for _ in range(frames):
        cam.get_image()
    elapsed = time.perf_counter() - t0
    period = float(cam.frame_period_s())
    rate = {"frames": frames, "seconds": round(elapsed, 4),
            "measured_hz": frames / elapsed if elapsed > 0 else None,
            "bound_hz": 1.0 / period if period > 0 else None,
            "exposure_s": float(cam.get_exposure())}
    # dark level: laser off, one frame, output restored only if it was on
    laser = bench.laser
    if laser is None:
        dark: dict[str, Any] = {"measured": False, "reason": "no laser controller: block the "
                                "beam and run `hil calibrate BENCH --steps dark`"}
    else:
        was_on = laser.is_output_on()
        laser.output_off()
        try:
            cam.flush()
            d = np.asarray(cam.get_image(averaging=averaging), dtype=np.float64)
        finally:
            if was_on:
                laser.output_on()
        dark = {"measured": True, "laser_output_restored": bool(was_on),
                "mean_counts": float(d.mean()), "std_counts": float(d.std()),
                "max_counts": float(d.max()), "level_fraction": float(d.mean() / full)}
    power = None
    if bench.power_meter is not None:
        power = {"power_W": float(bench.power_meter.read_power_W()),
                 "laser_output_on": None if laser is None else bool(laser.is_output_on())}
    warn = []
    if stats["saturated_fraction"] > SATURATED_WARN:
        warn.append(f"saturation: {100 * stats['saturated_fraction']:.2f} % of the pixels at "
                    f"full scale ({full}); lower the exposure or the laser power")
    floor = dark.get("mean_counts", float(stats["min"]))
    if (stats["max"] - floor) < LOW_SIGNAL_WARN * full:
        warn.append(f"low signal: peak {stats['max']} counts, {stats['max'] - floor:.0f} above "
                    f"the dark level (< {100 * LOW_SIGNAL_WARN:g} % of full scale); raise the "
                    "exposure or the laser power")
    return {"frame": stats, "capture": capture, "frame_rate": rate, "dark": dark,
            "power_meter": power, "warnings": warn}


def _cmd_check(args: argparse.Namespace) -> int:
    from devices import open_bench

    t0 = time.perf_counter()
    # --json: stdout carries the JSON only (drivers that print go to stderr; hil.cli.main
    # does this too, this covers a direct call)
    quiet = contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext()
    # a DeviceError leaves the block with the laser off; hil.cli prints it in one line
    with quiet, open_bench(args.bench) as bench:
        info = bench.info()
        measured = measure_bench(bench, frames=args.frames, averaging=args.averaging)
    report = {"bench": info, **measured, "seconds": round(time.perf_counter() - t0, 3)}
    if args.json:
        print_json(args, report)
        return 0
    stats, capture, rate, dark = (report[k] for k in ("frame", "capture", "frame_rate", "dark"))
    print(f"bench {info['name']!r} from {info['source']}"
          + (f" (simulated, seed {info['seed']})" if info["simulated"] else ""))
    for key in ("slm", "camera", "laser", "power_meter"):
        d = info[key]
        if d is None:
            print(f"  {key:<12} -")
            continue
        ident = d.get("identity") or d.get("device_id")
        extra = ""
        if key in ("slm", "camera"):
            extra = f" {d['shape'][0]}x{d['shape'][1]} px, {d['bitdepth']} bit, pitch " \
                    f"{d['pitch_um'][0]:g} um"
        print(f"  {key:<12} {d['backend']:<24} {ident}{extra}")
    print(f"  frame        {stats['shape'][0]}x{stats['shape'][1]} {stats['dtype']}: "
          f"min {stats['min']} max {stats['max']} mean {stats['mean']:.2f} std {stats['std']:.2f}"
          f" saturated {100 * stats['saturated_fraction']:.3f} %")
    print(f"  capture      exposure {capture['exposure_s']:g} s, averaging {capture['averaging']},"
          f" dropped {capture['dropped_frames']}, {capture['duration_s'] * 1000:.1f} ms")
    bound = f"{rate['bound_hz']:.1f}" if rate["bound_hz"] else "unknown"
    print(f"  frame rate   {rate['measured_hz']:.1f} frames/s over {rate['frames']} frames "
          f"(camera bound {bound} frames/s)")
    if dark["measured"]:
        print(f"  dark level   {dark['mean_counts']:.2f} counts mean, {dark['std_counts']:.2f} "
              f"rms ({100 * dark['level_fraction']:.2f} % of full scale, laser off"
              + (", back on)" if dark["laser_output_restored"] else ")"))
    else:
        print(f"  dark level   not measured: {dark['reason']}")
    if report["power_meter"] is not None:
        pm = report["power_meter"]
        print(f"  power meter  {1000 * pm['power_W']:.4g} mW")
    for w in report["warnings"]:
        print(f"  warning: {w}")
    print(f"closed all devices ({report['seconds']:.2f} s)")
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    from devices.config import describe_schema

    print(describe_schema())
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("devices", help="list device backends, check a bench file",
                       description="SLMs, cameras and VISA instruments (see devices/).")
    dsub = p.add_subparsers(dest="devices_command", metavar="ACTION")
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])

    pl = dsub.add_parser("list", help="every backend and whether it is usable here",
                         description="Every backend a bench file can name and whether it is "
                         "usable here: slmsuite backends whose SDK imports, VISA instruments "
                         "for each visa_library whose pyvisa resource manager opens.")
    add_json(pl, "one record per backend")
    pl.set_defaults(func=_cmd_list)

    pc = dsub.add_parser("check", help="open a bench: identities, saturation, dark level, "
                         "frame rate, power meter; close",
                         description="BENCH is a TOML file or a shipped example "
                         "(sim.toml, sim-realistic.toml, holoeye-basler.toml, ...).")
    pc.add_argument("bench", help="bench TOML file or shipped example name")
    pc.add_argument("--averaging", type=positive_int, default=1, help="frames to average")
    pc.add_argument("--frames", type=positive_int, default=5,
                    help="frames grabbed to measure the frame rate (default 5)")
    add_json(pc, "the bench's identities and measurements")
    pc.set_defaults(func=_cmd_check)

    ps = dsub.add_parser("schema", help="every key a bench file may hold, with defaults")
    ps.set_defaults(func=_cmd_schema)
