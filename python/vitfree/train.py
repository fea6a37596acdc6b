"""Training a face ViT from scratch with a margin loss (``vitfree train``): what made the demo.

The demo model shipped in the package (``vitfree.models.load("demo")``) was trained by this
module on SYNTHETIC faces (:mod:`vitfree.synthetic.faces`); the command is recorded in the
weights file and in the README.  It trains any :class:`vitfree.models.ViTConfig` on

* synthetic faces generated on the fly (``data="synth"``: identities ``0..N-1`` of a seed,
  every image new, in DataLoader workers; no disk), or
* an image folder of aligned 112x112 faces, one sub-folder per identity
  (:func:`vitfree.synthetic.sets.write_image_folder` writes one).

Recipe: CosFace (s=64, m=0.35) or ArcFace (s=64, m=0.5) on L2-normalised embeddings, AdamW,
linear warm-up then cosine decay, horizontal-flip augmentation, gradient clipping; seeded
(model init, data, order: the same command gives the same weights on the same machine); a
checkpoint every ``save_every`` steps that ``resume=True`` continues from (model, margin
head, optimiser and step; the data stream goes on with a stream seeded by the step);
bf16/fp16 autocast on CUDA (``amp``); DistributedDataParallel under ``torchrun`` (each rank
its own data stream).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, IterableDataset

from vitfree._logging import get_logger
from vitfree.errors import InputError
from vitfree.faces import FolderFaces, open_faces
from vitfree.models import VisionTransformer, ViTConfig, preprocess
from vitfree.runtime import default_workers, dist_setup, runtime, worker_context

# FolderFaces and open_faces live in vitfree.faces (the torch-Dataset module); re-exported here
__all__ = ["FolderFaces", "MarginHead", "SyntheticFaceStream", "TrainConfig", "TrainResult", "open_faces", "train"]

log = get_logger(__name__)


@dataclass
class TrainConfig:
    """Everything that decides a training run (recorded in the checkpoint and weights).

    Attributes:
        model: the architecture (:class:`ViTConfig` fields).
        data: ``"synth"``, an image folder (one sub-folder per identity) or a RecordIO
            ``train.rec`` (:func:`open_faces`).
        identities: synthetic identities ``0..identities-1`` (``data="synth"``).
        synth_seed: who the synthetic people are (keep the benchmark seeds different).
        preset: synthetic variation preset.
        steps: optimisation steps; batch_size: faces per step (per process).
        lr, weight_decay, warmup: AdamW and the schedule (warm-up steps, then cosine to 0).
        loss: "cosface" (s=64, m=0.35) or "arcface" (s=64, m=0.5); scale, margin override.
        flip: random horizontal flips.
        seed: model init, data and order.
        workers: DataLoader workers (None: the process's cores).
        amp: "bf16"/"fp16" on CUDA.
        save_every: steps between checkpoints.
    """

    model: dict[str, Any] = field(default_factory=dict)
    data: str = "synth"
    identities: int = 1000
    synth_seed: int = 100
    preset: str = "medium"
    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: int = 200
    loss: str = "cosface"
    scale: float = 64.0
    margin: float | None = None
    flip: bool = True
    seed: int = 0
    workers: int | None = None
    amp: str | None = None
    save_every: int = 200


@dataclass
class TrainResult:
    """What :func:`train` did: the final weights, the steps run, the last losses."""

    weights: Path
    steps: int
    losses: list[float]
    seconds: float


class MarginHead(nn.Module):
    """CosFace / ArcFace classifier over L2-normalised embeddings and class centres.

    Args:
        dim: embedding size; classes: number of identities.
        kind: "cosface" (logit cos - m) or "arcface" (cos(theta + m)); scale s.
    """

    def __init__(self, dim: int, classes: int, kind: str = "cosface", scale: float = 64.0,
                 margin: float | None = None) -> None:  # fmt: skip
        super().__init__()
        if kind not in ("cosface", "arcface"):
            raise InputError(f"loss must be 'cosface' or 'arcface', got {kind!r}")
        self.kind = kind
        self.scale = float(scale)
        self.margin = float(margin if margin is not None else (0.35 if kind == "cosface" else 0.5))
        self.weight = nn.Parameter(torch.randn(classes, dim) * 0.01)

    def forward(self, emb: Tensor, labels: Tensor) -> Tensor:
        """Cross-entropy of the margin logits (mean over the batch)."""
        cos = nn.functional.linear(nn.functional.normalize(emb.float()), nn.functional.normalize(self.weight))
        cos = cos.clamp(-1 + 1e-7, 1 - 1e-7)
        target = cos.gather(1, labels[:, None])
        if self.kind == "cosface":
            adjusted = target - self.margin
        else:
            theta = torch.acos(target)
            adjusted = torch.cos(theta + self.margin)
        logits = cos.scatter(1, labels[:, None], adjusted) * self.scale
        return nn.functional.cross_entropy(logits, labels)


class SyntheticFaceStream(IterableDataset):  # type: ignore[type-arg]
    """Endless aligned synthetic faces ``(uint8 (112, 112, 3) RGB, identity)``, seeded.

    Worker ``w`` of ``W`` (and rank ``r`` of ``R``) draws its own stream: image ``j`` of
    stream ``(seed, rank, worker, start)`` is always the same face.
    """

    def __init__(self, identities: int, synth_seed: int, preset: str, seed: int,
                 rank: int = 0, start: int = 0) -> None:  # fmt: skip
        self.identities, self.synth_seed, self.preset = identities, synth_seed, preset
        self.seed, self.rank, self.start = seed, rank, start

    def __iter__(self) -> Iterator[tuple[np.ndarray, int]]:
        from vitfree.synthetic.faces import aligned_faces

        info = torch.utils.data.get_worker_info()
        wid = info.id if info is not None else 0
        rng = np.random.default_rng([self.seed, self.rank, wid, self.start])
        j = 0
        while True:
            ids = rng.integers(0, self.identities, 16)
            faces = aligned_faces(
                ids, seed=self.synth_seed, preset=self.preset,
                image_seed=int(rng.integers(0, 2**62)),
            )  # fmt: skip
            for f, i in zip(faces, ids.tolist()):
                yield f, i
                j += 1


def _lr(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def train(
    cfg: TrainConfig,
    out: str | os.PathLike[str],
    *,
    resume: bool = False,
    device: Any = "auto",
    progress: bool = True,
    command: str | None = None,
) -> TrainResult:
    """Train a face ViT with a margin loss; write ``out/model.pt``, ``out/config.json`` (the
    architecture, read by :func:`vitfree.models.load`), ``out/model.json`` (the run) and
    ``out/checkpoint.pt``.

    Args:
        cfg: the run (:class:`TrainConfig`).
        out: output folder.
        resume: continue from ``out/checkpoint.pt`` (its config must equal ``cfg``).
        device: see :func:`vitfree.runtime.resolve_device`.
        progress: a progress bar with the loss.
        command: the command line recorded with the weights (default: ``sys.argv``).

    Returns:
        :class:`TrainResult`.
    """
    from tqdm.auto import tqdm

    rt = runtime(device, cfg.amp)
    ctx = dist_setup(rt.device, None)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = VisionTransformer(**dataclasses.asdict(ViTConfig(**cfg.model))).to(rt.device)
    folder_faces = None if cfg.data == "synth" else open_faces(cfg.data)[0]  # scanned once
    classes = cfg.identities if folder_faces is None else int(folder_faces.classes)
    head = MarginHead(model.num_features, classes, cfg.loss, cfg.scale, cfg.margin).to(rt.device)
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    step = 0
    ckpt = folder / "checkpoint.pt"
    if resume and ckpt.is_file():
        state = torch.load(ckpt, map_location=rt.device, weights_only=True)
        if json.loads(state["config"]) != dataclasses.asdict(cfg):
            raise InputError(f"{ckpt} was written for another configuration; use another --out")
        model.load_state_dict(state["model"])
        head.load_state_dict(state["head"])
        opt.load_state_dict(state["optimizer"])
        step = int(state["step"])
        log.info("resuming %s at step %d", folder, step)
    net: nn.Module = model
    if ctx.world > 1:
        net = nn.parallel.DistributedDataParallel(model)
    workers = default_workers(ctx.world) if cfg.workers is None else cfg.workers
    if folder_faces is None:
        ds: Any = SyntheticFaceStream(cfg.identities, cfg.synth_seed, cfg.preset, cfg.seed, ctx.rank, step)
        loader = DataLoader(ds, batch_size=cfg.batch_size, num_workers=workers,
                            multiprocessing_context=worker_context() if workers else None)  # fmt: skip
    else:
        ds = folder_faces
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + step)
        sampler = torch.utils.data.RandomSampler(ds, replacement=True, num_samples=10**9, generator=gen)
        loader = DataLoader(ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=workers,
                            multiprocessing_context=worker_context() if workers else None)  # fmt: skip
    flip_gen = torch.Generator().manual_seed(cfg.seed + 17 * step)
    losses: list[float] = []
    t0 = time.perf_counter()
    bar = tqdm(total=cfg.steps, initial=step, desc="train", disable=not progress or ctx.rank != 0)
    model.train()
    it = iter(loader)
    try:
        while step < cfg.steps:
            imgs, labels = next(it)
            if cfg.flip:
                flip = torch.rand(imgs.shape[0], generator=flip_gen) < 0.5
                imgs = torch.where(flip[:, None, None, None], imgs.flip(2), imgs)
            x = preprocess(imgs.to(rt.device))
            y = labels.to(rt.device)
            for g in opt.param_groups:
                g["lr"] = _lr(step, cfg)
            with rt.autocast():
                emb = net(x)
            loss = head(emb, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            step += 1
            losses.append(loss.detach().item())
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{_lr(step, cfg):.2e}")
            if ctx.rank == 0 and (step % cfg.save_every == 0 or step == cfg.steps):
                _save_checkpoint(ckpt, model, head, opt, step, cfg)
    finally:
        bar.close()
    weights = folder / "model.pt"
    if ctx.rank == 0:
        model.eval()
        meta = {
            "format": "vitfree.trained",
            "config": dataclasses.asdict(cfg),
            "steps": step,
            "final_loss": float(np.mean(losses[-50:])) if losses else None,
            "command": command or command_line(),
            "synthetic": cfg.data == "synth",
        }
        torch.save(model.state_dict(), weights)
        (folder / "model.json").write_text(json.dumps(meta, indent=2))
        # the architecture beside the weights: vitfree.models.load reads it (the head count
        # does not show in the tensor shapes)
        mc = model.config
        arch = {k: getattr(mc, k) for k in ("img_size", "patch_size", "embed_dim", "depth",
                                              "num_heads", "mlp_ratio", "num_features")}  # fmt: skip
        (folder / "config.json").write_text(json.dumps({"name": "vitfree-trained", **arch}, indent=2))
    ctx.barrier()
    ctx.close()
    return TrainResult(weights, step, losses, time.perf_counter() - t0)


def command_line() -> str:
    """This process's command, as a user would type it (``vitfree train ...``)."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).name in ("vitfree", "__main__.py"):
        argv[0] = "vitfree"
    return " ".join(shlex.quote(a) for a in argv)


def _save_checkpoint(path: Path, model: nn.Module, head: nn.Module, opt: Any, step: int,
                     cfg: TrainConfig) -> None:  # fmt: skip
    tmp = path.with_suffix(".tmp")
    torch.save(
        {"model": model.state_dict(), "head": head.state_dict(), "optimizer": opt.state_dict(),
         "step": step, "config": json.dumps(dataclasses.asdict(cfg))},
        tmp,
    )  # fmt: skip
    os.replace(tmp, path)


def export_weights(run: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Ship a trained run: ``dest/model.safetensors`` (float16), ``config.json``, ``model.json``.

    The weights are stored in float16 (half the size; :func:`vitfree.models.load` returns
    float32 by default) with the run's command in the safetensors metadata; ``config.json``
    (the architecture) and ``model.json`` (the run) are copied beside them.  This is how the
    demo model in ``vitfree/models/weights/demo`` was made from ``vitfree train``'s output.
    """
    import shutil

    from safetensors.torch import save_file

    src, out = Path(run), Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    sd = torch.load(src / "model.pt", map_location="cpu", weights_only=True)
    meta = json.loads((src / "model.json").read_text())
    half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in sd.items()}
    save_file(half, str(out / "model.safetensors"),
              metadata={"format": "vitfree.trained", "command": str(meta.get("command", "")),
                        "synthetic": str(bool(meta.get("synthetic"))).lower()})  # fmt: skip
    for name in ("config.json", "model.json"):
        shutil.copyfile(src / name, out / name)
    return out / "model.safetensors"
