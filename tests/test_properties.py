"""Property tests: bad input gets a clear error that names the argument."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulation import (
    DualVortexEncoder,
    LinearDecoder,
    SensorModel,
    load_dataset,
    omega_k,
    speckle,
    ssim,
    svd_entropy,
)

ENC = DualVortexEncoder()
FAST = settings(max_examples=25, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@FAST
@given(shape=st.lists(st.integers(1, 40), min_size=1, max_size=5))
def test_encoder_refuses_wrong_shapes(shape):
    x = torch.rand(*shape)
    if tuple(shape[-2:]) == (32, 32) and len(shape) == 3:
        assert ENC(x).shape == (shape[0], 2, 32, 32)
        return
    with pytest.raises(ValueError, match="images: expected"):
        ENC(x)


@FAST
@given(dtype=st.sampled_from([np.uint8, np.int32, np.int64, np.bool_, np.complex64]))
def test_encoder_refuses_non_float_dtypes(dtype):
    x = np.zeros((2, 32, 32), dtype=dtype)
    with pytest.raises(TypeError, match="images"):
        ENC(x)


@FAST
@given(bad=st.sampled_from([np.nan, np.inf, -np.inf]), where=st.integers(0, 32 * 32 - 1))
def test_nan_and_inf_are_refused_everywhere(bad, where):
    x = torch.rand(2, 32, 32)
    x.view(-1)[where] = bad
    for fn in (ENC, svd_entropy, omega_k):
        with pytest.raises(ValueError, match="NaN or infinite"):
            fn(x)
    with pytest.raises(ValueError, match="reconstruction"):
        ssim(torch.rand(2, 32, 32), x)


@FAST
@given(lo=st.floats(-10, 10, allow_nan=False), span=st.floats(0.01, 10))
def test_values_outside_unit_range_are_refused(lo, span):
    x = lo + span * torch.rand(2, 32, 32)
    ok = float(x.min()) >= 0 and float(x.max()) <= 1
    if ok:
        ENC(x)
        return
    with pytest.raises(ValueError, match=r"images: expected values in \[0, 1\]"):
        ENC(x)


@FAST
@given(name=st.text(min_size=1, max_size=12).filter(
    lambda s: s not in ("mnist", "fashion-mnist", "cifar10", "cifar100", "digits")))
def test_unknown_dataset_names(name):
    with pytest.raises(ValueError, match="name"):
        load_dataset(name)


@FAST
@given(method=st.text(min_size=1, max_size=8).filter(lambda s: s not in ("ridge", "adam")))
def test_unknown_decoder_method(method):
    with pytest.raises(ValueError, match="method: expected one of"):
        LinearDecoder(method=method).fit(torch.rand(4, 2, 32, 32), torch.rand(4, 32, 32))


@FAST
@given(mode=st.text(min_size=1, max_size=10).filter(lambda s: s not in ("magnitude",
                                                                           "intensity")))
def test_unknown_sensor_mode(mode):
    with pytest.raises(ValueError, match="mode"):
        SensorModel(mode)


@FAST
@given(n=st.one_of(st.integers(-5, 0), st.floats(0.5, 3.5), st.just(True)),
       gamma=st.floats(-5, 0))
def test_speckle_refuses_bad_counts_and_gammas(n, gamma):
    with pytest.raises((TypeError, ValueError), match="n|gamma"):
        speckle(n, 1.0)
    with pytest.raises(ValueError, match="gamma"):
        speckle(10, gamma)


def test_decoder_refuses_mismatched_counts():
    with pytest.raises(ValueError, match="images: expected 4 images"):
        LinearDecoder().fit(torch.rand(4, 2, 32, 32), torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="patterns: expected shape"):
        LinearDecoder().fit(torch.rand(4, 2048), torch.rand(4, 32, 32))
