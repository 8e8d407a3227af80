"""The crossover figure: SSIM on captured real images against the number of captures.

For each bench seed: a simulated bench (a bench file, optionally resized, optionally with
another file's ``[sim_flaws]``: the flaws the twin does not model), calibrated
(dark, geometry, lut, wavefront, model), then three decoders, all scored on *captured*
MNIST, Fashion-MNIST and CIFAR-10 grey (test splits, seeded subsets):

* twin-trained: ``n_twin`` simulated speckles through the calibrated twin (ridge, α on
  its own split), the same for every number of captures;
* capture-trained: the first n captured speckles, ridge with α on held-out captured
  speckles (``LinearDecoder.fit_toward`` without a prior);
* twin prior + captures: the same captures, in a ridge pulled toward the better (on the
  held-out captures) of the twin-trained decoder and its noise-aware refit (capture noise
  from repeated captures in the regulariser), α on held-out captured speckles;
* twin corrected by captures: the same captures teach the twin what it misses
  (``simulation.capture_correction.CaptureCorrection``: a linear map from the twin's
  patterns of the captured speckles to the captures, α on the held-out captures); the
  ``n_twin`` simulated patterns, so corrected, train a noise-aware ridge (capture noise in
  the regulariser, α on held-out captured speckles);
* twin + captured offset: the same captures give only the mean by which they differ from
  the twin's patterns of the same speckles, in the decoder's input space
  (``simulation.ridge_prior.capture_offset``); the ``n_twin`` simulated patterns, with that
  offset added, train a noise-aware ridge (α on held-out captured speckles). This is the
  correction above without its linear map.

No test image is used to train or to pick α: only synthetic speckle, shown and captured.
Writes ``crossover.json``, ``crossover.md`` (the table) and ``crossover.png`` to ``--out``,
and with ``--report-dir DIR`` copies the figure and table beside a calibration's report
and rewrites it (``calibration.report`` includes them when present)::

    python -m experiments.bench_crossover --bench sim.toml --out runs/crossover-sim
    python -m experiments.bench_crossover --bench sim.toml --flaws-from sim-realistic.toml \\
        --shape 256 --out runs/crossover-flawed

Seeds can run as separate processes (``--seeds 0 --out runs/x0``, ``--seeds 1 --out
runs/x1``, side by side) and be combined: ``--merge runs/x0 runs/x1 --out runs/x``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import tomllib
import torch

from simulation.atomic import copy_atomic, savefig_atomic, write_text_atomic

log = logging.getLogger("experiments.bench_crossover")

__all__ = ["bench_config", "crossover_seed", "run_crossover", "merge_results",
           "write_outputs", "main"]

DATASETS = ("mnist", "fashion-mnist", "cifar10")
METHODS = ("twin", "capture", "twin_prior", "twin_corrected", "twin_offset")
LABELS = {"twin": "twin-trained", "capture": "capture-trained",
          "twin_prior": "twin prior + captures",
          "twin_corrected": "twin corrected by captures",
          "twin_offset": "twin + captured offset"}
CAL_STEPS = "dark,geometry,lut,wavefront,model"


def _read_bench(name: str | Path) -> dict[str, Any]:
    from devices.config import read_bench_text, resolve_bench_path

    path = Path(name) if Path(name).exists() else resolve_bench_path(str(name))
    return tomllib.loads(read_bench_text(path))


def bench_config(bench: str | Path, *, seed: int, flaws_from: str | Path | None = None,
                 shape: int | None = None, drop_flaws: tuple[str, ...] = ()
                 ) -> dict[str, Any]:
    """The bench dict: ``bench``'s, with ``seed``, ``[sim_flaws]`` from ``flaws_from`` (less
    the keys in ``drop_flaws``) and SLM and camera ``shape`` x ``shape`` when given."""
    cfg = copy.deepcopy(_read_bench(bench))
    cfg["seed"] = int(seed)
    if flaws_from is not None:
        flaws = _read_bench(flaws_from).get("sim_flaws")
        if not flaws:
            raise ValueError(f"--flaws-from: {flaws_from} has no [sim_flaws] table")
        unknown = sorted(set(drop_flaws) - set(flaws))
        if unknown:
            raise ValueError(f"--drop-flaw: {unknown} not in the [sim_flaws] of {flaws_from} "
                             f"(it has {sorted(flaws)})")
        cfg["sim_flaws"] = {k: v for k, v in flaws.items() if k not in drop_flaws}
    if shape is not None:
        cfg["slm"]["shape"] = [int(shape), int(shape)]
        cfg["camera"]["shape"] = [int(shape), int(shape)]
    return cfg


CAPTURES = "crossover-captures.h5"


def capture_seed(cfg: dict[str, Any], *, n_train: int, n_eval: int, n_val: int,
                 n_repeat: int, gamma: float, cal_dir: Path, seed: int,
                 drift_every: int = 0) -> dict[str, Any]:
    """One bench seed's calibration and captures: the test images of every set, ``n_val``
    validation speckles (the first ``n_repeat`` twice, for the capture noise) and
    ``n_train`` training speckles. Written to ``cal_dir/crossover-captures.h5`` (h5py, no
    pickle) beside the calibration, so other fits can be tried on the same captures
    (``--refit``). ``drift_every`` K > 0: every capture follows the camera image's drift
    (``calibration.drift.DriftTracker``: the move since the geometry step, then a reference
    every K images over all the sets), as ``hil run --drift-every`` does."""
    from calibration import run_calibration
    from calibration.capture import capture_patterns
    from calibration.drift import DriftTracker
    from calibration.imaging import BenchImager
    from calibration.imaging_config import ImagingConfig
    from devices import open_bench
    from simulation import DualVortexEncoder, load_dataset, speckle

    size = 32
    data: dict[str, Any] = {"seed": seed, "gamma": gamma}
    with open_bench(cfg) as bench:
        cal = run_calibration(bench, cal_dir, steps=CAL_STEPS, size=size, progress=False)
        imager = BenchImager(bench, cal, DualVortexEncoder(size=size),
                             ImagingConfig(size=size)).prepare()
        data["block"] = int(imager.block)
        drift = DriftTracker(imager, drift_every, align_to=cal.geometry).start() \
            if drift_every else None
        for name in DATASETS:
            imgs = load_dataset(name, "test", n=n_eval, seed=seed, colour="grey")[0]
            data[f"test/{name}/images"] = np.asarray(imgs, dtype=np.float32)
            data[f"test/{name}/patterns"] = capture_patterns(imager, imgs, desc=name,
                                                             drift=drift)
        val = speckle(n_val, gamma, seed=1000 + seed)
        data["val/images"] = np.asarray(val, dtype=np.float32)
        data["val/patterns"] = capture_patterns(imager, val, desc="validation", drift=drift)
        data["val/repeats"] = capture_patterns(imager, val[:n_repeat], desc="repeats",
                                               drift=drift)
        train = speckle(n_train, gamma, seed=2000 + seed)
        t_cap = time.perf_counter()
        data["train/patterns"] = capture_patterns(imager, train, desc="training",
                                                  drift=drift)
        data["capture_s_per_image"] = (time.perf_counter() - t_cap) / max(n_train, 1)
        data["train/images"] = np.asarray(train, dtype=np.float32)
        truth = getattr(bench, "truth", None)
        data["truth"] = json.dumps(truth, default=str) if truth else "null"
        data["drift"] = json.dumps(drift.record() if drift is not None else None)
    save_captures(data, cal_dir / CAPTURES)
    return data


def save_captures(data: dict[str, Any], path: Path) -> Path:
    """``capture_seed``'s arrays as datasets, its numbers and text as attributes."""
    import h5py

    from simulation.atomic import atomic_path

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for k, v in data.items():
            if isinstance(v, np.ndarray):
                f.create_dataset(k, data=v, compression="gzip", compression_opts=1)
            else:
                f.attrs[k] = v
    return path


