"""Runs of single seeds made side by side, merged into one result: what may be merged.

The bench studies (``bench_crossover``, ``bench_robustness``) run each seed as its own
process on a shared machine and merge the results afterwards; a merge is refused when the
runs were made with other settings or repeat a seed, so a table never mixes the two.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["check_mergeable"]


def check_mergeable(parts: Sequence[dict[str, Any]], keys: Sequence[str],
                    seeds: Sequence[Any], what: str) -> None:
    """Raise ``ValueError`` unless there is at least one run (``what``: its file, for the
    message), all agree on ``keys`` and no seed of ``seeds`` appears twice."""
    if not parts:
        raise ValueError(f"merge: expected at least one {what}, got none")
    first = parts[0]
    for p in parts[1:]:
        diff = [k for k in keys if p.get(k) != first.get(k)]
        if diff:
            raise ValueError(f"merge: the runs differ in {', '.join(diff)}; only runs of "
                             "other seeds with the same settings can be merged")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"merge: a seed appears twice ({sorted(seeds)})")
