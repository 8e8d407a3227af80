"""The imaging primitive and the bench run: composition, geometry, HDF5 store, faults."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from session_helpers import quick_decoder, small_bench

from calibration.imaging import BenchImager
from calibration.imaging_config import EncoderSpec, ImagingConfig
from calibration.truth import truth_model_to_camera
from hil.runs import CaptureStore, read_capture_header, read_captures
from hil.session import EXIT_STOPPED, RunConfig, run_session


class _FakeSLM:
    def __init__(self, shape=(256, 320)):
        self.shape, self.pitch_um, self.wav_um = shape, (8.0, 8.0), 0.633


class _FakeCamera:
    shape, pitch_um, focal_length_mm, dtype = (512, 512), (5.5, 5.5), 50.0, np.uint16


class _FakeBench:
    def __init__(self, shape=(256, 320)):
        self.slm, self.camera = _FakeSLM(shape), _FakeCamera()


def test_composed_phase_reproduces_the_twin_exactly():
    """Blocks + pixel envelope: the SLM field's far field at the model's Fourier pixels
    equals the twin's pattern (here the SLM is wider than the square: margin grating)."""
    from simulation import DualVortexEncoder

    bench = _FakeBench((256, 320))
    im = BenchImager(bench, config=ImagingConfig(grating=None))
    assert im.block == 8 and im.frames_per_image == 2
    img = torch.rand(32, 32, generator=torch.Generator().manual_seed(0))
    twin = DualVortexEncoder()(img[None])[0].numpy()
    for k in range(2):
        phase = im.slm_phase(img, k)
        assert phase.shape == (256, 320) and phase.min() >= 0 and phase.max() < 2 * np.pi
        r0, c0 = im.origins[k]
        square = np.exp(1j * phase[r0:r0 + 256, c0:c0 + 256].astype(np.float64))
        far = np.abs(np.fft.fftshift(np.fft.fft2(np.fft.fftshift(square))))
        window = far[128 - 16:128 + 16, 128 - 16:128 + 16] / im.envelope / 64.0  # s² = 64
        np.testing.assert_allclose(window, twin[k], rtol=2e-3, atol=2e-3 * twin[k].max())
        margin = phase[:, :c0]  # a blazed grating of period 4, not a flat zero order
        assert np.ptp(margin) > 4.0


def test_steering_grating_moves_the_window():
    bench = _FakeBench((256, 256))
    plain = BenchImager(bench, config=ImagingConfig(grating=None))
    steered = BenchImager(bench)  # "auto": 0.75 N model pixels along x and y
    shift = steered.model_to_camera[0][:, 2] - plain.model_to_camera[0][:, 2]
    scale = plain.model_to_camera[0][0, 0]
    np.testing.assert_allclose(shift, [24 * scale, 24 * scale], rtol=1e-9)


def test_split_mode_layout_and_windows():
    im = BenchImager(_FakeBench((256, 512)), config=ImagingConfig(mode="split"))
    assert im.frames_per_image == 1 and im.block == 8
    xs = [a[0, 2] for a in im.model_to_camera]
    assert xs[0] < xs[1]  # channel 0 steered to -x, channel 1 to +x
    assert im.origins[0][1] < 256 <= im.origins[1][1]


def test_bad_arguments_are_refused_with_names():
    bench = _FakeBench((256, 256))
    with pytest.raises(ValueError, match="mode"):
        BenchImager(bench, config=ImagingConfig(mode="both"))
    with pytest.raises(ValueError, match="outside the"):
        BenchImager(bench, config=ImagingConfig(grating=(0.4, 0.0)))
    with pytest.raises(ValueError, match="does not fit"):
        BenchImager(_FakeBench((16, 16)))
    im = BenchImager(bench)
    with pytest.raises(ValueError, match="image"):
        im.slm_phase(np.full((32, 32), 2.0))
    with pytest.raises(ValueError, match="encoder: its masks are 16x16"):
        BenchImager(bench, encoder=EncoderSpec(np.zeros((2, 16, 16))))


def _images(n=6):
    from simulation import load_dataset

    imgs, labels = load_dataset("digits", "test", n=n)
    return imgs, labels


def test_imager_on_bench_true_geometry():
    from devices.bench import open_bench
    from simulation import DualVortexEncoder

    imgs, _ = _images(4)
    with open_bench(small_bench()) as bench:
        a = truth_model_to_camera(bench, 32, 8)
        im = BenchImager(bench, config=ImagingConfig(geometry=a))
        out = im.capture(imgs)
    assert out.patterns.shape == (4, 2, 32, 32) and out.patterns.dtype == np.float32
    assert out.frames.shape == (4, 2, 256, 256) and out.frames.dtype == np.uint16
    twin = DualVortexEncoder()(imgs).numpy()

    def norm(p):
        p = p - p.min(axis=(-2, -1), keepdims=True)
        return p / p.max(axis=(-2, -1), keepdims=True)

    corr = np.corrcoef(norm(out.patterns).ravel(), norm(twin).ravel())[0, 1]
    assert corr > 0.95, corr


def test_split_mode_on_bench_matches_twin():
    from devices.bench import open_bench
    from simulation import DualVortexEncoder

    imgs, _ = _images(3)
    cfg = small_bench()
    cfg["slm"]["shape"] = [256, 512]
    with open_bench(cfg) as bench:
        a = truth_model_to_camera(bench, 32, 8)
        out = BenchImager(bench, config=ImagingConfig(geometry=a, mode="split")).capture(imgs)
    assert out.frames.shape == (3, 1, 256, 256)
    twin = DualVortexEncoder()(imgs).numpy()
    for k in range(2):
        corr = np.corrcoef(out.patterns[:, k].ravel(), twin[:, k].ravel())[0, 1]
        assert corr > 0.9, (k, corr)


