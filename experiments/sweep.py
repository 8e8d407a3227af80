"""The cell-grid runner: run many independent, seeded computations ("cells") and keep
each result on disk, so that an interrupted sweep restarts where it stopped.

A `Cell` names a function by ``"module:function"`` and the JSON-able keyword arguments
to call it with; the function returns a JSON-able dict. `run_cells` skips every cell
whose result file already exists in the store, runs the rest, and writes each result
(atomically: temporary name, then rename) as soon as it arrives.

Executors:

- ``"local"`` (default): a process pool of ``workers`` processes, each limited to one
  torch thread; they are forked from a clean fork server (spawned where there is none),
  so no OpenMP state of the parent is inherited and later pools start fast. The workers
  die with the sweep's process, even when it is killed with SIGKILL (no cleanup code
  runs then): on Linux each worker asks the kernel for SIGKILL when its parent exits
  (``prctl(PR_SET_PDEATHSIG)``), and on every platform a watchdog thread in the worker
  kills it once the sweep's process is gone;
- ``"ray"``: the optional extra (``pip install ray`` or the ``[ray]`` extra), on the
  cluster at ``address`` (``None`` or ``"local"`` starts Ray on this machine). The store
  directory must be readable by the driver only: workers return results, the driver
  writes them. Tasks run with the driver's import path prepended to ``PYTHONPATH``
  (as the local pool's workers get it), so a cell function defined in a module that is
  importable by the driver only through its ``sys.path`` (a test module, a script's
  folder) resolves on the workers of this machine; on other nodes the modules must be
  importable there (the project installed, or a shared file system).

Every cell runs with one torch thread whatever the executor or the number of workers,
so a cell's numbers do not depend on how the sweep was scheduled: the same seeds give
identical results with 1 or N local workers and with Ray.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from simulation.atomic import atomic_open
from simulation.validate import check_count

__all__ = ["Cell", "SweepReport", "run_cells", "make_key", "EXECUTORS"]

EXECUTORS = ("local", "ray")
log = logging.getLogger("experiments.sweep")


def make_key(kind: str, label: str, params: dict[str, Any]) -> str:
    """A file-system-safe key: ``kind-label-<hash of params>``.

    Keys starting with ``_`` in ``params`` (paths, progress flags) are left out of the
    hash, so moving the data directory does not invalidate finished cells.
    """
    hashed = {k: v for k, v in params.items() if not k.startswith("_")}
    blob = json.dumps(hashed, sort_keys=True, default=str).encode()
    digest = hashlib.sha256(blob).hexdigest()[:10]
    safe = "".join(c if c.isalnum() or c in "._=+" else "_" for c in label)
    return f"{kind}-{safe}-{digest}"


@dataclass(frozen=True)
class Cell:
    """One unit of work: ``func`` ("module:function") called with ``params``."""

    key: str
    func: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class SweepReport:
    """What a `run_cells` call did: results by key, which keys were computed or reused,
    and the CPU time the computed cells took (a load-independent measure of cost)."""

    results: dict[str, dict]
    computed: list[str]
    skipped: list[str]
    cpu_seconds: float = 0.0  # CPU time of the computed cells, all workers together


def _resolve(func: str) -> Callable[..., dict]:
    module, _, name = func.partition(":")
    if not module or not name:
        raise ValueError(f"func: expected 'module:function', got {func!r}")
    return getattr(importlib.import_module(module), name)


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass


def execute_cell(func: str, params: dict[str, Any]) -> tuple[dict, float, float]:
    """Run one cell in this process with one torch thread:
    (result, wall seconds, CPU seconds of this process)."""
    _one_thread()
    t0, c0 = time.perf_counter(), time.process_time()
    result = _resolve(func)(**params)
    if not isinstance(result, dict):
        raise TypeError(f"{func}: expected a dict result, got {type(result).__name__}")
    # round-trip through JSON so that every executor hands back the very same values
    return (json.loads(json.dumps(result, sort_keys=True)), time.perf_counter() - t0,
            time.process_time() - c0)


def _result_path(store: Path, key: str) -> Path:
    return store / f"{key}.json"


def _write_atomic(path: Path, payload: dict) -> None:
    with atomic_open(path, "w") as f:
        json.dump(payload, f, sort_keys=True)


def load_done(store: Path, cells: Iterable[Cell], code: str | None = None) -> dict[str, dict]:
    """Results already in ``store`` for these cells. Unreadable files, and results made
    by other code (a ``code`` tag that differs), count as not done."""
    done, stale = {}, 0
    for cell in cells:
        path = _result_path(store, cell.key)
        if path.is_file():
            try:
                payload = json.loads(path.read_text())
                result = payload["result"]
            except (OSError, ValueError, KeyError):
                log.warning("ignoring unreadable cell result %s; it will be recomputed", path)
                continue
            if code is not None and payload.get("code") != code:
                stale += 1
                continue
            done[cell.key] = result
    if stale:
        log.warning("%d finished cells were computed by other code; they will be recomputed",
                    stale)
    return done


WATCHDOG_PERIOD_S = 0.5


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _die_with(owner_pid: int) -> None:
    """Worker initializer: end this process when the sweep's process ``owner_pid`` ends.

    Linux: ``PR_SET_PDEATHSIG`` (SIGKILL when the parent, the fork server or the sweep's
    process, exits); everywhere: a daemon thread that polls whether the parent changed
    (re-parented: the parent died) or ``owner_pid`` is gone, and kills this process."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            pr_set_pdeathsig = 1
            libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # no prctl: the watchdog alone
            pass

    def watch() -> None:
        while True:
            if os.getppid() != parent or not _alive(owner_pid):
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(WATCHDOG_PERIOD_S)

    # the parent may have died between fork and prctl: the watchdog's first check sees it
    threading.Thread(target=watch, name="sweep-parent-watchdog", daemon=True).start()


