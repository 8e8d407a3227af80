"""The error audit of the `hil` command line (issue 8, parts 5 and 6).

Every bad input a user can give gets exactly one line on stderr, ``hil: error: ...``,
naming the argument or file, exit status 2 and no traceback: special files as bench
files, upper limits on times, output paths inside a file or on a read-only file system,
bad decoder files, device errors. Programming errors keep their traceback.

The cases run in this process (``hil.cli.main(argv)``, a python + torch start saved per
case), under the conditions of a fresh ``hil`` process, so that the checks are as strict
as a subprocess's (``_hil_in_process``):

* stdout and stderr are captured at the file-descriptor level (``capfd``): what C code or
  a child process writes counts as well as ``sys.stderr``;
* logging is configured by ``main`` itself, as in a fresh process (the root logger's
  handlers, pytest's included, are set aside while it runs), so a WARNING log line is one
  more line on stderr, and INFO lines are what a user sees;
* Python's default warning filters apply, and every warning shown counts as lines on
  stderr (pytest would otherwise swallow them into its summary);
* an exception out of ``main`` is a traceback on stderr with status 1; ``SystemExit``
  gives its code; threads the command started and left running are waited for, as at
  the exit of a process, and a hang (in ``open`` of a FIFO, say) is cut by an alarm.

``SUBPROCESS`` names the few cases that still run ``python -m hil.cli`` in a subprocess,
each with the reason it needs a real process.
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHIPPED_SIM = REPO / "devices" / "benches" / "sim.toml"
TIMEOUT_S = 180  # generous: a hang is minutes, a slow CI start a few seconds


def _edited(dst: Path, old: str, new: str) -> None:
    text = SHIPPED_SIM.read_text()
    assert old in text, old
    dst.write_text(text.replace(old, new))


def _tiny_decoder(path: Path) -> None:
    from simulation import DualVortexEncoder, LinearDecoder, encode_batched, speckle

    enc = DualVortexEncoder()
    imgs = speckle(64, 15.0, seed=0)
    LinearDecoder(alpha=1.0, method="ridge").fit(encode_batched(enc, imgs), imgs,
                                                 encoder=enc).save(path)


def _inconsistent_decoder(path: Path, pattern_shape=(3, 7, 7), encoder=None) -> None:
    """A well-formed, checksummed weight file whose metadata contradicts itself."""
    import torch

    from simulation.decoder_file import KIND
    from simulation.weightfile import save_weight_file

    # format 2 (no "params"): still readable, so the check that refuses it is the shapes'
    meta = {"format_version": 2, "method": "ridge", "alpha": 1.0,
            "image_shape": [32, 32], "pattern_shape": list(pattern_shape), "encoder": encoder,
            "train_mse": 0.0}
    save_weight_file(path, KIND, {"weight": torch.zeros(2048, 1024)}, meta)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cli_errors")
    (d / "benchdir").mkdir()
    (d / "dir.pt").mkdir()
    (d / "afile").write_text("x\n")
    os.mkfifo(d / "fifo.toml")
    (d / "big.toml").write_text("#" * (2 << 20))
    (d / "notutf8.toml").write_bytes(b"\xff\xfe name = 1\n")
    shutil.copy(SHIPPED_SIM, d / "sim.toml")
    _edited(d / "exposure.toml", "exposure_s = 0.001", "exposure_s = 1e9")
    _edited(d / "settle.toml", "settle_time_s = 0.0", "settle_time_s = 1e9")
    _edited(d / "timeout.toml", "\ntimeout_s = 1.0", "\ntimeout_s = 1e9")
    _edited(d / "latency.toml", "frame_latency_s = 0.0", "frame_latency_s = 1e9")
    _edited(d / "attempts.toml", "capture_attempts = 5", "capture_attempts = 1000000")
    _edited(d / "unknown.toml", "noise = true", "noise = true\nexposure = 2")
    _edited(d / "disconnect.toml", "disconnect_after_frames = 0", "disconnect_after_frames = 1")
    _tiny_decoder(d / "dec.pt")
    _inconsistent_decoder(d / "badmeta.pt")
    # weights and shapes agree, the encoder signature misses its keys
    _inconsistent_decoder(d / "badsig.pt", (2, 32, 32), {"name": "vortex", "charges": [1, 3]})
    (d / "badrun").mkdir()
    (d / "badrun" / "run.json").write_text('{"status": "running"}')  # no "config"
    return d


@pytest.fixture(scope="module")
def readonly_dir(work) -> Path:
    """A read-only file system (a tmpfs mounted ro): refused even for root."""
    ro = work / "ro"
    ro.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command: cannot make a read-only file system here")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here (needs root): {r.stderr.strip()}")
    yield ro
    subprocess.run(["umount", str(ro)], check=False)


def _hil(args: list[str], cwd: Path, data_dir: str | None = None) -> subprocess.CompletedProcess:
    """``python -m hil.cli ARGS`` in a subprocess, as a user runs it."""
    env = dict(os.environ)
    env.pop("HIL_DATA_DIR", None)
    if data_dir is not None:
        env["HIL_DATA_DIR"] = data_dir
    return subprocess.run([sys.executable, "-m", "hil.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)


@dataclass
class _Result:
    """What ``_assert_one_line`` reads of a run (as of a ``subprocess.CompletedProcess``)."""

    returncode: int
    stdout: str
    stderr: str


class _Hang(BaseException):  # noqa: N818 - not an error of the code under test: a time-out
    """Raised by the alarm in a command still running after ``TIMEOUT_S``."""


#: Python's default warning filters (a process started without -W or PYTHONWARNINGS)
_IGNORED_BY_DEFAULT = (DeprecationWarning, PendingDeprecationWarning, ImportWarning,
                       ResourceWarning)


def _hil_in_process(args: list[str], capfd: pytest.CaptureFixture[str],
                    monkeypatch: pytest.MonkeyPatch, cwd: Path,
                    data_dir: str | None = None) -> _Result:
    """``hil.cli.main(args)`` in this process, seen as a fresh ``hil`` process would be.

    Stdout and stderr are read at the file-descriptor level; ``main`` configures logging
    itself (pytest's handlers are set aside meanwhile); the warnings Python shows by
    default are added to stderr; an exception out of ``main`` is a traceback on stderr and
    status 1, ``SystemExit`` its code; threads the command left running are waited for (a
    process waits for them at exit); a command still running after ``TIMEOUT_S`` fails.
    """
    from hil.cli import main

    monkeypatch.chdir(cwd)
    monkeypatch.delenv("HIL_DATA_DIR", raising=False)
    if data_dir is not None:
        monkeypatch.setenv("HIL_DATA_DIR", data_dir)
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    threads_before = set(threading.enumerate())

    def on_alarm(signum: int, frame: object) -> None:
        raise _Hang

    old_alarm = signal.signal(signal.SIGALRM, on_alarm)
    extra = io.StringIO()
    capfd.readouterr()  # only what the command writes
    try:
        root.handlers.clear()  # so that main's logging.basicConfig takes effect
        root.setLevel(logging.WARNING)
        signal.setitimer(signal.ITIMER_REAL, TIMEOUT_S)
        with warnings.catch_warnings(record=True) as shown:
            warnings.resetwarnings()
            warnings.simplefilter("default")
            for category in _IGNORED_BY_DEFAULT:
                warnings.filterwarnings("ignore", category=category)
            try:
                status = main(list(args))
            except SystemExit as exc:  # argparse, --version, sys.exit in a command
                if exc.code is None or isinstance(exc.code, int):
                    status = exc.code or 0
                else:  # sys.exit("text"): the text on stderr, status 1
                    print(exc.code, file=extra)
                    status = 1
            except Exception:  # noqa: BLE001 - what the interpreter would print and exit with
                extra.write(traceback.format_exc())
                status = 1
        for w in shown:
            extra.write(warnings.formatwarning(w.message, w.category, w.filename, w.lineno,
                                               w.line))
        for t in set(threading.enumerate()) - threads_before:
            if not t.daemon:  # the process would not exit before it ends
                t.join(TIMEOUT_S)
                assert not t.is_alive(), f"hil {args}: thread {t.name} still running"
    except _Hang:
        pytest.fail(f"hil {' '.join(args)} still running after {TIMEOUT_S} s")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_alarm)
        for h in root.handlers[:]:
            if h not in saved_handlers:
                root.removeHandler(h)
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    out, err = capfd.readouterr()
    return _Result(int(status), out, err + extra.getvalue())


# progress, not errors: tqdm's "3/10 [00:01<...]", its blank erase, INFO log lines of the
# steps a command ran before a device failed mid-way, a deprecated spelling's warning
_PROGRESS = re.compile(r"\d+/\d+ \[|^\s*$|^INFO |^hil: warning: ")


def _assert_one_line(r: subprocess.CompletedProcess | _Result, needles: tuple[str, ...]) -> None:
    """Exit status 2, no traceback, and one line on stderr (besides progress output)."""
    lines = [ln for ln in r.stderr.splitlines() if not _PROGRESS.search(ln)]
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert len(lines) == 1 and lines[0].startswith("hil: error: "), r.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def _shared_data() -> str | None:
    d = os.environ.get("HIL_DATA_DIR") or str(REPO.parent / "shared" / "data")
    return d if Path(d, "mnist_test.npz").is_file() else None


def _xfail(reason: str):
    return pytest.mark.xfail(strict=True, reason=reason)


RUN = ["--n", "2", "--no-progress"]

# (id, argv, substrings the one line must hold); "RO" stands for the read-only folder
CASES = [
    # bench files: special files, size, encoding, limits (hung or tracebacked before)
    ("bench-dir", ["devices", "check", "benchdir"], ("benchdir", "directory")),
    ("bench-dev-zero", ["devices", "check", "/dev/zero"], ("/dev/zero",)),
    ("bench-fifo", ["devices", "check", "fifo.toml"], ("fifo.toml", "FIFO")),
    ("bench-too-big", ["devices", "check", "big.toml"], ("big.toml",)),
    ("bench-not-utf8", ["devices", "check", "notutf8.toml"], ("notutf8.toml",)),
    ("bench-missing", ["devices", "check", "missing.toml"], ("missing.toml",)),
    ("bench-unknown-key", ["devices", "check", "unknown.toml"], ("camera.exposure",)),
    ("exposure-1e9", ["devices", "check", "exposure.toml"], ("camera.exposure_s", "60")),
    ("settle-1e9", ["devices", "check", "settle.toml"], ("slm.settle_time_s", "10")),
    ("timeout-1e9", ["devices", "check", "timeout.toml"], ("camera.timeout_s", "60")),
    ("latency-1e9", ["devices", "check", "latency.toml"], ("camera.frame_latency_s",)),
    ("capture-attempts", ["devices", "check", "attempts.toml"], ("camera.capture_attempts",)),
    ("device-error", ["devices", "check", "disconnect.toml", "--averaging", "3"],
     ("camera", "disconnect", "laser output off")),
    # hil train
    ("train-out-in-file", ["train", "--count", "8", "--out", "afile/x.pt"], ("--out", "afile")),
    ("train-out-is-dir", ["train", "--count", "8", "--out", "dir.pt"], ("--out", "dir.pt")),
    ("train-out-readonly", ["train", "--count", "8", "--out", "RO/x.pt"], ("--out", "RO")),
    ("train-alpha", ["train", "--count", "8", "--alpha", "-1", "--out", "x.pt"], ("alpha",)),
    ("train-count-1", ["train", "--count", "1", "--out", "x.pt"], ("--count",)),
    ("train-on-bench-dir", ["train", "--count", "8", "--on-bench", "benchdir", "--out", "x.pt"],
     ("benchdir",)),
    ("train-steps-renamed", ["train", "--count", "8", "--steps", "2", "--out", "x.pt"],
     ("--steps", "--iterations 2")),
    # hil bench-train
    ("bench-train-dir", ["bench-train", "benchdir", "--count", "8", "--out", "x.pt"],
     ("benchdir",)),
    ("bench-train-out-in-file", ["bench-train", "sim.toml", "--out", "afile/x.pt"],
     ("--out", "afile")),
    ("bench-train-device-error", ["bench-train", "disconnect.toml", "--count", "8",
                                  "--iterations", "2", "--out", "x.pt"],
     ("camera", "disconnect", "laser output off")),
    # hil eval
    ("eval-missing-decoder", ["eval", "missing.pt", "--n", "2"], ("missing.pt",)),
    ("eval-decoder-is-dir", ["eval", "benchdir", "--n", "2"], ("benchdir",)),
    ("eval-inconsistent-decoder", ["eval", "badmeta.pt", "--n", "2"], ("badmeta.pt",)),
    ("eval-broken-signature", ["eval", "badsig.pt", "--n", "2"], ("badsig.pt", "size")),
    ("eval-out-in-file", ["eval", "dec.pt", "--n", "2", "--out", "afile/sub"],
     ("--out", "afile")),
    ("eval-out-readonly", ["eval", "dec.pt", "--n", "2", "--out", "RO/sub"], ("--out", "RO")),
    # hil stats
    ("stats-no-data", ["stats", "--dataset", "mnist", "--n", "2"], ("mnist", "HIL_DATA_DIR")),
    # hil calibrate
    ("calibrate-bench-dir", ["calibrate", "benchdir", "--out", "cal"], ("benchdir",)),
    ("calibrate-bench-fifo", ["calibrate", "fifo.toml", "--out", "cal"], ("fifo.toml",)),
    ("calibrate-exposure-1e9", ["calibrate", "exposure.toml", "--out", "cal"],
     ("camera.exposure_s",)),
    ("calibrate-out-in-file", ["calibrate", "sim.toml", "--out", "afile/cal"],
     ("afile/cal",)),
    ("calibrate-device-error", ["calibrate", "disconnect.toml", "--out", "cal2", "--quiet"],
     ("camera", "disconnect")),
    # hil run (needs the real data for the image list)
    ("run-bench-dir", ["run", "benchdir", "--decoder", "dec.pt", "--out", "r1", *RUN],
     ("benchdir",)),
    ("run-bench-dev-zero", ["run", "/dev/zero", "--decoder", "dec.pt", "--out", "r2", *RUN],
     ("/dev/zero",)),
    ("run-missing-decoder", ["run", "sim.toml", "--decoder", "missing.pt", "--out", "r3", *RUN],
     ("missing.pt",)),
    ("run-inconsistent-decoder",
     ["run", "sim.toml", "--decoder", "badmeta.pt", "--out", "r4", *RUN], ("badmeta.pt",)),
    ("run-out-in-file", ["run", "sim.toml", "--decoder", "dec.pt", "--out", "afile/r", *RUN],
     ("afile/r",)),
    ("run-out-readonly", ["run", "sim.toml", "--decoder", "dec.pt", "--out", "RO/r", *RUN],
     ("RO",)),
    ("run-exposure-1e9", ["run", "sim.toml", "--decoder", "dec.pt", "--out", "r5",
                          "--exposure-s", "1e9", *RUN], ("exposure",)),
    ("run-classifier-not-weights",
     ["run", "sim.toml", "--decoder", "dec.pt", "--out", "r6", "--classifier", "afile", *RUN],
     ("afile",)),
    ("run-mask-not-a-mask",
     ["run", "sim.toml", "--decoder", "dec.pt", "--out", "r7", "--mask", "afile", *RUN],
     ("afile",)),
    ("run-resume-broken-record",
     ["run", "sim.toml", "--decoder", "dec.pt", "--out", "badrun", "--resume", *RUN],
     ("run.json",)),
    ("run-sdk-missing",  # a DeviceError opening the bench (the vendor SDK is not here)
     ["run", "holoeye-basler.toml", "--decoder", "dec.pt", "--out", "r8", *RUN], ("Holoeye",)),
    # hil experiment paper, demo, bench
    ("paper-out-in-file", ["experiment", "paper", "--scale", "tiny", "--out", "afile/p"],
     ("--out", "afile")),
    ("paper-workers", ["experiment", "paper", "--scale", "tiny", "--workers", "0", "--out", "p"],
     ("--workers",)),
    ("paper-seeds", ["experiment", "paper", "--scale", "tiny", "--seeds", "0", "--out", "p"],
     ("--seeds",)),
    ("paper-data-dir", ["experiment", "paper", "--scale", "tiny", "--data-dir", "nowhere",
                        "--out", "p"], ("--data-dir", "nowhere")),
    ("demo-out-in-file", ["demo", "--out", "afile/d"], ("--out", "afile")),
    ("demo-bench-fifo", ["demo", "--bench", "fifo.toml", "--out", "d"], ("fifo.toml",)),
    ("demo-count", ["demo", "--count", "0", "--out", "d"], ("--count",)),
    ("bench-out-in-file", ["bench", "--out", "afile/b"], ("--out", "afile")),
    # hil mask
    ("mask-show-not-a-mask", ["mask", "show", "afile"], ("afile",)),
]

#: the cases that run ``python -m hil.cli`` in a subprocess, and why each needs one
SUBPROCESS: dict[str, str] = {
    # the end-to-end path: `sys.exit(main())` of `python -m hil.cli` makes the exit status,
    # and a device that failed mid-command (its bench, files and threads closed on the way
    # out) adds nothing to the real stderr at interpreter exit (atexit, finalizers)
    "calibrate-device-error": "exit status and stderr of a real process after a device failed",
    # a hang in a blocking open() is cut here by killing the process; the in-process alarm
    # only cuts calls that let a Python signal handler run (the other FIFO cases use it)
    "bench-fifo": "a hang cut by killing the process, whatever the call that blocks",
    # the vendor SDK's import fails in a process that imported nothing before: no earlier
    # case can have left a half-imported driver module behind in sys.modules
    "run-sdk-missing": "an import-time failure in a fresh interpreter",
}

XFAIL: dict[str, str] = {
}


@pytest.mark.parametrize(
    "case_id,argv,needles",
    [pytest.param(i, a, n, id=i, marks=[_xfail(XFAIL[i])] if i in XFAIL else [])
     for i, a, n in CASES])
def test_bad_input_is_one_line_naming_it(work, request, capfd, monkeypatch, case_id, argv,
                                         needles):
    if "run" in argv[:1] and _shared_data() is None:
        pytest.skip("hil run needs the real data (HIL_DATA_DIR)")
    if any("RO" in a.split("/") for a in argv):
        ro = request.getfixturevalue("readonly_dir")
        argv = ["/".join(str(ro) if p == "RO" else p for p in a.split("/")) for a in argv]
        needles = tuple(str(ro) if n == "RO" else n for n in needles)
    data_dir = _shared_data() if argv[0] == "run" else None
    if case_id in SUBPROCESS:
        r = _hil(argv, work, data_dir=data_dir)
    else:
        r = _hil_in_process(argv, capfd, monkeypatch, work, data_dir=data_dir)
    _assert_one_line(r, needles)


def test_subprocess_cases_are_cases():
    """Every name in SUBPROCESS is a case (a renamed case must not lose its subprocess)."""
    assert set(SUBPROCESS) <= {i for i, _, _ in CASES}


def test_in_process_runs_show_what_a_process_would(tmp_path, capfd, monkeypatch):
    """A WARNING log line and a UserWarning reach the stderr the cases check, as in a process."""
    import logging as logging_

    import devices.config

    real = devices.config.describe_schema

    def noisy() -> str:
        logging_.getLogger("hil.test").warning("a log line")
        warnings.warn("a warning", UserWarning, stacklevel=1)
        return real()

    monkeypatch.setattr(devices.config, "describe_schema", noisy)
    r = _hil_in_process(["devices", "schema"], capfd, monkeypatch, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "WARNING hil.test: a log line" in r.stderr, r.stderr
    assert "UserWarning: a warning" in r.stderr, r.stderr
    assert "exposure_s" in r.stdout


def test_in_process_hang_is_cut(tmp_path, capfd, monkeypatch):
    """A command blocked in open() of a FIFO fails the case after TIMEOUT_S (here 1 s)."""
    import devices.config

    os.mkfifo(tmp_path / "fifo")
    monkeypatch.setattr(devices.config, "describe_schema",
                        lambda: (tmp_path / "fifo").read_text())
    monkeypatch.setattr(sys.modules[__name__], "TIMEOUT_S", 1)
    with pytest.raises(pytest.fail.Exception, match="still running after 1 s"):
        _hil_in_process(["devices", "schema"], capfd, monkeypatch, tmp_path)


def test_readonly_fixture_really_refuses_root(readonly_dir):
    """The read-only cases test what they say: even root cannot write there."""
    with pytest.raises(OSError):
        (readonly_dir / "probe").write_text("x")


# ---- programming errors keep their traceback; OS errors name their file -------------------

@pytest.mark.parametrize("exc_type", [TypeError, KeyError, AttributeError])
def test_programming_errors_keep_their_traceback(monkeypatch, exc_type):
    import devices.config
    from hil.cli import main

    def broken() -> str:
        raise exc_type("a bug")

    monkeypatch.setattr(devices.config, "describe_schema", broken)
    with pytest.raises(exc_type):
        main(["devices", "schema"])


def test_user_error_messages():
    from devices.errors import ConfigError, DeviceTimeout
    from hil.cli import UserError, user_error_message

    assert user_error_message(PermissionError(13, "Permission denied", "/x/y")) == \
        "/x/y: Permission denied"
    assert user_error_message(OSError(28, "No space left on device", "c.h5")) == \
        "c.h5: No space left on device"
    assert user_error_message(FileExistsError(17, "File exists", "a", None, "b")) == \
        "a -> b: File exists"
    assert user_error_message(ConfigError("camera.x: bad\nsecond")) == "camera.x: bad second"
    assert user_error_message(UserError("--out: no")) == "--out: no"
    msg = user_error_message(DeviceTimeout("camera 'cam': no frame within 1 s"))
    assert msg.startswith("camera 'cam': no frame") and "laser output off" in msg
    for bug in (TypeError("t"), KeyError("k"), AttributeError("a"), RuntimeError("r")):
        assert user_error_message(bug) is None


def test_device_error_in_a_command_is_one_line(monkeypatch, capsys):
    """A DeviceError out of any command (not only calibrate/devices check) is one line."""
    import devices.config
    from devices.errors import DeviceDisconnected
    from hil.cli import main

    def gone() -> str:
        raise DeviceDisconnected("camera 'cam' disconnected: USB")

    monkeypatch.setattr(devices.config, "describe_schema", gone)
    assert main(["devices", "schema"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("hil: error: camera 'cam' disconnected")


def test_schema_shows_the_upper_limits(capsys):
    from hil.cli import main

    assert main(["devices", "schema"]) == 0
    out = capsys.readouterr().out
    for key, limit in (("exposure_s", "<= 60 s"), ("settle_time_s", "<= 10 s"),
                       ("timeout_s", "<= 60 s"), ("frame_latency_s", "<= 10 s")):
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(key + ":"))
        assert limit in line, line



def test_version_prints_the_installed_package_version(capsys):
    from importlib.metadata import version

    from hil.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"hil {version('hil-diffraction')}"
