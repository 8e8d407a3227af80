"""Trained phase masks as files, and putting them on an SLM.

A mask file (``.npz`` or ``.h5``) holds ``phase_rad``, float32 radians, (H, W) for one
channel or (C, H, W) for several, and its metadata (in an ``.h5`` file typed attributes
with units, ``simulation.h5attrs``, the provenance one JSON string; in an ``.npz`` one JSON
string):

* ``grid``: N, the model grid the mask was trained on (H = W = N);
* ``charges``: the vortex charges, or ``"learned"`` for a mask trained end to end;
* ``wav_um``: the wavelength the phase is meant for; ``pitch_um``: the SLM pixel pitch it
  was designed for (``None``: any); ``phase_depth``, ``xmax``, ``focal``: model optics;
* ``provenance``: who made it, from what (git commit, training settings, time).

Phase convention: ``phase_rad`` is the φ of the field factor exp(+iφ) in ``simulation``;
``devices`` maps it to grey levels (zero phase = the top grey level, devices/phase.py),
so a ramp that increases along columns sends light to +x on the camera, on the model and
on the bench alike (tested).

Identity: ``PhaseMask.sha256`` is the SHA-256 of the (C, N, N) float32 phase stack;
its first 16 hex digits (``signature_hash``) are what ``simulation`` encoders record as
``mask_sha256`` in their ``signature()``, and decoder files in their encoder signature,
so a mask and a decoder can be compared (``calibration.imaging_config.EncoderSpec``
``.from_mask(mask).signature_differences(signature)`` does it, with the optics of
``optics()``). The file records the hash and ``load_mask`` refuses a file whose phase
does not match it.

``load_onto_slm`` shows one channel in s×s blocks (no steering grating, margin or
aberration correction: ``hil mask push`` composes those as a bench run does, through
``calibration.imaging.BenchImager``) and refuses a mask whose grid does not fit the SLM,
or whose wavelength differs from the SLM's, with the numbers in the message. The
wavelength scaling (φ·wav_um/wav_design_um without a LUT) and the grey levels are the
device layer's (``devices.base.SLM.set_phase``), the one path for every caller;
``mask_grey_levels`` runs the same path on an SLM that exists only in memory, for
``hil mask export``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from devices import SLM
from simulation.atomic import atomic_path, savefig_atomic, write_image_atomic
from simulation.h5attrs import get_attr, set_attr, set_units

__all__ = ["PhaseMask", "save_mask", "load_mask", "mask_from_encoder", "vortex_mask",
           "load_onto_slm", "mask_grey_levels", "write_grey_image", "plot_mask"]

FORMAT = "hil-phase-mask"
FORMAT_VERSION = 1  # the .npz metadata (one JSON string)
H5_FORMAT_VERSION = 2  # .h5: typed attributes with units (simulation.h5attrs); 1 still read


@dataclass
class PhaseMask:
    """A phase mask and its metadata (see the module docstring)."""

    phase_rad: np.ndarray
    charges: list[int] | str = "learned"
    wav_um: float = 0.633
    pitch_um: float | None = None
    phase_depth: float = float(np.pi / 2)
    xmax: float = 10.0
    focal: float = 8.0
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        p = self.phase_rad
        if hasattr(p, "detach"):
            p = p.detach().cpu().numpy()
        p = np.asarray(p)
        if p.dtype.kind not in "fiu" or p.ndim not in (2, 3) or p.shape[-1] != p.shape[-2]:
            raise ValueError(f"phase_rad: expected real radians of shape (N, N) or (C, N, N), "
                             f"got {p.dtype} {p.shape}")
        if not np.all(np.isfinite(p)):
            raise ValueError("phase_rad: expected finite values, got NaN or infinite")
        self.phase_rad = p.astype(np.float32)
        if not (isinstance(self.charges, str) and self.charges == "learned"):
            self.charges = [int(c) for c in self.charges]
            if len(self.charges) != self.channels:
                raise ValueError(f"charges: expected one per channel ({self.channels}), got "
                                 f"{self.charges}")
        if not np.isfinite(self.wav_um) or self.wav_um <= 0:
            raise ValueError(f"wav_um: expected a wavelength > 0 in microns, got {self.wav_um}")

    @property
    def grid(self) -> int:
        return int(self.phase_rad.shape[-1])

    @property
    def channels(self) -> int:
        return 1 if self.phase_rad.ndim == 2 else int(self.phase_rad.shape[0])

    def phase_stack(self) -> np.ndarray:
        """(C, N, N) float32."""
        return self.phase_rad if self.phase_rad.ndim == 3 else self.phase_rad[None]

    @property
    def sha256(self) -> str:
        """SHA-256 (hex) of the (C, N, N) float32 phase stack: the mask's content hash."""
        stack = np.ascontiguousarray(self.phase_stack(), dtype=np.float32)
        return hashlib.sha256(stack.tobytes()).hexdigest()

    @property
    def signature_hash(self) -> str:
        """The 16 hex digits encoders record as ``mask_sha256`` in their signature."""
        return self.sha256[:16]

    @property
    def is_vortex(self) -> bool:
        return not isinstance(self.charges, str)

    def optics(self) -> dict[str, Any]:
        """The model optics the mask was made for (what imaging must use with it)."""
        return {"grid": self.grid, "channels": self.channels, "phase_depth": self.phase_depth,
                "xmax": self.xmax, "focal": self.focal, "wav_um": self.wav_um,
                "charges": self.charges}

    def metadata(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "grid": self.grid,
                "channels": self.channels, "charges": self.charges, "wav_um": self.wav_um,
                "pitch_um": self.pitch_um, "phase_depth": self.phase_depth, "xmax": self.xmax,
                "focal": self.focal, "sha256": self.sha256, "provenance": self.provenance}


