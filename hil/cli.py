"""The `hil` command line.

Sub-commands live in small modules that each expose ``register(subparsers)``:
the ones of this package are listed in ``COMMAND_MODULES``; packages above
``hil`` in the import order (``experiments``) contribute theirs through the
``hil.commands`` entry-point group, so nothing here imports upward.

A sub-command's handler is stored as ``func`` on its parser and returns an
exit status. It runs with log lines routed through ``tqdm.write`` (so they print above
progress bars, not through them) and, with ``--json``, with stdout sent to stderr but for
the JSON result (``hil.cli_args.print_json``). The options every command shares
(``--out``/``-o``, ``--json``, ``--no-progress``, ``--seed``) are made by ``hil.cli_args``.
Errors a user can fix (missing or unwritable files, refused values, a device that
failed) print one line, ``hil: error: ...``, and exit with status 2
(``user_error_message``); what argparse itself refuses (an unknown option, a malformed
number) prints the usage and ``hil CMD: error: ...``, also with status 2. Programming
errors (``TypeError``, ``KeyError``, ``AttributeError``, ...) keep their traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import sys
from importlib.metadata import entry_points

__all__ = ["main", "build_parser", "UserError", "user_error_message"]

COMMAND_MODULES = (
    "hil.commands_sim",
    "hil.commands_bench_train",
    "hil.commands_devices",
    "hil.commands_session",
    "hil.commands_mask",
    "hil.commands_calibrate",
    "hil.commands_live",
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


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hil-diffraction")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hil",
        description="Hardware-in-the-loop controller for encoded-diffraction imagers "
        "(digital twin, decoders, devices, calibration, bench runs).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--version", action="version", version=f"hil {_version()}",
                        help="print the package version and exit")
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
    from tqdm.contrib.logging import logging_redirect_tqdm

    from hil.safety import exit_status, signal_name, signals_as_interrupt

    # --json: the result alone on stdout (cli_args.print_json writes it to this stream);
    # anything else printed there while the command runs (drivers, libraries) goes to stderr
    args.result_stream = sys.stdout
    to_stderr = (contextlib.redirect_stdout(sys.stderr) if getattr(args, "json", False)
                 else contextlib.nullcontext())
    try:
        # log lines go through tqdm.write, above any progress bar, instead of through it
        with signals_as_interrupt(), to_stderr, logging_redirect_tqdm():
            return int(args.func(args) or 0)
    except KeyboardInterrupt as exc:
        print(f"hil: interrupted ({signal_name(exc)})", file=sys.stderr)
        return exit_status(exc)
    except Exception as exc:  # noqa: BLE001 - user errors become one line; bugs re-raised
        msg = user_error_message(exc)
        if msg is None:
            raise
        print(f"hil: error: {msg}", file=sys.stderr)
        return 2


def _os_error_message(exc: OSError) -> str:
    """``FILE: reason`` for an OSError that carries its file name, else its own text."""
    if exc.filename is None or not exc.strerror:
        return str(exc)
    where = str(exc.filename)
    if exc.filename2 is not None:
        where += f" -> {exc.filename2}"
    return f"{where}: {exc.strerror}"


def user_error_message(exc: BaseException) -> str | None:
    """The one-line message for an error the user can fix, or None for a programming error.

    User errors: ``UserError``, ``ValueError`` (``devices.ConfigError`` included),
    ``devices.DeviceError`` (any device failure: the bench was closed on the way out,
    laser output off) and ``OSError`` (a file that is missing, unreadable, unwritable,
    in a full or read-only file system: named through ``OSError.filename``).
    ``TypeError``, ``KeyError``, ``AttributeError`` and anything else are bugs: None,
    so that they keep their traceback.
    """
    if "devices.errors" in sys.modules:  # raised only if the devices package was imported
        from devices.errors import DeviceError

        if isinstance(exc, DeviceError):
            return " ".join(f"{exc} (device error: the bench was closed, laser output off)"
                            .split())
    if isinstance(exc, UserError | ValueError):
        text = str(exc)
    elif isinstance(exc, OSError):
        text = _os_error_message(exc)
    else:
        return None
    return " ".join(text.split()) or type(exc).__name__


if __name__ == "__main__":  # pragma: no cover
    # run as `python -m hil.cli`: use the module the sub-commands import (their UserError)
    from hil.cli import main as _main

    sys.exit(_main())
