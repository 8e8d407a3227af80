"""Shared pieces of the tests: one simulated-bench builder, one quick decoder, fake drivers.

* ``sim_bench(size, laser=..., flaws=..., **camera)`` is the one way to describe a simulated
  bench (a dict for ``open_bench``, ``RunConfig`` or ``write_bench_toml``); ``small_bench``,
  ``tiny_sim_bench``, ``laser_bench``, ``SMALL_BENCH`` and ``CALIBRATION_BENCH`` are its presets
  under the names older test modules import; ``calibration_bench(seed)`` opens the
  calibration preset, ``FAST_CALIBRATION`` the per-step options that keep its calibration
  quick.
* ``quick_decoder(path)`` is the one test decoder (twin-trained, ridge, fixed alpha), fitted
  once per process; conftest's ``decoder_path`` fixture gives a fresh file of it per test.
* ``FakeCameraDriver`` / ``FakeSLMDriver``: just enough of a slmsuite driver to wrap with
  ``SlmsuiteCamera`` / ``SlmsuiteSLM`` and script failures (the third backend of the
  device contract, ``test_device_contract.py``).
* ``imports(source)`` / ``bench_violations(source)``: the AST import scan of the
  no-inverse-crime check (``test_devices_flaws_separation.py``, ``test_pixel_grid.py``).

This is a plain module on the tests' path, never a test module: test modules import from
here and from nothing else in ``tests/``.
"""

from __future__ import annotations

import ast
import copy
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np

# ------------------------------------------------------------------ the bench builder
#: the standard simulated laser (power-controlled); a preset may change its set-points
_LASER = {"backend": "sim", "control": "power", "max_power_mW": 20.0, "setpoint": 10.0,
          "output": "on"}

_PRESETS: dict[str, dict[str, Any]] = {
    # 256x256 SLM and camera, flaws, noise and zero order off, 1 ms exposure
    "small": {
        "bench": {"name": "small-sim", "seed": 3, "flaws": False,
                  "slm": {"backend": "sim", "shape": [256, 256]},
                  "camera": {"backend": "sim", "shape": [256, 256], "noise": False,
                             "zero_order_fraction": 0.0, "exposure_s": 1e-3}},
        "laser": {"max_power_mW": 2.0, "setpoint": 1.0, "output": "off"},
        "reference_power_mW": None,
    },
    # a 128x128 SLM and a 96x128 camera (noise and zero order off); flaws as the seed draws
    "tiny": {
        "bench": {"seed": 1, "slm": {"backend": "sim", "shape": [128, 128]},
                  "camera": {"backend": "sim", "shape": [96, 128], "focal_length_mm": 12.0,
                             "noise": False, "zero_order_fraction": 0.0}},
        "laser": {},
        "reference_power_mW": 10.0,
    },
    # the calibration bench: hidden random flaws on, noise on, a power-controlled laser
    "calibration": {
        "bench": {"name": "ci", "seed": 0,
                  "slm": {"backend": "sim", "shape": [256, 256]},
                  "camera": {"backend": "sim", "shape": [256, 256]}},
        "laser": {},
        "reference_power_mW": 10.0,
    },
}


def sim_bench(size: str = "small", *, seed: int | None = None, laser: bool | dict = False,
              power_meter: bool | dict = False, flaws: dict | None = None,
              **camera: Any) -> dict:
    """A simulated bench description (a fresh dict) from one of the presets.

    ``size``: "small", "tiny" or "calibration" (see ``_PRESETS``). ``laser``: True adds the
    preset's simulated laser, a dict adds it with those keys changed (e.g. ``output``,
    ``sim_state_file``, ``watchdog_s``); with a laser the camera's ``reference_power_mW``
    is the preset's (unless given). ``power_meter``: True (or a dict of keys) adds the
    simulated power meter (in the laser's beam when there is one). ``flaws``: a
    ``[sim_flaws]`` table. ``camera``: keys of ``[camera]`` to set (faults, noise, ...).
    """
    if size not in _PRESETS:
        raise ValueError(f"size: expected one of {sorted(_PRESETS)}, got {size!r}")
    preset = _PRESETS[size]
    cfg = copy.deepcopy(preset["bench"])
    if seed is not None:
        cfg["seed"] = int(seed)
    cfg["camera"].update(camera)
    if laser is not False:
        cfg["laser"] = {**_LASER, **preset["laser"], **(laser if isinstance(laser, dict) else {})}
        if preset["reference_power_mW"] is not None:
            cfg["camera"].setdefault("reference_power_mW", preset["reference_power_mW"])
    if power_meter is not False:
        cfg["power_meter"] = {"backend": "sim", "wavelength_nm": 633.0,
                              **(power_meter if isinstance(power_meter, dict) else {})}
    if flaws is not None:
        cfg["sim_flaws"] = dict(flaws) if isinstance(flaws, dict) else flaws  # bad ones too
    return cfg


