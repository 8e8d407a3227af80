"""Robustness table: one simulated-bench variant per row, calibrated and run end to end.

Each row changes one thing of a base bench (``sim.toml`` by default) through the
``[sim_flaws]`` keys or a ``[camera]`` key, then runs the whole calibration
(``run_calibration``: dark, geometry, lut, wavefront, model, decoders) and, when the
calibration is accepted, captures ``--n`` MNIST test images with ``hil run``'s session
(``hil.session.run_session``, the calibration's default decoder) and reports the mean
SSIM. A row is *handled* when its SSIM is at least ``--ratio`` (0.9) of the default
bench's, *refused* when a calibration step stopped with its diagnosis
(``CalibrationError``), and *degraded* otherwise. The calibration errors against the
bench's hidden truth (``errors_vs_truth``) are listed beside.

The decoders step runs with small capture counts (``--quick`` decoders: 128 captured
speckles, 2000 simulated) so a row costs minutes on two cores; the run uses ``--n``
images (default 64). Writes ``robustness.md`` and ``robustness.json`` under ``--out``.

``python -m experiments.bench_robustness --out runs/robustness [--rows default,mirrored]``
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from simulation.atomic import write_text_atomic

__all__ = ["ROWS", "run_row", "run_table", "markdown", "merged_markdown", "main"]

log = logging.getLogger(__name__)

# name -> (what it is, [sim_flaws] keys, [camera] keys)
ROWS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "default": ("default bench", {}, {}),
    "drift": ("camera image drifts 1 px per 1,000 frames", {"drift_px_per_kframe": 1.0}, {}),
    "noll9_066": ("aberrations Noll 9-28, 0.66 rad rms",
                  {"high_order_aberration_rad_rms": 0.66}, {}),
    "noll9_132": ("aberrations Noll 9-28, 1.32 rad rms",
                  {"high_order_aberration_rad_rms": 1.32}, {}),
    "ghost": ("stray-light ghost (laser on only), 10 %", {"ghost_fraction": 0.1}, {}),
    "background": ("background scaling with exposure, 2 % of full scale at 1 ms",
                   {"background_counts_per_s": 0.02 * 4095 / 1e-3}, {}),
    "low_light": ("low light (photons_per_s 1e7, 1/100)", {}, {"photons_per_s": 1e7}),
    "undersampled": ("camera undersampled (0.77 camera px per model px)", {},
                     {"px_per_model_px": 0.77}),
    "hot_pixels": ("hot pixels, 0.1 %", {"hot_pixel_fraction": 0.001}, {}),
    "mirrored": ("camera mirrored", {"camera_mirror": True}, {}),
    "rotated20": ("camera rotated 20 deg", {"camera_rotation_deg": 20.0}, {}),
    "span16": ("SLM grey range 1.6 x 2 pi", {"slm_phase_span": 1.6}, {}),
    "crosstalk05": ("pixel crosstalk sigma 0.5 px", {"crosstalk_sigma_px": 0.5}, {}),
    "crosstalk10": ("pixel crosstalk sigma 1 px", {"crosstalk_sigma_px": 1.0}, {}),
}

QUICK_OPTIONS: dict[str, dict[str, Any]] = {
    "decoders": {"n_twin": 2000, "n_capture": 128, "n_capture_start": 128, "n_test": 16,
                 "n_val": 32, "n_repeat": 4, "compare_nominal": False},
}


def bench_config(base: str, sim_flaws: dict[str, Any], camera: dict[str, Any],
                 seed: int, shape: int | None = None, size: int = 32,
                 flaws_from: str | None = None) -> dict[str, Any]:
    """The base bench file as a dict with ``seed``, ``[sim_flaws]`` and camera keys set.

    ``shape``: SLM and camera both ``shape`` x ``shape`` pixels (a cheaper bench).
    ``flaws_from``: the ``[sim_flaws]`` table of that bench file replaces the base's first
    (``sim.toml``'s optics, which fit a 256 px camera, with every flaw of
    ``sim-realistic.toml``), then the row's keys are set on it.
    The camera key ``px_per_model_px`` sets the camera pitch that gives that many camera
    pixels per model pixel (nominal optics, N = ``size``).
    """
    from .bench_crossover import bench_config as base_config

    cfg = base_config(base, seed=seed, flaws_from=flaws_from, shape=shape)
    if sim_flaws:
        cfg.setdefault("sim_flaws", {}).update(sim_flaws)
    camera = dict(camera)
    target = camera.pop("px_per_model_px", None)
    if target is not None:
        slm, cam = cfg["slm"], cfg["camera"]
        block = min(slm.get("shape", [512, 512])) // size
        scale = (slm.get("wav_um", 0.633) * cam.get("focal_length_mm", 50.0) * 1e3
                 / (size * block * slm.get("pitch_um", 8.0)))  # camera um per model px
        camera["pitch_um"] = scale / float(target)
    cfg["camera"].update(camera)
    return cfg


def run_row(name: str, out: Path, *, base: str = "sim.toml", seed: int = 0, n: int = 64,
            quick: bool = True, shape: int | None = None,
            flaws_from: str | None = None, steps: str | None = None,
            options: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Calibrate (``steps``: the calibration's, None for its default ones; ``options``: per
    step, over ``QUICK_OPTIONS`` when ``quick``) and run one row; returns its record
    (status, SSIM, errors, times)."""
    from calibration import CalibrationError, errors_vs_truth, run_calibration
    from devices import open_bench
    from hil.session import RunConfig, run_session

    what, flaws, camera = ROWS[name]
    cfg = bench_config(base, flaws, camera, seed, shape, flaws_from=flaws_from)
    row: dict[str, Any] = {"row": name, "what": what, "seed": seed, "sim_flaws": flaws,
                           "camera": camera}
    cal_dir, run_dir = out / name / "cal", out / name / "run"
    shutil.rmtree(out / name, ignore_errors=True)  # a row is measured from scratch
    t0 = time.perf_counter()
    with open_bench(cfg) as bench:
        try:
            cal = run_calibration(bench, cal_dir, steps=steps, progress=False, report=False,
                                  options=_options(quick, options))
        except CalibrationError as exc:
            row.update(status="refused", diagnosis=str(exc),
                       calibrate_s=time.perf_counter() - t0)
            return row
        except Exception as exc:  # noqa: BLE001 - a hard failure is a row of the table
            row.update(status="failed", diagnosis=f"{type(exc).__name__}: {exc}",
                       calibrate_s=time.perf_counter() - t0)
            return row
        row["errors"] = {k: float(v) for k, v in errors_vs_truth(cal, bench).items()}
        row["wavefront"] = wavefront_vs_no_fit(cal, bench.truth)
        row["calibrate_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        rc = run_session(RunConfig(bench=bench, out=run_dir, calibration=cal_dir,
                                   dataset="mnist", split="test", n=int(n), seed=seed,
                                   progress=False))
        row["run_s"] = time.perf_counter() - t1
    res = json.loads((run_dir / "results.json").read_text())
    row.update(status="ran" if rc == 0 else f"stopped ({rc})",
               ssim=res.get("ssim_mean"), n_captured=res.get("n_captured"))
    watch = _watch_summary(run_dir / "run.json")
    if watch:
        row["watch"] = watch
    return row


