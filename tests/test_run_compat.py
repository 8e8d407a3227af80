"""``hil run`` refuses a decoder, mask, calibration, bench or imaging config that do not
belong together (one line naming the setting; ``--force`` runs anyway and records it)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from session_helpers import quick_decoder, small_bench

from calibration.imaging_config import ImagingConfig
from calibration.store import CalibrationSet, StepResult, file_sha256
from hil.run_checks import IncompatibleRunError
from hil.session import RunConfig, run_session, write_results


def _calibration(tmp_path: Path, *, bench_cfg: dict | None = None,
                 imaging: ImagingConfig | None = None) -> tuple[Path, Path]:
    """A calibration made on ``bench_cfg`` (geometry from the bench's truth, no flaws), with
    a twin-trained decoder written beside it and the imaging config it records."""
    from calibration.capture import device_identities
    from calibration.truth import truth_model_to_camera
    from devices.bench import open_bench

    out = tmp_path / "cal"
    out.mkdir(parents=True)
    with open_bench(bench_cfg or small_bench()) as bench:
        a = truth_model_to_camera(bench, 32, 8)
        devices = device_identities(bench)
    cal = CalibrationSet(devices=devices)
    cal.set("geometry", StepResult("geometry", values={"model_to_camera": a, "size": 32,
                                                       "block": 8}))
    dec = quick_decoder(out / "decoder_twin.pt")
    cal.set("decoders", StepResult("decoders", values={
        "decoder_files": {"twin": {"path": "decoder_twin.pt",
                                   "sha256": file_sha256(out / "decoder_twin.pt")}},
        "default_decoder": "twin", "encoder": dec.encoder_signature_,
        "imaging_config": (imaging or ImagingConfig()).to_dict()}))
    cal.save(out)
    return out, out / "decoder_twin.pt"


def _run(tmp_path, name="run", **kw) -> RunConfig:
    base = {"bench": small_bench(), "out": tmp_path / name, "dataset": "digits", "n": 2,
            "seed": None, "progress": False}
    return RunConfig(**{**base, **kw})


def _random_mask(tmp_path: Path) -> Path:
    from hil.masks import PhaseMask, save_mask

    phase = np.random.default_rng(0).uniform(0, 2 * np.pi, (2, 32, 32)).astype(np.float32)
    return save_mask(PhaseMask(phase), tmp_path / "random.npz")


def test_a_mask_the_decoder_was_not_fitted_for_is_refused(tmp_path):
    """Reproducer: a random 2-channel mask with a dual-vortex decoder used to run to exit 0
    (SSIM about 0); now it stops before any capture, naming the mask hash."""
    dec = tmp_path / "dec.pt"
    quick_decoder(dec)
    mask = _random_mask(tmp_path)
    with pytest.raises(IncompatibleRunError,
                       match=r"^--mask/--decoder: mask_sha256.*add --force to run anyway$"):
        run_session(_run(tmp_path, decoder=dec, mask=mask))
    assert not (tmp_path / "run" / "captures.h5").exists()
    # forced: it runs, and run.json says what it was forced past
    assert run_session(_run(tmp_path, "forced", decoder=dec, mask=mask, force=True)) == 0
    run = json.loads((tmp_path / "forced" / "run.json").read_text())
    assert run["forced"] and "mask_sha256" in run["forced"][0]
    assert run["config"]["force"] is True


def test_the_mask_s_optics_are_used_for_imaging(tmp_path):
    """A mask made for phase depth π, with its own decoder: the bench shows the object at
    depth π (it used to show π/2 whatever the mask said)."""
    from hil.masks import mask_from_encoder, save_mask
    from simulation import DualVortexEncoder, LinearDecoder, speckle

    enc = DualVortexEncoder(phase_depth=math.pi)
    imgs = speckle(300, 15, seed=0)
    dec = LinearDecoder(alpha=1.0, device="cpu").fit(enc(imgs), imgs, encoder=enc)
    dec.save(tmp_path / "deep.pt")
    mask = save_mask(mask_from_encoder(enc), tmp_path / "deep.npz")
    assert run_session(_run(tmp_path, decoder=tmp_path / "deep.pt", mask=mask)) == 0
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["imaging"]["encoder"]["phase_depth"] == pytest.approx(math.pi)
    assert run["imaging"]["phase_depth"] == pytest.approx(math.pi)


def test_decoding_checks_the_encoder_of_the_captures(tmp_path):
    """write_results passes the bench's encoder signature: patterns of another encoder are
    refused by the decoder (EncoderMismatchError never fired on the bench before)."""
    from calibration.imaging_config import EncoderSpec
    from hil.run_checks import bench_signature
    from simulation import EncoderMismatchError, LinearDecoder, load_dataset

    dec = tmp_path / "dec.pt"
    quick_decoder(dec)
    seen = []
    real_predict = LinearDecoder.predict

    def spy(self, patterns, **kw):
        seen.append(kw.get("encoder"))
        return real_predict(self, patterns, **kw)

    LinearDecoder.predict = spy
    try:
        assert run_session(_run(tmp_path, decoder=dec)) == 0
    finally:
        LinearDecoder.predict = real_predict
    assert seen and seen[0]["mask_sha256"] == EncoderSpec.vortex((1, 3)).mask_sha256

    decoder = LinearDecoder.load(dec)
    images, labels = load_dataset("digits", "test", n=2)
    ok = bench_signature(EncoderSpec.vortex((1, 3)), decoder)
    assert write_results(tmp_path / "run", images, labels, decoder, encoder=ok)["n_captured"] == 2
    other = bench_signature(EncoderSpec(torch.zeros(2, 32, 32)), decoder)
    with pytest.raises(EncoderMismatchError, match="mask_sha256"):
        write_results(tmp_path / "run", images, labels, decoder, encoder=other)


def test_decoder_defaults_to_the_calibration_s_and_a_foreign_one_is_refused(tmp_path):
    cal, twin = _calibration(tmp_path)
    assert run_session(_run(tmp_path, calibration=cal)) == 0
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["config"]["decoder"] == str(twin.resolve())
    assert run["config"]["imaging_config"] == ImagingConfig().to_dict()
    # a decoder from `hil train` was not fitted through the calibrated bench model
    other = tmp_path / "trained.pt"
    quick_decoder(other, n=500)
    with pytest.raises(IncompatibleRunError,
                       match=r"^--decoder: .*trained.pt is not one of the calibration's"):
        run_session(_run(tmp_path, "r2", calibration=cal, decoder=other))
    with pytest.raises(ValueError, match="^--decoder: required without --calibration"):
        run_session(_run(tmp_path, "r3"))


def test_imaging_config_must_match_the_calibration_s(tmp_path):
    """Reproducer: decoders made in split mode were applied to sequential captures."""
    cal, _ = _calibration(tmp_path, imaging=ImagingConfig(mode="split"))
    with pytest.raises(IncompatibleRunError,
                       match=r"^imaging config vs the calibration's: mode: 'split' there, "
                             r"'sequential' here; add --force"):
        run_session(_run(tmp_path, calibration=cal, mode="sequential"))
    # left out, the mode is the calibration's
    cal2, _ = _calibration(tmp_path / "b", imaging=ImagingConfig(averaging=2))
    assert run_session(_run(tmp_path, "ok", calibration=cal2)) == 0
    run = json.loads((tmp_path / "ok" / "run.json").read_text())
    assert run["imaging"]["averaging"] == 2 and run["forced"] == []


def test_a_calibration_from_another_bench_is_refused(tmp_path):
    """Same sensor shapes, another bench (its device identities differ): refused."""
    other = small_bench()
    other["seed"] = 4
    cal, _ = _calibration(tmp_path, bench_cfg=other)
    with pytest.raises(IncompatibleRunError,
                       match=r"^--calibration: made on another bench: slm device_id: "
                             r"calibration 'sim:slm:seed4', bench 'sim:slm:seed3'"):
        run_session(_run(tmp_path, calibration=cal))
    assert not (tmp_path / "run" / "captures.h5").exists()


def test_cli_one_line_and_force_flag(tmp_path, capsys):
    from session_helpers import bench_toml

    from hil.cli import main

    bench = bench_toml(tmp_path / "b.toml")
    dec = tmp_path / "dec.pt"
    quick_decoder(dec)
    mask = _random_mask(tmp_path)
    argv = ["run", str(bench), "--decoder", str(dec), "--mask", str(mask), "--dataset",
            "digits", "--n", "1", "--no-progress"]
    assert main(argv + ["--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hil: error: --mask/--decoder: mask_sha256")
    assert main(argv + ["--out", str(tmp_path / "f"), "--force"]) == 0
    # digits: the check must not depend on a real data set being found (HIL_DATA_DIR)
    assert main(["run", str(bench), "--dataset", "digits", "--out", str(tmp_path / "n")]) == 2
    assert "--decoder: required without --calibration" in capsys.readouterr().err