def small_bench(**camera: Any) -> dict:
    """The small bench, with camera keys overridden (faults, noise, ...)."""
    return sim_bench("small", **camera)


def tiny_sim_bench(seed: int = 1, laser: bool = False, flaws: dict | None = None,
                   **camera: Any) -> dict:
    """The tiny bench: a 128x128 SLM and a 96x128 camera, optional laser and [sim_flaws]."""
    return sim_bench("tiny", seed=seed, laser=laser, flaws=flaws, **camera)


def laser_bench(state_file: Path, output: str = "off", **laser: Any) -> dict:
    """The small bench with a simulated laser whose state goes to ``state_file``."""
    return sim_bench("small", laser={"output": output, "sim_state_file": str(state_file),
                                     **laser})


#: the presets as constants, for modules that read them (do not mutate: use sim_bench)
SMALL_BENCH = sim_bench("small")
CALIBRATION_BENCH = sim_bench("calibration", laser=True)

#: per-step options of ``run_calibration`` that keep a calibration of the calibration
#: bench quick (fewer dark frames and exposures, a 4x4 spot grid, no averaging)
FAST_CALIBRATION = {"dark": {"n_dark": 8, "n_pairs": 1, "exposures": (0.2, 0.7)},
                    "geometry": {"grid": 4, "averaging": 1},
                    "wavefront": {"averaging": 1}}


def calibration_bench(seed: int, **camera: Any):
    """The calibration bench (``CALIBRATION_BENCH``: hidden flaws, noise, a laser) with
    ``seed`` and camera keys overridden, opened (a ``Bench``: use it in a ``with``)."""
    from devices import open_bench

    return open_bench(sim_bench("calibration", seed=seed, laser=True, **camera))


