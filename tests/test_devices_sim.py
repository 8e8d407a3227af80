"""The simulated bench: slmsuite equality, photons and laser coupling, flaws, faults, settling,
the exposure snapshot (a frame shows the SLM as it was when its exposure started)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from session_helpers import tiny_sim_bench

from devices import (
    DeviceDisconnected,
    DeviceError,
    DeviceTimeout,
    open_bench,
)
from devices.flaws import draw_flaws


def bench_dict(seed=1, laser=False, **camera):
    return tiny_sim_bench(seed, laser, **camera)


def blaze(slm, kx, ky):
    rows, cols = slm.shape
    x = (np.arange(cols) - (cols - 1) / 2) * slm.pitch_um[0] / slm.wav_um
    y = (np.arange(rows) - (rows - 1) / 2) * slm.pitch_um[1] / slm.wav_um
    return (2 * np.pi * (kx * x[None, :] + ky * y[:, None])).astype(np.float32)


def test_frame_equals_slmsuite_frame_noise_off():
    with open_bench(bench_dict()) as b:
        rng = np.random.default_rng(0)
        b.slm.set_phase(rng.uniform(0, 2 * np.pi, (16, 16)).astype(np.float32))
        ours = b.camera.get_image()
        theirs = b.camera.wrapped.get_image()
        assert ours.dtype == theirs.dtype == np.uint16
        np.testing.assert_array_equal(ours, theirs)
        assert ours.shape == (96, 128) and ours.max() > 0


def test_capture_info_and_averaging():
    with open_bench(bench_dict(noise=True)) as b:
        b.camera.set_exposure(2e-3)
        t0 = time.time()
        f = b.camera.get_image(averaging=4)
        info = b.camera.last_capture_info
        assert f.dtype == np.uint16
        assert info.averaging == 4 and info.exposure_s == pytest.approx(2e-3)
        # stamped when this capture's last frame arrived
        assert info.device_id == "sim:camera:seed1" and t0 <= info.timestamp <= time.time()
        with pytest.raises(ValueError, match="averaging"):
            b.camera.get_image(averaging=0)
        with pytest.raises(ValueError, match="exposure_s"):
            b.camera.set_exposure(-1)


def test_geometry_truth_predicts_where_a_grating_lands():
    with open_bench(bench_dict(seed=4, photons_per_s=2e7)) as b:
        M, off = b.truth["camera_affine_M"], b.truth["camera_affine_b"]
        ang = np.degrees(np.arctan2(M[1, 0], M[0, 0]))
        assert ang == pytest.approx(b.truth["camera_rotation_deg"], abs=1e-6)
        for k in [(0.0, 0.0), (0.01, 0.0), (0.0, -0.008)]:
            b.slm.set_phase(blaze(b.slm, *k))
            f = b.camera.get_image().astype(float)
            f[f < 0.2 * f.max()] = 0
            yy, xx = np.indices(f.shape)
            c = np.array([(f * xx).sum(), (f * yy).sum()]) / f.sum()
            pred = (M @ np.array([[k[0]], [k[1]]]) + off).ravel()
            assert np.hypot(*(c - pred)) < 2.5, (k, c, pred)


def test_flaws_reproducible_and_in_range():
    assert draw_flaws(7) == draw_flaws(7)
    assert draw_flaws(7) != draw_flaws(8)
    for s in range(20):
        f = draw_flaws(s)
        assert abs(f.rotation_deg) <= 5 and 0.9 <= f.scale <= 1.1
        assert all(abs(o) <= 8 for o in f.offset_px)
        assert 0.9 <= f.gamma_span <= 1.1 and 0.8 <= f.gamma_power <= 1.25
        assert set(f.zernike_rad) == {4, 5, 6, 7, 8}
        r = f.phase_response_rad(8)
        assert r[-1] == 0 and np.all(np.diff(r) < 0)  # delay falls with grey level


def test_truth_contents_and_same_seed_same_frames():
    keys = {"camera_rotation_deg", "camera_scale", "camera_offset_px", "camera_affine_M",
            "camera_affine_b", "slm_phase_response_rad", "slm_gamma_span", "slm_gamma_power",
            "source_waist_px", "source_center_px", "zernike_noll_rad", "dark_level_counts",
            "gain_counts_per_electron", "seed", "focal_length_mm_true"}
    frames = []
    for _ in range(2):
        with open_bench(bench_dict(seed=3, noise=True, zero_order_fraction=0.05)) as b:
            assert keys <= set(b.truth)
            assert b.truth["slm_phase_response_rad"].shape == (256,)
            b.slm.set_phase(blaze(b.slm, 0.01, 0.0))
            frames.append(b.camera.get_image())
            assert not np.array_equal(frames[-1], b.camera.get_image())  # noise is live
    np.testing.assert_array_equal(frames[0], frames[1])
    with open_bench({**bench_dict(seed=3), "flaws": False}) as b:
        assert b.truth["camera_rotation_deg"] == 0 and b.truth["slm_gamma_span"] == 1


def test_slm_flaws_reach_slmsuite():
    with open_bench(bench_dict(seed=2)) as b:
        w = b.slm.wrapped
        g = np.asarray(w.gamma_sim)
        np.testing.assert_allclose(2 * np.pi * (g[-1] - g), b.truth["slm_phase_response_rad"])
        amp = np.asarray(w.source["amplitude_sim"])
        iy, ix = np.unravel_index(amp.argmax(), amp.shape)
        cx, cy = b.truth["source_center_px"]
        assert abs(ix - (63.5 + cx)) <= 1 and abs(iy - (63.5 + cy)) <= 1


def test_laser_power_scales_counts_and_off_gives_dark():
    with open_bench(bench_dict(laser=True, photons_per_s=1e7)) as b:
        b.slm.set_phase(blaze(b.slm, 0.004, 0.002))
        frame = b.camera.get_image()
        assert 0 < frame.max() < 4095
        full, gain_full = frame.astype(float).sum(), b.camera.wrapped.gain
        b.laser.set_power_mW(5.0)
        half = b.camera.get_image().astype(float).sum()
        assert b.camera.wrapped.gain / gain_full == pytest.approx(0.5, rel=1e-9)
        assert half / full == pytest.approx(0.5, rel=0.05)  # integer counts truncate
        b.laser.output_off()
        assert b.camera.get_image().max() == 0
    with open_bench(bench_dict(laser=True, noise=True)) as b:
        b.laser.output_off()
        dark = b.camera.get_image().astype(float)
        assert dark.mean() == pytest.approx(b.truth["dark_level_counts"], abs=1.0)
        assert dark.std() > 0  # read noise


def test_shot_noise_follows_poisson():
    with open_bench(bench_dict(noise=True, read_noise_e=0.0, photons_per_s=3e9)) as b:
        b.slm.set_phase(np.random.default_rng(5).uniform(0, 6.3, (32, 32)).astype(np.float32))
        a = b.camera.get_image().astype(float)
        c = b.camera.get_image().astype(float)
        gain = b.truth["gain_counts_per_electron"]
        m = (a + c) / 2 - b.truth["dark_level_counts"]
        sel = (m > 200) & (m < 3000)
        assert sel.sum() > 100
        var = ((a - c)[sel] ** 2 / 2).mean()
        assert var / (gain * m[sel].mean()) == pytest.approx(1.0, rel=0.25)


def test_zero_order_leakage_adds_the_flat_spot():
    with open_bench(bench_dict(zero_order_fraction=0.3, photons_per_s=1e8)) as b:
        b.slm.set_phase(blaze(b.slm, 0.01, 0.0))
        f = b.camera.get_image().astype(float)
        x0, y0 = b.truth["camera_affine_b"].ravel()
        assert f[int(round(y0)) - 2:int(round(y0)) + 3, int(round(x0)) - 2:int(round(x0)) + 3
                 ].max() > 0.3 * f.max()


def test_dropped_frames_are_retried():
    with open_bench(bench_dict(drop_probability=0.5, capture_attempts=30)) as b:
        drops = 0
        for _ in range(6):
            b.camera.get_image()
            drops += b.camera.last_capture_info.dropped_frames
        assert drops > 0 and b.camera.frames_dropped_total == drops
    with open_bench(bench_dict(drop_probability=0.99, capture_attempts=2)) as b:
        with pytest.raises(DeviceError, match="dropped"):
            b.camera.get_image()


def test_timeout_is_a_clear_error():
    with open_bench(bench_dict(timeout_probability=0.999)) as b:
        with pytest.raises(DeviceTimeout, match=r"no frame within 0\.02 s") as info:
            b.camera.get_image(timeout_s=0.02)
        assert "camera 'camera'" in str(info.value)
        assert isinstance(info.value, TimeoutError)


def test_disconnect_is_one_exception_type_and_sticks():
    with open_bench(bench_dict(disconnect_after_frames=2)) as b:
        b.camera.get_image()
        b.camera.get_image()
        for call in (b.camera.get_image, b.camera.flush, b.camera.get_exposure):
            with pytest.raises(DeviceDisconnected):
                call()
        assert issubclass(DeviceDisconnected, ConnectionError)


def test_frames_taken_before_the_slm_settles_see_the_old_pattern():
    d = bench_dict()
    d["slm"]["settle_time_s"] = 0.3
    with open_bench(d) as b:
        b.slm.set_phase(np.zeros((128, 128), np.float32))
        dark_pattern = b.camera.get_image()
        b.slm.set_phase(blaze(b.slm, 0.01, 0.0), settle=False)
        early = b.camera.get_image()
        b.slm.last_write_time -= 1.0  # pretend the settle time has passed
        settled = b.camera.get_image()
        assert not np.array_equal(early, settled)
        assert np.abs(early.astype(float) - dark_pattern).sum() < np.abs(
            settled.astype(float) - dark_pattern).sum()


@settings(max_examples=30, deadline=None)
@given(value=st.one_of(st.integers(-5, 0), st.floats(allow_nan=True), st.text(max_size=3),
                       st.booleans(), st.none()))
def test_bad_camera_arguments_are_named(value):
    cam = _CAM["bench"].camera
    if isinstance(value, float) and value > 0 and np.isfinite(value):
        return
    with pytest.raises((TypeError, ValueError), match="exposure_s"):
        cam.set_exposure(value)
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        with pytest.raises((TypeError, ValueError), match="averaging"):
            cam.get_image(averaging=value)


_CAM: dict = {}


@pytest.fixture(autouse=True, scope="module")
def _shared_bench():
    with open_bench(bench_dict()) as b:
        _CAM["bench"] = b
        yield


# exposure snapshot: the render never holds the SLM, and never sees a later pattern
def _fast_path(**camera):
    """The rendered path (noise, zero order, SLM- and camera-side flaws drawn per frame)."""
    return bench_dict(seed=6, noise=True, zero_order_fraction=0.05, **camera,
                      flaws={"flicker_rad_rms": 0.3, "power_fluctuation_rms": 0.05})


@pytest.mark.parametrize("frame_rate_hz", [None, 200.0])
def test_the_exposure_end_is_signalled_before_the_render(frame_rate_hz):
    """The old camera rendered inside the exposure and said it was over only after the
    render, so the SLM could not change while it ran (half the frame rate)."""
    timing = {} if frame_rate_hz is None else {"frame_rate_hz": frame_rate_hz}
    with open_bench(bench_dict(**timing)) as b:
        cam = b.camera
        cam.exposure_end_event = ended = threading.Event()
        seen = []
        render = cam.render_frame

        def spy(*args):
            seen.append(ended.is_set())
            return render(*args)

        cam.render_frame = spy
        cam.get_image()
        assert seen == [True]


class _WriteOnSet:
    """An ``exposure_end_event`` that writes the next pattern the moment it is set."""

    def __init__(self, slm, phase):
        self.slm, self.phase, self.writes = slm, phase, 0

    def set(self):
        self.slm.set_phase(self.phase, settle=False)
        self.writes += 1


@pytest.mark.parametrize("path", ["reference", "rendered"])
@pytest.mark.parametrize("when", ["exposure-start", "exposure-end"])
def test_a_frame_shows_the_pattern_displayed_when_its_exposure_started(path, when):
    """A second pattern written right after the exposure started (or when it is over)
    does not reach the frame: equal to the same seed's frame without that write."""
    cfg = bench_dict(seed=6, frame_rate_hz=200.0) if path == "reference" else _fast_path(
        frame_rate_hz=200.0)
    frames = []
    for inject in (False, True):
        with open_bench(cfg) as b:
            slm, cam = b.slm, b.camera
            a, other = blaze(slm, 0.01, 0.0), blaze(slm, -0.008, 0.006)
            slm.set_phase(a)
            frames.append(cam.get_image())
            if inject and when == "exposure-start":
                take = cam.exposure_state

                def taken(take=take, slm=slm, other=other):
                    state = take()
                    slm.set_phase(other, settle=False)  # lands during the exposure
                    return state

                cam.exposure_state = taken
            elif inject:
                cam.exposure_end_event = hook = _WriteOnSet(slm, other)
            frames.append(cam.get_image())
            if inject:
                assert slm.phase[0, 0] == other[0, 0]  # the write happened
                if when == "exposure-end":
                    assert hook.writes == 1
                frames.append(cam.get_image())  # the next frame sees it
    before, plain, before_i, with_write, after = frames
    np.testing.assert_array_equal(before_i, before)
    np.testing.assert_array_equal(with_write, plain)
    # the next frame shows the new pattern: far more change than the noise between two
    # frames of the first one (none with the noise off)
    noise = np.abs(before.astype(float) - plain).sum()
    assert np.abs(after.astype(float) - plain).sum() > 3 * noise + 1000


