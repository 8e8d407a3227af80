"""Sub-commands contributed by `experiments` (registered through the
``hil.commands`` entry-point group): ``hil demo`` and ``hil bench``."""

from __future__ import annotations

from pathlib import Path

from hil.cli_args import add_json, add_no_progress, add_out, add_seed, print_json

__all__ = ["register_demo", "register_bench"]


def register_demo(sub) -> None:
    p = sub.add_parser("demo", help="the main job on simulated devices, with a report",
                       description="Train a decoder on synthetic speckle only and reconstruct "
                       "real images; run the paper study; calibrate the simulated bench, "
                       "capture, decode. Reports (Markdown + PNG + JSON) under --out.")
    add_out(p, "report folder (default runs/demo)", default=Path("runs/demo"), metavar="DIR")
    p.add_argument("--gamma", type=float, default=15.0, help="speckle γ (default 15)")
    p.add_argument("--count", type=int, default=10000, help="training images (default 10000)")
    p.add_argument("--n", type=int, default=1000, help="test images per dataset (default 1000)")
    add_seed(p, help="seed of the speckle set and the image subsets")
    p.add_argument("--paper-scale", choices=("small", "tiny", "full"), default="small",
                   help="scale of the paper study part (default small, ~5 min)")
    p.add_argument("--no-paper", action="store_true", help="skip the paper study")
    p.add_argument("--bench", default="sim.toml",
                   help="bench file for the calibrate-capture-decode part (default sim.toml)")
    p.add_argument("--no-bench", action="store_true", help="skip the simulated-bench part")
    add_json(p, "the summary (OUT/summary.json, with the report's path)")
    add_no_progress(p)
    p.set_defaults(func=_demo)


def _demo(args) -> int:
    from hil.output_paths import check_output_dir

    from .main_job import run_main_job

    for name, value in (("--count", args.count), ("--n", args.n), ("--gamma", args.gamma)):
        if not value > 0:  # NaN too
            raise ValueError(f"{name}: expected a positive value, got {value}")
    if not args.no_bench:  # a bad bench file fails now, not after the training
        from devices.config import load_config

        load_config(args.bench)
    check_output_dir(args.out, "--out")
    s = run_main_job(args.out, paper_scale=None if args.no_paper else args.paper_scale,
                     bench=None if args.no_bench else args.bench, gamma=args.gamma,
                     count=args.count, n_test=args.n, seed=args.seed,
                     progress=not args.no_progress)
    if args.json:
        print_json(args, {"report": str(args.out / "index.md"), **s})
        return 0
    for name, d in s["simulation"]["datasets"].items():
        print(f"{name:>14}: mean SSIM {d['ssim_mean']:.3f} over {d['n']} images (simulation)")
    for v in s.get("paper", {}).get("verdicts", []):
        print(f"  {v['verdict']:<12} {v['claim']}")
    if "bench" in s:
        print(f"simulated bench: mean SSIM {s['bench']['run_ssim_mean']:.3f} over "
              f"{s['bench']['n']} captured MNIST images")
    print(f"report: {args.out / 'index.md'}")
    return 0


def register_bench(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks, each a ratio against a baseline in one run",
                       description="1: ridge fit vs the paper's 5,000 Adam steps; 2: predict vs a "
                       "bare matmul; 3: peak memory of the demo. Results go to OUT/bench.json; "
                       "a summary of the ratios is printed (--json: all of them).")
    add_out(p, "folder for bench.json (default runs/bench)", default=Path("runs/bench"),
            metavar="DIR")
    p.add_argument("--only", choices=("fit", "predict", "memory"), action="append",
                   help="run only these benchmarks (repeatable)")
    p.add_argument("--adam-epochs", type=int, default=5000,
                   help="Adam epochs actually run to measure its SSIM (default 5000, the paper)")
    add_json(p, "every measurement")
    add_no_progress(p)
    p.set_defaults(func=_bench)


def _bench(args) -> int:
    from hil.output_paths import check_output_dir

    from .bench_sim import run_benchmarks

    if args.adam_epochs <= 0:
        raise ValueError(f"--adam-epochs: expected a positive integer, got {args.adam_epochs}")
    check_output_dir(args.out, "--out")
    res = run_benchmarks(args.out, only=args.only, adam_epochs=args.adam_epochs,
                         progress=not args.no_progress)
    if args.json:
        print_json(args, res)
        return 0
    for name in ("fit", "predict", "memory"):
        if name not in res:
            continue
        r = res[name]
        ratios = ", ".join(f"{k} {v:.3g}" for k, v in r.items()
                           if k.startswith(("ratio", "speedup")) and isinstance(v, float))
        goal = f"; goal {r['goal']}: {'met' if r['goal_met'] else 'NOT met'}" \
            if "goal" in r else ""
        print(f"{name}: {ratios}{goal}")
    print(f"results: {args.out / 'bench.json'}")
    return 0
