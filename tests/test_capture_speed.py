"""Pipelined captures (calibration.imaging.BenchImager.capture_stream): nothing lost or
reordered, faults in the middle of a batch included; SLM refresh and camera frame timing."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from session_helpers import small_bench

from calibration.imaging import BenchImager, ImagingConfig
from devices import open_bench
from devices.errors import DeviceTimeout, FrameDropped


def _images(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random((n, 32, 32), dtype=np.float32)


def _reference(images: np.ndarray) -> np.ndarray:
    """Serial frames on a fault-free copy of the bench (noise off: frames are a pure
    function of what the SLM shows)."""
    with open_bench(small_bench()) as bench:
        imager = BenchImager(bench, config=ImagingConfig(retries=0), pipelined=False)
        return np.stack([fr for _, fr, _ in imager.capture_stream(images)])


def _inject(camera, faults: dict[int, type], lost_s: float = 0.0) -> list[int]:
    """Make the camera's n-th hardware frame request from now (1-based) raise ``faults[n]``,
    after ``lost_s`` (the time a lost frame costs); returns the requests, as they come."""
    calls = []

    def request():
        calls.append(1)
        exc = faults.get(len(calls))
        if exc is not None:
            time.sleep(lost_s)
            raise exc("injected")

    camera.frame_request_hook = request
    return calls


def test_pipelined_frames_match_serial_with_a_drop_and_a_timeout_mid_batch():
    images = _images(6)
    ref = _reference(images)
    # every image shows different patterns: a frame that went to the wrong image differs
    assert all(not np.array_equal(ref[i], ref[i + 1]) for i in range(len(ref) - 1))
    with open_bench(small_bench()) as bench:
        imager = BenchImager(bench, config=ImagingConfig(retries=2))
        # 5th request dropped (retried by the camera); the 9th, image 3's second frame,
        # times out: image 3 is taken again from its first frame
        calls = _inject(bench.camera, {5: FrameDropped, 9: DeviceTimeout})
        got = list(imager.capture_stream(images))
    assert [i for i, _, _ in got] == list(range(6))
    for i, frames, infos in got:
        np.testing.assert_array_equal(frames, ref[i], err_msg=f"image {i}")
        assert len(infos) == imager.frames_per_image
    assert len(calls) == 2 * 6 + 3  # the drop, the time-out, image 3's first frame again
    assert sum(inf["dropped_frames"] for _, _, infos in got for inf in infos) == 1


def test_pipelined_stream_resumes_from_start_and_stops_on_exhausted_retries():
    images = _images(4, seed=1)
    ref = _reference(images)
    with open_bench(small_bench()) as bench:
        imager = BenchImager(bench, config=ImagingConfig(retries=0))
        got = list(imager.capture_stream(images, start=2))
        assert [i for i, _, _ in got] == [2, 3]
        np.testing.assert_array_equal(got[0][1], ref[2])
        _inject(bench.camera, {3: DeviceTimeout})  # image 1's first frame, no retries
        seen = []
        with pytest.raises(DeviceTimeout):
            for i, frames, _ in imager.capture_stream(images):
                seen.append(i)
                np.testing.assert_array_equal(frames, ref[i])
        assert seen == [0]


def test_windows_give_the_patterns_of_the_full_frames():
    images = _images(3, seed=2)
    with open_bench(small_bench(noise=True)) as bench:
        imager = BenchImager(bench)
        frames = np.stack([fr for _, fr, _ in imager.capture_stream(images)])
        win = np.stack([imager.windows(fr) for fr in frames])
        assert win.dtype == frames.dtype and win.shape[:2] == (3, imager.channels)
        assert win[0].size < frames[0].size / 5
        full = imager.frames_to_patterns(frames)
        # the same samples; OpenCV rounds sub-pixel positions to 1/32 px, in other coordinates
        np.testing.assert_allclose(imager.windows_to_patterns(win), full, rtol=0,
                                   atol=1e-4 * float(full.max()))


def test_sim_slm_writes_land_on_the_refresh_and_camera_keeps_its_frame_rate():
    cfg = small_bench(frame_rate_hz=50.0)
    cfg["slm"]["refresh_hz"] = 40.0
    with open_bench(cfg) as bench:
        slm, cam = bench.slm, bench.camera
        assert slm.refresh_hz == 40.0 and cam.frame_rate_hz == 50.0
        phase = np.zeros(slm.shape, np.float32)
        slm.set_phase(phase, settle=False)
        epoch, period = slm.refresh_epoch, 1 / 40.0
        assert epoch is not None and epoch <= slm.last_write_time
        for _ in range(3):
            t_call = time.perf_counter()
            slm.set_phase(phase, settle=False)
            # it lands on the first refresh after the call (lower bound only: a busy
            # machine may sleep longer), never at once
            next_tick = epoch + np.ceil((t_call - epoch) / period) * period
            assert slm.last_write_time >= next_tick - 1e-4
            assert slm.last_write_time > t_call
        cam.get_image()
        t0 = time.perf_counter()
        for _ in range(3):
            cam.get_image()
        assert time.perf_counter() - t0 >= 3 / 50.0 - 1e-3


def test_capture_settings_refused_where_the_driver_offers_none():
    from devices.errors import ConfigError

    with open_bench(small_bench()) as bench:
        with pytest.raises(ConfigError, match=r"camera\.gain: .*offers no gain"):
            bench.camera.configure_capture(gain=2.0)
        with pytest.raises(ConfigError, match=r"camera\.trigger"):
            bench.camera.configure_capture(trigger="hardware")
    cfg = small_bench()
    cfg["camera"]["roi"] = [0, 64, 0, 64]
    with pytest.raises(ConfigError, match=r"camera\.roi: the sim driver offers no roi"):
        open_bench(cfg)


def _timed_bench() -> dict:
    """The realistic timing of the benchmark: SLM 60 Hz, settle 10 ms, camera 100 fps."""
    cfg = small_bench(frame_rate_hz=100.0)
    cfg["slm"].update(refresh_hz=60.0, settle_time_s=0.01)
    return cfg


@pytest.mark.parametrize("signal", [True, False], ids=["camera-signals", "timing-estimate"])
def test_early_writes_with_frame_timing_keep_every_frame_its_own(signal):
    """The next pattern is written while the frame is read out (the camera says the
    exposure is over, or its frame timing says so); a dropped frame in the middle is
    taken again, never exposed on the next pattern; every frame settled."""
    images = _images(4, seed=3)
    ref = _reference(images)
    with open_bench(_timed_bench()) as bench:
        if not signal:
            bench.camera.signals_exposure_end = False
        imager = BenchImager(bench, config=ImagingConfig(retries=0))
        writes = []
        bench.slm.write_hook = lambda display: writes.append(1)
        # the lost frame costs two frame periods: its re-request exposes well after the
        # end the frame timing predicted
        calls = _inject(bench.camera, {3: FrameDropped}, lost_s=0.02)
        got = list(imager.capture_stream(images))
    assert [i for i, _, _ in got] == [0, 1, 2, 3]
    for i, frames, _ in got:
        np.testing.assert_array_equal(frames, ref[i], err_msg=f"image {i}")
    # one write per frame; with a timing estimate, the dropped frame's pattern is shown
    # again for the re-take, then the next pattern again
    assert len(writes) == 8 + (0 if signal else 2)
    assert len(calls) == 9 + (0 if signal else 1)


def test_roi_goes_to_the_slmsuite_driver_and_gain_is_refused():
    import warnings

    from devices.errors import ConfigError
    from devices.simulated import SimSLM
    from devices.slmsuite_adapter import SlmsuiteCamera

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from slmsuite.hardware.cameras.simulated import SimulatedCamera

        slm = SimSLM(shape=(64, 64))
        cam = SlmsuiteCamera(SimulatedCamera(slm.wrapped, resolution=(64, 48)))
    assert cam.shape == (48, 64)
    assert cam.configure_capture(roi=[8, 32, 4, 16]) == {"roi": [8, 32, 4, 16]}
    assert cam.shape == (16, 32) and cam.wrapped.woi == (8, 32, 4, 16)
    assert cam.info()["roi"] == [8, 32, 4, 16]  # part of the identity calibrations check
    with pytest.raises(ConfigError, match=r"camera\.gain: .*SimulatedCamera.*offers no gain"):
        cam.configure_capture(gain=1.5)
    with pytest.raises(ConfigError, match=r"camera\.roi: expected \[x0, width, y0, height\]"):
        cam.configure_capture(roi=[0, 0, 0, 16])


def test_averaged_captures_never_write_the_next_pattern_early():
    """With averaging, the exposure that ends first is not the last: the next pattern
    waits for all of them (frames equal to serial ones)."""
    images = _images(3, seed=4)
    with open_bench(small_bench()) as bench:
        serial = BenchImager(bench, config=ImagingConfig(averaging=3), pipelined=False)
        ref = [fr for _, fr, _ in serial.capture_stream(images)]
        imager = BenchImager(bench, config=ImagingConfig(averaging=3))
        for (i, frames, _), want in zip(imager.capture_stream(images), ref, strict=True):
            np.testing.assert_array_equal(frames, want, err_msg=f"image {i}")


def test_the_next_pattern_is_written_while_the_frame_renders():
    """The simulated camera renders a frame from the SLM as it was when the exposure
    started, during its readout: the pipelined loop writes the next pattern meanwhile
    (the old camera rendered inside the exposure, so the SLM waited for every render).
    The render here goes on only once the next pattern is on the SLM, or after 5 s."""
    images = _images(3, seed=5)
    ref = _reference(images)
    with open_bench(_timed_bench()) as bench:
        cam, slm = bench.camera, bench.slm
        imager = BenchImager(bench, config=ImagingConfig(retries=0))
        n_frames = len(images) * imager.frames_per_image
        writes = {"n": 0}
        wrote = threading.Condition()

        def counted(display):
            with wrote:
                writes["n"] += 1
                wrote.notify_all()

        slm.write_hook = counted
        take, render = cam.exposure_state, cam.render_frame
        at_start, overlapped = [], []

        def exposure_state():
            at_start.append(writes["n"])
            return take()

        def waiting_render(*args):
            if len(at_start) < n_frames:  # the last frame has no next pattern
                with wrote:
                    overlapped.append(wrote.wait_for(lambda: writes["n"] > at_start[-1],
                                                     timeout=5.0))
            return render(*args)

        cam.exposure_state, cam.render_frame = exposure_state, waiting_render
        got = list(imager.capture_stream(images))
    assert overlapped == [True] * (n_frames - 1)
    for i, frames, _ in got:
        np.testing.assert_array_equal(frames, ref[i], err_msg=f"image {i}")
