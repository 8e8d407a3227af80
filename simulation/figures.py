"""Figures without pyplot: the one way the package makes a matplotlib figure.

``new_figure`` builds on ``matplotlib.figure.Figure`` directly, never through ``pyplot``:
nothing selects a backend or touches pyplot's global state, so a Jupyter user keeps inline
plots after any of our reports is written, and figures are freed when they go out of
scope instead of piling up in pyplot's registry. ``Figure.savefig`` writes PNG by itself.
"""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure

__all__ = ["new_figure"]


def new_figure(nrows: int | None = 1, ncols: int = 1, **kwargs: Any) -> tuple[Figure, Any]:
    """A pyplot-free ``Figure`` and its axes (``Figure.subplots``).

    Keyword arguments ``figsize`` and ``dpi`` go to ``Figure``, the rest to ``subplots``.
    ``nrows=None`` returns the figure and no axes (for grids built by hand).
    """
    fig = Figure(figsize=kwargs.pop("figsize", None), dpi=kwargs.pop("dpi", None))
    if nrows is None:
        return fig, None
    return fig, fig.subplots(nrows, ncols, **kwargs)
