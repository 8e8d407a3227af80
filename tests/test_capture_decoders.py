"""Capture-trained decoders: the ridge toward a prior with a noise term, the averaging rule,
the calibration's best decoder used by `hil run`, and `hil train --on-bench` kept only when a
held-out captured score improves."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from session_helpers import quick_decoder, small_bench

from calibration.decoders import averaging_rule
from simulation import LinearDecoder
from simulation.ridge_prior import capture_noise_variance, ridge_with_prior


def _linear_problem(n: int, d: int = 40, p: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d, p, generator=g, dtype=torch.float64) / d**0.5
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    return X.float(), (X @ W).float(), W.float(), g


def test_ridge_with_prior_is_the_closed_form():
    X, Y, W, g = _linear_problem(30)
    P = torch.randn(W.shape, generator=g).float()
    nu = torch.rand(X.shape[1], generator=g).float() * 0.1
    got, a, _ = ridge_with_prior(X, Y, prior=P, noise_var=nu, alpha=2.0)
    Xd = X.double()
    want = torch.linalg.solve(Xd.T @ Xd + 30 * torch.diag(nu.double()) + 2.0 * torch.eye(40,
                              dtype=torch.float64), Xd.T @ Y.double() + 2.0 * P.double())
    assert a == 2.0
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


def test_dual_form_is_the_closed_form():
    """With fewer samples than inputs and no noise term (the bench's few captures) the (n, n)
    dual form gives the float64 closed form (XᵀX + αI)⁻¹(XᵀY + αP), scores every α of the
    decoders' grid as the closed form does on the held-out rows, and is what "auto" takes.
    (The float32 primal ranking does not: its smallest α score rounding in XᵀX's null
    space, which is why the bench's ``ridge_toward`` solves the dual.)"""
    from simulation.ridge_linalg import PRIOR_DECADES, alpha_grid

    X, Y, W, g = _linear_problem(25, d=120)
    Y = Y + 0.05 * torch.randn(Y.shape, generator=g)
    P = W + 0.2 * torch.randn(W.shape, generator=g)
    wd, ad, hd = ridge_with_prior(X, Y, prior=P, form="dual", val_fraction=0.2, seed=1)
    wa, aa, _ = ridge_with_prior(X, Y, prior=P, val_fraction=0.2, seed=1, form="auto")
    assert torch.equal(wa, wd) and aa == ad
    Xd, Yd, Pd = X.double(), Y.double(), P.double()
    perm = torch.randperm(25, generator=torch.Generator().manual_seed(1))
    va, tr = perm[:5], perm[5:]

    def closed(rows, a):
        x = Xd[rows]
        return torch.linalg.solve(x.T @ x + a * torch.eye(120, dtype=torch.float64),
                                  x.T @ Yd[rows] + a * Pd)

    grid = alpha_grid(float((Xd[tr] ** 2).sum()) / 120, PRIOR_DECADES)
    assert hd["alpha_grid"] == pytest.approx(grid, rel=1e-9)
    want = [float(((Xd[va] @ closed(tr, a) - Yd[va]) ** 2).mean()) for a in grid]
    assert hd["val_mse"] == pytest.approx(want, rel=1e-6)
    torch.testing.assert_close(wd.double(), closed(torch.arange(25), ad), rtol=1e-5,
                               atol=1e-6)
    with pytest.raises(ValueError, match="form: the dual form is exact only without"):
        ridge_with_prior(X, Y, noise_var=torch.ones(120), form="dual", alpha=1.0)


def test_prior_wins_over_useless_captures():
    """Injected failure: captures that carry no information (pure noise inputs). The α picked
    on held-out captures must return (about) the prior, not a fit to noise."""
    X, Y, W, g = _linear_problem(400)
    junk = torch.randn(60, 40, generator=g)  # "captures" unrelated to their targets
    got, a, hist = ridge_with_prior(junk, Y[:60], prior=W, X_val=X[300:], Y_val=Y[300:])
    assert a == max(hist["alpha_grid"])
    assert float(((X[300:] @ got - Y[300:]) ** 2).mean()) < 1e-3 * float((Y[300:] ** 2).mean())
    # without the prior the same junk gives a decoder no better than predicting zero
    zero, _, _ = ridge_with_prior(junk, Y[:60], X_val=X[300:], Y_val=Y[300:])
    assert float(((X[300:] @ zero - Y[300:]) ** 2).mean()) > 0.5 * float((Y[300:] ** 2).mean())


def test_noise_aware_ridge_beats_plain_ridge_on_noisy_inputs():
    """Injected failure: a decoder fitted on clean (twin) inputs meets noisy (captured) ones.
    The plain ridge, α from a clean split, overfits the clean inputs; the measured noise in
    the regulariser fixes it."""
    d = 60
    g = torch.Generator().manual_seed(3)
    # correlated inputs (a smooth spectrum), as sensor patterns are
    basis = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))[0]
    scales = torch.logspace(0, -3, d, dtype=torch.float64)
    W = torch.randn(d, 4, generator=g, dtype=torch.float64)

    def draw(n: int) -> torch.Tensor:
        return (torch.randn(n, d, generator=g, dtype=torch.float64) * scales) @ basis.T

    Xc, Xt = draw(3000), draw(2000)
    sigma = 0.05
    Xn = Xt + sigma * torch.randn(Xt.shape, generator=g, dtype=torch.float64)
    Yc, Yt = Xc @ W, Xt @ W
    plain, _, _ = ridge_with_prior(Xc.float(), Yc.float())
    aware, _, _ = ridge_with_prior(Xc.float(), Yc.float(),
                                   noise_var=torch.full((d,), sigma**2))
    err = {k: float(((Xn.float() @ w - Yt.float()) ** 2).mean())
           for k, w in (("plain", plain), ("aware", aware))}
    assert err["aware"] < 0.5 * err["plain"], err


