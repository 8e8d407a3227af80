"""The paper study end to end at the tiny scale: results.json, report and figures;
resume; the command line; the README section script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.paper import config_for, run_study
from experiments.paper.designs import mixture_weights
from experiments.paper.transfer import hinge_threshold

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ("fig1_synthetic.png", "fig2_learnability.png", "fig3_transfer.png",
           "fig4_swapped.png", "fig5_distillation.png", "fig6_designs.png", "fig7_timing.png",
           "fig8_attention.png")


def _data_dir() -> str:
    value = os.environ.get("HIL_DATA_DIR")
    if not value or not (Path(value) / "mnist_test.npz").is_file():
        pytest.skip("real-data test: set HIL_DATA_DIR to the shared data folder")
    return value


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("paper_tiny")
    run = run_study(config_for("tiny"), out, workers=2, data_dir=_data_dir(), progress=False)
    return out, run


def _strip_timing(results: dict) -> dict:
    """Everything but wall-clock numbers (timing cell, sweep time, cell counts)."""
    r = json.loads(json.dumps(results))
    r["results"].pop("timing")
    r.pop("run")
    r["verdicts"] = [v for v in r["verdicts"] if v["figure"] != "fig7_timing.png"]
    return r


def test_tiny_study_writes_results_report_and_figures(tiny_run):
    out, run = tiny_run
    results = json.loads((out / "results.json").read_text())
    assert results["study"] == "paper" and results["config"]["scale"] == "tiny"
    assert run.computed == results["run"]["cells"] and run.skipped == 0
    verdicts = results["verdicts"]
    assert len(verdicts) == 7
    assert {v["verdict"] for v in verdicts[:-1]} <= {"reproduced", "refuted", "inconclusive"}
    assert verdicts[-1]["verdict"] == "measured"  # frames/s: another group's hardware
    for v in verdicts:
        assert (out / v["figure"]).is_file() and v["rule"] and v["headline"]
    report = (out / "report.md").read_text()
    for fig in FIGURES:
        assert (out / fig).stat().st_size > 5_000, fig
        assert f"({fig})" in report
    r = results["results"]
    # statistics: H_SVD grows with γ (paper-spec §4.4: ~1.48 at γ=0.3, ~4.04 at γ=15)
    h = {g: v["h_svd"]["mean"] for g, v in r["synthetic"]["speckle"].items()}
    assert h["0.3"] == pytest.approx(1.48, abs=0.05) and h["15.0"] == pytest.approx(4.04, abs=0.05)
    # every number a figure shows has seeds behind it: 2 seeds at tiny scale
    assert all(v["n"] == 2 for s in r["transfer"]["ssim"].values() for v in s.values())
    assert 0 < r["transfer"]["ssim"]["mnist"]["15.0"]["mean"] < 1
    # swapped grid: full 2 x 2, the diagonal reused from the decoders
    assert len(r["swapped"]["matrices"]["h_svd"]["mean"]) == 2
    d = r["distillation"]["mnist"]
    assert set(d["baselines"]) == {"raw", "sensor", "random-labels"}
    assert set(d["test_accuracy"]) == {"0.3", "15.0"}
    # the random-label control is run in the study and is near chance held-out
    assert d["baselines"]["random-labels"]["test_accuracy"]["mean"] < 0.35
    learn = r["learnability"]["15.0"]
    assert learn["excess"]["1"] == [1.0, 1.0] and learn["mean_image_mse"]["mean"] > 0
    pr = r["timing"]["phase_retrieval_ssim_by_iteration"]
    assert set(pr) == {"1", "2", "3", "5"}  # checkpoints up to the tiny budget of 5
    assert "cifar100" not in " ".join(results["data"]["transfer_sets"])  # not in shared/data


def test_resume_recomputes_only_missing_cells(tiny_run, tmp_path):
    out, first = tiny_run
    cells = sorted((out / "cells").glob("*.json"))
    gone = [p for p in cells if p.name.startswith(("decoder-", "stats-", "swap-"))][:3]
    copy = tmp_path / "resumed"
    (copy / "cells").mkdir(parents=True)
    for p in cells:
        if p not in gone:
            (copy / "cells" / p.name).write_bytes(p.read_bytes())
    again = run_study(config_for("tiny"), copy, workers=1, data_dir=_data_dir(),
                      progress=False, report=False)
    assert again.computed == 3 and again.skipped == len(cells) - 3
    # a cell recomputed with 1 worker gives the numbers the 2-worker run gave
    assert _strip_timing(again.results) == _strip_timing(first.results)
    for p in gone:
        assert (json.loads((copy / "cells" / p.name).read_text())["result"]
                == json.loads(p.read_text())["result"])


def test_cli_runs_and_resumes(tiny_run, tmp_path, capsys):
    from hil.cli import main

    out, _ = tiny_run
    code = main(["experiment", "paper", "--scale", "tiny", "--seeds", "2", "--out", str(out),
                 "--no-progress", "--data-dir", _data_dir()])
    text = capsys.readouterr().out
    assert code == 0
    assert "0 cells computed" in text and "report:" in text


def test_cli_user_errors_print_one_line(tmp_path, capsys):
    from hil.cli import main

    code = main(["experiment", "paper", "--out", str(tmp_path), "--workers", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--workers" in err[0]
    code = main(["experiment", "paper", "--scale", "tiny", "--out", str(tmp_path / "x"),
                 "--data-dir", str(tmp_path / "nowhere"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and ("HIL_DATA_DIR" in err[0] or "--data-dir" in err[0])
    code = main(["experiment", "paper", "--out", str(tmp_path), "--seeds", "0"])
    assert code == 2 and "seeds" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["experiment", "paper", "--scale", "huge", "--out", str(tmp_path)])


def test_readme_section_script(tiny_run, tmp_path):
    out, _ = tiny_run
    script = ROOT / "scripts" / "readme_figures.py"
    readme = tmp_path / "README.md"
    readme.write_text("# T\n\n<!-- paper-figures:begin -->\nold\n<!-- paper-figures:end -->\n"
                      "tail\n")
    res = subprocess.run([sys.executable, str(script), str(out / "results.json"), "--readme",
                          str(readme), "--figures-dir", str(tmp_path / "docs" / "figures")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    text = readme.read_text()
    assert "\nold\n" not in text and text.endswith("tail\n") and "## Headline figures" in text
    assert "](docs/figures/fig3_transfer.png)" in text
    assert "**Scale: `tiny`**" in text and "Not the paper's scale" in text
    assert (tmp_path / "docs" / "figures" / "fig5_distillation.png").is_file()
    results = json.loads((out / "results.json").read_text())
    for v in results["verdicts"]:
        assert f"**{v['verdict']}**" in text
    assert "Feature distillation, held out" in text and "Cost of this run" in text
    assert f"{results['run']['cells']} cells" in text
    bad = subprocess.run([sys.executable, str(script), str(tmp_path / "missing.json")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_mixture_weights_match_the_target():
    om = {0.1: 0.07, 1.0: 0.14, 15.0: 0.34}
    w = mixture_weights(om, 0.24)
    assert set(w) == {1.0, 15.0} and sum(w.values()) == pytest.approx(1.0)
    assert sum(om[g] * v for g, v in w.items()) == pytest.approx(0.24)
    assert mixture_weights(om, 0.01) == {0.1: 1.0} and mixture_weights(om, 0.9) == {15.0: 1.0}


def test_hinge_threshold_finds_the_knee():
    import numpy as np

    x = np.linspace(0, 0.3, 31)
    y = 0.8 - 2.0 * np.maximum(0, x - 0.1)
    fit = hinge_threshold(x, y)
    assert fit["tau"] == pytest.approx(0.1, abs=0.01) and fit["b"] == pytest.approx(2.0, rel=0.05)


@pytest.mark.slow
def test_dk_softmax_matches_the_paper_classifier_held_out():
    """The ``paper`` scale's single D×K softmax (full-batch L-BFGS) and the paper's
    factorised D×D·D×K classifier (minibatch Adam) are the same function class; on a
    subset of MNIST (raw pixels, 10,000 train, 2,000 held-out) their held-out accuracies
    agree within the noise of a 2,000-image test (SE of a difference ≈ 1 point)."""
    from experiments.paper.common import classification_split, classify_features

    split = classification_split("mnist", 10_000, 2000, 0, _data_dir())
    args = (split["train_x"], split["train_y"], split["test_x"], split["test_y"])
    paper = classify_features(*args, epochs=5, seed=0, n_classes=10, method="paper")
    dk = classify_features(*args, epochs=200, seed=0, n_classes=10, method="dk")
    p, q = paper["test_accuracy"], dk["test_accuracy"]
    se = (p * (1 - p) / 2000 + q * (1 - q) / 2000) ** 0.5
    print(f"held-out accuracy: paper {p:.4f}, dk {q:.4f}, SE of difference {se:.4f}")
    assert p > 0.8 and q > 0.8
    assert abs(p - q) < 3 * se
    with pytest.raises(ValueError, match="method"):
        classify_features(*args, epochs=1, seed=0, method="adam")


def test_paper_scale_is_the_papers_sizes():
    cfg = config_for("paper")
    assert cfg.seeds == 3 and len(cfg.gammas) == 10 and cfg.n_train == 10_000
    assert cfg.swap_gammas == cfg.gammas and cfg.swap_n == 10_000
    assert cfg.n_test >= 60_000 and cfg.clf_n_train >= 60_000  # every image there is
    assert cfg.clf_method == "dk"
    import argparse

    from experiments.cli_experiment import register
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    assert parser.parse_args(["experiment", "paper", "--scale", "paper", "--out", "x"]).scale \
        == "paper"


def test_cost_probe_times_two_cells_per_kind_and_projects(tmp_path):
    """The first two cells of each kind are run (and stored for the sweep to reuse):
    the first with cold per-process caches, the second warm; a kind costs one cold cell
    per worker and seed and warm cells after that, shared by the workers; the text
    says 'projection'."""
    from experiments.paper.cost import format_estimate, probe_estimate
    from experiments.sweep import Cell

    stats = "experiments.paper.synthetic:speckle_stats_cell"
    # one seed, five cells: 2 workers x 1 seed = 2 cold starts, 3 warm cells
    cells = [Cell(f"a{i}", stats, {"gamma": 2.0 + i, "seed": 0, "n": 8}) for i in range(5)]
    cells.append(Cell("b0", "experiments.paper.learnability:learn_cell",
                      {"gamma": 2.0, "seed": 0, "n": 16, "epochs": 2}))
    est = probe_estimate(cells, tmp_path, workers=2)
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["a0.json", "a1.json", "b0.json"]
    a, b = est["kinds"][stats], est["kinds"]["experiments.paper.learnability:learn_cell"]
    assert (a["cells"], a["todo"], b["cells"], b["todo"]) == (5, 5, 1, 1)
    share = min(2, est["cores"])
    assert a["cold_starts"] == share and b["cold_starts"] == 1
    assert a["cpu_s"] == pytest.approx(share * a["probe_s"] + (5 - share) * a["warm_s"])
    assert b["warm_s"] == b["probe_s"]  # a single cell: nothing warm to time
    assert est["cpu_s"] == pytest.approx(a["cpu_s"] + b["probe_s"])
    assert est["wall_s"] == pytest.approx(est["cpu_s"] / share)
    assert "projection" in format_estimate(est, "paper")
    # a resumed run: the probed cells are done, the rest still to do
    again = probe_estimate(cells, tmp_path, workers=2)
    assert again["kinds"][stats]["todo"] == 3 and again["kinds"][
        "experiments.paper.learnability:learn_cell"]["todo"] == 0


def test_cost_probe_shares_the_kinds_over_the_workers(tmp_path, monkeypatch):
    """Each kind's two cells go to the same one-worker probe (cold, then warm), and the
    kinds are dealt over min(workers, CPUs) probes that run at the same time."""
    import threading

    import experiments.paper.cost as cost
    from experiments.sweep import Cell

    calls, both_running = [], threading.Barrier(2, timeout=30)

    def fake_run_cells(order, store, *, workers, **kw):
        calls.append(([c.key for c in order], workers))
        both_running.wait()  # fails (BrokenBarrierError) unless two probes run at once

    monkeypatch.setattr(cost, "run_cells", fake_run_cells)
    monkeypatch.setattr(cost.os, "cpu_count", lambda: 2)
    cells = [Cell(f"{k}{i}", f"mod:{k}", {"seed": 0}) for k in "abc" for i in range(3)]
    cost.probe_estimate(cells, tmp_path, workers=2)
    assert sorted(calls) == [(["a0", "c0", "a1", "c1"], 1), (["b0", "b1"], 1)]


def test_readme_section_lines_from_results():
    """The distillation table, the α line and the run cost come from the results (and are
    left out, not invented, when the results lack them)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import readme_figures as rf
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    stat = {"mean": 0.964, "std": 0.002, "n": 3, "values": [0.962, 0.964, 0.966]}
    low = {"mean": 0.1, "std": 0.01, "n": 3}
    dist = {"mnist": {"test_accuracy": {"15.0": stat}, "n_classes": 10, "n_test": 10_000,
                      "split_source": "train split / test split",
                      "baselines": {"raw": {"test_accuracy": low}}}}
    rob = {"ridge_alpha": {"computed": True, "per_verdict": {
        "fidelity": {"verdicts": {"chosen": "reproduced", "low": "reproduced",
                                  "high": "refuted"}, "survives": False},
        "cost": {"verdicts": {"chosen": "reproduced", "low": "reproduced",
                              "high": "reproduced"}, "survives": True},
        "fps": {"verdicts": {"chosen": "measured"}, "survives": None}}}}
    run = {"sweep_wall_s": 3600.0, "cells_cpu_s": 7200.0, "cells": 10, "workers": 2,
           "machine": {"cpus": 2}}

    def text(gamma=15.0, alpha=rob, cost=run):
        """The section of a paper-scale results file with these parts."""
        results = {"study": "paper", "verdicts": [], "alpha_robustness": alpha,
                   "results": {"distillation": dist},
                   "config": {"scale": "paper", "seeds": 3, "paper_gamma": gamma,
                              "clf_method": "dk", "clf_n_train": 60_000},
                   "run": cost}
        return rf.section(results, "figures/")

    full = text()
    assert "| mnist | 96.4 ± 0.2 | 10.0 ± 1.0 | — | — (chance 10.0) | 3 | 10,000 |" in full
    assert "held out.**" in full and "| mnist |" not in text(gamma=7.0)  # no γ = 7 row
    assert "held out.**" not in text(gamma=7.0)  # and no table around nothing
    assert "**Verdict depends on α:** fidelity (chosen: reproduced, low: reproduced, high: " \
           "refuted)" in full and "Same verdict at both ends: cost" in full
    assert "fps (" not in full
    assert "Ridge α" not in text(alpha={"ridge_alpha": {"computed": False}})
    assert "sweep wall 60.0 min" in full and "120.0 CPU-min" in full
    assert "Cost of this run" not in text(cost={})