def _options(quick: bool, options: dict[str, dict[str, Any]] | None
             ) -> dict[str, dict[str, Any]] | None:
    """The calibration options of a row: ``options`` per step over the quick ones."""
    out = copy.deepcopy(QUICK_OPTIONS) if quick else {}
    for step, opts in (options or {}).items():
        out[step] = {**out.get(step, {}), **opts}
    return out or None


def wavefront_vs_no_fit(cal: Any, truth: dict[str, Any]) -> dict[str, float]:
    """Aberration error of the fit against every true Noll term (4-8 and the high-order
    ones), beside the error of no fit at all (the true rms): a fit worse than no fit is
    what a wavefront step must never return."""
    fit = cal.zernike_noll_rad or {}
    true = {**truth.get("zernike_noll_rad", {}), **truth.get("high_order_noll_rad", {})}
    keys = set(fit) | set(true)
    err = sum((fit.get(j, 0.0) - true.get(j, 0.0)) ** 2 for j in keys) ** 0.5
    none = sum(v * v for v in true.values()) ** 0.5
    return {"fit_error_rad": float(err), "no_fit_error_rad": float(none),
            "noll_fitted": max(fit) if fit else 0}


def _watch_summary(run_json: Path) -> dict[str, Any] | None:
    try:
        rec = json.loads(run_json.read_text())
    except (OSError, ValueError):
        return None
    return rec.get("capture_watch")


