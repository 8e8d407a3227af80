"""Step 2: learnability. The paper's Adam protocol (full batch, lr 1e-3, 1 % held out)
on each γ set, its loss curve and convergence figures against H_SVD, with the
closed-form (ridge) decoder's final loss on the same set beside it (the transfer
step's decoder cell fits it on the very same images: ``learn_n`` equals ``n_train``).

Convergence figures of one curve (primary first):
- ``remaining``: loss at the last epoch / loss at the first (lower: learned faster);
- ``epochs_to_threshold`` and ``decay_rate`` from `simulation.convergence`.
"""

from __future__ import annotations

import numpy as np

from experiments.sweep import Cell, make_key
from simulation import DualVortexEncoder, LinearDecoder, convergence, encode_batched, svd_entropy

from .common import training_speckle
from .config import StudyConfig

__all__ = ["cells", "learn_cell", "aggregate"]

MAX_POINTS = 500  # loss-curve points kept per run in results.json


def _thin(history: list[float]) -> tuple[list[int], list[float]]:
    step = max(1, int(np.ceil(len(history) / MAX_POINTS)))
    idx = list(range(0, len(history), step))
    if idx[-1] != len(history) - 1:
        idx.append(len(history) - 1)
    return [i + 1 for i in idx], [float(history[i]) for i in idx]


def learn_cell(gamma: float, seed: int, n: int, epochs: int) -> dict:
    """Adam (paper protocol) and ridge decoders on the speckle set (γ, seed)."""
    images = training_speckle(gamma, n, seed)
    enc = DualVortexEncoder()
    patterns = encode_batched(enc, images)
    adam = LinearDecoder(device="cpu").fit(patterns, images, method="adam", encoder=enc,
                                           epochs=epochs, seed=seed, progress=False)
    hist = adam.history_["train_mse"]
    conv = convergence(hist) if len(hist) >= 2 else {"final_loss": hist[-1],
                                                      "epochs_to_threshold": None,
                                                      "decay_rate": float("nan")}
    epochs_x, losses = _thin(hist)
    val = adam.history_.get("val_mse") or []
    return {
        "h_svd": float(svd_entropy(images).mean()),
        "epochs": epochs_x, "train_mse": losses,
        "final_train_mse": float(hist[-1]), "first_train_mse": float(hist[0]),
        "final_val_mse": float(val[-1]) if val else None,
        "remaining": float(hist[-1] / hist[0]),
        "epochs_to_threshold": conv["epochs_to_threshold"],
        "decay_rate": float(conv["decay_rate"]),
    }


def cells(cfg: StudyConfig) -> list[Cell]:
    out = []
    for seed in range(cfg.seeds):
        for g in cfg.learn_gammas:
            p = {"gamma": g, "seed": seed, "n": cfg.learn_n, "epochs": cfg.learn_epochs}
            out.append(Cell(make_key("learn", f"g{g}_s{seed}", p),
                            "experiments.paper.learnability:learn_cell", p))
    return out


def _ms(values) -> dict:
    a = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    return {"mean": float(np.nanmean(a)), "std": float(np.nanstd(a)), "n": int(a.size)}


def aggregate(cfg: StudyConfig, results: dict[str, dict], cell_list: list[Cell],
              ridge_train_mse: dict[str, dict] | None = None) -> dict:
    """Per γ: mean ± std over seeds of each figure, and the mean ± std loss curve;
    ``ridge_train_mse`` (per γ, from the transfer step) is put beside them."""
    by_gamma: dict[str, list[dict]] = {}
    for c in cell_list:
        by_gamma.setdefault(str(c.params["gamma"]), []).append(results[c.key])
    out = {}
    for g, runs in by_gamma.items():
        curves = np.asarray([r["train_mse"] for r in runs], dtype=np.float64)
        out[g] = {k: _ms([r[k] for r in runs]) for k in (
            "h_svd", "final_train_mse", "remaining", "epochs_to_threshold", "decay_rate")}
        out[g]["ridge_train_mse"] = (ridge_train_mse or {}).get(g)
        out[g]["curve"] = {"epochs": runs[0]["epochs"], "mean": curves.mean(0).tolist(),
                           "std": curves.std(0).tolist()}
    return out
