"""Device sub-commands: `hil devices list`, `hil devices check BENCH`, `hil devices schema`."""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from typing import Any


def _ours() -> list[dict[str, Any]]:
    have_sim = importlib.util.find_spec("pyvisa_sim") is not None
    have_py = importlib.util.find_spec("pyvisa_py") is not None
    rows = [
        {"kind": k, "backend": "sim", "sdk": "slmsuite (simulated)", "available": True,
         "note": "slmsuite Simulated* + noise, flaws, faults"}
        for k in ("slm", "camera")
    ]
    for k in ("laser", "power_meter"):
        rows.append({"kind": k, "backend": "sim", "sdk": "pyvisa-sim", "available": have_sim,
                     "note": "shipped YAML (devices/sim/instruments.yaml)"})
        rows.append({"kind": k, "backend": "visa:<resource>", "sdk": "pyvisa + a VISA library",
                     "available": True,
                     "note": "pyvisa-py installed" if have_py else "needs NI-VISA, or pyvisa-py "
                     "with visa_library = \"@py\""})
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
        print(json.dumps(rows, indent=2))
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


def _cmd_check(args: argparse.Namespace) -> int:
    from devices import open_bench

    t0 = time.perf_counter()
    # a DeviceError leaves the block with the laser off; hil.cli prints it in one line
    with open_bench(args.bench) as bench:
        info = bench.info()
        frame = bench.camera.get_image(averaging=args.averaging)
        stats = _frame_stats(frame, bench.camera.bitdepth)
        capture = bench.camera.last_capture_info.as_dict()
    report = {"bench": info, "frame": stats, "capture": capture,
              "seconds": round(time.perf_counter() - t0, 3)}
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
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
    print(f"closed all devices ({report['seconds']:.2f} s)")
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    from devices.config import describe_schema

    print(describe_schema())
    return 0


def _averaging(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {v}")
    return v


def register(sub: Any) -> None:
    p = sub.add_parser("devices", help="list device backends, check a bench file",
                       description="SLMs, cameras and VISA instruments (see devices/).")
    dsub = p.add_subparsers(dest="devices_command", metavar="ACTION")
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])

    pl = dsub.add_parser("list", help="every backend and whether its SDK is importable here")
    pl.add_argument("--json", action="store_true", help="machine-readable output")
    pl.set_defaults(func=_cmd_list)

    pc = dsub.add_parser("check", help="open a bench, print identities, take one frame, close",
                         description="BENCH is a TOML file or a shipped example "
                         "(sim.toml, sim-realistic.toml, holoeye-basler.toml, ...).")
    pc.add_argument("bench", help="bench TOML file or shipped example name")
    pc.add_argument("--averaging", type=_averaging, default=1, help="frames to average")
    pc.add_argument("--json", action="store_true", help="machine-readable output")
    pc.set_defaults(func=_cmd_check)

    ps = dsub.add_parser("schema", help="every key a bench file may hold, with defaults")
    ps.set_defaults(func=_cmd_schema)
