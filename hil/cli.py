"""The `hil` command line.

Sub-commands live in small modules that each expose ``register(subparsers)``:
the ones of this package are listed in ``COMMAND_MODULES``; packages above
``hil`` in the import order (``experiments``) contribute theirs through the
``hil.commands`` entry-point group, so nothing here imports upward.

A sub-command's handler is stored as ``func`` on its parser and returns an
exit status. Errors a user can fix (bad arguments, missing files, refused
values) print one line, ``hil: error: ...``, and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from importlib.metadata import entry_points

__all__ = ["main", "build_parser", "UserError"]

COMMAND_MODULES = (
    "hil.commands_sim",
    "hil.commands_devices",
    "hil.commands_session",
    "hil.commands_calibrate",
)

log = logging.getLogger("hil")


class UserError(Exception):
    """An error the user can fix; printed as one line, without a traceback."""


def _load_registrars():
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # the module is not written yet
                continue
            raise
        yield mod.register
    for ep in entry_points(group="hil.commands"):
        try:
            yield ep.load()
        except ImportError as exc:  # one broken plug-in must not take the whole CLI down
            print(f"hil: warning: sub-command {ep.name!r} unavailable ({exc})", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hil",
        description="Hardware-in-the-loop controller for encoded-diffraction imagers "
        "(digital twin, decoders, devices, calibration, bench runs).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in _load_registrars():
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("hil: interrupted", file=sys.stderr)
        return 130
    except (UserError, ValueError, TypeError, FileNotFoundError, FileExistsError,
            KeyError, PermissionError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"hil: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