def load_captures(path: Path) -> dict[str, Any]:
    """What ``save_captures`` wrote (arrays and attributes; nothing is unpickled)."""
    import h5py

    out: dict[str, Any] = {}
    with h5py.File(path, "r") as f:
        out.update({k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()})
        f.visititems(lambda k, obj: out.__setitem__(k, obj[()])
                     if isinstance(obj, h5py.Dataset) else None)
    return out


def fit_seed(data: dict[str, Any], cal_dir: Path, *, counts: list[int], n_twin: int
             ) -> dict[str, Any]:
    """The three decoders of the module docstring (and the noise-aware twin) from one
    seed's captures and calibration, each scored on the captured test images."""
    from calibration import CalibrationSet
    from calibration.decoders import ssim_error, twin_training_patterns
    from simulation import DualVortexEncoder, LinearDecoder, speckle, ssim
    from simulation.capture_correction import CaptureCorrection
    from simulation.ridge_prior import capture_noise_variance, capture_offset

    seed, gamma = int(data["seed"]), float(data["gamma"])
    t0 = time.perf_counter()
    cal = CalibrationSet.load(cal_dir)
    size = int(data["val/images"].shape[-1])
    enc = DualVortexEncoder(size=size)
    err = ssim_error(size)
    tests = {n: torch.as_tensor(data[f"test/{n}/images"]) for n in DATASETS}
    test_pats = {n: torch.as_tensor(data[f"test/{n}/patterns"]) for n in DATASETS}
    val_imgs = torch.as_tensor(data["val/images"])
    val_pats = torch.as_tensor(data["val/patterns"])
    rep = torch.as_tensor(data["val/repeats"])
    train_imgs = torch.as_tensor(data["train/images"])
    train_pats = torch.as_tensor(data["train/patterns"])
    if max(counts) > len(train_pats):
        raise ValueError(f"counts: at most {len(train_pats)} captures were taken, got "
                         f"{max(counts)}")
    n_val = len(val_imgs)
    noise = capture_noise_variance(val_pats[:len(rep)], rep)
    twin_imgs = speckle(n_twin, gamma, seed=3000 + seed)
    block = int(data["block"])
    twin_pats = twin_training_patterns(cal, twin_imgs, enc, block)
    twin = LinearDecoder().fit(twin_pats, twin_imgs, encoder=enc)
    twin_noise = LinearDecoder(val_error="ssim").fit_toward(
        twin_pats, twin_imgs, noise_var=noise, encoder=enc, val_patterns=val_pats,
        val_images=val_imgs)
    # the twin's patterns of the captured speckles, for the correction
    twin_of_train = twin_training_patterns(cal, train_imgs[:max(counts)], enc, block)
    twin_of_val = twin_training_patterns(cal, val_imgs, enc, block)
    prior = min((twin, twin_noise), key=lambda d: err(
        d.predict(val_pats).reshape(n_val, -1), val_imgs.reshape(n_val, -1)))
    out: dict[str, Any] = {"seed": seed, "counts": counts, "ssim": {},
                           "prior": "twin" if prior is twin else "twin_noise",
                           "capture_noise_var": float(noise.mean()),
                           "capture_s_per_image": float(data["capture_s_per_image"]),
                           "truth": json.loads(data["truth"]),
                           "drift": json.loads(data.get("drift", "null"))}

    # per test image, for the paired test of ``verdicts``: {method: [{dataset: [...]}]}
    out["per_image"] = {m: [] for m in METHODS}

    def score(dec: Any, method: str | None = None) -> dict[str, float]:
        each = {name: np.asarray(ssim(tests[name], dec.predict(test_pats[name])), np.float64)
                for name in DATASETS}
        if method is not None:
            out["per_image"][method].append({k: v.round(5).tolist() for k, v in each.items()})
        return {name: float(v.mean()) for name, v in each.items()}

    out["ssim"]["twin"] = [score(twin, "twin")] * len(counts)
    # the same decoder on the twin's own (noise-free) patterns of the same test images:
    # what the bench's flaws and noise cost it, i.e. what captures could give back
    own = {name: np.asarray(ssim(tests[name], twin.predict(twin_training_patterns(
        cal, tests[name], enc, block))), np.float64) for name in DATASETS}
    out["twin_own_patterns"] = {"ssim": {k: float(v.mean()) for k, v in own.items()},
                                "per_image": {k: v.round(5).tolist() for k, v in own.items()}}
    out["ssim"]["twin_noise"] = [score(twin_noise)] * len(counts)
    out["alpha"] = []
    for m in METHODS[1:]:
        out["ssim"][m] = []
    for n in counts:
        cap = LinearDecoder(val_error="ssim").fit_toward(
            train_pats[:n], train_imgs[:n], encoder=enc, val_patterns=val_pats,
            val_images=val_imgs)
        pri = LinearDecoder(val_error="ssim").fit_toward(
            train_pats[:n], train_imgs[:n], prior=prior, encoder=enc, val_patterns=val_pats,
            val_images=val_imgs)
        fix = CaptureCorrection().fit(twin_of_train[:n], train_pats[:n],
                                      val_twin=twin_of_val, val_captured=val_pats)
        cor = LinearDecoder(val_error="ssim").fit_toward(
            fix.transform(twin_pats), twin_imgs, noise_var=noise, encoder=enc,
            val_patterns=val_pats, val_images=val_imgs)
        off = LinearDecoder(val_error="ssim").fit_toward(
            twin_pats, twin_imgs, noise_var=noise,
            input_offset=capture_offset(twin_of_train[:n], train_pats[:n]), encoder=enc,
            val_patterns=val_pats, val_images=val_imgs)
        out["ssim"]["capture"].append(score(cap, "capture"))
        out["ssim"]["twin_prior"].append(score(pri, "twin_prior"))
        out["ssim"]["twin_corrected"].append(score(cor, "twin_corrected"))
        out["ssim"]["twin_offset"].append(score(off, "twin_offset"))
        out["alpha"].append({"capture": cap.alpha_, "twin_prior": pri.alpha_,
                             "twin_corrected": cor.alpha_, "correction": fix.alpha_,
                             "twin_offset": off.alpha_})
        log.info("seed %d, %d captures: %s", seed, n, {
            m: {k: round(v, 3) for k, v in out["ssim"][m][-1].items()}
            for m in METHODS})
    del twin_pats
    out["fit_seconds"] = time.perf_counter() - t0
    return out


