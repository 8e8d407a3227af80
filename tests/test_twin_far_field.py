"""The wavefront fit's far field (``calibration.twin.far_field_intensity``) is the padded,
shifted FFT of the docstring, computed without the shifts: equal to the explicit formula
on odd and even padded sizes, and its centre bin is the zero frequency."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from calibration.twin import PupilGrid, far_field_intensity


def _explicit(grid: PupilGrid, amplitude: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    field = torch.polar(amplitude.expand_as(phase), phase)
    p = grid.pad
    ny, nx = phase.shape[-2:]
    top, left = (p - ny) // 2, (p - nx) // 2
    padded = F.pad(field, (left, p - nx - left, top, p - ny - top))
    ff = torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(padded, dim=(-2, -1))),
                            dim=(-2, -1))
    inten = ff.real**2 + ff.imag**2
    return inten / inten.sum(dim=(-2, -1), keepdim=True)


@pytest.mark.parametrize("shape, size, block, samples, q", [
    ((256, 256), 32, 8, 64, 4),      # P = 256
    ((100, 130), 20, 5, 33, 3),      # P = 75: odd
    ((96, 128), 16, 6, 40, 3),       # rectangular pupil
])
def test_far_field_equals_the_shifted_padded_fft(shape, size, block, samples, q):
    grid = PupilGrid(shape, size, block, samples=samples, q=q, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    amp = torch.rand(grid.x.shape, dtype=torch.float64, generator=gen)
    phase = 3 * torch.randn((2, *grid.x.shape), dtype=torch.float64, generator=gen)
    got = far_field_intensity(grid, amp, phase)
    want = _explicit(grid, amp, phase)
    assert got.shape == want.shape == (2, grid.pad, grid.pad)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    # a flat phase puts the peak on bin P//2 (the zero frequency), on both axes
    flat = far_field_intensity(grid, torch.ones_like(amp), torch.zeros_like(amp))
    assert divmod(int(flat.argmax()), grid.pad) == (grid.pad // 2, grid.pad // 2)
    # (control, run by hand: with the centring ramp set to zero all three cases fail)


def test_far_field_on_camera_equals_sampling_the_whole_grid():
    """The windowed DFT gives the samples, and the gradients (phase and points), of
    sampling the whole far field; points near the grid's edge and off it included."""
    from calibration.twin import far_field_on_camera, sample_on_camera

    grid = PupilGrid((256, 256), 32, 8, samples=64, q=4, dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    amp = torch.rand(grid.x.shape, dtype=torch.float64, generator=gen)
    for centre in ((140.0, 120.0), (3.0, 250.0)):  # a disc inside; one over two edges
        phase = torch.randn((3, *grid.x.shape), dtype=torch.float64, generator=gen)
        phase.requires_grad_()
        r = 40 * torch.sqrt(torch.rand(2000, dtype=torch.float64, generator=gen))
        t = 2 * torch.pi * torch.rand(2000, dtype=torch.float64, generator=gen)
        bins = torch.stack([centre[0] + r * torch.cos(t), centre[1] + r * torch.sin(t)], 1)
        pts = ((2 * bins + 1) / grid.pad - 1).reshape(1, -1, 1, 2).requires_grad_()
        want = sample_on_camera(far_field_intensity(grid, amp, phase), pts)
        got = far_field_on_camera(grid, amp, phase, pts)
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-15)
        g_want = torch.autograd.grad(want.square().sum(), (phase, pts))
        g_got = torch.autograd.grad(got.square().sum(), (phase, pts))
        for a, b in zip(g_got, g_want, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-12)
    # (control, run by hand: a window ending at the last point's bin, without the bin
    # after it that bilinear sampling reads, fails)
