"""Benchmark: peak memory and wall time of ``hil calibrate`` on simulated cameras.

For each camera shape (512x512 and 1080x1440 rows x cols by default) a bench file is
written from the shipped ``sim.toml`` with only ``[camera] shape`` changed, and
``hil calibrate`` runs in child processes, each measured by ``os.wait4`` (the child's
own ``ru_maxrss``, its peak resident memory, and its wall time):

* ``baseline``: a child that only imports torch, ``calibration`` and ``hil`` and opens
  the bench (what every calibrate process costs before it captures anything);
* ``full``: one ``hil calibrate BENCH --out DIR --quiet`` with every step;
* per step: ``hil calibrate ... --steps STEP [--resume]``, one child per step in
  bench-day order on a second directory, so each step's peak and time is its own;
* with ``--extrapolate``: two children that only capture K and 2K speckles the way the
  decoders step does (``--capture-probe K``); their difference is the memory held per
  captured image, extrapolated (and labelled so) to the decoders step's 2064 images at
  its defaults. (A step's own peak cannot show this slope at small sizes: memory freed
  by its decoder fit is reused by the held frames.)

Peaks are reported in MiB and as ratios to the baseline measured in the same run.
``--code-root DIR`` runs the children on another copy of the code (``PYTHONPATH=DIR``),
e.g. the previous commit exported with ``git archive``, to compare before and after.
``--n-capture`` (default 2000, the calibration's own default) sets the decoders step's
captured training set: a full run at 2000 captures costs ~4000 frames, minutes at
512x512 and ~30 min at 1080x1440 on two CPU cores; ``--quick`` uses 200 (and a smaller
twin set) and says so.

``python -m experiments.bench_calibration [--out DIR] [--quick] [--shapes 512x512 ...]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import tomllib

from simulation.atomic import write_text_atomic

__all__ = ["measure_child", "bench_file", "run_benchmark", "main"]

STEPS = ("dark", "geometry", "lut", "wavefront", "model", "decoders")
DEFAULT_SHAPES = ((512, 512), (1080, 1440))
GOAL_MIB = {(512, 512): 1024.0, (1080, 1440): 2048.0}
# sim.toml's camera (5.5 um, 50 mm) at 1440 px would span twice the SLM's k-space
# (lambda f / p_slm = 3.96 mm): it sees aliased copies and geometry fails. A 1440x1080
# camera gets the realistic bench's optics (3.45 um pixels, 80 mm lens: 4.97 mm of 6.3).
CAMERA_OPTICS = {(1080, 1440): {"pitch_um": 3.45, "focal_length_mm": 80.0}}

_BASELINE = (
    "import sys, torch, calibration, hil.cli\n"
    "from devices import open_bench\n"
    "with open_bench(sys.argv[1]) as b:\n"
    "    b.camera.get_image()\n"
)
_CALIBRATE = "import sys\nfrom hil.cli import main\nsys.exit(main(sys.argv[1:]))\n"
# capture N speckles through the calibrated-or-nominal imager the way the decoders step
# does, on this code or an older copy (whose imager held every frame)
_CAPTURE = """
import sys
from devices import open_bench
from simulation import DualVortexEncoder, speckle
import calibration.capture as cc
imgs = speckle(int(sys.argv[2]), 15.0, seed=11)
import inspect
from calibration.imaging import BenchImager
with open_bench(sys.argv[1]) as bench:
    if "config" in inspect.signature(BenchImager.__init__).parameters:
        from calibration.imaging_config import ImagingConfig
        im = BenchImager(bench, None, DualVortexEncoder(size=32),
                         ImagingConfig(geometry="nominal")).prepare()
    else:  # the older imager: keyword settings
        im = BenchImager(bench, geometry="nominal")
    if hasattr(cc, "capture_patterns"):
        pats = cc.capture_patterns(im, imgs)
    else:
        pats = im.capture(imgs).patterns
    print(pats.shape)