def crossover_seed(cfg: dict[str, Any], *, counts: list[int], n_eval: int, n_twin: int,
                   n_val: int, n_repeat: int, gamma: float, cal_dir: Path,
                   seed: int, drift_every: int = 0) -> dict[str, Any]:
    """One bench seed: calibrate and capture (``capture_seed``), fit and score
    (``fit_seed``)."""
    t0 = time.perf_counter()
    data = capture_seed(cfg, n_train=max(counts), n_eval=n_eval, n_val=n_val,
                        n_repeat=n_repeat, gamma=gamma, cal_dir=cal_dir, seed=seed,
                        drift_every=drift_every)
    out = fit_seed(data, cal_dir, counts=counts, n_twin=n_twin)
    out["seconds"] = time.perf_counter() - t0
    return out


def run_crossover(bench: str, *, seeds: list[int], counts: list[int], out: Path,
                  flaws_from: str | None = None, shape: int | None = None, n_eval: int = 48,
                  n_twin: int = 4000, n_val: int = 32, n_repeat: int = 16,
                  gamma: float = 15.0, drop_flaws: tuple[str, ...] = (),
                  drift_every: int = 0) -> dict[str, Any]:
    """Every seed (``crossover_seed``), results kept in ``out/crossover.json`` as they come;
    a seed whose bench the calibration refuses is listed under "refused"."""
    from calibration.store import CalibrationError

    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"bench": str(bench), "flaws_from": flaws_from, "shape": shape,
                              "counts": counts, "n_eval": n_eval, "n_twin": n_twin,
                              "n_val": n_val, "gamma": gamma, "datasets": list(DATASETS),
                              "drop_flaws": list(drop_flaws), "drift_every": drift_every,
                              "seeds": []}
    for s in seeds:
        cfg = bench_config(bench, seed=s, flaws_from=flaws_from, shape=shape,
                           drop_flaws=drop_flaws)
        try:
            result["seeds"].append(crossover_seed(
                cfg, counts=counts, n_eval=n_eval, n_twin=n_twin, n_val=n_val,
                n_repeat=n_repeat, gamma=gamma, cal_dir=out / f"seed{s}", seed=s,
                drift_every=drift_every))
        except CalibrationError as exc:  # a bench the calibration refuses: say which, go on
            log.warning("seed %d: calibration refused the bench (%s)", s, exc)
            result.setdefault("refused", []).append({"seed": s, "error": str(exc)})
        write_text_atomic(out / "crossover.json", json.dumps(result, indent=1, default=str))
    return result


