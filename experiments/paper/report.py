"""The study's report: ``report.md`` with the PNG figures beside it, written from the
results dict (the same numbers as ``results.json``)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .figures import make_figures

__all__ = ["write_report", "verdict_table"]


def _pm(v: dict | None, pct: bool = False, digits: int = 3) -> str:
    if not v:
        return "–"
    k = 100.0 if pct else 1.0
    d = 1 if pct else digits
    return f"{v['mean'] * k:.{d}f} ± {v['std'] * k:.{d}f}" + (" %" if pct else "")


def verdict_table(results: dict, fig_prefix: str = "") -> list[str]:
    lines = ["| # | claim (paper-spec §7) | verdict | measured | figure |",
             "|---|---|---|---|---|"]
    for i, v in enumerate(results["verdicts"], 1):
        lines.append(f"| {i} | {v['claim']} | **{v['verdict']}** | {v.get('headline', '')} | "
                     f"[{v['figure']}]({fig_prefix}{v['figure']}) |")
    return lines


def _step_tables(r: dict, cfg: dict) -> list[str]:
    L = []
    syn = r["synthetic"]
    L += ["## 1. Synthetic sets", "", "![synthetic](fig1_synthetic.png)", "",
          "| γ | H_SVD | H_SVD (power) | Ω_k (cycles/px) |", "|---|---|---|---|"]
    for g in sorted(syn["speckle"], key=float):
        s = syn["speckle"][g]
        L.append(f"| {float(g):g} | {_pm(s['h_svd'])} | {_pm(s['h_svd_power'])} | "
                 f"{_pm(s['omega_k'])} |")
    L += ["", "| test set | H_SVD | Ω_k |", "|---|---|---|"]
    for name, s in sorted(syn["test_sets"].items()):
        L.append(f"| {name} | {_pm(s['h_svd'])} | {_pm(s['omega_k'])} |")
    learn = r["learnability"]
    L += ["", "## 2. Learnability", "", "![learnability](fig2_learnability.png)", "",
          "| γ | H_SVD | loss left (last/first) | final Adam MSE | ridge MSE |",
          "|---|---|---|---|---|"]
    for g in sorted(learn, key=float):
        s = learn[g]
        L.append(f"| {float(g):g} | {_pm(s['h_svd'])} | {_pm(s['remaining'])} | "
                 f"{_pm(s['final_train_mse'], digits=5)} | {_pm(s['ridge_train_mse'], digits=5)} |")
    n_learn = cfg.get("learn_n", 0)
    L += ["", f"Adam: {n_learn} speckles, {cfg.get('learn_epochs')} full-batch epochs"
          + (" (fewer images than the decoder's 2,048 inputs: an underdetermined fit, unlike "
             "the paper's 10,000)" if n_learn < 2048 else "") + "."]
    tr = r["transfer"]
    sets = sorted(tr["ssim"])
    L += ["", "## 3. Transfer (SSIM of speckle-trained decoders)", "",
          "![transfer](fig3_transfer.png)", "", "| γ | " + " | ".join(sets) + " |",
          "|---" * (len(sets) + 1) + "|"]
    for g in sorted(next(iter(tr["ssim"].values())), key=float):
        L.append(f"| {float(g):g} | " + " | ".join(_pm(tr["ssim"][s][g]) for s in sets) + " |")
    L += ["", "| test set | best γ | Ω_k-closest γ | hinge threshold τ (cycles/px) |",
          "|---|---|---|---|"]
    for s in sets:
        t = tr["threshold"][s]
        L.append(f"| {s} | {t['best_gamma']} | {t['closest_gamma']} | {t['tau']:.3f} |")
    sw = r["swapped"]
    L += ["", "## 4. Swapped spectra", "", "![swapped](fig4_swapped.png)", "",
          f"Variance of the mean SSIM along the singular-value axis: "
          f"{sw['variance_by_values']:.2e}; along the modes axis: {sw['variance_by_modes']:.2e}.",
          ""]
    d = r["distillation"]
    L += ["## 5. Feature distillation", "", "![distillation](fig5_distillation.png)", ""]
    for s in sorted(d):
        L += [f"**{s}** (split: {d[s]['split_source']})", "",
              "| features | train accuracy | held-out accuracy |", "|---|---|---|"]
        for g in sorted(d[s]["test_accuracy"], key=float):
            L.append(f"| reconstructions, γ={float(g):g} | {_pm(d[s]['train_accuracy'][g], True)}"
                     f" | {_pm(d[s]['test_accuracy'][g], True)} |")
        for f, b in sorted(d[s]["baselines"].items()):
            L.append(f"| raw {'images' if f == 'raw' else 'sensor patterns'} | "
                     f"{_pm(b['train_accuracy'], True)} | {_pm(b['test_accuracy'], True)} |")
        L.append("")
    des = r["designs"]
    L += ["## 6. Beyond the paper: designed training sets, learned mask", "",
          "![designs](fig6_designs.png)", "", "| design | set | SSIM | held-out accuracy |",
          "|---|---|---|---|"]
    for n in sorted(des["designs"]):
        for s, v in sorted(des["designs"][n].items()):
            L.append(f"| {n} | {s} | {_pm(v['ssim'])} | {_pm(v['test_accuracy'], True)} |")
    if "learned_mask_change_rad" in des:
        lo = des["learned_opt_loss"]
        L += ["", f"Learned masks moved by {_pm(des['learned_mask_change_rad'])} rad (mean |Δ|) "
              f"from the dual vortex; end-to-end loss {_pm(lo['first'], digits=5)}"
              f" → {_pm(lo['last'], digits=5)}."]
    t = r.get("timing")
    if t:
        L += ["", "## 7. Cost", "", "![timing](fig7_timing.png)", "",
              f"Linear decoder (normalisation + mat-vec): "
              f"{t['decoder_s_per_image_single'] * 1e6:.1f} µs per image alone, "
              f"{t['decoder_s_per_image_batched'] * 1e6:.2f} µs batched, "
              f"{t['decoder_s_per_predict_call'] * 1e6:.0f} µs per `predict()` call "
              f"({t['decoder_fps_single']:.0f} frames/s on one thread); phase retrieval "
              f"({t['phase_retrieval_iterations']} iterations): "
              f"{t['phase_retrieval_s_per_image'] * 1e6:.1f} µs per image "
              f"(×{t['speedup_vs_phase_retrieval']:.1f}). SSIM {t['decoder_ssim']:.3f} vs "
              f"{t['phase_retrieval_ssim']:.3f} (phase retrieval's global phase removed by "
              "an oracle). One run, process CPU time on one thread; times are not seeded."]
    return L


def write_report(results: dict, out: str | os.PathLike) -> Path:
    """Write the figures and ``report.md`` into ``out``; returns the report's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    make_figures(results, out)
    cfg, run, data = results["config"], results["run"], results["data"]
    L = [f"# Paper study ({cfg['scale']} scale)", "",
         "Reproduction of the claims of *Feature Distillation with Synthetic Training Data: "
         "a Spectral Methods Approach* (paper-spec §7). Every number is measured in this run; "
         f"error bars and ± are mean ± std over {cfg['seeds']} seeds.", "",
         f"- cells: {run['cells']} ({run['cells_computed']} computed, {run['cells_reused']} "
         f"reused), sweep wall time {run['sweep_wall_s']:.0f} s "
         f"(CPU time of the computed cells {run.get('cells_cpu_s', 0):.0f} s), "
         f"executor {run['executor']} "
         f"× {run['workers']}; git {run['git_commit']}",
         f"- test sets: {', '.join(data['transfer_sets'])}"
         + (f"; missing (left out): {', '.join(data['missing_sets'])}"
            if data["missing_sets"] else ""),
         f"- decoders: {cfg['n_train']} speckles per γ (ridge, "
         + ("α on a held-out 10 %" if cfg.get("ridge_alpha") is None
            else f"α = {cfg['ridge_alpha']:g}") + "); Adam "
         f"curves: {cfg['learn_n']} speckles, {cfg['learn_epochs']} epochs; classifier: "
         f"{cfg['clf_epochs']} epochs, {cfg['clf_n_train']} training images", "",
         "## Verdicts", ""]
    L += verdict_table(results)
    L += [""]
    for i, v in enumerate(results["verdicts"], 1):
        L.append(f"{i}. *Rule:* {v['rule']}.")
    L += [""] + _step_tables(results["results"], cfg)
    if cfg["scale"] != "full":
        L += ["", f"*This is the `{cfg['scale']}` scale: fewer images, epochs and γ cells than "
              "the paper; run `--scale full` for the paper's protocol.*"]
    text = "\n".join(L) + "\n"
    path = out / "report.md"
    fd, tmp = tempfile.mkstemp(dir=out, prefix="report.md", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path
