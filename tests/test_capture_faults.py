"""Nothing lost on a failing disk: every capture write checked, the run stops, resume works.

Faults are injected for real: a file-size limit (RLIMIT_FSIZE, in a child process with
SIGXFSZ ignored, so a write past it fails with EFBIG) and a full file system (a few-MB
tmpfs mounted in a private mount namespace with ``unshare``; skipped with the reason
where the kernel or the container does not allow it). Files are created with the umask.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from hil.runs import CaptureStore, CaptureWriteError, read_captures, write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (2, 64, 64)  # frames per capture
CAPTURE_BYTES = 2 * 64 * 64 * 2


def _frames(i: int) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 4096, SHAPE, dtype=np.uint16)


def _patterns(i: int) -> np.ndarray:
    return np.full((2, 8, 8), float(i), np.float32)


def _check_content(caps: dict, n: int) -> None:
    assert caps["index"].tolist() == list(range(n))
    for i in range(n):
        np.testing.assert_array_equal(caps["frames"][i], _frames(i))
        np.testing.assert_array_equal(caps["patterns"][i], _patterns(i))


# the child: append until the first failure, report as JSON. CHECK_ROOM=0 disables the
# free-space/file-size check made before each write, so that the write itself fails.
CHILD = textwrap.dedent('''
    import json, os, resource, signal, sys
    import numpy as np
    sys.path.insert(0, {root!r})
    sys.path.insert(0, {tests!r})
    from hil.runs import CaptureStore, CaptureWriteError
    from test_capture_faults import _frames, _patterns, SHAPE
    path, limit, check = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
    if not check:
        import hil.capture_disk
        hil.capture_disk.check_room = lambda *args: None
    s = CaptureStore.create(path, frame_shape=SHAPE, frame_dtype=np.uint16,
                            pattern_shape=(2, 8, 8))
    if limit:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    out = {{"error": None}}
    for i in range(200):
        try:
            s.append(i, _frames(i), _patterns(i))
        except CaptureWriteError as exc:
            out.update(error=str(exc), errno=exc.errno, count=s.count)
            break
    s.close()
    print(json.dumps(out))
''')


def _child(path: Path, limit: int, check: bool) -> subprocess.CompletedProcess:
    code = CHILD.format(root=str(ROOT), tests=str(ROOT / "tests"))
    return subprocess.run([sys.executable, "-c", code, str(path), str(limit), str(int(check))],
                          capture_output=True, text=True, timeout=120)


def _resume_and_finish(path: Path, kept: int, total: int) -> None:
    with CaptureStore.resume(path) as s:
        assert s.count == kept
        for i in range(kept, total):
            s.append(i, _frames(i), _patterns(i))
    _check_content(read_captures(path, frames=True), total)


@pytest.mark.parametrize("check", [False, True], ids=["write-fails", "checked-before"])
def test_file_size_limit_stops_appends_and_resume_completes(tmp_path, check):
    path = tmp_path / "captures.h5"
    limit = 8 * CAPTURE_BYTES + (1 << 20 if check else 0)
    proc = _child(path, limit, check)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr  # h5py's ignored exceptions are caught too
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["error"] is not None, "the limit was never reached"
    assert res["errno"] == 27  # EFBIG
    # write-fails: HDF5's write itself failed; checked-before: refused before writing
    assert ("could not be written" in res["error"]) != check
    assert "\n" not in res["error"]
    kept = res["count"]
    assert kept >= 3
    assert "--resume" in res["error"]
    # what was written before the failure reads back whole, even from a file HDF5 left
    # shorter than its superblock says
    _check_content(read_captures(path, frames=True), kept)
    _resume_and_finish(path, kept, kept + 5)


def _unshare_tmpfs(script: str, tmp_path: Path, size_mb: int = 4) -> subprocess.CompletedProcess:
    """Run ``script`` (bash) as root of a private mount namespace, a ``size_mb`` tmpfs at $MNT."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed: cannot mount a small file system")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            f"mount -t tmpfs -o size=4m tmpfs {mnt}"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a user namespace here ({probe.stderr.strip()})")
    full = f"set -e\nmount -t tmpfs -o size={size_mb}m tmpfs {mnt}\nexport MNT={mnt}\n{script}"
    return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "bash", "-c",
                           full], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.parametrize("check", [False, True], ids=["write-fails", "checked-before"])
