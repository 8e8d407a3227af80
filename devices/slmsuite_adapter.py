"""One adapter for every slmsuite SLM and camera; vendor drivers stay slmsuite's.

``SlmsuiteSLM(obj)`` and ``SlmsuiteCamera(obj)`` wrap any constructed slmsuite
object. ``open_slmsuite("slm", "Holoeye", args)`` imports the class lazily (a bench
file says ``backend = "slmsuite:Holoeye"``), checks ``args`` against the class's
constructor and, when the vendor SDK is not importable, raises ``DeviceError``
naming the SDK and slmsuite's page for it instead of an ImportError traceback.

SLM path: our base class turns phase into grey levels (``devices.phase``), then
the adapter copies them into the slmsuite object's ``display`` (and the phase into
its ``phase``) and calls the driver's own ``_set_phase_hw`` hook: the grey levels on
the slmsuite object are exactly the ones we computed, with no second conversion.
Camera path: the adapter calls the driver's public ``get_image`` with one attempt,
no averaging and no HDR, so window, binning and orientation stay slmsuite's; our
base class does retries, averaging and time-outs (``watchdog=True`` also guards
against a driver that ignores its time-out and hangs). A driver exception that reads as
a time-out becomes ``DeviceTimeout``; any other counts as a dropped frame (retried).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from devices._common import call_with_deadline
from devices.base import SLM, Camera
from devices.errors import (
    ConfigError,
    DeviceDisconnected,
    DeviceError,
    DeviceTimeout,
    FrameDropped,
)

__all__ = [
    "SlmsuiteSLM",
    "SlmsuiteCamera",
    "Backend",
    "SLM_BACKENDS",
    "CAMERA_BACKENDS",
    "NOT_FROM_A_BENCH_FILE",
    "open_slmsuite",
    "sdk_available",
]

DOCS = "https://slmsuite.readthedocs.io/en/latest"


@dataclass(frozen=True)
class Backend:
    """One slmsuite class: where it lives and what vendor software it needs."""

    kind: str  # "slm" or "camera"
    cls: str
    module: str
    sdk: str  # human name of the vendor software, "" when none
    modules: tuple[str, ...] = ()  # Python modules that must import
    windows_dll: bool = False  # needs a vendor DLL: Windows only

    @property
    def docs_url(self) -> str:
        return f"{DOCS}/_autosummary/{self.module}.html"


_S = "slmsuite.hardware.slms."
_C = "slmsuite.hardware.cameras."
SLM_BACKENDS: dict[str, Backend] = {b.cls: b for b in [
    Backend("slm", "Meadowlark", _S + "meadowlark", "Meadowlark Blink SDK (Blink_C_wrapper.dll)",
            windows_dll=True),
    Backend("slm", "Santec", _S + "santec", "Santec SLMFunc.dll and FTD3XX.dll", windows_dll=True),
    Backend("slm", "Hamamatsu", _S + "hamamatsu", "Hamamatsu LCOS-SLM USB SDK (hpkSLMdaLV.dll)",
            windows_dll=True),
    Backend("slm", "Holoeye", _S + "holoeye", "Holoeye SLM Display SDK v4 (HEDS)", ("HEDS",)),
    Backend("slm", "ScreenMirrored", _S + "screenmirrored", "pyglet", ("pyglet",)),
    Backend("slm", "PLM", _S + "texasinstruments", "pyglet and hidapi (TI PLM)",
            ("pyglet", "hid")),
    Backend("slm", "RemoteSLM", _S + "remote", ""),
    Backend("slm", "SimulatedSLM", _S + "simulated", ""),
]}
CAMERA_BACKENDS: dict[str, Backend] = {b.cls: b for b in [
    Backend("camera", "AlliedVision", _C + "alliedvision", "Allied Vision Vimba X (vmbpy)",
            ("vmbpy",)),
    Backend("camera", "Basler", _C + "basler", "Basler pylon (pypylon)", ("pypylon",)),
    Backend("camera", "FLIR", _C + "flir", "Teledyne FLIR Spinnaker (PySpin)", ("PySpin",)),
    Backend("camera", "ImagingSource", _C + "imagingsource",
            "The Imaging Source tisgrabber (tisgrabber.py + DLL)", ("tisgrabber",),
            windows_dll=True),
    Backend("camera", "Instrumental", _C + "instrumental", "instrumental-lib", ("instrumental",)),
    Backend("camera", "MindVision", _C + "mindvision", "MindVision SDK (mvsdk)", ("mvsdk",)),
    Backend("camera", "MMCore", _C + "mmcore", "Micro-Manager (pymmcore)", ("pymmcore",)),
    Backend("camera", "PyLabLib", _C + "pylablib", "pylablib", ("pylablib",)),
    Backend("camera", "ThorCam", _C + "thorlabs", "Thorlabs Scientific Camera SDK "
            "(thorlabs_tsi_sdk)", ("thorlabs_tsi_sdk",)),
    Backend("camera", "Webcam", _C + "webcam", "OpenCV (cv2)", ("cv2",)),
    Backend("camera", "Cheetah640", _C + "xenics", "Xenics Xeneth SDK (xeneth64.dll)",
            windows_dll=True),
    Backend("camera", "RemoteCamera", _C + "remote", ""),
    Backend("camera", "SimulatedCamera", _C + "simulated", ""),
]}


NOT_FROM_A_BENCH_FILE = {
    "Template": "a template for writing new slmsuite drivers",
    "SegmentedSLM": "a window of another SLM object; build it in Python and wrap it",
}
"""slmsuite classes that exist but cannot be opened from a bench file, and why."""


def sdk_available(backend: Backend) -> tuple[bool, str]:
    """(usable here, why) without importing the vendor module."""
    missing = [m for m in backend.modules if importlib.util.find_spec(m) is None]
    if missing:
        return False, f"missing Python module(s): {', '.join(missing)}"
    if backend.windows_dll and not sys.platform.startswith("win"):
        return False, "vendor DLL, Windows only"
    if backend.windows_dll:
        return True, "vendor DLL (checked when opened)"
    return True, "importable" if backend.modules else "no vendor SDK needed"


def _sdk_error(backend: Backend, why: str) -> DeviceError:
    return DeviceError(
        f"{backend.kind} backend slmsuite:{backend.cls} needs {backend.sdk or 'its driver'}, "
        f"which is not usable here ({why}); install it as described on slmsuite's page "
        f"{backend.docs_url} (and {DOCS}/installation.html)"
    )


def _constructor_arguments(cls: type) -> tuple[list[str], bool]:
    """Named constructor arguments, following ``**kwargs`` up to the base classes."""
    names: list[str] = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters
        names += [n for n, p in params.items() if n != "self" and n not in names
                  and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return names, False
    return names, True


def open_slmsuite(kind: str, cls_name: str, args: dict[str, Any], *, key: str = "") -> Any:
    """Construct slmsuite's ``cls_name`` (kind "slm" or "camera") with ``args``.

    ``key`` (e.g. "slm.args") prefixes configuration errors.
    """
    table = SLM_BACKENDS if kind == "slm" else CAMERA_BACKENDS
    key = key or f"{kind}.args"
    if cls_name not in table:
        raise ConfigError(
            f"{kind}.backend: unknown slmsuite {kind} class {cls_name!r}; known: "
            f"{', '.join(sorted(table))}"
        )
    backend = table[cls_name]
    ok, why = sdk_available(backend)
    if not ok:
        raise _sdk_error(backend, why)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = importlib.import_module(backend.module)
    except (ImportError, OSError) as exc:
        raise _sdk_error(backend, f"{type(exc).__name__}: {exc}") from exc
    cls = getattr(module, cls_name)
    accepted, takes_kwargs = _constructor_arguments(cls)
    for name in args:
        if name not in accepted and not takes_kwargs:
            raise ConfigError(
                f"{key}.{name}: not an argument of slmsuite {cls_name}; accepted: "
                f"{', '.join(accepted)}"
            )
    try:
        return cls(**args)
    except (ImportError, OSError, AttributeError, NameError) as exc:
        raise _sdk_error(backend, f"{type(exc).__name__}: {exc}") from exc
    except TypeError as exc:
        raise ConfigError(f"{key}: slmsuite {cls_name} refused the arguments: {exc}") from exc
    except Exception as exc:
        raise DeviceError(f"{kind} slmsuite:{cls_name} could not be opened: {exc}") from exc


def _device_id(wrapped: Any) -> str:
    return f"slmsuite:{type(wrapped).__name__}:{getattr(wrapped, 'name', '')}"


def _as_host(a: Any) -> np.ndarray:
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)


class SlmsuiteSLM(SLM):
    """Our ``SLM`` around a slmsuite SLM object (``self.wrapped``)."""

    def __init__(self, wrapped: Any, *, name: str | None = None, backend: str = "",
                 settle_time_s: float | None = None, device_id: str = "") -> None:
        self.wrapped = wrapped
        super().__init__(
            shape=tuple(int(v) for v in wrapped.shape),
            bitdepth=int(wrapped.bitdepth),
            pitch_um=tuple(float(v) for v in _as_host(wrapped.pitch_um)),
            wav_um=float(wrapped.wav_um),
            wav_design_um=float(getattr(wrapped, "wav_design_um", None) or wrapped.wav_um),
            settle_time_s=float(wrapped.settle_time_s if settle_time_s is None else settle_time_s),
            name=name or getattr(wrapped, "name", "") or type(wrapped).__name__,
            device_id=device_id or _device_id(wrapped),
            backend=backend or f"slmsuite:{type(wrapped).__name__}",
        )
        # The driver's wav_design_um (grey range = 2*pi there) scales our conversion in the
        # base class, as slmsuite's phase_scaling does; a measured response supersedes it.
        self._xp = getattr(wrapped, "xp", np)
        # Share the buffers: our grey levels land in the driver's display, our phase in its
        # phase, with no copy (numpy-backed drivers; a cupy one gets copies).
        self._shared = (
            self._xp is np and isinstance(wrapped.display, np.ndarray)
            and wrapped.display.shape == self.shape and wrapped.display.dtype == self.dtype
            and isinstance(wrapped.phase, np.ndarray) and wrapped.phase.dtype == np.float32
            and wrapped.phase.shape == self.shape
        )
        if self._shared:
            np.copyto(wrapped.phase, self._phase)
            np.copyto(wrapped.display, self.display)
            self._phase, self.display = wrapped.phase, wrapped.display

    def _set_phase_hw(self, display: np.ndarray) -> None:
        w = self.wrapped
        xp = self._xp
        try:
            if self._shared and w.display is display and w.phase is self._phase:
                pass
            elif xp is np:
                np.copyto(w.display, display)
                np.copyto(w.phase, self._phase)
            else:  # a cupy-backed slmsuite SLM
                w.display = xp.asarray(display)
                w.phase = xp.asarray(self._phase)
            w._set_phase_hw(w.display)
        except DeviceError:
            raise
        except ConnectionError as exc:
            raise DeviceDisconnected(f"slm '{self.name}': {exc}") from exc
        except TimeoutError as exc:
            raise DeviceTimeout(f"slm '{self.name}': the driver timed out: {exc}") from exc
        except Exception as exc:
            raise DeviceError(f"slm '{self.name}': the driver failed to display: {exc}") from exc

    def _close_hw(self) -> None:
        self.wrapped.close()

    def info(self) -> dict[str, Any]:
        d = super().info()
        d["slmsuite_class"] = type(self.wrapped).__name__
        return d


def _looks_like_timeout(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return isinstance(exc, TimeoutError) or "timeout" in text or "timed out" in text


class SlmsuiteCamera(Camera):
    """Our ``Camera`` around a slmsuite camera object (``self.wrapped``)."""

    def __init__(self, wrapped: Any, *, name: str | None = None, backend: str = "",
                 capture_attempts: int = 5, timeout_s: float = 1.0,
                 pitch_um: float | tuple[float, float] | None = None,
                 device_id: str = "", watchdog: bool = False) -> None:
        self.wrapped = wrapped
        self.watchdog = bool(watchdog)
        self._hung: Any = None  # the thread of a driver call that never returned
        pitch = pitch_um if pitch_um is not None else getattr(wrapped, "pitch_um", None)
        if pitch is None:
            pitch = (1.0, 1.0)  # unknown: slmsuite allows None, we need a number
        p = np.ravel(_as_host(pitch)).astype(float)
        super().__init__(
            shape=tuple(int(v) for v in wrapped.shape),
            bitdepth=int(wrapped.bitdepth),
            pitch_um=(float(p[0]), float(p[-1])),
            name=name or getattr(wrapped, "name", "") or type(wrapped).__name__,
            device_id=device_id or _device_id(wrapped),
            backend=backend or f"slmsuite:{type(wrapped).__name__}",
            capture_attempts=capture_attempts,
            timeout_s=timeout_s,
        )
        wrapped.capture_attempts = 1  # retries are ours, with our counting and errors

    def _driver_frame(self, timeout_s: float) -> np.ndarray:
        """The driver's frame; with ``watchdog``, given up on after the deadline.

        Vendor SDKs normally honour their time-out; ``watchdog`` is for those that do not:
        the call runs in a daemon thread (``devices._common.call_with_deadline``) and
        ``DeviceTimeout`` is raised when it has not returned within ``frame_deadline_s``
        (exposure + ``timeout_s`` + a bounded grace). The hung thread is abandoned, never
        joined, so the process still exits. Until a hung call returns, every request
        raises ``DeviceTimeout`` at once instead of queueing.
        """
        kwargs = {"timeout_s": timeout_s, "averaging": False, "hdr": False}
        if not self.watchdog:
            return self.wrapped.get_image(**kwargs)
        if self._hung is not None:
            if self._hung.is_alive():
                raise DeviceTimeout("an earlier frame request is still hung in the driver")
            self._hung = None
        try:
            return call_with_deadline(self.wrapped.get_image, self.frame_deadline_s(timeout_s),
                                      f"camera '{self.name}' get_image", **kwargs)
        except DeviceTimeout as exc:
            self._hung = getattr(exc, "hung_thread", None)
            raise

    def _get_image_hw(self, timeout_s: float) -> np.ndarray:
        try:
            return self._driver_frame(timeout_s)
        except (FrameDropped, DeviceTimeout, DeviceDisconnected):
            raise
        except ConnectionError as exc:
            raise DeviceDisconnected(str(exc)) from exc
        except Exception as exc:
            if _looks_like_timeout(exc):
                raise DeviceTimeout(f"{type(exc).__name__}: {exc}") from exc
            raise FrameDropped(f"{type(exc).__name__}: {exc}") from exc

    def _set_exposure_hw(self, exposure_s: float) -> None:
        self.wrapped.set_exposure(exposure_s)

    def _get_exposure_hw(self) -> float:
        return float(self.wrapped.exposure_s)

    def _flush_hw(self, timeout_s: float) -> None:
        try:
            self.wrapped.flush(timeout_s=timeout_s)
        except Exception as exc:
            if _looks_like_timeout(exc):
                raise DeviceTimeout(f"camera '{self.name}': flush: {exc}") from exc
            raise DeviceError(f"camera '{self.name}': flush failed: {exc}") from exc

    def _close_hw(self) -> None:
        self.wrapped.close()

    # capture settings: what slmsuite offers (the base class refuses the rest)
    def _offers(self, setting: str) -> bool:
        w = self.wrapped
        if setting == "roi":  # every slmsuite camera (a software crop without hardware WOI)
            return callable(getattr(w, "set_woi", None))
        if setting == "gain":
            return callable(getattr(w, "set_gain", None))
        if setting == "pixel_format":
            return callable(getattr(w, "set_pixel_format", None))
        if setting == "trigger":  # Thorlabs: setup(profile); FLIR: read from the camera
            return (callable(getattr(w, "setup", None)) and hasattr(w, "profile")) or \
                callable(getattr(w, "_read_trigger_is_software", None))
        return False

    def _shape_hw(self) -> tuple[int, int]:
        return tuple(int(v) for v in self.wrapped.shape)

    def _set_roi_hw(self, roi: list[int]) -> None:
        self.wrapped.set_woi(tuple(roi))  # slmsuite's window of interest: (x0, w, y0, h)

    def _set_gain_hw(self, gain: float) -> None:
        self.wrapped.set_gain(gain)

    def _set_pixel_format_hw(self, fmt: str) -> None:
        self.wrapped.set_pixel_format(fmt)

    def _set_trigger_hw(self, mode: str) -> None:
        w = self.wrapped
        if callable(getattr(w, "setup", None)) and hasattr(w, "profile"):
            w.setup("single_hardware" if mode == "hardware" else "single")
            return
        software = bool(w._read_trigger_is_software())  # FLIR: the camera's own setting
        if software != (mode == "software"):
            raise ConfigError(
                f"camera.trigger: {mode!r} asked, but the {type(w).__name__} camera is set "
                f"for {'software' if software else 'hardware'} triggering and slmsuite reads "
                "this from the camera; set TriggerMode/TriggerSource in the vendor's tool")

    def info(self) -> dict[str, Any]:
        d = super().info()
        d["slmsuite_class"] = type(self.wrapped).__name__
        d["watchdog"] = self.watchdog
        return d
