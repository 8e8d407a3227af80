"""The study's figures (matplotlib without pyplot, PNG): one function per figure, each reading
the aggregated results and returning the file name it wrote. Error bars: mean ± std
over seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from simulation.atomic import savefig_atomic
from simulation.figures import new_figure

__all__ = ["make_figures"]


def _xy(d: dict, key: str | None = None):
    gs = sorted(d, key=float)
    pick = (lambda v: v[key]) if key else (lambda v: v)
    return (np.array([float(g) for g in gs]), np.array([pick(d[g])["mean"] for g in gs]),
            np.array([pick(d[g])["std"] for g in gs]))


def _save(fig, out: Path, name: str) -> str:
    if fig.get_layout_engine() is None:  # a figure that set its own layout keeps it
        fig.tight_layout()
    savefig_atomic(fig, out / name, dpi=110)
    return name


def fig_synthetic(r: dict, out: Path) -> str:
    syn = r["synthetic"]
    fig, ax = new_figure(1, 2, figsize=(10, 3.8))
    for a, key, label in ((ax[0], "h_svd", "H_SVD (σ/Σσ, log₂)"),
                          (ax[1], "omega_k", "Ω_k (cycles/px)")):
        x, m, s = _xy(syn["speckle"], key)
        a.errorbar(x, m, s, marker="o", capsize=3, label="speckle")
        for i, (name, st) in enumerate(sorted(syn["test_sets"].items())):
            a.axhline(st[key]["mean"], ls="--", lw=1, color=f"C{i + 1}", label=name)
        a.set_xscale("log")
        a.set_xlabel("γ")
        a.set_ylabel(label)
    ax[1].legend(fontsize=7)
    fig.suptitle("Synthetic sets: statistics per γ (test sets dashed)")
    return _save(fig, out, "fig1_synthetic.png")


def fig_learnability(r: dict, out: Path) -> str:
    learn = r["learnability"]
    fig, ax = new_figure(1, 3, figsize=(14, 3.8))
    for i, g in enumerate(sorted(learn, key=float)):
        c = learn[g]["curve"]
        e, m, s = np.array(c["epochs"]), np.array(c["mean"]), np.array(c["std"])
        ax[0].plot(e, m, color=f"C{i}", label=f"γ={float(g):g}")
        ax[0].fill_between(e, m - s, m + s, color=f"C{i}", alpha=0.2)
    ax[0].set_yscale("log")
    ax[0].set_xlabel("epoch")
    ax[0].set_ylabel("training MSE (Adam, full batch)")
    ax[0].legend(fontsize=7)
    gs = sorted(learn, key=float)
    h = [learn[g]["h_svd"] for g in gs]
    hx, hs = [x["mean"] for x in h], [x["std"] for x in h]
    reads = sorted(int(t) for t in learn[gs[0]]["excess"])
    for j, t in enumerate(reads[-3:]):  # the read-outs the verdict uses
        v = [np.asarray(learn[g]["excess"][str(t)]) for g in gs]
        ax[1].errorbar(hx, [x.mean() for x in v], [x.std() for x in v], hs, marker="o",
                       capsize=3, ls="-", color=f"C{j}", label=f"epoch {t}")
    ax[1].set_yscale("log")
    ax[1].set_xlabel("H_SVD of the training set")
    ax[1].set_ylabel("excess loss (L_t − L*)/(L_1 − L*)")
    ax[1].legend(fontsize=7)
    v = [learn[g]["final_train_mse"] for g in gs]
    ax[2].errorbar(hx, [x["mean"] for x in v], [x["std"] for x in v], hs, marker="o",
                   capsize=3, ls="-", label="Adam, last epoch")
    ax[2].plot(hx, [learn[g]["mean_image_mse"]["mean"] for g in gs], "k--", lw=1,
               label="mean-image predictor")
    ax[2].plot(hx, [max(learn[g]["optimum_mse"]["mean"], 1e-12) for g in gs], "k:", lw=1,
               label="optimum L* (closed form)")
    ax[2].set_xlabel("H_SVD of the training set")
    ax[2].set_ylabel("training MSE")
    rid = [learn[g]["ridge_train_mse"] for g in gs]
    if all(rid):
        ax[2].errorbar([learn[g]["h_svd"]["mean"] for g in gs], [x["mean"] for x in rid],
                       [x["std"] for x in rid], marker="s", capsize=3,
                       label="ridge (closed form)")
    ax[2].set_yscale("log")
    ax[2].legend(fontsize=7)
    fig.suptitle("Learnability: Adam loss curves and convergence against H_SVD")
    return _save(fig, out, "fig2_learnability.png")


def fig_transfer(r: dict, out: Path) -> str:
    tr = r["transfer"]
    fig, ax = new_figure(1, 2, figsize=(11, 4))
    for i, s in enumerate(sorted(tr["ssim"])):
        x, m, sd = _xy(tr["ssim"][s])
        ax[0].errorbar(x, m, sd, marker="o", capsize=3, color=f"C{i}", label=s)
        mm = tr["mismatch"][s]
        gs = sorted(mm, key=float)
        ax[1].errorbar([abs(mm[g]) for g in gs], m, sd, marker="o", ls="", capsize=3,
                       color=f"C{i}", label=s)
        th = tr["threshold"][s]
        xs = np.linspace(0, max(abs(mm[g]) for g in gs), 50)
        ax[1].plot(xs, th["a"] - th["b"] * np.maximum(0, xs - th["tau"]), color=f"C{i}",
                   lw=1, alpha=0.7)
    ax[0].set_xscale("log")
    ax[0].set_xlabel("training γ")
    ax[0].set_ylabel("SSIM")
    ax[0].legend(fontsize=7)
    ax[1].set_xlabel("|Ω_k(train) − Ω_k(test)| (cycles/px)")
    ax[1].set_ylabel("SSIM")
    fig.suptitle("Transfer: speckle-trained decoders on real test sets (lines: hinge fit)")
    return _save(fig, out, "fig3_transfer.png")


def _heat(a, mean, std, labels, title):
    mean, std = np.array(mean), np.array(std)
    im = a.imshow(mean, cmap="viridis")
    a.set_xticks(range(len(labels)), labels)
    a.set_yticks(range(len(labels)), labels)
    a.set_xlabel("singular values from γ_j")
    a.set_ylabel("modes from γ_i")
    a.set_title(title, fontsize=9)
    if len(labels) <= 10:
        for i in range(mean.shape[0]):
            for j in range(mean.shape[1]):
                a.text(j, i, f"{mean[i, j]:.2f}\n±{std[i, j]:.2f}", ha="center", va="center",
                       fontsize=5 if len(labels) > 5 else 7, color="w")
    a.figure.colorbar(im, ax=a, fraction=0.046)


def fig_swapped(r: dict, out: Path) -> str:
    sw = r["swapped"]
    labels = [f"{float(g):g}" for g in sw["gammas"]]
    fig, ax = new_figure(1, 2, figsize=(11, 4.6))
    m = sw["matrices"]
    _heat(ax[0], m["h_svd"]["mean"], m["h_svd"]["std"], labels, "H_SVD of the swapped set")
    _heat(ax[1], m["ssim:mean"]["mean"], m["ssim:mean"]["std"], labels,
          "SSIM on the test sets (mean over sets)")
    fig.suptitle("Swapped spectra: modes of γ_i with singular values of γ_j")
    return _save(fig, out, "fig4_swapped.png")


def fig_distillation(r: dict, out: Path) -> str:
    d = r["distillation"]
    sets = sorted(d)
    fig, ax = new_figure(1, max(1, len(sets)), figsize=(4.6 * max(1, len(sets)), 3.8),
                           squeeze=False)
    for a, s in zip(ax[0], sets, strict=False):
        x, m, sd = _xy(d[s]["test_accuracy"])
        a.errorbar(x, m, sd, marker="o", capsize=3, label="reconstructions (held-out)")
        x, m2, sd2 = _xy(d[s]["train_accuracy"])
        a.errorbar(x, m2, sd2, marker=".", ls=":", capsize=3, label="reconstructions (train)")
        for i, (f, b) in enumerate(sorted(d[s]["baselines"].items())):
            t = b["test_accuracy"]
            a.axhline(t["mean"], ls="--", color=f"C{i + 2}", label=f"{f} (held-out)")
            a.axhspan(t["mean"] - t["std"], t["mean"] + t["std"], color=f"C{i + 2}", alpha=0.15)
        a.set_xscale("log")
        a.set_xlabel("training γ of the decoder")
        a.set_ylabel("accuracy")
        a.set_title(f"{s} (best SSIM: γ={d[s]['best_ssim_gamma']}, "
                    f"best acc.: γ={d[s]['best_accuracy_gamma']})", fontsize=8)
        a2 = a.twinx()
        if d[s]["ssim"]:
            xs, ms, ss = _xy(d[s]["ssim"])
            a2.errorbar(xs, ms, ss, color="grey", alpha=0.6, marker="x", capsize=2)
            a2.set_ylabel("SSIM (grey)", color="grey")
    ax[0][0].legend(fontsize=6)
    fig.suptitle("Feature distillation: linear softmax classifier on reconstructions")
    return _save(fig, out, "fig5_distillation.png")


def fig_designs(r: dict, out: Path) -> str:
    des = r["designs"]["designs"]
    names = sorted(des)
    sets = sorted({s for d in des.values() for s in d})
    fig, ax = new_figure(2, 1, figsize=(max(6, 1.6 * len(sets) * len(names) / 2), 6))
    w = 0.8 / max(1, len(names))
    for row, key, label in ((0, "ssim", "SSIM"), (1, "test_accuracy", "held-out accuracy")):
        for i, n in enumerate(names):
            xs, ms, ss = [], [], []
            for j, s in enumerate(sets):
                v = des[n].get(s, {}).get(key)
                if v:
                    xs.append(j + i * w)
                    ms.append(v["mean"])
                    ss.append(v["std"])
            ax[row].bar(xs, ms, w, yerr=ss, capsize=3, label=n)
        ax[row].set_xticks(np.arange(len(sets)) + w * (len(names) - 1) / 2, sets, fontsize=8)
        ax[row].set_ylabel(label)
    ax[0].legend(fontsize=7)
    fig.suptitle("Beyond the paper: designed training sets and a learned mask")
    return _save(fig, out, "fig6_designs.png")


def fig_timing(r: dict, out: Path) -> str:
    t = r["timing"]
    fig, (ax, ax2) = new_figure(1, 2, figsize=(11, 3.6))
    trace = t.get("phase_retrieval_ssim_by_iteration", {})
    its = sorted(int(k) for k in trace)
    ax2.plot(its, [trace[str(k)] for k in its], "o-", color="C3", label="phase retrieval")
    ax2.axhline(t["decoder_ssim"], color="C0", ls="--", label="linear decoder")
    ax2.set_xscale("log")
    ax2.set_xlabel("phase-retrieval iterations")
    ax2.set_ylabel("SSIM")
    ax2.set_title("Equal quality: iterations to reach the decoder's SSIM", fontsize=9)
    ax2.legend(fontsize=7)
    names = ["decoder\npredict()", "decoder\n(1 image)", "decoder\n(batched)",
             f"phase retrieval\n({t['phase_retrieval_iterations']} it., batched)"]
    vals = [t["decoder_s_per_predict_call"], t["decoder_s_per_image_single"],
            t["decoder_s_per_image_batched"], t["phase_retrieval_s_per_image"]]
    ax.bar(names, np.array(vals) * 1e6, color=["C7", "C0", "C0", "C3"])
    ax.tick_params(axis="x", labelsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("CPU µs per image (one thread)")
    ax.set_title(f"SSIM: decoder {t['decoder_ssim']:.2f}, phase retrieval "
                 f"{t['phase_retrieval_ssim']:.2f}", fontsize=9)
    return _save(fig, out, "fig7_timing.png")


def fig_attention(r: dict, out: Path) -> str:
    """Single-pixel probe: spread and H_SVD(W) against γ (mean ± std over seeds), and the
    centre pixel's map at up to six γ (the lowest seed)."""
    at = r["attention"]
    gs = at["gammas"]
    x = np.array([float(g) for g in gs])
    ctrl = at["control"]["random_weights"]
    ncol = min(6, len(gs))
    fig, _ = new_figure(None, figsize=(max(12.0, 2.2 * ncol), 7.2))
    # two rows of different widths: sub-figures under constrained layout (tight_layout
    # could not place a shared grid's spans: "Tight layout not applied")
    fig.set_layout_engine("constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.25, 1.0])
    panels = list(top.subplots(1, 3))
    maps = np.atleast_1d(bottom.subplots(1, ncol))
    for a, key, label, log in ((panels[0], "participation_ratio",
                                "participation ratio (pixels covered)", True),
                               (panels[1], "peak_fraction",
                                "energy fraction on the probed pixel", True)):
        m = np.array([at["by_gamma"][g][key]["mean"] for g in gs])
        sd = np.array([at["by_gamma"][g][key]["std"] for g in gs])
        a.errorbar(x, m, sd, marker="o", capsize=3, label="speckle-trained decoder")
        a.axhline(ctrl[key]["mean"], color="C3", ls="--", lw=1, label="random weights")
        a.axhline(at["control"]["perfect_imager"][key], color="k", ls=":", lw=1,
                  label="perfect imager")
        a.set_xscale("log")
        if log:
            a.set_yscale("log")
        a.set_xlabel("training γ")
        a.set_ylabel(label, fontsize=8)
    panels[0].legend(fontsize=7, loc="lower left")
    a = panels[2]
    h = [at["by_gamma"][g]["h_svd_weights_normalised"] for g in gs]
    a.errorbar(x, [v["mean"] for v in h], [v["std"] for v in h], marker="o", capsize=3,
               label="speckle-trained decoder")
    a.axhline(ctrl["h_svd_weights_normalised"]["mean"], color="C3", ls="--", lw=1,
              label="random weights")
    a.set_xscale("log")
    a.set_xlabel("training γ")
    a.set_ylabel("H_SVD(W) / log₂ min(W.shape)  (σ/Σσ)", fontsize=8)
    a.legend(fontsize=7)
    pick = [gs[int(round(i))] for i in np.linspace(0, len(gs) - 1, ncol)]
    cy, cx = at["centre_pixel"]
    for a, g in zip(maps, pick, strict=True):
        m = np.array(at["maps"][g])
        v = float(np.abs(m).max()) or 1.0
        a.imshow(m, cmap="RdBu_r", vmin=-v, vmax=v)
        a.plot([cx], [cy], marker="o", mfc="none", color="k", ms=9, mew=0.7)
        a.set_title(f"γ={float(g):g}  PR={at['maps_participation_ratio'][g]:.0f}", fontsize=8)
        a.axis("off")
    fig.suptitle(f"Attention probe: response to one bright pixel (centre pixel ({cy}, {cx}) "
                 "below, dark response subtracted)")
    return _save(fig, out, "fig8_attention.png")


def make_figures(results: dict, out: Path) -> dict[str, str]:
    """Every figure whose data exists; {figure id: file name}."""
    r = results["results"]
    makers = {"synthetic": fig_synthetic, "learnability": fig_learnability,
              "transfer": fig_transfer, "swapped": fig_swapped,
              "distillation": fig_distillation, "designs": fig_designs, "timing": fig_timing,
              "attention": fig_attention}
    made = {}
    for key, fn in makers.items():
        if r.get(key):
            made[key] = fn(r, out)
    return made