def test_capture_noise_variance_measures_the_noise():
    g = torch.Generator().manual_seed(1)
    clean = torch.rand(200, 2, 8, 8, generator=g) + 1.0
    a = clean + 0.01 * torch.randn(clean.shape, generator=g)
    b = clean + 0.01 * torch.randn(clean.shape, generator=g)
    nu = capture_noise_variance(a, b)
    assert nu.shape == (128,)
    # inputs are min-max normalised to [-1, 1]: the noise scales by 2 / (max - min) ~ 2
    assert 0.5 * (0.02**2) < float(nu.mean()) < 2 * (0.02**2)
    with pytest.raises(ValueError, match="second"):
        capture_noise_variance(a, b[:, :1])


def test_fit_toward_saves_its_alpha_and_prior(tmp_path):
    from simulation import DualVortexEncoder, speckle

    enc = DualVortexEncoder()
    imgs = speckle(300, 15, seed=0)
    pats = enc(imgs)
    prior = LinearDecoder(alpha=1.0, device="cpu").fit(pats[:200], imgs[:200], encoder=enc)
    dec = LinearDecoder(device="cpu").fit_toward(pats[:100], imgs[:100], prior=prior,
                                                 encoder=enc, val_patterns=pats[200:],
                                                 val_images=imgs[200:])
    back = LinearDecoder.load(dec.save(tmp_path / "d.pt"), encoder=enc)
    assert back.method_ == "ridge-prior" and back.alpha_ == dec.alpha_
    assert back.history_["prior"] is True and back.history_["val"] == "given"
    with pytest.raises(ValueError, match="val_patterns/val_images"):
        LinearDecoder().fit_toward(pats, imgs, val_patterns=pats)


def test_averaging_rule():
    # noisy captures, cheap extra frames (display and settle dominate): averaging pays
    k, worth = averaging_rule(noise_var=1.0, signal_var=0.5, image_s=0.1, frame_s=0.001)
    assert k > 1 and worth[str(k)] > worth["1"]
    # quiet captures, or frames as dear as images: it does not
    assert averaging_rule(noise_var=1e-4, signal_var=0.5, image_s=0.1, frame_s=0.001)[0] == 1
    assert averaging_rule(noise_var=1.0, signal_var=0.5, image_s=0.0, frame_s=0.1)[0] == 1
    with pytest.raises(ValueError, match="frame_s"):
        averaging_rule(1.0, 1.0, 0.1, float("nan"))


