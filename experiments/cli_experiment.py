"""``hil experiment``: the studies. ``hil experiment paper --scale small|full --out DIR``
runs (or resumes) the paper study and writes ``results.json``, ``report.md`` and the
figures into DIR."""

from __future__ import annotations

import argparse
import os

from hil.cli_args import add_json, add_no_progress, add_out, print_json

__all__ = ["register"]


def _paper(args: argparse.Namespace) -> int:
    from experiments.paper import config_for, run_study
    from hil.output_paths import check_output_dir

    if args.seeds is not None and args.seeds < 1:
        raise ValueError(f"--seeds: expected a positive integer, got {args.seeds}")
    cfg = config_for(args.scale, args.seeds)
    if args.workers < 1:
        raise ValueError(f"--workers: expected a positive integer, got {args.workers}")
    if args.address and args.executor != "ray":
        raise ValueError("--address: only used with --executor ray")
    if args.data_dir is not None and not os.path.isdir(args.data_dir):
        raise ValueError(f"--data-dir: expected a folder, got {args.data_dir!r}")
    check_output_dir(args.out, "--out")
    run = run_study(cfg, args.out, executor=args.executor, workers=args.workers,
                    address=args.address, data_dir=args.data_dir,
                    progress=not args.no_progress)
    if args.json:
        print_json(args, {"scale": cfg.scale, "out": str(run.out), "computed": run.computed,
                          "skipped": run.skipped,
                          "report": os.path.join(str(run.out), "report.md"),
                          "results": os.path.join(str(run.out), "results.json"),
                          "verdicts": run.results["verdicts"]})
        return 0
    print(f"paper study ({cfg.scale}): {run.computed} cells computed, {run.skipped} reused")
    for v in run.results["verdicts"]:
        print(f"  {v['verdict']:<12} {v['claim']}")
    print(f"report: {os.path.join(str(run.out), 'report.md')}")
    print(f"results: {os.path.join(str(run.out), 'results.json')}")
    return 0


def register(subparsers) -> None:
    """Add ``experiment`` (with its ``paper`` study) to the ``hil`` command line."""
    p = subparsers.add_parser("experiment", help="run a study and write its report",
                              description="Run a study; results, report and figures go to --out.")
    studies = p.add_subparsers(dest="study", metavar="STUDY")
    paper = studies.add_parser(
        "paper", help="the paper's claims: synthetic sets, learnability, transfer, swapped "
        "spectra, feature distillation, designs beyond the paper",
        description="Reproduce the paper's claims. Resumable: cells already in "
        "OUT/cells are reused.")
    paper.add_argument("--scale", choices=("small", "paper", "full", "tiny"), default="small",
                       help="small: 4.4 min on 2 cores (measured); paper: the paper's data "
                       "sizes through closed forms (51 min on 2 cores, measured; a projection "
                       "is printed first); full: the paper's literal Adam protocol (about 15 "
                       "h on 2 cores); tiny: a smoke test")
    add_out(paper, "output folder (results.json, report.md, figures, cells/)", required=True,
            metavar="DIR")
    paper.add_argument("--seeds", type=int, default=None,
                       help="seeds per cell (default: 3; 2 at the tiny scale)")
    paper.add_argument("--executor", choices=("local", "ray"), default="local",
                       help="local process pool (default) or a Ray cluster")
    paper.add_argument("--address", default=None,
                       help="Ray cluster address (default: start Ray locally)")
    paper.add_argument("--workers", type=int, default=2,
                       help="local worker processes (default 2)")
    paper.add_argument("--data-dir", default=None,
                       help="test data folder (default: $HIL_DATA_DIR)")
    add_no_progress(paper)
    add_json(paper, "the verdicts and the paths of the report and results")
    paper.set_defaults(func=_paper)

    def _usage(args: argparse.Namespace) -> int:
        p.print_help()
        return 2

    p.set_defaults(func=_usage)