def mask_from_encoder(encoder: Any, *, wav_um: float = 0.633, pitch_um: float | None = None,
                      provenance: dict[str, Any] | None = None) -> PhaseMask:
    """The masks of a ``simulation`` encoder (vortex or learned) as a ``PhaseMask``."""
    charges = list(getattr(encoder, "charges", ())) or "learned"
    if getattr(encoder, "learnable", False):
        charges = "learned"
    prov = {"created": time.time(), "encoder": encoder.signature()}
    prov.update(provenance or {})
    return PhaseMask(encoder.masks_rad.detach().cpu().numpy(), charges=charges, wav_um=wav_um,
                     pitch_um=pitch_um, phase_depth=float(encoder.phase_depth),
                     xmax=float(getattr(encoder, "xmax", 10.0)),
                     focal=float(getattr(encoder, "focal", 8.0)), provenance=prov)


def vortex_mask(charges: Any = (1, 3), *, size: int = 32, xmax: float = 10.0,
                focal: float = 8.0, phase_depth: float = float(np.pi / 2),
                wav_um: float = 0.633, pitch_um: float | None = None) -> PhaseMask:
    """The twin's dual-vortex encoder (vortex m·θ + lens −R²/focal) as a ``PhaseMask``.

    Its ``signature_hash`` equals the ``mask_sha256`` of decoders fitted with
    ``DualVortexEncoder(charges, size=..., xmax=..., focal=...)``.
    """
    from simulation import DualVortexEncoder

    enc = DualVortexEncoder(tuple(int(c) for c in charges), size=int(size), xmax=float(xmax),
                            focal=float(focal), phase_depth=float(phase_depth))
    return mask_from_encoder(enc, wav_um=wav_um, pitch_um=pitch_um,
                             provenance={"made_by": "vortex_mask"})


def save_mask(mask: PhaseMask, path: str | os.PathLike) -> Path:
    """Write ``.npz`` or ``.h5`` (by suffix), atomically (temporary name, then rename)."""
    path = Path(path)
    if path.suffix not in (".npz", ".h5", ".hdf5"):
        raise ValueError(f"path: expected a .npz or .h5 file name, got {path.name!r}")
    with atomic_path(path) as tmp:
        if path.suffix == ".npz":
            meta = json.dumps(mask.metadata(), default=str)
            with open(tmp, "wb") as f:
                np.savez(f, phase_rad=mask.phase_rad, metadata=np.array(meta))
        else:
            import h5py

            with h5py.File(tmp, "w") as f:
                set_units(f.create_dataset("phase_rad", data=mask.phase_rad), "rad")
                _write_h5_metadata(f.attrs, mask.metadata())
    return path


