"""The calibration step registry: one entry per step drives everything that knows the steps.

A step is one ``CalibrationStep``: its ``name``, the function that ``run``\\s it, the records
it ``produces`` and ``requires``, whether it is ``optional``, its report ``figure``, its
comparison with a simulated bench's hidden ``truth``, the values ``derive``\\d from its
records on read, the ``units`` of values whose name does not say them, and a ``help`` line.
``register_step`` adds one; from then on, without any other edit:

* ``calibration.pipeline`` runs it in registration order (``step_order``), hashes the records
  it requires into its inputs (``--resume`` re-runs it when they change) and skips it when
  complete; ``parse_steps`` and ``--steps`` accept its name;
* ``CalibrationSet`` stores its records (``cal.<record>``), saves and loads them;
* ``calibration.report`` draws its figure, ``calibration.truth.errors_vs_truth`` adds its
  errors, and ``hil calibrate --help`` lists it (``steps_help``).

The built-in steps are registered by ``calibration.steps`` (loaded on first use). A step's
``run(ctx, **options)`` gets a ``StepContext`` (bench, the calibration so far, grid size,
output directory, imaging configuration) and returns its ``StepResult``\\s (one, or one per
record of ``produces``); it reads the other records and never changes them (the pipeline
checks). A reference may be the callable itself or ``"module:attribute"``, imported when
first used (so that listing the steps imports no torch).

The records are stored in the order of the steps that produce them; registration order is
the bench-day order, and a step may require only records of steps registered before it.
"""

from __future__ import annotations

import importlib
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CalibrationStep", "StepContext", "register_step", "unregister_step",
           "get_step", "registered_steps", "step_order", "record_names", "step_for_record",
           "resolve", "steps_help", "derived_values", "value_units", "RESERVED_NAMES"]

# names a step or record may not take: CalibrationSet attributes and the file's own groups
RESERVED_NAMES = frozenset({
    "devices", "created", "path", "provenance", "set", "steps", "require", "save", "load",
    "file_path", "summary", "record", "records", "remove", "format", "format_version",
    "dark_frame", "dark_model", "dark_at", "model_to_camera", "affine_parameters",
    "grid_size", "block", "phase_response_rad", "settle_time_s", "zernike_noll_rad",
    "imaging_config", "decoder_file", "decoder_record", "device_differences"})
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

# units of a value whose name ends in one of these (bench vocabulary: ``exposure_s``...)
_SUFFIX_UNITS = (("_counts_per_electron", "counts/e-"), ("_counts_per_s", "counts/s"),
                 ("_counts2", "counts^2"), ("_counts", "counts"), ("_rad", "rad"),
                 ("_deg", "deg"), ("_px", "px"), ("_um", "um"), ("_nm", "nm"), ("_mm", "mm"),
                 ("_ms", "ms"), ("_s", "s"), ("_pct", "%"), ("_hz", "Hz"), ("_mw", "mW"),
                 ("_ma", "mA"))


@dataclass(frozen=True)
class StepContext:
    """What a step's ``run`` gets: the opened ``bench``, the ``cal`` so far (read it, never
    change it), the model grid ``size``, the ``out_dir`` (None: nothing written beside the
    file) and the ``imaging`` configuration of the run (None: the step's default)."""

    bench: Any
    cal: Any
    size: int
    out_dir: Path | None = None
    imaging: Any = None

    @property
    def dark(self) -> Any:
        """The background to subtract (``CalibrationSet.dark_model``; None before ``dark``)."""
        return self.cal.dark_model


Ref = Callable[..., Any] | str


@dataclass(frozen=True)
class CalibrationStep:
    """One calibration step (see the module docstring for what each field drives).

    ``run(ctx: StepContext, **options) -> StepResult | Sequence[StepResult]``;
    ``produces``: the records it returns (default: one named like the step; its
    ``primary`` record carries the step's ``inputs_sha256``); ``requires``: the records it reads;
    ``optional``: run only when ``--steps`` names it; ``figure(cal, path)`` draws a PNG;
    ``truth(cal, truth, bench) -> {name: error}``; ``derive(record) -> {key: value}``:
    values computed from a record when read (never stored); ``units``: {value key: units}
    for keys whose name does not end in a unit; ``uses_imaging``: the run's
    ``ImagingConfig`` goes to its options as ``imaging``.
    """

    name: str
    run: Ref
    help: str
    produces: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    optional: bool = False
    figure: Ref | None = None
    truth: Ref | None = None
    derive: Ref | None = None
    units: Mapping[str, str] = field(default_factory=dict)
    uses_imaging: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name) \
                or self.name in RESERVED_NAMES:
            raise ValueError(f"name: expected a lower-case identifier that is not one of "
                             f"CalibrationSet's own names, got {self.name!r}")
        produces = tuple(self.produces) or (self.name,)
        object.__setattr__(self, "produces", produces)
        object.__setattr__(self, "requires", tuple(self.requires))
        for rec in produces:
            if not isinstance(rec, str) or not _NAME.match(rec) or rec in RESERVED_NAMES:
                raise ValueError(f"produces: expected lower-case identifiers that are not "
                                 f"CalibrationSet's own names, got {rec!r} (step "
                                 f"{self.name!r})")
        if not isinstance(self.help, str) or not self.help.strip() or "\n" in self.help:
            raise ValueError(f"help: expected one line of text, got {self.help!r} (step "
                             f"{self.name!r})")
        for what in ("run", "figure", "truth", "derive"):
            ref = getattr(self, what)
            if ref is None and what != "run":
                continue
            if not (callable(ref) or (isinstance(ref, str) and ":" in ref)):
                raise TypeError(f"{what}: expected a callable or 'module:attribute', got "
                                f"{ref!r} (step {self.name!r})")

    @property
    def primary(self) -> str:
        """The record that carries the step's ``inputs_sha256``: the one named like the
        step, else the first it produces."""
        return self.name if self.name in self.produces else self.produces[0]


