"""Simulation sub-commands: ``hil train``, ``hil eval``, ``hil stats``."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from .cli import UserError
from .cli_args import positive_float, positive_int

log = logging.getLogger(__name__)

DATASETS = ("mnist", "fashion-mnist", "cifar10", "cifar100", "digits")


def register(sub) -> None:
    p = sub.add_parser("train", help="fit a decoder on synthetic speckle (simulated optics)",
                       description="Generate speckle of density γ, encode it with the dual-vortex "
                       "twin and fit a linear decoder; write the decoder file.")
    p.add_argument("--gamma", type=positive_float, default=15.0, help="speckle γ (default 15)")
    p.add_argument("--count", type=positive_int, default=10000, help="training images")
    p.add_argument("--method", choices=("ridge", "adam"), default="ridge",
                   help="ridge: closed form (default); adam: the paper protocol")
    p.add_argument("--epochs", type=positive_int, default=5000, help="Adam epochs (paper: 5000)")
    p.add_argument("--alpha", type=float, default=None,
                   help="ridge regularisation (default: chosen on a held-out split)")
    p.add_argument("--charges", type=int, nargs="+", default=[1, 3],
                   help="vortex charges, one channel each (default 1 3)")
    p.add_argument("--intensity", action="store_true", help="intensity sensor, not magnitude")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", "-o", type=Path, required=True, help="decoder file to write (.pt)")
    p.add_argument("--on-bench", type=Path, default=None, metavar="BENCH_TOML",
                   help="fine-tune on a bench (forward on the bench, backward through the twin), "
                   "starting from --calibration's best decoder; the result is kept only if "
                   "the SSIM on held-out captured speckles improves")
    p.add_argument("--holdout", type=positive_int, default=None,
                   help="--on-bench: held-out captured speckles that decide whether the "
                   "result is kept (default 32)")
    p.add_argument("--calibration", type=Path, default=None, metavar="DIR",
                   help="calibration directory for --on-bench")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="--on-bench: number of hardware-in-the-loop steps")
    p.add_argument("--learn-mask", action="store_true",
                   help="learn the phase masks end to end through the twin (started from the "
                   "vortex of --charges), fit the decoder for them, and write the mask file "
                   "next to the decoder; with --on-bench, learn them on the bench (kept only "
                   "if the held-out captured SSIM improves)")
    p.add_argument("--mask-steps", type=positive_int, default=100,
                   help="--learn-mask: Adam steps on masks and decoder together (default 100)")
    p.add_argument("--mask-lr", type=positive_float, default=1e-2,
                   help="--learn-mask: learning rate of the masks (default 0.01)")
    p.add_argument("--mask-count", type=positive_int, default=256,
                   help="--learn-mask: training images used in the end-to-end steps "
                   "(default 256, at most --count)")
    p.add_argument("--mask-out", type=Path, default=None,
                   help="--learn-mask: mask file to write (default: --out with .mask.npz)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="reconstruct a dataset with a decoder: SSIM, PSNR, MSE",
                       description="Encode a real image set with the decoder's encoder, decode it "
                       "and report SSIM/PSNR/MSE; write a PNG grid of originals and "
                       "reconstructions.")
    p.add_argument("decoder", type=Path, help="decoder file from `hil train`")
    p.add_argument("--dataset", choices=DATASETS, default="mnist")
    p.add_argument("--split", choices=("train", "test"), default="test")
    p.add_argument("--n", type=positive_int, default=1000, help="number of images")
    p.add_argument("--colour", choices=("grey", "channels"), default="grey",
                   help="CIFAR as grey (mean of RGB) or channel by channel")
    p.add_argument("--seed", type=int, default=None, help="random subset (default: the first n)")
    p.add_argument("--out", "-o", type=Path, default=None, help="directory for the PNG and json")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=cmd_stats)


def cmd_train(args) -> int:
    from simulation import DualVortexEncoder, LinearDecoder, SensorModel, encode_batched, speckle

    if args.out.suffix != ".pt":
        raise UserError(f"--out: expected a .pt file name, got {args.out}")
    mask_out = None
    if args.on_bench is None and args.holdout is not None:
        raise UserError("--holdout: only with --on-bench")
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
    if args.on_bench is not None:
        from .bench_training import train_on_bench_cli

        args.mask_out = mask_out
        return train_on_bench_cli(args)
    t0 = time.perf_counter()
    sensor = SensorModel("intensity" if args.intensity else "magnitude")
    enc = DualVortexEncoder(tuple(args.charges), sensor=sensor)
    imgs = speckle(args.count, args.gamma, seed=args.seed)
    learned_from = None
    if args.learn_mask:
        learned_from = enc
        enc, losses = learn_masks(enc, imgs[:args.mask_count], steps=args.mask_steps,
                                  lr=args.mask_lr, alpha=args.alpha, seed=args.seed)
    patterns = encode_batched(enc, imgs)
    dec = LinearDecoder(alpha=args.alpha).fit(patterns, imgs, method=args.method, encoder=enc,
                                              epochs=args.epochs, seed=args.seed)
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
    alpha = f", alpha {dec.alpha_:.3g}" if dec.alpha_ is not None else ""
    print(f"decoder written to {args.out} ({args.method}, γ={args.gamma:g}, {args.count} images"
          f"{alpha}, train MSE {dec.train_mse_:.4g}, {dt:.1f} s)")
    if mask_out is not None:
        print(f"learned mask written to {mask_out} ({args.mask_steps} steps, end-to-end loss "
              f"{losses[0]:.4g} -> {losses[-1]:.4g}); use it with `hil run --mask {mask_out}`")
    return 0


def learn_masks(start, images, *, steps: int = 100, lr: float = 1e-2,
                lr_decoder: float = 1e-4, alpha: float | None = None, seed: int = 0):
    """Masks learned end to end through the twin, started from the encoder ``start``.

    As the paper study's learned design (experiments/paper/designs.py): a ridge decoder
    for ``start`` on ``images``, then Adam on the masks and the decoder weights together
    (mean squared error of the reconstruction), ``steps`` full-batch steps. Returns
    (a fixed ``PhaseEncoder`` named "learned" with the learned masks, the loss per step);
    refit the decoder for it afterwards (closed form).
    """
    import torch

    from simulation import LinearDecoder, PhaseEncoder, encode_batched, normalise_for_decoder

    torch.manual_seed(seed)
    first = LinearDecoder(alpha=alpha, device="cpu").fit(
        encode_batched(start, images), images, method="ridge", encoder=start, seed=seed,
        progress=False)
    enc = PhaseEncoder(start.masks_rad.detach().clone(), learnable=True,
                       phase_depth=start.phase_depth, sensor=start.sensor, name="learned")
    w = first.weight_.detach().clone().to(torch.float32).requires_grad_(True)
    opt = torch.optim.Adam([{"params": [enc.masks_rad], "lr": lr},
                            {"params": [w], "lr": lr_decoder}])
    x, y = images, images.reshape(len(images), -1)
    losses = []
    for _ in range(int(steps)):
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
        (out / f"eval_{dataset}.json").write_text(json.dumps(result, indent=2))
    return result


def cmd_eval(args) -> int:
    if args.out is not None:
        from .output_paths import check_output_dir

        check_output_dir(args.out, "--out")
    r = evaluate(args.decoder, args.dataset, args.split, args.n, args.colour, args.seed, args.out)
    if args.json:
        print(json.dumps(r, indent=2))
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
        print(json.dumps(rows, indent=2))
    else:
        print(f"{'set':<24} {'n':>6} {'H_SVD (log2)':>16} {'Ω_k (cyc/px)':>18}")
        for r in rows:
            print(f"{r['set']:<24} {r['n']:>6} {r['h_svd_mean']:>8.3f} ± {r['h_svd_std']:<5.3f}"
                  f" {r['omega_k_mean']:>9.4f} ± {r['omega_k_std']:.4f}")
    return 0
