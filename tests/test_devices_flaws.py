"""[sim_flaws]: the simulated bench's flaws outside the twin (devices/flaws.py).

Config (defaults off, clear errors, sim-only), truth, seeding, and one effect test per
flaw on a small noise-free bench; the separation from the twin and the calibration
(AST scan) is in tests/test_devices_flaws_separation.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from session_helpers import tiny_sim_bench

from devices import ConfigError, open_bench
from devices.config import SCHEMA, load_config

SIM_FLAW_KEYS = [
    "crosstalk_sigma_px", "phase_span_variation", "flicker_rad_rms", "settle_tau_s",
    "high_order_aberration_rad_rms", "source_shape", "power_fluctuation_rms",
    "drift_px_per_kframe", "camera_nonlinearity", "hot_pixel_fraction", "vignetting",
    "background_counts_per_s", "ghost_fraction", "camera_rotation_deg", "camera_mirror",
    "slm_phase_span",
]
OFF = {"crosstalk_sigma_px": 0.0, "phase_span_variation": 0.0, "flicker_rad_rms": 0.0,
       "settle_tau_s": 0.0, "high_order_aberration_rad_rms": 0.0, "source_shape": "gaussian",
       "power_fluctuation_rms": 0.0, "drift_px_per_kframe": 0.0, "camera_nonlinearity": 0.0,
       "hot_pixel_fraction": 0.0, "vignetting": 0.0, "background_counts_per_s": 0.0,
       "ghost_fraction": 0.0, "camera_rotation_deg": None, "camera_mirror": False,
       "slm_phase_span": None}
ALL_ON = {"crosstalk_sigma_px": 0.6, "phase_span_variation": 0.05, "flicker_rad_rms": 0.06,
          "settle_tau_s": 0.004, "high_order_aberration_rad_rms": 0.3,
          "source_shape": "clipped", "power_fluctuation_rms": 0.005,
          "drift_px_per_kframe": 0.3, "camera_nonlinearity": 0.01,
          "hot_pixel_fraction": 1e-3, "vignetting": 0.1, "background_counts_per_s": 4e4,
          "ghost_fraction": 0.005, "camera_rotation_deg": 20.0, "camera_mirror": True,
          "slm_phase_span": 1.6}


def bench(seed=1, laser=True, flaws=None, **camera):
    return tiny_sim_bench(seed, laser, flaws, **camera)


def blaze(slm, kx, ky):
    rows, cols = slm.shape
    x = (np.arange(cols) - (cols - 1) / 2) * slm.pitch_um[0] / slm.wav_um
    y = (np.arange(rows) - (rows - 1) / 2) * slm.pitch_um[1] / slm.wav_um
    return (2 * np.pi * (kx * x[None, :] + ky * y[:, None])).astype(np.float32)


def centroid(f):
    f = f.astype(float)
    f[f < 0.2 * f.max()] = 0
    yy, xx = np.indices(f.shape)
    return np.array([(f * xx).sum(), (f * yy).sum()]) / f.sum()


# configuration

def test_keys_and_defaults_off():
    assert list(SCHEMA["sim_flaws"]) == SIM_FLAW_KEYS
    assert load_config(bench())["sim_flaws"] == OFF
    assert load_config("sim.toml")["sim_flaws"] == OFF  # sim.toml stays as it was
    assert load_config(bench(flaws=ALL_ON))["sim_flaws"] == ALL_ON


@pytest.mark.parametrize("flaws, msg", [
    ({"crosstalk": 1.0}, "sim_flaws.crosstalk: unknown key; known keys: crosstalk_sigma_px"),
    ({"source_shape": "square"}, 'sim_flaws.source_shape: expected "gaussian", '
                                 '"supergaussian" or "clipped", got \'square\''),
    ({"vignetting": 1.0}, r"sim_flaws.vignetting: expected a number in \[0, 1\), got 1.0"),
    ({"settle_tau_s": 20.0}, "sim_flaws.settle_tau_s: expected .*upper limit"),
    ({"camera_mirror": 1}, "sim_flaws.camera_mirror: expected true or false, got 1"),
    ({"slm_phase_span": 0}, r"sim_flaws.slm_phase_span: expected a number in \(0, 4\]"),
    ({"flicker_rad_rms": float("nan")}, "sim_flaws.flicker_rad_rms: expected"),
    ([1, 2], r"sim_flaws: expected a table, got \[1, 2\]"),
])
def test_bad_values_name_the_key(flaws, msg):
    with pytest.raises(ConfigError, match=msg):
        load_config(bench(flaws=flaws))


def test_sim_only():
    d = bench(flaws={"vignetting": 0.1})
    d["slm"] = {"backend": "slmsuite:SimulatedSLM", "args": {"resolution": [64, 48]}}
    with pytest.raises(ConfigError, match='^sim_flaws: only for a simulated bench'):
        load_config(d)
    d.pop("sim_flaws")
    assert load_config(d)["sim_flaws"] is None


# truth and seeding

def test_truth_holds_every_key_and_is_seeded():
    with open_bench(bench(seed=3, flaws=ALL_ON)) as b:
        t = dict(b.truth)
    for k in SIM_FLAW_KEYS:
        assert k in t, k
    for k, v in ALL_ON.items():
        if k == "high_order_aberration_rad_rms":
            assert t[k] == pytest.approx(v, rel=1e-9)
        elif k == "slm_phase_span":
            assert t[k] == v == t["slm_gamma_span"]
        else:
            assert t[k] == v, k
    assert set(t["high_order_noll_rad"]) == set(range(9, 29))
    assert np.ptp(t["slm_span_map"]) == pytest.approx(0.05, rel=1e-6)
    assert len(t["hot_pixel_index"]) == round(1e-3 * 96 * 128)
    with open_bench(bench(seed=3, flaws=ALL_ON)) as b:
        assert b.truth["drift_direction_deg"] == t["drift_direction_deg"]
        np.testing.assert_array_equal(b.truth["hot_pixel_index"], t["hot_pixel_index"])
    with open_bench(bench(seed=4, flaws=ALL_ON)) as b:
        assert b.truth["drift_direction_deg"] != t["drift_direction_deg"]
    with open_bench(bench(seed=3)) as b:  # switching flaws on leaves the other draws alone
        assert b.truth["zernike_noll_rad"] == t["zernike_noll_rad"]
        assert b.truth["camera_scale"] == t["camera_scale"]
        assert all(b.truth[k] == v for k, v in OFF.items() if v is not None)


def test_all_flaws_on_runs_with_noise():
    with open_bench(bench(seed=2, flaws=ALL_ON, noise=True)) as b:
        b.slm.set_phase(blaze(b.slm, 0.01, 0.0))
        f = b.camera.get_image()
        assert f.shape == (96, 128) and f.max() > 0


# one effect per flaw (noise off: what changes is the flaw)

def test_overrides_rotation_mirror_span():
    with open_bench(bench(flaws={"camera_rotation_deg": 20.0, "slm_phase_span": 1.6})) as b:
        M = b.truth["camera_affine_M"]
        assert np.degrees(np.arctan2(M[1, 0], M[0, 0])) == pytest.approx(20.0, abs=1e-9)
        r = b.truth["slm_phase_response_rad"]
        power = b.truth["slm_gamma_power"]
        assert r[0] - r[-1] == pytest.approx(2 * np.pi * 1.6 * (255 / 256) ** power)
    with open_bench(bench(seed=5)) as plain, open_bench(
            bench(seed=5, flaws={"camera_mirror": True})) as mirrored:
        assert np.linalg.det(mirrored.truth["camera_affine_M"]) < 0 < np.linalg.det(
            plain.truth["camera_affine_M"])
        for b in (plain, mirrored):
            b.slm.set_phase(blaze(b.slm, 0.012, 0.0))
        ca, cb = centroid(plain.camera.get_image()), centroid(mirrored.camera.get_image())
        bx = plain.truth["camera_affine_b"].ravel()[0]
        assert cb[0] - bx == pytest.approx(-(ca[0] - bx), abs=1.0)
        assert cb[1] == pytest.approx(ca[1], abs=1.0)


def test_background_scales_with_exposure_and_needs_no_laser():
    with open_bench(bench(flaws={"background_counts_per_s": 2e5})) as b:
        b.laser.output_off()
        for exp in (1e-3, 4e-3):
            b.camera.set_exposure(exp)
            assert b.camera.get_image().astype(float).mean() == pytest.approx(2e5 * exp, abs=1)


def test_ghost_only_with_the_laser_and_carries_its_fraction():
    with open_bench(bench(seed=6, photons_per_s=2e7)) as plain, open_bench(
            bench(seed=6, photons_per_s=2e7, flaws={"ghost_fraction": 0.2})) as ghost:
        for b in (plain, ghost):
            b.slm.set_phase(blaze(b.slm, 0.004, 0.003))
        a, g = plain.camera.get_image().astype(float), ghost.camera.get_image().astype(float)
        assert a.max() < 4095
        extra = (g - a).sum() / a.sum()
        assert 0.1 < extra <= 0.2 + 1e-3  # part of the ghost may fall off the frame
        dy, dx = ghost.truth["ghost_offset_px"][1], ghost.truth["ghost_offset_px"][0]
        assert np.hypot(dx, dy) > 0.05 * 96
        ghost.laser.output_off()
        assert ghost.camera.get_image().max() == 0


def test_hot_pixels_where_the_truth_says():
    with open_bench(bench(flaws={"hot_pixel_fraction": 0.01})) as b:
        b.laser.output_off()
        f = b.camera.get_image().reshape(-1).astype(float)
        idx, counts = b.truth["hot_pixel_index"], b.truth["hot_pixel_counts"]
        assert len(idx) == round(0.01 * 96 * 128)
        np.testing.assert_array_equal(np.flatnonzero(f), idx)
        np.testing.assert_allclose(f[idx], np.floor(np.minimum(counts, 4095)), atol=1)
        assert counts.min() >= 0.02 * 4095 - 1e-9


def test_vignetting_and_nonlinearity():
    flaws = {"vignetting": 0.3, "camera_nonlinearity": 0.2}
    with open_bench(bench(seed=7, photons_per_s=2e8)) as plain, open_bench(
            bench(seed=7, photons_per_s=2e8, flaws=flaws)) as bad:
        for b in (plain, bad):
            b.slm.set_phase(np.zeros((8, 8), np.float32))
        a = plain.camera.get_image().astype(float)
        f = bad.camera.get_image().astype(float)
        vig = bad.truth["vignetting_map"]
        assert vig.min() == pytest.approx(0.7) and vig.max() <= 1
        x = np.minimum(a * vig, 4095)
        expect = x - 0.2 * x**2 / 4095
        m = a > 50
        assert m.sum() > 20
        np.testing.assert_allclose(f[m], expect[m], rtol=0.01, atol=2)


def test_power_fluctuation_per_frame():
    with open_bench(bench(seed=8, flaws={"power_fluctuation_rms": 0.05})) as b:
        b.slm.set_phase(blaze(b.slm, 0.004, 0.0))
        totals = np.array([b.camera.get_image().astype(float).sum() for _ in range(40)])
        rel = totals.std() / totals.mean()
        assert 0.03 < rel < 0.075


def test_drift_moves_the_image_in_the_truth_direction():
    with open_bench(bench(seed=9, flaws={"drift_px_per_kframe": 4.0})) as b:
        b.slm.set_phase(blaze(b.slm, 0.006, 0.004))
        c0 = centroid(b.camera.get_image())
        b.camera.frames_delivered = 1000
        c1 = centroid(b.camera.get_image())
        a = np.radians(b.truth["drift_direction_deg"])
        np.testing.assert_allclose(c1 - c0, [4 * np.cos(a), 4 * np.sin(a)], atol=0.6)


def _first_order_fraction(b, period_px=4):
    rows, cols = b.slm.shape
    ramp = 2 * np.pi * (np.arange(cols) % period_px) / period_px
    b.slm.set_phase(np.broadcast_to(ramp, (rows, cols)).astype(np.float32))
    return b.camera.get_image().astype(float)


def test_crosstalk_lowers_the_efficiency_of_fine_gratings():
    kw = {"focal_length_mm": 4.0, "photons_per_s": 1e8}
    with open_bench(bench(seed=10, **kw)) as plain, open_bench(
            bench(seed=10, flaws={"crosstalk_sigma_px": 1.0}, **kw)) as blurred:
        a, f = _first_order_fraction(plain), _first_order_fraction(blurred)
        ya, xa = np.unravel_index(np.argmax(a), a.shape)
        win = (slice(ya - 3, ya + 4), slice(xa - 3, xa + 4))
        assert f[win].sum() < 0.8 * a[win].sum()


def test_span_variation_and_flicker_change_the_frames():
    with open_bench(bench(seed=11, flaws={"phase_span_variation": 0.3})) as b, open_bench(
            bench(seed=11)) as plain:
        for x in (b, plain):
            x.slm.set_phase(blaze(x.slm, 0.005, 0.0))
        assert not np.array_equal(b.camera.get_image(), plain.camera.get_image())
        assert np.array_equal(b.camera.get_image(), b.camera.get_image())  # static
    with open_bench(bench(seed=11, flaws={"flicker_rad_rms": 0.5})) as b:
        b.slm.set_phase(blaze(b.slm, 0.005, 0.0))
        assert not np.array_equal(b.camera.get_image(), b.camera.get_image())


def test_true_settle_time_constant_is_not_the_software_wait():
    d = bench(seed=12, flaws={"settle_tau_s": 0.05})
    d["slm"]["settle_time_s"] = 0.0  # the software waits nothing
    with open_bench(d) as b:
        b.slm.set_phase(blaze(b.slm, 0.006, 0.0))
        b.slm.last_write_time -= 10.0
        old = centroid(b.camera.get_image())
        b.slm.set_phase(blaze(b.slm, -0.006, 0.0))
        t = b.slm.last_write_time
        assert b.slm.settled_fraction(now=t + 0.05) == pytest.approx(1 - np.exp(-1))
        b.slm.last_write_time = t - 0.05 * 0.1  # 10 % of tau ago: mostly the old pattern
        early = b.camera.get_image().astype(float)
        b.slm.last_write_time = t - 10.0
        new = centroid(b.camera.get_image())
        assert abs(centroid(early)[0] - old[0]) < abs(centroid(early)[0] - new[0])


def test_high_order_aberration_and_source_shapes():
    from devices.sim_zernike import zernike_phase

    with open_bench(bench(seed=13, flaws={"high_order_aberration_rad_rms": 0.7,
                                          "source_shape": "clipped"})) as b:
        t = b.truth
        w = b.slm.wrapped
        total = zernike_phase({**t["zernike_noll_rad"], **t["high_order_noll_rad"]}, (128, 128))
        np.testing.assert_allclose(w.source["phase_sim"], total, atol=1e-5)
        high = total - zernike_phase(t["zernike_noll_rad"], (128, 128))
        yy, xx = np.indices((128, 128)) - 63.5
        disk = np.hypot(xx, yy) <= 64
        assert np.sqrt(np.mean(high[disk] ** 2)) == pytest.approx(0.7, rel=0.05)
        amp = np.asarray(w.source["amplitude_sim"])
        cx, cy = t["source_center_px"]
        r = np.hypot(xx - cx, yy - cy)
        assert amp[r > t["source_clip_radius_px"] + 1].max() == 0
        assert amp[r < t["source_clip_radius_px"] - 1].min() > 0
    with open_bench(bench(seed=13, flaws={"source_shape": "supergaussian"})) as b:
        amp = np.asarray(b.slm.wrapped.source["amplitude_sim"])
        w_px = b.truth["source_waist_px"]
        cx, cy = b.truth["source_center_px"]
        r = np.hypot(xx - cx, yy - cy)
        assert amp[r < 0.5 * w_px].min() > 0.85  # flat top, unlike a Gaussian (0.78)