_REGISTRY: dict[str, CalibrationStep] = {}
_LOCK = threading.RLock()
_builtins_loaded = False


def _ensure_builtins() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    with _LOCK:
        if not _builtins_loaded:
            _builtins_loaded = True
            try:
                importlib.import_module("calibration.steps")  # registers the built-ins
            except BaseException:
                _builtins_loaded = False
                raise


def register_step(step: CalibrationStep, *, replace: bool = False) -> CalibrationStep:
    """Add ``step`` after the steps registered so far (``replace``: put it in place of the
    step of the same name). Refused: a name taken, a record another step produces, a
    required record that no earlier step produces. Returns the step."""
    if not isinstance(step, CalibrationStep):
        raise TypeError(f"step: expected a CalibrationStep, got {type(step).__name__}")
    _ensure_builtins()
    with _LOCK:
        if step.name in _REGISTRY and not replace:
            raise ValueError(f"step: {step.name!r} is already registered (replace=True to "
                             "replace it)")
        order = list(_REGISTRY)
        earlier = order[:order.index(step.name)] if step.name in _REGISTRY else order
        made: dict[str, str] = {}
        for other in earlier:
            for rec in _REGISTRY[other].produces:
                made[rec] = other
        taken = {rec: s.name for s in _REGISTRY.values() if s.name != step.name
                 for rec in (*s.produces, s.name)}
        clash = [r for r in {*step.produces, step.name} if r in taken]
        if clash:
            raise ValueError(f"step {step.name!r}: {clash} already named by step "
                             f"{taken[clash[0]]!r}")
        missing = [r for r in step.requires if r not in made]
        if missing:
            raise ValueError(f"step {step.name!r}: requires {missing}, which no earlier step "
                             f"produces (records so far: {sorted(made)})")
        _REGISTRY[step.name] = step
    return step


def unregister_step(name: str) -> CalibrationStep:
    """Remove step ``name`` (a plug-in's, a test's); refused while a later step needs it."""
    _ensure_builtins()
    with _LOCK:
        step = get_step(name)
        users = [s.name for s in _REGISTRY.values()
                 if s.name != name and set(s.requires) & set(step.produces)]
        if users:
            raise ValueError(f"step {name!r}: required by {users}; unregister those first")
        del _REGISTRY[name]
    return step


def get_step(name: str) -> CalibrationStep:
    """The registered step ``name``, or a ``ValueError`` listing the steps."""
    _ensure_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"step: expected one of {', '.join(_REGISTRY)}, got {name!r}") from None


def registered_steps() -> tuple[CalibrationStep, ...]:
    """Every registered step, in bench-day (registration) order."""
    _ensure_builtins()
    return tuple(_REGISTRY.values())


def step_order() -> tuple[str, ...]:
    """The steps' names in the order they run."""
    return tuple(s.name for s in registered_steps())


def record_names() -> tuple[str, ...]:
    """Every record a ``CalibrationSet`` can hold, in the order of the steps producing them."""
    return tuple(rec for s in registered_steps() for rec in s.produces)


def step_for_record(record: str) -> CalibrationStep | None:
    """The step that produces ``record`` (None: no registered step does)."""
    for s in registered_steps():
        if record in s.produces:
            return s
    return None


def resolve(ref: Ref | None) -> Callable[..., Any] | None:
    """The callable of a reference (``"module:attribute"`` imported now)."""
    if ref is None or callable(ref):
        return ref
    module, _, attr = ref.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def steps_help() -> str:
    """The ``--steps`` help line: every step with its help, the optional ones apart."""
    steps = registered_steps()
    main = "; ".join(f"{s.name} ({s.help})" for s in steps if not s.optional)
    opt = "; ".join(f"{s.name} ({s.help})" for s in steps if s.optional)
    text = ("comma-separated steps, run in this order (default: all but the optional "
            f"ones): {main}")
    return text + (f". Optional: {opt}" if opt else "")


def derived_values(record: Any) -> dict[str, Any]:
    """The values the registry derives from ``record`` (a ``StepResult``) on read; empty
    when its step derives none (or the record lacks what the derivation reads)."""
    step = step_for_record(record.name)
    fn = resolve(step.derive) if step is not None else None
    if fn is None:
        return {}
    try:
        return dict(fn(record))
    except (KeyError, ValueError, TypeError):  # an incomplete record derives nothing
        return {}


def value_units(record: str, key: str) -> str | None:
    """Units of value ``key`` of ``record``: the step's ``units`` entry, else the unit its
    name ends in (``exposure_s`` -> s, ``rms_px`` -> px); None for a pure number."""
    step = step_for_record(record)
    if step is not None and key in step.units:
        return step.units[key] or None
    low = key.lower()
    for suffix, units in _SUFFIX_UNITS:
        if low.endswith(suffix):
            return units
    return None