def test_summary_is_the_one_mean_std_and_never_hides_a_missing_value():
    import math

    from experiments.paper.common import summary

    s = summary([1.0, 3.0])
    assert s == {"mean": 2.0, "std": 1.0, "n": 2, "values": [1.0, 3.0]}
    assert math.isnan(summary([1.0, None])["mean"])  # a missing seed is not averaged away
    skipped = summary([1.0, None, 3.0], skip_missing=True)
    assert skipped["mean"] == 2.0 and skipped["n"] == 3 and math.isnan(skipped["values"][1])
    assert math.isnan(summary([None], skip_missing=True)["mean"])


def test_softmax_dk_gradient_is_autograds():
    """The closed-form gradient of the D×K softmax (`softmax_loss_grad`) equals autograd's;
    a wrong sign or a missing 1/n would move L-BFGS elsewhere (control: the unscaled
    gradient differs)."""
    import torch

    from experiments.paper.common import softmax_loss_grad

    g = torch.Generator().manual_seed(0)
    X, W = torch.randn(300, 40, generator=g), torch.randn(40, 7, generator=g)
    y = torch.randint(0, 7, (300,), generator=g)
    Wa = W.clone().requires_grad_()
    ref = torch.nn.functional.cross_entropy(X @ Wa, y)
    ref.backward()
    loss, grad = softmax_loss_grad(X, y, W)
    assert float(loss) == pytest.approx(ref.item(), rel=1e-6)
    assert torch.allclose(grad, Wa.grad, atol=1e-6) and grad.is_contiguous()
    assert not torch.allclose(grad * len(X), Wa.grad, atol=1e-6)
