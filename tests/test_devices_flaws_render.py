"""devices.sim_render against slmsuite's own SimulatedCamera (the reference).

With flaws and noise off, our far field equals slmsuite's ``_render()`` to 1e-5 of its
peak (single against double precision), and a frame quantised from it equals
slmsuite's ``get_image()`` to within one count, on rotated, mirrored, scaled and
non-square geometries. An integer drift of the image is a translation (to float
rounding of the nearest-neighbour sampling).
"""

from __future__ import annotations

import numpy as np
import pytest

from devices import open_bench


def _bench(seed, flaws=None, cam_shape=(96, 128), slm_shape=(128, 160), f_mm=12.0):
    d = {"seed": seed, "slm": {"backend": "sim", "shape": list(slm_shape)},
         "camera": {"backend": "sim", "shape": list(cam_shape), "focal_length_mm": f_mm,
                    "noise": False, "zero_order_fraction": 0.0, "photons_per_s": 3e7}}
    if flaws:
        d["sim_flaws"] = flaws
    return d


def _ours(b):
    return b.camera.far_field()  # the fast renderer's, of the SLM as displayed now


@pytest.mark.parametrize("seed, flaws, cam_shape, slm_shape, f_mm", [
    (0, None, (96, 128), (128, 160), 12.0),
    (1, {"camera_rotation_deg": 20.0}, (96, 128), (128, 160), 12.0),
    (2, {"camera_mirror": True}, (80, 80), (96, 128), 30.0),
    (3, {"slm_phase_span": 1.6, "source_shape": "clipped"}, (64, 100), (100, 64), 8.0),
])
def test_fast_render_equals_slmsuite(seed, flaws, cam_shape, slm_shape, f_mm):
    with open_bench(_bench(seed, flaws, cam_shape, slm_shape, f_mm)) as b:
        rng = np.random.default_rng(seed)
        for _ in range(2):
            b.slm.set_phase(rng.uniform(0, 2 * np.pi, (16, 16)).astype(np.float32))
            ref = np.asarray(b.camera.wrapped._render(), dtype=np.float64)
            ours = _ours(b)
            assert ours.shape == ref.shape == tuple(cam_shape)
            assert np.abs(ours - ref).max() <= 1e-5 * ref.max()
            sc = b.camera.wrapped
            sc.gain = b.camera.render_gain()  # as render_frame sets it
            frame = np.clip(ours * sc.exposure_s * sc.gain, 0, 4095).astype(np.uint16)
            theirs = sc.get_image()  # slmsuite's full frame at the gain our camera set
            diff = np.abs(frame.astype(int) - theirs.astype(int))
            assert diff.max() <= 1 and (diff > 0).mean() < 1e-2
            assert theirs.max() > 0


def test_integer_drift_is_a_translation():
    with open_bench(_bench(5, cam_shape=(96, 128), slm_shape=(128, 128))) as b:
        b.slm.set_phase(np.random.default_rng(0).uniform(0, 6, (16, 16)).astype(np.float32))
        a = b.camera.far_field()
        s = b.camera.far_field(shift_px=(3.0, -2.0))
        inner = np.s_[10:-10, 10:-10]
        shifted = np.roll(np.roll(a, 3, axis=1), -2, axis=0)
        d = np.abs(s[inner] - shifted[inner])
        # equal but for the odd sub-sample whose rounding tie falls the other way
        assert d.max() <= 1e-3 * a.max() and (d > 1e-6 * a.max()).mean() < 0.01


def test_noisy_frames_match_the_slmsuite_path():
    """sim.toml-like (noise and zero order on, no flaws): same seed, same frames, fast or not."""
    frames = {}
    for renderer in ("slmsuite", "fast"):
        d = _bench(6)
        d["camera"].update(noise=True, zero_order_fraction=0.02)
        with open_bench(d) as b:
            b.camera.renderer = renderer
            b.slm.set_phase(np.random.default_rng(1).uniform(0, 6, (16, 16)).astype(np.float32))
            frames[renderer] = b.camera.get_image().astype(int)
    diff = np.abs(frames["fast"] - frames["slmsuite"])
    assert diff.max() <= 2 and (diff > 0).mean() < 0.01


def test_fft_workers_give_the_same_render_and_bad_values_are_named():
    from devices.sim_render import FarFieldRenderer

    with open_bench(_bench(7)) as b:
        b.slm.set_phase(np.random.default_rng(2).uniform(0, 6, (16, 16)).astype(np.float32))
        one = _ours(b)
        b.camera.fast_renderer().workers = 2
        np.testing.assert_allclose(_ours(b), one, rtol=0, atol=1e-6 * one.max())
        for bad in (0, 1.5, "2"):
            with pytest.raises(ValueError, match=r"workers: expected an integer >= 1"):
                FarFieldRenderer(b.camera.wrapped, workers=bad)