def write_bench_toml(path: Path, cfg: dict) -> Path:
    """Write a bench dict as a TOML file (top-level keys and flat tables)."""
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    lines = [f"{k} = {value(v)}" for k, v in cfg.items() if not isinstance(v, dict)]
    for table, body in cfg.items():
        if isinstance(body, dict):
            lines += ["", f"[{table}]"] + [f"{k} = {value(v)}" for k, v in body.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def bench_toml(path: Path, cfg: dict | None = None, **camera: Any) -> Path:
    """Write ``cfg`` (default: the small bench with ``camera`` keys) as a TOML file."""
    if cfg is not None and camera:
        raise TypeError("bench_toml: give a bench dict or camera keys, not both")
    return write_bench_toml(path, small_bench(**camera) if cfg is None else cfg)


def hil_command(*args: str) -> list[str]:
    """The ``hil`` command line run by this interpreter (for subprocess tests)."""
    return [sys.executable, "-m", "hil.cli", *args]


#: images of the ``hil run`` that ``run_args`` starts
RUN_N = 14


def run_args(bench: Path, dec: Path, out: Path, *extra: str) -> list[str]:
    """``hil run`` of ``RUN_N`` digits on ``bench`` with decoder ``dec`` into ``out``."""
    return hil_command("run", str(bench), "--decoder", str(dec), "--dataset", "digits",
                       "--n", str(RUN_N), "--seed", "5", "--out", str(out), "--no-progress",
                       *extra)


# ------------------------------------------------------------------- the decoder
@functools.lru_cache(maxsize=4)
def _fitted_quick_decoder(n: int):
    from simulation import DualVortexEncoder, LinearDecoder, speckle

    enc = DualVortexEncoder()
    imgs = speckle(n, 15, seed=0)
    return LinearDecoder(alpha=1.0, device="cpu").fit(enc(imgs), imgs, encoder=enc)


def quick_decoder(path: Path | None = None, n: int = 600):
    """A twin-trained dual-vortex decoder (ridge, fixed alpha: no alpha search), saved to
    ``path`` when given. Fitted once per process and ``n``; each call returns a copy."""
    dec = copy.deepcopy(_fitted_quick_decoder(int(n)))
    if path is not None:
        dec.save(path)
    return dec


# ------------------------------------------------------------- fake slmsuite drivers
class FakeCameraDriver:
    """Just enough of a slmsuite camera to script failures.

    ``script``: one step per frame request: "ok", an exception to raise, or a float (hang
    that long, ignoring ``timeout_s``, then "ok"). Frames are all 7.
    """

    shape = (4, 6)
    bitdepth = 8
    pitch_um = None
    name = "fake"

    def __init__(self, script: list | tuple = ()) -> None:
        self.script = list(script)
        self.exposure_s = 0.01
        self.capture_attempts = 5
        self.closed = False

    def get_image(self, timeout_s: float = 1, averaging: Any = None, hdr: Any = None):
        step = self.script.pop(0) if self.script else "ok"
        if isinstance(step, float):
            time.sleep(step)  # a driver that ignores its time-out
            step = "ok"
        if step != "ok":
            raise step
        return np.full(self.shape, 7, np.uint8)

    def set_exposure(self, s: float) -> None:
        self.exposure_s = s

    def flush(self, timeout_s: float = 1) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class FakeSLMDriver:
    """Just enough of a slmsuite SLM: numpy ``display`` / ``phase`` buffers, a frame count."""

    bitdepth = 8
    pitch_um = (8.0, 8.0)
    wav_um = 0.633
    wav_design_um = 0.633
    settle_time_s = 0.0
    name = "fake-slm"

    def __init__(self, shape: tuple[int, int] = (40, 56)) -> None:
        self.shape = tuple(shape)
        self.display = np.zeros(self.shape, np.uint8)
        self.phase = np.zeros(self.shape, np.float32)
        self.frames_shown = 0
        self.closed = False

    def _set_phase_hw(self, display: np.ndarray) -> None:
        if self.closed:
            raise ConnectionError("fake SLM closed")
        self.frames_shown += 1

    def close(self) -> None:
        self.closed = True


def captures_complete(h5: Path) -> int:
    """Captures marked complete in a store another process is writing (0 while it cannot
    be read): the file's size says little once the windows are compressed."""
    try:
        with h5py.File(h5, "r", locking=False) as f:
            return int(f.attrs["n_complete"])
    except (OSError, KeyError, ValueError, RuntimeError):
        return 0


# ------------------------------------------------------------ the import scan
def imports(source: str) -> list[tuple[str, str]]:
    """(module, name) for every import in ``source`` (name "" for ``import module``): every
    ``import``/``from ... import`` at any depth, and ``importlib.import_module("...")`` /
    ``__import__("...")`` with a literal name."""
    out: list[tuple[str, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(a.name, "") for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out += [(node.module, a.name) for a in node.names]
            out += [(f"{node.module}.{a.name}", "") for a in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            f = node.func
            fname = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if fname in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                out.append((node.args[0].value, ""))
    return out


def bench_violations(source: str) -> list[str]:
    """Imports a simulated-bench flaw module may not make: the calibration, the twin's
    Zernike code or a fit function of ``simulation`` (a name with "fit")."""
    bad = []
    for m, name in imports(source):
        if m == "calibration" or m.startswith("calibration."):
            bad.append(m)
        elif m == "simulation.zernike" or m.startswith("simulation.zernike."):
            bad.append(m)
        elif (m == "simulation" or m.startswith("simulation.")) and "fit" in name.lower():
            bad.append(f"{m}.{name}")
    return bad
