"""The decoders step before/after the α-ranking fix (float64 scores when fewer samples than inputs).

On ``sim.toml`` shrunk to a 256 x 256 SLM and camera (noise and flaws as the file has them),
with the geometry taken from the bench's truth (no fitting: the decoders step alone),
``calibrate_decoders`` is run with one round of ``n_capture`` training captures
(``train_averaging=1``: no noise term, fewer captures than the 2048 decoder inputs, the case
whose float32 α ranking was rounding noise). Prints and writes (``--out``, JSON) the α and
the held-out captured SSIM of every decoder, per bench seed, and the CPU seconds::

    python -m experiments.ridgefix_decoders --seeds 0 1 --out /tmp/ridgefix_after.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from simulation.atomic import write_text_atomic


def one_seed(seed: int, *, n_capture: int, n_twin: int, n_test: int, n_val: int) -> dict:
    from calibration.capture import device_identities
    from calibration.decoders import DECODER_NAMES, calibrate_decoders
    from calibration.store import CalibrationSet, StepResult
    from calibration.truth import truth_model_to_camera
    from devices.bench import open_bench
    from experiments.bench_crossover import bench_config

    cfg = bench_config("sim.toml", seed=seed, shape=256)
    c0 = time.process_time()
    with open_bench(cfg) as bench:
        a = truth_model_to_camera(bench, 32, 8)
        cal = CalibrationSet(devices=device_identities(bench))
        cal.set("geometry", StepResult("geometry", values={"model_to_camera": a, "size": 32,
                                                           "block": 8}))
        step = calibrate_decoders(bench, cal, n_twin=n_twin, n_capture=n_capture,
                                  n_capture_start=n_capture, n_test=n_test, n_val=n_val,
                                  train_averaging=1, compare_nominal=False, seed=10 + seed,
                                  progress=False)
    v, r = step.values, step.residuals
    return {"seed": seed, "cpu_s": time.process_time() - c0,
            "ssim": {n: r[f"ssim_{n}_on_captures"] for n in DECODER_NAMES},
            "alpha": {n: v[f"alpha_{n}"] for n in DECODER_NAMES},
            "best": v["best_decoder"], "twin_prior_of": v["twin_prior_of"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--n-capture", type=int, default=512)
    ap.add_argument("--n-twin", type=int, default=3000)
    ap.add_argument("--n-test", type=int, default=64)
    ap.add_argument("--n-val", type=int, default=64)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    rows = []
    for s in args.seeds:
        rows.append(one_seed(s, n_capture=args.n_capture, n_twin=args.n_twin,
                             n_test=args.n_test, n_val=args.n_val))
        print(json.dumps(rows[-1]), flush=True)
    if args.out is not None:
        write_text_atomic(args.out, json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
