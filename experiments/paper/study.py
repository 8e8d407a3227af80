"""The paper study end to end: build the cell grid of every step, run it through the
sweep runner (resumable), aggregate, judge the claims, write ``results.json`` and the
report into the output directory."""

from __future__ import annotations

import logging
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

from experiments.sweep import Cell, run_cells
from hil.runs import write_json_atomic
from simulation.provenance import provenance

from . import alpha, attention, designs, distill, learnability, swapped, synthetic, timing, transfer
from .common import data_dir_or_env, present_sets
from .config import StudyConfig
from .verdicts import all_verdicts

__all__ = ["StudyRun", "plan", "run_study"]

log = logging.getLogger("experiments.paper")


@dataclass
class StudyRun:
    out: Path
    results: dict
    computed: int
    skipped: int


def plan(cfg: StudyConfig, data_dir: str | None) -> tuple[dict[str, list[Cell]], dict]:
    """Every step's cells, and which test sets were found or missing."""
    sets, missing = present_sets(cfg.transfer_sets, data_dir)
    swap_sets = [s for s in cfg.swap_sets if s in sets]
    clf_sets, clf_missing = present_sets(cfg.classify_sets, data_dir)
    steps = {
        "learnability": learnability.cells(cfg, sets, data_dir),
        "designs": designs.cells(cfg, sets, clf_sets, data_dir),
        "transfer": transfer.cells(cfg, sets, clf_sets, data_dir),
        "swapped": swapped.cells(cfg, swap_sets, data_dir),
        "baselines": distill.cells(cfg, clf_sets, data_dir),
        "synthetic": synthetic.cells(cfg, sets, data_dir),
        "timing": timing.cells(cfg, data_dir) if "mnist" in sets else [],
        "attention": attention.cells(cfg, in_transfer=True),
    }
    info = {"transfer_sets": sets, "missing_sets": missing, "swap_sets": swap_sets,
            "classify_sets": clf_sets, "missing_classify_sets": clf_missing}
    return steps, info


CELL_MODULES = ("common", "synthetic", "learnability", "transfer", "swapped", "distill",
                "designs", "timing", "attention", "alpha")


def cells_source_hash() -> str:
    """A hash of the sources that compute the cells (the `simulation` package and this
    study's cell modules): a finished cell made by other code is not reused. Not a
    version: the run's ``provenance`` (`simulation.provenance`) says which code it was."""
    import hashlib

    import simulation

    here = Path(__file__).resolve().parent
    files = sorted(Path(simulation.__file__).resolve().parent.glob("*.py"))
    files += [here / f"{m}.py" for m in CELL_MODULES]
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def aggregate(cfg: StudyConfig, steps: dict[str, list[Cell]], info: dict,
              results: dict[str, dict]) -> dict:
    sets = info["transfer_sets"]
    syn = synthetic.aggregate(cfg, sets, results, steps["synthetic"])
    tra = transfer.aggregate(cfg, sets, results, steps["transfer"], syn)
    agg = {
        "synthetic": syn,
        "learnability": learnability.aggregate(
            cfg, results, steps["learnability"],
            tra["ridge_train_mse"] if cfg.learn_n == cfg.n_train and cfg.learn_outputs is None
            else None),
        "learnability_transfer": learnability.transfer_aggregate(results,
                                                                 steps["learnability"]),
        "transfer": tra,
        "swapped": swapped.aggregate(cfg, info["swap_sets"], results, steps["swapped"],
                                     steps["transfer"]),
        "distillation": distill.aggregate(cfg, info["classify_sets"], steps["transfer"],
                                          steps["baselines"], results, tra),
        "designs": designs.aggregate(cfg, results, steps["designs"], steps["transfer"]),
        "timing": results[steps["timing"][0].key] if steps["timing"] else None,
        "attention": attention.aggregate(cfg, results, steps["attention"], steps["transfer"]),
        "alpha_sensitivity": alpha.aggregate(results, steps["transfer"]),
    }
    return agg


def _say_estimate(cfg: StudyConfig, cells: list[Cell], store: Path, workers: int,
                  code: str) -> dict | None:
    """Print the time estimate of a long scale before its sweep starts (`cost`)."""
    from .cost import FULL_ESTIMATE, PROBED_SCALES, format_estimate, probe_estimate

    if cfg.scale == "full":
        print(FULL_ESTIMATE, flush=True)
        return {"static": FULL_ESTIMATE}
    if cfg.scale not in PROBED_SCALES:
        return None
    print(f"{cfg.scale} scale: timing one cell of each kind first ...", flush=True)
    est = probe_estimate(cells, store, workers=workers, code=code,
                         preload=["simulation", "experiments.paper.study"])
    print(format_estimate(est, cfg.scale), flush=True)
    return est


def run_study(cfg: StudyConfig, out: str | os.PathLike, *, executor: str = "local",
              workers: int = 2, address: str | None = None, data_dir: str | None = None,
              progress: bool = True, report: bool = True) -> StudyRun:
    """Run (or resume) the study into ``out``; returns the results written to
    ``out/results.json``. Finished cells in ``out/cells`` are reused."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = data_dir_or_env(data_dir)
    steps, info = plan(cfg, data_dir)
    if not info["transfer_sets"]:
        raise FileNotFoundError(
            "no test data set found: set HIL_DATA_DIR to the folder holding mnist_test.npz "
            f"(looked in {data_dir!r})")
    for name in info["missing_sets"]:
        log.warning("test set %s not found: left out of the study", name)
    order = ["learnability", "designs", "transfer", "swapped", "baselines", "synthetic",
             "attention", "timing"]
    cells = [c for step in order for c in steps[step]]
    code = cells_source_hash()
    t_start = time.perf_counter()
    estimate = _say_estimate(cfg, cells, out / "cells", workers, code)
    t0 = time.perf_counter()
    sweep = run_cells(cells, out / "cells", executor=executor, workers=workers,
                      address=address, progress=progress, desc=f"paper study ({cfg.scale})",
                      preload=["simulation", "experiments.paper.study"], code=code)
    wall = time.perf_counter() - t0
    prov = provenance()
    agg = aggregate(cfg, steps, info, sweep.results)
    cfg_dict = cfg.as_dict()
    results = {
        "study": "paper", "config": cfg_dict, "data": info,
        "run": {"executor": executor, "workers": workers, "cells": len(cells),
                "cells_computed": len(sweep.computed), "cells_reused": len(sweep.skipped),
                "sweep_wall_s": wall, "cells_cpu_s": sweep.cpu_seconds,
                "wall_s": time.perf_counter() - t_start,  # probe + sweep + aggregation
                "estimate": estimate,
                "git_commit": prov["git_commit"], "cells_source_sha256": code,
                "provenance": prov,
                "versions": {"python": prov["python"], **prov["versions"]},
                "machine": {"platform": platform.platform(), "cpus": os.cpu_count()}},
        "results": agg,
        "verdicts": all_verdicts(cfg_dict, agg),
    }
    results["alpha_robustness"] = {
        "ridge_alpha": alpha.robustness(cfg_dict, agg, results["verdicts"]),
        "adam": alpha.adam_robustness(cfg_dict, agg)}
    write_json_atomic(out / "results.json", results)
    if report:
        from .report import write_report

        write_report(results, out)
    return StudyRun(out=out, results=results, computed=len(sweep.computed),
                    skipped=len(sweep.skipped))