def refit(run: Path, *, counts: list[int], n_twin: int) -> dict[str, Any]:
    """``run``'s result fitted again (``fit_seed``) from the captures it saved."""
    result = json.loads((run / "crossover.json").read_text())
    seeds = []
    for s in result["seeds"]:
        d = run / f"seed{s['seed']}"
        seeds.append(fit_seed(load_captures(d / CAPTURES), d, counts=counts, n_twin=n_twin))
    return {**result, "counts": counts, "n_twin": n_twin, "seeds": seeds}


#: what must agree for runs of single seeds to be merged into one table
MERGE_KEYS = ("bench", "flaws_from", "shape", "counts", "n_eval", "n_twin", "n_val", "gamma",
              "datasets", "drop_flaws", "drift_every")


def merge_results(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from runs of other seeds with the same settings (``MERGE_KEYS``), so
    that seeds can run as separate processes side by side; seeds in order, each once."""
    from .seed_runs import check_mergeable

    seeds = sorted((s for p in parts for s in p["seeds"]), key=lambda s: s["seed"])
    refused = sorted((r for p in parts for r in p.get("refused", [])), key=lambda r: r["seed"])
    check_mergeable(parts, MERGE_KEYS, [s["seed"] for s in seeds] + [r["seed"] for r in refused],
                    "crossover.json")
    out = {k: parts[0].get(k) for k in MERGE_KEYS}
    out["seeds"] = seeds
    if refused:
        out["refused"] = refused
    return out


#: the rule, fixed before the runs it judges: a method beats the twin-trained decoder on a
#: dataset when, at the most captures, its SSIM minus the twin's on the same captured test
#: images (every seed's, pooled) is positive by a one-sided Wilcoxon signed-rank test at
#: p < ``ALPHA_TEST``; it loses when the opposite one-sided test says so; else a tie.
ALPHA_TEST = 0.05


def verdicts(result: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """{method: {dataset: {"verdict", "mean_diff", "p_greater", "p_less", "n"}}} against
    the twin-trained decoder at the most captures, by the rule of ``ALPHA_TEST``; empty
    when the runs kept no per-image scores."""
    from scipy.stats import wilcoxon

    seeds = result["seeds"]
    if not seeds or not all("per_image" in s for s in seeds):
        return {}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for method in METHODS[1:]:
        if not all(method in s["per_image"] for s in seeds):
            continue
        out[method] = {}
        for ds in result["datasets"]:
            diff = np.concatenate([np.asarray(s["per_image"][method][-1][ds])
                                   - np.asarray(s["per_image"]["twin"][0][ds]) for s in seeds])
            greater = float(wilcoxon(diff, alternative="greater").pvalue)
            less = float(wilcoxon(diff, alternative="less").pvalue)
            verdict = "wins" if greater < ALPHA_TEST else "loses" if less < ALPHA_TEST \
                else "ties"
            out[method][ds] = {"verdict": verdict, "mean_diff": float(diff.mean()),
                               "p_greater": greater, "p_less": less, "n": int(diff.size)}
    return out


def flaw_cost(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{dataset: {"verdict", "mean_cost", "p_cost", "p_gain", "n"}}: the twin-trained
    decoder on its own noise-free patterns of the captured test images minus on the
    captures (every seed's images pooled; one-sided Wilcoxon signed-rank at ``ALPHA_TEST``).
    "costs" when the bench's flaws and noise lower its SSIM (room for captures to give
    back), "helps" when they raise it, "no difference" else; empty for runs made before
    the score was kept."""
    from scipy.stats import wilcoxon

    seeds = result["seeds"]
    if not seeds or not all("twin_own_patterns" in s and "per_image" in s for s in seeds):
        return {}
    out: dict[str, dict[str, Any]] = {}
    for ds in result["datasets"]:
        diff = np.concatenate([np.asarray(s["twin_own_patterns"]["per_image"][ds])
                               - np.asarray(s["per_image"]["twin"][0][ds]) for s in seeds])
        cost = float(wilcoxon(diff, alternative="greater").pvalue)
        gain = float(wilcoxon(diff, alternative="less").pvalue)
        verdict = "costs" if cost < ALPHA_TEST else "helps" if gain < ALPHA_TEST \
            else "no difference"
        out[ds] = {"verdict": verdict, "mean_cost": float(diff.mean()), "p_cost": cost,
                   "p_gain": gain, "n": int(diff.size)}
    return out


def _curves(result: dict[str, Any], method: str, dataset: str) -> np.ndarray:
    return np.array([[r[dataset] for r in seed["ssim"][method]] for seed in result["seeds"]])


def table(result: dict[str, Any]) -> str:
    """Markdown: mean ± std over seeds of each method, dataset and number of captures."""
    n_seeds = len(result["seeds"])
    flaws = f", [sim_flaws] of {result['flaws_from']}" if result.get("flaws_from") else ""
    if result.get("drop_flaws"):
        flaws += f" without {', '.join(result['drop_flaws'])}"
    shape = f", SLM and camera {result['shape']}²" if result.get("shape") else ""
    refused = [str(r["seed"]) for r in result.get("refused", [])]
    note = f" (calibration refused seed(s) {', '.join(refused)})" if refused else ""
    lines = [f"SSIM on captured test images ({result['n_eval']} per set), {result['bench']}"
             f"{shape}{flaws}; mean ± std over {n_seeds} seed(s){note}", "",
             "| method | captures | " + " | ".join(result["datasets"]) + " |",
             "|---|---|" + "---|" * len(result["datasets"])]
    for method in (*METHODS, "twin_noise"):
        if not all(method in seed["ssim"] for seed in result["seeds"]):
            continue  # a run made before the method existed
        label = LABELS.get(method, "twin-trained, noise-aware")
        rows = [0] if method in ("twin", "twin_noise") else range(len(result["counts"]))
        for i in rows:
            n = f"0 ({result['n_twin']} simulated)" if method in ("twin", "twin_noise") \
                else str(result["counts"][i])
            cells = []
            for ds in result["datasets"]:
                v = _curves(result, method, ds)[:, i]
                cells.append(f"{v.mean():.3f} ± {v.std():.3f}")
            lines.append(f"| {label} | {n} | " + " | ".join(cells) + " |")
    v = verdicts(result)
    if v:
        n_max = result["counts"][-1]
        lines += ["", f"Against the twin-trained decoder at {n_max} captures (SSIM difference "
                  "per captured test image, seeds pooled; one-sided Wilcoxon signed-rank, "
                  f"wins/loses at p < {ALPHA_TEST}, else ties):", "",
                  "| method | " + " | ".join(result["datasets"]) + " |",
                  "|---|" + "---|" * len(result["datasets"])]
        for method, per in v.items():
            cells = [f"{per[ds]['verdict']} ({per[ds]['mean_diff']:+.3f}, p = "
                     f"{min(per[ds]['p_greater'], per[ds]['p_less']):.2g}, "
                     f"n = {per[ds]['n']})" for ds in result["datasets"]]
            lines.append(f"| {LABELS[method]} | " + " | ".join(cells) + " |")
    cost = flaw_cost(result)
    if cost:
        lines += ["", "The twin-trained decoder on its own noise-free patterns of the same test "
                  "images against on their captures: what the bench's flaws and noise cost it "
                  "(seeds pooled; one-sided Wilcoxon signed-rank, p < "
                  f"{ALPHA_TEST}):", "",
                  "| | " + " | ".join(result["datasets"]) + " |",
                  "|---|" + "---|" * len(result["datasets"])]
        own = [f"{np.mean([s['twin_own_patterns']['ssim'][ds] for s in result['seeds']]):.3f}"
               for ds in result["datasets"]]
        lines.append("| twin-trained on its own patterns | " + " | ".join(own) + " |")
        lines.append("| the bench's flaws and noise | " + " | ".join(
            f"{cost[ds]['verdict']} ({cost[ds]['mean_cost']:+.3f}, p = "
            f"{min(cost[ds]['p_cost'], cost[ds]['p_gain']):.2g})"
            for ds in result["datasets"]) + " |")
    return "\n".join(lines) + "\n"


def figure(result: dict[str, Any], path: Path) -> Path:
    """SSIM against captures, one panel per dataset, mean ± std over seeds."""
    from simulation.figures import new_figure

    counts = np.asarray(result["counts"])
    fig, axes = new_figure(1, len(result["datasets"]), figsize=(4 * len(result["datasets"]),
                                                                  3.4), sharey=True)
    for ax, ds in zip(np.atleast_1d(axes), result["datasets"], strict=True):
        for method, style in zip(METHODS, ("k--", "o-", "s-", "^-", "D-"), strict=True):
            if not all(method in seed["ssim"] for seed in result["seeds"]):
                continue  # a run made before the method existed
            v = _curves(result, method, ds)
            m, s = v.mean(0), v.std(0)
            line = ax.plot(counts, m, style, ms=4, label=LABELS[method])[0]
            ax.fill_between(counts, m - s, m + s, alpha=0.2, color=line.get_color())
        ax.set(xscale="log", xlabel="captured training speckles", title=ds)
        ax.set_xticks(counts, [str(int(c)) for c in counts])  # no overlapping 3×10², 4×10²
        ax.minorticks_off()
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("SSIM on captured test images")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    flaws = " + twin-unmodelled flaws" if result.get("flaws_from") else ""
    fig.suptitle(f"{Path(result['bench']).name}{flaws}: {len(result['seeds'])} seed(s)")
    fig.tight_layout()
    return savefig_atomic(fig, path, dpi=100)


def write_outputs(result: dict[str, Any], out: Path, report_dir: Path | None = None) -> None:
    """``crossover.md`` and ``crossover.png`` in ``out``; copied beside the calibration report
    of ``report_dir`` (which is rewritten to include them)."""
    write_text_atomic(out / "crossover.md", table(result))
    figure(result, out / "crossover.png")
    for d in [report_dir] if report_dir is not None else []:
        from calibration import CalibrationSet
        from calibration.report import write_report

        for name in ("crossover.png", "crossover.md"):
            copy_atomic(out / name, d / name)
        write_report(CalibrationSet.load(d), d)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bench", default="sim.toml")
    p.add_argument("--flaws-from", default=None,
                   help="take the [sim_flaws] table of this bench file (sim-realistic.toml)")
    p.add_argument("--drop-flaw", action="append", default=[], metavar="KEY",
                   help="leave this [sim_flaws] key out (repeatable)")
    p.add_argument("--shape", type=int, default=None, help="SLM and camera N x N pixels")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--counts", type=int, nargs="+", default=[100, 200, 400, 800])
    p.add_argument("--n-eval", type=int, default=48, help="captured test images per set")
    p.add_argument("--n-twin", type=int, default=4000)
    p.add_argument("--drift-every", type=int, default=0, metavar="K",
                   help="captures follow the camera image's drift: a reference every K "
                        "images (0: no drift checks)")
    p.add_argument("--n-val", type=int, default=32,
                   help="captured validation speckles (α and the prior are picked on them)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--report-dir", type=Path, default=None,
                   help="a calibration directory whose report gets the figure")
    p.add_argument("--replot", action="store_true", help="only redraw from crossover.json")
    p.add_argument("--refit", type=Path, default=None, metavar="DIR",
                   help="fit again from the captures a run saved in DIR (its crossover.json "
                        "and seed*/crossover-captures.h5), with --counts and --n-twin; "
                        "DIR is only read")
    p.add_argument("--merge", type=Path, nargs="+", default=None, metavar="DIR",
                   help="combine the crossover.json of runs of other seeds (run side by "
                        "side) into --out, and draw it")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.merge:
        result = merge_results([json.loads((d / "crossover.json").read_text())
                                for d in args.merge])
        args.out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.out / "crossover.json", json.dumps(result, indent=1,
                                                                  default=str))
        if args.report_dir is None and result["seeds"]:  # the first seed's calibration
            args.report_dir = next((d / f"seed{result['seeds'][0]['seed']}" for d in args.merge
                                    if (d / f"seed{result['seeds'][0]['seed']}").is_dir()),
                                   None)
    elif args.refit:
        result = refit(args.refit, counts=sorted(args.counts), n_twin=args.n_twin)
        args.out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.out / "crossover.json", json.dumps(result, indent=1,
                                                                  default=str))
    elif args.replot:
        result = json.loads((args.out / "crossover.json").read_text())
    else:
        result = run_crossover(args.bench, seeds=args.seeds, counts=sorted(args.counts),
                               out=args.out, flaws_from=args.flaws_from, shape=args.shape,
                               n_eval=args.n_eval, n_twin=args.n_twin, n_val=args.n_val,
                               drop_flaws=tuple(args.drop_flaw),
                               drift_every=args.drift_every)
    if not result["seeds"]:
        print(f"no seed gave a result: {json.dumps(result.get('refused'), indent=1)}")
        return 1
    report = args.report_dir  # None: the first seed's calibration under --out, if there
    if report is None and (args.out / f"seed{result['seeds'][0]['seed']}").is_dir():
        report = args.out / f"seed{result['seeds'][0]['seed']}"
    write_outputs(result, args.out, report)
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
