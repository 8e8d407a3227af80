"""A package's public face, loaded on first use (PEP 562 module ``__getattr__``).

Every package of this project exports names whose modules import torch; importing them
eagerly would make every ``hil --help``, and every use of a light utility such as
``simulation.atomic``, pay for it. ``lazy_face(package, {name: module})`` returns the
``__getattr__`` and ``__dir__`` a package's ``__init__`` assigns. It lives in ``simulation``,
the lowest layer, so that every package can use it; it imports nothing heavy.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["lazy_face"]


def lazy_face(package: str, face: dict[str, str], live: frozenset[str] = frozenset()
              ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` exporting ``face`` (name -> module).
    Names in ``live`` are looked up on every access (values a registry may change);
    the others are cached in the package after their first use."""

    def __getattr__(name: str) -> Any:
        if name not in face:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(face[name]), name)
        if name not in live:
            setattr(sys.modules[package], name, value)  # later look-ups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(face))

    return __getattr__, __dir__
