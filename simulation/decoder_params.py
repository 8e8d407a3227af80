"""`LinearDecoder`'s settings: their names, their checks, and the named ``val_error`` scores.

One place for what the constructor, ``set_params`` and ``load`` accept, so that the three
check a setting the same way (errors name the setting, what was expected and what came).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ._checks import check_choice, check_positive
from .ridge_linalg import alpha_grid

__all__ = ["PARAM_NAMES", "check_params", "ssim_error", "callable_name"]

PARAM_NAMES = ("alpha", "method", "val_fraction", "seed", "alpha_decades", "val_error",
               "epochs", "lr", "eps", "progress", "device")


def callable_name(fn: Any) -> str:
    """How a ``val_error`` function is named in a file: ``<callable module.qualname>``."""
    mod = getattr(fn, "__module__", None) or "?"
    return f"<callable {mod}.{getattr(fn, '__qualname__', type(fn).__name__)}>"


def ssim_error(image_shape: tuple[int, ...]) -> Callable[[torch.Tensor, torch.Tensor], float]:
    """``val_error="ssim"``: 1 - mean SSIM of flattened (m, H·W) predictions against
    targets, reshaped to ``image_shape``."""
    from .metrics import ssim

    shape = (-1, *image_shape)

    def one_minus_ssim(pred: torch.Tensor, target: torch.Tensor) -> float:
        return 1.0 - float(np.mean(ssim(target.reshape(shape), pred.reshape(shape))))

    return one_minus_ssim


def check_params(params: dict[str, Any]) -> dict[str, Any]:
    """The settings in ``params`` checked and normalised (alpha a float, alpha_decades a
    tuple of floats, progress a bool); ValueError/TypeError naming the first bad one.
    The device is left as given."""
    p = dict(params)
    unknown = sorted(set(p) - set(PARAM_NAMES))
    if unknown:
        raise ValueError(f"LinearDecoder: unknown setting(s) {unknown}; expected some of "
                         f"{list(PARAM_NAMES)}")
    if "alpha" in p and p["alpha"] is not None:
        check_positive(p["alpha"], "alpha", allow_zero=True)
        p["alpha"] = float(p["alpha"])
    if "method" in p:
        check_choice(p["method"], "method", ("ridge", "adam"))
    vf = p.get("val_fraction")
    if vf is not None and (isinstance(vf, bool) or not isinstance(vf, int | float)
                           or not 0.0 <= vf < 1.0):
        raise ValueError(f"val_fraction: expected a number in [0, 1), got {vf!r}")
    if "seed" in p:
        if isinstance(p["seed"], bool) or not isinstance(p["seed"], int | np.integer):
            raise TypeError(f"seed: expected an integer, got {p['seed']!r}")
        p["seed"] = int(p["seed"])
    if p.get("alpha_decades") is not None:
        dec = p["alpha_decades"]
        if not isinstance(dec, tuple | list) or len(dec) != 2:
            raise ValueError(f"alpha_decades: expected (low, high), got {dec!r}")
        p["alpha_decades"] = (float(dec[0]), float(dec[1]))
        alpha_grid(1.0, p["alpha_decades"])  # checks the range
    ve = p.get("val_error", "mse")
    if not (callable(ve) or (isinstance(ve, str) and ve in ("mse", "ssim"))):
        raise ValueError(f"val_error: expected 'mse', 'ssim' or a function (predictions, "
                         f"targets) -> float, got {p['val_error']!r}")
    if "epochs" in p:
        check_positive(p["epochs"], "epochs", integer=True)
    for name in ("lr", "eps"):
        if name in p:
            check_positive(p[name], name)
    if "progress" in p:
        p["progress"] = bool(p["progress"])
    return p
