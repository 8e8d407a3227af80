"""Bench files: TOML (tomllib) with ``[slm]``, ``[camera]``, ``[laser]``, ``[power_meter]``.

A simulated bench may add ``[sim_flaws]``: flaws the twin does not model, every one off
by default (``load_config`` gives ``None`` there for a real bench, which refuses it).

Each table names its ``backend``: ``"sim"`` (the simulated bench), ``"slmsuite:<Class>"``
(any slmsuite SLM or camera class; its constructor arguments go in the ``args``
sub-table, e.g. ``[camera.args]``), or ``"visa:<resource>"`` (laser, power meter).
Unknown keys, wrong types and out-of-range values are refused with a ``ConfigError``
whose message starts with the key: ``camera.exposure_s: expected a number > 0, got -1``.
``load_config`` returns a plain dict with every default filled in; ``SCHEMA`` documents
every key (``describe_schema()`` prints it).

Times have upper limits (``Key.limit``, shown by ``describe_schema``): exposure, time-outs,
settle time and frame latency (``devices._common.MAX_*``), so that no typo can make a
device wait for ever. A bench file must be a regular file (not a directory, FIFO or
device) of at most ``MAX_BENCH_FILE_BYTES``, in UTF-8.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import tomllib

from devices._common import MAX_EXPOSURE_S, MAX_LATENCY_S, MAX_SETTLE_S, MAX_TIMEOUT_S
from devices.errors import ConfigError

__all__ = ["load_config", "resolve_bench_path", "shipped_benches", "SCHEMA", "describe_schema",
           "MAX_BENCH_FILE_BYTES", "MAX_CAPTURE_ATTEMPTS"]

MAX_BENCH_FILE_BYTES = 1 << 20  # a bench file is a few hundred bytes; 1 MiB is plenty
MAX_CAPTURE_ATTEMPTS = 100

_MISSING = object()


@dataclass(frozen=True)
class Key:
    kind: str  # number | int | bool | str | shape | table
    default: Any = _MISSING
    check: Callable[[Any], bool] | None = None
    expect: str = ""  # words for the message, e.g. "> 0"
    backends: tuple[str, ...] = ()  # empty: every backend; else "sim", "slmsuite", "visa"
    help: str = ""
    limit: float | None = None  # upper limit (inclusive), checked after ``check``
    unit: str = ""  # of the limit, for messages: "s"


def _gt0(v):
    return v > 0


def _ge0(v):
    return v >= 0


def _prob(v):
    return 0 <= v < 1


_COMMON_SLM_CAMERA = {
    "backend": Key("str", help='"sim" or "slmsuite:<Class>"'),
    "name": Key("str", "", help="label used in messages and records"),
    "args": Key("table", {}, backends=("slmsuite",),
                help="arguments for the slmsuite class constructor"),
}

SCHEMA: dict[str, dict[str, Key]] = {
    "": {
        "seed": Key("int", 0, _ge0, ">= 0", help="seeds every random draw of a simulated bench"),
        "name": Key("str", "bench", help="bench name"),
        "flaws": Key("bool", True, help="simulated bench: draw hidden flaws from the seed"),
        "dark_method": Key("str", "auto", lambda v: v in ("auto", "laser", "prompt"),
                           '"auto", "laser" or "prompt"',
                           help="how the dark step blocks the light: laser (output off "
                                "through the laser controller), prompt (asks you to block "
                                "the beam and press Enter; refused without a terminal), "
                                "auto (laser when the bench has one, else prompt)"),
    },
    "slm": {
        **_COMMON_SLM_CAMERA,
        "settle_time_s": Key("number", 0.0, _ge0, ">= 0", help="wait after each set_phase",
                             limit=MAX_SETTLE_S, unit="s"),
        "shape": Key("shape", [512, 512], backends=("sim",), help="[rows, cols]"),
        "bitdepth": Key("int", 8, lambda v: 1 <= v <= 16, "in [1, 16]", ("sim",)),
        "pitch_um": Key("number", 8.0, _gt0, "> 0", ("sim",)),
        "wav_um": Key("number", 0.633, lambda v: 0.2 <= v <= 20, "in [0.2, 20]", ("sim",)),
        "refresh_hz": Key("number", None, lambda v: 0 < v <= 10000, "in (0, 10000]",
                          help="panel refresh rate: a write lands on the next refresh "
                               "(sim: simulated; absent: writes land at once)"),
    },
    "camera": {
        **_COMMON_SLM_CAMERA,
        "exposure_s": Key("number", 1e-3, _gt0, "> 0", help="exposure set when opened",
                          limit=MAX_EXPOSURE_S, unit="s"),
        "capture_attempts": Key("int", 5, lambda v: v >= 1, ">= 1",
                                help="tries per frame before a dropped frame is an error",
                                limit=MAX_CAPTURE_ATTEMPTS),
        "timeout_s": Key("number", 1.0, _gt0, "> 0", help="wait per frame beyond the exposure",
                         limit=MAX_TIMEOUT_S, unit="s"),
        "pitch_um": Key("number", None, _gt0, "> 0",
                        help="pixel pitch (sim: default 5.5; slmsuite: overrides the driver's)"),
        "watchdog": Key("bool", False, backends=("slmsuite",),
                        help="run driver calls in a thread, give up on a hung one"),
        "frame_rate_hz": Key("number", None, lambda v: 0 < v <= 100000, "in (0, 100000]",
                             help="camera frame rate: at most one exposure per 1/frame_rate_hz "
                                  "(sim: simulated; slmsuite: as set in the vendor's tool)"),
        "roi": Key("roi", None,
                   help="[x0, width, y0, height]: the driver's window of interest (slmsuite "
                        "set_woi; a driver without one refuses it when the bench opens)"),
        "pixel_format": Key("str", None,
                            help="the driver's pixel format, where it offers one (else "
                                 "refused when the bench opens)"),
        "gain": Key("number", None, _ge0, ">= 0",
                    help="analog gain in the driver's unit, where it offers one (else "
                         "refused when the bench opens)"),
        "trigger": Key("str", None, lambda v: v in ("software", "hardware"),
                       '"software" or "hardware"',
                       help="hardware: the camera exposes on the SLM's trigger line (where "
                            "the driver offers it, else refused when the bench opens)"),
        "shape": Key("shape", [512, 512], backends=("sim",), help="[rows, cols]"),
        "bitdepth": Key("int", 12, lambda v: 1 <= v <= 16, "in [1, 16]", ("sim",)),
        "focal_length_mm": Key("number", 50.0, _gt0, "> 0", ("sim",),
                               help="Fourier lens (nominal; the hidden scale flaw changes it)"),
        "photons_per_s": Key("number", 1e9, _ge0, ">= 0", ("sim",),
                             help="photoelectrons per second, whole far field, at reference power"),
        "reference_power_mW": Key("number", 1.0, _gt0, "> 0", ("sim",),
                                  help="laser power at which photons_per_s holds"),
        "gain_counts_per_electron": Key("number", 0.4, _gt0, "> 0", ("sim",)),
        "read_noise_e": Key("number", 5.0, _ge0, ">= 0", ("sim",)),
        "noise": Key("bool", True, backends=("sim",),
                     help="shot noise, read noise and dark level on/off"),
        "zero_order_fraction": Key("number", 0.02, _prob, "in [0, 1)", ("sim",)),
        "frame_latency_s": Key("number", 0.0, _ge0, ">= 0", ("sim",),
                               help="added to every frame", limit=MAX_LATENCY_S, unit="s"),
        "drop_probability": Key("number", 0.0, _prob, "in [0, 1)", ("sim",)),
        "timeout_probability": Key("number", 0.0, _prob, "in [0, 1)", ("sim",)),
        "disconnect_after_frames": Key("int", 0, _ge0, ">= 0 (0: never)", ("sim",)),
    },
    "laser": {
        "backend": Key("str", help='"sim" or "visa:<resource>"'),
        "name": Key("str", "laser"),
        "visa_library": Key("str", "", backends=("visa",), help='"" (IVI), "@py", ...'),
        "timeout_s": Key("number", 2.0, _gt0, "> 0", help="VISA time-out per query",
                         limit=MAX_TIMEOUT_S, unit="s"),
        "control": Key("str", "current", lambda v: v in ("current", "power"),
                       '"current" or "power"'),
        "max_current_mA": Key("number", 100.0, _gt0, "> 0", help="hard limit, checked first"),
        "max_power_mW": Key("number", 10.0, _gt0, "> 0", help="hard limit, checked first"),
        "slope_mW_per_mA": Key("number", 0.5, _ge0, ">= 0"),
        "threshold_mA": Key("number", 20.0, _ge0, ">= 0"),
        "setpoint": Key("number", None, _ge0, ">= 0",
                        help="set when opened (mA or mW per control); absent: untouched"),
        "output": Key("str", "off", lambda v: v in ("off", "on"), '"off" or "on"',
                      help="output state when opened"),
        "watchdog_s": Key("number", None, lambda v: 0 < v <= 60, "in (0, 60]",
                          help="arm the controller's watchdog: output off after this long "
                               "without a keep-alive (sent every watchdog_s/4); refused for "
                               "an instrument without one; absent: not armed"),
        "sim_state_file": Key("str", None, backends=("sim",),
                              help="simulated laser: mirror the output state to this JSON "
                                   "file (for tests; devices.visa.sim_laser_state)"),
    },
    "power_meter": {
        "backend": Key("str", help='"sim" or "visa:<resource>"'),
        "name": Key("str", "power_meter"),
        "visa_library": Key("str", "", backends=("visa",)),
        "timeout_s": Key("number", 2.0, _gt0, "> 0", help="VISA time-out per query",
                         limit=MAX_TIMEOUT_S, unit="s"),
        "wavelength_nm": Key("number", None, _gt0, "> 0", help="set when opened"),
    },
    # Simulated bench only: flaws the twin does not model (devices/flaws.py). Every key is
    # off by default; the seeded draws behind them come from the bench ``seed``.
    "sim_flaws": {
        "crosstalk_sigma_px": Key("number", 0.0, _ge0, ">= 0", limit=10.0,
                                  help="SLM pixel crosstalk: Gaussian sigma (SLM pixels) on "
                                       "the displayed phase"),
        "phase_span_variation": Key("number", 0.0, lambda v: 0 <= v <= 0.5, "in [0, 0.5]",
                                    help="peak-to-peak relative change of the grey->phase "
                                         "span across the panel"),
        "flicker_rad_rms": Key("number", 0.0, _ge0, ">= 0", limit=3.0,
                               help="per-frame phase flicker, rms at a 2*pi delay"),
        "settle_tau_s": Key("number", 0.0, _ge0, ">= 0", limit=MAX_SETTLE_S, unit="s",
                            help="true settle time constant (hidden); 0: the SLM settles "
                                 "within [slm] settle_time_s"),
        "high_order_aberration_rad_rms": Key("number", 0.0, _ge0, ">= 0", limit=10.0,
                                             help="rms of Noll 9-28 aberrations (the fit "
                                                  "knows 4-8)"),
        "source_shape": Key("str", "gaussian",
                            lambda v: v in ("gaussian", "supergaussian", "clipped"),
                            '"gaussian", "supergaussian" or "clipped"'),
        "power_fluctuation_rms": Key("number", 0.0, lambda v: 0 <= v <= 0.5, "in [0, 0.5]",
                                     help="per-frame relative laser power fluctuation"),
        "drift_px_per_kframe": Key("number", 0.0, _ge0, ">= 0", limit=1000.0,
                                   help="camera image shift, camera pixels per 1,000 frames "
                                        "(seeded direction)"),
        "camera_nonlinearity": Key("number", 0.0, lambda v: 0 <= v < 0.5, "in [0, 0.5)",
                                   help="fractional compression at full scale"),
        "hot_pixel_fraction": Key("number", 0.0, lambda v: 0 <= v <= 0.1, "in [0, 0.1]"),
        "vignetting": Key("number", 0.0, lambda v: 0 <= v < 1, "in [0, 1)",
                          help="fractional fall-off at the camera corner"),
        "background_counts_per_s": Key("number", 0.0, _ge0, ">= 0",
                                       help="stray background, counts per second of exposure"),
        "ghost_fraction": Key("number", 0.0, lambda v: 0 <= v < 1, "in [0, 1)",
                              help="stray-light ghost of the signal (laser on only)"),
        "camera_rotation_deg": Key("number", None, lambda v: -180 <= v <= 180,
                                   "in [-180, 180]", help="override the drawn rotation"),
        "camera_mirror": Key("bool", False, help="camera image mirrored (x flipped)"),
        "slm_phase_span": Key("number", None, lambda v: 0 < v <= 4, "in (0, 4]",
                              help="override the drawn grey range, in units of 2*pi"),
    },
}

_BACKENDS = {"slm": ("sim", "slmsuite"), "camera": ("sim", "slmsuite"),
             "laser": ("sim", "visa"), "power_meter": ("sim", "visa")}


def _type_ok(kind: str, v: Any) -> bool:
    if kind == "number":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if kind == "int":
        return isinstance(v, int) and not isinstance(v, bool)
    if kind == "bool":
        return isinstance(v, bool)
    if kind == "str":
        return isinstance(v, str)
    if kind == "table":
        return isinstance(v, dict)
    if kind == "roi":
        return (isinstance(v, (list, tuple)) and len(v) == 4
                and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v)
                and v[1] > 0 and v[3] > 0)
    if kind == "shape":
        return (isinstance(v, (list, tuple)) and len(v) == 2
                and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v))
    raise AssertionError(kind)


_WORDS = {"number": "a number", "int": "an integer", "bool": "true or false",
          "str": "a string", "table": "a table",
          "roi": "[x0, width, y0, height] (integers >= 0, width and height > 0)",
          "shape": "[rows, cols] (two integers > 0)"}


def _check(path: str, key: Key, v: Any) -> Any:
    expect = _WORDS[key.kind] + (f" {key.expect}" if key.expect and key.kind != "str" else "")
    if key.kind == "str" and key.expect:
        expect = key.expect
    if not _type_ok(key.kind, v):
        raise ConfigError(f"{path}: expected {expect}, got {v!r}")
    if key.kind == "number" and not math.isfinite(v):
        raise ConfigError(f"{path}: expected {expect}, got {v!r}")
    if key.check is not None and not key.check(v):
        raise ConfigError(f"{path}: expected {expect}, got {v!r}")
    if key.limit is not None and v > key.limit:
        unit = f" {key.unit}" if key.unit else ""
        raise ConfigError(f"{path}: expected {expect}, at most {key.limit:g}{unit} "
                          f"(upper limit), got {v!r}")
    return float(v) if key.kind == "number" else (list(v) if key.kind in ("shape", "roi")
                                                   else v)


def _backend_family(section: str, backend: Any) -> str:
    allowed = _BACKENDS[section]
    choices = " or ".join(
        '"sim"' if a == "sim" else f'"{a}:<{"Class" if a == "slmsuite" else "resource"}>"'
        for a in allowed)
    if not isinstance(backend, str):
        raise ConfigError(f"{section}.backend: expected {choices}, got {backend!r}")
    if backend == "sim":
        return "sim"
    family, _, rest = backend.partition(":")
    if family in allowed and family != "sim" and rest.strip():
        return family
    raise ConfigError(f"{section}.backend: expected {choices}, got {backend!r}")


def _section(section: str, table: Any) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigError(f"{section}: expected a table, got {table!r}")
    if "backend" not in table:
        raise ConfigError(f"{section}.backend: missing (one of "
                          f"{', '.join(_BACKENDS[section])})")
    family = _backend_family(section, table["backend"])
    schema = SCHEMA[section]
    out: dict[str, Any] = {"family": family}
    for k, v in table.items():
        path = f"{section}.{k}"
        if k not in schema:
            raise ConfigError(f"{path}: unknown key; known keys: {', '.join(schema)}")
        key = schema[k]
        if key.backends and family not in key.backends:
            raise ConfigError(f"{path}: only for backend "
                              f"{' or '.join(key.backends)}, not {table['backend']!r}")
        out[k] = _check(path, key, v)
    for k, key in schema.items():
        if k not in out and key.default is not _MISSING and (
                not key.backends or family in key.backends):
            d = key.default
            out[k] = dict(d) if isinstance(d, dict) else (list(d) if isinstance(d, list) else d)
    return out


def shipped_benches() -> dict[str, Path]:
    """Example bench files shipped with the package, by file name."""
    root = resources.files("devices") / "benches"
    return {p.name: Path(str(p)) for p in root.iterdir() if p.name.endswith(".toml")}


def resolve_bench_path(path: str | Path) -> Path:
    """A file path, or the name of a shipped example ("sim.toml", "sim-realistic")."""
    p = Path(path)
    if p.exists():
        return p
    shipped = shipped_benches()
    for name in (p.name, f"{p.name}.toml"):
        if name in shipped and len(p.parts) == 1:
            return shipped[name]
    raise FileNotFoundError(
        f"bench file {str(path)!r} not found (shipped examples: {', '.join(sorted(shipped))})"
    )


def read_bench_text(path: str | Path) -> str:
    """The text of a bench file: a regular file of at most ``MAX_BENCH_FILE_BYTES``, UTF-8.

    A directory, FIFO, socket or device (``/dev/zero``) is refused before anything is
    read (a FIFO would block, ``/dev/zero`` never ends); so is a file that cannot be
    opened. Every refusal is a ``ConfigError`` naming the file.
    """
    p = Path(path)
    try:  # O_NONBLOCK: opening a FIFO must not wait for a writer
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise ConfigError(f"bench file {str(p)!r}: cannot open it ({exc.strerror})") from exc
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise ConfigError(f"bench file {str(p)!r}: expected a TOML file, got a directory")
        if not stat.S_ISREG(mode):
            kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a character device"
                    if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode)
                    else "a socket" if stat.S_ISSOCK(mode) else "a special file")
            raise ConfigError(f"bench file {str(p)!r}: expected a regular TOML file, "
                              f"got {kind}")
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        data = f.read(MAX_BENCH_FILE_BYTES + 1)
    if len(data) > MAX_BENCH_FILE_BYTES:
        raise ConfigError(f"bench file {str(p)!r}: larger than the limit of "
                          f"{MAX_BENCH_FILE_BYTES} bytes for a bench file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"bench file {str(p)!r}: not UTF-8 text (byte {exc.start})") from exc


def load_config(source: str | Path | dict[str, Any]) -> dict[str, Any]:
    """Validate a bench description (path, shipped example name, or dict) and fill defaults."""
    if isinstance(source, dict):
        raw, origin = source, "<dict>"
    else:
        path = resolve_bench_path(source)
        text = read_bench_text(path)
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
        origin = str(path)
    out: dict[str, Any] = {"source": origin}
    for k, v in raw.items():
        if k in SCHEMA and k != "":
            continue
        if k not in SCHEMA[""]:
            known = [*SCHEMA[""], "slm", "camera", "laser", "power_meter", "sim_flaws"]
            raise ConfigError(f"{k}: unknown key; known: {', '.join(known)}")
        out[k] = _check(k, SCHEMA[""][k], v)
    for k, key in SCHEMA[""].items():
        out.setdefault(k, key.default)
    for section in ("slm", "camera"):
        if section not in raw:
            raise ConfigError(f"{section}: missing table [{section}]")
    for section in ("slm", "camera", "laser", "power_meter"):
        out[section] = _section(section, raw[section]) if section in raw else None
    out["sim_flaws"] = _sim_flaws_section(raw.get("sim_flaws"), out)
    return out


def _sim_flaws_section(table: Any, cfg: dict[str, Any]) -> dict[str, Any] | None:
    """``[sim_flaws]`` checked and filled with its (off) defaults; None for a real bench."""
    sim = cfg["slm"]["family"] == "sim" and cfg["camera"]["family"] == "sim"
    if table is None:
        table = {}
    elif not isinstance(table, dict):
        raise ConfigError(f"sim_flaws: expected a table, got {table!r}")
    if not sim:
        if table:
            raise ConfigError('sim_flaws: only for a simulated bench (slm.backend and '
                              'camera.backend = "sim"), got slm.backend = '
                              f'{cfg["slm"]["backend"]!r}, camera.backend = '
                              f'{cfg["camera"]["backend"]!r}')
        return None
    schema = SCHEMA["sim_flaws"]
    out: dict[str, Any] = {}
    for k, v in table.items():
        if k not in schema:
            raise ConfigError(f"sim_flaws.{k}: unknown key; known keys: {', '.join(schema)}")
        out[k] = _check(f"sim_flaws.{k}", schema[k], v)
    for k, key in schema.items():
        out.setdefault(k, key.default)
    return out


def describe_schema() -> str:
    """Every key of every table, with type, default and meaning (for --help and docs)."""
    lines = []
    for section, keys in SCHEMA.items():
        lines.append(f"[{section}]" if section else "(top level)")
        for k, key in keys.items():
            d = "" if key.default is _MISSING else f" = {key.default!r}"
            only = f" ({'/'.join(key.backends)} only)" if key.backends else ""
            expect = key.expect
            if key.limit is not None:
                unit = f" {key.unit}" if key.unit else ""
                expect = f"{expect}, <= {key.limit:g}{unit} (upper limit)"
            lines.append(f"  {k}: {_WORDS[key.kind]} {expect}{d}{only}  {key.help}".rstrip())
    return "\n".join(lines)
