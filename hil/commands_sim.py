"""Simulation sub-commands: ``hil train``, ``hil eval``, ``hil stats``.

``hil train --on-bench BENCH`` is the deprecated spelling of ``hil bench-train BENCH``
(``hil.commands_bench_train``): it still runs, with a warning. ``--steps`` (the bench
iterations of that old spelling) is now ``--iterations``; ``--steps`` names calibration
steps only (``hil calibrate --steps``), and the old spelling here is refused with a
message that says so.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from simulation.atomic import write_text_atomic

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
from .commands_bench_train import (
    add_bench_training_options,
    add_twin_fit_options,
    check_train_outputs,
    cmd_bench_train,
    refuse_old_steps,
)

log = logging.getLogger(__name__)

DATASETS = ("mnist", "fashion-mnist", "cifar10", "cifar100", "digits")


def register(sub) -> None:
    p = sub.add_parser("train", help="fit a decoder on synthetic speckle (simulated optics)",
                       description="Generate speckle of density γ, encode it with the dual-vortex "
                       "twin and fit a linear decoder; write the decoder file. Fine-tuning "
                       "on a bench is `hil bench-train`.")
    add_twin_fit_options(p)
    p.add_argument("--intensity", action="store_true", help="intensity sensor, not magnitude")
    add_seed(p, help="seed of the speckle set, the held-out split and the fit")
    add_out(p, "decoder file to write (.pt)", required=True, metavar="FILE")
    p.add_argument("--learn-mask", action="store_true",
                   help="learn the phase masks end to end through the twin (started from the "
                   "vortex of --charges), fit the decoder for them, and write the mask file "
                   "next to the decoder")
    p.add_argument("--mask-steps", type=positive_int, default=100,
                   help="--learn-mask: Adam steps on masks and decoder together (default 100)")
    p.add_argument("--mask-lr", type=positive_float, default=1e-2,
                   help="--learn-mask: learning rate of the masks (default 0.01)")
    p.add_argument("--mask-count", type=positive_int, default=256,
                   help="--learn-mask: training images used in the end-to-end steps "
                   "(default 256, at most --count)")
    p.add_argument("--mask-out", type=Path, default=None,
                   help="--learn-mask: mask file to write (default: --out with .mask.npz)")
    add_json(p, "the decoder written and its fit")
    add_no_progress(p)
    p.add_argument("--on-bench", type=Path, default=None, metavar="BENCH",
                   help="deprecated: the old spelling of `hil bench-train BENCH` (same "
                   "options; --steps is now --iterations)")
    add_bench_training_options(p, shown=False)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="reconstruct a dataset with a decoder: SSIM, PSNR, MSE",
                       description="Encode a real image set with the decoder's encoder, decode it "
                       "and report SSIM/PSNR/MSE; write a PNG grid of originals and "
                       "reconstructions.")
    p.add_argument("decoder", type=Path, help="decoder file (.pt) from `hil train`, `hil "
                   "bench-train` or a calibration")
    p.add_argument("--dataset", choices=DATASETS, default="mnist")
    p.add_argument("--split", choices=("train", "test"), default="test")
    p.add_argument("--n", type=positive_int, default=1000, help="number of images")
    p.add_argument("--colour", choices=("grey", "channels"), default="grey",
                   help="CIFAR as grey (mean of RGB) or channel by channel")
    add_seed(p, default=None, help="seed of a random subset of --n images (default: the "
             "first --n)")
    add_out(p, "folder for the PNG grid and the JSON of the results", metavar="DIR")
    add_json(p, "the metrics")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("stats", help="H_SVD and Ω_k of a dataset or a synthetic set",
                       description="SVD entropy (σ/Σσ, log2) and Ω_k (magnitude-weighted mean "
                       "radial spatial frequency, cycles/pixel) per image, summarised.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", choices=DATASETS)
    src.add_argument("--gamma", type=positive_float, nargs="+", help="speckle γ value(s)")
    p.add_argument("--split", choices=("train", "test"), default="test")
    p.add_argument("--n", type=positive_int, default=500, help="images per set")
    p.add_argument("--power", action="store_true", help="power (σ², |F|²) normalisation")
    add_seed(p, help="seed of the image subset or the speckle sets")
    add_json(p, "one record per set")
    p.set_defaults(func=cmd_stats)


def cmd_train(args) -> int:
    from simulation import DualVortexEncoder, LinearDecoder, SensorModel, encode_batched, speckle

    refuse_old_steps(args)
    if args.on_bench is not None:
        print("hil: warning: `hil train --on-bench BENCH` is deprecated; use `hil bench-train "
              "BENCH` (same options)", file=sys.stderr)
        args.bench = args.on_bench
        return cmd_bench_train(args)
    for name in ("calibration", "holdout", "iterations"):
        if getattr(args, name) is not None:
            raise UserError(f"--{name}: only with `hil bench-train`")
    mask_out = check_train_outputs(args)
    progress = not args.no_progress
    t0 = time.perf_counter()
    sensor = SensorModel("intensity" if args.intensity else "magnitude")
    enc = DualVortexEncoder(tuple(args.charges), sensor=sensor)
    imgs = speckle(args.count, args.gamma, seed=args.seed)
    learned_from = None
    if args.learn_mask:
        learned_from = enc
        enc, losses = learn_masks(enc, imgs[:args.mask_count], steps=args.mask_steps,
                                  lr=args.mask_lr, alpha=args.alpha, seed=args.seed,
                                  progress=progress)
    patterns = encode_batched(enc, imgs)
    dec = LinearDecoder(alpha=args.alpha, method=args.method, epochs=args.epochs,
                        seed=args.seed, progress=progress).fit(patterns, imgs, encoder=enc)
    if mask_out is not None:
        from .masks import mask_from_encoder, save_mask

        mask = mask_from_encoder(enc, provenance={
            "command": "hil train --learn-mask", "decoder": str(args.out), "gamma": args.gamma,
            "count": args.count, "mask_count": min(args.mask_count, args.count),
            "mask_steps": args.mask_steps, "mask_lr": args.mask_lr, "seed": args.seed,
            "start": learned_from.signature(), "loss_first": losses[0],
            "loss_last": losses[-1]})
        mask.xmax, mask.focal = float(learned_from.xmax), float(learned_from.focal)
        save_mask(mask, mask_out)
    dec.save(args.out)
    dt = time.perf_counter() - t0
    if args.json:
        result = {"decoder": str(args.out), "method": args.method, "gamma": args.gamma,
                  "count": args.count, "charges": list(args.charges), "seed": args.seed,
                  "alpha": dec.alpha_, "train_mse": float(dec.train_mse_), "seconds": dt,
                  "mask": None if mask_out is None else str(mask_out)}
        if mask_out is not None:
            result.update(mask_steps=args.mask_steps, mask_loss_first=losses[0],
                          mask_loss_last=losses[-1])
        print_json(args, result)
        return 0
    alpha = f", alpha {dec.alpha_:.3g}" if dec.alpha_ is not None else ""
    print(f"decoder written to {args.out} ({args.method}, γ={args.gamma:g}, {args.count} images"
          f"{alpha}, train MSE {dec.train_mse_:.4g}, {dt:.1f} s)")
    if mask_out is not None:
        print(f"learned mask written to {mask_out} ({args.mask_steps} steps, end-to-end loss "
              f"{losses[0]:.4g} -> {losses[-1]:.4g}); use it with `hil run --mask {mask_out}`")
    return 0


def learn_masks(start, images, *, steps: int = 100, lr: float = 1e-2,
                lr_decoder: float = 1e-4, alpha: float | None = None, seed: int = 0,
                progress: bool = False):
    """Masks learned end to end through the twin, started from the encoder ``start``.

    As the paper study's learned design (experiments/paper/designs.py): a ridge decoder
    for ``start`` on ``images``, then Adam on the masks and the decoder weights together
    (mean squared error of the reconstruction), ``steps`` full-batch steps (a tqdm bar
    with ``progress``). Returns
    (a fixed ``PhaseEncoder`` named "learned" with the learned masks, the loss per step);
    refit the decoder for it afterwards (closed form).
    """
    import torch
    from tqdm.auto import tqdm

    from simulation import LinearDecoder, PhaseEncoder, encode_batched, normalise_for_decoder

    torch.manual_seed(seed)
    first = LinearDecoder(alpha=alpha, method="ridge", seed=seed, progress=False,
                          device="cpu").fit(encode_batched(start, images), images, encoder=start)
    enc = PhaseEncoder(start.masks_rad.detach().clone(), learnable=True,
                       phase_depth=start.phase_depth, sensor=start.sensor, name="learned")
    w = first.weight_.detach().clone().to(torch.float32).requires_grad_(True)
    opt = torch.optim.Adam([{"params": [enc.masks_rad], "lr": lr},
                            {"params": [w], "lr": lr_decoder}])
    x, y = images, images.reshape(len(images), -1)
    losses = []
    for _ in tqdm(range(int(steps)), desc="learn masks", unit="step", disable=not progress,
                  leave=False):
        opt.zero_grad(set_to_none=True)
        loss = ((normalise_for_decoder(enc(x)) @ w - y) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    fixed = PhaseEncoder(enc.masks_rad.detach().clone(), learnable=False,
                         phase_depth=start.phase_depth, sensor=start.sensor, name="learned")
    return fixed, losses


def evaluate(decoder_path: Path, dataset: str, split: str, n: int, colour: str = "grey",
             seed: int | None = None, out: Path | None = None) -> dict:
    """Reconstruct ``n`` images of a dataset with a saved decoder; metrics (+ PNG grid)."""
    from simulation import LinearDecoder, load_dataset, mse, psnr, reconstruct, ssim
    from simulation.encoders import encoder_from_signature

    dec = LinearDecoder.load(decoder_path)
    if dec.encoder_signature_ is None:
        raise UserError(
            f"{decoder_path}: the decoder records no encoder; refit it with `hil train`")
    try:  # the signature comes from the user's file: a malformed one is a user error
        enc = encoder_from_signature(dec.encoder_signature_)
    except (KeyError, TypeError, ValueError) as exc:
        detail = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
        raise UserError(f"{decoder_path}: its encoder signature cannot be rebuilt ({detail})"
                        ) from exc
    enc = enc.to(dec.device)
    images, _ = load_dataset(dataset, split, n=n, seed=seed, colour=colour)
    rec = reconstruct(images, enc, dec)
    s, p, m = ssim(images, rec), psnr(images, rec), mse(images, rec)
    result = {"decoder": str(decoder_path), "dataset": dataset, "split": split,
              "n": int(len(images)), "colour": colour,
              "ssim_mean": float(s.mean()), "ssim_std": float(s.std()),
              "psnr_mean_db": float(p[np.isfinite(p)].mean()), "mse_mean": float(m.mean())}
    if out is not None:
        from .figures import save_image_grid

        out.mkdir(parents=True, exist_ok=True)
        grid = save_image_grid([images, rec.clamp(0, 1)], ["original", "reconstruction"],
                               out / f"eval_{dataset}.png", n=8,
                               title=f"{dataset} {split}: mean SSIM {s.mean():.3f}",
                               captions=[f"SSIM {v:.2f}" for v in s[:8]])
        result["figure"] = str(grid)
        write_text_atomic(out / f"eval_{dataset}.json", json.dumps(result, indent=2))
    return result


def cmd_eval(args) -> int:
    if args.out is not None:
        from .output_paths import check_output_dir

        check_output_dir(args.out, "--out")
    r = evaluate(args.decoder, args.dataset, args.split, args.n, args.colour, args.seed, args.out)
    if args.json:
        print_json(args, r)
    else:
        print(f"{r['dataset']} {r['split']} ({r['n']} images): SSIM {r['ssim_mean']:.4f} "
              f"± {r['ssim_std']:.4f}, PSNR {r['psnr_mean_db']:.2f} dB, MSE {r['mse_mean']:.5f}")
        if "figure" in r:
            print(f"figure: {r['figure']}")
    return 0


def cmd_stats(args) -> int:
    from simulation import load_dataset, omega_k, speckle, svd_entropy

    sets = {}
    if args.dataset:
        images, _ = load_dataset(args.dataset, args.split, n=args.n, seed=args.seed,
                                 colour="grey")
        sets[f"{args.dataset}/{args.split}"] = images
    else:
        for g in args.gamma:
            sets[f"speckle γ={g:g}"] = speckle(args.n, g, seed=args.seed)
    weighting = "power" if args.power else "magnitude"
    rows = []
    for name, imgs in sets.items():
        h = svd_entropy(imgs, power=args.power).numpy()
        w = omega_k(imgs, weighting=weighting).numpy()
        rows.append({"set": name, "n": int(len(imgs)), "h_svd_mean": float(h.mean()),
                     "h_svd_std": float(h.std()), "omega_k_mean": float(w.mean()),
                     "omega_k_std": float(w.std()), "normalisation": weighting})
    if args.json:
        print_json(args, rows)
    else:
        print(f"{'set':<24} {'n':>6} {'H_SVD (log2)':>16} {'Ω_k (cyc/px)':>18}")
        for r in rows:
            print(f"{r['set']:<24} {r['n']:>6} {r['h_svd_mean']:>8.3f} ± {r['h_svd_std']:<5.3f}"
                  f" {r['omega_k_mean']:>9.4f} ± {r['omega_k_std']:.4f}")
    return 0
