"""How long a study will take, said before it starts (an honest estimate).

`probe_estimate` times (in CPU seconds) the first two cells of each kind (the cell
function) one after the other in one worker process (the sweep runs each worker on one
thread), stores their results where the sweep will find them (so the probe is not
wasted work), and extrapolates. The kinds are shared out over as many such one-worker
probes as the sweep has workers, run side by side: on one worker alone the probe left
the other core idle for a quarter of an hour at the ``paper`` scale.

The cells keep per-process caches (encoded test sets and classification splits, a swap
row's singular vectors), so the first cell of a kind pays for filling them ("cold") and
the next, of the same seed, does not ("warm"): each worker meets a cold start once per
seed, so a kind with ``todo`` cells left is taken to cost c·cold + (todo − c)·warm with
c = min(todo, workers × seeds), and the workers to share the load evenly: wall = Σ cost
/ min(workers, CPUs). Cells of a kind differ (γ, image set, which cells classify), so
this is a projection, printed as one.

`FULL_ESTIMATE` is the static estimate of the ``full`` scale (the paper's literal
Adam protocol), measured on 2 CPU cores: probing it would take hours.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from experiments.sweep import Cell, run_cells

__all__ = ["probe_estimate", "format_estimate", "FULL_ESTIMATE", "PROBED_SCALES"]

#: scales whose cost is probed before the sweep starts
PROBED_SCALES = ("paper",)

FULL_ESTIMATE = (
    "full scale (the paper's literal Adam protocol): about 30 CPU-hours, 15 h wall on "
    "2 cores (5.8 h of 5,000-epoch Adam curves, 10 h of factorised 1024²/3072² "
    "classifiers at batch 32, 6.6 h of learned masks; measured on 2 cores)")


def _stored_seconds(store: Path, key: str) -> float | None:
    """A stored cell's CPU seconds (its process time: on a shared machine the wall time
    measures the other jobs too; each cell runs one thread, so on idle cores its wall
    time is its CPU time), or its wall seconds when no CPU time was stored."""
    f = store / f"{key}.json"
    if not f.is_file():
        return None
    try:
        d = json.loads(f.read_text())
        return float(d.get("cpu_seconds", d["seconds"]))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _seeds_of(cells: Sequence[Cell]) -> int:
    return max(1, len({c.params.get("seed") for c in cells}))


def probe_estimate(cells: Sequence[Cell], store: str | os.PathLike, *, workers: int,
                   code: str | None = None, preload: Sequence[str] = ()) -> dict:
    """Time the first two cells of each kind (stored in ``store`` for the sweep to
    reuse), both in the same worker process (the kinds dealt round-robin over
    min(workers, CPUs) such workers, side by side), and project the wall time of the
    cells not yet done.

    Returns ``{"kinds": {func: {"cells": n, "todo": m, "probe_s": cold, "warm_s":
    warm, "cold_starts": c, "cpu_s": cost}}, "cpu_s": Σ, "wall_s": projected wall
    seconds, "workers": w, "cores": c}``.
    """
    store = Path(store)
    counts = Counter(c.func for c in cells)
    probes: dict[str, list[Cell]] = {}
    for c in cells:
        if len(probes.setdefault(c.func, [])) < 2:
            probes[c.func].append(c)
    todo_before = {f: sum(1 for c in cells if c.func == f
                          and _stored_seconds(store, c.key) is None) for f in probes}
    cores = os.cpu_count() or 1
    share = max(1, min(workers, cores))
    groups = [list(probes)[i::share] for i in range(share)]
    # per probe worker: its kinds' cold cells first, then their warm ones
    orders = [[probes[f][0] for f in g] + [probes[f][1] for f in g if len(probes[f]) > 1]
              for g in groups if g]

    def probe(order: list[Cell]) -> None:
        run_cells(order, store, workers=1, progress=False, desc="cost probe",
                  preload=preload, code=code)

    with ThreadPoolExecutor(max_workers=len(orders)) as pool:
        for f in [pool.submit(probe, o) for o in orders]:
            f.result()
    kinds, total = {}, 0.0
    for func, probe in probes.items():
        cold = _stored_seconds(store, probe[0].key) or 0.0
        warm = _stored_seconds(store, probe[-1].key) or cold
        todo = todo_before[func]
        same_kind = [c for c in cells if c.func == func]
        c_starts = min(todo, share * _seeds_of(same_kind))
        cost = c_starts * cold + (todo - c_starts) * warm
        kinds[func] = {"cells": counts[func], "todo": todo, "probe_s": cold, "warm_s": warm,
                       "cold_starts": c_starts, "cpu_s": cost}
        total += cost
    return {"kinds": kinds, "cpu_s": total, "wall_s": total / share, "workers": workers,
            "cores": cores}


def format_estimate(est: dict, scale: str) -> str:
    """The estimate as the lines printed before a long sweep."""
    lines = [f"{scale} scale: projected wall time {est['wall_s'] / 60:.0f} min on "
             f"{min(est['workers'], est['cores'])} worker(s) (a projection: the first two "
             "cells of each kind timed in one worker each, cold and warm caches; the others "
             "assumed to cost the same; CPU seconds, i.e. the wall time on idle cores)"]
    for func, k in sorted(est["kinds"].items(), key=lambda kv: -kv[1].get(
            "cpu_s", kv[1]["probe_s"] * kv[1]["todo"])):
        cpu = k.get("cpu_s", k["probe_s"] * k["todo"])
        warm = k.get("warm_s", k["probe_s"])
        lines.append(f"  {func.split(':')[-1]:<20} {k['todo']:>4} of {k['cells']:>4} cells to do"
                     f", cold {k['probe_s']:7.1f} s, warm {warm:7.1f} s: "
                     f"{cpu / 60:6.1f} CPU-min")
    return "\n".join(lines)
