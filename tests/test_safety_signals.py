"""SIGTERM and SIGHUP end a bench command like Ctrl-C: laser off, devices closed, recorded.

The simulated laser mirrors its output to a state file (``[laser] sim_state_file``), so
the test, another process, sees whether the beam is on, as a photodiode on a real
bench would. The laser output stays as the bench file sets it until a capture needs light.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import h5py
import pytest
from session_helpers import RUN_N as N
from session_helpers import bench_toml, captures_complete, hil_command, laser_bench, run_args

from devices.visa import sim_laser_state
from hil.runs import read_captures
from hil.safety import Interrupted, exit_status, signals_as_interrupt


def wait_for(cond, proc: subprocess.Popen, what: str, timeout_s: float = 180.0) -> None:
    """Poll ``cond`` until true; fail if the process ends first or time runs out."""
    t0 = time.time()
    while not cond():
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            pytest.fail(f"the command ended before {what}: {err[-3000:]}")
        if time.time() - t0 > timeout_s:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def signal_when(proc: subprocess.Popen, signum: int, *waits: tuple, timeout_s: float = 120.0
                ) -> str:
    """Wait for each (condition, what) in turn, send ``signum``, reap; returns stderr.

    The process is killed and reaped whatever happens, so no test leaves one behind.
    """
    try:
        for cond, what in waits:
            wait_for(cond, proc, what)
        os.kill(proc.pid, signum)
        proc.wait(timeout=timeout_s)
        return proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def _emitting(state_file: Path) -> bool:
    try:
        return sim_laser_state(state_file)["emitting"]
    except (OSError, ValueError):
        return False


# ------------------------------------------------------------------ unit tests
@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_signal_raises_interrupted_and_handlers_are_restored(name):
    sig = getattr(signal, name)
    before = signal.getsignal(sig)
    with pytest.raises(KeyboardInterrupt) as info, signals_as_interrupt():
        os.kill(os.getpid(), sig)
        for _ in range(1_000_000):  # the handler runs at the next bytecode
            pass
    assert isinstance(info.value, Interrupted)
    assert info.value.signal_name == name
    assert exit_status(info.value) == 128 + sig
    assert signal.getsignal(sig) is before


def test_second_signal_during_shutdown_is_ignored():
    shut_down = False
    with pytest.raises(Interrupted), signals_as_interrupt():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1_000_000):
                pass
        finally:  # the laser-off path: a second signal must not cut it short
            os.kill(os.getpid(), signal.SIGHUP)
            for _ in range(100_000):
                pass
            shut_down = True
    assert shut_down
    assert exit_status(KeyboardInterrupt()) == 130


# --------------------------------------------------------------- the commands
@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP"])
def test_hil_run_signal_turns_laser_off_and_records_interrupted(tmp_path, decoder_file, name):
    state = tmp_path / "laser.json"
    bench = bench_toml(tmp_path / "bench.toml", laser_bench(state, output="off"))
    dec = decoder_file
    out = tmp_path / "run"
    h5 = out / "captures.h5"
    proc = subprocess.Popen(run_args(bench, dec, out), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    # the bench opens with the output off, as its file says; the run switches it on for
    # the first capture
    err = signal_when(proc, getattr(signal, name),
                      (lambda: _emitting(state), "the laser went on for the captures"),
                      (lambda: captures_complete(h5) >= 2, "two captures were written"))
    assert proc.returncode == 128 + getattr(signal, name), err[-3000:]
    assert "Traceback" not in err
    assert f"hil: interrupted ({name})" in err
    st = sim_laser_state(state)
    assert st["output"] == 0 and not st["emitting"]
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "interrupted"
    assert record["error"] == name
    assert record["sessions"][-1]["status"] == "interrupted"
    assert record["sessions"][-1]["laser"].startswith("switched on for the first capture")
    with h5py.File(h5, "r") as f:
        kept = int(f.attrs["n_complete"])
    assert 0 < kept < N
    if name == "SIGTERM":  # and the run resumes to the end
        done = subprocess.run(run_args(bench, dec, out, "--resume"), capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        assert read_captures(h5)["index"].tolist() == list(range(N))
        assert not sim_laser_state(state)["emitting"]


def test_hil_calibrate_sigterm_turns_laser_off(tmp_path):
    state = tmp_path / "laser.json"
    cfg = laser_bench(state, output="on", max_power_mW=20.0, setpoint=10.0)
    cfg["camera"] = {"backend": "sim", "shape": [256, 256], "reference_power_mW": 10.0}
    bench = bench_toml(tmp_path / "bench.toml", cfg)
    out = tmp_path / "cal"
    fast = {"dark": {"n_dark": 8, "n_pairs": 1, "exposures": [0.2, 0.7]},
            "geometry": {"grid": 4, "averaging": 1}, "wavefront": {"averaging": 1}}
    proc = subprocess.Popen(hil_command("calibrate", str(bench), "--out", str(out), "--quiet",
                                "--steps", "dark,geometry,lut,wavefront",
                                "--options", json.dumps(fast)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    err = signal_when(proc, signal.SIGTERM,
                      (lambda: (out / "calibration.h5").exists(),
                       "the first calibration step was saved"),
                      (lambda: _emitting(state), "the laser was on"))
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "Traceback" not in err
    assert "hil: interrupted (SIGTERM)" in err
    assert not sim_laser_state(state)["emitting"]


def test_run_leaves_the_laser_as_the_bench_file_sets_it_until_a_capture(tmp_path, decoder_file):
    """Nothing to capture (a finished run resumed): the output stays off."""
    from devices import open_bench
    from hil.session import RunConfig, run_session

    dec = decoder_file
    state = tmp_path / "laser.json"
    with open_bench(laser_bench(state, output="off")) as bench:
        assert not bench.laser.is_output_on()
        cfg = RunConfig(bench=bench, decoder=dec, out=tmp_path / "run", dataset="digits", n=2,
                        progress=False)
        assert run_session(cfg) == 0
        assert bench.laser.is_output_on()  # switched on for the captures, recorded
        record = json.loads((tmp_path / "run" / "run.json").read_text())
        assert record["sessions"][0]["laser"].startswith("switched on for the first capture")
        bench.laser.output_off()
        cfg.resume = True
        assert run_session(cfg) == 0
        assert not bench.laser.is_output_on()


def test_sigkill_leaves_the_beam_to_the_controller_watchdog(tmp_path, decoder_file):
    """SIGKILL cannot be handled: the output stays on, and only the watchdog ends it."""
    state = tmp_path / "laser.json"
    bench = bench_toml(tmp_path / "bench.toml", laser_bench(state, watchdog_s=0.5))
    dec = decoder_file
    out = tmp_path / "run"
    proc = subprocess.Popen(run_args(bench, dec, out), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    signal_when(proc, signal.SIGKILL,
                (lambda: _emitting(state), "the laser went on for the captures"),
                timeout_s=60)
    st = sim_laser_state(state)
    assert st["output"] == 1  # nothing in the process could switch it off
    assert st["watchdog_s"] == pytest.approx(0.5)
    later = sim_laser_state(state, now=st["last_keepalive"] + 0.5 + 1e-3)
    assert not later["emitting"]  # the controller's watchdog did, within watchdog_s
