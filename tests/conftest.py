"""Shared fixtures: real data through HIL_DATA_DIR, a fitted γ = 15 decoder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = os.environ.get("HIL_DATA_DIR")
    if not d or not Path(d).is_dir():
        pytest.skip("real data not found: set HIL_DATA_DIR to the shared data folder "
                    "(the Makefile does when ../shared/data exists)")
    return Path(d)


@pytest.fixture(scope="session")
def encoder():
    from simulation import DualVortexEncoder

    return DualVortexEncoder()


@pytest.fixture(scope="session")
def gamma15_ridge(encoder):
    """The paper's γ = 15 training set (10,000 speckles) and its ridge decoder."""
    from simulation import LinearDecoder, encode_batched, speckle

    imgs = speckle(10000, 15.0, seed=0)
    dec = LinearDecoder().fit(encode_batched(encoder, imgs), imgs, method="ridge",
                              encoder=encoder)
    return imgs, dec
