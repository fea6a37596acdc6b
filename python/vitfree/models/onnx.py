"""ONNX face models run with onnxruntime, as insightface's ``ijb_evals.py`` runs them.

LVFace publishes ``.onnx`` weights and :func:`vitfree.models.export_onnx` writes them; such a
file is a fixed program from aligned faces to the final embedding.  :class:`OnnxModel` runs
it for ``vitfree eval ijbc|ijbb --model model.onnx`` (and :func:`vitfree.evaluate_ijb`): the
same extraction, feature store and protocols as a PyTorch checkpoint, but only the **final**
embedding: an ONNX graph has no exits to stop at, so asking for exits is an error that
points to the PyTorch checkpoint (``vitfree.models.load``), which has them all.

The input is what the graph declares: one float tensor (B, 3, H, W), RGB, scaled by the
pixel scaling in force (``--reproduce`` / ``--pixel-scaling``; ``ijb_evals.py`` feeds ONNX
models ``(x - 127.5) * 0.0078125``).  onnxruntime is an optional dependency
(``pip install 'vitfree[onnx]'``); it is imported when an ONNX model is opened.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vitfree.errors import CheckpointError, InputError

__all__ = ["OnnxModel", "is_onnx_model", "load_onnx"]

_BLOCK = re.compile(r"(?:^|[./])blocks\.(\d+)[./]")


def _onnx_depth(path: Path) -> int | None:
    """The number of transformer blocks, read from the graph's weight and node names
    (``blocks.{i}.``), without loading the weights; None when unknown (or no ``onnx``)."""
    try:
        import onnx
    except ImportError:
        return None
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - onnxruntime has accepted the file; names are a bonus
        return None
    names = [i.name for i in proto.graph.initializer] + [n.name for n in proto.graph.node]
    ids = {int(m.group(1)) for n in names if (m := _BLOCK.search(n))}
    return max(ids) + 1 if ids else None


class OnnxModel:
    """A face model in an ONNX file, run with onnxruntime: aligned faces -> final embedding.

    Attributes:
        path: the ``.onnx`` file.
        input_name, output_name: the graph's input and (first) output.
        img_size: side of the input faces (112).
        in_chans: input channels (3).
        num_features: embedding size.
        depth: transformer blocks, when the graph's names show them (``blocks.{i}.``), else None.
        final_exit: the exit number the final embedding is stored under: ``depth``, or 0 when
            the depth is unknown (labelled "final").
        arch: ``"onnx"``.
    """

    arch = "onnx"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        device: Any = "cpu",
        threads: int | None = None,
    ) -> None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"ONNX model not found: {p}")
        try:
            import onnxruntime as ort
        except ImportError:
            raise InputError(
                f"{p} is an ONNX model; running it needs onnxruntime (pip install 'vitfree[onnx]')"
            ) from None
        opts = ort.SessionOptions()
        if threads is None:
            import torch

            threads = torch.get_num_threads()
        opts.intra_op_num_threads = max(1, int(threads))
        opts.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(p), sess_options=opts, providers=providers)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own kinds
            line = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"{p} is not an ONNX model onnxruntime can run: {line}") from None
        self.path = p
        ins, outs = self.session.get_inputs(), self.session.get_outputs()
        if len(ins) != 1:
            raise CheckpointError(
                f"{p}: the graph has {len(ins)} inputs ({', '.join(i.name for i in ins)}); a face "
                f"model takes one, the aligned faces (B, 3, 112, 112)"
            )
        shape = list(ins[0].shape)
        if len(shape) != 4 or ins[0].type not in ("tensor(float)",):
            raise CheckpointError(
                f"{p}: the input {ins[0].name!r} is {ins[0].type} of shape {shape}; a face model "
                f"takes float32 faces (B, 3, 112, 112), channels first"
            )
        c, h, w = (d if isinstance(d, int) else None for d in shape[1:])
        if c not in (None, 3) or (h is not None and w is not None and h != w):
            raise CheckpointError(f"{p}: the input {ins[0].name!r} has shape {shape}, not (B, 3, S, S)")
        self.input_name = ins[0].name
        self.output_name = outs[0].name
        self.in_chans = 3
        self.img_size = int(h or w or 112)
        out_shape = list(outs[0].shape)
        if len(out_shape) == 2 and isinstance(out_shape[1], int):
            self.num_features = int(out_shape[1])
        else:  # a symbolic width: ask the graph
            probe = np.zeros((1, 3, self.img_size, self.img_size), np.float32)
            self.num_features = int(self.embed(probe).shape[1])
        self.depth = _onnx_depth(p)
        self.final_exit = self.depth or 0
        self.exit_heads: dict[int, Any] = {}
        self.providers = self.session.get_providers()

    # -- what extraction needs --------------------------------------------------------

    def resolve_exits(self, exits: Any = None) -> list[int]:
        """``[final_exit]`` for None (or the final exit itself, or -1); any other exit is an
        :class:`InputError` pointing to the PyTorch checkpoint."""
        if exits is None:
            return [self.final_exit]
        wanted = [int(k) for k in (exits if isinstance(exits, (list, tuple)) else [exits])]
        ok = {-1, self.final_exit} | ({self.depth} if self.depth else set())
        if wanted and all(k in ok for k in wanted):
            return [self.final_exit]
        raise InputError(
            f"{self.path.name} is an ONNX model: it gives the final embedding only, so exits "
            f"{wanted} cannot be computed from it. Evaluate the PyTorch checkpoint instead "
            f"(--model model.pt or .safetensors; vitfree.models.load), which has every exit; "
            f"for this file, leave --exits out"
        )

    def fingerprint(self) -> str:
        """sha256 of the file (24 hex digits): the identity of its features in a store."""
        h = hashlib.sha256()
        with open(self.path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()[:24]

    def describe(self) -> str:
        blocks = f", {self.depth} blocks (from its weight names)" if self.depth else ""
        return (
            f"ONNX {self.path.name}: {self.input_name} (B, 3, {self.img_size}, {self.img_size}) "
            f"-> {self.output_name} (B, {self.num_features}){blocks}, onnxruntime "
            f"{'/'.join(self.providers)}"
        )

    def embed(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Run the graph: (B, 3, S, S) float32 network input -> (B, D) float32 embeddings."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        (out,) = self.session.run([self.output_name], {self.input_name: x})
        out = np.asarray(out, dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != x.shape[0]:
            raise CheckpointError(
                f"{self.path.name}: the graph returned shape {out.shape} for {x.shape[0]} faces; "
                f"expected (B, D) embeddings"
            )
        return out

    def to(self, *args: Any, **kwargs: Any) -> OnnxModel:
        """No-op (the device was chosen when the session was made)."""
        return self

    def eval(self) -> OnnxModel:
        return self

    def __repr__(self) -> str:
        return f"OnnxModel({self.describe()})"


def load_onnx(path: str | os.PathLike[str], *, device: Any = "cpu") -> OnnxModel:
    """Open an ONNX face model (``vitfree eval ... --model model.onnx``)."""
    return OnnxModel(path, device=device)


def is_onnx_model(model: Any) -> bool:
    """Whether ``model`` is an :class:`OnnxModel` (final embedding only, no torch module)."""
    return isinstance(model, OnnxModel)
