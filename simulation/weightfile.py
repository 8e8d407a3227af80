"""Weight files: named tensors plus JSON metadata, checksummed, read without running code.

Decoders and classifiers are saved in one format (docs/architecture.md §No-pickle: "no
pickle on any file a user hands us"): ``torch.save`` of a dict that holds only plain
tensors and strings,

    {"format": "hil-weights", "version": 1, "kind": "LinearDecoder",
     "tensors": {"weight": Tensor, ...},
     "metadata": "<JSON text>", "metadata_sha256": "<hex>"}

read back with ``torch.load(weights_only=True)``, torch's restricted unpickler, which admits
tensors, dicts, lists and strings and refuses any other Python object before it is built, so
a crafted file cannot run code. The metadata JSON carries ``weights_sha256`` (see
`weights_sha256`) and ``metadata_sha256`` covers the JSON text: a file whose weights or
metadata changed after it was written (a flipped bit, a truncated copy) is refused, and so
are non-finite weights and a file of another kind. Every refusal is one `ValueError` whose
message starts with the file's path.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_open

__all__ = ["FORMAT", "load_weight_file", "save_weight_file", "weights_sha256"]

FORMAT = "hil-weights"
VERSION = 1
_MIN_TORCH = (2, 6)  # torch.load(weights_only=True) had a code-execution hole before 2.6


def weights_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the tensors in name order: each name, dtype, shape and raw bytes."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def _text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _check_tensors(tensors: Any, where: str) -> dict[str, torch.Tensor]:
    if not isinstance(tensors, dict) or not tensors:
        raise ValueError(f"{where}: expected a non-empty dict of named tensors")
    for name, t in tensors.items():
        if not isinstance(name, str) or not isinstance(t, torch.Tensor):
            raise ValueError(f"{where}: expected tensors named by strings, got {name!r}: "
                             f"{type(t).__name__}")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{where}: weights {name!r} hold NaN or infinite values")
    return tensors


def save_weight_file(path: str | os.PathLike, kind: str, tensors: dict[str, torch.Tensor],
                     metadata: dict[str, Any]) -> Path:
    """Write `tensors` and `metadata` (JSON-serialisable) to `path`; returns the path.

    ``metadata["weights_sha256"]`` is set to the tensors' checksum. Atomic: written to a
    temporary name beside `path` (created with the user's umask) and renamed over it.
    """
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in
               _check_tensors(tensors, f"{path}: {kind}").items()}
    meta = dict(metadata, weights_sha256=weights_sha256(tensors))
    text = json.dumps(meta)
    blob = {"format": FORMAT, "version": VERSION, "kind": kind, "tensors": tensors,
            "metadata": text, "metadata_sha256": _text_sha256(text)}
    with atomic_open(path, "wb") as f:
        torch.save(blob, f)
    return path


def _torch_load(path: Path, kind: str) -> Any:
    if tuple(int(v) for v in re.findall(r"\d+", torch.__version__)[:2]) < _MIN_TORCH:
        raise RuntimeError(f"{path}: reading {kind} files safely needs torch >= "
                           f"{'.'.join(map(str, _MIN_TORCH))}, found {torch.__version__}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"unsupported (?:global|operand)[^\n]*", str(exc), re.IGNORECASE)
        detail = f" ({found.group(0).strip().rstrip('.')})" if found else ""
        raise ValueError(f"{path}: refused: it holds Python objects other than tensors and "
                         f"strings{detail}; a {kind} file holds only weights and JSON "
                         "metadata (nothing in the file was run)") from exc
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets one message
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ValueError(f"{path}: not a readable {kind} file ({type(exc).__name__}: "
                         f"{first})") from exc


def load_weight_file(path: str | os.PathLike, kind: str, *, remake: str
                     ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a file written by `save_weight_file` for `kind`; (tensors on CPU, metadata).

    Raises FileNotFoundError when `path` is not a file, and ValueError (message starting
    with the path) for a file that is not of this format or kind, holds Python objects,
    fails a checksum, or holds non-finite weights. `remake` says how to make the file
    again; it ends the message for a file in an older format.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{kind} file not found: {path}"
                                + (" (a directory)" if path.is_dir() else ""))
    blob = _torch_load(path, kind)
    if not isinstance(blob, dict):
        raise ValueError(f"{path}: not a {kind} file (holds a {type(blob).__name__})")
    if blob.get("format") != FORMAT:
        if "weight" in blob and "metadata" in blob:
            raise ValueError(f"{path}: a {kind} file in an older format, without a checksum "
                             f"of its weights; {remake}")
        raise ValueError(f"{path}: not a {kind} file (keys {sorted(map(str, blob))})")
    if blob.get("version") != VERSION:
        raise ValueError(f"{path}: {FORMAT} format version {blob.get('version')!r}, this "
                         f"version reads {VERSION}; {remake}")
    if blob.get("kind") != kind:
        raise ValueError(f"{path}: a {blob.get('kind')!r} file, expected a {kind} file")
    text = blob.get("metadata")
    if not isinstance(text, str) or blob.get("metadata_sha256") != _text_sha256(text):
        raise ValueError(f"{path}: file corrupted: its metadata does not match its checksum; "
                         f"{remake}")
    try:
        meta = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{path}: file corrupted: metadata is not JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: file corrupted: metadata is not a JSON object")
    tensors = blob.get("tensors")
    if not isinstance(tensors, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in tensors.items()):
        raise ValueError(f"{path}: not a {kind} file (no named tensors)")
    got = weights_sha256(tensors)
    if meta.get("weights_sha256") != got:
        raise ValueError(f"{path}: file corrupted: the weights' SHA-256 is {got[:12]}..., the "
                         f"file records {str(meta.get('weights_sha256'))[:12]}...; {remake}")
    _check_tensors(tensors, str(path))
    return tensors, meta
