"""experiments/bench_robustness.py: the table of runs of several seeds."""

from __future__ import annotations

import pytest

from experiments.bench_robustness import merged_markdown


def _doc(seed: int, mirrored: str, ssim: float | None) -> dict:
    rows = [{"row": "default", "what": "default bench", "status": "ran", "ssim": 0.37,
             "ssim_ratio": 1.0, "verdict": "handled"},
            {"row": "mirrored", "what": "camera mirrored", "status": "ran", "ssim": ssim,
             "ssim_ratio": None if ssim is None else ssim / 0.37, "verdict": mirrored},
            {"row": "rotated20", "what": "camera rotated 20 deg", "status": "refused",
             "verdict": "refused (diagnosis)"}]
    return {"base": "sim.toml", "shape": 256, "seed": seed, "n": 64, "ratio": 0.9,
            "rows": rows}


def test_rows_are_handled_only_when_handled_on_every_seed():
    text = merged_markdown([_doc(0, "handled", 0.36), _doc(1, "degraded", 0.20)])
    assert "| default bench | handled | handled, 0.370 (1.00) | handled, 0.370 (1.00) |" in text
    assert "| camera mirrored | mixed: degraded, handled |" in text  # the control
    assert "| camera rotated 20 deg | refused (diagnosis) |" in text
    assert "seeds 0, 1" in text
    with pytest.raises(ValueError, match="differ in n"):
        merged_markdown([_doc(0, "handled", 0.36), dict(_doc(1, "handled", 0.36), n=8)])
    with pytest.raises(ValueError, match="a seed appears twice"):
        merged_markdown([_doc(0, "handled", 0.36), _doc(0, "handled", 0.36)])


def test_a_realistic_base_takes_every_flaw_then_the_row():
    from experiments.bench_crossover import _read_bench
    from experiments.bench_robustness import ROWS, bench_config

    flaws = _read_bench("sim-realistic.toml")["sim_flaws"]
    _, row, camera = ROWS["ghost"]
    cfg = bench_config("sim.toml", row, camera, seed=3, shape=256,
                       flaws_from="sim-realistic.toml")
    assert cfg["seed"] == 3 and cfg["camera"]["shape"] == [256, 256]
    assert cfg["camera"]["focal_length_mm"] == 50.0  # sim.toml's optics
    assert cfg["sim_flaws"] == {**flaws, "ghost_fraction": 0.1}
    # the control: without flaws_from the base keeps its own (none) and only the row's key
    assert bench_config("sim.toml", row, camera, seed=3)["sim_flaws"] == row
    text = merged_markdown([dict(_doc(0, "handled", 0.36), flaws_from="sim-realistic.toml")])
    assert "with the [sim_flaws] of `sim-realistic.toml`" in text
    with pytest.raises(ValueError, match="differ in flaws_from"):
        merged_markdown([_doc(0, "handled", 0.36),
                         dict(_doc(1, "handled", 0.36), flaws_from="sim-realistic.toml")])


def test_row_options_go_over_the_quick_ones():
    from experiments.bench_robustness import QUICK_OPTIONS, _options

    got = _options(True, {"lut": {"order_spacing": 4}, "decoders": {"n_test": 8}})
    assert got["lut"] == {"order_spacing": 4}
    assert got["decoders"] == {**QUICK_OPTIONS["decoders"], "n_test": 8}
    assert QUICK_OPTIONS["decoders"]["n_test"] == 16  # the preset is not changed
    assert _options(False, None) is None and _options(False, {"lut": {"a": 1}}) == {
        "lut": {"a": 1}}
