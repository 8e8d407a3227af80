"""Step 5: feature distillation. The paper's linear softmax classifier on the
reconstructions of every γ decoder, per data set, train and held-out accuracy, with two
baselines through the same classifier: the raw images and the raw sensor patterns.

The reconstruction classifications run inside the transfer step's decoder cells (the
decoder is fitted once); this module holds that code, the baseline cells, and the rank
comparison of SSIM against accuracy.
"""

from __future__ import annotations

import numpy as np
import torch

from experiments.sweep import Cell, make_key
from simulation import DualVortexEncoder, encode_batched, normalise_for_decoder

from .common import (
    classification_split,
    classify_features,
    encoded_split,
    n_classes_of,
    summary,
)
from .config import StudyConfig

__all__ = ["classify_reconstructions", "baseline_cell", "cells", "aggregate", "FEATURES"]

#: baseline features: raw images, raw sensor patterns, and the random-label control (raw
#: images with the training labels permuted: its held-out accuracy must be at chance)
FEATURES = ("raw", "sensor", "random-labels")


def classify_reconstructions(encoder, decoder, sets, *, n_train: int, n_test: int,
                             epochs: int, seed: int, data_dir: str | None,
                             method: str = "paper") -> dict:
    """Classifier accuracy on reconstructions by (encoder, decoder), per set (the split's
    sensor patterns cached per process: `common.encoded_split`)."""
    out = {}
    for s in sets:
        split = encoded_split(s, n_train, n_test, seed, data_dir, encoder)
        tr = decoder.predict(split["train_p"], encoder=encoder)
        te = decoder.predict(split["test_p"], encoder=encoder)
        out[s] = classify_features(tr, split["train_y"], te, split["test_y"], epochs=epochs,
                                   seed=seed, n_classes=n_classes_of(s), method=method)
        out[s]["source"] = split["source"]
    return out


def _sensor_features(images: torch.Tensor | None = None, *,
                     patterns: torch.Tensor | None = None) -> torch.Tensor:
    """Normalised dual-vortex sensor patterns of ``images`` (or of given ``patterns``)."""
    p = encode_batched(DualVortexEncoder(), images) if patterns is None else patterns
    if p.ndim == 5:  # colour: (B, 3, C, H, W), each colour channel normalised on its own
        b, k = p.shape[:2]
        return normalise_for_decoder(p.reshape(b * k, *p.shape[2:])).reshape(b, -1)
    return normalise_for_decoder(p)


def baseline_cell(set_name: str, feature: str, seed: int, n_train: int, n_test: int,
                  epochs: int, _data_dir: str | None = None, clf_method: str = "paper") -> dict:
    """The classifier on raw images, on raw (normalised) sensor patterns, or on raw
    images with the training labels permuted ("random-labels": the control whose
    held-out accuracy must be at chance; its train accuracy shows how much the
    classifier memorises)."""
    if feature not in FEATURES:
        raise ValueError(f"feature: expected one of {FEATURES}, got {feature!r}")
    if feature == "sensor":  # the dual-vortex patterns, cached as the decoder cells' are
        split = encoded_split(set_name, n_train, n_test, seed, _data_dir, DualVortexEncoder())
        tr, te = (_sensor_features(patterns=split["train_p"]),
                  _sensor_features(patterns=split["test_p"]))
    else:
        split = classification_split(set_name, n_train, n_test, seed, _data_dir)
        tr, te = split["train_x"], split["test_x"]
    train_y = split["train_y"]
    if feature == "random-labels":
        perm = np.random.default_rng(30_000 + seed).permutation(len(train_y))
        train_y = torch.as_tensor(train_y)[torch.from_numpy(perm)]
    out = classify_features(tr, train_y, te, split["test_y"], epochs=epochs,
                            seed=seed, n_classes=n_classes_of(set_name), method=clf_method)
    out["source"] = split["source"]
    return out


def cells(cfg: StudyConfig, sets: list[str], data_dir: str | None) -> list[Cell]:
    out = []
    for seed in range(cfg.seeds):
        for s in sets:
            for f in FEATURES:
                p = {"set_name": s, "feature": f, "seed": seed, "n_train": cfg.clf_n_train,
                     "n_test": cfg.clf_n_test, "epochs": cfg.clf_epochs, "_data_dir": data_dir}
                if cfg.clf_method != "paper":  # keys of the existing scales stay as they were
                    p["clf_method"] = cfg.clf_method
                out.append(Cell(make_key("baseline", f"{s}_{f}_s{seed}", p),
                                "experiments.paper.distill:baseline_cell", p))
    return out



def aggregate(cfg: StudyConfig, sets: list[str], base_cells: list[Cell],
              baseline_cells: list[Cell], results: dict[str, dict], transfer: dict) -> dict:
    """Accuracy per (set, γ) and per baseline; the SSIM-versus-accuracy rank comparison."""
    acc: dict[str, dict[str, dict[str, list]]] = {}
    for c in base_cells:
        r = results[c.key].get("classification") or {}
        for s, v in r.items():
            d = acc.setdefault(s, {}).setdefault(str(c.params["gamma"]), {"train": [],
                                                                           "test": []})
            d["train"].append(v["train_accuracy"])
            d["test"].append(v["test_accuracy"])
    base: dict[str, dict[str, dict[str, list]]] = {}
    sources: dict[str, str] = {}
    n_test: dict[str, int] = {}
    for c in baseline_cells:
        r = results[c.key]
        d = base.setdefault(c.params["set_name"], {}).setdefault(c.params["feature"],
                                                                  {"train": [], "test": []})
        d["train"].append(r["train_accuracy"])
        d["test"].append(r["test_accuracy"])
        sources[c.params["set_name"]] = r["source"]
        n_test[c.params["set_name"]] = int(r["n_test"])
    per_set = {}
    for s in sets:
        if s not in acc:
            continue
        gammas = sorted(acc[s], key=float)
        test_mean = {g: summary(acc[s][g]["test"]) for g in gammas}
        train_mean = {g: summary(acc[s][g]["train"]) for g in gammas}
        ssim_of = {g: transfer["ssim"][s][g] for g in gammas if g in transfer["ssim"].get(s, {})}
        best_ssim = max(ssim_of, key=lambda g: ssim_of[g]["mean"]) if ssim_of else None
        best_acc = max(gammas, key=lambda g: test_mean[g]["mean"])
        per_set[s] = {
            "test_accuracy": test_mean, "train_accuracy": train_mean,
            "baselines": {f: {"train_accuracy": summary(v["train"]),
                              "test_accuracy": summary(v["test"])}
                          for f, v in base.get(s, {}).items()},
            "split_source": sources.get(s), "n_test": n_test.get(s, cfg.clf_n_test),
            "n_classes": n_classes_of(s),
            "best_ssim_gamma": best_ssim, "best_accuracy_gamma": best_acc,
            "ssim": ssim_of,
        }
    return per_set
