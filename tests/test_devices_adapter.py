"""The slmsuite adapter: frames equal slmsuite's, driver errors mapped, retries counted."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

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


class FakeDriver:
    """Just enough of a slmsuite camera to script failures."""

    shape = (4, 6)
    bitdepth = 8
    pitch_um = None
    name = "fake"

    def __init__(self, script):
        self.script = list(script)
        self.exposure_s = 0.01
        self.capture_attempts = 5
        self.closed = False

    def get_image(self, timeout_s=1, averaging=None, hdr=None):
        step = self.script.pop(0) if self.script else "ok"
        if isinstance(step, float):  # hang for this long, ignoring timeout_s
            import time

            time.sleep(step)
            step = "ok"
        if step != "ok":
            raise step
        return np.full(self.shape, 7, np.uint8)

    def set_exposure(self, s):
        self.exposure_s = s

    def flush(self, timeout_s=1):
        pass

    def close(self):
        self.closed = True


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
    assert r["slm_set_phase"]["ours_hz"] > 0 and r["camera_get_image"]["direct_hz"] > 0