# ----------------------------------------------------------- hil run / hil train --on-bench
def _calibration(tmp_path: Path, best: str) -> Path:
    """A calibration on the small bench (geometry from the truth) with two decoders: the
    twin-trained quick decoder and a useless "capture" one; ``best`` names the best."""
    from calibration.capture import device_identities
    from calibration.imaging_config import ImagingConfig
    from calibration.store import CalibrationSet, StepResult, file_sha256
    from calibration.truth import truth_model_to_camera
    from devices.bench import open_bench

    out = tmp_path / "cal"
    out.mkdir(parents=True)
    with open_bench(small_bench()) as bench:
        a = truth_model_to_camera(bench, 32, 8)
        devices = device_identities(bench)
    cal = CalibrationSet(devices=devices)
    cal.set("geometry", StepResult("geometry", values={"model_to_camera": a, "size": 32,
                                                       "block": 8}))
    twin = quick_decoder(out / "decoder_twin.pt")
    bad = quick_decoder()
    bad.weight_ = torch.randn(bad.weight_.shape, generator=torch.Generator().manual_seed(0))
    bad.save(out / "decoder_capture.pt")
    files = {n: {"path": f"decoder_{n}.pt", "sha256": file_sha256(out / f"decoder_{n}.pt")}
             for n in ("twin", "capture")}
    cal.set("decoders", StepResult("decoders", values={
        "decoder_files": files, "default_decoder": "twin", "best_decoder": best,
        "encoder": twin.encoder_signature_, "imaging_config": ImagingConfig().to_dict()}))
    cal.save(out)
    return out


def test_hil_run_uses_the_best_decoder(tmp_path):
    """The calibration's best decoder, not its default, is what a run loads (it used the
    default, the twin-trained one, whatever scored best)."""
    from calibration.store import CalibrationSet
    from hil.run_checks import resolve_run_inputs

    out = _calibration(tmp_path, best="capture")
    cal = CalibrationSet.load(out)
    got = resolve_run_inputs(decoder=None, mask=None, calibration=cal, calibration_arg=out,
                             imaging=None, overrides={})
    assert got.decoder_path.name == "decoder_capture.pt"
    assert got.problems == []


def _bench_file(tmp_path: Path) -> Path:
    from session_helpers import bench_toml

    return bench_toml(tmp_path / "bench.toml")


def _train_args(tmp_path: Path, cal: Path, **kw) -> argparse.Namespace:
    base = dict(on_bench=_bench_file(tmp_path), calibration=cal, steps=1, learn_mask=False,
                holdout=8, gamma=15.0, seed=0, count=64, method="ridge", alpha=None,
                charges=[1, 3], epochs=10, mask_lr=1e-2, mask_out=None,
                out=tmp_path / "tuned.pt")
    base.update(kw)
    return argparse.Namespace(**base)


def _fake_fine_tune(weight_out: torch.Tensor | None, seen: list):
    """A stand-in for ``fine_tune_on_bench`` that records the weight it starts from and
    returns ``weight_out`` (None: the starting weight, zeroed)."""

    def fine_tune(layer, weight, **kw):
        seen.append(weight.clone())
        w = torch.zeros_like(weight) if weight_out is None else weight_out.clone()
        return {"weight": w, "masks_rad": layer.masks_rad.detach().clone(), "loss": [1.0],
                "alpha": None, "alpha_search": {}, "captures": 0, "seconds": 0.0}

    return fine_tune


def test_train_on_bench_keeps_a_worse_result_out(tmp_path, monkeypatch, capsys):
    """Injected failure: the bench fine-tuning returns a useless (zero) weight. The old code
    wrote it as the new decoder; now the held-out captured score refuses it."""
    import hil.bench_training as bt

    cal = _calibration(tmp_path, best="twin")
    seen: list = []
    monkeypatch.setattr(bt, "fine_tune_on_bench", _fake_fine_tune(None, seen))
    args = _train_args(tmp_path, cal)
    assert bt.train_on_bench_cli(args) == 0
    assert not args.out.exists()
    hist = json.loads(args.out.with_suffix(".bench.json").read_text())
    assert hist["kept"] is False and hist["heldout"]["after"] < hist["heldout"]["before"]
    assert "decoder_twin.pt" in hist["start"]
    assert "did not improve" in capsys.readouterr().out


