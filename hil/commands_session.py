"""Session sub-commands: ``hil run`` (a bench run); masks are in ``hil.commands_mask``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .cli_args import (
    add_json,
    add_no_progress,
    add_out,
    add_seed,
    nonnegative_int,
    positive_float,
    positive_int,
    print_json,
)
from .commands_sim import DATASETS


def register(sub) -> None:
    p = sub.add_parser(
        "run", help="image a data set on a bench: display, capture, decode, record",
        description="Show every image of a data set through the encoder on the bench's SLM, "
        "capture it, decode it, and record the run in --out: run.json, captures.h5 "
        "(appended and flushed after every capture), results.json and report.md. A run that "
        "was killed or stopped by a device fault continues with --resume.")
    p.add_argument("bench", help="bench TOML file (or a shipped name such as sim.toml)")
    p.add_argument("--decoder", type=Path, default=None,
                   help="decoder file (.pt); default: the calibration's best decoder (by its "
                   "held-out captured score). "
                   "One the calibration did not write is refused (it was not fitted through "
                   "the calibrated bench model) unless --force")
    p.add_argument("--calibration", type=Path, default=None, metavar="DIR",
                   help="calibration directory or .h5 (dark frame, geometry, LUT, aberrations)")
    p.add_argument("--dataset", choices=DATASETS, default="mnist")
    p.add_argument("--split", choices=("train", "test"), default="test")
    p.add_argument("--n", type=positive_int, default=500, help="number of images")
    add_seed(p, help="seed of the random subset of --n images")
    add_out(p, "run folder (run.json, captures.h5, results.json, report.md)", required=True,
            metavar="DIR")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--mode", choices=("sequential", "split"), default=None,
                   help="dual vortex as two captures or two SLM halves (default: the "
                   "calibration's imaging mode, else sequential)")
    p.add_argument("--geometry", choices=("calibrated", "nominal"), default=None,
                   help="camera->model map (default: calibrated when available)")
    p.add_argument("--exposure-s", type=positive_float, default=None,
                   help="fixed camera exposure in seconds; without it the run adjusts the "
                   "exposure between images when captures saturate or are too dark "
                   "(hil.capture_watch, recorded per capture)")
    p.add_argument("--averaging", type=positive_int, default=None,
                   help="frames averaged per capture (default: the calibration's, else 1)")
    p.add_argument("--retries", type=int, default=None,
                   help="retries of a failed capture (default: the calibration's, else 2)")
    p.add_argument("--mask", type=Path, default=None, help="learned encoder mask file")
    p.add_argument("--classifier", type=Path, default=None,
                   help="a LinearSoftmaxClassifier.save file (weights + JSON; nothing in it "
                   "runs), to report the accuracy of the reconstructions")
    add_no_progress(p)
    add_json(p, "the run's results.json, with the run folder, report and exit status")
    p.add_argument("--drift-every", type=nonnegative_int, default=50, metavar="K",
                   help="show a reference pattern every K images, measure the drift of the "
                   "camera image against the one shown first and correct the geometry on the "
                   "fly; first, with a calibrated geometry, measure the move since the "
                   "calibration on a few of its gratings (calibration.drift; recorded in run.json "
                   "and per capture). Costs one image's frames every K (K = 50: 2 %%). "
                   "Default 50; 0: off")
    p.add_argument("--store-frames", action="store_true",
                   help="also store the full camera frames (gzip) besides the model windows "
                   "the decoder reads")
    p.add_argument("--serial", action="store_true",
                   help="capture without pipelining (compose, write, settle, grab, one frame "
                   "after another); for comparison and for drivers that misbehave when "
                   "written during an exposure")
    p.add_argument("--force", action="store_true",
                   help="run although the decoder, mask, calibration, bench or imaging "
                   "settings do not belong together (recorded in run.json)")
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from .session import RunConfig, run_session

    if args.retries is not None and args.retries < 0:
        raise ValueError(f"--retries: expected an integer >= 0, got {args.retries}")
    cfg = RunConfig(bench=args.bench, decoder=args.decoder, out=args.out,
                    calibration=args.calibration, dataset=args.dataset, split=args.split,
                    n=args.n, seed=args.seed, mode=args.mode, geometry=args.geometry,
                    exposure_s=args.exposure_s, averaging=args.averaging, retries=args.retries,
                    mask=args.mask, classifier=args.classifier, resume=args.resume,
                    progress=not args.no_progress, force=args.force,
                    drift_every=args.drift_every, store_frames=args.store_frames,
                    pipelined=not args.serial)
    status = run_session(cfg)
    res = (args.out / "results.json")
    r = json.loads(res.read_text()) if res.is_file() else {}
    if args.json:
        print_json(args, {"out": str(args.out), "exit_status": status,
                          "report": str(args.out / "report.md"), **r})
    elif res.is_file():
        if "ssim_mean" in r:
            print(f"{r['n_captured']} of {r['n_planned']} images: mean SSIM {r['ssim_mean']:.4f}"
                  + (f", accuracy {r['accuracy']:.4f}" if "accuracy" in r else "")
                  + f"; report: {args.out / 'report.md'}")
    return status