"""
# images the decoders step captures at its defaults: 32 test + 2000 training + 32 nominal
DECODER_CAPTURES = 2064


def measure_child(args: list[str], *, env: dict[str, str] | None = None,
                  log_path: Path | None = None, cwd: Path | None = None) -> dict[str, Any]:
    """Run ``args`` as a child; its exit status, wall time (s) and peak RSS (MiB).

    The peak is the child's own high-water mark: for a ``python -c`` child, the
    ``VmHWM`` of its ``/proc/self/status`` written at exit (``_HWM_PRELUDE``); else its
    ``ru_maxrss`` from ``os.wait4``, which on Linux also counts this process's own peak
    (``exec`` folds the launching memory map's high-water into it), so launch from a
    small process. ``cwd``: the child's working directory (a ``python -c`` child imports
    from it first, before ``PYTHONPATH``).
    """
    args = list(args)
    fd, hwm_file = tempfile.mkstemp(prefix="hwm-", suffix=".txt")
    os.close(fd)
    env = dict(os.environ if env is None else env)
    if len(args) > 2 and args[1] == "-c" and Path("/proc/self/status").exists():
        args[2] = _HWM_PRELUDE + args[2]
        env["HIL_BENCH_HWM_FILE"] = hwm_file
    out = open(log_path, "wb") if log_path is not None else subprocess.DEVNULL  # noqa: SIM115
    try:
        t0 = time.perf_counter()
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        text = Path(hwm_file).read_text().strip()
    finally:
        if log_path is not None:
            out.close()
        Path(hwm_file).unlink(missing_ok=True)
    scale = 1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0  # bytes vs kB
    peak = int(text) / 1024.0 if text.isdigit() else usage.ru_maxrss / scale
    return {"rc": proc.returncode, "wall_s": round(wall, 2), "peak_rss_mib": round(peak, 1)}


# prepended to a ``python -c`` child: write its VmHWM (kB) where the parent reads it
_HWM_PRELUDE = (
    "import atexit as _ax, os as _os\n"
    "def _hil_hwm():\n"
    "    with open('/proc/self/status') as f:\n"
    "        kb = [ln.split()[1] for ln in f if ln.startswith('VmHWM:')]\n"
    "    with open(_os.environ['HIL_BENCH_HWM_FILE'], 'w') as f:\n"
    "        f.write(kb[0] if kb else '')\n"
    "_ax.register(_hil_hwm)\n"
)


def step_times(log_text: str) -> dict[str, float]:
    """Step -> seconds, from the ``calibration step X done in Y s`` lines of a log."""
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r"calibration step (\w+) done in ([0-9.]+) s", log_text)}


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"bench file: cannot write {type(v).__name__} values")


def bench_file(shape: tuple[int, int], path: Path, source: str = "sim.toml",
               camera: dict[str, Any] | None = None) -> Path:
    """Write the shipped bench ``source`` with the camera ``shape`` (rows, cols) and the
    ``camera`` settings given (default ``CAMERA_OPTICS`` for that shape) to ``path``."""
    from devices.config import resolve_bench_path

    cfg = tomllib.loads(Path(resolve_bench_path(source)).read_text())
    cfg["camera"]["shape"] = [int(shape[0]), int(shape[1])]
    cfg["camera"].update(CAMERA_OPTICS.get(tuple(shape), {}) if camera is None else camera)
    cfg["name"] = f"{cfg.get('name', 'sim')}-{shape[0]}x{shape[1]}"
    lines = [f"{k} = {_toml_value(v)}" for k, v in cfg.items() if not isinstance(v, dict)]
    for table, body in cfg.items():
        if isinstance(body, dict):
            lines += ["", f"[{table}]"] + [f"{k} = {_toml_value(v)}" for k, v in body.items()]
    return write_text_atomic(path, "\n".join(lines) + "\n")


def _options(n_capture: int, quick: bool) -> dict[str, Any]:
    opts: dict[str, Any] = {"decoders": {"n_capture": int(n_capture)}}
    if quick:
        opts["decoders"]["n_twin"] = 1000
    return opts


def run_benchmark(out: Path, *, shapes: tuple[tuple[int, int], ...] = DEFAULT_SHAPES,
                  n_capture: int = 2000, quick: bool = False, full: bool = True,
                  per_step: bool = True, extrapolate: bool = False,
                  capture_probe: int = 40, code_root: Path | None = None) -> dict[str, Any]:
    """Measure every shape; write ``out/bench_calibration.json`` and ``.md``; return it."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if code_root is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(Path(code_root).resolve()),
                                             env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    py = sys.executable
    result: dict[str, Any] = {
        "host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
        "code_root": str(code_root) if code_root else "this tree",
        "n_capture": n_capture, "quick": quick, "shapes": {}}
    for shape in shapes:
        tag = f"{shape[0]}x{shape[1]}"
        d = out / tag
        bench = bench_file(shape, d / "bench.toml")
        opts = json.dumps(_options(n_capture, quick))
        r: dict[str, Any] = {"camera_shape": list(shape)}
        r["baseline"] = measure_child([py, "-c", _BASELINE, str(bench)], env=env,
                                      log_path=d / "baseline.log", cwd=d)
        print(f"{tag} baseline: {r['baseline']}", flush=True)
        if full:
            r["full"] = measure_child(
                [py, "-c", _CALIBRATE, "calibrate", str(bench), "--out", str(d / "full"),
                 "--force", "--quiet", "--options", opts], env=env, log_path=d / "full.log", cwd=d)
            r["full"]["step_wall_s"] = step_times((d / "full.log").read_text(errors="replace"))
            print(f"{tag} full calibrate: {r['full']}", flush=True)
        if per_step:
            r["steps"] = {}
            for i, step in enumerate(STEPS):
                args = [py, "-c", _CALIBRATE, "calibrate", str(bench), "--out",
                        str(d / "steps"), "--steps", step, "--quiet", "--options", opts]
                args.append("--resume" if i else "--force")
                r["steps"][step] = measure_child(args, env=env, log_path=d / f"{step}.log",
                                                cwd=d)
                print(f"{tag} step {step}: {r['steps'][step]}", flush=True)
        if extrapolate:
            # what holding captures costs: children that only capture k and 2k speckles
            # the way the decoders step does (the code measured's own capture path)
            k = int(capture_probe)
            m1 = measure_child([py, "-c", _CAPTURE, str(bench), str(k)], env=env,
                               log_path=d / "capture1.log", cwd=d)
            m2 = measure_child([py, "-c", _CAPTURE, str(bench), str(2 * k)], env=env,
                               log_path=d / "capture2.log", cwd=d)
            slope = (m2["peak_rss_mib"] - m1["peak_rss_mib"]) / k
            n_images = DECODER_CAPTURES
            r["capture_probe"] = {"images": [k, 2 * k], "runs": [m1, m2],
                                  "mib_per_image": round(slope, 4),
                                  "decoders_images_at_default": n_images,
                                  # a negative slope is noise: extrapolate with 0
                                  "capture_peak_extrapolated_mib": round(
                                      m1["peak_rss_mib"] + max(slope, 0.0) * (n_images - k),
                                      1)}
            print(f"{tag} capture probe: {k} -> {m1}, {2 * k} -> {m2}; "
                  f"{slope:.4f} MiB/image", flush=True)
        base = r["baseline"]["peak_rss_mib"]
        peaks = [m["peak_rss_mib"] for m in ([r["full"]] if full else [])
                 + list(r.get("steps", {}).values())]
        if peaks and base > 0:
            r["peak_rss_mib"] = max(peaks)
            r["peak_over_baseline"] = round(max(peaks) / base, 2)
            goal = GOAL_MIB.get(tuple(shape))
            if goal is not None:
                r["goal_mib"] = goal
                r["within_goal"] = max(peaks) <= goal
        result["shapes"][tag] = r
    write_text_atomic(out / "bench_calibration.json", json.dumps(result, indent=2) + "\n")
    write_text_atomic(out / "bench_calibration.md", _markdown(result))
    return result


