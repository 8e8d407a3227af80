"""A real `hil run` subprocess killed with SIGKILL mid-run resumes with nothing lost."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import h5py
import numpy as np
import pytest
from session_helpers import RUN_N as N
from session_helpers import bench_toml, captures_complete, run_args

from hil.runs import read_captures


def _kill_after(cmd, h5, captures: int, timeout_s: float = 120.0) -> None:
    """Start ``cmd``; SIGKILL it once ``h5`` holds ``captures`` complete captures."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    t0 = time.time()
    try:
        while time.time() - t0 < timeout_s:
            if h5.exists() and captures_complete(h5) >= captures:
                break
            if proc.poll() is not None:
                pytest.fail(f"the run ended before it could be killed: "
                            f"{proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def _count(h5) -> int:
    with h5py.File(h5, "r") as f:
        return int(f.attrs["n_complete"])


@pytest.mark.slow
def test_sigkill_mid_run_then_resume(tmp_path, decoder_file):
    bench = bench_toml(tmp_path / "bench.toml")
    dec = decoder_file
    out = tmp_path / "run"
    h5 = out / "captures.h5"

    _kill_after(run_args(bench, dec, out), h5, captures=3)
    first = _count(h5)
    assert 0 < first < N
    _kill_after(run_args(bench, dec, out, "--resume"), h5, captures=first + 4)
    second = _count(h5)
    assert first <= second < N

    done = subprocess.run(run_args(bench, dec, out, "--resume"), capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    caps = read_captures(h5)
    assert caps["index"].tolist() == list(range(N))  # none lost, none duplicated
    assert caps["windows"].shape[0] == N and caps["patterns"].shape[0] == N

    # the same run without interruption records exactly the same captures
    ref = tmp_path / "ref"
    clean = subprocess.run(run_args(bench, dec, ref), capture_output=True, text=True,
                           timeout=240)
    assert clean.returncode == 0, clean.stderr[-2000:]
    ref_caps = read_captures(ref / "captures.h5")
    np.testing.assert_array_equal(caps["windows"], ref_caps["windows"])
    np.testing.assert_allclose(caps["patterns"], ref_caps["patterns"], rtol=1e-6)
