"""Step 1: the synthetic training sets. H_SVD and Ω_k of each γ speckle set, and of
each test set (the targets that the "SAD parity" claim compares them with)."""

from __future__ import annotations

from experiments.sweep import Cell, make_key

from .common import set_statistics, summary, test_images, training_speckle
from .config import StudyConfig

__all__ = ["cells", "speckle_stats_cell", "testset_stats_cell", "aggregate"]

STAT_KEYS = ("h_svd", "h_svd_power", "omega_k", "omega_k_power")


def speckle_stats_cell(gamma: float, seed: int, n: int) -> dict:
    """Statistics of the training speckle set (γ, seed) of n images."""
    return set_statistics(training_speckle(gamma, n, seed))


def testset_stats_cell(set_name: str, seed: int, n: int, _data_dir: str | None = None) -> dict:
    """Statistics of a test set (a seeded subset of n images)."""
    return set_statistics(test_images(set_name, n, seed, _data_dir))


def cells(cfg: StudyConfig, sets: list[str], data_dir: str | None) -> list[Cell]:
    out = []
    for seed in range(cfg.seeds):
        for g in cfg.gammas:
            p = {"gamma": g, "seed": seed, "n": cfg.n_train}
            out.append(Cell(make_key("stats", f"g{g}_s{seed}", p),
                            "experiments.paper.synthetic:speckle_stats_cell", p))
        for s in sets:
            p = {"set_name": s, "seed": seed, "n": cfg.n_test, "_data_dir": data_dir}
            out.append(Cell(make_key("teststats", f"{s}_s{seed}", p),
                            "experiments.paper.synthetic:testset_stats_cell", p))
    return out



def aggregate(cfg: StudyConfig, sets: list[str], results: dict[str, dict],
              cell_list: list[Cell]) -> dict:
    """{"speckle": {γ: {stat: {mean, std}}}, "test_sets": {set: {stat: {mean, std}}}}."""
    per_gamma: dict[str, dict[str, list]] = {}
    per_set: dict[str, dict[str, list]] = {}
    for c in cell_list:
        r = results[c.key]
        if "gamma" in c.params:
            bucket = per_gamma.setdefault(str(c.params["gamma"]), {k: [] for k in STAT_KEYS})
        else:
            bucket = per_set.setdefault(c.params["set_name"], {k: [] for k in STAT_KEYS})
        for k in STAT_KEYS:
            bucket[k].append(r[k])
    return {
        "speckle": {g: {k: summary(v) for k, v in d.items()} for g, d in per_gamma.items()},
        "test_sets": {s: {k: summary(v) for k, v in d.items()} for s, d in per_set.items()},
    }
