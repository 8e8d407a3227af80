"""The main job (``make demo`` / ``hil demo``), end to end on simulated devices.

1. simulation: a decoder trained only on γ = 15 speckle reconstructs real images
   (`experiments.demo`);
2. the paper study at ``small`` scale (`experiments.paper`), its claims with verdicts;
3. the simulated bench: calibrate (dark, geometry, LUT, wavefront, model, decoders),
   then capture, decode and score MNIST test images with the calibrated
   twin-trained decoder (`calibration`, `hil.session`).

Each part writes its own report under ``out``; ``out/index.md`` links them.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from hil.runs import write_json_atomic
from simulation.atomic import write_text_atomic

from .demo import run_demo

log = logging.getLogger(__name__)

__all__ = ["run_main_job"]


def _paper(out: Path, scale: str, progress: bool = True) -> dict:
    from experiments.paper import config_for, run_study

    run = run_study(config_for(scale, None), out, progress=progress)
    return {"report": str(out / "report.md"),
            "verdicts": [{"claim": v["claim"], "verdict": v["verdict"]}
                         for v in run.results["verdicts"]]}


def _bench(out: Path, bench: str, n: int, n_capture: int, progress: bool = True,
           options: dict | None = None) -> dict:
    from calibration import errors_vs_truth, run_calibration
    from devices import open_bench
    from hil.session import RunConfig, run_session

    with open_bench(bench) as b:
        opts = {step: dict(v) for step, v in (options or {}).items()}
        opts.setdefault("decoders", {})["n_capture"] = n_capture
        cal = run_calibration(b, out / "calibration", options=opts, progress=progress)
        errors = errors_vs_truth(cal, b) if b.truth else {}
    decoder = out / "calibration" / "decoder_twin.pt"
    status = run_session(RunConfig(bench=bench, calibration=out / "calibration",
                                   decoder=decoder, dataset="mnist", n=n, out=out / "run",
                                   progress=progress))
    res = json.loads((out / "run" / "results.json").read_text())
    return {"bench": bench, "status": status, "calibration_errors": errors,
            "run_ssim_mean": res.get("ssim_mean"), "n": res.get("n_captured"),
            "calibration_report": str(out / "calibration" / "report.md"),
            "run_report": str(out / "run" / "report.md")}


def run_main_job(out: str | Path, *, paper_scale: str | None = "small",
                 bench: str | None = "sim.toml", n_bench: int = 100, n_capture: int = 300,
                 calibration_options: dict | None = None, progress: bool = True,
                 **demo_kwargs) -> dict:
    """Run the parts of the main job (``paper_scale=None`` / ``bench=None`` skip one;
    ``calibration_options``: per-step options of the bench's calibration, as
    ``run_calibration`` takes them, with ``n_capture`` the decoders step's; ``progress=False``
    hides the progress bars of the study, calibration and run)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    summary: dict = {"simulation": run_demo(out / "simulation", **demo_kwargs)["results"]}
    if paper_scale:
        log.info("paper study (%s scale)", paper_scale)
        summary["paper"] = _paper(out / "paper", paper_scale, progress)
    if bench:
        log.info("simulated bench: calibrate, capture, decode (%s)", bench)
        summary["bench"] = _bench(out / "bench", bench, n_bench, n_capture, progress,
                                  calibration_options)
    summary["total_seconds"] = time.perf_counter() - t0
    write_json_atomic(out / "summary.json", summary)
    _index(out, summary)
    return summary


def _index(out: Path, s: dict) -> None:
    lines = ["# Main job", ""]
    sim = s["simulation"]
    lines.append(f"- [Simulation](simulation/report.md): decoder trained on γ = {sim['gamma']:g} "
                 "speckle only; mean SSIM " + ", ".join(
                     f"{k} {d['ssim_mean']:.3f}" for k, d in sim["datasets"].items()))
    if "paper" in s:
        lines.append("- [Paper study](paper/report.md): " + "; ".join(
            f"{v['verdict']}: {v['claim']}" for v in s["paper"]["verdicts"]))
    if "bench" in s:
        b = s["bench"]
        errs = ", ".join(f"{k} {v:.3g}" for k, v in b["calibration_errors"].items())
        lines.append(f"- [Calibration](bench/calibration/report.md) on `{b['bench']}` "
                     f"(errors against the hidden truth: {errs})")
        lines.append(f"- [Bench run](bench/run/report.md): {b['n']} MNIST test images "
                     f"captured and decoded, mean SSIM {b['run_ssim_mean']:.3f}")
    lines += ["", f"Total time {s['total_seconds']:.0f} s."]
    write_text_atomic(out / "index.md", "\n".join(lines) + "\n")
