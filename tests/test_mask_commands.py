"""Masks as files: `hil mask new | show | push | export`, `hil train --learn-mask`, and one
phase -> grey path (wavelength scaling in the device layer) for runs, calibration, push and
export."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from session_helpers import FAST_CALIBRATION, calibration_bench, small_bench

from hil.cli import main
from hil.masks import load_mask, load_onto_slm, mask_grey_levels, vortex_mask


def _record_displays(slm, monkeypatch) -> list[np.ndarray]:
    """Every grey-level array the SLM sends to its hardware, copied (its ``write_hook``)."""
    shown: list[np.ndarray] = []
    monkeypatch.setattr(slm, "write_hook", lambda display: shown.append(display.copy()))
    return shown


def test_new_show_export_push_round_trip_on_sim_toml(tmp_path, capsys, monkeypatch):
    """`mask new` -> `show` -> `export` (BMP and PNG) -> `push` on the shipped sim.toml: the
    exported images hold what the simulated SLM displays for the bare mask."""
    from devices import open_bench
    from simulation import DualVortexEncoder

    m = tmp_path / "m.npz"
    assert main(["mask", "new", "--charges", "1", "3", "--out", str(m)]) == 0
    mask = load_mask(m)
    assert mask.charges == [1, 3] and mask.channels == 2 and mask.grid == 32
    # the file is the twin's encoder: same hash as a `hil train --charges 1 3` decoder records
    assert mask.signature_hash == DualVortexEncoder((1, 3)).signature()["mask_sha256"]
    assert len(mask.sha256) == 64 and mask.sha256.startswith(mask.signature_hash)
    assert main(["mask", "new", "--out", str(m)]) == 2  # exists, no --force
    assert "exists" in capsys.readouterr().err

    assert main(["mask", "show", str(m)]) == 0
    assert '"sha256": "' + mask.sha256 in capsys.readouterr().out

    assert main(["mask", "export", str(m), "--slm-shape", "512", "512", "--format", "bmp",
                 "--out", str(tmp_path / "e.bmp")]) == 0
    assert main(["mask", "export", str(m), "--slm-shape", "512", "512", "--channel", "1",
                 "--out", str(tmp_path / "e1.png")]) == 0
    bmp = [cv2.imread(str(tmp_path / f"e_c{k}.bmp"), cv2.IMREAD_UNCHANGED) for k in (0, 1)]
    png1 = cv2.imread(str(tmp_path / "e1.png"), cv2.IMREAD_UNCHANGED)
    assert bmp[0].dtype == np.uint8 and bmp[0].shape == (512, 512)
    np.testing.assert_array_equal(png1, bmp[1])

    with open_bench("sim.toml") as bench:
        shown = _record_displays(bench.slm, monkeypatch)
        for k in (0, 1):
            load_onto_slm(mask, bench.slm, channel=k, settle=False)
    for k in (0, 1):
        np.testing.assert_array_equal(bmp[k], shown[k])

    pushed = tmp_path / "pushed.png"
    assert main(["mask", "push", "sim.toml", str(m), "--channel", "1", "--save",
                 str(pushed)]) == 0
    out = capsys.readouterr().out
    assert "channel 1" in out and "grating" in out
    with open_bench("sim.toml") as bench:  # what `hil run` shows for a blank image
        from calibration.imaging import BenchImager, ImagingConfig

        shown = _record_displays(bench.slm, monkeypatch)
        imager = BenchImager(bench, None, mask, ImagingConfig())
        imager.prepare()
        imager.capture(np.zeros((1, 32, 32), np.float32))
    np.testing.assert_array_equal(cv2.imread(str(pushed), cv2.IMREAD_UNCHANGED), shown[1])


def test_export_and_push_refusals(tmp_path, capsys):
    m = tmp_path / "m.npz"
    assert main(["mask", "new", "--out", str(m)]) == 0
    cases = [
        (["mask", "export", str(m), "--slm-shape", "16", "16"], "does not fit"),
        (["mask", "export", str(m), "--slm-shape", "64", "64", "--bitdepth", "10",
          "--format", "bmp"], "BMP holds 8-bit"),
        (["mask", "export", str(m), "--slm-shape", "64", "64", "--channel", "2"], "--channel"),
        (["mask", "export", str(m), "--slm-shape", "64", "64", "--out",
          str(tmp_path / "x.bmp"), "--format", "png"], "--out"),
        # grey range 2π at 0.5 µm cannot reach 2π at the mask's 0.633 µm
        (["mask", "export", str(m), "--slm-shape", "64", "64", "--wav-design-um", "0.5"],
         "cannot be shown"),
        (["mask", "push", "sim.toml", str(m), "--channel", "5"], "--channel"),
        (["mask", "push", "sim.toml", str(tmp_path / "none.npz")], "none.npz"),
        (["mask", "new", "--out", str(tmp_path / "m.txt")], None),
    ]
    for argv, words in cases:
        code = None
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse refusals
            code = exc.code
        err = capsys.readouterr().err
        assert code == 2, argv
        if words:
            assert words in err, (argv, err)
    assert not list(tmp_path.glob("*.png")) and not list(tmp_path.glob("*.bmp"))


def test_export_16_bit_png(tmp_path):
    m = tmp_path / "m.npz"
    assert main(["mask", "new", "--out", str(m)]) == 0
    assert main(["mask", "export", str(m), "--slm-shape", "64", "96", "--bitdepth", "12",
                 "--channel", "0", "--out", str(tmp_path / "g.png")]) == 0
    img = cv2.imread(str(tmp_path / "g.png"), cv2.IMREAD_UNCHANGED)
    assert img.dtype == np.uint16 and img.shape == (64, 96)
    np.testing.assert_array_equal(img, mask_grey_levels(load_mask(m), (64, 96), bitdepth=12))
    assert img.max() == 4095 and img[0, 0] == 4095


def _scaled_bench(wav_design_um: float):
    """The small simulated bench with an SLM whose grey range is 2π at ``wav_design_um``."""
    from devices import open_bench

    bench = open_bench(small_bench())
    slm = bench.slm
    slm.wav_design_um = slm.wrapped.wav_design_um = float(wav_design_um)
    return bench


def test_run_calibration_push_and_export_show_identical_grey_levels(monkeypatch):
    """One phase -> grey path: with a wavelength scaling (SLM designed for 0.8 µm, run at
    0.633 µm) a mask shown through ``load_onto_slm`` (set_phase), through ``BenchImager``
    (the path of `hil run` and of calibration), by `hil mask push` and by `hil mask export`
    gives the same grey levels, all scaled. Before the scaling moved into the device layer,
    ``BenchImager`` showed the unscaled phase (a deeper phase than the mask's)."""
    from calibration.imaging import BenchImager, ImagingConfig
    from devices.phase import phase_to_grey
    from hil.commands_mask import push_mask

    mask = vortex_mask((1, 3))
    bare = ImagingConfig(grating=None, margin="flat", correct_aberrations=False)
    with _scaled_bench(0.8) as bench:
        slm = bench.slm
        assert slm.phase_scaling == pytest.approx(0.633 / 0.8)
        shown = _record_displays(slm, monkeypatch)
        direct = load_onto_slm(mask, slm, channel=1, settle=False).copy()
        imager = BenchImager(bench, None, mask, bare)
        imager.prepare()
        imager.capture(np.zeros((1, 32, 32), np.float32))  # sequential: frames 0 and 1
        pushed, _ = push_mask(bench, mask, channel=1)
        # the settings `hil run` would use, as push_mask asks for them: the bare ones
        monkeypatch.setattr("hil.run_checks.run_imaging_config", lambda *a, **kw: bare)
        pushed_bare, _ = push_mask(bench, mask, channel=1)
    np.testing.assert_array_equal(shown[2], direct)  # run/calibration path, channel 1
    np.testing.assert_array_equal(pushed_bare, direct)  # push with the same settings
    exported = mask_grey_levels(mask, slm.shape, channel=1, wav_design_um=0.8)
    np.testing.assert_array_equal(exported, direct)
    # and the levels are the scaled ones: φ·0.633/0.8 on the ideal response
    s = slm.block_size((32, 32))
    phase = np.mod(np.repeat(np.repeat(mask.phase_stack()[1], s, 0), s, 1), 2 * np.pi)
    expect = phase_to_grey((phase * np.float32(0.633 / 0.8)).astype(np.float32), 8)
    np.testing.assert_array_equal(direct, expect)
    unscaled = phase_to_grey(phase.astype(np.float32), 8)
    assert np.mean(direct != unscaled) > 0.5
    # push (grating, margin as `hil run`) is the run's composition for a blank object
    assert not np.array_equal(pushed, direct)


def test_scaling_realises_the_phase_on_the_simulated_slm():
    """The scaled grey levels give the asked phase on slmsuite's SimulatedSLM (which models
    the 2π-at-wav_design_um grey range), to half a level, up to a constant."""
    from devices.simulated import SimSLM

    slm = SimSLM(shape=(64, 64), wav_um=0.633, wav_design_um=0.8)
    phase = np.random.default_rng(0).uniform(-10, 10, (64, 64)).astype(np.float32)
    real = np.asarray(slm.wrapped._display2phase(slm.set_phase(phase, settle=False)))
    err = np.angle(np.exp(1j * (real - phase)))
    err = np.angle(np.exp(1j * (err - np.angle(np.mean(np.exp(1j * err))))))
    assert np.abs(err).max() <= np.pi / 256 / slm.phase_scaling * 1.05
    np.testing.assert_array_equal(slm.phase, phase)  # ``phase`` keeps what was asked for


def test_scaling_above_one_is_refused_without_a_lut_everywhere(monkeypatch):
    """An SLM whose grey range is 2π at 0.5 µm, used at 0.633 µm, cannot show 2π: every
    caller is refused before anything reaches the device; a LUT lifts the refusal."""
    from calibration.imaging import BenchImager, ImagingConfig
    from devices import ConfigError
    from hil.commands_mask import push_mask

    mask = vortex_mask((1, 3))
    with _scaled_bench(0.5) as bench:
        shown = _record_displays(bench.slm, monkeypatch)
        for show in (lambda: bench.slm.set_phase(np.zeros((8, 8), np.float32)),
                     lambda: load_onto_slm(mask, bench.slm),
                     lambda: BenchImager(bench, None, mask, ImagingConfig()).capture(
                         np.zeros((1, 32, 32), np.float32)),
                     lambda: push_mask(bench, mask)):
            with pytest.raises(ConfigError, match="cannot be shown.*LUT"):
                show()
        assert shown == []
        lut_cal = SimpleNamespace(phase_response_rad=2 * np.pi * (255 - np.arange(256)) / 256,
                                  zernike_noll_rad=None, model_to_camera=None, dark_frame=None)
        grey, imager = push_mask(bench, mask, calibration=lut_cal)
        assert imager.lut_applied and bench.slm.lut is not None and len(shown) == 1
    with pytest.raises(ConfigError, match="cannot be shown"):
        mask_grey_levels(mask, (64, 64), wav_design_um=0.5)


def test_push_applies_lut_and_aberration_correction_as_a_run_does(monkeypatch):
    from calibration.imaging import BenchImager, ImagingConfig
    from hil.commands_mask import push_mask

    mask = vortex_mask((1, 3))
    cal = SimpleNamespace(phase_response_rad=2 * np.pi * (255 - np.arange(256)) / 256 * 0.95,
                          zernike_noll_rad={4: 0.8, 6: -0.3}, model_to_camera=None,
                          dark_frame=None)
    from devices import open_bench

    with open_bench(small_bench()) as bench:
        shown = _record_displays(bench.slm, monkeypatch)
        grey, imager = push_mask(bench, mask, calibration=cal, channel=0)
        assert imager.lut_applied and imager.correction_applied
        run = BenchImager(bench, cal, mask, ImagingConfig()).prepare()
        run.capture(np.zeros((1, 32, 32), np.float32))
    np.testing.assert_array_equal(grey, shown[1])  # the run's channel-0 frame
    np.testing.assert_array_equal(shown[0], shown[1])


def test_train_learn_mask_writes_mask_next_to_decoder(tmp_path, capsys):
    from calibration.imaging_config import EncoderSpec
    from simulation import LinearDecoder

    out = tmp_path / "d.pt"
    assert main(["train", "--learn-mask", "--count", "120", "--mask-count", "40",
                 "--mask-steps", "3", "--alpha", "1.0", "--out", str(out)]) == 0
    mask_path = tmp_path / "d.mask.npz"
    assert mask_path.is_file() and str(mask_path) in capsys.readouterr().out
    mask, dec = load_mask(mask_path), LinearDecoder.load(out)
    assert mask.charges == "learned" and mask.channels == 2
    assert mask.signature_hash == dec.encoder_signature_["mask_sha256"]
    assert EncoderSpec.from_mask(mask).signature_differences(dec.encoder_signature_) == []
    assert mask.provenance["mask_steps"] == 3 and mask.provenance["decoder"] == str(out)
    start = vortex_mask((1, 3))
    assert not np.array_equal(mask.phase_rad, start.phase_rad)  # the masks moved
    # a vortex mask does not belong with this decoder
    assert EncoderSpec.from_mask(start).signature_differences(dec.encoder_signature_)
    # --mask-out without --learn-mask has nothing to write (--learn-mask --on-bench is
    # supported: tests/test_capture_decoders.py)
    assert main(["train", "--mask-out", str(tmp_path / "x.npz"), "--out", str(out)]) == 2


def test_lut_step_sweeps_raw_grey_levels_under_wavelength_scaling(tmp_path):
    """Calibration's LUT step shows grey levels as they are (``set_grey_levels``), so it
    measures the phase response of an SLM with a wavelength scaling; through ``set_phase``
    the scaled levels differed from the ones swept and the step stopped."""
    from calibration import errors_vs_truth, run_calibration
    with calibration_bench(1) as bench:
        bench.slm.wav_design_um = bench.slm.wrapped.wav_design_um = 0.7
        cal = run_calibration(bench, tmp_path / "cal", steps="dark,geometry,lut",
                              options=FAST_CALIBRATION, progress=False)
        errors = errors_vs_truth(cal, bench)
    assert errors["lut_rms_rad"] < 0.1, errors


def test_set_grey_levels_shows_levels_as_they_are_and_refuses_bad_input():
    from devices.simulated import SimSLM

    slm = SimSLM(shape=(32, 32), wav_um=0.633, wav_design_um=0.5)  # phase_scaling > 1
    levels = np.arange(32 * 32, dtype=np.int64).reshape(32, 32) % 256
    shown = slm.set_grey_levels(levels, settle=False)  # no refusal: no phase is converted
    np.testing.assert_array_equal(shown, levels)
    np.testing.assert_array_equal(np.asarray(slm.wrapped.display), levels)
    for bad, kind in ((levels.astype(np.float32), TypeError), (levels[:8], ValueError),
                      (levels + 1, ValueError), (levels - 1, ValueError)):
        with pytest.raises(kind, match="levels"):
            slm.set_grey_levels(bad)
