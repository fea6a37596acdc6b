"""Deployment: ONNX (dynamic batch) and TorchScript export of a (truncated) face ViT."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Union

import torch

from vitfree.models.vit import VisionTransformer

__all__ = ["export_onnx", "export_torchscript"]

PathLike = Union[str, "os.PathLike[str]"]


def export_onnx(
    model: VisionTransformer,
    path: PathLike,
    *,
    opset: int = 18,
    dynamic_batch: bool = True,
) -> Path:
    """Export ``model.forward`` (images -> embedding) to ONNX.

    Typically used on ``model.truncate(k)`` to deploy exit ``k``.  Input ``images``
    (B, 3, 112, 112) float32, output ``embedding`` (B, 512); B is dynamic unless
    ``dynamic_batch=False``.  Uses the ``torch.export``-based exporter.

    Args:
        model: The model to export (put in eval mode for the export).
        path: Output ``.onnx`` file.  Models over ~1.8 GB of weights get an external data
            file next to it (protobuf's 2 GB limit).
        opset: ONNX opset (>= 17).
        dynamic_batch: Make the batch dimension symbolic.
    """
    if opset < 17:
        raise ValueError(f"opset must be >= 17 (LayerNormalization), got {opset}")
    path = Path(path)
    was_training = model.training
    model.eval()
    ref = model.patch_embed.proj.weight
    size = model.img_size
    x = torch.zeros(2, model.in_chans, size, size, dtype=ref.dtype, device=ref.device)
    nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    dynamic_shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    try:
        torch.onnx.export(
            model,
            (x,),
            str(path),
            dynamo=True,
            opset_version=opset,
            input_names=["images"],
            output_names=["embedding"],
            dynamic_shapes=dynamic_shapes,
            external_data=nbytes > 1_800_000_000,
        )
    finally:
        model.train(was_training)
    return path


def export_torchscript(model: VisionTransformer, path: PathLike) -> torch.jit.ScriptModule:
    """Script ``model`` (its ``forward``: images -> embedding) and save it to ``path``."""
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            # TorchScript is deprecated upstream in favour of torch.export, but it is still
            # what many deployment runtimes (LibTorch, older serving stacks) load.
            warnings.simplefilter("ignore", FutureWarning)
            scripted = torch.jit.script(model)
    finally:
        model.train(was_training)
    scripted.save(str(path))
    return scripted
