"""Phase-mask files: round trips, refusals, sign convention, wavelength scaling, LUT."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from session_helpers import small_bench

from hil.masks import PhaseMask, load_mask, load_onto_slm, mask_from_encoder, plot_mask, save_mask


@pytest.mark.parametrize("suffix", [".npz", ".h5"])
def test_round_trip_keeps_phase_and_metadata(tmp_path, suffix):
    from simulation import DualVortexEncoder

    m = mask_from_encoder(DualVortexEncoder(), wav_um=0.633, pitch_um=8.0,
                          provenance={"run": "test"})
    p = save_mask(m, tmp_path / f"m{suffix}")
    back = load_mask(p)
    np.testing.assert_array_equal(back.phase_rad, m.phase_rad)
    assert back.charges == [1, 3] and back.grid == 32 and back.channels == 2
    assert back.wav_um == 0.633 and back.pitch_um == 8.0
    assert back.provenance["run"] == "test" and "encoder" in back.provenance
    learned = PhaseMask(np.zeros((16, 16), np.float32))
    assert load_mask(save_mask(learned, tmp_path / f"l{suffix}")).charges == "learned"


def test_h5_mask_metadata_is_typed_attributes_with_units(tmp_path):
    """Format 2: h5dump shows grid = 32, wav_um = 0.633 (units um), charges = [1, 3]; a
    format-1 file (one JSON string) still reads; a number stored as a string is refused."""
    import json

    import h5py

    from simulation import DualVortexEncoder

    m = mask_from_encoder(DualVortexEncoder(), wav_um=0.633, provenance={"run": "t"})
    p = save_mask(m, tmp_path / "m.h5")
    with h5py.File(p, "r") as f:
        a = f.attrs
        assert a["grid"] == 32 and a["grid"].dtype == np.int64
        assert a["wav_um"] == 0.633 and a["wav_um_units"] == "um"
        assert a["charges"].tolist() == [1, 3] and a["format_version"] == 2
        assert "pitch_um" not in a and "metadata" not in a  # None: no attribute
        assert f["phase_rad"].attrs["units"] == "rad"
        assert json.loads(a["provenance_json"])["run"] == "t"
    old = tmp_path / "old.h5"
    with h5py.File(old, "w") as f:  # what format 1 wrote
        f.create_dataset("phase_rad", data=m.phase_rad)
        f.attrs["metadata"] = json.dumps(m.metadata(), default=str)
    back = load_mask(old)
    assert back.sha256 == m.sha256 and back.charges == [1, 3]
    with h5py.File(p, "r+") as f:
        f.attrs["grid"] = "32"  # a string where a number belongs
    with pytest.raises(ValueError, match="grid"):
        load_mask(p)


def test_bad_masks_and_files_are_refused(tmp_path):
    with pytest.raises(ValueError, match="phase_rad"):
        PhaseMask(np.zeros((4, 5)))
    with pytest.raises(ValueError, match="finite"):
        PhaseMask(np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match="charges"):
        PhaseMask(np.zeros((2, 4, 4)), charges=[1])
    with pytest.raises(ValueError, match=".npz or .h5"):
        save_mask(PhaseMask(np.zeros((4, 4))), tmp_path / "m.txt")
    junk = tmp_path / "junk.npz"
    np.savez(junk, x=np.zeros(3))
    with pytest.raises(ValueError, match="not a phase-mask file"):
        load_mask(junk)
    with pytest.raises(FileNotFoundError):
        load_mask(tmp_path / "missing.npz")


def _sim_slm(shape=(64, 64), **kw):
    from devices.simulated import SimSLM

    return SimSLM(shape=shape, **kw)


def test_grid_that_does_not_fit_and_wrong_wavelength_are_refused():
    slm = _sim_slm((64, 48))
    with pytest.raises(ValueError, match=r"64x64 grid does not fit the SLM of 64x48"):
        load_onto_slm(PhaseMask(np.zeros((64, 64))), slm)
    with pytest.raises(ValueError, match="0.532 µm.*0.633 µm"):
        load_onto_slm(PhaseMask(np.zeros((16, 16)), wav_um=0.532), slm)


def test_sign_convention_ramp_goes_to_plus_x_on_model_and_bench():
    """A phase that rises along columns sends light to +x in the twin and on the bench."""
    from devices.bench import open_bench
    from simulation import fraunhofer

    n = 32
    ramp = (2 * np.pi * 4 / n * np.arange(n))[None, :].repeat(n, 0).astype(np.float32)
    twin = fraunhofer(torch.polar(torch.ones(n, n), torch.from_numpy(ramp))).abs()
    r, c = np.unravel_index(int(twin.argmax()), twin.shape)
    assert (r, c) == (n // 2, n // 2 + 4)
    with open_bench(small_bench()) as bench:
        bench.camera.set_exposure(1e-5)
        grey = load_onto_slm(PhaseMask(ramp), bench.slm)
        assert grey[0, 0] == 2**bench.slm.bitdepth - 1  # zero phase = top grey level
        frame = bench.camera.get_image().astype(float)
        load_onto_slm(PhaseMask(np.zeros((n, n), np.float32)), bench.slm)
        flat = bench.camera.get_image().astype(float)
    yx = np.unravel_index(int(frame.argmax()), frame.shape)
    yx0 = np.unravel_index(int(flat.argmax()), flat.shape)
    assert yx[1] > yx0[1] + 5 and abs(yx[0] - yx0[0]) <= 1


def test_lut_and_wavelength_scaling():
    from slmsuite.hardware.slms.simulated import SimulatedSLM

    from devices.phase import phase_to_grey
    from devices.slmsuite_adapter import SlmsuiteSLM

    mask = PhaseMask(np.full((8, 8), np.pi, np.float32), wav_um=0.5)
    # a slmsuite SLM whose grey range is 2π at 1.0 µm, used at 0.5 µm: half the range
    slm = SlmsuiteSLM(SimulatedSLM((16, 16), bitdepth=8, wav_um=0.5, wav_design_um=1.0))
    grey = load_onto_slm(mask, slm, settle=False)
    expect = phase_to_grey(np.full((16, 16), np.pi / 2, np.float32), 8)
    np.testing.assert_array_equal(grey, expect)
    # with a measured response (LUT), radians at the operating wavelength go through it
    response = 2 * np.pi * (255 - np.arange(256)) / 256 * 0.9
    grey = load_onto_slm(mask, slm, phase_response_rad=response, settle=False)
    assert slm.lut is not None
    np.testing.assert_array_equal(grey, phase_to_grey(np.full((16, 16), np.pi, np.float32), 8,
                                                      slm.lut))
    small_range = SlmsuiteSLM(SimulatedSLM((16, 16), bitdepth=8, wav_um=0.5, wav_design_um=0.4))
    with pytest.raises(ValueError, match="cannot be shown"):
        load_onto_slm(mask, small_range)


def test_mask_show_cli(tmp_path, capsys):
    from hil.cli import main
    from simulation import DualVortexEncoder

    p = save_mask(mask_from_encoder(DualVortexEncoder()), tmp_path / "dv.npz")
    assert main(["mask", "show", str(p)]) == 0
    assert (tmp_path / "dv.png").stat().st_size > 1000
    assert '"charges": [1, 3]' in capsys.readouterr().out
    assert plot_mask(PhaseMask(np.zeros((8, 8))), tmp_path / "z.png").is_file()
    assert main(["mask", "show", str(tmp_path / "nope.npz")]) == 2


def test_content_hash_matches_encoder_signature_and_guards_the_file(tmp_path):
    """``sha256`` is recorded; its first 16 digits are the encoder signature's mask hash;
    a file whose phase was altered after writing is refused."""
    from simulation import DualVortexEncoder

    enc = DualVortexEncoder((1, 3))
    m = mask_from_encoder(enc)
    assert m.signature_hash == enc.signature()["mask_sha256"]
    assert m.optics()["xmax"] == 10.0 and m.optics()["phase_depth"] == m.phase_depth
    p = save_mask(m, tmp_path / "m.npz")
    with np.load(p) as z:
        phase, meta = z["phase_rad"].copy(), z["metadata"].copy()
    phase[0, 3, 4] += 1e-3  # one pixel flipped on disk
    np.savez(p, phase_rad=phase, metadata=meta)
    with pytest.raises(ValueError, match="sha256.*corrupted"):
        load_mask(p)
    np.savez(p, phase_rad=phase, metadata=np.array('{"format": "hil-phase-mask", "grid": 32}'))
    with pytest.raises(ValueError, match="bad phase-mask metadata"):
        load_mask(p)


def test_a_mask_figure_that_fails_half_written_leaves_no_file(tmp_path, monkeypatch):
    """plot_mask goes through simulation.atomic: a savefig that dies after writing part of
    the PNG (disk full, a crash) leaves neither a truncated figure nor a temporary file."""
    from matplotlib.figure import Figure

    def dies(self, fname, **kwargs):
        with open(fname, "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", dies)
    with pytest.raises(OSError, match="No space"):
        plot_mask(PhaseMask(np.zeros((8, 8))), tmp_path / "z.png")
    assert list(tmp_path.iterdir()) == []
