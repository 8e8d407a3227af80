"""`LinearDecoder` files: what is written, and the reader for this format and the previous one.

A decoder file is a `simulation.weightfile` file of kind "LinearDecoder": one float32 tensor
``weight`` (C·H·W, H'·W') and JSON metadata, never a pickled object.

Format 3 (this one) keeps the decoder's two kinds of state apart, as scikit-learn does:
``params`` holds the constructor's settings (``LinearDecoder.get_params()`` without the
device; a ``val_error`` function is recorded by name only: a file holds no code), and the
fitted attributes keep the keys format 2 had: ``method`` (``method_``), ``alpha``
(``alpha_``: the α the weights were solved with), ``image_shape``, ``pattern_shape``,
``encoder`` (the signature), ``train_mse``, ``history`` (the α search: ``alpha_grid``,
``val_mse``), ``weights_sha256``.

Format 2 (before settings were recorded) is read with the constructor's default settings and
its fitted attributes as written; format 1 (before checksums) is refused by the weight file.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch

from .decoder_params import callable_name
from .weightfile import load_weight_file, save_weight_file, weights_sha256

__all__ = ["FORMAT_VERSION", "READABLE_VERSIONS", "KIND", "REMAKE", "decoder_metadata",
           "write_decoder_file", "read_decoder_file"]

FORMAT_VERSION = 3  # 3: settings ("params") apart from fitted attributes; 2: checksummed
READABLE_VERSIONS = (2, 3)
KIND = "LinearDecoder"
REMAKE = ("make it again with `hil train` (or `hil calibrate` for a calibration's "
          "decoders, LinearDecoder(...).fit(...).save(path) in Python)")
#: the settings a format-3 file records (all of ``get_params()`` but the device)
SAVED_PARAMS = ("alpha", "method", "val_fraction", "seed", "alpha_decades", "val_error",
                "epochs", "lr", "eps", "progress")


def _params_json(params: dict[str, Any]) -> dict[str, Any]:
    out = {k: params[k] for k in SAVED_PARAMS}
    if callable(out["val_error"]):
        out["val_error"] = callable_name(out["val_error"])
    if out["alpha_decades"] is not None:
        out["alpha_decades"] = [float(v) for v in out["alpha_decades"]]
    return out


def decoder_metadata(dec: Any) -> dict[str, Any]:
    """The file's metadata for a fitted decoder, without its history."""
    return {"format_version": FORMAT_VERSION, "params": _params_json(dec.get_params()),
            "method": dec.method_, "alpha": dec.alpha_,
            "image_shape": list(dec.image_shape_), "pattern_shape": list(dec.pattern_shape_),
            "encoder": dec.encoder_signature_, "train_mse": dec.train_mse_,
            "weights_sha256": weights_sha256({"weight": dec.weight_})}


def write_decoder_file(dec: Any, path: str | os.PathLike) -> Path:
    """Write a fitted decoder (weights, metadata, history) to ``path``, atomically."""
    meta = decoder_metadata(dec)
    meta["history"] = getattr(dec, "history_", {})
    return save_weight_file(path, KIND, {"weight": dec.weight_}, meta)


def _shape(value: Any, ndim: int) -> tuple[int, ...]:
    """A JSON list of `ndim` positive integers as a tuple; ValueError otherwise."""
    if (not isinstance(value, list) or len(value) != ndim
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        raise ValueError(f"expected {ndim} positive integers, got {value!r}")
    return tuple(value)


def read_decoder_file(path: str | os.PathLike
                      ) -> tuple[torch.Tensor, dict[str, Any] | None, dict[str, Any]]:
    """(weight, settings or None for format 2, fitted attributes by name) from a decoder file.

    Raises FileNotFoundError for a missing file and ValueError naming the file for one that
    is not a decoder file, holds Python objects (nothing in it is run), fails its checksum,
    holds non-finite weights, is of an unknown format, or whose metadata does not agree with
    its weights. The settings are returned as written (checked by the constructor).
    """
    path = Path(path)
    tensors, meta = load_weight_file(path, KIND, remake=REMAKE)
    version = meta.get("format_version")
    if version not in READABLE_VERSIONS:
        raise ValueError(f"{path}: unsupported decoder format {version!r}; {REMAKE}")
    weight = tensors.get("weight")
    try:
        image_shape = _shape(meta["image_shape"], 2)
        pattern_shape = _shape(meta["pattern_shape"], 3)
        method = meta["method"]
        params = None
        if version >= 3:
            params = meta["params"]
            if not isinstance(params, dict) or set(params) != set(SAVED_PARAMS):
                raise ValueError(f"params: expected the settings {list(SAVED_PARAMS)}, got "
                                 f"{sorted(params) if isinstance(params, dict) else params!r}")
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: inconsistent decoder metadata ({exc})") from exc
    want = (math.prod(pattern_shape), math.prod(image_shape))
    if weight is None or weight.dtype != torch.float32 or tuple(weight.shape) != want:
        got = None if weight is None else f"{weight.dtype} {tuple(weight.shape)}"
        raise ValueError(f"{path}: inconsistent decoder file: pattern shape {pattern_shape} "
                         f"and image shape {image_shape} need float32 weights of shape "
                         f"{want}, the file holds {got}")
    encoder_sig = meta.get("encoder")
    if encoder_sig is not None and not isinstance(encoder_sig, dict):
        raise ValueError(f"{path}: inconsistent decoder metadata (encoder: expected a "
                         f"signature object, got {type(encoder_sig).__name__})")
    fitted = {"method_": method, "alpha_": meta.get("alpha"), "image_shape_": image_shape,
              "pattern_shape_": pattern_shape, "encoder_signature_": encoder_sig,
              "train_mse_": meta.get("train_mse"), "history_": meta.get("history") or {},
              "n_features_in_": want[0]}
    return weight, params, fitted
