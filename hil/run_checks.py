"""What ``hil run`` checks before the first capture: do its decoder, mask, calibration,
bench and imaging configuration belong together (docs/architecture.md §Bench-day)?

``resolve_run_inputs`` picks what a run uses when the user leaves it out (the
calibration's best decoder, ``best_decoder``: the one of its decoders that scored highest on
held-out captured speckles; the calibration's imaging configuration) and lists every
way the pieces disagree, one line each, naming the setting and both values:

* decoder vs encoder: the mask file's hash, channel count, grid and phase depth (and
  charges, ``xmax``, ``focal`` for a vortex) against the decoder's encoder signature; a
  vortex decoder's own signature against the vortex it describes; a decoder whose sensor
  is not the bench's (magnitude);
* decoder vs calibration: a decoder the calibration did not write (``decoder_files``) was
  not fitted through the calibration's bench model (its illumination, blur and gain): a
  decoder from ``hil train`` reconstructs MNIST at about half the SSIM of the calibration's
  own on the simulated bench (0.196 against 0.397). A decoder fine-tuned on this bench
  (``hil bench-train --calibration``, its ``.bench.json`` names the calibration) is
  accepted;
* imaging config vs the calibration's (``ImagingConfig.differences``: mode, grating,
  margin, mask sampling, envelope, LUT and aberration use);
* calibration device identities vs the opened bench (``bench_problems``, once it is open).

``enforce`` raises ``IncompatibleRunError`` with the first problem (and how many more)
unless ``force``; the run records what it was forced past in ``run.json``.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calibration.imaging_config import EncoderSpec, ImagingConfig

__all__ = ["IncompatibleRunError", "RunInputs", "resolve_run_inputs", "bench_problems",
           "enforce", "bench_signature"]

log = logging.getLogger(__name__)

BENCH_SENSOR_MODE = "magnitude"  # BenchImager: sqrt(max(frame - dark, 0))


class IncompatibleRunError(ValueError):
    """A decoder, mask, calibration, bench or imaging config that do not belong together."""


@dataclass
class RunInputs:
    """What a run uses, resolved, and what is wrong with it."""

    decoder: Any
    decoder_path: Path
    encoder: EncoderSpec
    imaging: ImagingConfig
    calibration: Any = None
    mask: Any = None
    problems: list[str] = field(default_factory=list)


def _decoder_path(decoder: Path | None, calibration: Any, calibration_arg: Any) -> Path:
    if decoder is not None:
        return Path(decoder)
    if calibration is None:
        raise ValueError("--decoder: required without --calibration (a calibration supplies "
                         "its own best decoder)")
    if calibration.decoders is None:
        raise ValueError(f"--decoder: the calibration {calibration_arg} has no decoders step; "
                         "give --decoder or run `hil calibrate ... --steps decoders`")
    return calibration.decoder_file("best")


def _encoder(decoder: Any, decoder_path: Path, mask: Any, mask_path: Any) -> EncoderSpec:
    sig = getattr(decoder, "encoder_signature_", None) or {}
    if mask is not None:
        return EncoderSpec.from_mask(mask, source=f"mask {mask_path}")
    if "charges" not in sig:
        raise ValueError(f"--decoder: {decoder_path} was fitted for "
                         f"{sig.get('name', 'an unrecorded encoder')!r}, not a vortex; give the "
                         "learned encoder's mask file with --mask")
    return EncoderSpec.vortex(tuple(int(c) for c in sig["charges"]),
                              size=int(sig.get("size", decoder.image_shape_[-1])),
                              xmax=float(sig.get("xmax", 10.0)),
                              focal=float(sig.get("focal", 8.0)),
                              phase_depth=float(sig.get("phase_depth", math.pi / 2)))


def _mask_problems(mask: Any, spec: EncoderSpec, sig: dict[str, Any]) -> list[str]:
    check = getattr(mask, "signature_mismatches", None)  # hil.masks.PhaseMask's own
    found = list(check(sig)) if callable(check) else (
        spec.signature_differences(sig) if sig else
        ["encoder signature: the decoder records none"])
    return [f"--mask/--decoder: {p}" for p in found]


def _on_bench_sidecar_calibration(decoder_path: Path) -> Path | None:
    side = decoder_path.with_suffix(".bench.json")
    try:
        cal = json.loads(side.read_text()).get("calibration")
    except (OSError, ValueError, AttributeError):
        return None
    return None if not cal else Path(cal)


def _same_calibration(a: Path, calibration: Any) -> bool:
    here = getattr(calibration, "path", None)
    if here is None:
        return False
    p = a if a.suffix in (".h5", ".hdf5") else a / "calibration.h5"
    try:
        return p.resolve() == Path(here).resolve()
    except OSError:
        return False


def run_imaging_config(calibration: Any, size: int, overrides: dict[str, Any] | None = None,
                       *, imaging: ImagingConfig | None = None) -> ImagingConfig:
    """The imaging settings a run uses: ``imaging``, else the calibration's recorded ones,
    else the defaults; then the non-None ``overrides`` and the encoder's grid ``size``."""
    cal_config = getattr(calibration, "imaging_config", None)
    base = imaging or cal_config or ImagingConfig(size=size)
    changes = {k: v for k, v in (overrides or {}).items() if v is not None}
    if base.size != size:
        changes.setdefault("size", size)
    return base.replace(**changes) if changes else base


