"""Exit-specific head fine-tuning with the backbone frozen (``vitfree finetune``).

A shallow exit loses accuracy because the checkpoint's head was trained on the last block's
tokens.  Here every selected exit gets its own head (a :class:`vitfree.models.heads.Head`,
started from the checkpoint's head: :meth:`Head.start`), trained on that exit's tokens while
every transformer block, the patch embedding and the checkpoint's own head stay frozen:

* **one frozen pass per batch**: under ``torch.no_grad`` with the backbone in eval mode,
  block stepping (:meth:`~vitfree.models.VisionTransformer.embed`,
  :meth:`~vitfree.models.VisionTransformer.run_blocks`) gives the tokens of every selected
  exit from one pass (and, for self-distillation, the frozen model's final embedding); all
  heads train together on them (:func:`frozen_exit_tokens`, :class:`ExitHeadTrainer`);
* **losses** (:data:`LOSSES`): margin softmax, CosFace (s=64, m=0.35) or ArcFace (s=64,
  m=0.5), with one classifier per exit (:class:`vitfree.train.MarginHead`); label-free
  self-distillation ``1 - cos(head_k(tokens_k), final embedding)`` toward the frozen model's
  own output (LGViT's second stage; usable on unlabelled faces); or their weighted sum
  (``"cosface+distill"``);
* **engine**: AdamW, linear warm-up then cosine decay, gradient clipping per exit, gradient
  accumulation, bf16/fp16 autocast of the frozen pass on CUDA (heads in float32, as
  evaluation runs them), DistributedDataParallel under ``torchrun`` (each rank its own data),
  a checkpoint every ``save_every`` steps that ``resume=True`` continues *exactly* (the data
  of step ``s`` and its flips are a function of ``(seed, rank, s)``, not of a stream), a tqdm
  bar with the loss and the per-exit training accuracy (or cosine), validation every
  ``val_every`` steps on a ``.bin`` set or synthetic pairs (10-fold accuracy per exit, the
  shared head's before training) and early stop, each exit keeping its best head;
* **data**: an image folder (one sub-folder per identity, aligned 112x112:
  :class:`vitfree.faces.FolderFaces`), an insightface RecordIO set (``train.rec``:
  :class:`vitfree.data.recordio.RecordIOFaces`), synthetic faces rendered on the fly
  (``"synth"``, seeded; identities of ``synth_seed``, keep it apart from benchmark seeds), or
  any Dataset of ``(uint8 (112, 112, 3) RGB, int label)``; unusable images stop the run
  naming the file, or are skipped and counted (``skip_corrupt``);
* **output**: an exit-heads file (:mod:`vitfree.models.files`, version 3) holding only what
  each head trains, the backbone's fingerprint (loading it onto other weights is a
  :class:`~vitfree.errors.CheckpointError`), the exits, kinds, loss, data and command line;
  beside it ``<name>.json`` (the run: config, losses, validation history, wall time) and
  ``<name>.ckpt.pt`` (the checkpoint).  Every evaluation takes the file
  (``--exit-heads``, :meth:`VisionTransformer.load_exit_heads`), and ``truncate(k)`` builds a
  plain checkpoint from ``"copy"``, ``"lora"`` and ``"norms"`` heads.

Example::

    from vitfree.models import load
    from vitfree.finetune import FinetuneConfig, finetune

    model = load("demo")
    res = finetune(model, "synth", [2, 4, 6], "heads.pt", FinetuneConfig(steps=300))
    model.load_exit_heads(res.heads_file)          # or model.set_exit_heads(res.heads)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler

from vitfree._logging import get_logger
from vitfree.errors import InputError, VitfreeError
from vitfree.faces import open_faces
from vitfree.models import Head, VisionTransformer, preprocess
from vitfree.models.files import backbone_fingerprint, save_exit_heads
from vitfree.runtime import Runtime, default_workers, dist_setup, runtime, worker_context
from vitfree.train import MarginHead, command_line

__all__ = [
    "LOSSES",
    "ExitHeadTrainer",
    "FinetuneConfig",
    "FinetuneResult",
    "PairValidation",
    "finetune",
    "frozen_exit_tokens",
    "training_step",
]

log = get_logger(__name__)

#: The loss names: a margin softmax, self-distillation, or their weighted sum.
LOSSES = ("cosface", "arcface", "distill", "cosface+distill", "arcface+distill")


@dataclass
class FinetuneConfig:
    """Everything that decides a fine-tuning run (recorded in the heads file and checkpoint).

    Attributes:
        head: head kind (:func:`vitfree.models.head_kinds`: ``"copy"``, ``"lora"``,
            ``"norms"``, ``"lgvit_local"``, ``"lgvit_global"``); head_options: its options
            (``{"rank": 8}`` for ``"lora"``).
        loss: one of :data:`LOSSES`; margin_weight, distill_weight: the terms' weights in a
            sum; scale, margin: override s and m of the margin softmax.
        identities, synth_seed, preset: the synthetic people of ``data="synth"``
            (identities ``0..identities-1`` of ``synth_seed``).
        steps: optimiser steps; epochs: instead, passes over a finite data set.
        batch_size: faces per micro-batch and process; accum: micro-batches per step.
        lr, weight_decay, warmup, clip: AdamW, warm-up steps then cosine to 0, the gradient
            norm limit (per exit).
        flip: random horizontal flips.
        seed: head and classifier initialisation, data and flips.
        workers: DataLoader workers (None: this process's cores).
        amp: ``"bf16"``/``"fp16"`` autocast of the frozen pass on CUDA.
        save_every: steps between checkpoints.
        val: ``None``, ``"synth"`` (synthetic pairs of ``val_seed``) or a ``.bin`` file;
            val_pairs, val_seed: the synthetic pairs; val_every: steps between validations;
            patience: stop after this many validations in which no exit improved (None:
            never); every exit keeps its best head.
        skip_corrupt: skip (and count) unusable training images instead of stopping.
    """

    head: str = "copy"
    head_options: dict[str, Any] = field(default_factory=dict)
    loss: str = "cosface"
    margin_weight: float = 1.0
    distill_weight: float = 1.0
    scale: float = 64.0
    margin: float | None = None
    identities: int = 1000
    synth_seed: int = 200
    preset: str = "medium"
    steps: int | None = 500
    epochs: float | None = None
    batch_size: int = 64
    accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: int = 50
    clip: float = 5.0
    flip: bool = True
    seed: int = 0
    workers: int | None = None
    amp: str | None = None
    save_every: int = 100
    val: str | None = None
    val_pairs: int = 300
    val_seed: int = 7
    val_every: int = 100
    patience: int | None = None
    skip_corrupt: bool = False

    def margin_kind(self) -> str | None:
        """``"cosface"``/``"arcface"`` when the loss has a margin term, else None."""
        first = self.loss.split("+")[0]
        return first if first in ("cosface", "arcface") else None

    def distills(self) -> bool:
        """Whether the loss has the self-distillation term."""
        return self.loss.endswith("distill")

    def check(self) -> None:
        """Raise :class:`InputError` naming the first setting that makes no sense."""
        if self.loss not in LOSSES:
            raise InputError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        positive = {"batch_size": self.batch_size, "accum": self.accum, "save_every": self.save_every,
                    "val_every": self.val_every, "val_pairs": self.val_pairs,
                    "identities": self.identities}  # fmt: skip
        for name, v in positive.items():
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"{name} must be an integer >= 1, got {v!r}")
        if self.steps is None and self.epochs is None:
            raise InputError("give steps or epochs")
        if self.steps is not None and (not isinstance(self.steps, int) or self.steps < 1):
            raise InputError(f"steps must be an integer >= 1, got {self.steps!r}")
        if self.epochs is not None and not self.epochs > 0:
            raise InputError(f"epochs must be > 0, got {self.epochs!r}")
        if not (self.lr > 0 and self.weight_decay >= 0 and self.warmup >= 0 and self.clip > 0):
            raise InputError("lr and clip must be > 0, weight_decay and warmup >= 0")
        if self.margin_weight < 0 or self.distill_weight < 0:
            raise InputError("loss weights must be >= 0")
        if self.patience is not None and self.patience < 1:
            raise InputError(f"patience must be >= 1 (validations), got {self.patience}")


@dataclass
class FinetuneResult:
    """What :func:`finetune` did.

    Attributes:
        heads_file: the exit-heads file written.
        heads: ``{exit: Head}`` (bound to the model, eval mode): the best head of each exit
            when validating, else the last.
        steps: optimiser steps done (fewer than configured after an early stop).
        losses: the loss of each step run by this call.
        validation: ``[{"step": s, "accuracy": {exit: %}}, ...]``; step 0 is the shared
            (training-free) head's.
        seconds: wall time of this call.
        skipped_images: unusable training images skipped (``skip_corrupt``).
        record: the run's JSON record beside the heads file.
        rank: this process's rank under torchrun (rank 0 writes the files and validates).
    """

    heads_file: Path
    heads: dict[int, Head]
    steps: int
    losses: list[float]
    validation: list[dict[str, Any]]
    seconds: float
    skipped_images: int
    record: Path
    rank: int = 0


# --------------------------------------------------------------------------------------
# the frozen pass and the trainable part
# --------------------------------------------------------------------------------------


def frozen_exit_tokens(
    model: VisionTransformer,
    x: Tensor,
    exits: Sequence[int],
    *,
    final: bool = False,
    rt: Runtime | None = None,
) -> tuple[dict[int, Tensor], Tensor | None]:
    """The tokens of every exit from one frozen pass (no graph), and the final embedding.

    Args:
        model: the backbone (in eval mode for fine-tuning).
        x: (B, 3, H, W) normalised images.
        exits: sorted distinct 1-based exits.
        final: also run to the last block and return the model's own embedding there
            (the self-distillation target), through the checkpoint's shared head.
        rt: device and autocast (:func:`vitfree.runtime.runtime`); None: no autocast.

    Returns:
        ``({exit: (B, N, D) tokens}, (B, F) final embedding or None)``; the blocks up to the
        deepest exit (the last with ``final``) run once.
    """
    ctx = rt.autocast() if rt is not None else contextlib.nullcontext()
    with torch.no_grad(), ctx:
        t = model.embed(x)
        tokens: dict[int, Tensor] = {}
        done = 0
        for k in exits:
            t = model.run_blocks(t, done, k)
            tokens[k] = t
            done = k
        target = None
        if final:
            t = model.run_blocks(t, done, model.depth)
            target = model.forward_head(t).float()
    return tokens, target


class ExitHeadTrainer(nn.Module):
    """The trainable part: a head per exit and, for margin losses, a classifier per exit.

    ``forward(tokens, labels, target)`` returns the loss (summed over exits, so each head's
    gradient does not depend on how many exits train with it) and per-exit statistics.

    Args:
        heads: ``{exit: Head}`` (started from the checkpoint head: :meth:`Head.start`).
        config: the run (loss, weights, scale, margin).
        classes: identities of the training set (needed by margin losses).
        seed: seeds each exit's classifier by ``(seed, exit)`` (so an exit trains the same
            whichever other exits train with it); None: the global RNG as it is.
    """

    def __init__(self, heads: Mapping[int, Head], config: FinetuneConfig,
                 classes: int | None, seed: int | None = None) -> None:  # fmt: skip
        super().__init__()
        self.exits = sorted(int(k) for k in heads)
        self.heads = nn.ModuleDict({str(k): heads[k] for k in self.exits})
        self.margin_kind = config.margin_kind()
        self.distill = config.distills()
        self.margin_weight = float(config.margin_weight)
        self.distill_weight = float(config.distill_weight)
        self.classifiers = nn.ModuleDict()
        if self.margin_kind is not None:
            if classes is None:
                raise InputError(f"loss {config.loss!r} needs labelled data with a class count")
            for k in self.exits:
                f = _num_features(heads[k])
                with _seeded(None if seed is None else _exit_seed(seed, k, 1)):
                    self.classifiers[str(k)] = MarginHead(f, classes, self.margin_kind,
                                                          config.scale, config.margin)  # fmt: skip

    def exit_parameters(self, k: int) -> list[nn.Parameter]:
        """The parameters trained for exit ``k`` (its head and classifier)."""
        ps = list(self.heads[str(k)].parameters())
        if str(k) in self.classifiers:
            ps += list(self.classifiers[str(k)].parameters())
        return ps

    def forward(self, tokens: Mapping[int, Tensor], labels: Tensor | None,
                target: Tensor | None) -> tuple[Tensor, dict[int, Tensor]]:  # fmt: skip
        """Loss of every exit from its tokens.

        Args:
            tokens: ``{exit: (B, N, D)}`` from :func:`frozen_exit_tokens`.
            labels: (B,) int64 class indices (margin losses).
            target: (B, F) final embedding (self-distillation).

        Returns:
            ``(loss, {exit: (2,) detached [loss, metric]})``: the metric is the training
            accuracy of the classifier (margin losses) or the mean cosine to the target.
        """
        total: Tensor | None = None
        stats: dict[int, Tensor] = {}
        for k in self.exits:
            emb = self.heads[str(k)](tokens[k])
            loss_k = emb.new_zeros(())
            metric = emb.new_zeros(())
            if self.margin_kind is not None:
                if labels is None:
                    raise InputError("a margin loss needs labels")
                clf: MarginHead = self.classifiers[str(k)]  # type: ignore[assignment]
                loss_k = loss_k + self.margin_weight * clf(emb, labels)
                with torch.no_grad():
                    cos = nn.functional.linear(nn.functional.normalize(emb.float()),
                                               nn.functional.normalize(clf.weight))  # fmt: skip
                    metric = (cos.argmax(1) == labels).float().mean()
            if self.distill:
                if target is None:
                    raise InputError("self-distillation needs the final embedding")
                cos_t = nn.functional.cosine_similarity(emb.float(), target, dim=1)
                loss_k = loss_k + self.distill_weight * (1 - cos_t).mean()
                if self.margin_kind is None:
                    metric = cos_t.detach().mean()
            total = loss_k if total is None else total + loss_k
            stats[k] = torch.stack([loss_k.detach(), metric.detach()])
        assert total is not None
        return total, stats


def _exit_seed(seed: int, exit: int, part: int) -> int:
    """The seed of one exit's initialisation: a function of ``(seed, exit, part)`` only."""
    return int(np.random.SeedSequence([seed, exit, part]).generate_state(1)[0])


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """torch's global RNG seeded inside, restored after (the caller's stream is untouched)."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _num_features(head: Head) -> int:
    feature = getattr(head, "feature", None)
    if isinstance(feature, nn.Sequential) and isinstance(feature[-1], nn.BatchNorm1d):
        return int(feature[-1].num_features)
    raise InputError(f"cannot tell the embedding size of a {head.kind!r} head")


def training_step(
    model: VisionTransformer,
    trainer: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: Tensor,
    labels: Tensor | None = None,
    *,
    rt: Runtime | None = None,
    clip: float = 5.0,
) -> tuple[float, dict[int, Tensor]]:
    """One optimiser step on one batch: frozen pass, every head's loss, backward, AdamW step.

    Args:
        model: the frozen backbone (eval mode, ``requires_grad`` off).
        trainer: an :class:`ExitHeadTrainer` (or DDP around one).
        images: (B, 3, H, W) normalised images on the model's device.
        labels: (B,) int64 (margin losses).
        clip: gradient-norm limit per exit.

    Returns:
        ``(loss, {exit: [loss, metric]})``.
    """
    inner = cast(ExitHeadTrainer, getattr(trainer, "module", trainer))
    tokens, target = frozen_exit_tokens(model, images, inner.exits, final=inner.distill, rt=rt)
    optimizer.zero_grad(set_to_none=True)
    loss, stats = trainer(tokens, labels, target)
    loss.backward()
    for k in inner.exits:
        nn.utils.clip_grad_norm_(inner.exit_parameters(k), clip)
    optimizer.step()
    return float(loss.detach()), stats


# --------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------


class _CheckedFaces(Dataset):  # type: ignore[type-arg]
    """Items ``(uint8 (112, 112, 3), int label, problem)`` of a face Dataset, checked.

    An unusable image gives label -1 and the problem (the main process stops naming it, or
    skips and counts it); a label that is not an integer in ``0..classes-1`` gives -2 (always
    an error).  Errors travel as text, so the message is one line, not a worker traceback.
    """

    def __init__(self, ds: Any, classes: int | None) -> None:
        self.ds, self.classes = ds, classes

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int, str]:
        from vitfree.data.images import DamagedImageError

        blank = np.zeros((112, 112, 3), np.uint8)
        try:
            img, label = self.ds[i]
        except (DamagedImageError, InputError, OSError) as e:  # what skip_corrupt skips
            return blank, -1, str(e)
        except VitfreeError as e:
            return blank, -2, str(e)
        img = np.asarray(img)
        if img.dtype != np.uint8 or img.shape != (112, 112, 3):
            return blank, -1, (f"training item {i}: expected an aligned uint8 (112, 112, 3) RGB "
                               f"face, got {img.dtype} {img.shape}")  # fmt: skip
        value = label
        if isinstance(label, Tensor) and label.numel() == 1:
            value = label.item()
        elif isinstance(label, np.ndarray) and label.size == 1:
            value = label.item()
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            if isinstance(value, (float, np.floating)) and float(value).is_integer():
                value = int(value)
            else:
                return blank, -2, f"training item {i}: label {label!r} is not an integer class index"
        value = int(value)
        if value < 0 or (self.classes is not None and value >= self.classes):
            return blank, -2, (f"training item {i}: label {value} is outside 0..{self.classes} "
                               f"(the data set's classes)")  # fmt: skip
        return np.ascontiguousarray(img), value, ""


class _StepBatches(Sampler[list[int]]):
    """Indices of micro-batches ``start..stop-1``: epoch-wise permutations, a pure function of
    ``(seed, micro-batch)``, so a resumed run reads exactly what an uninterrupted one would.

    Micro-batch ``b`` of rank ``r`` takes positions ``((b * world + r) * B ..) + B`` of the
    endless sequence ``perm(epoch 0), perm(epoch 1), ...`` (each a permutation of the data
    set by ``default_rng([seed, epoch])``).
    """

    def __init__(self, n: int, batch: int, seed: int, rank: int, world: int, start: int,
                 stop: int) -> None:  # fmt: skip
        self.n, self.batch, self.seed, self.rank, self.world = n, batch, seed, rank, world
        self.start, self.stop = start, stop
        self._perm: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def _permutation(self, epoch: int) -> np.ndarray:
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, 0xE9, epoch]).permutation(self.n))
        return self._perm[1]

    def __iter__(self) -> Iterator[list[int]]:
        for b in range(self.start, self.stop):
            pos = (b * self.world + self.rank) * self.batch + np.arange(self.batch)
            out = [int(self._permutation(int(p // self.n))[p % self.n]) for p in pos]
            yield out


class _SynthBatches(Dataset):  # type: ignore[type-arg]
    """Micro-batch ``b`` of synthetic faces, rendered on demand: a pure function of
    ``(seed, rank, b)`` (identities drawn from ``0..identities-1`` of ``synth_seed``)."""

    def __init__(self, cfg: FinetuneConfig, rank: int, total: int) -> None:
        self.identities, self.synth_seed, self.preset = cfg.identities, cfg.synth_seed, cfg.preset
        self.batch, self.seed, self.rank, self.total = cfg.batch_size, cfg.seed, rank, total

    def __len__(self) -> int:
        return self.total

    def __getitem__(self, b: int) -> tuple[Tensor, Tensor, list[str]]:
        from vitfree.synthetic.faces import aligned_faces

        rng = np.random.default_rng([self.seed, 0x5A, self.rank, int(b)])
        ids = rng.integers(0, self.identities, self.batch)
        faces = aligned_faces(ids, seed=self.synth_seed, preset=self.preset,
                              image_seed=int(rng.integers(0, 2**62)))  # fmt: skip
        return torch.from_numpy(faces), torch.from_numpy(ids.astype(np.int64)), [""] * self.batch


@dataclass
class _Data:
    dataset: Any  # a map-style dataset of checked items, or None for synth
    classes: int | None
    size: int | None
    description: dict[str, Any]


def _open_data(data: Any, cfg: FinetuneConfig) -> _Data:
    """The training data of ``data``: "synth", an image folder, a .rec file, or a Dataset."""
    classes: int | None
    if isinstance(data, str) and data == "synth" and not Path(data).exists():
        desc = {"kind": "synth", "identities": cfg.identities, "synth_seed": cfg.synth_seed,
                "preset": cfg.preset, "synthetic": True}  # fmt: skip
        return _Data(None, cfg.identities, None, desc)
    if isinstance(data, (str, os.PathLike)):
        p = Path(data)
        # skipping unusable images is done (and counted) here, uniformly for both kinds
        ds, kind = open_faces(p)
        classes = int(ds.classes)
        synthetic = (p / "SYNTHETIC.txt").is_file() or (p.parent / "SYNTHETIC.txt").is_file()
        desc = {"kind": kind, "path": str(p), "images": len(ds), "identities": classes,
                "synthetic": synthetic}  # fmt: skip
    elif isinstance(data, Dataset) or hasattr(data, "__getitem__"):
        ds = data
        n_cls = getattr(data, "num_classes", getattr(data, "classes", None))
        classes = int(n_cls) if isinstance(n_cls, (int, np.integer)) else None
        desc = {"kind": "dataset", "type": type(data).__name__, "images": len(ds),
                "identities": classes, "synthetic": None}  # fmt: skip
    else:
        raise InputError(f"data must be 'synth', an image folder, a train.rec file or a "
                         f"Dataset, got {type(data).__name__}")  # fmt: skip
    n = len(ds)
    where = desc.get("path", desc.get("type"))
    if n == 0:
        raise InputError(f"the training set {where} is empty (no images)")
    if cfg.margin_kind() is not None:
        if classes is None:
            raise InputError(f"loss {cfg.loss!r} needs the number of identities: give the "
                             f"Dataset a num_classes attribute, or use loss='distill'")  # fmt: skip
        if classes < 2:
            raise InputError(f"the training set {where} has {classes} identity; a margin loss "
                             f"needs at least 2 (or use loss='distill', which needs no labels)")
    return _Data(_CheckedFaces(ds, classes), classes, n, desc)


# --------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------


class PairValidation:
    """A verification set checked during fine-tuning: 10-fold accuracy at every exit.

    Args:
        spec: ``"synth"`` (``pairs`` SYNTHETIC pairs of identities of ``seed``, half genuine,
            as ``vitfree synth bin`` writes them) or a ``.bin`` file.
        pairs, seed, preset: the synthetic pairs.
    """

    def __init__(self, spec: str | os.PathLike[str], pairs: int = 300, seed: int = 7,
                 preset: str = "medium") -> None:  # fmt: skip
        if str(spec) == "synth" and not Path(spec).exists():
            from vitfree.synthetic.sets import pair_faces

            self.images, self.issame = pair_faces(pairs, seed, preset, None)
            self.name = f"SYNTHETIC pairs (seed {seed}, {pairs} pairs, {preset})"
        else:
            from vitfree.data import load_bin

            ps = load_bin(spec)
            self.images, self.issame = ps.images, np.asarray(ps.issame, bool)
            self.name = str(spec)
        if len(self.issame) < 10:
            raise InputError(f"validation set {self.name} has {len(self.issame)} pairs; "
                             f"10-fold accuracy needs at least 10")  # fmt: skip

    def accuracy(self, model: VisionTransformer, exits: Sequence[int],
                 heads: Mapping[int, nn.Module] | None, *, batch_size: int = 64,
                 rt: Runtime | None = None) -> dict[int, float]:  # fmt: skip
        """10-fold accuracy (%) per exit with ``heads`` (None: the shared head); image + flip."""
        from vitfree.metrics import kfold_accuracy

        device = model.pos_embed.device
        sums: dict[int, list[np.ndarray]] = {k: [] for k in exits}
        for i in range(0, len(self.images), batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(self.images[i : i + batch_size]))
            both = torch.cat([chunk, chunk.flip(2)]).to(device)
            tokens, _ = frozen_exit_tokens(model, preprocess(both), exits, rt=rt)
            with torch.no_grad():
                for k in exits:
                    h = heads[k] if heads is not None else model.forward_head
                    e = h(tokens[k]).float()
                    a, b = e.chunk(2)
                    sums[k].append((a + b).cpu().numpy())
        out = {}
        for k in exits:
            emb = np.concatenate(sums[k])
            out[k] = 100.0 * kfold_accuracy(emb[0::2], emb[1::2], self.issame).mean
        return out


# --------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------


def _lr(step: int, cfg: FinetuneConfig, total: int) -> float:
    """Linear warm-up over ``min(warmup, total - 1)`` steps, then cosine decay to 0."""
    warmup = min(cfg.warmup, max(total - 1, 0))
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def _paths(out: Path) -> tuple[Path, Path]:
    stem = out.with_suffix("") if out.suffix else out
    return Path(f"{stem}.json"), Path(f"{stem}.ckpt.pt")


def _broadcast(flag: bool, world: int, device: torch.device) -> bool:
    if world <= 1:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1 if flag else 0], device=device)
    dist.broadcast(t, 0)
    return bool(t.item())


def finetune(
    model: VisionTransformer,
    data: Any,
    exits: Sequence[int],
    out: str | os.PathLike[str],
    config: FinetuneConfig | None = None,
    *,
    resume: bool = False,
    device: Any = "auto",
    progress: bool = True,
    command: str | None = None,
    model_path: str | os.PathLike[str] | None = None,
    stop_after: int | None = None,
) -> FinetuneResult:
    """Fine-tune one head per exit with the backbone frozen; write an exit-heads file.

    Args:
        model: the face ViT (:func:`vitfree.models.load`); moved to ``device``, put in eval
            mode and frozen while training (its ``requires_grad`` flags are restored after);
            its weights are not changed, and no head is installed in it.
        data: ``"synth"`` (faces rendered on the fly), an image folder (one sub-folder per
            identity), an insightface ``train.rec`` (or its folder), or a Dataset of
            ``(uint8 (112, 112, 3) RGB, int label)`` (with ``num_classes`` for margin losses).
        exits: 1-based exits (negative from the end) that get a head.
        out: the exit-heads file (``.pt`` or ``.safetensors``); ``<stem>.json`` (the run) and
            ``<stem>.ckpt.pt`` (the checkpoint) are written beside it.
        config: the run (:class:`FinetuneConfig`; default settings when None).
        resume: continue from the checkpoint beside ``out`` (same config, data, exits and
            backbone, else :class:`InputError`).
        device: see :func:`vitfree.runtime.resolve_device`.
        progress: a progress bar with the loss and per-exit training accuracy.
        command: the command line recorded (default: this process's).
        model_path: the checkpoint file, recorded.
        stop_after: stop (as if interrupted) once this many steps are done, after saving a
            checkpoint: for tests of ``resume``.

    Returns:
        :class:`FinetuneResult`.

    Raises:
        InputError: an exit out of range, an empty or single-identity training set (margin
            losses), labels that are not integers, an unusable image (named) without
            ``skip_corrupt``, a checkpoint of another run.
    """
    from tqdm.auto import tqdm

    cfg = config or FinetuneConfig()
    cfg.check()
    t0 = time.perf_counter()
    if not isinstance(model, VisionTransformer):
        raise InputError(f"model must be a vitfree VisionTransformer, got {type(model).__name__}")
    if isinstance(exits, (str, bytes)) or not isinstance(exits, Sequence) or not exits:
        raise InputError(f"exits must be a non-empty sequence of integers, got {exits!r}")
    wanted = sorted(set(model.resolve_exits(list(exits))))
    from vitfree.models import head_kinds

    if cfg.head not in head_kinds():
        raise InputError(f"unknown head kind {cfg.head!r}; known: {', '.join(head_kinds())}")
    out_path = Path(out)
    if out_path.is_dir():
        raise InputError(f"out {out_path} is a folder; give the heads file (e.g. heads.pt)")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    record_path, ckpt_path = _paths(out_path)
    rt = runtime(device, cfg.amp)
    ctx = dist_setup(rt.device, None)
    train_data = _open_data(data, cfg)
    per_step = cfg.batch_size * cfg.accum * ctx.world
    if cfg.epochs is not None:
        if train_data.size is None:
            raise InputError("epochs need a finite training set; give steps for data='synth'")
        total = max(1, math.ceil(cfg.epochs * train_data.size / per_step))
    else:
        assert cfg.steps is not None
        total = cfg.steps
    val = PairValidation(cfg.val, cfg.val_pairs, cfg.val_seed, cfg.preset) if cfg.val else None
    if val is not None and cfg.val == "synth" and train_data.description["kind"] == "synth":
        if cfg.val_seed == cfg.synth_seed:
            raise InputError(f"val_seed {cfg.val_seed} equals synth_seed: validation pairs "
                             f"would show the training identities")  # fmt: skip

    model.to(rt.device)
    was_training = model.training
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    model.eval()
    model.requires_grad_(False)
    fingerprint = backbone_fingerprint(model)
    heads: dict[int, Head] = {}
    for k in wanted:  # each exit seeded by (seed, exit): it trains alike with any other exits
        with _seeded(_exit_seed(cfg.seed, k, 0)):
            heads[k] = Head.start(model, cfg.head, **cfg.head_options)
    trainer = ExitHeadTrainer(heads, cfg, train_data.classes, cfg.seed).to(rt.device)
    opt = torch.optim.AdamW(trainer.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda") if cfg.amp == "fp16" else None
    run_key = {"config": dataclasses.asdict(cfg), "exits": wanted, "backbone": fingerprint,
               "data": train_data.description, "world": ctx.world, "steps": total}  # fmt: skip
    step = 0
    losses: list[float] = []
    history: list[dict[str, Any]] = []
    best: dict[int, float] = {}
    best_state: dict[int, dict[str, Tensor]] = {}
    stale = 0
    skipped = 0
    stopped_early: int | None = None
    if resume and ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location=rt.device, weights_only=True)
        if json.loads(state["run"]) != json.loads(json.dumps(run_key)):
            raise InputError(f"{ckpt_path} was written by another run (config, data, exits or "
                             f"backbone differ); use another out, or drop resume")  # fmt: skip
        trainer.load_state_dict(state["trainer"])
        opt.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        step = int(state["step"])
        history = [{**h, "accuracy": {int(k): v for k, v in h["accuracy"].items()}}
                   for h in json.loads(state["history"])]  # fmt: skip
        best = {int(k): float(v) for k, v in json.loads(state["best"]).items()}
        best_state = {int(k): v for k, v in state["best_state"].items()}
        stale, skipped = int(state["stale"]), int(state["skipped"])
        stopped_early = state["stopped_early"] if state["stopped_early"] >= 0 else None
        log.info("resuming %s at step %d of %d", out_path, step, total)
    net: nn.Module = trainer
    if ctx.world > 1:
        ids = [rt.device.index] if rt.device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(trainer, device_ids=ids)

    def save_checkpoint() -> None:
        if ctx.rank != 0:
            return
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save({"trainer": trainer.state_dict(), "optimizer": opt.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else {},
                    "step": step, "run": json.dumps(run_key), "history": json.dumps(history),
                    "best": json.dumps({str(k): v for k, v in best.items()}),
                    "best_state": {str(k): v for k, v in best_state.items()}, "stale": stale,
                    "skipped": skipped,
                    "stopped_early": -1 if stopped_early is None else stopped_early}, tmp)  # fmt: skip
        os.replace(tmp, ckpt_path)

    def validate() -> None:
        nonlocal stale
        assert val is not None
        if ctx.rank != 0:
            return  # rank 0 validates; its early-stop decision is broadcast
        trainer.eval()
        if not history:
            # the training-free exits first; every head starts equal to them (Head.start), so
            # they are also the starting heads' scores, and the starting heads the first best
            base = val.accuracy(model, wanted, None, batch_size=cfg.batch_size, rt=rt)
            history.append({"step": 0, "shared": True, "accuracy": base})
            for k in wanted:
                best[k] = base[k]
                best_state[k] = {n: t.detach().clone() for n, t in trainer.heads[str(k)].state_dict().items()}
            trainer.train()
            log.info("%s, training-free exits: %s", val.name,
                     ", ".join(f"exit {k} {base[k]:.1f}%" for k in wanted))  # fmt: skip
            return
        acc = val.accuracy(model, wanted, {k: trainer.heads[str(k)] for k in wanted},
                           batch_size=cfg.batch_size, rt=rt)  # fmt: skip
        trainer.train()
        history.append({"step": step, "accuracy": acc})
        improved = False
        for k in wanted:
            if acc[k] > best.get(k, -1.0):
                best[k] = acc[k]
                best_state[k] = {n: t.detach().clone() for n, t in trainer.heads[str(k)].state_dict().items()}
                improved = True
        stale = 0 if improved else stale + 1
        shared = history[0]["accuracy"]
        log.info("step %d, %s: %s", step, val.name, ", ".join(
            f"exit {k} {acc[k]:.1f}% (shared {shared[k]:.1f}%)" for k in wanted))  # fmt: skip

    workers = default_workers(ctx.world) if cfg.workers is None else cfg.workers
    mp = worker_context() if workers else None
    start_b, stop_b = step * cfg.accum, total * cfg.accum
    loader: Any
    if train_data.dataset is None:
        synth = _SynthBatches(cfg, ctx.rank, stop_b)
        loader = DataLoader(synth, batch_size=None, sampler=range(start_b, stop_b),
                            num_workers=workers, multiprocessing_context=mp)  # fmt: skip
    else:
        assert train_data.size is not None
        sampler = _StepBatches(train_data.size, cfg.batch_size, cfg.seed, ctx.rank, ctx.world,
                               start_b, stop_b)  # fmt: skip
        loader = DataLoader(train_data.dataset, batch_sampler=sampler, num_workers=workers,
                            multiprocessing_context=mp)  # fmt: skip
    bar = tqdm(total=total, initial=step, desc=f"finetune {cfg.head} heads",
               disable=not progress or ctx.rank != 0, dynamic_ncols=True)  # fmt: skip
    metric_name = "acc" if cfg.margin_kind() is not None else "cos"
    running: dict[int, float] = {}
    trainer.train()
    it = iter(loader)
    done_now = 0
    try:
        if val is not None and not history and step == 0:
            validate()
        while step < total and stopped_early is None:
            lr = _lr(step, cfg, total)
            for g in opt.param_groups:
                g["lr"] = lr
            opt.zero_grad(set_to_none=True)
            step_loss = 0.0
            step_stats: dict[int, Tensor] = {}
            for micro in range(cfg.accum):
                b = step * cfg.accum + micro
                imgs, labels, problems = next(it)
                labels = torch.as_tensor(labels, dtype=torch.int64)
                bad = labels < 0
                if bool(bad.any()):
                    rows = bad.nonzero().flatten().tolist()
                    fatal = [problems[r] for r in rows if int(labels[r]) == -2]
                    if fatal:
                        raise InputError(fatal[0])
                    if not cfg.skip_corrupt:
                        raise InputError(f"{problems[rows[0]]} (skip_corrupt / --skip-corrupt "
                                         f"skips and counts unusable images)")  # fmt: skip
                    skipped += len(rows)
                    log.warning("skipped %d unusable training image(s) so far: %s", skipped,
                                problems[rows[0]])  # fmt: skip
                    keep = ~bad
                    imgs, labels = imgs[keep], labels[keep]
                    if labels.numel() == 0:
                        continue
                if cfg.flip:
                    flip_rng = np.random.default_rng([cfg.seed, 0xF1, ctx.rank, b])
                    flip = torch.from_numpy(flip_rng.random(imgs.shape[0]) < 0.5)
                    imgs = torch.where(flip[:, None, None, None], imgs.flip(2), imgs)
                x = preprocess(imgs.to(rt.device))
                y = labels.to(rt.device)
                tokens, target = frozen_exit_tokens(model, x, wanted, final=trainer.distill, rt=rt)
                sync = ctx.world > 1 and micro < cfg.accum - 1
                with net.no_sync() if sync else contextlib.nullcontext():  # type: ignore[operator]
                    loss, stats = net(tokens, y, target)
                    scaled = loss / cfg.accum
                    if scaler is not None:
                        scaler.scale(scaled).backward()
                    else:
                        scaled.backward()
                step_loss += float(loss.detach()) / cfg.accum
                for k, s in stats.items():
                    step_stats[k] = step_stats.get(k, 0) + s / cfg.accum
            if scaler is not None:
                scaler.unscale_(opt)
            for k in wanted:
                nn.utils.clip_grad_norm_(trainer.exit_parameters(k), cfg.clip)
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            step += 1
            done_now += 1
            losses.append(step_loss)
            for k, s in step_stats.items():
                m = float(s[1])
                running[k] = m if k not in running else 0.9 * running[k] + 0.1 * m
            bar.update(1)
            post = {"loss": f"{step_loss:.3f}", "lr": f"{lr:.1e}"}
            post.update({f"{metric_name}{k}": f"{v:.2f}" for k, v in running.items()})
            bar.set_postfix(post, refresh=False)
            if val is not None and (step % cfg.val_every == 0 or step == total):
                validate()
                if cfg.patience is not None and _broadcast(stale >= cfg.patience, ctx.world, rt.device):
                    stopped_early = step
                    log.info("early stop at step %d: no exit improved in %d validations",
                             step, cfg.patience)  # fmt: skip
            if step % cfg.save_every == 0 or step == total or stopped_early is not None:
                save_checkpoint()
            if stop_after is not None and step >= stop_after and step < total:
                save_checkpoint()
                break
    finally:
        bar.close()
        for n, p in model.named_parameters():
            p.requires_grad_(flags.get(n, True))
        model.train(was_training)

    finished = step >= total or stopped_early is not None
    seconds = time.perf_counter() - t0
    final_heads: dict[int, Head] = {}
    for k in wanted:
        head: Head = trainer.heads[str(k)]  # type: ignore[assignment]
        if k in best_state:
            head.load_state_dict(best_state[k])
        head.eval()
        final_heads[k] = head
    info = {
        "format": "vitfree.finetune",
        "exits": wanted,
        "kind": cfg.head,
        "head_options": dict(final_heads[wanted[0]].options()),
        "loss": {"name": cfg.loss, "margin": cfg.margin_kind(), "distill": cfg.distills(),
                 "scale": cfg.scale, "margin_value": cfg.margin,
                 "margin_weight": cfg.margin_weight, "distill_weight": cfg.distill_weight},
        "data": train_data.description,
        "synthetic": bool(train_data.description.get("synthetic")),
        "steps": step,
        "complete": finished,
        "stopped_early": stopped_early,
        "skipped_images": skipped,
        "config": dataclasses.asdict(cfg),
        "command": command or command_line(),
        "model": str(model_path) if model_path is not None else (model.arch or model.config.describe()),
        "validation": {"set": val.name, "history": history, "best": {str(k): v for k, v in best.items()}}
        if val is not None else None,
        "seconds": seconds,
        "device": str(rt.device),
        "world": ctx.world,
    }  # fmt: skip
    if ctx.rank == 0:
        save_exit_heads(out_path, final_heads, backbone=fingerprint, info=info)
        record = {**info, "heads_file": str(out_path), "losses": losses,
                  "final_loss": float(np.mean(losses[-20:])) if losses else None}  # fmt: skip
        record_path.write_text(json.dumps(record, indent=2))
        log.info("wrote %s (%s heads at exits %s) after %d steps in %.0f s%s", out_path, cfg.head,
                 wanted, step, seconds, "" if finished else " (interrupted: resume to finish)")
    ctx.barrier()
    ctx.close()
    return FinetuneResult(out_path, final_heads, step, losses, history, seconds, skipped, record_path,
                          ctx.rank)  # fmt: skip
