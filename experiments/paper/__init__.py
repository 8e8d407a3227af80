"""The paper study: the claims of "Feature Distillation with Synthetic Training
Data: a Spectral Methods Approach" measured, judged and reported.

One module per step: `synthetic` (H_SVD, Ω_k per γ), `learnability` (Adam curves),
`transfer` (SSIM per test set, Ω_k mismatch), `swapped` (modes × spectra grid),
`distill` (classification of reconstructions), `designs` (beyond the paper), `timing`
(cost claims), `attention` (the single-pixel probe); `alpha` (how much each verdict owes
to the ridge α, and to ridge against Adam); `verdicts`, `figures` and `report` turn the
numbers into the report; `cost` projects a long scale's time before it starts.

>>> from experiments.paper import config_for, run_study
>>> run = run_study(config_for("small"), "runs/paper_small")   # doctest: +SKIP
"""

from .config import SCALES, StudyConfig, config_for
from .study import StudyRun, run_study

__all__ = ["SCALES", "StudyConfig", "StudyRun", "config_for", "run_study"]