def test_train_on_bench_starts_from_the_best_decoder(tmp_path, monkeypatch):
    """It started from a fresh twin fit that ignored the calibration; now from its best
    decoder (here the useless "capture" one), and keeps a result that scores better."""
    import hil.bench_training as bt

    cal = _calibration(tmp_path, best="capture")
    good = LinearDecoder.load(cal / "decoder_twin.pt").weight_
    bad = LinearDecoder.load(cal / "decoder_capture.pt").weight_
    seen: list = []
    monkeypatch.setattr(bt, "fine_tune_on_bench", _fake_fine_tune(good, seen))
    args = _train_args(tmp_path, cal)
    assert bt.train_on_bench_cli(args) == 0
    torch.testing.assert_close(seen[0], bad.cpu())
    hist = json.loads(args.out.with_suffix(".bench.json").read_text())
    assert "decoder_capture.pt" in hist["start"]
    assert hist["kept"] is True and hist["heldout"]["after"] > hist["heldout"]["before"] + 0.2
    dec = LinearDecoder.load(args.out)
    assert dec.method_.endswith("+bench")
    torch.testing.assert_close(dec.weight_.cpu(), good.cpu())


def test_train_on_bench_refines_on_captures(tmp_path):
    """The real fine-tuning on the bench from the calibration's twin decoder: it runs, and
    whatever it decides is backed by the held-out captured scores it records."""
    import hil.bench_training as bt

    cal = _calibration(tmp_path, best="twin")
    args = _train_args(tmp_path, cal)
    assert bt.train_on_bench_cli(args) == 0
    hist = json.loads(args.out.with_suffix(".bench.json").read_text())
    h = hist["heldout"]
    assert hist["kept"] == (h["after"] > h["before"]) == args.out.exists()
    assert h["before"] > 0.3, h  # the calibration's twin decoder, on this bench's captures


def test_calibrate_decoders_records_the_best_and_stops_when_captures_stop_paying(tmp_path):
    """The decoders step on a small bench: six decoders saved with their hashes, the best by
    held-out captured SSIM recorded as best, the twin prior's α kept in its file,
    the capture rounds stopped once a round gains less than ``capture_tol``."""
    from calibration.decoders import DECODER_NAMES, calibrate_decoders
    from calibration.store import CalibrationSet, file_sha256
    from devices.bench import open_bench

    cal = CalibrationSet.load(_calibration(tmp_path, best="twin"))
    out = tmp_path / "dec"
    out.mkdir()
    with open_bench(small_bench()) as bench:
        step = calibrate_decoders(bench, cal, n_twin=400, n_capture=128, n_capture_start=32,
                                  capture_tol=0.9, n_test=8, n_val=8, n_repeat=4,
                                  train_averaging="auto", compare_nominal=False, out_dir=out,
                                  drift_every=16)
    v, r = step.values, step.residuals
    # the captures followed the (still) bench: a check every 16 images over the test,
    # validation and training sets; this calibration's geometry is the bench's truth, with
    # no spots to show again, so the move since the geometry step is refused, recorded
    d = v["drift"]["captures"]
    assert d["every"] == 16 and d["n_checks"] >= 2 and d["n_unreliable"] == 1, d
    assert np.all(np.isnan(d["alignment_px"])) and np.hypot(*d["correction_px"]) < 0.3
    scores = {n: r[f"ssim_{n}_on_captures"] for n in DECODER_NAMES}
    assert v["best_decoder"] == max(scores, key=scores.get) and v["default_decoder"] == "twin"
    assert v["capture_curve"]["n"] == [32, 64] and v["n_capture_used"] == 64
    assert set(v["averaging_rule"]["worth_per_s"]) == {"1", "2", "4", "8"}
    assert v["train_averaging"] in (1, 2, 4, 8)
    for name in DECODER_NAMES:
        rec = v["decoder_files"][name]
        assert rec["sha256"] == file_sha256(out / rec["path"])
    prior = LinearDecoder.load(out / v["decoder_files"]["twin_prior"]["path"])
    assert prior.alpha_ == v["alpha_twin_prior"] and prior.history_["prior"] is True
    offset = LinearDecoder.load(out / v["decoder_files"]["twin_offset"]["path"])
    assert offset.history_["input_offset_rms"] == pytest.approx(v["capture_offset_rms"])
    assert v["capture_offset_rms"] > 0
    assert v["capture_noise_var"] >= 0 and r["ssim_twin_on_captures"] > 0.3, r