def run_table(out: Path, rows: list[str], *, base: str = "sim.toml", seed: int = 0,
              n: int = 64, ratio: float = 0.9, quick: bool = True,
              shape: int | None = None, resume: bool = False,
              flaws_from: str | None = None, steps: str | None = None,
              options: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Run ``rows`` (the default row first, for the reference SSIM); write the table.
    ``resume``: keep the rows already in ``out``'s robustness.json (same base, flaws,
    steps, options, shape, seed and n) instead of running them again."""
    out.mkdir(parents=True, exist_ok=True)
    order = ["default"] + [r for r in rows if r != "default"]
    # what a row's result depends on (besides the row): kept in robustness.json, compared on
    # --resume
    setting = {"base": base, "flaws_from": flaws_from, "steps": steps, "options": options,
               "shape": shape, "seed": seed, "n": n}
    done: dict[str, dict[str, Any]] = {}
    if resume and (out / "robustness.json").is_file():
        old = json.loads((out / "robustness.json").read_text())
        if {k: old.get(k) for k in setting} == setting:
            done = {r["row"]: r for r in old["rows"] if r.get("status") != "failed"}
    results: list[dict[str, Any]] = []
    for name in order:
        if name in done:
            results.append(done[name])
            continue
        log.info("robustness row %s ...", name)
        results.append(run_row(name, out, quick=quick, **setting))
        _write(out, results, setting, ratio)
        log.info("robustness row %s: %s", name, results[-1].get("status"))
    return _write(out, results, setting, ratio)


def _verdicts(results: list[dict[str, Any]], ratio: float) -> None:
    ref = next((r.get("ssim") for r in results if r["row"] == "default"), None)
    for r in results:
        if r["status"] == "refused":
            r["verdict"] = "refused (diagnosis)"
        elif ref is None or r.get("ssim") is None:
            r["verdict"] = "no reference"
        else:
            r["ssim_ratio"] = r["ssim"] / ref if ref else None
            r["verdict"] = "handled" if r["ssim"] >= ratio * ref else "degraded"


def _write(out: Path, results: list[dict[str, Any]], setting: dict[str, Any],
           ratio: float) -> dict[str, Any]:
    _verdicts(results, ratio)
    doc = {**setting, "ratio": ratio, "rows": results, "load": os.getloadavg()}
    write_text_atomic(out / "robustness.json", json.dumps(doc, indent=1, default=str))
    write_text_atomic(out / "robustness.md", markdown(doc))
    return doc


def _setting(doc: dict[str, Any]) -> str:
    """What the title says besides the base: the flaws' file and the shape."""
    flaws = f" with the [sim_flaws] of `{doc['flaws_from']}`" if doc.get("flaws_from") else ""
    shape = f", SLM and camera {doc['shape']}^2" if doc.get("shape") else ""
    steps = f", calibration steps {doc['steps']}" if doc.get("steps") else ""
    opts = f", options `{json.dumps(doc['options'])}`" if doc.get("options") else ""
    return flaws + shape + steps + opts


