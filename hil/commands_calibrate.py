"""``hil calibrate BENCH --out DIR [--steps settle,dark,geometry,lut,wavefront,model,decoders]``.

Opens the bench, runs the calibration steps in bench-day order with progress
(``calibration.run_calibration``), saves ``DIR/calibration.h5`` after every step and
writes ``DIR/report.md`` with figures. ``--resume`` continues the calibration already in
DIR: a step it holds that ran with the same device identities, settings and earlier
steps is skipped (one log line each), any other step named runs. Every step shows a
progress bar of its captures (``--no-progress``, or its older spelling ``--quiet``:
none); log lines are routed through tqdm so they do not break the bars. On a simulated
bench the achieved errors against the hidden truth are printed too; ``--json`` prints
the calibration file, its steps, the report and those errors as JSON.

``--import-slmsuite FILE...`` measures nothing: it converts calibrations that slmsuite
saved (``calibration.slmsuite_import``) into steps of DIR's calibration, after checking
that they were taken on this bench's SLM and camera.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from hil.cli import UserError
from hil.cli_args import add_json, add_no_progress, add_out, positive_int, print_json
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


def _print_result(args: argparse.Namespace, path: Path, cal: CalibrationSet,
                  errors: dict[str, float], report: Path | None,
                  imported: dict[str, str] | None = None) -> None:
    """The outcome: JSON with ``--json``, else lines."""
    if args.json:
        result = {"calibration": str(path), "steps": list(cal.steps()),
                  "report": None if report is None else str(report),
                  "errors_vs_truth": errors}
        if imported is not None:
            result["imported"] = imported
        print_json(args, result)
        return
    print(f"calibration: {path} (steps: {', '.join(cal.steps())})")
    if report is not None:
        print(f"report: {report}")
    for name, what in (imported or {}).items():
        print(f"  {name}: imported from slmsuite {what}")
    for k, v in errors.items():
        print(f"  {k}: {v:.4g}")


def _cmd_calibrate(args: argparse.Namespace) -> int:
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
            # log lines go through tqdm.write (hil.cli.main), so they do not break the bars;
            # args.steps (None = all): a resume of all steps keeps imported ones
            cal = run_calibration(bench, out, steps=args.steps, size=args.size,
                                  calibration=previous, options=options,
                                  progress=not args.no_progress, resume=args.resume)
            truth = getattr(bench, "truth", None)
            errors = errors_vs_truth(cal, bench) if truth else {}
    except DeviceError as exc:
        raise UserError(f"device: {exc}") from None
    _print_result(args, out / "calibration.h5", cal, errors, out / "report.md")
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
    imported = {}
    for name in cal.steps():
        step = getattr(cal, name)
        if step.values.get("imported_from") == "slmsuite":
            imported[name] = f"{step.values['slmsuite_kind']} {step.values['slmsuite_file']}"
    _print_result(args, path, cal, errors, None, imported)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "calibrate", help="calibrate a bench (dark, geometry, LUT, wavefront, model, decoders)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bench", help="bench TOML file (or a shipped name such as sim.toml)")
    add_out(p, "output folder (calibration.h5, report.md, figures)", required=True,
            metavar="DIR")
    from calibration.step_registry import steps_help  # light: no torch

    p.add_argument("--steps", default=None, help=steps_help().replace("%", "%%"))
    p.add_argument("--size", type=positive_int, default=32, help="model grid N (default 32)")
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
    add_no_progress(p, quiet_alias=True)
    add_json(p, "the calibration file, its steps, the report and the errors against a "
             "simulated bench's hidden truth")
    p.set_defaults(func=_cmd_calibrate)
