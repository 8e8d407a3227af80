"""How long a study will take, said before it starts (issue 9: an honest estimate).

`probe_estimate` times one cell of each kind (the cell function) on one worker
(the sweep runs each worker on one thread), stores their results where the sweep
will find them (so the probe is not wasted work), and extrapolates: every cell
of a kind is taken to cost what its probe cost, and the workers to share the load
evenly, so the wall time is Σ cost / min(workers, CPUs). Cells of a kind differ
(γ, image set, which cells classify), so this is a projection, printed as one.

`FULL_ESTIMATE` is the static estimate of the ``full`` scale (the paper's literal
Adam protocol), measured on 2 CPU cores for issue 9: probing it would take hours.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from experiments.sweep import Cell, run_cells

__all__ = ["probe_estimate", "format_estimate", "FULL_ESTIMATE", "PROBED_SCALES"]

#: scales whose cost is probed before the sweep starts
PROBED_SCALES = ("paper",)

FULL_ESTIMATE = (
    "full scale (the paper's literal Adam protocol): about 30 CPU-hours, 15 h wall on "
    "2 cores (5.8 h of 5,000-epoch Adam curves, 10 h of factorised 1024²/3072² "
    "classifiers at batch 32, 6.6 h of learned masks; measured for issue 9)")


def _stored_seconds(store: Path, key: str) -> float | None:
    f = store / f"{key}.json"
    if not f.is_file():
        return None
    try:
        return float(json.loads(f.read_text())["seconds"])
    except (ValueError, KeyError, TypeError):
        return None


def probe_estimate(cells: Sequence[Cell], store: str | os.PathLike, *, workers: int,
                   code: str | None = None, preload: Sequence[str] = ()) -> dict:
    """Time one cell per kind (stored in ``store`` for the sweep to reuse) and project
    the wall time of the cells not yet done.

    Returns ``{"kinds": {func: {"cells": n, "todo": m, "probe_s": t}}, "cpu_s": Σ,
    "wall_s": projected wall seconds, "workers": w, "cores": c}``.
    """
    store = Path(store)
    counts = Counter(c.func for c in cells)
    probes: dict[str, Cell] = {}
    for c in cells:
        probes.setdefault(c.func, c)
    run_cells(list(probes.values()), store, workers=1, progress=False,
              desc="cost probe", preload=preload, code=code)
    kinds, total = {}, 0.0
    for func, probe in probes.items():
        t = _stored_seconds(store, probe.key) or 0.0
        todo = sum(1 for c in cells if c.func == func
                   and _stored_seconds(store, c.key) is None)
        kinds[func] = {"cells": counts[func], "todo": todo, "probe_s": t}
        total += t * todo
    cores = os.cpu_count() or 1
    share = max(1, min(workers, cores))
    return {"kinds": kinds, "cpu_s": total, "wall_s": total / share, "workers": workers,
            "cores": cores}


def format_estimate(est: dict, scale: str) -> str:
    """The estimate as the lines printed before a long sweep."""
    lines = [f"{scale} scale: projected wall time {est['wall_s'] / 60:.0f} min on "
             f"{min(est['workers'], est['cores'])} worker(s) (a projection: one cell of each "
             "kind timed on one worker, the others assumed to cost the same)"]
    for func, k in sorted(est["kinds"].items(), key=lambda kv: -kv[1]["probe_s"] * kv[1]["todo"]):
        lines.append(f"  {func.split(':')[-1]:<20} {k['todo']:>4} of {k['cells']:>4} cells to do"
                     f" x {k['probe_s']:7.1f} s")
    return "\n".join(lines)
