"""simulation.provenance: one record of the code that made a file (version, git commit and
dirty flag, the dependencies' versions, python, platform)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from simulation import provenance as prov_mod
from simulation.provenance import code_label, git_state, provenance

ROOT = Path(__file__).resolve().parents[1]
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_the_record_is_json_and_names_the_code():
    r = provenance()
    assert json.loads(json.dumps(r)) == r
    assert r["package"] == "hil-diffraction" and r["package_version"]
    assert {"numpy", "h5py", "torch"} <= set(r["versions"])
    assert r["python"].count(".") == 2 and r["platform"]
    assert set(r) == {"package", "package_version", "git_commit", "git_dirty", "python",
                      "platform", "versions"}


def _checkout(tmp_path: Path, track_package: bool) -> Path:
    repo = tmp_path / "repo"
    (repo / "simulation").mkdir(parents=True)
    (repo / "simulation" / "__init__.py").write_text("x = 1\n")
    (repo / "other.txt").write_text("a\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "other.txt", *(["simulation/__init__.py"] if track_package else []))
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "c")
    return repo


@needs_git
def test_commit_and_dirty_flag_of_a_checkout(tmp_path, monkeypatch):
    repo = _checkout(tmp_path, track_package=True)
    monkeypatch.setattr(prov_mod, "_ROOT", repo)
    head = _git(repo, "rev-parse", "HEAD")
    assert git_state() == (head, False)
    (repo / "untracked.txt").write_text("new\n")  # untracked files do not count
    assert git_state() == (head, False)
    (repo / "simulation" / "__init__.py").write_text("x = 2\n")  # an edit does
    assert git_state() == (head, True)
    r = provenance()
    assert (r["git_commit"], r["git_dirty"]) == (head, True)
    assert code_label(r) == f"{r['package_version']}+g{head[:7]}.dirty"


@needs_git
def test_a_tree_inside_another_checkout_borrows_no_commit(tmp_path, monkeypatch):
    """An installed copy inside some other repository (a venv in a checkout): the package
    is not tracked there, so there is no commit to claim."""
    repo = _checkout(tmp_path, track_package=False)
    monkeypatch.setattr(prov_mod, "_ROOT", repo)
    assert git_state() == (None, None)
    outside = tmp_path / "plain"
    outside.mkdir()
    monkeypatch.setattr(prov_mod, "_ROOT", outside)
    assert git_state() == (None, None)
    r = provenance()
    assert r["git_commit"] is None and code_label(r) == r["package_version"]


@needs_git
def test_this_checkout_reports_its_head():
    if subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True).returncode:
        pytest.skip("not run from a git checkout")
    assert git_state()[0] == _git(ROOT, "rev-parse", "HEAD")
