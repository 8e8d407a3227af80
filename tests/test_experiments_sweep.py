"""Tests for experiments.sweep: resumable cell grids, identical results whatever the
executor or the number of workers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from experiments.sweep import Cell, make_key, run_cells


def square_cell(x: int, seed: int) -> dict:
    """A cheap cell with a seeded torch draw (importable by spawned workers)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return {"x2": x * x, "noise": float(torch.rand(3, generator=g).sum())}


def torch_cell(seed: int) -> dict:
    """A cell whose result depends on float reductions (matmul, SVD)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    a = torch.rand(64, 300, generator=g)
    return {"gram_trace": float((a @ a.T).trace()), "s0": float(torch.linalg.svdvals(a)[0]),
            "threads": torch.get_num_threads()}


def failing_cell() -> dict:
    raise RuntimeError("boom")


def _cells(n: int = 4) -> list[Cell]:
    out = []
    for i in range(n):
        p = {"x": i, "seed": 10 + i}
        out.append(Cell(make_key("sq", f"x{i}", p), f"{__name__}:square_cell", p))
    return out


def test_make_key_ignores_private_params_and_is_stable():
    a = make_key("k", "lab el", {"a": 1, "_data_dir": "/x"})
    b = make_key("k", "lab el", {"a": 1, "_data_dir": "/y"})
    c = make_key("k", "lab el", {"a": 2, "_data_dir": "/x"})
    assert a == b != c
    assert " " not in a and a.startswith("k-lab_el-")


def test_run_then_resume_skips_done_cells(tmp_path):
    cells = _cells(4)
    first = run_cells(cells, tmp_path, workers=2, progress=False)
    assert sorted(first.computed) == sorted(c.key for c in cells) and not first.skipped
    assert first.results[cells[2].key]["x2"] == 4
    for c in cells:  # one file per cell, with its parameters
        saved = json.loads((tmp_path / f"{c.key}.json").read_text())
        assert saved["params"] == c.params and saved["func"] == c.func
    os.unlink(tmp_path / f"{cells[1].key}.json")
    (tmp_path / f"{cells[3].key}.json").write_text("{truncated")  # a torn write
    again = run_cells(cells, tmp_path, workers=2, progress=False)
    assert sorted(again.computed) == sorted([cells[1].key, cells[3].key])
    assert len(again.skipped) == 2
    assert again.results == first.results


def test_cells_made_by_other_code_are_recomputed(tmp_path):
    cells = _cells(2)
    run_cells(cells, tmp_path, workers=1, progress=False, code="v1")
    same = run_cells(cells, tmp_path, workers=1, progress=False, code="v1")
    assert not same.computed and len(same.skipped) == 2
    other = run_cells(cells, tmp_path, workers=1, progress=False, code="v2")
    assert len(other.computed) == 2 and not other.skipped


def test_one_and_two_workers_give_identical_results(tmp_path):
    cells = [Cell(make_key("t", f"s{s}", {"seed": s}), f"{__name__}:torch_cell", {"seed": s})
             for s in range(3)]
    one = run_cells(cells, tmp_path / "one", workers=1, progress=False)
    two = run_cells(cells, tmp_path / "two", workers=2, progress=False)
    assert one.results == two.results
    assert all(r["threads"] == 1 for r in one.results.values())


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="executor"):
        run_cells(_cells(1), tmp_path, executor="dask")
    with pytest.raises(ValueError, match="workers"):
        run_cells(_cells(1), tmp_path, workers=0)
    dup = _cells(1) * 2
    with pytest.raises(ValueError, match="unique"):
        run_cells(dup, tmp_path)


def test_failing_cell_raises_and_keeps_finished_ones(tmp_path):
    cells = _cells(2) + [Cell("bad", f"{__name__}:failing_cell", {})]
    with pytest.raises(RuntimeError, match="boom"):
        run_cells(cells, tmp_path, workers=1, progress=False)
    assert not (tmp_path / "bad.json").exists()
    assert not list(tmp_path.glob("*.tmp"))


def test_ray_executor_matches_local(tmp_path):
    ray = pytest.importorskip("ray")
    cells = [Cell(make_key("t", f"s{s}", {"seed": s}), f"{__name__}:torch_cell", {"seed": s})
             for s in range(3)]
    local = run_cells(cells, tmp_path / "local", workers=2, progress=False)
    try:
        remote = run_cells(cells, tmp_path / "ray", executor="ray", address="local",
                           progress=False)
    finally:
        ray.shutdown()
    assert remote.results == local.results


def test_ray_missing_gives_a_clear_error(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ModuleNotFoundError("No module named 'ray'", name="ray")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ValueError, match="pip install ray"):
        run_cells(_cells(1), tmp_path, executor="ray", progress=False)


def long_cell(pid_dir: str, index: int) -> dict:
    """A cell that records its worker's pid, then runs far longer than any test waits."""
    import time

    Path(pid_dir, f"{index}.pid").write_text(str(os.getpid()))
    end = time.monotonic() + 120
    while time.monotonic() < end:
        time.sleep(0.05)
    return {"index": index}


def _gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone between open() and read()
        return True


def _poll(condition, deadline_s: float, what: str) -> None:
    import time

    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline_s} s waiting for {what}")
        time.sleep(0.05)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process states from /proc")
def test_workers_die_when_the_sweep_is_killed(tmp_path):
    """SIGKILL of the sweep's process (no cleanup runs) must take its workers with it."""
    import signal
    import subprocess
    import sys

    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    here = str(Path(__file__).resolve().parent)
    script = "\n".join([
        f"import sys; sys.path.insert(0, {here!r})",
        "from experiments.sweep import Cell, run_cells",
        f"cells = [Cell(f'long{{i}}', '{__name__}:long_cell',"
        f" {{'pid_dir': {str(pid_dir)!r}, 'index': i}}) for i in range(2)]",
        f"run_cells(cells, {str(tmp_path / 'store')!r}, workers=2, progress=False)",
    ])
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        _poll(lambda: len(list(pid_dir.glob("*.pid"))) == 2 or proc.poll() is not None,
              120, "both workers to start")
        assert proc.poll() is None, "the sweep ended before its workers started"
        workers = [int(p.read_text()) for p in pid_dir.glob("*.pid")]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _poll(lambda: all(_gone(w) for w in workers), 20, f"workers {workers} to exit")
    finally:
        if proc.poll() is None:
            proc.kill()
        for p in pid_dir.glob("*.pid"):  # never leave a worker behind, even on failure
            pid = int(p.read_text())
            if not _gone(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:  # exited after the check
                    pass
