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


#: test modules, heaviest first: under ``make test`` (pytest-xdist, ``--dist loadscope``) a
#: module is one unit of work, handed to the next free worker in this order, so the long
#: ones start first and short ones fill the end (longest-first scheduling). Measured with
#: ``--durations``; an entry out of date costs time, never a result.
HEAVY_FIRST = ("test_calibration", "test_calibration_model", "test_experiments_paper",
               "test_decoders", "test_drift", "test_capture_faults",
               "test_calibration_robust", "test_safety_signals",
               "test_experiments_paper_cifar100", "test_quality_gates", "test_session_kill",
               "test_attention_probe", "test_calibration_beam", "test_capture_decoders",
               "test_experiments_paper_speed", "test_experiments_sweep")


def pytest_collection_modifyitems(config, items) -> None:
    """Modules in ``HEAVY_FIRST`` order, then the others as collected; a module's tests
    stay together and in their order (its module-scoped fixtures are built once)."""
    rank = {name: k for k, name in enumerate(HEAVY_FIRST)}

    def key(item) -> int:
        module = getattr(item, "module", None)
        name = module.__name__.rpartition(".")[2] if module is not None else ""
        return rank.get(name, len(rank))

    items.sort(key=key)  # stable
