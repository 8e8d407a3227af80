"""A check (helper "estimator"): the bench fine-tuning of tests/test_bench_training.py
(3 steps x 32 captures on the flawed small bench): the α ``ridge_toward`` chose, the mean SSIM on
10 digits before and after, and the CPU seconds of the fine-tuning. Run from the repository root
with PYTHONPATH at a tree before the change, and here, to compare the two α grids.
"""

from __future__ import annotations

import sys
import time

import torch


def main() -> None:
    sys.path.insert(0, "tests")
    from session_helpers import small_bench

    from calibration.imaging import BenchImager, affine_from_fourier
    from calibration.imaging_config import ImagingConfig
    from devices.bench import open_bench
    from hil.bench_training import BenchEncoder, fine_tune_on_bench
    from simulation import DualVortexEncoder, LinearDecoder, load_dataset, speckle, ssim

    enc = DualVortexEncoder()
    train = speckle(800, 15, seed=0)
    dec = LinearDecoder(alpha=1.0, device="cpu").fit(enc(train), train, encoder=enc)
    test, _ = load_dataset("digits", "test", n=10)
    cfg = small_bench(noise=True, zero_order_fraction=0.02)
    cfg["flaws"] = True
    with open_bench(cfg) as bench:
        t = bench.truth
        geo = affine_from_fourier(t["camera_affine_M"], t["camera_affine_b"], bench.slm, 32, 8)
        imager = BenchImager(bench, config=ImagingConfig(geometry=geo))
        captured = torch.from_numpy(imager.capture(test).patterns)
        twin_only = float(ssim(test, dec.predict(captured)).mean())
        layer = BenchEncoder(imager, enc.masks_rad, learnable=False)
        c0 = time.process_time()
        res = fine_tune_on_bench(layer, dec.weight_, steps=3, batch=32, progress=False)
        cpu = time.process_time() - c0
    dec.weight_ = res["weight"]
    tuned = float(ssim(test, dec.predict(captured)).mean())
    print(f"twin_only {twin_only:.4f} tuned {tuned:.4f} alpha {res['alpha']:.4g} "
          f"fine_tune_cpu_s {cpu:.2f}")


if __name__ == "__main__":
    main()
