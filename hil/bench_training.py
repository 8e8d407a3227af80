"""Hardware-in-the-loop training: forward pass on the bench, backward pass through the twin.

``physics_aware(bench_fn, twin_fn)`` is the straight-through primitive of physics-aware
training (Wright et al., Nature 2022) and of camera-in-the-loop holography (the same
estimator): a ``torch.autograd.Function`` whose forward returns what the *bench*
produced and whose backward is the vector-Jacobian product of the differentiable *twin*
evaluated at the same inputs. Loss and activations come from reality, gradients from
the model.

``BenchEncoder`` applies it to the encoded-diffraction imager: its forward displays the
images through the current masks on the bench (``calibration.imaging.BenchImager``) and
returns the decoder's per-channel normalised patterns; its backward differentiates the
twin (``simulation`` optics) with respect to the masks. Normalising inside both
functions puts bench and twin in the same units, so the twin's Jacobian applies.

``fine_tune_on_bench`` trains the decoder (it sees the real captures: with fixed masks
a closed-form ridge pulled toward the starting weight, else Adam) and, optionally, a
learned mask (through the twin) on synthetic speckle shown on the bench: the bench
generates its own training set, no test image is needed. ``hil bench-train`` calls
``train_on_bench_cli``: it starts from the calibration's best decoder and keeps the
result only if a held-out captured score improves.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from simulation.atomic import write_text_atomic
from simulation.ridge_prior import ridge_toward

log = logging.getLogger(__name__)

__all__ = ["physics_aware", "BenchEncoder", "twin_patterns", "normalise_channels",
           "ridge_toward", "fine_tune_on_bench", "heldout_score", "train_on_bench_cli"]


def physics_aware(bench_fn: Callable[..., torch.Tensor], twin_fn: Callable[..., torch.Tensor]
                  ) -> Callable[..., torch.Tensor]:
    """The straight-through function: value of ``bench_fn``, gradient of ``twin_fn``.

    Both take the same tensors and return tensors of the same shape. ``bench_fn`` runs
    without gradients (it may be hardware); ``twin_fn`` must be differentiable.
    """

    class _PhysicsAware(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *inputs: torch.Tensor) -> torch.Tensor:
            ctx.save_for_backward(*inputs)
            with torch.no_grad():
                out = bench_fn(*(x.detach() for x in inputs))
            return torch.as_tensor(out, dtype=torch.float32)

        @staticmethod
        def backward(ctx, grad_out: torch.Tensor):
            inputs = tuple(x.detach() for x in ctx.saved_tensors)
            with torch.enable_grad():
                _, vjp = torch.autograd.functional.vjp(twin_fn, inputs, grad_out)
            return tuple(g if need else None
                         for g, need in zip(vjp, ctx.needs_input_grad, strict=True))

    return _PhysicsAware.apply


def normalise_channels(p: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> each channel min-max to [-1, 1] (the decoder's input scaling),
    keeping the (B, C, H, W) shape; differentiable."""
    from simulation.sensor import normalise_channels as _flat

    return _flat(p).view(p.shape)


def twin_patterns(masks_rad: torch.Tensor, images: torch.Tensor,
                  phase_depth: float = math.pi / 2) -> torch.Tensor:
    """The twin's magnitude patterns (B, C, N, N) for masks (C, N, N), differentiable
    (`simulation.encoders.twin_field`; the magnitude kept smooth at zero)."""
    from simulation.encoders import twin_field

    f = twin_field(images, masks_rad, phase_depth)
    return (f.real**2 + f.imag**2 + 1e-12).sqrt()


