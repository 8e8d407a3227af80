"""Input validation shared by the simulation package.

Every public function checks its inputs here, so that a bad argument raises an
exception that names the argument, what was expected and what came (shape,
dtype, range, NaN), in the same words everywhere: the tensor checks are here, the
number and choice checks are ``simulation.validate``'s (shared with every package).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from .validate import check_choice, check_count, check_number

__all__ = ["as_tensor", "check_images", "check_choice", "check_positive", "default_device"]


def default_device(device: str | torch.device | None = None) -> torch.device:
    """The device to compute on: the one given, else CUDA when present, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor | np.ndarray):
        return f"shape {tuple(x.shape)}, dtype {x.dtype}"
    return f"{type(x).__name__}"


def as_tensor(x: Any, name: str, *, device: torch.device | None = None) -> torch.Tensor:
    """Turn an array-like into a float32 tensor, refusing what cannot be one."""
    if isinstance(x, torch.Tensor):
        t = x
    elif isinstance(x, np.ndarray):
        if x.dtype == object or x.dtype.kind in "USV":
            raise TypeError(f"{name}: expected a numeric array, got {_describe(x)}")
        t = torch.from_numpy(np.ascontiguousarray(x))
    else:
        raise TypeError(f"{name}: expected a torch tensor or numpy array, got {_describe(x)}")
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{name}: expected real numbers, got dtype {t.dtype}")
    if not t.is_floating_point():
        raise TypeError(
            f"{name}: expected floating-point values in [0, 1], got integer dtype {t.dtype} "
            "(divide by 255 or the camera's full scale first)"
        )
    t = t.to(dtype=torch.float32)
    if device is not None:
        t = t.to(device)
    return t


def check_finite(t: torch.Tensor, name: str) -> None:
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        n = int(bad.sum())
        raise ValueError(f"{name}: expected finite values, got {n} NaN or infinite value(s)")


def check_images(
    x: Any,
    name: str = "images",
    *,
    ndim: Iterable[int] = (3,),
    size: int | None = None,
    unit_range: bool = True,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Validate a batch of images: float, finite, in [0, 1], with the expected rank.

    `ndim` lists the accepted ranks ((B, H, W) is 3, colour (B, 3, H, W) is 4);
    `size`, when given, is the required height and width.
    """
    t = as_tensor(x, name, device=device)
    ndim = tuple(ndim)
    if t.ndim not in ndim:
        want = " or ".join({3: "(B, H, W)", 4: "(B, C, H, W)", 2: "(H, W)"}.get(d, f"{d}-D")
                           for d in ndim)
        raise ValueError(f"{name}: expected shape {want}, got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"{name}: expected at least one image, got shape {tuple(t.shape)}")
    if size is not None and tuple(t.shape[-2:]) != (size, size):
        raise ValueError(
            f"{name}: expected images of {size}x{size} pixels, got {t.shape[-2]}x{t.shape[-1]}"
        )
    check_finite(t, name)
    if unit_range:
        lo, hi = float(t.min()), float(t.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"{name}: expected values in [0, 1], got range [{lo:.4g}, {hi:.4g}]")
    return t


def check_positive(value: Any, name: str, *, integer: bool = False, allow_zero: bool = False):
    """``validate.check_count`` (``integer``; >= 1, or >= 0 with ``allow_zero``) or
    ``validate.check_number``; returns ``value`` as given."""
    if integer:
        check_count(value, name, 0 if allow_zero else 1)
    else:
        check_number(value, name, allow_zero=allow_zero)
    return value