def test_train_on_bench_learned_masks_kept_only_when_better(tmp_path, monkeypatch):
    """`--learn-mask` with `--on-bench` was refused; now the learned masks are trained on the
    bench and, like the decoder, kept only if the held-out captured SSIM improves. A kept
    mask and its decoder then pass `hil run`'s checks against the calibration."""
    import hil.bench_training as bt
    from calibration.store import CalibrationSet
    from hil.run_checks import resolve_run_inputs

    cals = {"bad": _calibration(tmp_path / "a", best="twin"),
            "good": _calibration(tmp_path / "b", best="capture")}
    good = LinearDecoder.load(cals["good"] / "decoder_twin.pt").weight_

    def scrambled(layer, weight, **kw):  # masks thrown far off: worse on the bench
        g = torch.Generator().manual_seed(1)
        m = layer.masks_rad.detach() + 3.0 * torch.randn(layer.masks_rad.shape, generator=g)
        return {"weight": good.clone(), "masks_rad": m, "loss": [1.0], "alpha": None,
                "alpha_search": {}, "captures": 0, "seconds": 0.0}

    seen: list = []
    for name, fake in (("bad", scrambled), ("good", _fake_fine_tune(good, seen))):
        monkeypatch.setattr(bt, "fine_tune_on_bench", fake)
        args = _train_args(tmp_path, cals[name], learn_mask=True, out=tmp_path / f"{name}.pt",
                           mask_out=tmp_path / f"{name}.mask.npz")
        assert bt.train_on_bench_cli(args) == 0
        hist = json.loads(args.out.with_suffix(".bench.json").read_text())
        assert hist["learn_mask"] is True
        assert hist["kept"] is (name == "good"), hist["heldout"]
        assert args.out.exists() is args.mask_out.exists() is (name == "good")
    got = resolve_run_inputs(decoder=tmp_path / "good.pt", mask=tmp_path / "good.mask.npz",
                             calibration=CalibrationSet.load(cals["good"]),
                             calibration_arg=cals["good"], imaging=None, overrides={})
    assert got.problems == []


def test_resume_reruns_decoders_when_any_decoder_file_is_missing(tmp_path):
    """Resume checked only the twin and capture files: a missing twin-prior decoder (the
    one `hil run` may use) was taken for a complete step."""
    from calibration.pipeline import _complete
    from calibration.step_registry import get_step
    from calibration.store import CalibrationSet, StepResult

    for name in ("twin", "capture", "twin_prior"):
        (tmp_path / f"decoder_{name}.pt").write_bytes(b"x")
    cal = CalibrationSet()
    cal.set("decoders", StepResult("decoders", values={
        "inputs_sha256": "abc", **{f"{n}_path": f"decoder_{n}.pt"
                                   for n in ("twin", "capture", "twin_prior")}}))
    step = get_step("decoders")
    assert _complete(step, cal, "abc", tmp_path)
    (tmp_path / "decoder_twin_prior.pt").unlink()
    assert not _complete(step, cal, "abc", tmp_path)


# ------------------------------------------- α ranking and devices (issue 10 part 3, ridgefix)
@pytest.mark.parametrize("form, noise", [("primal", None), ("primal", "zeros"),
                                         ("primal", "tiny"), (None, "zeros")])
def test_alpha_ranking_is_the_float64_closed_forms(form, noise):
    """Injected failure: fewer samples than inputs and no (or a negligible) noise term, as
    `calibrate_decoders` fits with ``train_averaging=1`` (ν all zeros). The held-out score
    of every α of the grid, and so the α picked, must be the float64 closed form's. (The
    float32 Gram and eigh scored rounding in XᵀX's null space: α ~2e-5 was picked where the
    closed form's best is ~6.3.)"""
    X, Y, W, g = _linear_problem(25, d=120)
    Y = Y + 0.05 * torch.randn(Y.shape, generator=g)
    P = W + 0.2 * torch.randn(W.shape, generator=g)
    nu = {None: None, "zeros": torch.zeros(120), "tiny": torch.full((120,), 1e-9)}[noise]
    how = {} if form is None else {"form": form}  # None: the default, as calibration uses
    got, a, hist = ridge_with_prior(X, Y, prior=P, noise_var=nu, val_fraction=0.2, seed=1,
                                    **how)
    Xd, Yd, Pd = X.double(), Y.double(), P.double()
    nud = torch.zeros(120, dtype=torch.float64) if nu is None else nu.double()
    perm = torch.randperm(25, generator=torch.Generator().manual_seed(1))
    va, tr = perm[:5], perm[5:]

    def closed(rows, alpha):
        x = Xd[rows]
        m = x.T @ x + len(rows) * torch.diag(nud) + alpha * torch.eye(120, dtype=torch.float64)
        return torch.linalg.solve(m, x.T @ Yd[rows] + alpha * Pd)

    want = [float(((Xd[va] @ closed(tr, b) - Yd[va]) ** 2).mean()) for b in hist["alpha_grid"]]
    assert hist["val_mse"] == pytest.approx(want, rel=1e-6)
    best = min(want)
    assert want[hist["alpha_grid"].index(a)] <= best * (1 + 1e-9), a
    if noise != "tiny":  # ν = 0: the closed form's best is α ~6.3 (2.7e-7 with ν = 1e-9)
        assert 1 < a < 100, a
    torch.testing.assert_close(got.double(), closed(torch.arange(25), a), rtol=1e-5, atol=1e-6)


