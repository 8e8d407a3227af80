"""The slmsuite adapter: frames equal slmsuite's, driver errors mapped, retries counted."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from session_helpers import FakeCameraDriver as FakeDriver

from devices import DeviceDisconnected, DeviceError, DeviceTimeout, SlmsuiteCamera, SlmsuiteSLM


def test_wrapped_slmsuite_camera_frame_equals_its_own():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from slmsuite.hardware.cameras.simulated import SimulatedCamera
        from slmsuite.hardware.slms.simulated import SimulatedSLM

        s = SimulatedSLM((64, 64), gpu=False, wav_um=0.633)
        c = SimulatedCamera(s, resolution=(64, 64), bitdepth=10, gain=50.0)
    slm, cam = SlmsuiteSLM(s), SlmsuiteCamera(c, pitch_um=4.0)
    assert cam.shape == (64, 64) and cam.dtype == np.uint16 and cam.pitch_um == (4.0, 4.0)
    slm.set_phase(np.random.default_rng(0).uniform(0, 7, (64, 64)).astype(np.float32))
    np.testing.assert_array_equal(cam.get_image(), c.get_image())
    assert cam.set_exposure(0.5) == pytest.approx(0.5) and c.exposure_s == pytest.approx(0.5)
    cam.flush()
    assert cam.info()["slmsuite_class"] == "SimulatedCamera"


def test_every_slmsuite_driver_is_listed():
    """Catches a slmsuite upgrade that adds a driver we do not know about."""
    import ast
    from pathlib import Path

    import slmsuite

    from devices.slmsuite_adapter import CAMERA_BACKENDS, NOT_FROM_A_BENCH_FILE, SLM_BACKENDS

    hw = Path(slmsuite.__file__).parent / "hardware"
    for sub, table, bases in (("slms", SLM_BACKENDS, {"SLM", "ScreenMirrored"}),
                              ("cameras", CAMERA_BACKENDS, {"Camera"})):
        for f in (hw / sub).glob("*.py"):
            for node in ast.parse(f.read_text(encoding="utf-8")).body:
                if isinstance(node, ast.ClassDef) and {
                        getattr(b, "id", "") for b in node.bases} & bases:
                    assert node.name in table or node.name in NOT_FROM_A_BENCH_FILE, node.name
                    if node.name in table:
                        assert table[node.name].module.endswith(f"{sub}.{f.stem}")


def test_driver_errors_are_mapped():
    cam = SlmsuiteCamera(FakeDriver([RuntimeError("USB hiccup"), RuntimeError("again")]))
    assert cam.wrapped.capture_attempts == 1  # retries are ours
    assert (cam.get_image() == 7).all() and cam.last_capture_info.dropped_frames == 2
    cam = SlmsuiteCamera(FakeDriver([TimeoutError("grab timed out")]))
    with pytest.raises(DeviceTimeout, match="no frame within"):
        cam.get_image(timeout_s=0.1)
    cam = SlmsuiteCamera(FakeDriver([RuntimeError("x")] * 3), capture_attempts=3)
    with pytest.raises(DeviceError, match="3 frames dropped"):
        cam.get_image()
    cam = SlmsuiteCamera(FakeDriver([ConnectionResetError("gone")]))
    with pytest.raises(DeviceDisconnected):
        cam.get_image()
    with pytest.raises(DeviceDisconnected, match="disconnected earlier"):
        cam.get_image()
    cam.close()
    assert cam.wrapped.closed


def test_watchdog_gives_up_on_a_hung_driver():
    import time

    cam = SlmsuiteCamera(FakeDriver([0.6]), watchdog=True)
    t0 = time.perf_counter()
    with pytest.raises(DeviceTimeout, match="watchdog"):
        cam.get_image(timeout_s=0.05)
    assert time.perf_counter() - t0 < 0.4
    with pytest.raises(DeviceTimeout, match="still hung"):
        cam.get_image(timeout_s=0.05)
    time.sleep(0.7)  # the driver call returns eventually
    assert (cam.get_image(timeout_s=0.05) == 7).all()
    cam.close()


@pytest.mark.slow
def test_benchmark_smoke(tmp_path):
    """The benchmark runs and both sides compute the same thing (no timing asserted)."""
    from experiments.bench_devices import run

    r = run(tmp_path, quick=True)
    assert (tmp_path / "bench_devices.json").is_file()
    assert r["slm_set_phase"]["same_display"] and r["camera_get_image"]["same_frame"]


# ---- bounded time (issue 8, part 5) ----------------------------------------------------------

_STUCK_DRIVER = '''
import threading, sys
import numpy as np
from devices import DeviceTimeout, SlmsuiteCamera

class Stuck:
    """A driver whose get_image never returns and ignores its time-out."""
    shape, bitdepth, pitch_um, name = (4, 6), 8, None, "stuck"
    exposure_s, capture_attempts = 0.01, 5
    def get_image(self, timeout_s=1, averaging=None, hdr=None):
        threading.Event().wait()  # for ever
    def set_exposure(self, s):
        self.exposure_s = s
    def flush(self, timeout_s=1):
        pass
    def close(self):
        pass

cam = SlmsuiteCamera(Stuck(), watchdog=True)
try:
    cam.get_image(timeout_s=0.05)
except DeviceTimeout as exc:
    print("DeviceTimeout:", exc, flush=True)
cam.close()
'''


def test_a_hung_driver_thread_does_not_keep_the_process_alive():
    """After the watchdog's DeviceTimeout the process exits (the hung call is abandoned).

    The worker used to be a ThreadPoolExecutor thread, which the interpreter joins at exit:
    the process waited for the driver for ever.
    """
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", _STUCK_DRIVER], capture_output=True, text=True,
                       timeout=120)  # generous: the exit itself takes well under a second
    assert r.returncode == 0, r.stderr
    assert "DeviceTimeout: camera 'stuck': no frame" in r.stdout and "watchdog" in r.stdout


def test_watchdog_deadline_is_exposure_plus_a_bounded_margin():
    from devices import MAX_EXPOSURE_S, MAX_TIMEOUT_S
    from devices.camera import MAX_GRACE_S

    drv = FakeDriver([])
    cam = SlmsuiteCamera(drv, watchdog=True)
    assert cam.frame_deadline_s(0.05) == pytest.approx(0.01 + 0.05 + 0.05)
    assert cam.frame_deadline_s(30.0) == pytest.approx(0.01 + 30.0 + MAX_GRACE_S)
    drv.exposure_s = 1e9  # set behind our back: the wait stays bounded
    assert cam.frame_deadline_s(1e9) == pytest.approx(MAX_EXPOSURE_S + MAX_TIMEOUT_S
                                                      + MAX_GRACE_S)


def test_upper_limits_on_exposure_timeouts_and_settle_time():
    from devices import MAX_EXPOSURE_S, MAX_SETTLE_S, MAX_TIMEOUT_S

    cam = SlmsuiteCamera(FakeDriver([]))
    assert cam.set_exposure(MAX_EXPOSURE_S) == MAX_EXPOSURE_S  # the limit itself is allowed
    with pytest.raises(ValueError, match=r"exposure_s: expected at most 60 s \(upper limit\), "
                       r"got 1000000000.0"):
        cam.set_exposure(1e9)
    assert cam.wrapped.exposure_s == MAX_EXPOSURE_S  # nothing was sent
    with pytest.raises(ValueError, match="timeout_s: expected at most 60 s"):
        cam.get_image(timeout_s=MAX_TIMEOUT_S * 2)
    with pytest.raises(ValueError, match="timeout_s: expected at most 60 s"):
        cam.flush(timeout_s=1e9)
    with pytest.raises(ValueError, match="timeout_s: expected at most 60 s"):
        SlmsuiteCamera(FakeDriver([]), timeout_s=1e9)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from slmsuite.hardware.slms.simulated import SimulatedSLM

        s = SimulatedSLM((16, 16), gpu=False, wav_um=0.633)
    with pytest.raises(ValueError, match="settle_time_s: expected at most 10 s"):
        SlmsuiteSLM(s, settle_time_s=1e9)
    slm = SlmsuiteSLM(s, settle_time_s=0.0)
    with pytest.raises(ValueError, match="settle: expected at most 10 s"):
        slm.set_phase(np.zeros((16, 16), np.float32), settle=MAX_SETTLE_S + 1)


@pytest.mark.parametrize("section,key,value,limit", [
    ("camera", "exposure_s", 1e9, "60 s"),
    ("camera", "timeout_s", 61.0, "60 s"),
    ("camera", "frame_latency_s", 1e9, "10 s"),
    ("camera", "capture_attempts", 10**6, "100"),
    ("slm", "settle_time_s", 11.0, "10 s"),
    ("laser", "timeout_s", 1e9, "60 s"),
    ("power_meter", "timeout_s", 1e9, "60 s"),
])
def test_bench_schema_refuses_values_above_the_limit(section, key, value, limit):
    from devices.config import load_config
    from devices.errors import ConfigError

    cfg = {"slm": {"backend": "sim"}, "camera": {"backend": "sim"}}
    cfg.setdefault(section, {"backend": "sim"})[key] = value
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    msg = str(err.value)
    assert msg.startswith(f"{section}.{key}: expected ") and f"at most {limit} (upper" in msg
    assert repr(value) in msg


@pytest.mark.parametrize("kind", ["dir", "fifo", "big"])
def test_bench_file_must_be_a_small_regular_file(tmp_path, kind):
    """A folder, a FIFO or an oversized file is refused in one ConfigError naming it.

    (``/dev/zero`` is in tests/test_cli_errors.py, in a subprocess: read before, it
    filled the memory.) The load runs in a daemon thread so that a blocking open of the
    FIFO, as before, fails the test instead of hanging it.
    """
    import os
    import threading

    from devices.config import MAX_BENCH_FILE_BYTES, load_config
    from devices.errors import ConfigError

    path = {"dir": tmp_path / "b.toml", "fifo": tmp_path / "f.toml",
            "big": tmp_path / "big.toml"}[kind]
    if kind == "dir":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.write_text("#" * (MAX_BENCH_FILE_BYTES + 1))
    box = {}

    def load():
        try:
            load_config(path)
        except Exception as exc:  # noqa: BLE001 - inspected below
            box["error"] = exc

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(60)  # generous: the refusal is immediate
    assert not worker.is_alive(), "load_config blocked on the bench file"
    assert isinstance(box.get("error"), ConfigError), box
    assert str(box["error"]).startswith(f"bench file '{path}'")
