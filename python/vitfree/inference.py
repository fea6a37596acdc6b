"""Running a model on faces: every exit's features of a batch of images and their flips.

:func:`embed_batch` is the one place where a face model meets pixels.  Extraction of IJB
crops (:mod:`vitfree.extract`), ``.bin`` and pair-list evaluation, and later depth analysis
and dynamic exits call it, so that normalisation, the image + flip pass, precision and the
device are the same everywhere:

* the images and their horizontal flips run as one batch of 2B through
  :meth:`VisionTransformer.forward_exits`: one pass up to the deepest exit gives every
  requested exit (docs/protocols.md §2, §3, §5);
* uint8 RGB faces are normalised as ``(x / 255 - 0.5) / 0.5`` on the model's device
  (:func:`vitfree.models.preprocess`), or ``(x - 127.5) * 0.0078125`` with
  ``scaling="div128"`` (insightface ``ijb_evals.py``, docs/reproduce.md);
* an ONNX model (:class:`vitfree.models.onnx.OnnxModel`) runs the same 2B batch through
  onnxruntime and gives its final embedding only;
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
from vitfree.models.onnx import OnnxModel
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


def check_face_model(model: VisionTransformer | OnnxModel, size: int = FACE_SIZE) -> None:
    """Raise unless ``model`` is a vitfree face ViT (or an ONNX face model) taking ``size`` x
    ``size`` RGB crops."""
    if isinstance(model, OnnxModel):
        if model.img_size != size:
            raise InputError(
                f"{model.describe()}: it takes {model.img_size}x{model.img_size} inputs, but "
                f"aligned faces are 3x{size}x{size}"
            )
        return
    if not isinstance(model, VisionTransformer):
        raise InputTypeError(f"expected a vitfree.models.VisionTransformer, got {type(model).__name__}")
    if model.img_size != size or model.in_chans != 3:
        raise InputError(
            f"the model takes {model.in_chans}x{model.img_size}x{model.img_size} inputs "
            f"({model.config.describe()}), but aligned faces are 3x{size}x{size}; "
            f"face benchmarks need a model built for {size}x{size} RGB crops"
        )


def embed_batch(
    model: VisionTransformer | OnnxModel,
    batch: FaceBatch,
    exits: Sequence[int],
    rt: Runtime,
    describe: Callable[[int], str] | None = None,
    scaling: str = "div255",
) -> dict[int, ExitFeatures]:
    """Features of ``batch`` (images and flips) at each of ``exits``, from one pass.

    Args:
        model: the face ViT, already on ``rt.device`` and in eval mode.
        batch: uint8 faces and their flips (:func:`vitfree.faces.face_batches`).
        exits: 1-based exits (resolved; see :func:`vitfree.models.resolve_exits`).
        rt: device and precision.
        describe: names the face of a source row in an error (default: "row N").
        scaling: pixel scaling, ``"div255"`` or ``"div128"``
            (:data:`vitfree.models.preprocess.PIXEL_SCALINGS`).

    Returns:
        ``{exit: ExitFeatures}``, rows in batch order.

    Raises:
        NonFiniteFeaturesError: NaN or infinite features of a usable face (faces flagged
            not ok are zeros and are not checked), naming the first face and exit.
    """
    b = len(batch)
    embs: dict[int, torch.Tensor | np.ndarray]
    if isinstance(model, OnnxModel):
        x = torch.cat([batch.images, batch.flipped])
        x = preprocess(x.permute(0, 2, 3, 1), scaling=scaling)
        final = model.embed(x.numpy())
        embs = {k: final for k in model.resolve_exits(list(exits))}
    else:
        x = torch.cat([batch.images, batch.flipped]).to(rt.device, non_blocking=True)
        x = preprocess(x.permute(0, 2, 3, 1), dtype=model.pos_embed.dtype, scaling=scaling)
        with torch.inference_mode(), rt.autocast():
            embs = dict(model.forward_exits(x, list(exits)))
    out = {}
    for k in exits:
        ek = embs[k]
        e = ek if isinstance(ek, np.ndarray) else ek.float().cpu().numpy()
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
