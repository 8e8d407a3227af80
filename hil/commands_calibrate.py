"""``hil calibrate BENCH --out DIR [--steps settle,dark,geometry,lut,wavefront,model,decoders]``.

Opens the bench, runs the calibration steps in bench-day order with progress
(``calibration.run_calibration``), saves ``DIR/calibration.h5`` after every step and
writes ``DIR/report.md`` with figures. ``--resume`` continues the calibration already in
DIR: a step it holds that ran with the same device identities, settings and earlier
steps is skipped (one log line each), any other step named runs. Every step shows a
progress bar of its captures (``--no-progress``/``--quiet``: none); log lines are
routed through tqdm so they do not break the bars. On a simulated bench the achieved
errors against the hidden truth are printed too.

``--import-slmsuite FILE...`` measures nothing: it converts calibrations that slmsuite
saved (``calibration.slmsuite_import``) into steps of DIR's calibration, after checking
that they were taken on this bench's SLM and camera.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from hil.cli import UserError
from hil.output_paths import check_output_dir

if TYPE_CHECKING:
    from calibration import CalibrationSet


def _output_and_previous(args: argparse.Namespace, resume_does: str
                         ) -> tuple[Path, CalibrationSet | None]:
    """``--out`` checked as a writable directory, and the calibration ``--resume`` continues
    (None without it); refused when ``--out`` already holds one and neither ``--resume``
    nor ``--force`` says what to do with it."""
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out: {out} exists and is not a directory")
    check_output_dir(out, "--out")
    if args.resume:
        from calibration import CalibrationSet

        return out, CalibrationSet.load(out)
    if (out / "calibration.h5").exists() and not args.force:
        raise UserError(f"--out: {out} already holds a calibration; use --resume to "
                        f"{resume_does} or --force to replace it")
    return out, None


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from calibration import parse_steps, run_calibration
    from calibration.truth import errors_vs_truth
    from devices import DeviceError, open_bench

    if args.import_slmsuite:
        return _cmd_import_slmsuite(args)
    parse_steps(args.steps)  # a bad --steps is refused before the bench opens
    out, previous = _output_and_previous(args, "continue it")  # before the bench opens
    options = {}
    if args.options:
        try:
            options = json.loads(args.options)
        except json.JSONDecodeError as exc:
            raise UserError(f"--options: expected JSON, e.g. '{{\"geometry\": {{\"grid\": 4}}}}' "
                            f"({exc})") from None
    try:
        with open_bench(args.bench) as bench:
            # log lines go through tqdm.write while the bars are up, so they do not break them
            progress = not args.quiet
            redirect = logging_redirect_tqdm() if progress else contextlib.nullcontext()
            with redirect:
                # args.steps (None = all): a resume of all steps keeps imported ones
                cal = run_calibration(bench, out, steps=args.steps, size=args.size,
                                      calibration=previous, options=options,
                                      progress=progress, resume=args.resume)
            truth = getattr(bench, "truth", None)
            errors = errors_vs_truth(cal, bench) if truth else {}
    except DeviceError as exc:
        raise UserError(f"device: {exc}") from None
    print(f"calibration: {out / 'calibration.h5'} (steps: {', '.join(cal.steps())})")
    print(f"report: {out / 'report.md'}")
    for k, v in errors.items():
        print(f"  {k}: {v:.4g}")
    return 0


def _cmd_import_slmsuite(args: argparse.Namespace) -> int:
    """``--import-slmsuite FILE...``: slmsuite's saved calibrations -> our steps, saved."""
    from calibration.slmsuite_import import import_slmsuite
    from calibration.truth import errors_vs_truth
    from devices import DeviceError, open_bench

    if args.steps:
        raise UserError("--steps: not with --import-slmsuite (import first, then run "
                        "`hil calibrate ... --resume --steps ...` for the remaining steps)")
    out, previous = _output_and_previous(args, "add the imported steps to it")
    try:
        with open_bench(args.bench) as bench:
            cal = import_slmsuite(bench, args.import_slmsuite, size=args.size,
                                  calibration=previous)
            errors = errors_vs_truth(cal, bench) if getattr(bench, "truth", None) else {}
    except DeviceError as exc:
        raise UserError(f"device: {exc}") from None
    path = cal.save(out)
    print(f"calibration: {path} (steps: {', '.join(cal.steps())})")
    for name in cal.steps():
        step = getattr(cal, name)
        if step.values.get("imported_from") == "slmsuite":
            print(f"  {name}: imported from slmsuite {step.values['slmsuite_kind']} "
                  f"{step.values['slmsuite_file']}")
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
                   help="comma-separated steps (default: all but the optional ones): "
                        "dark,geometry,lut,wavefront,model,decoders; optional: settle "
                        "(measures the SLM settle time, which later steps and runs use)")
    p.add_argument("--size", type=int, default=32, help="model grid N (default 32)")
    p.add_argument("--resume", action="store_true",
                   help="continue the calibration in --out: steps already complete with the "
                        "same devices and settings are skipped, the others run")
    p.add_argument("--force", action="store_true", help="replace a calibration in --out")
    p.add_argument("--options", default=None,
                   help='JSON of per-step options, e.g. \'{"geometry": {"grid": 4}}\'')
    p.add_argument("--import-slmsuite", nargs="+", metavar="FILE", default=None,
                   help="import calibrations saved by slmsuite's FourierSLM.save_calibration "
                        "(.h5: fourier -> geometry, pixel -> lut, settle -> settle, "
                        "wavefront_superpixel -> source + wavefront) instead of measuring")
    p.add_argument("--no-progress", "--quiet", dest="quiet", action="store_true",
                   help="no progress bars (log lines only)")
    p.set_defaults(func=_cmd_calibrate)
