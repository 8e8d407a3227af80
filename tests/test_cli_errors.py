"""The error audit of the `hil` command line (issue 8, parts 5 and 6).

Every bad input a user can give gets exactly one line on stderr, ``hil: error: ...``,
naming the argument or file, exit status 2 and no traceback: special files as bench
files, upper limits on times, output paths inside a file or on a read-only file system,
bad decoder files, device errors. Programming errors keep their traceback.

Each case runs ``python -m hil.cli`` in a subprocess, as a user would (a hang is caught
by the subprocess time-out, generous so the test is never flaky).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
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
    LinearDecoder(alpha=1.0).fit(encode_batched(enc, imgs), imgs, method="ridge",
                                 encoder=enc).save(path)


def _inconsistent_decoder(path: Path, pattern_shape=(3, 7, 7), encoder=None) -> None:
    """A well-formed, checksummed weight file whose metadata contradicts itself."""
    import torch

    from simulation import decoders
    from simulation.weightfile import save_weight_file

    meta = {"format_version": decoders.FORMAT_VERSION, "method": "ridge", "alpha": 1.0,
            "image_shape": [32, 32], "pattern_shape": list(pattern_shape), "encoder": encoder,
            "train_mse": 0.0}
    save_weight_file(path, decoders._KIND, {"weight": torch.zeros(2048, 1024)}, meta)


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
    env = dict(os.environ)
    env.pop("HIL_DATA_DIR", None)
    if data_dir is not None:
        env["HIL_DATA_DIR"] = data_dir
    return subprocess.run([sys.executable, "-m", "hil.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)


# progress, not errors: tqdm's "3/10 [00:01<...]", its blank erase, INFO log lines of the
# steps a command ran before a device failed mid-way
_PROGRESS = re.compile(r"\d+/\d+ \[|^\s*$|^INFO ")


def _assert_one_line(r: subprocess.CompletedProcess, needles: tuple[str, ...]) -> None:
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
    ("train-on-bench-device-error", ["train", "--count", "8", "--on-bench", "disconnect.toml",
                                     "--steps", "2", "--out", "x.pt"],
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

XFAIL: dict[str, str] = {
}


@pytest.mark.parametrize(
    "argv,needles",
    [pytest.param(a, n, id=i, marks=[_xfail(XFAIL[i])] if i in XFAIL else [])
     for i, a, n in CASES])
def test_bad_input_is_one_line_naming_it(work, request, argv, needles):
    if "run" in argv[:1] and _shared_data() is None:
        pytest.skip("hil run needs the real data (HIL_DATA_DIR)")
    if any("RO" in a.split("/") for a in argv):
        ro = request.getfixturevalue("readonly_dir")
        argv = ["/".join(str(ro) if p == "RO" else p for p in a.split("/")) for a in argv]
        needles = tuple(str(ro) if n == "RO" else n for n in needles)
    r = _hil(argv, work, data_dir=_shared_data() if argv[0] == "run" else None)
    _assert_one_line(r, needles)


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
