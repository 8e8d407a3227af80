"""The single-pixel ("attention") probe (`simulation.probe`) and the study's step 8
(`experiments.paper.attention`): controls each way (a decoder that images each pixel onto
itself must give concentrated maps, a random one diffuse maps), the spread measures on
hand-made maps, H_SVD of the weights, bad input, and the step at the tiny scale with its
figure and report section."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from experiments.paper import attention, config_for
from experiments.paper.figures import fig_attention, make_figures
from experiments.paper.report import attention_section
from experiments.paper.synthetic import speckle_stats_cell
from experiments.sweep import run_cells
from simulation import (
    LinearDecoder,
    attention_maps,
    diffuse_attention,
    point_images,
    speckle,
    spread_measures,
    svd_entropy,
    weight_svd_entropy,
)

N = 32


class PixelSensor(nn.Module):
    """A stand-in encoder that hands the image itself to the decoder: (B, N, N) -> (B, 1, N, N).
    Trivially invertible, so a good decoder behind it images each pixel onto itself."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images[:, None]


def _hand_decoder(weight: torch.Tensor, size: int = N) -> LinearDecoder:
    dec = LinearDecoder(device="cpu")
    dec.weight_ = weight.to(torch.float32)
    dec.image_shape_, dec.pattern_shape_ = (size, size), (1, size, size)
    dec.encoder_signature_, dec.method_, dec.alpha_ = None, "hand", None
    return dec


def _means(s: dict) -> dict:
    return {k: float(v.double().nanmean()) for k, v in s.items()}


# ------------------------------------------------------------------------ the probe
def test_point_images_are_one_hot_in_row_major_order():
    imgs = point_images(4, amplitude=0.5)
    assert imgs.shape == (16, 4, 4) and imgs.dtype == torch.float32
    assert imgs[6, 1, 2] == 0.5 and imgs[6].sum() == 0.5  # j = row·N + column
    assert torch.equal(imgs.reshape(16, 16), torch.eye(16) * 0.5)
    with pytest.raises(ValueError, match="amplitude"):
        point_images(4, amplitude=2.0)


def test_identity_decoder_gives_a_point_at_the_probed_pixel():
    """Control 1: W = I behind the pixel sensor. The decoder input of δ_j is 2δ_j − 1 (per-
    channel min–max to [−1, 1]) and of the dark image −1, so each map is exactly 2δ_j."""
    dec = _hand_decoder(torch.eye(N * N))
    maps = attention_maps(dec, PixelSensor())
    assert maps.shape == (N * N, N, N)
    assert torch.allclose(maps, 2 * point_images(N), atol=1e-6)
    s = spread_measures(maps)
    assert torch.allclose(s["participation_ratio"], torch.ones(N * N, dtype=torch.float64))
    assert torch.allclose(s["peak_fraction"], torch.ones(N * N, dtype=torch.float64))
    assert torch.all(s["r50_px"] == 0) and bool(s["hit"].all())
    # without the dark baseline the same decoder's maps are the bias −1 everywhere plus the
    # point: the baseline is what makes the map the response to the point
    raw = _means(spread_measures(attention_maps(dec, PixelSensor(), baseline="none")))
    assert raw["participation_ratio"] > 900 and raw["peak_fraction"] < 0.01


def test_fitted_decoder_behind_an_invertible_encoder_is_concentrated():
    """A decoder *fitted* on speckle behind the pixel sensor learns to image each pixel
    onto itself (no bias, so only nearly): concentrated maps, peak on the probed pixel."""
    enc = PixelSensor()
    imgs = speckle(3000, 15.0, seed=1)
    dec = LinearDecoder(alpha=1e-3, progress=False, device="cpu").fit(enc(imgs), imgs)
    m = _means(spread_measures(attention_maps(dec, enc)))
    assert m["participation_ratio"] < 3 and m["peak_fraction"] > 0.6
    assert m["r50_px"] < 1 and m["hit"] == 1.0


def test_random_weights_give_diffuse_maps():
    """Control 2: i.i.d. Gaussian weights behind the dual vortex carry no spatial
    information: maps cover about N²/3 pixels (Gaussian maps), almost no energy on the
    probed pixel, and their peaks land anywhere."""
    dec, enc = attention.random_decoder(seed=0)
    m = _means(spread_measures(attention_maps(dec, enc)))
    assert 250 < m["participation_ratio"] < 450
    assert m["peak_fraction"] < 0.01 and m["hit"] < 0.05 and m["r50_px"] > 10
    ident = _means(spread_measures(attention_maps(_hand_decoder(torch.eye(N * N)),
                                                  PixelSensor())))
    assert ident["participation_ratio"] * 100 < m["participation_ratio"]


def test_spread_measures_on_hand_made_maps():
    n = 8
    maps = torch.zeros(n * n, n, n)
    maps[0] = 1.0                        # even over the frame: PR = N², no peak preference
    maps[1, 0, 1], maps[1, 0, 4] = 1.0, -1.0  # two equal pixels, one probed: PR 2, half
    maps[2, 0, 2], maps[2, 3, 6] = 1.0, math.sqrt(3)  # 1/4 on the probed pixel, rest 5 px away
    s = spread_measures(maps)
    assert s["participation_ratio"][0] == pytest.approx(n * n)
    assert s["peak_fraction"][0] == pytest.approx(1 / n**2)
    assert s["participation_ratio"][1] == pytest.approx(2.0)
    assert s["peak_fraction"][1] == pytest.approx(0.5) and s["r50_px"][1] == 0.0
    assert s["peak_fraction"][2] == pytest.approx(0.25) and s["r50_px"][2] == pytest.approx(5.0)
    assert not s["hit"][2]  # the largest |m| is 5 px away
    # a map with no energy: PR 0, radius NaN, no hit (not a division by zero)
    assert s["participation_ratio"][3] == 0 and math.isnan(s["r50_px"][3])
    assert not s["hit"][3]