def markdown(doc: dict[str, Any]) -> str:
    """The table: row, status, SSIM (and ratio to the default), key errors, diagnosis."""
    shape = _setting(doc)
    lines = [f"Robustness on `{doc['base']}`{shape} (seed {doc['seed']}, {doc['n']} MNIST "
             f"test images; handled = SSIM >= {doc['ratio']} x default)", "",
             "| variant | verdict | MNIST SSIM | / default | calibration | diagnosis |",
             "|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        e = r.get("errors", {})
        keys = ("scale_error_pct", "rotation_error_deg", "lut_rms_rad", "gain_error_pct")
        cal = ", ".join(f"{k.split('_error')[0].split('_rms')[0]} {e[k]:.3g}"
                        for k in keys if k in e)
        w = r.get("wavefront")
        if w:
            cal += (f", wavefront {w['fit_error_rad']:.2f} rad (no fit "
                    f"{w['no_fit_error_rad']:.2f})")
        ssim = f"{r['ssim']:.3f}" if r.get("ssim") is not None else "—"
        rel = f"{r['ssim_ratio']:.2f}" if r.get("ssim_ratio") is not None else "—"
        diag = r.get("diagnosis", "").replace("|", "/")
        lines.append(f"| {r['what']} | {r.get('verdict', r['status'])} | {ssim} | {rel} | "
                     f"{cal} | {diag} |")
    return "\n".join(lines) + "\n"


def merged_markdown(docs: list[dict[str, Any]]) -> str:
    """One table from runs of other seeds with the same settings: per row, each seed's
    verdict and SSIM / its own default's, and the row's verdict over the seeds (handled
    only when handled on every seed; refused when refused on every seed)."""
    from .seed_runs import check_mergeable

    seeds = [d["seed"] for d in docs]
    check_mergeable(docs, ("base", "flaws_from", "steps", "options", "shape", "n", "ratio"),
                    seeds,
                    "robustness.json")
    d0 = docs[0]
    shape = _setting(d0)
    lines = [f"Robustness on `{d0['base']}`{shape}, seeds {', '.join(map(str, seeds))} "
             f"({d0['n']} MNIST test images each; handled = SSIM >= {d0['ratio']} x the "
             "same seed's default bench)", "",
             "| variant | over the seeds | " + " | ".join(f"seed {s}" for s in seeds) + " |",
             "|---|---|" + "---|" * len(seeds)]
    by_seed = [{r["row"]: r for r in d["rows"]} for d in docs]
    for name in [r["row"] for r in d0["rows"]]:
        rows = [b.get(name) for b in by_seed]
        verdicts = [r.get("verdict", r["status"]) if r else "not run" for r in rows]
        if all(v == "handled" for v in verdicts):
            overall = "handled"
        elif all(v.startswith("refused") for v in verdicts):
            overall = "refused (diagnosis)"
        else:
            overall = "mixed: " + ", ".join(sorted(set(verdicts)))
        cells = []
        for r, v in zip(rows, verdicts, strict=True):
            if r and r.get("ssim") is not None:
                ratio = f" ({r['ssim_ratio']:.2f})" if r.get("ssim_ratio") is not None else ""
                cells.append(f"{v}, {r['ssim']:.3f}{ratio}")
            else:
                cells.append(v)
        what = next(r["what"] for r in rows if r)
        lines.append(f"| {what} | {overall} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.bench_robustness",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/robustness"))
    p.add_argument("--rows", default=",".join(ROWS),
                   help=f"comma-separated rows (default all): {','.join(ROWS)}")
    p.add_argument("--base", default="sim.toml", help="base bench file (default sim.toml)")
    p.add_argument("--flaws-from", default=None,
                   help="take the [sim_flaws] table of this bench file first "
                        "(sim-realistic.toml: every flaw on), then each row's keys")
    p.add_argument("--steps", default=None,
                   help="calibration steps (default: the calibration's default ones); e.g. "
                        "settle,dark,geometry,lut,wavefront,model,decoders on a bench whose "
                        "SLM settle time is not known")
    p.add_argument("--options", type=json.loads, default=None, metavar="JSON",
                   help="calibration options per step, over the quick ones, e.g. "
                        "'{\"lut\": {\"order_spacing\": 4}}'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=64, help="MNIST test images per run")
    p.add_argument("--shape", type=int, default=None,
                   help="SLM and camera shape x shape pixels (e.g. 256: a cheaper bench)")
    p.add_argument("--ratio", type=float, default=0.9)
    p.add_argument("--resume", action="store_true",
                   help="keep the rows already measured in --out (same settings)")
    p.add_argument("--full", action="store_true",
                   help="the decoders step at its defaults (2000 captures: slow)")
    p.add_argument("--merge", type=Path, nargs="+", default=None, metavar="DIR",
                   help="one table from the robustness.json of runs of other seeds "
                        "(written to --out/robustness-seeds.md)")
    args = p.parse_args(argv)
    if args.merge:
        text = merged_markdown([json.loads((d / "robustness.json").read_text())
                                for d in args.merge])
        write_text_atomic(args.out / "robustness-seeds.md", text)
        print(text)
        return 0
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    bad = [r for r in rows if r not in ROWS]
    if bad:
        p.error(f"--rows: unknown {bad}; expected some of {list(ROWS)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    doc = run_table(args.out, rows, base=args.base, seed=args.seed, n=args.n,
                    ratio=args.ratio, quick=not args.full, shape=args.shape,
                    resume=args.resume, flaws_from=args.flaws_from, steps=args.steps,
                    options=args.options)
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
