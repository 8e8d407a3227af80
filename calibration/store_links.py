"""What a calibration refers to outside its file: decoder files beside it, and its devices.

Before the first capture ``hil run`` refuses a decoder or a bench that does not belong
with the calibration (docs/architecture.md §Bench-day). These are the checks
``calibration.store.CalibrationSet`` offers for that:

* ``decoder_path``: the file of one of the decoders the decoders step wrote beside the
  calibration file ("default", "best", "twin" or "capture"), with clear errors when it was
  not recorded or is missing (``CalibrationSet.decoder_file``);
* ``matching_decoder``: which of those files has the same bytes as a given one, by its
  SHA-256 (``file_sha256``; ``CalibrationSet.decoder_record``);
* ``device_differences``: where the SLM and camera identities recorded at calibration
  (``IDENTITY_KEYS`` of each device's info) differ from those of the opened bench.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from calibration.store_step import CalibrationError, StepResult

__all__ = ["IDENTITY_KEYS", "file_sha256", "decoder_path", "matching_decoder",
           "device_differences"]

# the parts of a device's info() that identify it (compared by ``device_differences``)
IDENTITY_KEYS = ("device_id", "identity", "serial", "backend", "slmsuite_class", "shape",
                 "bitdepth", "pitch_um", "wav_um")


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return x.item()
    if hasattr(x, "detach"):
        return x.detach().cpu().tolist()
    return x


def decoder_path(step: StepResult, calibration_path: Path | None, name: str = "default"
                 ) -> Path:
    """The path of a decoder written by the decoders step ``step`` beside the calibration
    file at ``calibration_path``: "default" (the step's ``default_decoder``), "best",
    "twin" or "capture"; clear errors when absent."""
    if name in ("default", "best"):
        name = str(step.values.get(f"{name}_decoder", "twin"))
    files = step.values.get("decoder_files") or {}
    rel = (files.get(name) or {}).get("path") or step.values.get(f"{name}_path")
    if rel is None:
        raise CalibrationError(f"calibration: no {name!r} decoder recorded (it has "
                               f"{sorted(files) or 'none'}); run `hil calibrate ... "
                               "--steps decoders` with an output directory")
    if calibration_path is None:
        raise CalibrationError("calibration: not loaded from a file, so its decoder files "
                               "cannot be found")
    path = calibration_path.parent / str(rel)
    if not path.is_file():
        raise FileNotFoundError(f"calibration: its {name} decoder {path} is missing")
    return path


def matching_decoder(step: StepResult, path: str | os.PathLike
                     ) -> tuple[str, dict[str, Any]] | None:
    """(name, {path, sha256}) of the decoders step ``step``'s file with the same content as
    ``path``; None when the step did not write it."""
    files = step.values.get("decoder_files") or {}
    digest = file_sha256(path)
    for name, rec in files.items():
        if isinstance(rec, dict) and rec.get("sha256") == digest:
            return name, rec
    return None


def device_differences(recorded: dict[str, Any], devices: dict[str, Any]) -> list[str]:
    """One line per identity (``IDENTITY_KEYS``) of the SLM or camera where the opened
    bench's ``devices`` (``device_identities``) differ from those ``recorded``."""
    out = []
    for kind in ("slm", "camera"):
        mine, theirs = recorded.get(kind), devices.get(kind)
        if not isinstance(mine, dict) or not isinstance(theirs, dict):
            continue
        for key in IDENTITY_KEYS:
            if key in mine and key in theirs \
                    and _jsonable(mine[key]) != _jsonable(theirs[key]):
                out.append(f"{kind} {key}: calibration {mine[key]!r}, bench "
                           f"{theirs[key]!r}")
    return out
