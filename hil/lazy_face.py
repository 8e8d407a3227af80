"""A package's public face, loaded on first use (PEP 562 module ``__getattr__``).

``hil`` and ``experiments`` export names whose modules import torch; importing them eagerly
would make every ``hil --help`` pay for it. ``lazy_face(package, {name: module})`` returns the
``__getattr__`` and ``__dir__`` a package's ``__init__`` assigns.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["lazy_face"]


def lazy_face(package: str, face: dict[str, str]
              ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` exporting ``face`` (name -> module)."""

    def __getattr__(name: str) -> Any:
        if name not in face:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(face[name]), name)
        setattr(sys.modules[package], name, value)  # later look-ups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(face))

    return __getattr__, __dir__
