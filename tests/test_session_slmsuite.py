"""The bench session against slmsuite's own simulated devices (not our wrapped bench),
through the slmsuite adapter: slmsuite's SimulatedSLM + SimulatedCamera, its own
Fourier map (M, b) as the geometry."""

from __future__ import annotations

import json

import numpy as np
import torch
from session_helpers import quick_decoder

from calibration.geometry import affine_from_fourier
from calibration.imaging import BenchImager
from calibration.imaging_config import ImagingConfig
from devices.bench import Bench
from devices.slmsuite_adapter import SlmsuiteCamera, SlmsuiteSLM
from hil.session import RunConfig, run_session
from simulation import (
    DualVortexEncoder,
    load_dataset,
    reconstruct,
    ssim,
)


def test_session_on_slmsuite_simulated_devices(tmp_path):
    from slmsuite.hardware.cameras.simulated import SimulatedCamera
    from slmsuite.hardware.slms.simulated import SimulatedSLM

    enc = DualVortexEncoder()
    dec = quick_decoder()
    dec_path = dec.save(tmp_path / "dec.pt")

    sslm = SimulatedSLM((512, 512), bitdepth=8, pitch_um=(8, 8), wav_um=0.633)
    scam = SimulatedCamera(sslm, resolution=(512, 512), pitch_um=(5.5, 5.5), bitdepth=12)
    M, b = scam.build_affine(0.05, units="m", theta=np.radians(2.0), offset=(259.0, 254.0))
    scam.set_affine(M, b)
    bench = Bench(slm=SlmsuiteSLM(sslm), camera=SlmsuiteCamera(scam, pitch_um=5.5))
    geometry = affine_from_fourier(M, b, bench.slm, 32, bench.slm.block_size((32, 32)))
    # slmsuite normalises the far field to unit power: pick an exposure that fills ~70 %
    imager = BenchImager(bench, config=ImagingConfig(geometry=geometry))
    frames = imager.capture(torch.full((1, 32, 32), 0.5)).frames
    exposure = bench.camera.get_exposure() * 0.7 * (2**12 - 1) / max(float(frames.max()), 1.0)

    cfg = RunConfig(bench=bench, decoder=dec_path, out=tmp_path / "run", geometry=geometry,
                    exposure_s=float(exposure), dataset="digits", n=12, seed=0,
                    progress=False)
    assert run_session(cfg) == 0
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["n_captured"] == 12
    images, _ = load_dataset("digits", "test", n=12, seed=0)
    sim = float(ssim(images, reconstruct(images, enc, dec)).mean())
    # the same decoder on slmsuite's devices keeps most of its simulated quality
    assert res["ssim_mean"] > 0.5 * sim, (res["ssim_mean"], sim)