def test_a_frame_never_sees_half_a_write():
    """The grey levels of a write are in the buffer before the write completes (held here
    in the SLM's ``write_hook``) and its time is set; a frame asked for meanwhile waits for
    the write to finish, so it never shows the new pattern with the old write's (settled)
    time."""
    d = bench_dict(seed=7)
    d["slm"]["settle_time_s"] = 10.0
    with open_bench(d) as b:
        slm, cam = b.slm, b.camera
        a, new = blaze(slm, 0.01, 0.0), blaze(slm, -0.008, 0.006)
        slm.set_phase(a, settle=False)
        slm.last_write_time -= 100.0  # settled
        frame_a = cam.get_image().astype(float)
        in_write, finish = threading.Event(), threading.Event()

        def slow_driver(display):  # the write is held until ``finish``
            in_write.set()
            finish.wait(timeout=10.0)

        slm.write_hook = slow_driver
        writer = threading.Thread(target=slm.set_phase, args=(new,), kwargs={"settle": False})
        writer.start()
        assert in_write.wait(timeout=10.0)
        timer = threading.Timer(0.2, finish.set)  # the write completes 0.2 s later
        timer.start()
        frame = cam.get_image().astype(float)
        writer.join()
        timer.join()
        slm.write_hook = None
        slm.last_write_time -= 100.0
        frame_new = cam.get_image().astype(float)
    # the write had just landed when the frame started: still (almost) all the old pattern
    assert np.abs(frame - frame_a).sum() < np.abs(frame - frame_new).sum()
