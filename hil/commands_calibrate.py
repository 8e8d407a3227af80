"""``hil calibrate BENCH --out DIR [--steps dark,geometry,lut,wavefront,model,decoders]``.

Opens the bench, runs the calibration steps in bench-day order with progress
(``calibration.run_calibration``), saves ``DIR/calibration.h5`` after every step and
writes ``DIR/report.md`` with figures. ``--resume`` continues the calibration already in
DIR (only the steps named are re-run). On a simulated bench the achieved errors against
the hidden truth are printed too.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hil.cli import UserError


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from calibration import CalibrationSet, parse_steps, run_calibration
    from calibration.truth import errors_vs_truth
    from devices import DeviceError, open_bench

    steps = parse_steps(args.steps)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out: {out} exists and is not a directory")
    previous = None
    if args.resume:
        previous = CalibrationSet.load(out)
    elif (out / "calibration.h5").exists() and not args.force:
        raise UserError(f"--out: {out} already holds a calibration; use --resume to continue "
                        "it or --force to replace it")
    options = {}
    if args.options:
        try:
            options = json.loads(args.options)
        except json.JSONDecodeError as exc:
            raise UserError(f"--options: expected JSON, e.g. '{{\"geometry\": {{\"grid\": 4}}}}' "
                            f"({exc})") from None
    try:
        with open_bench(args.bench) as bench:
            cal = run_calibration(bench, out, steps=steps, size=args.size, calibration=previous,
                                  options=options, progress=not args.quiet)
            truth = getattr(bench, "truth", None)
            errors = errors_vs_truth(cal, bench) if truth else {}
    except DeviceError as exc:
        raise UserError(f"device: {exc}") from None
    print(f"calibration: {out / 'calibration.h5'} (steps: {', '.join(cal.steps())})")
    print(f"report: {out / 'report.md'}")
    for k, v in errors.items():
        print(f"  {k}: {v:.4g}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "calibrate", help="calibrate a bench (dark, geometry, LUT, wavefront, model, decoders)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bench", help="bench TOML file (or a shipped name such as sim.toml)")
    p.add_argument("--out", required=True, help="output directory (calibration.h5, report)")
    p.add_argument("--steps", default=None,
                   help="comma-separated steps (default: all): "
                        "dark,geometry,lut,wavefront,model,decoders")
    p.add_argument("--size", type=int, default=32, help="model grid N (default 32)")
    p.add_argument("--resume", action="store_true",
                   help="continue the calibration in --out (earlier steps are kept)")
    p.add_argument("--force", action="store_true", help="replace a calibration in --out")
    p.add_argument("--options", default=None,
                   help='JSON of per-step options, e.g. \'{"geometry": {"grid": 4}}\'')
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_calibrate)
