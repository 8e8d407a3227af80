"""Mask sub-commands: ``hil mask new | show | push | export`` (phase-mask files, hil.masks).

* ``new``: the twin's vortex + lens encoder (``--charges 1 3``) as a mask file;
* ``show``: a PNG of every channel and the metadata;
* ``push``: one channel on a bench's SLM, composed exactly as ``hil run`` shows it
  (``calibration.imaging.BenchImager``: steering grating, margin, the calibration's LUT
  and aberration correction) for a blank object;
* ``export``: the grey levels an SLM of ``--slm-shape`` shows for the bare mask (s×s
  blocks, centred, zero phase around it), as the PNG or BMP vendor software loads.

Every grey level comes from ``devices.base.SLM.set_phase`` (sign convention, wavelength
scaling, LUT): the same path for runs, calibration, push and export. Each action takes
``--json`` (what it wrote or showed, as JSON); ``hil mask`` alone prints this help.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from .cli import UserError
from .cli_args import add_json, add_out, positive_float, positive_int, print_json

__all__ = ["register"]


def _mask_path(text: str) -> Path:
    p = Path(text)
    if p.suffix not in (".npz", ".h5", ".hdf5"):
        raise argparse.ArgumentTypeError(f"expected a .npz or .h5 mask file name, got {text!r}")
    return p


def register(sub) -> None:
    top = sub.add_parser("mask", help="phase-mask files: new, show, push, export",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    m = top.add_subparsers(dest="mask_command", metavar="ACTION")

    def _usage(args: argparse.Namespace) -> int:  # `hil mask` alone: this help, not hil's
        top.print_help()
        return 2

    top.set_defaults(func=_usage)

    n = m.add_parser("new", help="write the twin's vortex + lens encoder as a mask file",
                     description="Write the dual-vortex encoder of the digital twin (vortex "
                     "m·θ plus the lens −R²/focal, one channel per charge) as a mask file; its "
                     "hash matches decoders trained with `hil train --charges ...`.")
    n.add_argument("--charges", type=int, nargs="+", default=[1, 3],
                   help="vortex charges, one channel each (default 1 3)")
    n.add_argument("--size", type=positive_int, default=32, help="model grid N (default 32)")
    n.add_argument("--xmax", type=positive_float, default=10.0, help="model half-width")
    n.add_argument("--focal", type=positive_float, default=8.0, help="model lens focal")
    n.add_argument("--phase-depth", type=positive_float, default=math.pi / 2,
                   help="object phase depth, radians (default π/2)")
    n.add_argument("--wav-um", type=positive_float, default=0.633,
                   help="wavelength the mask is for, µm (default 0.633)")
    n.add_argument("--out", "-o", type=_mask_path, required=True, metavar="FILE",
                   help="mask file to write (.npz/.h5)")
    n.add_argument("--force", action="store_true", help="overwrite an existing --out")
    add_json(n, "the file written, its charges, grid and signature hash")
    n.set_defaults(func=cmd_mask_new)

    s = m.add_parser("show", help="plot a mask file to PNG and print its metadata")
    s.add_argument("file", type=Path, help="mask file (.npz/.h5)")
    add_out(s, "PNG to write (default: FILE with .png)", metavar="PNG")
    add_json(s, "the metadata (provenance included) and the figure's path")
    s.set_defaults(func=cmd_mask_show)

    p = m.add_parser("push", help="show one mask channel on a bench's SLM, as `hil run` does",
                     description="Open the bench and show one channel of the mask on its SLM "
                     "for a blank object, composed as `hil run` composes it (steering grating, "
                     "margin, the calibration's LUT and aberration correction).")
    p.add_argument("bench", help="bench TOML file (or a shipped name such as sim.toml)")
    p.add_argument("mask", type=Path, help="mask file (.npz/.h5)")
    p.add_argument("--calibration", type=Path, default=None, metavar="DIR",
                   help="calibration directory or .h5 (LUT, aberrations, imaging settings)")
    p.add_argument("--channel", type=int, default=0, help="mask channel (sequential mode)")
    p.add_argument("--mode", choices=("sequential", "split"), default=None,
                   help="as `hil run --mode` (default: the calibration's, else sequential)")
    p.add_argument("--hold-s", type=float, default=0.0,
                   help="keep the mask shown this long before closing the bench (Ctrl-C ends)")
    p.add_argument("--save", type=Path, default=None, metavar="IMAGE",
                   help="also write the grey levels shown, as PNG or BMP")
    add_json(p, "what was shown (SLM, block, mode, grating, LUT, correction, grey range)")
    p.set_defaults(func=cmd_mask_push)

    e = m.add_parser("export", help="write the grey-level image(s) vendor SLM software loads",
                     description="Convert a mask to the grey levels an SLM of --slm-shape shows "
                     "(s×s blocks, centred, zero phase around it; zero phase = the top grey "
                     "level), one image per channel.")
    e.add_argument("mask", type=Path, help="mask file (.npz/.h5)")
    e.add_argument("--slm-shape", type=positive_int, nargs=2, required=True,
                   metavar=("H", "W"), help="SLM rows and columns")
    e.add_argument("--format", choices=("png", "bmp"), default=None,
                   help="image format (default: --out's suffix, else png)")
    e.add_argument("--bitdepth", type=positive_int, default=8,
                   help="SLM grey-level bits (default 8; above 8 needs png)")
    e.add_argument("--wav-design-um", type=positive_float, default=None,
                   help="wavelength at which the SLM's grey range is 2π (default: the mask's)")
    e.add_argument("--channel", type=int, default=None,
                   help="one channel only (default: every channel, one file each)")
    add_out(e, "image file; with several channels, _c<k> is added to its name "
            "(default: MASK's name)", metavar="IMAGE")
    add_json(e, "one record per image written")
    e.set_defaults(func=cmd_mask_export)


def cmd_mask_new(args: argparse.Namespace) -> int:
    from .masks import save_mask, vortex_mask

    if args.out.exists() and not args.force:
        raise UserError(f"--out: {args.out} exists; add --force to overwrite it")
    if args.size < 2:
        raise UserError(f"--size: expected a model grid of at least 2, got {args.size}")
    mask = vortex_mask(args.charges, size=args.size, xmax=args.xmax, focal=args.focal,
                       phase_depth=args.phase_depth, wav_um=args.wav_um)
    mask.provenance["command"] = "hil mask new"
    save_mask(mask, args.out)
    if args.json:
        print_json(args, {"mask": str(args.out), "charges": list(mask.charges),
                          "grid": mask.grid, "signature_hash": mask.signature_hash})
        return 0
    print(f"mask written to {args.out}: charges {mask.charges}, {mask.grid}x{mask.grid}, "
          f"sha256 {mask.signature_hash}")
    return 0


def cmd_mask_show(args: argparse.Namespace) -> int:
    from .masks import load_mask, plot_mask

    mask = load_mask(args.file)
    out = plot_mask(mask, args.out or args.file.with_suffix(".png"))
    meta = mask.metadata()
    if args.json:
        print_json(args, {**meta, "file": str(args.file), "figure": str(out)})
        return 0
    meta.pop("provenance", None)
    print(json.dumps(meta))
    print(f"figure: {out}")
    return 0


def _imaging_config(calibration: Any, mask: Any, mode: str | None) -> Any:
    """The imaging settings ``hil run`` would use with this calibration and mask."""
    from .run_checks import run_imaging_config

    return run_imaging_config(calibration, mask.grid, {"mode": mode})


def push_mask(bench: Any, mask: Any, *, calibration: Any = None, channel: int = 0,
              mode: str | None = None) -> tuple[Any, Any]:
    """Show one channel of ``mask`` on ``bench.slm`` for a blank object, as a run shows it.

    Returns (grey levels shown (a copy), the ``BenchImager`` that composed them).
    """
    import numpy as np

    from calibration.imaging import BenchImager

    imager = BenchImager(bench, calibration, mask, _imaging_config(calibration, mask, mode))
    imager.prepare()
    frames = imager.frames_per_image
    if not 0 <= channel < mask.channels:
        raise UserError(f"--channel: expected 0..{mask.channels - 1}, got {channel}")
    frame = 0 if frames == 1 else channel
    blank = np.zeros((mask.grid, mask.grid), np.float32)
    grey = bench.slm.set_phase(imager.slm_phase(blank, frame), settle=True)
    return np.array(grey, copy=True), imager


def cmd_mask_push(args: argparse.Namespace) -> int:
    from devices import open_bench
    from devices.errors import DeviceError

    from .masks import load_mask, write_grey_image

    if not math.isfinite(args.hold_s) or args.hold_s < 0:
        raise UserError(f"--hold-s: expected seconds >= 0, got {args.hold_s}")
    if args.save is not None and args.save.suffix.lower() not in (".png", ".bmp"):
        raise UserError(f"--save: expected a .png or .bmp file name, got {args.save}")
    mask = load_mask(args.mask)
    if not 0 <= args.channel < mask.channels:
        raise UserError(f"--channel: expected 0..{mask.channels - 1}, got {args.channel}")
    calibration = None
    if args.calibration is not None:
        from calibration.store import CalibrationSet

        calibration = CalibrationSet.load(args.calibration)
    try:
        with open_bench(args.bench) as bench:
            grey, imager = push_mask(bench, mask, calibration=calibration,
                                     channel=args.channel, mode=args.mode)
            if args.save is not None:
                write_grey_image(grey, args.save)
            if args.json:
                print_json(args, {
                    "mask": str(args.mask), "channel": args.channel, "slm": bench.slm.name,
                    "slm_shape": [int(v) for v in bench.slm.shape],
                    "block": int(imager.block), "mode": imager.mode,
                    "grating": [float(v) for v in imager.gratings[0]],
                    "lut": bool(imager.lut_applied),
                    "aberration_correction": bool(imager.correction_applied),
                    "grey_min": int(grey.min()), "grey_max": int(grey.max()),
                    "saved": None if args.save is None else str(args.save)})
            else:
                print(f"mask {args.mask} channel {args.channel} on '{bench.slm.name}' "
                      f"({bench.slm.shape[0]}x{bench.slm.shape[1]}): block {imager.block}, "
                      f"mode {imager.mode}, grating {imager.gratings[0]}, LUT "
                      f"{'yes' if imager.lut_applied else 'no'}, aberration correction "
                      f"{'yes' if imager.correction_applied else 'no'}, grey "
                      f"{int(grey.min())}..{int(grey.max())}"
                      + (f"; saved {args.save}" if args.save is not None else ""))
            if args.hold_s:
                time.sleep(args.hold_s)  # the SLM keeps the mask until the bench closes
    except DeviceError as exc:
        raise UserError(f"{args.bench}: {exc}") from exc
    return 0


def cmd_mask_export(args: argparse.Namespace) -> int:
    from .masks import load_mask, mask_grey_levels, write_grey_image

    mask = load_mask(args.mask)
    fmt = args.format
    if fmt is None:
        suffix = args.out.suffix.lower().lstrip(".") if args.out is not None else ""
        fmt = suffix if suffix in ("png", "bmp") else "png"
    if args.out is not None and args.out.suffix.lower() not in ("", f".{fmt}"):
        raise UserError(f"--out: {args.out} does not end in .{fmt} (--format {fmt})")
    if fmt == "bmp" and args.bitdepth > 8:
        raise UserError(f"--format: BMP holds 8-bit grey levels; use png for --bitdepth "
                        f"{args.bitdepth}")
    if args.bitdepth > 16:
        raise UserError(f"--bitdepth: expected 1..16, got {args.bitdepth}")
    if args.channel is not None and not 0 <= args.channel < mask.channels:
        raise UserError(f"--channel: expected 0..{mask.channels - 1}, got {args.channel}")
    rows, cols = args.slm_shape
    if mask.grid > rows or mask.grid > cols:
        raise UserError(f"--slm-shape: the mask's {mask.grid}x{mask.grid} grid does not fit "
                        f"{rows}x{cols} pixels")
    channels = [args.channel] if args.channel is not None else list(range(mask.channels))
    base = args.out if args.out is not None else args.mask.with_suffix("")
    base = base.with_suffix(f".{fmt}")
    written = []
    for k in channels:
        grey = mask_grey_levels(mask, (rows, cols), channel=k, bitdepth=args.bitdepth,
                                wav_design_um=args.wav_design_um)
        path = base if len(channels) == 1 else base.with_name(f"{base.stem}_c{k}{base.suffix}")
        write_grey_image(grey, path, fmt)
        written.append({"channel": k, "file": str(path), "shape": [rows, cols],
                        "bitdepth": args.bitdepth, "format": fmt, "grey_min": int(grey.min()),
                        "grey_max": int(grey.max())})
        if not args.json:
            print(f"channel {k}: {path} ({rows}x{cols}, {args.bitdepth}-bit, grey "
                  f"{int(grey.min())}..{int(grey.max())})")
    if args.json:
        print_json(args, written)
    return 0
