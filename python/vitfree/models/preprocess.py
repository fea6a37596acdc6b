"""Images -> model input: the insightface normalisation ``(x / 255 - 0.5) / 0.5``.

Two pixel scalings are in use by the community's scripts (:data:`PIXEL_SCALINGS`):
``"div255"``, ``(x / 255 - 0.5) / 0.5`` in float32 in that order (arcface_torch training and
``eval_ijbc.py``, CVLface, vitfree's default: about ``(x - 127.5) / 127.5``), and
``"div128"``, ``(x - 127.5) * 0.0078125`` (insightface ``ijb_evals.py``: ``(x - 127.5) / 128``,
exact in float32).  They differ by 0.4%; see docs/reproduce.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from vitfree.errors import InputError, InputTypeError

__all__ = ["PIXEL_SCALINGS", "preprocess", "scale_pixels"]

#: Pixel scalings by name, with the formula each computes in float32.
PIXEL_SCALINGS: dict[str, str] = {
    "div255": "(x / 255 - 0.5) / 0.5",
    "div128": "(x - 127.5) * 0.0078125",
}


def scale_pixels(x: Tensor, scaling: str = "div255") -> Tensor:
    """uint8 (or integer-valued float) pixels -> float32 network input, by ``scaling``.

    ``"div255"``: ``x / 255``, ``- 0.5``, ``/ 0.5``, each step rounded to float32 (as the
    reference scripts compute it in torch); ``"div128"``: ``(x - 127.5) * 0.0078125``, which
    is exact in float32 (what ``ijb_evals.py`` computes in numpy).
    """
    if scaling not in PIXEL_SCALINGS:
        raise InputError(f"pixel scaling must be one of {', '.join(PIXEL_SCALINGS)}, got {scaling!r}")
    x = x.to(torch.float32)
    if scaling == "div128":
        return x.sub(127.5).mul(0.0078125)
    return x.div(255.0).sub(0.5).div(0.5)


def preprocess(
    images: Any,
    *,
    bgr: bool = False,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    scaling: str = "div255",
) -> Tensor:
    """uint8 face crops -> normalised float batch for :class:`VisionTransformer`.

    Args:
        images: uint8 array or tensor, (H, W, 3) for one image or (B, H, W, 3), channels last,
            RGB (or BGR with ``bgr=True``, as read by OpenCV); a list of (H, W, 3) is stacked.
        bgr: The channels are BGR; they are reversed to RGB.
        device: Device of the result (default: the input's, CPU for numpy).
        dtype: Floating dtype of the result.
        scaling: ``"div255"`` (default) or ``"div128"`` (:data:`PIXEL_SCALINGS`).

    Returns:
        (B, 3, H, W) tensor with values ``(x / 255 - 0.5) / 0.5`` in [-1, 1], computed in
        float32 in that order, as the reference evaluation scripts do (``"div128"``:
        ``(x - 127.5) * 0.0078125``).
    """
    if isinstance(images, (list, tuple)):
        if not images:
            raise InputError("preprocess got an empty list of images")
        images = np.stack(
            [np.asarray(i) if not isinstance(i, Tensor) else i.cpu().numpy() for i in images]
        )
    if isinstance(images, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(images))
    elif isinstance(images, Tensor):
        t = images
    else:
        raise InputTypeError(f"expected a uint8 numpy array or tensor, got {type(images).__name__}")
    if t.dtype != torch.uint8:
        raise InputTypeError(
            f"expected uint8 images (0..255), got dtype {t.dtype}; float inputs are ambiguous "
            f"(0..1 or 0..255?), convert to uint8 or normalise as (x / 255 - 0.5) / 0.5 yourself"
        )
    if t.dim() == 3:
        t = t.unsqueeze(0)
    if t.dim() != 4 or t.shape[-1] != 3:
        raise InputError(
            f"expected channels-last images (H, W, 3) or (B, H, W, 3), got shape {tuple(t.shape)}"
        )
    if bgr:
        t = t.flip(-1)
    x = t.to(device=device if device is not None else t.device).permute(0, 3, 1, 2)
    x = scale_pixels(x, scaling)
    return x.to(dtype).contiguous()
