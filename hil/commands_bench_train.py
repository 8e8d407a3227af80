"""``hil bench-train BENCH --out FILE.pt``: fine-tune a decoder on a bench's own captures.

A verb of its own, not an option of ``hil train``: ``train`` fits a decoder in the twin
(simulated optics, no device opened, always writes its file); ``bench-train`` opens a
bench, captures fresh speckle batches through it and refits the decoder on the captures
(closed-form ridge pulled toward the starting weight; with ``--learn-mask`` Adam on the
decoder and the masks, the masks' gradient through the twin), and writes the result only
if the mean SSIM on ``--holdout`` held-out captured speckles improves
(``hil.bench_training``). It starts from ``--calibration``'s best decoder, else from a
twin fit made with ``--gamma/--count/--method/--alpha/--charges``.

``hil train --on-bench BENCH`` is the older spelling and still runs (with a warning);
its ``--steps`` is now ``--iterations``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .cli import UserError
from .cli_args import (
    add_json,
    add_no_progress,
    add_out,
    add_seed,
    positive_float,
    positive_int,
    print_json,
)

__all__ = ["register", "cmd_bench_train", "add_twin_fit_options", "add_bench_training_options",
           "check_train_outputs", "refuse_old_steps"]


# the options and output checks that `train` and `bench-train` share (hil.commands_sim
# imports them from here: the import goes one way)


def refuse_old_steps(args: argparse.Namespace) -> None:
    """``--steps N`` of the old ``hil train --on-bench``: refused, naming its new spelling."""
    if getattr(args, "old_steps", None) is not None:
        raise UserError(f"--steps: renamed --iterations (bench iterations: `hil bench-train "
                        f"BENCH --iterations {args.old_steps}`); --steps now only names "
                        "calibration steps (`hil calibrate BENCH --steps dark,geometry`)")


def add_twin_fit_options(p: argparse.ArgumentParser) -> None:
    """The speckle set and decoder fit that ``train`` makes (and ``bench-train`` starts from
    when the calibration has no decoder)."""
    p.add_argument("--gamma", type=positive_float, default=15.0, help="speckle γ (default 15)")
    p.add_argument("--count", type=positive_int, default=10000,
                   help="training images (default 10000)")
    p.add_argument("--method", choices=("ridge", "adam"), default="ridge",
                   help="ridge: closed form (default); adam: the paper protocol")
    p.add_argument("--epochs", type=positive_int, default=5000,
                   help="Adam epochs (default 5000, the paper's)")
    p.add_argument("--alpha", type=float, default=None,
                   help="ridge regularisation (default: chosen on a held-out split)")
    p.add_argument("--charges", type=int, nargs="+", default=[1, 3],
                   help="vortex charges, one channel each (default 1 3)")


def add_bench_training_options(p: argparse.ArgumentParser, *, shown: bool = True) -> None:
    """The options of ``hil bench-train`` that ``hil train`` does not have (accepted, not
    shown, by the deprecated ``hil train --on-bench``)."""
    def h(text: str) -> str:
        return text if shown else argparse.SUPPRESS

    p.add_argument("--calibration", type=Path, default=None, metavar="DIR",
                   help=h("calibration directory: start from its best decoder and image "
                          "through its geometry, LUT and imaging settings"))
    p.add_argument("--iterations", type=positive_int, default=None,
                   help=h("bench iterations, each one batch of 32 fresh speckle images "
                          "captured (default 5)"))
    p.add_argument("--holdout", type=positive_int, default=None,
                   help=h("held-out captured speckles that decide whether the result is "
                          "kept (default 32)"))
    # the old spelling of --iterations: accepted by the parser, refused by the command
    p.add_argument("--steps", dest="old_steps", default=None, help=argparse.SUPPRESS)


def check_train_outputs(args: argparse.Namespace) -> Path | None:
    """Check ``--out`` (a .pt file), ``--mask-out`` and ``--count`` before any work; return
    the mask file ``--learn-mask`` writes (None without it)."""
    if args.out.suffix != ".pt":
        raise UserError(f"--out: expected a .pt file name, got {args.out}")
    mask_out = None
    if args.learn_mask:
        mask_out = args.mask_out or args.out.with_suffix(".mask.npz")
        if mask_out.suffix not in (".npz", ".h5", ".hdf5"):
            raise UserError(f"--mask-out: expected a .npz or .h5 file name, got {mask_out}")
    elif args.mask_out is not None:
        raise UserError("--mask-out: only with --learn-mask")
    if args.method == "ridge" and args.alpha is None and args.count < 2:
        raise UserError(f"--count: choosing the ridge alpha on a held-out split needs at least "
                        f"2 images, got {args.count}; give more, or --alpha")
    from .output_paths import check_output_file

    check_output_file(args.out, "--out")  # before any work, not after it
    if mask_out is not None:
        check_output_file(mask_out, "--mask-out")
    return mask_out



def register(sub: Any) -> None:
    p = sub.add_parser(
        "bench-train", help="fine-tune a decoder on a bench's captures; kept only if better",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bench", type=Path, help="bench TOML file (or a shipped name such as sim.toml)")
    add_out(p, "decoder file to write (.pt), only if the held-out captured SSIM improves; "
            "the history goes to FILE.bench.json either way", required=True, metavar="FILE")
    add_bench_training_options(p)
    p.add_argument("--learn-mask", action="store_true",
                   help="learn the phase masks on the bench too (written to --mask-out, kept "
                   "only with the decoder)")
    p.add_argument("--mask-lr", type=positive_float, default=1e-2,
                   help="--learn-mask: learning rate of the masks (default 0.01)")
    p.add_argument("--mask-out", type=Path, default=None,
                   help="--learn-mask: mask file to write (default: --out with .mask.npz)")
    add_twin_fit_options(p)
    add_seed(p, help="seed of the training and held-out speckle sets")
    add_json(p, "the outcome (kept or not, held-out SSIM before and after, files)")
    add_no_progress(p)
    p.set_defaults(func=cmd_bench_train)


def cmd_bench_train(args: argparse.Namespace) -> int:
    """Run ``hil.bench_training.train_on_bench_cli`` for ``hil bench-train`` (and the
    deprecated ``hil train --on-bench``); with ``--json`` print its history."""
    from .bench_training import train_on_bench_cli

    refuse_old_steps(args)
    args.mask_out = check_train_outputs(args)
    # the names hil.bench_training reads
    args.on_bench, args.steps = args.bench, args.iterations or 5
    status = train_on_bench_cli(args)
    if args.json:
        side = Path(args.out).with_suffix(".bench.json")
        hist = json.loads(side.read_text())
        print_json(args, {"decoder": str(args.out) if hist["kept"] else None,
                          "mask": hist.get("mask"), "history": str(side), **hist})
    return status