def test_weight_svd_entropy_convention():
    n = 8  # small matrices: the convention is the same at any size
    eye = weight_svd_entropy(_hand_decoder(torch.eye(n * n), size=n))
    assert eye["h_svd"] == pytest.approx(6.0, abs=1e-4)  # 64 equal σ: log₂ 64
    assert eye["h_svd_normalised"] == pytest.approx(1.0, abs=1e-5)
    u = torch.randn(n * n, 1, generator=torch.Generator().manual_seed(0))
    rank1 = weight_svd_entropy(_hand_decoder(u @ u.T, size=n))
    assert rank1["h_svd"] == pytest.approx(0.0, abs=0.01)
    dec, _ = attention.random_decoder(seed=1, size=n)  # W: (2·8·8) × (8·8)
    w = weight_svd_entropy(dec)
    assert w["h_svd"] == pytest.approx(float(svd_entropy(dec.weight_, unit_range=False)[0]))
    assert 0.9 < w["h_svd_normalised"] < 1.0 and w["h_svd_max"] == pytest.approx(6.0)


def test_bad_input_is_refused_with_the_argument_named():
    with pytest.raises(ValueError, match="maps: expected"):
        spread_measures(torch.zeros(10, 4, 4))
    bad = torch.zeros(16, 4, 4)
    bad[3, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="maps: expected finite"):
        spread_measures(bad)
    with pytest.raises(RuntimeError, match="fit"):
        attention_maps(LinearDecoder(device="cpu"), PixelSensor())
    with pytest.raises(ValueError, match="baseline"):
        attention_maps(_hand_decoder(torch.eye(N * N)), PixelSensor(), baseline="mean")


def test_diffuse_attention_is_the_speckle_generator():
    assert diffuse_attention is speckle
    assert torch.equal(diffuse_attention(3, 2.0, seed=4), speckle(3, 2.0, seed=4))


# ------------------------------------------------------------- the study's step 8
def test_attention_step_at_tiny_scale_writes_its_figure_and_section(tmp_path):
    cfg = config_for("tiny")
    cells = attention.cells(cfg)
    assert len(cells) == cfg.seeds * (len(cfg.attention_gammas) + 1)  # + a control per seed
    sweep = run_cells(cells, tmp_path / "cells", workers=2, progress=False)
    agg = attention.aggregate(cfg, sweep.results, cells)
    json.dumps(agg)  # goes into results.json as it is
    assert agg["gammas"] == ["0.3", "15.0"] and agg["seeds"] == cfg.seeds
    hi, lo = agg["by_gamma"]["15.0"], agg["by_gamma"]["0.3"]
    ctrl = agg["control"]["random_weights"]
    assert hi["participation_ratio"]["n"] == cfg.seeds == ctrl["participation_ratio"]["n"]
    # the probe sees what the transfer curves show: γ = 15 images points, γ = 0.3 does not
    assert hi["participation_ratio"]["mean"] < lo["participation_ratio"]["mean"]
    assert hi["peak_fraction"]["mean"] > 10 * ctrl["peak_fraction"]["mean"]
    assert hi["hit_rate"]["mean"] > 0.9 > ctrl["hit_rate"]["mean"]
    assert hi["h_svd_weights"]["mean"] > lo["h_svd_weights"]["mean"]
    assert len(agg["maps"]["15.0"]) == 32 and agg["centre_pixel"] == [16, 16]
    # the decoders are fitted on the transfer step's speckle sets: the same (γ, seed, n)
    same = speckle_stats_cell(15.0, 0, cfg.n_train)["h_svd"]
    assert hi["train_h_svd"]["values"][0] == pytest.approx(same, rel=1e-6)

    name = fig_attention({"attention": agg}, tmp_path)
    assert name == "fig8_attention.png" and (tmp_path / name).stat().st_size > 5_000
    assert make_figures({"results": {"attention": agg}}, tmp_path) == {"attention": name}
    text = "\n".join(attention_section({"attention": agg}))
    assert "(fig8_attention.png)" in text and "| 15 |" in text and "random Gaussian" in text
    assert attention_section({"attention": {}}) == []


def test_study_plan_registers_the_step():
    """In the study the transfer step's decoder cells probe their own decoders (no
    second fit); the attention step keeps the random-weight controls."""
    from experiments.paper.study import CELL_MODULES, plan

    cfg = config_for("small")
    steps, _ = plan(cfg, None)
    assert {c.func for c in steps["attention"]} == {"experiments.paper.attention:control_cell"}
    assert len(steps["attention"]) == cfg.attention_seeds
    probed = {(c.params["gamma"], c.params["seed"]) for c in steps["transfer"]
              if c.params.get("probe")}
    assert probed == {(g, s) for g in cfg.attention_gammas for s in range(cfg.attention_seeds)}
    assert "attention" in CELL_MODULES


def test_decoder_cell_probe_equals_the_attention_cell():
    """The probe inside the transfer cell gives the numbers `attention_cell` gives (the
    same decoder: same speckle set, seed and α rule)."""
    from experiments.paper.transfer import decoder_cell

    own = attention.attention_cell(15.0, 1, 300)
    inside = decoder_cell(15.0, 1, 300, [], 10, [], 10, 10, 1, probe=True)["attention"]
    assert inside == own