def _markdown(res: dict[str, Any]) -> str:
    lines = ["# hil calibrate: peak memory and time", "",
             f"Code: {res['code_root']}; {res['cpus']} CPUs; decoders n_capture "
             f"{res['n_capture']}" + (" (quick: n_twin 1000)" if res["quick"] else "") + ".",
             "", "| camera | what | peak RSS (MiB) | x baseline | wall (s) |",
             "|---|---|---|---|---|"]
    for tag, r in res["shapes"].items():
        base = r["baseline"]["peak_rss_mib"]
        rows = [("baseline (import + open bench)", r["baseline"])]
        if "full" in r:
            rows.append(("full calibrate", r["full"]))
        rows += [(f"step {k}", v) for k, v in r.get("steps", {}).items()]
        for what, m in rows:
            rc = "" if m["rc"] == 0 else f" (exit {m['rc']})"
            lines.append(f"| {tag} | {what}{rc} | {m['peak_rss_mib']:.0f} | "
                         f"{m['peak_rss_mib'] / base:.2f} | {m['wall_s']:.1f} |")
            for step, sec in m.get("step_wall_s", {}).items():
                lines.append(f"| {tag} | &nbsp;&nbsp;its step {step} | | | {sec:.1f} |")
        probe = r.get("capture_probe")
        if probe:
            for n, m in zip(probe["images"], probe["runs"], strict=True):
                rc = "" if m["rc"] == 0 else f" (exit {m['rc']})"
                lines.append(f"| {tag} | capture only, {n} images{rc} | "
                             f"{m['peak_rss_mib']:.0f} | "
                             f"{m['peak_rss_mib'] / base:.2f} | {m['wall_s']:.1f} |")
            lines.append(f"| {tag} | capture only, {probe['decoders_images_at_default']} images "
                         f"(EXTRAPOLATED at {probe['mib_per_image']:.3f} MiB/image) | "
                         f"{probe['capture_peak_extrapolated_mib']:.0f} | "
                         f"{probe['capture_peak_extrapolated_mib'] / base:.2f} | |")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.bench_calibration",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/bench_calibration"))
    p.add_argument("--shapes", nargs="+", default=None,
                   help="camera shapes ROWSxCOLS (default 512x512 1080x1440)")
    p.add_argument("--n-capture", type=int, default=None,
                   help="captured training images of the decoders step (default 2000)")
    p.add_argument("--quick", action="store_true", help="n_capture 200, n_twin 1000")
    p.add_argument("--no-full", action="store_true", help="skip the full-calibrate child")
    p.add_argument("--no-steps", action="store_true", help="skip the per-step children")
    p.add_argument("--extrapolate", action="store_true",
                   help="also measure children that only capture K and 2K images and "
                        "extrapolate to the decoders step's 2064 images")
    p.add_argument("--capture-probe", type=int, default=40, metavar="K",
                   help="images of the smaller capture-only child (default 40)")
    p.add_argument("--code-root", type=Path, default=None,
                   help="run the children on this copy of the code (PYTHONPATH)")
    a = p.parse_args(argv)
    shapes = DEFAULT_SHAPES
    if a.shapes:
        try:
            shapes = tuple(tuple(int(v) for v in s.lower().split("x")) for s in a.shapes)
        except ValueError:
            p.error(f"--shapes: expected ROWSxCOLS such as 512x512, got {a.shapes}")
        if any(len(s) != 2 or min(s) < 64 for s in shapes):
            p.error(f"--shapes: expected ROWSxCOLS of at least 64x64, got {a.shapes}")
    n_capture = a.n_capture if a.n_capture is not None else (200 if a.quick else 2000)
    if n_capture < 1:
        p.error(f"--n-capture: expected an integer >= 1, got {n_capture}")
    res = run_benchmark(a.out, shapes=shapes, n_capture=n_capture, quick=a.quick,
                        full=not a.no_full, per_step=not a.no_steps,
                        extrapolate=a.extrapolate, capture_probe=a.capture_probe,
                        code_root=a.code_root)
    print(_markdown(res))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
