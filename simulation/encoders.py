"""Optical encoders: a phase mask per channel, then a lens Fourier transform
onto the sensor.

`PhaseEncoder` holds C phase masks (a learnable torch parameter by default) and
maps images (B, H, W) in [0, 1] to sensor patterns (B, C, H, W):

    S_c = sensor( fraunhofer( exp(i·depth·A) · exp(i·mask_c) ) )

`DualVortexEncoder` is the paper's fixed encoder: masks = lens (−R²/8) plus
vortex phases of charges 1 and 3 (docs/paper.md §Encoder).

`twin_field` is that forward model's field, the one home of the twin: the encoder,
the calibration's model fit (with the bench's source amplitude on the object) and
bench training's differentiable twin all call it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import torch
from torch import nn

from ._checks import check_images, check_positive
from .optics import fraunhofer, lens_phase, phase_object, vortex_phase
from .sensor import SensorModel

__all__ = ["PhaseEncoder", "DualVortexEncoder", "encode_batched", "encoder_from_signature",
           "twin_field"]


def twin_field(images: torch.Tensor, masks_rad: torch.Tensor,
               phase_depth: float = math.pi / 2,
               amplitude: torch.Tensor | None = None) -> torch.Tensor:
    """The complex field on the sensor plane, (B, C, N, N) complex64:
    fraunhofer(a · exp(i·depth·A) · exp(i·mask_c)) for images A (B, N, N), masks
    (C, N, N) in radians and a source amplitude ``a`` (N, N) on the object (None: a
    uniform beam, a = 1). Differentiable in the masks and the images; no checks (the
    callers validate their inputs)."""
    obj = phase_object(images, phase_depth)[:, None]
    if amplitude is not None:
        obj = obj * amplitude
    return fraunhofer(obj * torch.polar(torch.ones_like(masks_rad), masks_rad))


class PhaseEncoder(nn.Module):
    """A general phase-mask encoder with any number of channels.

    Parameters
    ----------
    masks_rad : (C, N, N) initial phase masks in radians.
    learnable : whether the masks are an `nn.Parameter` (trained end to end).
    phase_depth : the object's phase depth; images in [0, 1] become exp(i·depth·A).
    sensor : the `SensorModel` (default: the paper's noiseless magnitude sensor).
    name : recorded in `signature()`; "learned" for a learnable mask.
    """

    def __init__(
        self,
        masks_rad: torch.Tensor,
        *,
        learnable: bool = True,
        phase_depth: float = math.pi / 2,
        sensor: SensorModel | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(masks_rad, torch.Tensor):
            masks_rad = torch.as_tensor(masks_rad)
        if masks_rad.ndim == 2:
            masks_rad = masks_rad[None]
        if masks_rad.ndim != 3 or masks_rad.shape[-1] != masks_rad.shape[-2]:
            raise ValueError(
                f"masks_rad: expected shape (C, N, N), got {tuple(masks_rad.shape)}"
            )
        if masks_rad.is_complex() or not torch.isfinite(masks_rad).all():
            raise ValueError("masks_rad: expected finite real phases in radians")
        check_positive(phase_depth, "phase_depth")
        masks_rad = masks_rad.to(torch.float32)
        if learnable:
            self.masks_rad = nn.Parameter(masks_rad.clone())
        else:
            self.register_buffer("masks_rad", masks_rad.clone())
        self.learnable = learnable
        self.phase_depth = float(phase_depth)
        self.sensor = sensor if sensor is not None else SensorModel()
        self.name = name or ("learned" if learnable else "phase")

    @property
    def size(self) -> int:
        return int(self.masks_rad.shape[-1])

    @property
    def channels(self) -> int:
        return int(self.masks_rad.shape[0])

    def field(self, images: torch.Tensor) -> torch.Tensor:
        """The complex field on the sensor plane, (B, C, N, N) complex64."""
        return twin_field(images, self.masks_rad, self.phase_depth)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, N, N) in [0, 1] -> sensor patterns (B, C, N', N') float32."""
        device = self.masks_rad.device
        images = check_images(images, "images", ndim=(3,), size=self.size, device=device)
        return self.sensor(self.field(images))

    def signature(self) -> dict:
        """What identifies this encoder for a decoder: refit if any of it changes."""
        digest = hashlib.sha256(
            self.masks_rad.detach().cpu().numpy().astype("float32").tobytes()
        ).hexdigest()[:16]
        return {"name": self.name, "size": self.size, "channels": self.channels,
                "phase_depth": self.phase_depth, "mask_sha256": digest,
                "sensor": self.sensor.config()}


class DualVortexEncoder(PhaseEncoder):
    """The paper's dual-vortex encoder (docs/paper.md §Encoder).

    Defaults: N = 32 on x = −10 … 9.375, lens −R²/8, charges (1, 3), phase depth
    π/2, magnitude sensor. The masks are fixed (not learnable); pass
    ``learnable=True`` to start end-to-end training from them.
    """

    def __init__(
        self,
        charges: Sequence[int] = (1, 3),
        *,
        size: int = 32,
        xmax: float = 10.0,
        focal: float = 8.0,
        phase_depth: float = math.pi / 2,
        sensor: SensorModel | None = None,
        learnable: bool = False,
    ) -> None:
        charges = tuple(charges)
        if not charges:
            raise ValueError("charges: expected at least one topological charge, got none")
        lens = lens_phase(size, xmax, focal)
        masks = torch.stack([lens + vortex_phase(m, size, xmax) for m in charges])
        super().__init__(masks, learnable=learnable, phase_depth=phase_depth, sensor=sensor,
                         name="dual-vortex" if charges == (1, 3) else "vortex")
        self.charges, self.xmax, self.focal = charges, float(xmax), float(focal)

    def signature(self) -> dict:
        sig = super().signature()
        sig.update(charges=list(self.charges), xmax=self.xmax, focal=self.focal)
        return sig


@torch.no_grad()
def encode_batched(encoder: nn.Module, images: torch.Tensor, batch_size: int = 4096
                   ) -> torch.Tensor:
    """Encode a large set in batches (bounded memory), without gradients.

    Colour images (B, 3, N, N) are encoded channel by channel and come back as
    (B, 3, C, N, N).
    """
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        b, k = images.shape[:2]
        out = encode_batched(encoder, images.reshape(b * k, *images.shape[2:]), batch_size)
        return out.reshape(b, k, *out.shape[1:])
    check_positive(batch_size, "batch_size", integer=True)
    parts = [encoder(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    if not parts:
        raise ValueError("images: expected at least one image, got none")
    return torch.cat(parts)


def encoder_from_signature(signature: dict) -> PhaseEncoder:
    """Rebuild a vortex encoder from the ``signature()`` a decoder file records.

    Learned masks are not stored in a signature (only their hash): load those
    from their mask file instead.
    """
    if not isinstance(signature, dict) or "charges" not in signature:
        name = signature.get("name") if isinstance(signature, dict) else signature
        raise ValueError(
            f"signature: only vortex encoders can be rebuilt from a signature, got {name!r}; "
            "load the mask file of a learned encoder instead"
        )
    sensor_cfg = dict(signature.get("sensor") or {})
    enc = DualVortexEncoder(
        tuple(signature["charges"]), size=int(signature["size"]),
        xmax=float(signature.get("xmax", 10.0)), focal=float(signature.get("focal", 8.0)),
        phase_depth=float(signature["phase_depth"]), sensor=SensorModel(**sensor_cfg),
    )
    if enc.signature()["mask_sha256"] != signature.get("mask_sha256"):
        raise ValueError("signature: the rebuilt masks do not match the recorded mask hash")
    return enc