#: (name, h5attrs kind, units) of the typed attributes of an .h5 mask file (format 2);
#: ``charges`` is an integer array, or the string "learned"; ``provenance`` (free-form,
#: nested) is the one JSON string, ``provenance_json``
_H5_FIELDS = (("format", "str", None), ("format_version", "int", None), ("grid", "int", "px"),
              ("channels", "int", None), ("wav_um", "float", "um"),
              ("pitch_um", "float", "um"), ("phase_depth", "float", "rad"),
              ("xmax", "float", None), ("focal", "float", None), ("sha256", "str", None))


def _write_h5_metadata(attrs: Any, meta: dict[str, Any]) -> None:
    for name, _, units in _H5_FIELDS:
        value = H5_FORMAT_VERSION if name == "format_version" else meta[name]
        set_attr(attrs, name, value, units=units if value is not None else None)
    charges = meta["charges"]
    set_attr(attrs, "charges", charges if isinstance(charges, str)
             else [int(c) for c in charges])
    attrs["provenance_json"] = json.dumps(meta.get("provenance") or {}, default=str)


def _read_h5_metadata(attrs: Any, where: Path) -> dict[str, Any]:
    """Format 2: typed attributes; format 1: one JSON string ``metadata``."""
    if "metadata" in attrs and "format" not in attrs:
        raw = attrs["metadata"]
        return json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    meta = {name: get_attr(attrs, name, kind, where=where) for name, kind, _ in _H5_FIELDS}
    ch = attrs.get("charges")
    meta["charges"] = (get_attr(attrs, "charges", "str", where=where)
                       if isinstance(ch, (str, bytes))
                       else get_attr(attrs, "charges", "int_array", where=where).tolist())
    prov = get_attr(attrs, "provenance_json", "str", where=where, default="{}")
    meta["provenance"] = json.loads(prov)
    return meta