class _UnnamedDeviceIsMeta(torch.overrides.TorchFunctionMode):
    """Tensors built without naming a device go to "meta", as on a CUDA run they would go
    to the CPU; a tensor handed to ``torch.as_tensor`` keeps its device, as it does there.
    A tensor that the solve builds anywhere but on the data's device then fails to mix."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        from torch.utils._device import _device_constructors

        kwargs = dict(kwargs or {})
        if func in _device_constructors() and kwargs.get("device") is None and not (
                args and isinstance(args[0], torch.Tensor)):
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


def test_ridge_fits_build_every_tensor_on_the_datas_device():
    """Issue 10 part 3: ``fit_toward`` on CUDA built the prior, ν and torch.eye on the CPU
    next to GPU data. Without a GPU: every tensor the solves build without naming a device
    lands on "meta" (``_UnnamedDeviceIsMeta``), where it cannot meet the CPU data. Every
    path (α given or searched, split or given held-out set, primal or dual form, the
    bench's ``ridge_toward``, ``LinearDecoder.fit``/``fit_toward``) must run and give
    the numbers it gives without the mode."""
    from simulation import DualVortexEncoder, speckle
    from simulation.ridge_prior import ridge_toward

    X, Y, W, g = _linear_problem(60, d=40)
    P = W + 0.1 * torch.randn(W.shape, generator=g)
    nu = torch.full((40,), 1e-3)
    enc = DualVortexEncoder(size=8)
    imgs = speckle(90, 4.0, size=8, seed=5)
    pats = enc(imgs)
    start = LinearDecoder(alpha=1.0, device="cpu").fit(pats, imgs)
    nu0 = torch.zeros(128)  # inputs are made outside the mode: only the solves run in it
    cases = {
        "split, primal": lambda: ridge_with_prior(X, Y, prior=P, noise_var=nu)[0],
        "split, dual": lambda: ridge_with_prior(X[:30], Y[:30], prior=P, form="dual")[0],
        "given val, no prior": lambda: ridge_with_prior(X[:30], Y[:30], noise_var=nu,
                                                        X_val=X[30:], Y_val=Y[30:])[0],
        "alpha, primal": lambda: ridge_with_prior(X, Y, prior=P, noise_var=nu, alpha=0.5)[0],
        "alpha, dual": lambda: ridge_with_prior(X[:30], Y[:30], alpha=0.5, form="dual")[0],
        "alpha 0, singular": lambda: ridge_with_prior(X[:30], Y[:30], alpha=0.0,
                                                      form="primal")[0],
        "ridge_toward": lambda: ridge_toward(X[:30], Y[:30], P)[0],
        "ridge_toward, 4 samples": lambda: ridge_toward(X[:4], Y[:4], P)[0],
        "noise variance": lambda: capture_noise_variance(pats[:4], pats[4:8]),
        "fit": lambda: LinearDecoder(device="cpu").fit(pats, imgs).weight_,
        "fit, n < d": lambda: LinearDecoder(device="cpu").fit(pats[:60], imgs[:60]).weight_,
        "fit_toward": lambda: LinearDecoder(device="cpu", val_error="ssim").fit_toward(
            pats[:60], imgs[:60], prior=start, noise_var=nu0, val_patterns=pats[60:],
            val_images=imgs[60:]).weight_,
    }
    failed = {}
    for name, run in cases.items():
        want = run()
        try:
            with _UnnamedDeviceIsMeta():
                got = run()
            assert got.device == want.device
            torch.testing.assert_close(got, want)
        except (RuntimeError, NotImplementedError, AssertionError) as exc:
            failed[name] = f"{type(exc).__name__}: {str(exc)[:120]}"
    assert not failed, failed
