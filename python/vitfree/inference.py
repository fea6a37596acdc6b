"""Running a model on faces: every exit's features of a batch of images and their flips.

:func:`embed_batch` is the one place where a face model meets pixels.  Extraction of IJB
crops (:mod:`vitfree.extract`), ``.bin`` and pair-list evaluation, and later depth analysis
and dynamic exits call it, so that normalisation, the image + flip pass, precision and the
device are the same everywhere:

* the images and their horizontal flips run as one batch of 2B through
  :meth:`VisionTransformer.forward_exits`: one pass up to the deepest exit gives every
  requested exit (docs/protocols.md §2, §3, §5);
* uint8 RGB faces are normalised as ``(x / 255 - 0.5) / 0.5`` on the model's device
  (:func:`vitfree.models.preprocess`);
* ``--amp`` autocast comes from the :class:`vitfree.runtime.Runtime`; features come back as
  float32 numpy arrays whatever the precision.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from vitfree.errors import InputError, InputTypeError, NonFiniteFeaturesError
from vitfree.faces import FaceBatch
from vitfree.models import VisionTransformer, preprocess
from vitfree.runtime import Runtime

__all__ = ["ExitFeatures", "check_face_model", "embed_batch"]

FACE_SIZE = 112


@dataclass
class ExitFeatures:
    """Features of one batch at one exit.

    Attributes:
        feats: (B, D) float32, the images.
        flips: (B, D) float32, their horizontal flips.
    """

    feats: npt.NDArray[np.float32]
    flips: npt.NDArray[np.float32]


def check_face_model(model: VisionTransformer, size: int = FACE_SIZE) -> None:
    """Raise unless ``model`` is a vitfree face ViT taking ``size`` x ``size`` RGB crops."""
    if not isinstance(model, VisionTransformer):
        raise InputTypeError(f"expected a vitfree.models.VisionTransformer, got {type(model).__name__}")
    if model.img_size != size or model.in_chans != 3:
        raise InputError(
            f"the model takes {model.in_chans}x{model.img_size}x{model.img_size} inputs "
            f"({model.config.describe()}), but aligned faces are 3x{size}x{size}; "
            f"face benchmarks need a model built for {size}x{size} RGB crops"
        )


def embed_batch(
    model: VisionTransformer,
    batch: FaceBatch,
    exits: Sequence[int],
    rt: Runtime,
    describe: Callable[[int], str] | None = None,
) -> dict[int, ExitFeatures]:
    """Features of ``batch`` (images and flips) at each of ``exits``, from one pass.

    Args:
        model: the face ViT, already on ``rt.device`` and in eval mode.
        batch: uint8 faces and their flips (:func:`vitfree.faces.face_batches`).
        exits: 1-based exits (resolved; see :func:`vitfree.models.resolve_exits`).
        rt: device and precision.
        describe: names the face of a source row in an error (default: "row N").

    Returns:
        ``{exit: ExitFeatures}``, rows in batch order.

    Raises:
        NonFiniteFeaturesError: NaN or infinite features of a usable face (faces flagged
            not ok are zeros and are not checked), naming the first face and exit.
    """
    b = len(batch)
    x = torch.cat([batch.images, batch.flipped]).to(rt.device, non_blocking=True)
    x = preprocess(x.permute(0, 2, 3, 1), dtype=model.pos_embed.dtype)
    with torch.inference_mode(), rt.autocast():
        embs = model.forward_exits(x, list(exits))
    out = {}
    for k in exits:
        e = embs[k].float().cpu().numpy()
        fin = np.isfinite(e).all(axis=1)
        bad = ~(fin[:b] & fin[b:]) & batch.ok
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            what = describe(int(batch.rows[i])) if describe else f"row {int(batch.rows[i])}"
            hint = " (an fp16 overflow? try --amp bf16 or fp32)" if rt.amp == "fp16" else ""
            raise NonFiniteFeaturesError(
                f"the model gave NaN or infinite features at exit {k} for {what}"
                f" ({int(bad.sum())} faces of this batch){hint}"
            )
        out[k] = ExitFeatures(e[:b], e[b:])
    return out