def load_mask(path: str | os.PathLike) -> PhaseMask:
    """Read a mask file written by ``save_mask``; clear errors for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mask file not found: {path}")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                phase, meta = np.asarray(z["phase_rad"]), json.loads(str(z["metadata"]))
        else:
            import h5py

            with h5py.File(path, "r") as f:
                phase, meta = np.asarray(f["phase_rad"]), _read_h5_metadata(f.attrs, path)
    except Exception as exc:  # noqa: BLE001 - one message for any unreadable file
        raise ValueError(f"{path}: not a phase-mask file ({type(exc).__name__}: {exc})") from exc
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a phase-mask file (format {meta.get('format')!r})")
    if int(meta.get("grid", -1)) != phase.shape[-1]:
        raise ValueError(f"{path}: grid {meta.get('grid')} disagrees with phase_rad shape "
                         f"{phase.shape}")
    try:
        mask = PhaseMask(phase, charges=meta["charges"], wav_um=float(meta["wav_um"]),
                         pitch_um=meta.get("pitch_um"), phase_depth=float(meta["phase_depth"]),
                         xmax=float(meta["xmax"]), focal=float(meta["focal"]),
                         provenance=meta.get("provenance", {}))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: bad phase-mask metadata ({type(exc).__name__}: {exc})"
                         ) from exc
    stored = meta.get("sha256")
    if stored is not None and stored != mask.sha256:
        raise ValueError(f"{path}: the phase does not match the recorded sha256 "
                         f"({mask.sha256[:16]}... vs {str(stored)[:16]}...): corrupted file")
    return mask


def load_onto_slm(mask: PhaseMask, slm: Any, *, channel: int = 0, phase_response_rad: Any = None,
                  calibration: Any = None, wav_tolerance: float = 0.01,
                  settle: bool = True) -> np.ndarray:
    """Show one channel of ``mask`` on ``slm``; returns the grey levels displayed.

    The N×N mask is shown in s×s blocks, s = the largest block that fits (the device layer
    centres it). ``phase_response_rad`` (or the LUT step of ``calibration``, a
    ``CalibrationSet``) is loaded first.
    """
    if phase_response_rad is None and calibration is not None:
        phase_response_rad = getattr(calibration, "phase_response_rad", None)
    rows, cols = slm.shape
    n = mask.grid
    if n > rows or n > cols:
        raise ValueError(f"mask: its {n}x{n} grid does not fit the SLM of {rows}x{cols} pixels")
    if abs(slm.wav_um - mask.wav_um) > wav_tolerance * mask.wav_um:
        raise ValueError(f"mask: designed for {mask.wav_um:g} µm, the SLM runs at "
                         f"{slm.wav_um:g} µm; retrain the mask for this wavelength")
    if not 0 <= channel < mask.channels:
        raise ValueError(f"channel: expected 0..{mask.channels - 1}, got {channel}")
    if phase_response_rad is not None:
        slm.set_phase_response(phase_response_rad)
    phase = np.mod(mask.phase_stack()[channel], 2 * np.pi).astype(np.float32)
    return slm.set_phase(phase, settle=settle)  # the device layer scales and quantises


class _MemorySLM(SLM):
    """An SLM that exists only in memory: ``set_phase`` computes grey levels, shows nothing."""

    def _set_phase_hw(self, display: np.ndarray) -> None:
        pass

    def _close_hw(self) -> None:
        pass


def mask_grey_levels(mask: PhaseMask, slm_shape: tuple[int, int], *, channel: int = 0,
                     bitdepth: int = 8, wav_design_um: float | None = None,
                     phase_response_rad: Any = None) -> np.ndarray:
    """The grey levels an SLM of ``slm_shape`` shows for one channel of ``mask`` (a copy).

    The same path as ``load_onto_slm`` on a real SLM (s×s blocks, centred, zero phase
    outside; wavelength scaling when ``wav_design_um`` differs from the mask's
    ``wav_um``; the LUT of ``phase_response_rad``), run on an SLM held in memory.
    """
    rows, cols = (int(v) for v in slm_shape)
    slm = _MemorySLM(shape=(rows, cols), bitdepth=bitdepth, wav_um=mask.wav_um,
                     wav_design_um=wav_design_um, name="export", backend="memory")
    try:
        return load_onto_slm(mask, slm, channel=channel, phase_response_rad=phase_response_rad,
                             settle=False).copy()
    finally:
        slm.close()


def write_grey_image(grey: np.ndarray, path: str | os.PathLike, fmt: str | None = None
                     ) -> Path:
    """Write grey levels as a single-channel PNG (8 or 16 bit) or BMP (8 bit), atomically.

    ``fmt`` ("png" or "bmp") defaults to the suffix of ``path``.
    """
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if fmt not in ("png", "bmp"):
        raise ValueError(f"format: expected 'png' or 'bmp', got {fmt!r} (for {path.name})")
    g = np.asarray(grey)
    if g.ndim != 2 or g.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"grey: expected a 2-D uint8 or uint16 array, got {g.dtype} {g.shape}")
    if fmt == "bmp" and g.dtype != np.uint8:
        raise ValueError("format: BMP holds 8-bit grey levels only; use png for a "
                         f"{8 * g.itemsize}-bit SLM")
    return write_image_atomic(path, np.ascontiguousarray(g), fmt)


def plot_mask(mask: PhaseMask, path: str | os.PathLike) -> Path:
    """PNG of every channel's wrapped phase, with the metadata in the title (written
    atomically: temporary name, then rename)."""
    from simulation.figures import new_figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stack = np.mod(mask.phase_stack(), 2 * np.pi)
    fig, axes = new_figure(1, len(stack), figsize=(3.2 * len(stack) + 0.6, 3.4), squeeze=False)
    for k, ax in enumerate(axes[0]):
        im = ax.imshow(stack[k], cmap="twilight", vmin=0, vmax=2 * np.pi)
        label = mask.charges[k] if isinstance(mask.charges, list) else "learned"
        ax.set_title(f"channel {k} (m = {label})", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes[0].tolist(), label="phase (rad, wrapped)", shrink=0.8)
    fig.suptitle(f"{mask.grid}x{mask.grid} mask, λ = {mask.wav_um:g} µm", fontsize=10)
    return savefig_atomic(fig, path, dpi=110)
