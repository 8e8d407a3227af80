"""A check (helper "estimator"): do decoder fits give the same numbers before and after
LinearDecoder took scikit-learn's shape?

Fits with whichever ``simulation`` is first on sys.path (the old keywords: they run on both
trees) and writes weights and chosen α to argv[1] (.npz). Run it against the tree before the
change and here, then compare key by key::

    git archive c28c6cf | tar -x -C /tmp/old
    (cd /tmp/old && PYTHONPATH=/tmp/old python /work/main/experiments/estimator_fits_before_after.py /tmp/a.npz)
    python experiments/estimator_fits_before_after.py /tmp/b.npz
"""  # noqa: E501

from __future__ import annotations

import sys
import warnings

import numpy as np
import torch


def main(path: str) -> None:
    from simulation import DualVortexEncoder, LinearDecoder, speckle
    from simulation.atomic import atomic_open

    warnings.simplefilter("ignore", DeprecationWarning)  # the old keywords, on purpose
    enc = DualVortexEncoder()
    imgs = speckle(1200, 15.0, seed=7)
    pats = enc(imgs)
    out: dict[str, np.ndarray] = {}

    def keep(name: str, dec) -> None:
        out[name] = dec.weight_.numpy()
        out[name + "_a"] = np.array(np.nan if dec.alpha_ is None else dec.alpha_)

    keep("ridge32", LinearDecoder(device="cpu").fit(pats, imgs, encoder=enc, seed=2))
    prior = LinearDecoder(alpha=1.0, device="cpu").fit(pats[:900], imgs[:900], encoder=enc)
    keep("ridge32_fixed", prior)
    # n < d with a zero noise term (calibration with train_averaging=1)
    keep("toward_small", LinearDecoder(device="cpu").fit_toward(
        pats[:300], imgs[:300], prior=prior, encoder=enc, noise_var=torch.zeros(2048),
        val_patterns=pats[1000:], val_images=imgs[1000:]))
    keep("toward_split", LinearDecoder(device="cpu").fit_toward(
        pats[:300], imgs[:300], encoder=enc, noise_var=torch.full((2048,), 1e-3)))
    with atomic_open(path, "wb") as f:  # argv[1] as given: np.savez(f) adds no .npz
        np.savez(f, **out)
    print({k: float(v) for k, v in out.items() if k.endswith("_a")})


if __name__ == "__main__":
    main(sys.argv[1])
