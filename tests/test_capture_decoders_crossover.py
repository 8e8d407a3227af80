"""experiments/bench_crossover.py: its bench files, table and figure, and the calibration
report that includes the figure when it is present."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.bench_crossover import METHODS, bench_config, merge_results, table, write_outputs


def _result() -> dict:
    counts = [100, 200]

    def seed(s: int, lift: float) -> dict:
        flat = {"mnist": 0.30, "fashion-mnist": 0.35, "cifar10": 0.50}
        grow = [{k: v - 0.1 + lift * i for k, v in flat.items()} for i in range(2)]
        return {"seed": s, "counts": counts,
                "ssim": {"twin": [flat] * 2, "twin_noise": [flat] * 2, "capture": grow,
                         "twin_prior": [{k: v + 0.02 for k, v in flat.items()}] * 2}}

    return {"bench": "sim.toml", "flaws_from": "sim-realistic.toml", "shape": 256,
            "counts": counts, "n_eval": 8, "n_twin": 400, "n_val": 8, "gamma": 15.0,
            "datasets": ["mnist", "fashion-mnist", "cifar10"], "drop_flaws": ["ghost_fraction"],
            "seeds": [seed(0, 0.2), seed(1, 0.3)], "refused": [{"seed": 2, "error": "x"}]}


def test_table_and_figure(tmp_path):
    text = table(_result())
    assert "without ghost_fraction" in text and "refused seed(s) 2" in text
    # capture-trained at 200 captures: 0.30 - 0.1 + 0.25 (mean of the seeds' lifts) ± 0.05
    assert "| capture-trained | 200 | 0.450 ± 0.050 |" in text
    write_outputs(_result(), tmp_path)
    assert (tmp_path / "crossover.png").stat().st_size > 1000


def test_runs_of_single_seeds_merge_into_one_table():
    whole = _result()
    parts = [dict(whole, seeds=[whole["seeds"][1]], refused=[]),
             dict(whole, seeds=[whole["seeds"][0]], refused=whole["refused"])]
    for p in parts:
        if not p["refused"]:
            del p["refused"]
    merged = merge_results(parts)
    assert [s["seed"] for s in merged["seeds"]] == [0, 1]
    assert table(merged) == table(whole)
    # controls: other settings, or a seed twice, are refused
    with pytest.raises(ValueError, match="differ in n_eval"):
        merge_results([parts[0], dict(parts[1], n_eval=9)])
    with pytest.raises(ValueError, match="a seed appears twice"):
        merge_results([parts[0], parts[0]])


def test_report_includes_the_crossover_when_present(tmp_path):
    from calibration.report import write_report
    from calibration.store import CalibrationSet

    cal = CalibrationSet()
    assert "crossover" not in write_report(cal, tmp_path).read_text()
    write_outputs(_result(), tmp_path)
    text = write_report(cal, tmp_path).read_text()
    assert "![crossover](crossover.png)" in text
    assert "| capture-trained | 200 |" in text


def test_bench_config_flaws():
    cfg = bench_config("sim.toml", seed=4, flaws_from="sim-realistic.toml", shape=128,
                       drop_flaws=("ghost_fraction",))
    assert cfg["seed"] == 4 and cfg["slm"]["shape"] == [128, 128]
    assert "ghost_fraction" not in cfg["sim_flaws"] and cfg["sim_flaws"]["vignetting"] > 0
    with pytest.raises(ValueError, match="--drop-flaw"):
        bench_config("sim.toml", seed=0, flaws_from="sim-realistic.toml", drop_flaws=("nope",))
    with pytest.raises(ValueError, match="no \\[sim_flaws\\]"):
        bench_config("sim.toml", seed=0, flaws_from="sim.toml")


def _paired(shift: float, seed: int, n_seeds: int = 3, n: int = 48) -> dict:
    """A result whose methods' per-image SSIM are the twin's + ``shift`` + symmetric noise."""
    rng = np.random.default_rng(seed)
    datasets = ["mnist", "fashion-mnist", "cifar10"]
    seeds = []
    for s in range(n_seeds):
        twin = {ds: rng.uniform(0.2, 0.5, n).tolist() for ds in datasets}
        per = {"twin": [twin]}
        for m in METHODS[1:]:
            per[m] = [{ds: (np.asarray(twin[ds]) + shift + rng.normal(0, 0.02, n)).tolist()
                       for ds in datasets}]
        seeds.append({"seed": s, "per_image": per})
    return {"datasets": datasets, "seeds": seeds, "counts": [100]}


def test_verdict_rule_needs_an_effect():
    from experiments.bench_crossover import verdicts

    effect = verdicts(_paired(+0.01, 0))
    assert all(v["verdict"] == "wins" for per in effect.values() for v in per.values())
    worse = verdicts(_paired(-0.01, 1))
    assert all(v["verdict"] == "loses" for per in worse.values() for v in per.values())
    # the control: no effect, 40 draws of 9 tests; the rule may call a win by chance at
    # about its 5 % level, no more
    wins = [v["verdict"] == "wins" for k in range(40) for per in verdicts(
        _paired(0.0, 100 + k)).values() for v in per.values()]
    assert np.mean(wins) < 0.1, np.mean(wins)
    assert verdicts({"datasets": ["mnist"], "seeds": [{"seed": 0}], "counts": [1]}) == {}


def test_flaw_cost_says_what_the_bench_costs_the_twin():
    from experiments.bench_crossover import flaw_cost

    def with_own(shift: float, seed: int) -> dict:
        res = _paired(0.0, seed)
        rng = np.random.default_rng(seed + 50)
        for s in res["seeds"]:
            twin = s["per_image"]["twin"][0]
            per = {ds: (np.asarray(v) + shift + rng.normal(0, 0.02, len(v))).tolist()
                   for ds, v in twin.items()}
            s["twin_own_patterns"] = {"per_image": per,
                                      "ssim": {ds: float(np.mean(v)) for ds, v in per.items()}}
        return res

    assert all(v["verdict"] == "costs" for v in flaw_cost(with_own(+0.02, 0)).values())
    assert all(v["verdict"] == "helps" for v in flaw_cost(with_own(-0.02, 1)).values())
    # the control: the same scores on clean patterns as on captures, 30 draws of 3 sets
    said = [v["verdict"] == "costs" for k in range(30)
            for v in flaw_cost(with_own(0.0, 200 + k)).values()]
    assert np.mean(said) < 0.12, np.mean(said)
    assert "the bench's flaws and noise | costs" in table(dict(
        with_own(+0.02, 0), bench="sim.toml", n_eval=48, n_twin=4000,
        seeds=[dict(s, ssim={"twin": [{"mnist": 0.3, "fashion-mnist": 0.3, "cifar10": 0.3}]})
               for s in with_own(+0.02, 0)["seeds"]]))
    assert flaw_cost(_paired(0.0, 3)) == {}  # a run made before the score was kept