class BenchEncoder(nn.Module):
    """Encoder layer: bench forward, twin backward (see the module docstring)."""

    def __init__(self, imager: Any, masks_rad: torch.Tensor, *, learnable: bool = True,
                 phase_depth: float = math.pi / 2) -> None:
        super().__init__()
        m = torch.as_tensor(masks_rad, dtype=torch.float32).detach().clone()
        self.masks_rad = nn.Parameter(m, requires_grad=learnable)
        self.imager, self.phase_depth = imager, float(phase_depth)
        self.captures = 0
        self._shown: torch.Tensor | None = None

    def _bench(self, masks: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        if self._shown is None or not torch.equal(self._shown, masks):
            self.imager.set_encoder_masks(masks)
            self._shown = masks.clone()
        self.captures += len(images)
        return normalise_channels(torch.from_numpy(self.imager.capture(images).patterns))

    def _twin(self, masks: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        return normalise_channels(twin_patterns(masks, images, self.phase_depth))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return physics_aware(self._bench, self._twin)(self.masks_rad, images)


def _decoder_input(p: torch.Tensor) -> torch.Tensor:
    b, c, h, w = p.shape  # channels side by side, row-major (normalise_for_decoder layout)
    return p.permute(0, 2, 1, 3).reshape(b, c * h * w)


def fine_tune_on_bench(
    encoder: BenchEncoder,
    weight: torch.Tensor,
    *,
    steps: int = 5,
    batch: int = 32,
    gamma: float = 15.0,
    lr: float = 3e-4,
    mask_lr: float = 1e-2,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune the decoder weight (C·N², N²) and, if learnable, the encoder masks.

    Each step shows ``batch`` fresh speckle images (density ``gamma``, seeded) on the bench.
    Fixed masks: the decoder is refitted in closed form on every capture so far, as a
    ridge regression pulled toward the twin-trained weight (``ridge_toward``, α from the
    decoders' one grid on a 20 % split): exact and cheap, since the decoder is linear.
    Learnable masks: one Adam step per batch on both, the decoder's gradient exact (it sees
    the captures), the masks' through the twin (``physics_aware``). Returns {"weight",
    "masks_rad", "loss", "alpha", "alpha_search", "captures", "seconds"}: ``alpha`` and
    ``alpha_search`` (``ridge_toward``'s history: ``alpha_grid``, ``val_mse``) are the
    last refit's, None and {} with learnable masks; ``loss`` is each batch's MSE before
    that step's update.
    """
    from simulation import speckle

    prior = torch.as_tensor(weight, dtype=torch.float32).detach().clone()
    W = nn.Parameter(prior.clone())
    learn_mask = bool(encoder.masks_rad.requires_grad)
    opt = None
    if learn_mask:
        opt = torch.optim.Adam([{"params": [W], "lr": lr},
                                {"params": [encoder.masks_rad], "lr": mask_lr}])
    n = encoder.imager.size
    it = range(int(steps))
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="bench training", unit="step")
    losses, xs, ys, alpha, search, t0 = [], [], [], None, {}, time.perf_counter()
    for step in it:
        imgs = speckle(batch, gamma, size=n, seed=seed * 100003 + step + 1)
        target = imgs.reshape(len(imgs), -1)
        if learn_mask:
            opt.zero_grad(set_to_none=True)
            loss = ((_decoder_input(encoder(imgs)) @ W - target) ** 2).mean()
            loss.backward()
            opt.step()
        else:
            with torch.no_grad():
                x = _decoder_input(encoder(imgs))
                loss = ((x @ W - target) ** 2).mean()
                xs.append(x)
                ys.append(target)
                w, alpha, search = ridge_toward(torch.cat(xs), torch.cat(ys), prior,
                                                seed=seed)
                W.data.copy_(w)
        losses.append(float(loss.detach()))
        log.debug("bench step %d: loss %.5g", step, losses[-1])
    return {"weight": W.detach(), "masks_rad": encoder.masks_rad.detach().clone(),
            "loss": losses, "alpha": alpha, "alpha_search": search,
            "captures": encoder.captures,
            "seconds": time.perf_counter() - t0}


def _start_decoder(args: Any, cal: Any, bench: Any) -> tuple[Any, Any, str]:
    """(decoder, encoder, what it is): the calibration's best decoder when it has one,
    else a twin ridge fit (through the calibration's fitted model when there is one)."""
    from simulation import DualVortexEncoder, LinearDecoder, encode_batched, speckle
    from simulation.encoders import encoder_from_signature

    if cal is not None and cal.decoders is not None:
        path = cal.decoder_file("best")
        dec = LinearDecoder.load(path)
        enc = encoder_from_signature(dec.encoder_signature_)
        return dec, enc, f"the calibration's best decoder {path.name}"
    enc = DualVortexEncoder(tuple(args.charges))
    imgs = speckle(args.count, args.gamma, seed=args.seed)
    if cal is not None and cal.geometry is not None:
        from calibration.decoders import twin_training_patterns
        from calibration.imaging import BenchImager

        block = BenchImager(bench, cal, enc, cal.imaging_config).block
        pats = twin_training_patterns(cal, imgs, enc, block)
        what = f"a twin {args.method} fit through the calibration's model"
    else:
        pats, what = encode_batched(enc, imgs), f"a twin {args.method} fit"
    dec = LinearDecoder(alpha=getattr(args, "alpha", None), method=args.method,
                        epochs=getattr(args, "epochs", 5000), seed=args.seed
                        ).fit(pats, imgs, encoder=enc)
    return dec, enc, what


def heldout_score(imager: Any, decoder: Any, weight: torch.Tensor, images: torch.Tensor
                  ) -> float:
    """Mean SSIM of ``weight`` (the decoder's layout) on ``images`` captured through
    ``imager`` as it is now (its current masks)."""
    from simulation import ssim

    x = _decoder_input(normalise_channels(torch.from_numpy(imager.capture(images).patterns)))
    rec = (x @ weight.to(x.dtype).cpu()).reshape(len(images), *decoder.image_shape_)
    return float(ssim(images, rec).mean())


def train_on_bench_cli(args: Any) -> int:
    """``hil bench-train BENCH [--calibration DIR] --iterations N [--learn-mask]`` (N comes
    as ``args.steps``; ``hil.commands_bench_train``).

    Starts from the calibration's best decoder (``best_decoder``; without a decoders step,
    a twin fit through its model), fine-tunes it on the bench (and the masks with
    ``--learn-mask``), and keeps the result only if the mean SSIM on ``--holdout`` held-out
    captured speckles improves: then writes the decoder (.pt), the masks (``--mask-out``)
    and a ``.bench.json`` history; else says so, writes only the history (``"kept":
    false``) and the old decoder stays the one to use.
    """
    from calibration.imaging import BenchImager
    from devices.bench import open_bench
    from simulation import PhaseEncoder, speckle

    if args.on_bench is not None and not Path(args.on_bench).exists():
        from devices.config import resolve_bench_path

        resolve_bench_path(args.on_bench)  # a shipped name, or FileNotFoundError
    cal = None
    if args.calibration is not None:
        from calibration.store import CalibrationSet

        cal = CalibrationSet.load(args.calibration)
    steps = int(args.steps or 5)
    learn = bool(getattr(args, "learn_mask", False))
    n_hold = int(getattr(args, "holdout", None) or 32)
    held = speckle(n_hold, args.gamma, seed=args.seed + 7_919_001)  # not a training seed
    with open_bench(args.on_bench) as bench:
        dec, enc, start = _start_decoder(args, cal, bench)
        # image as the calibration's model and decoders were (its recorded config)
        config = cal.imaging_config if cal is not None else None
        imager = BenchImager(bench, cal, enc, config).prepare()
        before = heldout_score(imager, dec, dec.weight_, held)
        layer = BenchEncoder(imager, enc.masks_rad, learnable=learn,
                             phase_depth=float(enc.phase_depth))
        result = fine_tune_on_bench(layer, dec.weight_.cpu(), steps=steps, gamma=args.gamma,
                                    seed=args.seed, mask_lr=getattr(args, "mask_lr", 1e-2),
                                    progress=not getattr(args, "no_progress", False))
        if learn:
            imager.set_encoder_masks(result["masks_rad"])
        after = heldout_score(imager, dec, result["weight"], held)
        devices = bench.info()
    kept = after > before
    hist = {"start": start, "loss": result["loss"], "captures": result["captures"],
            "seconds": result["seconds"], "steps": steps, "bench": str(args.on_bench),
            "alpha": result["alpha"],
            "calibration": None if args.calibration is None else str(args.calibration),
            "heldout": {"n": n_hold, "score": "mean SSIM on captured speckles",
                        "before": before, "after": after},
            "kept": kept, "learn_mask": learn, "imaging": imager.describe(),
            "devices": devices}
    side = Path(args.out).with_suffix(".bench.json")
    if not kept:
        write_text_atomic(side, json.dumps(hist, indent=2, default=str))
        print(f"bench training did not improve the held-out captured SSIM ({before:.4f} -> "
              f"{after:.4f} on {n_hold} speckles): kept {start}; no decoder written to "
              f"{args.out} (history in {side})")
        return 0
    # the saved decoder records the bench's fit: its α and α search (None and no search
    # after Adam steps with --learn-mask), with the starting decoder's fit under "start"
    start_fit = {"method": dec.method_, "alpha": dec.alpha_, "history": dec.history_}
    dec.weight_ = result["weight"].to(dec.weight_.device)
    dec.method_ = f"{dec.method_}+bench"
    dec.alpha_ = result["alpha"]
    dec.history_ = {**result["alpha_search"], "start": start_fit, "bench_steps": steps,
                    "bench_captures": result["captures"]}
    if learn:
        from .masks import mask_from_encoder, save_mask

        learned = PhaseEncoder(result["masks_rad"], learnable=False,
                               phase_depth=float(enc.phase_depth), sensor=enc.sensor,
                               name="learned")
        dec.encoder_signature_ = learned.signature()
        mask = mask_from_encoder(learned, provenance={
            "command": "hil train --on-bench --learn-mask", "decoder": str(args.out),
            "start": enc.signature(), "steps": steps, "heldout_before": before,
            "heldout_after": after})
        mask.xmax, mask.focal = float(getattr(enc, "xmax", 10.0)), float(
            getattr(enc, "focal", 8.0))
        save_mask(mask, args.mask_out)
        hist["mask"] = str(args.mask_out)
    dec.save(args.out)
    write_text_atomic(side, json.dumps(hist, indent=2, default=str))
    print(f"decoder written to {args.out} (from {start}, {steps} bench steps, "
          f"{result['captures']} captures, held-out captured SSIM {before:.4f} -> "
          f"{after:.4f}, {result['seconds']:.0f} s)"
          + (f"; learned mask written to {args.mask_out}" if learn else ""))
    return 0
