"""What every `hil` sub-command shares: argument types and the common options.

Argument types give one wording for a bad number: argparse turns the
``ArgumentTypeError`` into ``hil <cmd>: error: argument --x: expected ...`` (exit status 2).

The common options (``add_out``, ``add_json``, ``add_no_progress``, ``add_seed``) have one
spelling and one meaning in every command that takes them; ``print_json`` prints a
``--json`` result.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

__all__ = ["positive_int", "positive_float", "nonnegative_int", "add_out", "add_json",
           "add_no_progress", "add_seed", "print_json"]


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def positive_int(text: str) -> int:
    """An integer >= 1."""
    v = _int(text, "a positive integer")
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def nonnegative_int(text: str) -> int:
    """An integer >= 0 (0 usually means "off")."""
    v = _int(text, "an integer >= 0")
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {v}")
    return v


def positive_float(text: str) -> float:
    """A finite number > 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return v


# ------------------------------------------------------------------ options every command shares
# One spelling and one meaning each, whichever command carries them:
#   --out/-o PATH   where the command writes (a Path; a folder or a file, said in the help)
#   --json          the result as one JSON document on stdout, nothing else there
#   --no-progress   no progress bars (log lines still go to stderr)
#   --seed N        the seed of every random draw the command makes


def add_out(parser: argparse.ArgumentParser, help: str, *, required: bool = False,
            default: Path | None = None, metavar: str = "PATH") -> None:
    """``--out``/``-o``: a ``Path`` (``help`` says whether a folder or a file is meant)."""
    parser.add_argument("--out", "-o", type=Path, required=required, default=default,
                        metavar=metavar, help=help)


def add_json(parser: argparse.ArgumentParser, what: str = "the result") -> None:
    """``--json``: ``what`` as one JSON document on stdout (``print_json``); while the
    command runs, anything else printed to stdout goes to stderr (``hil.cli.main``)."""
    parser.add_argument("--json", action="store_true",
                        help=f"print {what} as JSON on stdout, nothing else there (progress "
                        "and log lines go to stderr)")


def add_no_progress(parser: argparse.ArgumentParser, *, quiet_alias: bool = False) -> None:
    """``--no-progress`` (``args.no_progress``); ``quiet_alias`` also accepts ``--quiet``,
    the older spelling of a command that had it."""
    names = ("--no-progress", "--quiet") if quiet_alias else ("--no-progress",)
    parser.add_argument(*names, dest="no_progress", action="store_true",
                        help="no progress bars (log lines only)"
                        + ("; --quiet is the older spelling" if quiet_alias else ""))


def add_seed(parser: argparse.ArgumentParser, default: int | None = 0,
             help: str = "seed of the random draws") -> None:
    """``--seed N``: an integer, ``default`` when not given."""
    parser.add_argument("--seed", type=int, default=default,
                        help=f"{help} (default {default})" if default is not None else help)


def print_json(args: argparse.Namespace, result: Any) -> None:
    """Print ``result`` as JSON to the stdout the command was started with.

    ``hil.cli.main`` keeps that stream in ``args.result_stream`` and sends everything else
    written to stdout (drivers, libraries) to stderr while a ``--json`` command runs, so
    that a script reading stdout gets the JSON document alone.
    """
    stream = getattr(args, "result_stream", None) or sys.stdout
    print(json.dumps(result, indent=2, default=str), file=stream)
    stream.flush()
