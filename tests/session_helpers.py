"""Shared pieces of the session tests: a small simulated bench and a quick decoder."""

from __future__ import annotations

import copy
from pathlib import Path

SMALL_BENCH = {
    "name": "small-sim",
    "seed": 3,
    "flaws": False,
    "slm": {"backend": "sim", "shape": [256, 256]},
    "camera": {"backend": "sim", "shape": [256, 256], "noise": False,
               "zero_order_fraction": 0.0, "exposure_s": 1e-3},
}


#: the small calibration bench: hidden random flaws on, a power-controlled laser
CALIBRATION_BENCH = {
    "name": "ci", "seed": 0,
    "slm": {"backend": "sim", "shape": [256, 256]},
    "camera": {"backend": "sim", "shape": [256, 256], "reference_power_mW": 10.0},
    "laser": {"backend": "sim", "control": "power", "max_power_mW": 20.0, "setpoint": 10.0,
              "output": "on"},
}


def tiny_sim_bench(seed: int = 1, laser: bool = False, flaws: dict | None = None,
                   **camera) -> dict:
    """A 128x128 SLM and a 96x128 camera (noise and zero order off unless given), with an
    optional power-controlled laser and an optional [sim_flaws] table."""
    cam = {"backend": "sim", "shape": [96, 128], "focal_length_mm": 12.0, "noise": False,
           "zero_order_fraction": 0.0}
    cam.update(camera)
    d = {"seed": seed, "slm": {"backend": "sim", "shape": [128, 128]}, "camera": cam}
    if laser:
        d["laser"] = {"backend": "sim", "control": "power", "max_power_mW": 20.0,
                      "setpoint": 10.0, "output": "on"}
        cam.setdefault("reference_power_mW", 10.0)
    if flaws is not None:
        d["sim_flaws"] = flaws
    return d


def small_bench(**camera) -> dict:
    """The small bench dict, with camera keys overridden (faults, noise, ...)."""
    cfg = copy.deepcopy(SMALL_BENCH)
    cfg["camera"].update(camera)
    return cfg


def bench_toml(path: Path, **camera) -> Path:
    """Write the small bench as a TOML file."""
    cfg = small_bench(**camera)
    lines = [f'name = "{cfg["name"]}"', f"seed = {cfg['seed']}", "flaws = false", ""]
    for table in ("slm", "camera"):
        lines.append(f"[{table}]")
        for k, v in cfg[table].items():
            if isinstance(v, bool):
                v = "true" if v else "false"
            elif isinstance(v, str):
                v = f'"{v}"'
            lines.append(f"{k} = {v}")
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def quick_decoder(path: Path | None = None, n: int = 600):
    """A twin-trained dual-vortex decoder (ridge, fixed alpha: no alpha search)."""
    from simulation import DualVortexEncoder, LinearDecoder, speckle

    enc = DualVortexEncoder()
    imgs = speckle(n, 15, seed=0)
    dec = LinearDecoder(alpha=1.0, device="cpu").fit(enc(imgs), imgs, encoder=enc)
    if path is not None:
        dec.save(path)
    return dec
