"""Figures people look at, written as PNG.

Figures are built with ``simulation.figures.new_figure`` (no pyplot, no backend switch: a
Jupyter user keeps inline plots).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from simulation.atomic import savefig_atomic
from simulation.figures import new_figure

__all__ = ["save_image_grid"]


def _as_display(img) -> np.ndarray:
    a = np.asarray(img.detach().cpu() if hasattr(img, "detach") else img, dtype=np.float32)
    if a.ndim == 3 and a.shape[0] == 3:  # colour, channels first
        a = np.moveaxis(a, 0, -1)
    return np.clip(a, 0.0, 1.0)


def save_image_grid(
    rows: Sequence, labels: Sequence[str], path: str | os.PathLike, *, n: int = 8,
    title: str | None = None, captions: Sequence[str] | None = None,
) -> Path:
    """One row per image set (e.g. originals, reconstructions), ``n`` columns; PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = min(n, *(len(r) for r in rows))
    fig, axes = new_figure(len(rows), n, figsize=(1.3 * n + 0.8, 1.4 * len(rows) + 0.4),
                           squeeze=False)
    for i, (imgs, label) in enumerate(zip(rows, labels, strict=True)):
        for j in range(n):
            ax = axes[i, j]
            ax.imshow(_as_display(imgs[j]), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label, fontsize=9)
            if captions is not None and i == len(rows) - 1:
                ax.set_xlabel(captions[j], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return savefig_atomic(fig, path, dpi=110)

