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
