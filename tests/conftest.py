"""Shared fixtures: real data through HIL_DATA_DIR, a fitted γ = 15 decoder, the quick test
decoder as a file. Benches and the quick decoder themselves: ``session_helpers``.

Under pytest-xdist (``make test`` runs ``-n auto``) each worker gets its share of the cores
for torch, so two workers on two cores do not run four threads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // max(1, _WORKERS))))


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
    dec = LinearDecoder(method="ridge").fit(encode_batched(encoder, imgs), imgs,
                                            encoder=encoder)
    return imgs, dec


@pytest.fixture
def decoder_file(tmp_path) -> Path:
    """The quick twin-trained decoder (``session_helpers.quick_decoder``) saved in this test's
    own folder: a fresh file per test, fitted once per process."""
    from session_helpers import quick_decoder

    path = tmp_path / "decoder.pt"
    quick_decoder(path)
    return path


def pytest_collection_modifyitems(config, items) -> None:
    """Modules holding a ``slow`` test run first, each module kept whole (its module-scoped
    fixtures are built once), the others after in their usual order. Under ``make test``
    (pytest-xdist, ``--dist worksteal``) the first worker's share then starts with the long
    tests, and the end of the run is short tests that the idle worker steals: no worker is
    left alone with a minute-long test at the end."""
    slow = {item.module.__name__ for item in items
            if item.get_closest_marker("slow") is not None and hasattr(item, "module")}
    items.sort(key=lambda item: getattr(item, "module", None) is None
               or item.module.__name__ not in slow)  # stable: order kept within each group
