"""Figures must not switch matplotlib's backend: a Jupyter user keeps inline plots.

Each case runs in a fresh interpreter whose backend is set to a non-Agg one first (the
``template`` backend ships with matplotlib and needs no display), imports a figure module,
saves a figure, and reports the backend afterwards.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CASES = {
    "hil.figures.save_image_grid": """
        import numpy as np
        from hil.figures import save_image_grid
        save_image_grid([np.zeros((2, 4, 4))], ["x"], OUT / "g.png", n=2)
    """,
    "hil.masks.plot_mask": """
        from hil.masks import plot_mask, vortex_mask
        plot_mask(vortex_mask(), OUT / "m.png")
    """,
    "calibration.report.write_report": """
        import numpy as np
        from calibration import CalibrationSet, StepResult
        from calibration.report import write_report
        dark = StepResult("dark", values={"dark_frame": np.zeros((8, 8), np.float32),
                                          "gain_counts_per_electron": 0.4,
                                          "read_noise_counts": 2.0, "dark_level_counts": 1.0},
                          residuals={"ptc_offset_counts2": 4.0},
                          data={"ptc_signal": np.arange(5.0), "ptc_variance": np.arange(5.0)})
        write_report(CalibrationSet(dark=dark), OUT)
    """,
    "experiments.paper.figures (import)": """
        import experiments.paper.figures
        import matplotlib.figure
        fig = matplotlib.figure.Figure()
        fig.savefig(OUT / "f.png")
    """,
    # a control: code that switches the backend must be reported
    "control: matplotlib.use('Agg')": """
        import matplotlib
        matplotlib.use("Agg")
    """,
}


def backend_after(code: str, out: Path) -> str:
    head = ("import matplotlib\nmatplotlib.use('template')\nfrom pathlib import Path\n"
            f"OUT = Path({str(out)!r})\n")
    script = head + textwrap.dedent(code) + "\nprint(matplotlib.get_backend())\n"
    res = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip().splitlines()[-1].lower()


@pytest.mark.parametrize("case", list(CASES))
def test_saving_a_figure_keeps_the_users_backend(case, tmp_path):
    backend = backend_after(CASES[case], tmp_path)
    if case.startswith("control"):
        assert backend == "agg"
    else:
        assert backend == "template"
        assert any(tmp_path.rglob("*.png"))
