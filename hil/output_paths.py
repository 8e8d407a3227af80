"""Output paths checked before any work: ``--out`` and friends fail in one line, at once.

A command that writes files checks its output paths first, with the argument's name,
so that a path inside a regular file, a read-only file system or a directory in place of
a file is refused before a minute of training or an hour of captures, not after.
``check_output_dir`` creates the directory (and its parents) and writes, then removes,
a probe file in it; ``check_output_file`` does the same for the file's folder and
refuses a directory where the file should go. Both raise ``UserError`` naming the
argument, the path and the reason.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hil.cli import UserError

__all__ = ["check_output_dir", "check_output_file"]


def _file_ancestor(path: Path) -> Path | None:
    """The first existing ancestor of ``path`` (or ``path`` itself) that is not a folder."""
    for p in (path, *path.parents):
        if p.exists() or p.is_symlink():
            return None if p.is_dir() else p
    return None


def check_output_dir(path: str | os.PathLike, arg: str) -> Path:
    """Create the output folder ``path`` of argument ``arg`` and check it is writable."""
    p = Path(path)
    blocker = _file_ancestor(p)
    if blocker is not None:
        raise UserError(f"{arg}: cannot create the folder {p}: {blocker} is a file, "
                        "not a folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=p, prefix=".hil-write-check-"):
            pass
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(p) else ""
        raise UserError(f"{arg}: cannot write in the folder {p}: "
                        f"{exc.strerror or exc}{where}") from exc
    return p


def check_output_file(path: str | os.PathLike, arg: str) -> Path:
    """Check that the file ``path`` of argument ``arg`` can be written (its folder is created)."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{arg}: expected a file name, got the folder {p}")
    check_output_dir(p.parent, arg)
    return p