def test_full_disk_stops_appends_and_resume_completes(tmp_path, check):
    code = CHILD.format(root=str(ROOT), tests=str(ROOT / "tests"))
    (tmp_path / "child.py").write_text(code)
    finish = textwrap.dedent(f'''
        import sys
        sys.path.insert(0, {str(ROOT / "tests")!r})
        from pathlib import Path
        from test_capture_faults import _check_content, _resume_and_finish
        from hil.runs import read_captures
        path, kept = Path(sys.argv[1]), int(sys.argv[2])
        _check_content(read_captures(path, frames=True), kept)
        _resume_and_finish(path, kept, kept + 5)
        print("resumed")
    ''')
    (tmp_path / "finish.py").write_text(finish)
    py = sys.executable
    room_kb = 12 * CAPTURE_BYTES // 1024 + (1024 if check else 0)  # ~12 captures fit
    proc = _unshare_tmpfs(textwrap.dedent(f'''
        dd if=/dev/zero of=$MNT/filler bs=1024 count=$((4096 - {room_kb})) 2>/dev/null
        {py} {tmp_path}/child.py $MNT/captures.h5 0 {int(check)} > {tmp_path}/child.json
        kept=$({py} -c "import json; print(json.load(open('{tmp_path}/child.json'))['count'])")
        rm -f $MNT/filler
        {py} {tmp_path}/finish.py $MNT/captures.h5 $kept
    '''), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    res = json.loads((tmp_path / "child.json").read_text())
    assert res["errno"] == 28  # ENOSPC
    assert ("could not be written" in res["error"]) != check
    assert "\n" not in res["error"]
    assert res["count"] >= 3
    assert "resumed" in proc.stdout


def test_outputs_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        p = write_json_atomic(tmp_path / "a.json", {"x": 1})
        assert stat.S_IMODE(p.stat().st_mode) == 0o644
        os.umask(0o027)
        p = write_json_atomic(tmp_path / "b.json", {"x": 1})
        assert stat.S_IMODE(p.stat().st_mode) == 0o640
        with CaptureStore.create(tmp_path / "c.h5", frame_shape=SHAPE, frame_dtype=np.uint16,
                                 pattern_shape=(2, 8, 8)):
            pass
        assert stat.S_IMODE((tmp_path / "c.h5").stat().st_mode) == 0o640
    finally:
        os.umask(old)


def test_failed_store_refuses_further_appends(tmp_path, monkeypatch):
    s = CaptureStore.create(tmp_path / "c.h5", frame_shape=SHAPE, frame_dtype=np.uint16,
                            pattern_shape=(2, 8, 8))
    s.append(0, _frames(0), _patterns(0))

    def full(path, n, nbytes, size):
        raise CaptureWriteError(28, "no space left (injected)")

    monkeypatch.setattr("hil.capture_disk.check_room", full)
    with pytest.raises(CaptureWriteError, match="injected"):
        s.append(1, _frames(1), _patterns(1))
    monkeypatch.undo()  # room again: the failed store still refuses, with the same error
    with pytest.raises(CaptureWriteError, match="injected"):
        s.append(1, _frames(1), _patterns(1))
    s.close()
    _check_content(read_captures(tmp_path / "c.h5", frames=True), 1)


# ------------------------------------------------------- hil run, end to end
RUN_N = 14
RUN_CAPTURE_BYTES = 2 * 105 * 105 * 2 + 2 * 32 * 32 * 4  # model windows + patterns


def _run_fixture(tmp_path: Path):
    from session_helpers import bench_toml, laser_bench, quick_decoder

    state = tmp_path / "laser.json"
    bench = bench_toml(tmp_path / "bench.toml", laser_bench(state, output="off"))
    dec = tmp_path / "dec.pt"
    quick_decoder(dec)
    return bench, dec, state


def _check_stopped_run(out: Path, stderr: str, state: Path, kept_min: int = 1) -> dict:
    """One error line, laser off, run.json "stopped", the captures so far readable."""
    from devices.visa import sim_laser_state

    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [ln for ln in stderr.splitlines() if ln.startswith("hil: error:")]
    assert len(errors) == 1, stderr[-3000:]
    assert "captures.h5" in errors[0] and "--resume" in errors[0]
    st = sim_laser_state(state)
    assert st["output"] == 0 and not st["emitting"]
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "stopped"
    assert "CaptureWriteError" in record["error"]
    caps = read_captures(out / "captures.h5")
    kept = len(caps["index"])
    assert caps["index"].tolist() == list(range(kept))
    assert kept >= kept_min
    assert record["sessions"][-1]["captures"] == kept
    assert not (out / "results.json").exists()  # nothing more written beside a failing file
    return caps


def _resumed_matches(out: Path, before: dict) -> None:
    caps = read_captures(out / "captures.h5")
    assert caps["index"].tolist() == list(range(RUN_N))
    k = len(before["index"])
    np.testing.assert_array_equal(caps["windows"][:k], before["windows"])
    np.testing.assert_array_equal(caps["patterns"][:k], before["patterns"])


@pytest.mark.parametrize("check", [True, False], ids=["checked-before", "write-fails"])
def test_hil_run_file_size_limit_stops_cleanly_and_resumes(tmp_path, check):
    import resource

    from session_helpers import run_args

    bench, dec, state = _run_fixture(tmp_path)
    out = tmp_path / "run"
    limit = (1 << 20 if check else 0) + 5 * RUN_CAPTURE_BYTES

    def limited():  # SIGXFSZ is ignored by Python itself: the write fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    cmd = run_args(bench, dec, out)
    if not check:  # no check before the write: HDF5's write itself fails mid-run
        cmd[1:3] = ["-c", "import sys, hil.capture_disk, hil.cli; "
                    "hil.capture_disk.check_room = "
                    "lambda *a: None; sys.exit(hil.cli.main(sys.argv[1:]))"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          preexec_fn=limited)
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert ("file-size limit" if check else "File too large") in proc.stderr
    before = _check_stopped_run(out, proc.stderr, state, kept_min=2)
    assert len(before["index"]) < RUN_N
    done = subprocess.run(run_args(bench, dec, out, "--resume"), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    _resumed_matches(out, before)


def test_hil_run_full_disk_stops_cleanly_and_resumes(tmp_path):
    from session_helpers import run_args

    bench, dec, state = _run_fixture(tmp_path)
    cmd = " ".join(f"'{a}'" for a in run_args(bench, dec, Path("$MNT_RUN")))
    cmd = cmd.replace("'$MNT_RUN'", '"$MNT/run"')
    room_kb = 1024 + 4 * RUN_CAPTURE_BYTES // 1024 + 64  # the reserve and ~4 captures
    proc = _unshare_tmpfs(textwrap.dedent(f'''
        dd if=/dev/zero of=$MNT/filler bs=1024 count=$((8192 - {room_kb})) 2>/dev/null
        set +e
        {cmd} 2> {tmp_path}/fault.err
        echo $? > {tmp_path}/fault.rc
        set -e
        cp -a $MNT/run {tmp_path}/after_fault
        rm -f $MNT/filler
        {cmd} --resume 2> {tmp_path}/resume.err
        cp -a $MNT/run {tmp_path}/after_resume
    '''), tmp_path, size_mb=8)
    assert proc.returncode == 0, proc.stderr[-3000:] + (tmp_path / "resume.err").read_text()
    stderr = (tmp_path / "fault.err").read_text()
    assert (tmp_path / "fault.rc").read_text().strip() == "3", stderr[-3000:]
    assert "no space left" in stderr
    before = _check_stopped_run(tmp_path / "after_fault", stderr, state)
    assert len(before["index"]) < RUN_N
    _resumed_matches(tmp_path / "after_resume", before)


def test_hil_run_without_room_for_one_capture_refuses_before_light(tmp_path):
    import resource

    from session_helpers import run_args

    from devices.visa import sim_laser_state

    bench, dec, state = _run_fixture(tmp_path)
    out = tmp_path / "run"

    def limited():  # room for run.json, not for one capture and the reserve
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))

    proc = subprocess.run(run_args(bench, dec, out), capture_output=True, text=True,
                          timeout=300, preexec_fn=limited)
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("hil: error:")]
    assert len(errors) == 1 and "nothing was captured" in errors[0], proc.stderr[-3000:]
    assert not (out / "captures.h5").exists()
    assert json.loads((out / "run.json").read_text())["status"] == "stopped"
    st = sim_laser_state(state)
    assert st["output"] == 0 and not st["emitting"]  # never switched on: nothing needed light
