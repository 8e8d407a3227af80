"""CIFAR-100 readiness: the paper study's loader and classification path end to end on
synthetic files in the official CIFAR-100 python format (no CIFAR-100 data exists on
the project's machines). Written with plain ``pickle.dump`` of what the real files
hold; read back through `simulation.load_dataset` (its restricted unpickler)."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

N_TRAIN, N_TEST = 200, 100


def _write_cifar100(root: Path) -> Path:
    """``cifar-100-python/{train,test,meta}`` as the official archive has them."""
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        fine = [int(i % 100) for i in range(n)]
        # class-dependent brightness, so that the labels carry information
        base = (np.array(fine, dtype=np.float64)[:, None] * 2.0 + 20.0)
        data = np.clip(base + rng.normal(0, 30, (n, 3072)), 0, 255).astype(np.uint8)
        batch = {b"filenames": [f"img_{i}.png".encode() for i in range(n)],
                 b"batch_label": f"{split} batch".encode(),
                 b"fine_labels": fine, b"coarse_labels": [f // 5 for f in fine],
                 b"data": data}
        with open(d / split, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    meta = {b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]}
    with open(d / "meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return root


@pytest.fixture(scope="module")
def cifar100_dir(tmp_path_factory) -> Path:
    return _write_cifar100(tmp_path_factory.mktemp("cifar100_data"))


def test_synthetic_cifar100_loads_through_load_dataset(cifar100_dir):
    from experiments.paper.common import classification_split, present_sets
    from simulation import load_dataset

    x, y = load_dataset("cifar100", "test", colour="channels", data_dir=cifar100_dir)
    assert tuple(x.shape) == (N_TEST, 3, 32, 32) and float(x.max()) <= 1.0
    assert int(y.min()) == 0 and int(y.max()) == 99
    g, _ = load_dataset("cifar100", "train", colour="grey", data_dir=cifar100_dir)
    assert tuple(g.shape) == (N_TRAIN, 32, 32)
    present, missing = present_sets(["cifar100-grey", "cifar100-colour", "mnist"],
                                    str(cifar100_dir))
    assert present == ["cifar100-grey", "cifar100-colour"] and missing == ["mnist"]
    split = classification_split("cifar100-colour", 100, 50, 0, str(cifar100_dir))
    assert split["source"] == "train split / test split"


@pytest.mark.slow
def test_study_classifies_cifar100_and_judges_the_sixty_percent_claim(cifar100_dir,
                                                                     tmp_path):
    from experiments.paper import config_for, run_study

    cfg = replace(config_for("tiny"), transfer_sets=("cifar100-grey", "cifar100-colour"),
                  swap_sets=("cifar100-grey",), classify_sets=("cifar100-colour",),
                  mixture_targets=("cifar100-grey",), clf_n_train=N_TRAIN, clf_n_test=N_TEST)
    run = run_study(cfg, tmp_path, workers=1, data_dir=str(cifar100_dir), progress=False)
    r = run.results
    assert r["data"]["classify_sets"] == ["cifar100-colour"]
    d = r["results"]["distillation"]["cifar100-colour"]
    assert d["n_classes"] == 100 and d["n_test"] == N_TEST
    assert set(d["baselines"]) == {"raw", "sensor", "random-labels"}
    assert set(d["test_accuracy"]) == {"0.3", "15.0"}
    v = r["verdicts"][0]
    assert v["claim"].startswith("CIFAR-100") and v["numbers"]["set"] == "cifar100-colour"
    assert v["numbers"]["random_label_control"]["chance"] == pytest.approx(0.01)
    # judged on held-out accuracy; the train-split (protocol) accuracy only reported
    assert v["numbers"]["held_out_accuracy"] == pytest.approx(d["test_accuracy"]["15.0"]["mean"])
    assert "held-out" in v["headline"] and "train split" in v["headline"]
    assert v["verdict"] != "refuted"  # the tiny scale may not refute
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["verdicts"][0] == v and (tmp_path / "report.md").is_file()
