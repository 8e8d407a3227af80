"""Provenance: the one record of which code made a file (docs/architecture.md §Provenance).

``provenance()`` returns one JSON-ready dict, the same everywhere it is written (a run's
``run.json``, a calibration file, a study's record)::

    {"package": "hil-diffraction", "package_version": "0.1.0",
     "git_commit": "c28c6cf...", "git_dirty": False,
     "python": "3.12.3", "platform": "Linux-6.8.0-x86_64-with-glibc2.39",
     "versions": {"torch": "2.13.0", "numpy": "2.4.6", "h5py": "3.16.0", ...}}

``git_commit`` and ``git_dirty`` are None when the code does not run from a git checkout
of this project (an installed wheel, a copied tree). A checkout counts only when the
package's own ``simulation/__init__.py`` is tracked by the repository ``git`` finds: a
virtual environment that lives inside some other checkout does not borrow its commit.
``git_dirty`` is True when tracked files differ from the commit (untracked files do not
count). ``versions`` names the installed distributions the code depends on; one that is
not installed is left out. Versions come from the installed metadata: nothing is imported.

``code_label()`` is the short human form: ``0.1.0+gc28c6cf`` (``.dirty`` appended when
the tree has changes), ``0.1.0`` outside a checkout.

It lives in ``simulation`` because every other package may import it
(``experiments -> hil -> calibration -> devices -> simulation``).
"""

from __future__ import annotations

import platform
import subprocess
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

__all__ = ["provenance", "code_label", "git_state", "package_versions", "PACKAGE",
           "DEPENDENCIES"]

PACKAGE = "hil-diffraction"
# distribution names whose versions a record keeps; an alternative (the headless OpenCV
# wheel) is tried when the first name is not installed
DEPENDENCIES: tuple[tuple[str, ...], ...] = (
    ("torch",), ("numpy",), ("h5py",), ("slmsuite",),
    ("opencv-python", "opencv-python-headless", "opencv-contrib-python",
     "opencv-contrib-python-headless"),
    ("pyvisa",), ("pyvisa-sim",), ("scikit-image",), ("matplotlib",),
)
_GIT_TIMEOUT_S = 5.0
_ROOT = Path(__file__).resolve().parent.parent  # the directory holding the packages


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    """``{distribution: version}`` of the dependencies that are installed (cached: the
    installed packages do not change under a running process)."""
    out: dict[str, str] = {}
    for names in DEPENDENCIES:
        for name in names:
            v = _version(name)
            if v is not None:
                out[names[0] if name.startswith("opencv") else name] = v
                break
    return out


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=_ROOT, capture_output=True, text=True,
                             timeout=_GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_state() -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the checkout this code runs from; ``(None, None)`` outside
    one (see the module docstring for what counts as a checkout)."""
    if _git("ls-files", "--error-unmatch", "simulation/__init__.py") is None:
        return None, None
    head = _git("rev-parse", "HEAD")
    if head is None or not head.strip():
        return None, None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return head.strip(), (None if status is None else bool(status.strip()))


def provenance() -> dict[str, Any]:
    """The provenance record (see the module docstring); git is asked each call, so a
    record made after an edit says ``git_dirty: True``."""
    commit, dirty = git_state()
    return {
        "package": PACKAGE,
        "package_version": _version(PACKAGE) or "unknown",
        "git_commit": commit,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": dict(package_versions()),
    }


def code_label(record: dict[str, Any] | None = None) -> str:
    """``<version>+g<short commit>[.dirty]`` of ``record`` (default: ``provenance()``)."""
    r = provenance() if record is None else record
    label = str(r.get("package_version") or "unknown")
    if r.get("git_commit"):
        label += "+g" + str(r["git_commit"])[:7] + (".dirty" if r.get("git_dirty") else "")
    return label
