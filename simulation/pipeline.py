"""The whole imager in one call: encode images, decode the patterns."""

from __future__ import annotations

import torch

from ._checks import check_images
from .decoders import LinearDecoder
from .encoders import encode_batched

__all__ = ["reconstruct"]


def reconstruct(images, encoder, decoder: LinearDecoder, *, batch_size: int = 4096
                ) -> torch.Tensor:
    """Images (B, N, N) or colour (B, 3, N, N) in [0, 1] -> reconstructions, same shape.

    Colour images go through the optics and the decoder channel by channel
    (docs/paper.md §Encoder). The decoder checks that it was fitted for ``encoder``.
    """
    imgs = check_images(images, "images", ndim=(3, 4))
    patterns = encode_batched(encoder, imgs.to(encoder.masks_rad.device), batch_size)
    return decoder.predict(patterns, encoder=encoder)
