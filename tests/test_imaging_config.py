"""The imaging configuration: validation, records, comparison, the pure layout, the
encoder as shown, and BenchImager's explicit device step."""

from __future__ import annotations

import math

import numpy as np
import pytest

from calibration.imaging import BenchImager
from calibration.imaging_config import (
    PATTERN_FIELDS,
    EncoderSpec,
    ImagingConfig,
    plan_layout,
)


@pytest.mark.parametrize("bad, name", [
    ({"mode": "both"}, "mode"), ({"grating": "left"}, "grating"),
    ({"grating": (0.6, 0.0)}, "grating"), ({"grating": (1, 2, 3)}, "grating"),
    ({"margin": "none"}, "margin"), ({"margin_period_px": 1.0}, "margin_period_px"),
    ({"mask_sampling": "nearest"}, "mask_sampling"), ({"averaging": 0}, "averaging"),
    ({"averaging": True}, "averaging"), ({"retries": -1}, "retries"),
    ({"exposure_s": float("nan")}, "exposure_s"), ({"size": 1}, "size"),
    ({"geometry": "guess"}, "geometry"), ({"geometry": [[1, 0], [0, 1]]}, "geometry"),
    ({"pixel_envelope": "yes"}, "pixel_envelope"), ({"split_shift": -3.0}, "split_shift"),
])
def test_bad_settings_are_refused_with_their_name(bad, name):
    with pytest.raises(ValueError, match=f"^{name}: expected"):
        ImagingConfig(**bad)


def test_frozen_round_trip_and_unknown_keys():
    cfg = ImagingConfig(mode="split", grating=None, geometry=np.eye(2, 3), averaging=3)
    with pytest.raises(dataclasses_frozen_error()):
        cfg.mode = "sequential"  # type: ignore[misc]
    import json

    back = ImagingConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and back.geometry == ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0))
    assert ImagingConfig.from_dict(ImagingConfig(grating=(0.1, -0.2)).to_dict()).grating \
        == (0.1, -0.2)
    with pytest.raises(ValueError, match="unknown settings.*'modes'"):
        ImagingConfig.from_dict({"modes": "split"})
    with pytest.raises(ValueError, match="unknown settings"):
        cfg.replace(colour=True)


def dataclasses_frozen_error():
    import dataclasses

    return dataclasses.FrozenInstanceError


def test_differences_name_each_pattern_setting_and_ignore_the_rest():
    cal = ImagingConfig(mode="split")
    run = ImagingConfig(mode="sequential", averaging=8, retries=0, exposure_s=0.01)
    diff = run.differences(cal)
    assert diff == ["mode: 'split' there, 'sequential' here"]
    assert ImagingConfig().differences(ImagingConfig(averaging=4)) == []
    assert {"mode", "grating", "margin", "mask_sampling", "pixel_envelope", "apply_lut",
            "correct_aberrations"} <= set(PATTERN_FIELDS)


def test_plan_layout_is_pure_and_matches_the_model():
    seq = plan_layout((256, 320), 2, ImagingConfig())
    assert seq.block == 8 and seq.side == 256 and seq.frames_per_image == 2
    assert seq.origins == ((0, 32), (0, 32))
    assert seq.shifts == ((24.0, 24.0), (24.0, 24.0))  # "auto": 0.75 N model pixels
    assert math.isclose(seq.gratings[0][0] * seq.side, 24.0)
    flat = plan_layout((256, 256), 2, ImagingConfig(grating=None))
    assert flat.shifts[0] == (0.0, 0.0)
    split = plan_layout((256, 512), 2, ImagingConfig(mode="split"))
    assert split.frames_per_image == 1 and split.band_cols == 256 and split.block == 8
    assert split.origins[0][1] < 256 <= split.origins[1][1]
    assert split.shifts == ((-24.0, 0.0), (24.0, 0.0))
    with pytest.raises(ValueError, match="does not fit the SLM"):
        plan_layout((16, 16), 2, ImagingConfig())
    with pytest.raises(ValueError, match="bands of 20 columns"):
        plan_layout((64, 40), 2, ImagingConfig(mode="split"))