def _run_local(pending: Sequence[Cell], workers: int,
               on_done: Callable[[Cell, tuple[dict, float, float]], None],
               preload: Sequence[str] = ()) -> None:
    if "forkserver" in get_all_start_methods():
        ctx = get_context("forkserver")
        # imported once by the fork server (only the first pool of a process starts it)
        ctx.set_forkserver_preload(["torch", "experiments.sweep", *preload])
    else:
        ctx = get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_die_with,
                               initargs=(os.getpid(),))
    try:
        futures = {pool.submit(execute_cell, c.func, c.params): c for c in pending}
        remaining = set(futures)
        while remaining:
            done, remaining = wait(remaining, return_when=FIRST_COMPLETED)
            for fut in done:
                on_done(futures[fut], fut.result())
    except BaseException:  # Ctrl-C or a failed cell: stop the workers now, not after
        procs = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        raise
    pool.shutdown(wait=True)


def _run_ray(pending: Sequence[Cell], address: str | None,
             on_done: Callable[[Cell, tuple[dict, float, float]], None]) -> None:
    try:
        import ray
    except ModuleNotFoundError as exc:
        raise ValueError("executor 'ray': Ray is not installed; `pip install ray` "
                         "(or the project's [ray] extra), or use --executor local") from exc
    if not ray.is_initialized():
        if address in (None, "", "local"):
            ray.init(include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    prefixes = tuple({os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix)})
    path = [p for p in sys.path if p and os.path.isdir(p)  # not the interpreter's own
            and not os.path.realpath(p).startswith(prefixes)]
    if os.environ.get("PYTHONPATH"):
        path.append(os.environ["PYTHONPATH"])
    remote = ray.remote(num_cpus=1)(execute_cell).options(
        runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(path)}})
    refs = {remote.remote(c.func, c.params): c for c in pending}
    remaining = list(refs)
    try:
        while remaining:
            done, remaining = ray.wait(remaining, num_returns=1)
            for ref in done:
                on_done(refs[ref], ray.get(ref))
    except BaseException:
        for ref in remaining:
            ray.cancel(ref, force=True)
        raise


def run_cells(
    cells: Sequence[Cell],
    store: str | os.PathLike,
    *,
    executor: str = "local",
    workers: int = 2,
    address: str | None = None,
    progress: bool = True,
    desc: str = "cells",
    preload: Sequence[str] = (),
    code: str | None = None,
) -> SweepReport:
    """Run every cell whose result is not yet in ``store``; return all results.

    Results are written to ``store/<key>.json`` as they arrive, so an interrupted
    sweep (Ctrl-C, a crash, a lost node) keeps every finished cell and a restart
    computes only the others. The progress bar shows the time left. ``preload``:
    modules the local workers import once, before forking (start-up time only).
    ``code``: a version tag of the code that computes the cells (e.g. a hash of its
    sources), stored with each result; finished cells with another tag are recomputed.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor: expected one of {EXECUTORS}, got {executor!r}")
    check_count(workers, "workers")
    keys = [c.key for c in cells]
    if len(set(keys)) != len(keys):
        raise ValueError("cells: expected unique keys, got duplicates")
    store = Path(store)
    store.mkdir(parents=True, exist_ok=True)
    results = load_done(store, cells, code)
    skipped = [c.key for c in cells if c.key in results]
    pending = [c for c in cells if c.key not in results]
    computed: list[str] = []
    bar = tqdm(total=len(pending), desc=desc, unit="cell", disable=not progress or not pending)

    cpu = [0.0]

    def on_done(cell: Cell, outcome: tuple[dict, float, float]) -> None:
        result, seconds, cpu_s = outcome
        _write_atomic(_result_path(store, cell.key),
                      {"key": cell.key, "func": cell.func, "params": cell.params,
                       "result": result, "seconds": seconds, "cpu_seconds": cpu_s,
                       "code": code})
        cpu[0] += cpu_s
        results[cell.key] = result
        computed.append(cell.key)
        bar.update(1)

    try:
        if pending:
            if executor == "local":
                _run_local(pending, min(workers, len(pending)), on_done, preload)
            else:
                _run_ray(pending, address, on_done)
    finally:
        bar.close()
    return SweepReport(results={k: results[k] for k in keys}, computed=computed,
                       skipped=skipped, cpu_seconds=cpu[0])
