"""The newcomer's walk-through, examples/bench_walkthrough.ipynb, runs headless end to end.

It opens the simulated bench, calibrates it, shows a mask, captures and decodes MNIST and
runs the tiny paper study, using only names from the packages' public faces. Executed with
nbclient in a fresh kernel; a cell that raises fails the test with the cell's traceback.
"""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "bench_walkthrough.ipynb"


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.realdata
def test_the_walkthrough_notebook_runs(data_dir, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    monkeypatch.setenv("HIL_DATA_DIR", str(data_dir))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend draws
    client = nbclient.NotebookClient(nb, timeout=1200, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                      for o in c.get("outputs", []))
    assert "mean SSIM" in outputs and "calibrated in" in outputs
    figures = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
               if "image/png" in o.get("data", {})]
    assert len(figures) == 3  # the flat frame, the mask, shown vs decoded: inline plots work
