"""One command line (issue 11, items 3 and 6c): the same options mean the same thing in
every command, ``--json`` output is JSON alone on stdout (each command parsed here), log
lines go through tqdm, ``hil mask`` alone prints the mask help, ``--steps`` has one
meaning, ``hil bench-train`` (and its deprecated spelling ``hil train --on-bench``), and
``hil devices list`` reports what pyvisa really finds.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pytest
from session_helpers import bench_toml, quick_decoder

from hil.cli import build_parser, main


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command words, parser) of every command that runs something."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, p in subs[0].choices.items():
        yield from _leaves(p, (*path, name))


def _option(parser: argparse.ArgumentParser, name: str) -> argparse.Action | None:
    return next((a for a in parser._actions if name in a.option_strings), None)


def _json_out(capsys) -> object:
    """Parse stdout as one JSON document (fails if anything else was printed there)."""
    return json.loads(capsys.readouterr().out)


# ------------------------------------------------------------------ the shared options

def test_every_command_spells_the_shared_options_alike():
    leaves = dict(_leaves(build_parser()))
    assert len(leaves) >= 17, sorted(leaves)
    for words, p in leaves.items():
        cmd = " ".join(words)
        out = _option(p, "--out")
        if out is not None:
            assert "-o" in out.option_strings, cmd
            assert isinstance(out.type("x.npz"), Path), cmd
            assert out.metavar in ("DIR", "FILE", "PNG", "IMAGE"), (cmd, out.metavar)
        seed = _option(p, "--seed")
        if seed is not None:
            assert seed.type is int, cmd
        progress = _option(p, "--no-progress")
        if progress is not None:
            assert progress.dest == "no_progress", cmd
        quiet = _option(p, "--quiet")
        if quiet is not None:  # only as the older spelling of --no-progress
            assert quiet is progress, cmd
        if _option(p, "--json") is not None:
            assert "JSON on stdout" in _option(p, "--json").help, cmd
    # --json where a script reads the result; progress where the work is long
    for words in [("train",), ("bench-train",), ("eval",), ("stats",), ("run",),
                  ("calibrate",), ("live",), ("demo",), ("bench",), ("experiment", "paper"),
                  ("devices", "list"), ("devices", "check"), ("mask", "new"),
                  ("mask", "show"), ("mask", "push"), ("mask", "export")]:
        assert _option(leaves[words], "--json") is not None, words
    for words in [("train",), ("bench-train",), ("run",), ("calibrate",), ("bench",),
                  ("experiment", "paper"), ("demo",)]:
        assert _option(leaves[words], "--no-progress") is not None, words
    for words in [("train",), ("bench-train",), ("eval",), ("stats",), ("run",), ("demo",)]:
        assert _option(leaves[words], "--seed") is not None, words


def test_json_stdout_holds_the_json_alone(monkeypatch, capsys):
    """Something printing to stdout during a --json command (a driver, a library) goes to
    stderr: stdout parses."""
    import simulation

    speckle = simulation.speckle

    def chatty(*args, **kw):
        print("driver: hello")
        return speckle(*args, **kw)

    monkeypatch.setattr(simulation, "speckle", chatty)
    assert main(["stats", "--gamma", "1", "15", "--n", "4", "--json"]) == 0
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    assert [r["set"] for r in rows] == ["speckle γ=1", "speckle γ=15"]
    assert "driver: hello" in captured.err


def test_log_lines_go_through_tqdm_in_every_command(monkeypatch, capsys):
    """While a command runs, the console log handler writes through tqdm.write (above the
    bars), whichever command it is."""
    from tqdm.contrib.logging import _TqdmLoggingHandler

    import hil.commands_sim as cs

    seen = []

    def fake_stats(args):
        seen.append([type(h) for h in logging.root.handlers])
        logging.getLogger("hil.test").warning("a log line")
        return 0

    monkeypatch.setattr(cs, "cmd_stats", fake_stats)
    assert main(["stats", "--gamma", "1"]) == 0
    assert _TqdmLoggingHandler in seen[0]
    assert "a log line" in capsys.readouterr().err


def test_mask_alone_prints_the_mask_help(capsys):
    assert main(["mask"]) == 2
    out = capsys.readouterr().out
    assert out.startswith("usage: hil mask")
    for action in ("new", "show", "push", "export"):
        assert action in out


# ------------------------------------------------------------------ --json, command by command

def test_train_eval_json(tmp_path, capsys):
    out = tmp_path / "d.pt"
    assert main(["train", "--count", "64", "--alpha", "1", "-o", str(out), "--json",
                 "--no-progress"]) == 0
    r = _json_out(capsys)
    assert r["decoder"] == str(out) and out.is_file() and r["count"] == 64
    assert r["alpha"] == 1.0 and r["mask"] is None
    assert main(["eval", str(out), "--dataset", "digits", "--n", "4", "--json",
                 "-o", str(tmp_path / "ev")]) == 0
    r = _json_out(capsys)
    assert r["n"] == 4 and 0 <= r["ssim_mean"] <= 1 and Path(r["figure"]).is_file()


def test_mask_new_show_export_json(tmp_path, capsys):
    m = tmp_path / "m.npz"
    assert main(["mask", "new", "-o", str(m), "--size", "8", "--json"]) == 0
    r = _json_out(capsys)
    from hil.masks import load_mask

    assert r["mask"] == str(m) and r["grid"] == 8
    assert r["signature_hash"] == load_mask(m).signature_hash
    assert main(["mask", "show", str(m), "--json"]) == 0
    r = _json_out(capsys)
    assert r["grid"] == 8 and Path(r["figure"]).is_file() and "provenance" in r
    assert main(["mask", "export", str(m), "--slm-shape", "16", "24", "--json",
                 "-o", str(tmp_path / "g.png")]) == 0
    rows = _json_out(capsys)
    assert [Path(r["file"]).name for r in rows] == ["g_c0.png", "g_c1.png"]
    assert all(Path(r["file"]).is_file() and r["shape"] == [16, 24] for r in rows)


def test_mask_push_json(tmp_path, capsys):
    m = tmp_path / "m.npz"
    assert main(["mask", "new", "-o", str(m)]) == 0
    bench = bench_toml(tmp_path / "b.toml")
    capsys.readouterr()
    assert main(["mask", "push", str(bench), str(m), "--channel", "1", "--json"]) == 0
    r = _json_out(capsys)
    assert r["channel"] == 1 and r["lut"] is False and 0 <= r["grey_min"] <= r["grey_max"]


def test_devices_check_and_list_json(capsys):
    assert main(["devices", "check", "sim.toml", "--json", "--frames", "2"]) == 0
    assert _json_out(capsys)["frame_rate"]["frames"] == 2
    assert main(["devices", "list", "--json"]) == 0
    assert any(r["backend"] == "sim" for r in _json_out(capsys))


def test_calibrate_json(tmp_path, capsys):
    bench = tmp_path / "b.toml"  # as test_calibration_model's (noise on: the dark step fits)
    bench.write_text('name = "ci"\nseed = 2\n[slm]\nbackend = "sim"\nshape = [256, 256]\n'
                     '[camera]\nbackend = "sim"\nshape = [256, 256]\nreference_power_mW = '
                     '10.0\n[laser]\nbackend = "sim"\ncontrol = "power"\nmax_power_mW = '
                     '20.0\nsetpoint = 10.0\noutput = "on"\n')
    out = tmp_path / "cal"
    assert main(["calibrate", str(bench), "-o", str(out), "--steps", "dark", "--json",
                 "--no-progress"]) == 0
    r = _json_out(capsys)
    assert r["calibration"] == str(out / "calibration.h5") and r["steps"] == ["dark"]
    assert Path(r["calibration"]).is_file() and r["report"] == str(out / "report.md")
    # the older spelling --quiet is the same switch
    assert main(["calibrate", str(bench), "-o", str(out), "--steps", "dark", "--quiet",
                 "--resume", "--json"]) == 0
    assert _json_out(capsys)["steps"] == ["dark"]


def test_run_json(tmp_path, capsys):
    bench = bench_toml(tmp_path / "b.toml")
    quick_decoder(tmp_path / "d.pt", n=200)
    out = tmp_path / "r"
    assert main(["run", str(bench), "--decoder", str(tmp_path / "d.pt"), "--dataset",
                 "digits", "--n", "2", "-o", str(out), "--no-progress", "--json"]) == 0
    r = _json_out(capsys)
    assert r["out"] == str(out) and r["exit_status"] == 0 and r["n_captured"] == 2
    assert r == {"out": str(out), "exit_status": 0, "report": str(out / "report.md"),
                 **json.loads((out / "results.json").read_text())}


def test_live_json(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    bench = bench_toml(tmp_path / "b.toml")
    out = tmp_path / "live"
    assert main(["live", str(bench), "--frames", "2", "-o", str(out), "--json"]) == 0
    r = _json_out(capsys)
    assert r["out"] == str(out) and len(r["frames"]) == 2
    assert r["frames"] == json.loads((out / "live.json").read_text())["frames"]


def test_bench_progress_summary_and_json(tmp_path, monkeypatch, capsys, caplog):
    """`hil bench` shows a bar over its benchmarks and a log line as each starts (it was
    silent for ten minutes); a summary without --json, every number with it."""
    import experiments.bench_sim as bs

    monkeypatch.setattr(bs, "bench_predict", lambda: {"ratio_predict_to_bare_rate": 0.9,
                                                      "goal": "ratio >= 0.8",
                                                      "goal_met": True})
    monkeypatch.setattr(bs, "bench_memory", lambda: {"ratio_demo_to_import": 1.5})
    caplog.set_level(logging.INFO, logger="experiments.bench_sim")
    assert main(["bench", "--only", "predict", "--only", "memory", "-o", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "benchmarks" in captured.err and "2/2" in captured.err  # the bar
    assert [r.getMessage() for r in caplog.records
            if r.name == "experiments.bench_sim"] == ["benchmark predict", "benchmark memory"]
    assert "predict: ratio_predict_to_bare_rate 0.9; goal ratio >= 0.8: met" in captured.out
    assert main(["bench", "--only", "predict", "-o", str(tmp_path), "--json",
                 "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["predict"]["goal_met"] is True
    assert "benchmarks" not in captured.err


def test_experiment_paper_json(tmp_path, monkeypatch, capsys):
    import experiments.paper as paper

    seen = {}

    class Run:
        computed, skipped, out = 3, 1, tmp_path
        results = {"verdicts": [{"claim": "c", "verdict": "supported"}]}

    def fake_run_study(cfg, out, **kw):
        seen.update(out=out, **kw)
        return Run()

    monkeypatch.setattr(paper, "run_study", fake_run_study)
    assert main(["experiment", "paper", "--scale", "tiny", "-o", str(tmp_path), "--json",
                 "--no-progress"]) == 0
    r = _json_out(capsys)
    assert r["computed"] == 3 and r["verdicts"][0]["verdict"] == "supported"
    assert seen["out"] == tmp_path and seen["progress"] is False


def test_demo_json(tmp_path, monkeypatch, capsys):
    import experiments.main_job as mj

    summary = {"simulation": {"datasets": {}}, "total_seconds": 1.0}
    seen = {}

    def fake(out, **kw):
        seen.update(kw)
        return summary

    monkeypatch.setattr(mj, "run_main_job", fake)
    assert main(["demo", "-o", str(tmp_path), "--no-paper", "--no-bench", "--json",
                 "--no-progress"]) == 0
    assert _json_out(capsys) == {"report": str(tmp_path / "index.md"), **summary}
    assert seen["progress"] is False


# ------------------------------------------------------------------ bench-train, --steps

def test_train_steps_is_refused_naming_iterations(tmp_path, capsys):
    for argv in (["train", "--count", "8", "--steps", "3", "-o", str(tmp_path / "d.pt")],
                 ["bench-train", "sim.toml", "--steps", "3", "-o", str(tmp_path / "d.pt")],
                 ["train", "--on-bench", "sim.toml", "--steps", "3",
                  "-o", str(tmp_path / "d.pt")]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("hil: error: --steps: renamed "
                                                   "--iterations"), err
        assert "--iterations 3" in err[0] and "hil calibrate" in err[0]
    assert not (tmp_path / "d.pt").exists()


def test_bench_options_belong_to_bench_train(tmp_path, capsys):
    for opt, value in (("--iterations", "2"), ("--holdout", "4"), ("--calibration", "c")):
        assert main(["train", "--count", "8", opt, value, "-o", str(tmp_path / "d.pt")]) == 2
        assert f"{opt}: only with `hil bench-train`" in capsys.readouterr().err


def test_train_on_bench_is_bench_train_with_a_warning(tmp_path, monkeypatch, capsys):
    import hil.bench_training as bt

    calls = []

    def fake(args):
        calls.append(args)
        return 0

    monkeypatch.setattr(bt, "train_on_bench_cli", fake)
    out = tmp_path / "d.pt"
    assert main(["train", "--on-bench", "sim.toml", "--iterations", "2", "-o", str(out)]) == 0
    assert "`hil train --on-bench BENCH` is deprecated; use `hil bench-train" in \
        capsys.readouterr().err
    assert main(["bench-train", "sim.toml", "-o", str(out), "--holdout", "4"]) == 0
    old, new = calls
    assert (old.on_bench, old.steps, old.out) == (Path("sim.toml"), 2, out)
    assert (new.on_bench, new.steps, new.holdout) == (Path("sim.toml"), 5, 4)


@pytest.mark.slow
def test_bench_train_json(tmp_path, capsys):
    bench = bench_toml(tmp_path / "bench.toml")
    out = tmp_path / "dec.pt"
    assert main(["bench-train", str(bench), "--count", "300", "--alpha", "1.0",
                 "--iterations", "1", "--holdout", "8", "-o", str(out), "--json",
                 "--no-progress"]) == 0
    r = _json_out(capsys)
    assert r["captures"] == 32 and r["history"] == str(out.with_suffix(".bench.json"))
    assert r["decoder"] == (str(out) if r["kept"] else None)
    assert out.is_file() == r["kept"]


# ------------------------------------------------------------------ VISA: what pyvisa finds

def _visa_rows(capsys) -> list[dict]:
    assert main(["devices", "list", "--json"]) == 0
    return [r for r in _json_out(capsys) if r["backend"] == "visa:<resource>"]


def test_devices_list_says_no_visa_when_pyvisa_finds_none(monkeypatch, capsys):
    import pyvisa

    def no_library(spec: str = ""):
        if spec == "@py":
            raise ValueError("Wrapper not found: No package named pyvisa_py")
        raise ValueError("Could not locate a VISA implementation. Install either the IVI "
                         "binary or pyvisa-py.")

    monkeypatch.setattr(pyvisa, "ResourceManager", no_library)
    rows = _visa_rows(capsys)
    assert len(rows) == 4  # laser and power meter, visa_library "" and "@py"
    assert not any(r["available"] for r in rows)
    by_lib = {r["visa_library"]: r["note"] for r in rows}
    assert "Could not locate a VISA implementation" in by_lib[""]
    assert "No package named pyvisa_py" in by_lib["@py"]


def test_devices_list_reports_a_library_that_fails_to_load(monkeypatch, capsys):
    import pyvisa
    from pyvisa.errors import LibraryError

    def broken(spec: str = ""):
        raise LibraryError("Could not open VISA library: /usr/lib/libvisa.so: wrong ELF")

    monkeypatch.setattr(pyvisa, "ResourceManager", broken)
    rows = _visa_rows(capsys)
    assert not any(r["available"] for r in rows)
    assert all("wrong ELF" in r["note"] for r in rows)


def test_devices_list_says_visa_is_usable_when_a_library_opens(monkeypatch, capsys):
    import pyvisa

    closed = []

    class Lib:
        library_path = "/opt/ni/libvisa.so"

    class RM:
        visalib = Lib()

        def __init__(self, spec: str = ""):
            if spec == "@py":
                raise ValueError("Wrapper not found: No package named pyvisa_py")

        def close(self):
            closed.append(self)

    monkeypatch.setattr(pyvisa, "ResourceManager", RM)
    rows = _visa_rows(capsys)
    usable = {r["visa_library"]: r["available"] for r in rows}
    assert usable == {"": True, "@py": False}
    assert all("/opt/ni/libvisa.so" in r["note"] for r in rows if r["available"])
    assert len(closed) == 1  # the resource manager that opened was closed again


def test_devices_list_agrees_with_pyvisa_here(capsys):
    """No injection: each row says what pyvisa.ResourceManager(spec) does on this machine."""
    import pyvisa

    expected = {}
    for spec in ("", "@py"):
        try:
            pyvisa.ResourceManager(spec).close()
            expected[spec] = True
        except (ValueError, OSError):
            expected[spec] = False
    assert {r["visa_library"]: r["available"] for r in _visa_rows(capsys)} == expected


def test_bench_train_help_is_the_module_doc(capsys):
    with pytest.raises(SystemExit):
        main(["bench-train", "--help"])
    out = capsys.readouterr().out
    assert "kept" in out and "--iterations" in out
    assert "--steps" not in out.split("options:")[1]  # the old spelling is not offered
