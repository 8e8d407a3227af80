"""Verdicts on the claims of paper-spec §7, computed from the aggregated numbers.

Each verdict is "reproduced", "refuted" or "inconclusive", with the rule that decided
it, the numbers it used, and the figure that shows them. The rules are fixed here,
before any number is looked at.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import spearmanr

__all__ = ["all_verdicts"]


def _rho(x, y) -> tuple[float, float]:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")
    r = spearmanr(x, y)
    return float(r.statistic), float(r.pvalue)


def _v(claim, verdict, rule, numbers, figure, headline="") -> dict:
    return {"claim": claim, "verdict": verdict, "rule": rule, "numbers": numbers,
            "figure": figure, "headline": headline}


def _pct(v: dict | None) -> str:
    return f"{100 * v['mean']:.1f} ± {100 * v['std']:.1f} %" if v else "n/a"


def cifar100_sixty(cfg: dict, distill: dict) -> dict:
    claim = ("CIFAR-100 reconstructed with a high-H_SVD decoder is classified with ~60 % "
             "accuracy")
    rule = (f"at γ = {cfg['paper_gamma']:g}, protocol (train-split) accuracy: reproduced if "
            "mean ≥ 55 %; refuted if mean + 2 std < 55 % at the full (paper) scale; "
            "otherwise, or without CIFAR-100 files, inconclusive")
    g = str(cfg["paper_gamma"])
    sets = [s for s in distill if s.startswith("cifar100")]
    proxies = {s: distill[s]["train_accuracy"].get(g) for s in distill if s.startswith("cifar")}
    if not sets:
        proxy = "; ".join(f"{k}: {_pct(v)} (train)" for k, v in proxies.items())
        return _v(claim, "inconclusive", rule + ". CIFAR-100 files are absent",
                  {"cifar_proxies_train_accuracy": proxies}, "fig5_distillation.png",
                  f"no CIFAR-100 files; at γ = {cfg['paper_gamma']:g}: {proxy or 'no CIFAR'}")
    acc = distill[sets[0]]["train_accuracy"].get(g)
    test = distill[sets[0]]["test_accuracy"].get(g)
    verdict = "inconclusive"
    if acc and acc["mean"] >= 0.55:
        verdict = "reproduced"
    elif acc and acc["mean"] + 2 * acc["std"] < 0.55 and cfg["scale"] == "full":
        verdict = "refuted"
    return _v(claim, verdict, rule, {"set": sets[0], "train_accuracy": acc,
                                     "test_accuracy": test}, "fig5_distillation.png",
              f"{sets[0]} at γ = {cfg['paper_gamma']:g}: train {_pct(acc)}, held-out "
              f"{_pct(test)}")


def faithful_not_best(distill: dict) -> dict:
    claim = "the most faithfully reconstructed images are not the most accurately classified"
    rule = ("per data set, compare the held-out accuracy of the best-SSIM decoder with the "
            "best-accuracy decoder; 'differs' if the gap exceeds their combined std. "
            "Reproduced if it differs in most sets, refuted if in none, else inconclusive")
    per = {}
    for s, d in distill.items():
        bs, ba = d["best_ssim_gamma"], d["best_accuracy_gamma"]
        if bs is None:
            continue
        a, b = d["test_accuracy"][ba], d["test_accuracy"][bs]
        gap = a["mean"] - b["mean"]
        gammas = sorted(d["ssim"], key=float)
        rho, p = _rho([d["ssim"][g]["mean"] for g in gammas],
                      [d["test_accuracy"][g]["mean"] for g in gammas])
        per[s] = {"best_ssim_gamma": bs, "best_accuracy_gamma": ba, "accuracy_gap": gap,
                  "gap_std": math.hypot(a["std"], b["std"]),
                  "differs": bool(bs != ba and gap > math.hypot(a["std"], b["std"])),
                  "spearman_ssim_vs_accuracy": rho, "p": p}
    n = sum(v["differs"] for v in per.values())
    if not per:
        verdict = "inconclusive"
    elif n > len(per) / 2:
        verdict = "reproduced"
    elif n == 0:
        verdict = "refuted"
    else:
        verdict = "inconclusive"
    head = "; ".join(f"{k}: best SSIM γ={v['best_ssim_gamma']}, best accuracy "
                     f"γ={v['best_accuracy_gamma']} (+{100 * v['accuracy_gap']:.1f} pts)"
                     for k, v in per.items())
    return _v(claim, verdict, rule, {"per_set": per, "sets_that_differ": n},
              "fig5_distillation.png", head)


def hsvd_convergence(learn: dict, transfer: dict) -> dict:
    claim = "higher H_SVD training sets converge more slowly (but reconstruct more faithfully)"
    rule = ("Spearman ρ over γ between H_SVD and the loss left after the Adam budget "
            "(last/first epoch): reproduced if ρ ≥ 0.7 with p < 0.05, refuted if ρ ≤ −0.7 "
            "with p < 0.05, else inconclusive. The fidelity half is reported (ρ of H_SVD "
            "with the mean SSIM over test sets), not voted")
    gammas = sorted(learn, key=float)
    h = [learn[g]["h_svd"]["mean"] for g in gammas]
    rem = [learn[g]["remaining"]["mean"] for g in gammas]
    rho, p = _rho(h, rem)
    rho_rate, p_rate = _rho(h, [learn[g]["decay_rate"]["mean"] for g in gammas])
    verdict = "inconclusive"
    if rho >= 0.7 and p < 0.05:
        verdict = "reproduced"
    elif rho <= -0.7 and p < 0.05:
        verdict = "refuted"
    ssim_g = sorted(next(iter(transfer["ssim"].values())), key=float) if transfer["ssim"] else []
    mean_ssim = [float(np.mean([transfer["ssim"][s][g]["mean"] for s in transfer["ssim"]]))
                 for g in ssim_g]
    return _v(claim, verdict, rule, {
        "gammas": gammas, "h_svd": h, "remaining": rem, "spearman": rho, "p": p,
        "spearman_h_svd_vs_decay_rate": rho_rate, "p_decay_rate": p_rate,
        "mean_ssim_by_gamma": dict(zip(ssim_g, mean_ssim, strict=True)),
    }, "fig2_learnability.png",
        f"ρ(H_SVD, loss left) = {rho:.2f} (p = {p:.3f}) over {len(gammas)} γ")


def sad_threshold(transfer: dict) -> dict:
    claim = ("Ω_k (SAD) marks a threshold for structurally similar reconstruction; matching "
             "Ω_k between training and test set (parity) helps")
    rule = ("per set, Spearman ρ between |ΔΩ_k| and SSIM over γ, and parity: the SSIM of "
            "the Ω_k-closest γ is within the combined std of the best γ. Reproduced if the "
            "median ρ ≤ −0.5 and parity holds in at least half the sets; refuted if the "
            "median ρ ≥ 0 or parity holds in no set; else inconclusive")
    per = {}
    for s, mm in transfer["mismatch"].items():
        gammas = sorted(mm, key=float)
        x = [abs(mm[g]) for g in gammas]
        y = [transfer["ssim"][s][g]["mean"] for g in gammas]
        rho, p = _rho(x, y)
        th = transfer["threshold"][s]
        c, b = transfer["ssim"][s][th["closest_gamma"]], transfer["ssim"][s][th["best_gamma"]]
        per[s] = {"spearman": rho, "p": p, "closest_gamma": th["closest_gamma"],
                  "best_gamma": th["best_gamma"], "threshold_tau": th["tau"],
                  "parity": bool(b["mean"] - c["mean"] <= math.hypot(b["std"], c["std"]))}
    rhos = [v["spearman"] for v in per.values() if not math.isnan(v["spearman"])]
    med = float(np.median(rhos)) if rhos else float("nan")
    n_par = sum(v["parity"] for v in per.values())
    verdict = "inconclusive"
    if per and med <= -0.5 and n_par >= len(per) / 2:
        verdict = "reproduced"
    elif per and (med >= 0 or n_par == 0):
        verdict = "refuted"
    return _v(claim, verdict, rule, {"per_set": per, "median_spearman": med,
                                     "sets_with_parity": n_par}, "fig3_transfer.png",
              f"median ρ(|ΔΩ_k|, SSIM) = {med:.2f}; parity in {n_par}/{len(per)} sets")


def decoder_cost(timing: dict) -> dict:
    claim = ("the linear decoder (O[2n⁴] per image) costs less than iterative "
             "coded-diffraction phase retrieval")
    rule = ("reproduced if the decoder (normalisation + mat-vec, batched) takes less time "
            "per image than the phase retrieval (batched) on the same patterns and one thread, "
            "refuted otherwise")
    verdict = "reproduced" if timing["speedup_vs_phase_retrieval"] > 1 else "refuted"
    return _v(claim, verdict, rule, {k: timing[k] for k in (
        "decoder_s_per_image_batched", "phase_retrieval_s_per_image",
        "phase_retrieval_iterations", "speedup_vs_phase_retrieval", "decoder_ssim",
        "phase_retrieval_ssim")}, "fig7_timing.png",
        f"decoder {timing['decoder_s_per_image_batched'] * 1e6:.1f} µs/image vs phase "
        f"retrieval {timing['phase_retrieval_s_per_image'] * 1e6:.0f} µs/image "
        f"({timing['phase_retrieval_iterations']} iterations)")


def cpu_speed(timing: dict) -> dict:
    claim = "related works: several thousand frames per second on a (15 W) CPU"
    rule = ("one image at a time (normalisation + mat-vec) on one CPU thread of this machine: "
            "reproduced if ≥ 2,000 "
            "frames/s, refuted if < 1,000, else inconclusive (the machine is not a 15 W CPU)")
    fps = timing["decoder_fps_single"]
    verdict = "reproduced" if fps >= 2000 else ("refuted" if fps < 1000 else "inconclusive")
    return _v(claim, verdict, rule, {"decoder_fps_single": fps}, "fig7_timing.png",
              f"{fps:,.0f} frames/s, one image at a time, one thread")


def all_verdicts(cfg: dict, agg: dict) -> list[dict]:
    return [
        cifar100_sixty(cfg, agg["distillation"]),
        faithful_not_best(agg["distillation"]),
        hsvd_convergence(agg["learnability"], agg["transfer"]),
        sad_threshold(agg["transfer"]),
        decoder_cost(agg["timing"]),
        cpu_speed(agg["timing"]),
    ]