def test_capture_store_trims_a_cut_short_capture(tmp_path):
    p = tmp_path / "c.h5"
    with CaptureStore.create(p, frame_shape=(2, 8, 8), frame_dtype=np.uint16,
                             pattern_shape=(2, 4, 4)) as s:
        for i in range(3):
            s.append(i, np.full((2, 8, 8), i, np.uint16), np.full((2, 4, 4), i, np.float32),
                     [{"exposure_s": 1e-3, "averaging": 1, "timestamp": 1.0}])
    with h5py.File(p, "a") as f:  # a 4th capture whose count was never written
        for name in ("frames", "patterns", "index"):
            f[name].resize(4, axis=0)
    with CaptureStore.resume(p) as s:
        assert s.count == 3
        s.append(3, np.full((2, 8, 8), 3, np.uint16), np.full((2, 4, 4), 3, np.float32))
    caps = read_captures(p, frames=True)
    assert caps["index"].tolist() == [0, 1, 2, 3]
    assert caps["frames"][:, 0, 0, 0].tolist() == [0, 1, 2, 3]
    with pytest.raises(FileExistsError):
        CaptureStore.create(p, frame_shape=(2, 8, 8), frame_dtype=np.uint16,
                            pattern_shape=(2, 4, 4))


def test_run_records_everything(tmp_path):
    dec = tmp_path / "dec.pt"
    quick_decoder(dec)
    out = tmp_path / "run"
    cfg = RunConfig(bench=small_bench(), decoder=dec, out=out, dataset="digits", n=3,
                    seed=None, progress=False)
    assert run_session(cfg) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "complete" and run["config"]["n"] == 3
    assert run["devices"]["camera"]["device_id"] and "torch" in run["versions"]
    assert "git_commit" in run and run["imaging"]["frames_per_image"] == 2
    # one provenance record (simulation.provenance); the old fields derive from it
    prov = run["provenance"]
    assert prov["package"] == "hil-diffraction" and "git_dirty" in prov
    assert run["git_commit"] == prov["git_commit"]
    assert run["versions"]["torch"] == prov["versions"]["torch"]
    res = json.loads((out / "results.json").read_text())
    assert res["n_captured"] == 3 and len(res["per_image"]) == 3
    # the mean is the mean of the per-image scores it reports (not a placeholder)
    assert res["ssim_mean"] == pytest.approx(np.mean([p["ssim"] for p in res["per_image"]]))
    assert len({p["ssim"] for p in res["per_image"]}) == 3  # three different images
    for name in ("report.md", "reconstructions.png", "captures.png"):
        assert (out / name).is_file()
    caps = read_captures(out / "captures.h5")
    assert caps["index"].tolist() == [0, 1, 2] and caps["patterns"].shape == (3, 2, 32, 32)
    head = read_capture_header(out / "captures.h5")  # the run's attributes, typed
    assert head.version == 3 and head.attrs == {"dataset": "digits", "split": "test"}
    with pytest.raises(FileExistsError, match="--resume"):
        run_session(cfg)
    bad = RunConfig(**{**cfg.__dict__, "n": 4, "resume": True})
    with pytest.raises(ValueError, match="n: run has 3"):
        run_session(bad)


def test_device_fault_stops_cleanly_then_resume_completes(tmp_path):
    dec = tmp_path / "dec.pt"
    quick_decoder(dec)
    out = tmp_path / "run"
    # the camera disconnects after 5 frames: 2 complete captures (2 frames each; no drift
    # reference frames, which would take some of the 5)
    cfg = RunConfig(bench=small_bench(disconnect_after_frames=5), decoder=dec, out=out,
                    dataset="digits", n=4, seed=None, progress=False, drift_every=0)
    assert run_session(cfg) == EXIT_STOPPED
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "stopped" and "disconnect" in run["error"].lower()
    assert read_captures(out / "captures.h5")["index"].tolist() == [0, 1]
    assert json.loads((out / "results.json").read_text())["n_captured"] == 2
    # fixed bench (and dropped frames now, retried by the camera): resume finishes
    cfg2 = RunConfig(**{**cfg.__dict__, "bench": small_bench(drop_probability=0.3),
                        "resume": True})
    assert run_session(cfg2) == 0
    caps = read_captures(out / "captures.h5")
    assert caps["index"].tolist() == [0, 1, 2, 3]  # none lost, none duplicated
    assert caps["dropped"][2:].sum() > 0
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "complete" and len(run["sessions"]) == 2


def test_fault_with_laser_turns_it_off(tmp_path, monkeypatch):
    """A bench with a (simulated VISA) laser: a fault switches the output off."""
    from devices.visa import LaserController

    dec = tmp_path / "dec.pt"
    quick_decoder(dec)
    cfg_bench = small_bench(timeout_probability=0.999, timeout_s=0.01)
    cfg_bench["laser"] = {"backend": "sim", "control": "power", "setpoint": 1.0,
                          "max_power_mW": 20.0, "output": "on"}
    calls = []
    real_off = LaserController.output_off

    def off(self):
        calls.append(self.is_output_on())
        real_off(self)

    monkeypatch.setattr(LaserController, "output_off", off)
    status = run_session(RunConfig(bench=cfg_bench, decoder=dec, out=tmp_path / "r",
                                   dataset="digits", n=2, seed=None, retries=1,
                                   progress=False))
    assert status == EXIT_STOPPED
    assert calls and calls[0] is True  # switched off while it was on, before closing
    run = json.loads((tmp_path / "r" / "run.json").read_text())
    assert "Timeout" in run["error"] and run["status"] == "stopped"