def resolve_run_inputs(*, decoder: Path | None, mask: Path | None, calibration: Any,
                       calibration_arg: Any, imaging: ImagingConfig | None,
                       overrides: dict[str, Any], size: int | None = None) -> RunInputs:
    """Load the decoder (default: the calibration's best), the mask, the encoder and the imaging
    config (base: ``imaging``, else the calibration's, else the default; then the non-None
    ``overrides``), and list every disagreement (see the module docstring)."""
    from simulation import LinearDecoder

    dec_path = _decoder_path(decoder, calibration, calibration_arg)
    dec = LinearDecoder.load(dec_path)
    mask_obj = None
    if mask is not None:
        from .masks import load_mask

        mask_obj = load_mask(mask)
    spec = _encoder(dec, dec_path, mask_obj, mask)
    sig = dict(getattr(dec, "encoder_signature_", None) or {})
    problems: list[str] = []
    if mask_obj is not None:
        problems += _mask_problems(mask_obj, spec, sig)
    else:
        problems += [f"--decoder: its encoder signature is inconsistent ({p})"
                     for p in spec.signature_differences(sig)]
    sensor = sig.get("sensor")
    if isinstance(sensor, dict) and sensor.get("mode", BENCH_SENSOR_MODE) != BENCH_SENSOR_MODE:
        problems.append(f"--decoder: sensor mode: the decoder's is {sensor.get('mode')!r}, the "
                        f"bench's {BENCH_SENSOR_MODE!r}")
    channels = int(dec.pattern_shape_[0])
    if channels != spec.channels:
        problems.append(f"--decoder: channels: the decoder takes {channels}, the encoder has "
                        f"{spec.channels}")

    cal_config = calibration.imaging_config if calibration is not None else None
    config = run_imaging_config(calibration, spec.size, overrides, imaging=imaging)
    if size is not None and size != config.size:
        problems.append(f"--dataset: images are {size}x{size}, the encoder's grid is "
                        f"{config.size}x{config.size}")
    if calibration is not None:
        if cal_config is None:
            log.warning("calibration %s records no imaging config (made by an older "
                        "version): not compared", calibration_arg)
        else:
            problems += [f"imaging config vs the calibration's: {d}"
                         for d in config.differences(cal_config)]
        if calibration.decoders is not None and calibration.decoders.values.get(
                "decoder_files"):
            if calibration.decoder_record(dec_path) is None:
                side = _on_bench_sidecar_calibration(dec_path)
                if side is None or not _same_calibration(side, calibration):
                    names = sorted(calibration.decoders.values["decoder_files"])
                    problems.append(
                        f"--decoder: {dec_path} is not one of the calibration's decoders "
                        f"({', '.join(names)}): it was not fitted through this bench's "
                        "calibrated model (illumination, blur, gain); leave --decoder out to "
                        "use the calibration's")
    return RunInputs(decoder=dec, decoder_path=dec_path, encoder=spec, imaging=config,
                     calibration=calibration, mask=mask_obj, problems=problems)


def bench_problems(calibration: Any, devices: dict[str, Any]) -> list[str]:
    """The calibration's SLM and camera identities vs the opened bench's."""
    if calibration is None:
        return []
    return [f"--calibration: made on another bench: {d}"
            for d in calibration.device_differences(devices)]


def enforce(problems: list[str], force: bool) -> list[str]:
    """Raise ``IncompatibleRunError`` (first problem, how many more, ``--force``) unless
    ``force``; returns the problems forced past (logged)."""
    if not problems:
        return []
    if not force:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise IncompatibleRunError(f"{problems[0]}{more}; add --force to run anyway")
    for p in problems:
        log.warning("forced past: %s", p)
    return list(problems)


def bench_signature(spec: EncoderSpec, decoder: Any) -> dict[str, Any] | None:
    """The encoder signature of the bench's patterns, for ``LinearDecoder.predict``:
    the shown masks' identity, with the decoder's own name and sensor settings when its
    sensor is the bench's (a magnitude); None when the decoder records no signature."""
    sig = getattr(decoder, "encoder_signature_", None)
    if not sig:
        return None
    out = {"name": sig.get("name"), "size": spec.size, "channels": spec.channels,
           "phase_depth": spec.phase_depth, "mask_sha256": spec.mask_sha256}
    sensor = sig.get("sensor")
    out["sensor"] = (sensor if not isinstance(sensor, dict)
                     or sensor.get("mode", BENCH_SENSOR_MODE) == BENCH_SENSOR_MODE
                     else {**sensor, "mode": BENCH_SENSOR_MODE})
    if spec.charges is not None and "charges" in sig:
        out.update(charges=list(spec.charges), xmax=spec.xmax, focal=spec.focal)
    return {k: out.get(k, v) for k, v in sig.items()}