def test_encoder_spec_hash_is_the_twin_signature():
    from simulation import DualVortexEncoder

    enc = DualVortexEncoder((1, 3))
    spec = EncoderSpec.vortex((1, 3))
    assert spec.mask_sha256 == enc.signature()["mask_sha256"]
    assert spec.signature_differences(enc.signature()) == []
    other = EncoderSpec(np.random.default_rng(0).uniform(0, 6, (2, 32, 32)), source="mask m")
    diff = other.signature_differences(enc.signature())
    assert len(diff) == 1 and diff[0].startswith("mask_sha256: the decoder's encoder has")
    deep = EncoderSpec.vortex((1, 3), phase_depth=math.pi)
    assert deep.signature_differences(enc.signature())[0].startswith("phase_depth")
    assert "channels" in EncoderSpec.vortex((1,)).signature_differences(enc.signature())[0]
    with pytest.raises(ValueError, match="2 charges"):
        EncoderSpec(np.zeros((3, 32, 32)), charges=(1, 3))


class _SLM:
    shape, pitch_um, wav_um = (256, 256), (8.0, 8.0), 0.633

    def __init__(self):
        self.calls = []

    def set_phase_response(self, resp):
        self.calls.append(("lut", len(resp)))


class _Camera:
    shape, pitch_um, focal_length_mm, dtype = (512, 512), (5.5, 5.5), 50.0, np.uint16

    def __init__(self):
        self.calls = []

    def set_exposure(self, t):
        self.calls.append(("exposure", t))
        return t


class _Bench:
    def __init__(self):
        self.slm, self.camera = _SLM(), _Camera()


class _Cal:
    phase_response_rad = np.linspace(0, 2 * np.pi, 256)
    model_to_camera = dark_frame = zernike_noll_rad = None


def test_constructor_leaves_the_devices_alone_prepare_sets_them():
    bench = _Bench()
    im = BenchImager(bench, _Cal(), None, ImagingConfig(exposure_s=0.002))
    assert bench.slm.calls == [] and bench.camera.calls == [] and not im.lut_applied
    assert im.prepare() is im and im.prepare() is im  # idempotent
    assert bench.slm.calls == [("lut", 256)] and bench.camera.calls == [("exposure", 0.002)]
    assert im.lut_applied and im.exposure_s == 0.002
    d = im.describe()
    assert d["config"]["exposure_s"] == 0.002 and d["encoder"]["charges"] == [1, 3]
    no_lut = BenchImager(_Bench(), _Cal(), None, ImagingConfig(apply_lut=False)).prepare()
    assert no_lut.slm.calls == [] and not no_lut.lut_applied


def test_the_encoder_sets_the_object_phase_depth():
    """A mask's own phase depth is what the SLM shows (it used to be π/2 always)."""
    from hil.masks import mask_from_encoder
    from simulation import DualVortexEncoder

    mask = mask_from_encoder(DualVortexEncoder(phase_depth=math.pi))
    im = BenchImager(_Bench(), None, mask, ImagingConfig(grating=None, margin="flat"))
    assert im.phase_depth == math.pi
    img = np.zeros((32, 32), np.float32)
    img[0, 0] = 1.0
    r0, c0 = im.origins[0]
    d = (im.slm_phase(img)[r0, c0] - im.slm_phase(np.zeros_like(img))[r0, c0]) % (2 * np.pi)
    assert math.isclose(d, math.pi, abs_tol=1e-4)


def test_config_and_encoder_types_are_checked():
    with pytest.raises(TypeError, match="config: expected an ImagingConfig"):
        BenchImager(_Bench(), None, None, {"mode": "split"})
    with pytest.raises(TypeError, match="encoder: expected"):
        BenchImager(_Bench(), None, "vortex")
    with pytest.raises(ValueError, match="analytic"):
        BenchImager(_Bench(), None, EncoderSpec(np.zeros((2, 32, 32))),
                    ImagingConfig(mask_sampling="analytic"))
