"""Feature extraction at every requested exit: IJB-B/C crops into a feature store, ``.bin`` sets
into memory.  This module is the DataLoader loop and the sharding around it; the faces come
from :mod:`vitfree.faces`, the model runs in :mod:`vitfree.inference`, the files belong to
:mod:`vitfree.store`, device/precision/torchrun to :mod:`vitfree.runtime`.

:func:`extract_ijb` writes the feature-store layout of :mod:`vitfree.store`::

    OUT/manifest.json      exits, n_images, dim, model, costs, done row ranges, skipped rows
    OUT/exit_04.npy        (N, 512) float32, image i of face_tid_mid.txt in row i
    OUT/exit_04_flip.npy   (N, 512) float32, its horizontal flip
    ...

How it works, and why:

* Decoding and alignment run in DataLoader worker processes (:class:`vitfree.faces.IJBCrops`,
  uint8 tensors, so a batch costs a quarter of the float32 inter-process traffic); the main
  process runs image and flip as one batch of 2B (:func:`vitfree.inference.embed_batch`):
  one pass up to the deepest exit gives every requested exit.
* Features go straight into memory-mapped ``.npy`` files (``np.lib.format.open_memmap``), so
  IJB-C at five exits (5 x 2 x 469,375 x 512 float32 = 9.6 GB) never sits in memory.
* Resume: ``manifest.json`` records the completed row ranges.  Every ``save_every`` seconds
  (and when the run ends, also by an exception or Ctrl-C) the memory maps are flushed first and
  the manifest is then replaced atomically (:meth:`vitfree.store.FeatureStore.save`), so a row
  listed as done is on disk even after a hard kill; rows after the last save are recomputed.
  A restart skips the done rows, and refuses to resume when the model (weights fingerprint,
  architecture), the exits, the image list or the precision differ.
* Distributed (``torchrun --nproc_per_node N``; gloo on CPU, nccl on GPU): the pending rows are
  split among the ranks, each rank extracts its shard into its own partial files under
  ``OUT/partial-w{N}-{shard}/rank{r}/`` (resumable the same way), and after a barrier rank 0
  copies them into the final per-exit files in row order.  Contiguous shards are cut at
  multiples of the batch size, so every rank forms exactly the batches a single process would,
  and the features are bit-identical to a single-process run on the same device.  ``OUT`` must
  be a folder every rank can see (a shared file system across nodes).
* Bad images are found before any compute: a pre-flight pass (:meth:`IJBCrops.check`)
  reads the head and tail of every pending file and checks every landmark line against its
  image, and stops the run naming every missing, empty, truncated or non-image file and every
  landmark line that cannot give a face.  Decoding is strict (a JPEG that libjpeg can only
  partly decode is an error, in the worker that decodes it), so damage that the pre-flight
  cannot see stops the run there, naming the file; the rows done are kept.
  ``skip_bad=True`` writes zero features for unusable images instead (so they add nothing to
  their template; a template with only bad images then has no feature and the evaluation
  names it) and lists them, with what is wrong, in the manifest; ``use_damaged=True`` uses
  truncated or damaged files as far as they decode (what the community scripts do) and lists
  them too.

Rejected: one process writing while others send features through ``torch.distributed``
(gather) -- it needs every rank's features in memory or a protocol of its own, while partial
files are resumable per rank for free; ranks writing directly into the shared final files --
concurrent writes to one memory-mapped file are not safe on network file systems.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from vitfree._logging import get_logger
from vitfree.data.ijb import IJBMeta, load_ijb_meta
from vitfree.data.images import USABLE_DAMAGE
from vitfree.errors import IJBFormatError, InputError, StoreError
from vitfree.faces import ArrayFaces, FaceBatch, IJBCrops, face_batches
from vitfree.inference import check_face_model, embed_batch
from vitfree.models import VisionTransformer, exit_cost_records
from vitfree.models.onnx import OnnxModel
from vitfree.reproduce import FaceInput
from vitfree.runtime import Dist, Runtime, default_workers, dist_setup, runtime
from vitfree.store import (
    FEATURE_FORMAT,
    FeatureStore,
    Manifest,
    StoreLock,
    assemble,
    check_resumable,
)

__all__ = [
    "FEATURE_FORMAT",
    "ExtractResult",
    "extract_bin",
    "extract_ijb",
]

log = get_logger(__name__)


def __getattr__(name: str) -> Any:
    # Names that lived here before the redesign, re-exported from their new places.  The
    # evaluation ones are imported lazily: extraction itself does not depend on evaluation.
    if name in ("evaluate_pairset", "PairSetResult"):
        import vitfree.pipelines as pipelines

        return getattr(pipelines, name)
    moved = {
        "resolve_device": "vitfree.runtime",
        "_default_workers": "vitfree.runtime:default_workers",
        "measure_speed": "vitfree.models",
        "exit_cost_table": "vitfree.models",
        "model_fingerprint": "vitfree.models",
    }
    if name in moved:
        import importlib

        mod, _, attr = moved[name].partition(":")
        return getattr(importlib.import_module(mod), attr or name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclasses.dataclass
class ExtractResult:
    """What :func:`extract_ijb` did.

    Attributes:
        out: the feature store folder.
        exits: the exits extracted (sorted, 1-based).
        n_images: rows of each feature file.
        dim: embedding size.
        complete: every row is done (False after ``max_batches`` or in a partial run).
        extracted: images extracted by this call (this rank's share under torchrun).
        resumed: images found done at the start (of this rank's shard).
        skipped_rows: meta rows whose image could not be used (all ranks), zero features.
        damaged_rows: meta rows whose damaged image was used as decoded (``use_damaged``).
        problems: ``{row: what is wrong}`` of the skipped and damaged rows.
        seconds: wall time of the extraction loop in this process.
        rank, world_size: this process in a distributed run (0, 1 otherwise).
    """

    out: Path
    exits: list[int]
    n_images: int
    dim: int
    complete: bool
    extracted: int
    resumed: int
    skipped_rows: list[int]
    seconds: float
    rank: int = 0
    world_size: int = 1
    damaged_rows: list[int] = dataclasses.field(default_factory=list)
    problems: dict[int, str] = dataclasses.field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        """Images (each with its flip) per second in this process."""
        return self.extracted / self.seconds if self.seconds > 0 else float("nan")


def _images_digest(meta: IJBMeta) -> str:
    h = hashlib.sha256()
    h.update("\n".join(map(str, meta.names)).encode())
    h.update(np.ascontiguousarray(meta.landmarks, dtype=np.float32).tobytes())
    return h.hexdigest()[:24]


def _shard(
    pending: npt.NDArray[np.int64], rank: int, world: int, mode: str, batch_size: int
) -> npt.NDArray[np.int64]:
    if mode == "strided":
        return pending[rank::world]
    if mode != "contiguous":
        raise InputError(f"shard must be 'contiguous' or 'strided', got {mode!r}")
    # Cut at multiples of the batch size: every rank then forms the batches a single process
    # would, which keeps the features bit-identical to a single-process run.
    n_batches = -(-pending.size // batch_size)
    per = np.array_split(np.arange(n_batches), world)[rank]
    if per.size == 0:
        return pending[:0]
    return pending[int(per[0]) * batch_size : min((int(per[-1]) + 1) * batch_size, pending.size)]


@dataclasses.dataclass(frozen=True)
class _Loop:
    """How the extraction loop runs: the options that travel from :func:`extract_ijb` to it."""

    batch_size: int
    workers: int
    skip_bad: bool
    use_damaged: bool
    save_every: float
    progress: bool
    max_batches: int | None
    on_batch: Callable[[int], None] | None
    face_input: FaceInput = dataclasses.field(default_factory=FaceInput)


def _bad_image_error(
    crops: IJBCrops, problems: Mapping[int, str], folder: Path, before: bool
) -> Exception:
    """One error naming every unusable image (at most 20 listed), with what to do."""
    rows = sorted(problems)
    lines = [f"  {crops.path(r)} (meta row {r}): {problems[r]}" for r in rows[:20]]
    if len(rows) > 20:
        lines.append(f"  ... and {len(rows) - 20} more")
    when = "found before extraction (nothing was computed)" if before else "found while extracting"
    msg = (
        f"{len(rows)} IJB image{'s' if len(rows) > 1 else ''} cannot be used, {when}:\n"
        + "\n".join(lines)
        + f"\nRerun with skip_bad=True (--skip-bad) to write zero features for them and list "
        f"them in {folder / 'manifest.json'} and results.json"
        + ("; or use_damaged=True (--use-damaged) to use truncated files as far as they "
           "decode, as the community scripts do" if any("truncated" in p for p in problems.values()) else "")
        + ("" if before else "; the rows done so far are kept and skipped on restart")
    )
    all_missing = all(p == "not found" or "not found" in p for p in problems.values())
    return FileNotFoundError(msg) if all_missing else IJBFormatError(msg)


def _run_loader(
    model: VisionTransformer | OnnxModel,
    store: FeatureStore,
    crops: IJBCrops,
    exits: list[int],
    rt: Runtime,
    loop: _Loop,
    desc: str,
    names: npt.NDArray[np.str_],
) -> tuple[int, int]:
    """Extract ``crops`` into ``store``; returns (images extracted, bad images in this run)."""
    from tqdm.auto import tqdm

    n_total = int(store.rows.shape[0])
    bar = tqdm(
        total=n_total,
        initial=int(store.done.sum()),
        desc=desc,
        unit="img",
        dynamic_ncols=True,
        disable=not loop.progress,
    )
    extracted = 0
    bad_now = 0
    batches = 0
    last_save = time.monotonic()
    batches_iter: Generator[FaceBatch, None, None] = face_batches(
        crops, loop.batch_size, num_workers=loop.workers, pin_memory=rt.device.type == "cuda"
    )
    waited = model_s = 0.0
    t_wait = time.perf_counter()
    try:
        for batch in batches_iter:
            waited += time.perf_counter() - t_wait
            rows, ok = batch.rows, batch.ok
            if not ok.all():
                bad = rows[~ok]
                # the worker only said "bad": the main process names what is wrong
                why = {int(r): crops.diagnose(int(r)) or "cannot be used" for r in bad}
                if not loop.skip_bad:
                    raise _bad_image_error(crops, why, store.folder, before=False)
                store.skipped.extend(int(r) for r in bad)
                store.problems.update(why)
                bad_now += int(bad.size)
            if batch.damaged.any():
                for r in rows[batch.damaged]:
                    store.damaged.append(int(r))
                    store.problems.setdefault(int(r), "damaged image, used as decoded")
            b = len(batch)
            t_model = time.perf_counter()
            embs = embed_batch(
                model, batch, exits, rt, lambda r: f"IJB image {crops.path(r)} (meta row {r})",
                scaling=loop.face_input.pixel_scaling,
            )
            model_s += time.perf_counter() - t_model
            feats: dict[int, npt.NDArray[np.float32]] = {}
            flips: dict[int, npt.NDArray[np.float32]] = {}
            for k in exits:
                f, fl = embs[k].feats, embs[k].flips
                if not ok.all():
                    f = f.copy()
                    fl = fl.copy()
                    f[~ok] = 0.0
                    fl[~ok] = 0.0
                feats[k], flips[k] = f, fl
            store.write(store.positions(rows), feats, flips)
            extracted += b
            batches += 1
            bar.update(b)
            if loop.on_batch is not None:
                loop.on_batch(batches)
            if time.monotonic() - last_save >= loop.save_every:
                store.save(names)
                last_save = time.monotonic()
            if loop.max_batches is not None and batches >= loop.max_batches:
                break
            t_wait = time.perf_counter()
    finally:
        bar.close()
        if extracted:
            # which stage bounds the run: the model, or decoding + alignment in the workers
            log.info(
                "%d images: the model ran at %.1f images/s of its own time (%.1f s); it waited "
                "%.1f s for decoding and alignment (%d workers)%s",
                extracted, extracted / max(model_s, 1e-9), model_s, waited, loop.workers,
                " - the workers bound this run: give it more CPUs (--workers)"
                if waited > model_s else "",
            )  # fmt: skip
        batches_iter.close()  # shut the DataLoader workers down now, also after an error
        store.save(names)  # whatever is done stays done, also after an error or Ctrl-C
    return extracted, bad_now


def extract_ijb(
    model: VisionTransformer | OnnxModel,
    root: str | os.PathLike[str] | None,
    out: str | os.PathLike[str],
    *,
    dataset: str = "IJBC",
    meta: IJBMeta | None = None,
    exits: Sequence[int] | None = None,
    batch_size: int = 64,
    num_workers: int | None = None,
    device: str | torch.device | None = None,
    amp: str | None = None,
    skip_bad: bool = False,
    use_damaged: bool = False,
    model_path: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    distributed: bool | None = None,
    shard: str = "contiguous",
    save_every: float = 30.0,
    progress: bool = True,
    max_batches: int | None = None,
    on_batch: Callable[[int], None] | None = None,
    face_input: FaceInput | None = None,
) -> ExtractResult:
    """Extract image and flip features of every IJB-B/C image at the requested exits.

    Writes (or resumes) the feature store ``out`` (layout in :mod:`vitfree.store` and this
    module's docstring); rows follow ``face_tid_mid.txt``.  Under ``torchrun`` every rank
    calls this function with the same arguments; rank 0 assembles the final files.

    Args:
        model: the face ViT (moved to ``device``, put in eval mode).
        root: folder holding ``IJBC/`` (or ``IJBB/``), the dataset folder, or its ``meta``
            folder; may be None when ``meta`` is given.
        out: feature store folder (created).
        dataset: "IJBC" or "IJBB".
        meta: already loaded meta data (skips reading the meta files).
        exits: exits, 1-based (negative from the end); ``None`` = every block.
        batch_size: images per batch (each batch runs 2 x batch_size faces: image + flip).
        num_workers: DataLoader worker processes for decoding and alignment; default
            ``min(4, CPUs / processes)``; 0 decodes in this process.
        device: see :func:`vitfree.runtime.resolve_device` (CUDA when available, else CPU).
        amp: ``"bf16"``/``"fp16"``: autocast on CUDA (attention and head stay float32).
        skip_bad: write zero features for images that cannot be used (missing, empty,
            damaged, landmarks that give no face), list them with what is wrong in the
            manifest and print their count; default: stop with an error naming them (before
            extraction for everything the pre-flight pass finds).
        use_damaged: use truncated or damaged image files as far as they decode (as the
            community scripts do), listed in the manifest, instead of refusing them.
        model_path: the checkpoint file, recorded in the manifest.
        overwrite: discard an existing store in ``out`` instead of resuming it.
        distributed: None = use ``torch.distributed`` when launched by torchrun (WORLD_SIZE
            > 1) or when a process group exists; False = never; True = require it.
        shard: how pending rows are split among ranks: "contiguous" (default; blocks cut at
            batch boundaries, bit-identical to one process) or "strided" (row r to rank
            r mod N).
        save_every: seconds between manifest saves (0 = after every batch).
        progress: show a tqdm progress bar (rank 0 only).
        max_batches: stop after this many batches (for partial runs and tests); the store
            stays resumable.
        on_batch: called with the number of batches done after each batch (a test hook).
        face_input: alignment arithmetic and template, and pixel scaling
            (:class:`vitfree.reproduce.FaceInput`; default: float64 alignment to the
            docs/protocols.md §3.3 template and ``(x/255-0.5)/0.5``; a preset's come from
            :func:`vitfree.reproduce.apply_preset`).  Recorded in the manifest: resuming
            with other settings is refused.  Image and flip features are stored apart, so
            every N/D/F mode can be evaluated from one extraction.

    Returns:
        :class:`ExtractResult`.

    Raises:
        FileNotFoundError: meta files, or (without ``skip_bad``) images, missing: named.
        IJBFormatError: unusable images or landmark lines (without ``skip_bad``), named.
        ValueError: a model not built for 112x112 faces.
        vitfree.errors.StoreError: an existing store in ``out`` made with another model,
            exits, image list or precision (says which differ).
    """
    check_face_model(model)
    rt = runtime(device, amp)
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    if shard not in ("contiguous", "strided"):
        raise InputError(f"shard must be 'contiguous' or 'strided', got {shard!r}")
    wanted = sorted(set(model.resolve_exits(None if exits is None else list(exits))))
    if meta is None:
        if root is None:
            raise InputError("give root (the IJB folder) or meta")
        meta = load_ijb_meta(root, dataset, pairs=False)
    n = len(meta)
    if n == 0:
        raise InputError(f"{meta.meta_dir}: the meta files list no images")
    if not Path(meta.image_dir).is_dir():
        raise FileNotFoundError(
            f"IJB image folder not found: {meta.image_dir} (expected loose_crop next to "
            f"{meta.meta_dir})"
        )
    ctx = dist_setup(rt.device, distributed)
    try:
        workers = default_workers(ctx.world) if num_workers is None else int(num_workers)
        loop = _Loop(
            batch_size, workers, skip_bad, use_damaged, save_every, progress, max_batches,
            on_batch, face_input or FaceInput(),
        )  # fmt: skip
        return _extract(
            model, meta, Path(out), wanted, rt, ctx, loop,
            model_path=model_path, overwrite=overwrite, shard=shard,
        )  # fmt: skip
    finally:
        ctx.close()


def _manifest(
    model: VisionTransformer | OnnxModel,
    meta: IJBMeta,
    exits: list[int],
    rt: Runtime,
    skip_bad: bool,
    model_path: str | os.PathLike[str] | None,
    face_input: FaceInput | None = None,
) -> Manifest:
    """The manifest of an IJB feature store of ``model`` at ``exits``: identity and costs."""
    from vitfree.models import model_fingerprint

    face_input = face_input or FaceInput()
    if isinstance(model, OnnxModel):
        return Manifest(
            exits=exits,
            n_images=len(meta),
            dim=int(model.num_features),
            flip=True,
            amp=rt.amp,
            model_fingerprint=model.fingerprint(),
            model_config={"onnx": model.path.name, "input": model.input_name,
                          "output": model.output_name, "depth": model.depth},
            images_digest=_images_digest(meta),
            dataset=meta.dataset,
            meta_dir=str(meta.meta_dir),
            image_dir=str(meta.image_dir),
            model={"arch": "onnx", "checkpoint": str(model.path.resolve()), "depth": model.depth,
                   "exit_heads": [], "config": model.describe()},
            skip_bad=skip_bad,
            rows_order="face_tid_mid.txt",
            face_input=face_input.as_dict(),
        )  # fmt: skip
    return Manifest(
        exits=exits,
        n_images=len(meta),
        dim=int(model.num_features),
        flip=True,
        amp=rt.amp,
        model_fingerprint=model_fingerprint(model),
        model_config=dataclasses.asdict(model.config.replace(depth=model.depth)),
        images_digest=_images_digest(meta),
        dataset=meta.dataset,
        meta_dir=str(meta.meta_dir),
        image_dir=str(meta.image_dir),
        model={
            "arch": model.arch,
            "checkpoint": None if model_path is None else str(Path(model_path).resolve()),
            "depth": model.depth,
            "exit_heads": sorted(int(k) for k in model.exit_heads),
            "config": model.config.describe(),
        },
        costs={c.exit: c for c in exit_cost_records(model, exits)},
        skip_bad=skip_bad,
        rows_order="face_tid_mid.txt",
        face_input=face_input.as_dict(),
    )


def _extract(
    model: VisionTransformer | OnnxModel,
    meta: IJBMeta,
    out: Path,
    exits: list[int],
    rt: Runtime,
    ctx: Dist,
    loop: _Loop,
    *,
    model_path: str | os.PathLike[str] | None,
    overwrite: bool,
    shard: str,
) -> ExtractResult:
    n = len(meta)
    dim = int(model.num_features)
    model.to(rt.device).eval()
    manifest = _manifest(model, meta, exits, rt, loop.skip_bad, model_path, loop.face_input)
    names = meta.names
    rows_all = np.arange(n, dtype=np.int64)
    desc = f"{meta.dataset} exits {','.join(map(str, exits))}"

    if ctx.world == 1:
        store = FeatureStore.open(out, rows_all, manifest, overwrite, "features")
        try:
            checked = _preflight(meta, store.pending(), loop, out)
        except BaseException:
            store.save(names)
            store.close()
            raise
        resumed = int(store.done.sum())
        if resumed:
            log.info("resuming %s: %d of %d images done", out, resumed, n)
        store.save(names)
        extracted, bad, secs = _extract_store(model, store, meta, exits, rt, loop, desc, checked)
        complete = bool(store.done.all())
        skipped = sorted(set(store.skipped))
        if complete:  # partial files of an interrupted torchrun run are of no use any more
            for stale in out.glob("partial-w*"):
                shutil.rmtree(stale, ignore_errors=True)
        _report_skipped(skipped, bad, names, out, store.problems)
        damaged = sorted(set(store.damaged))
        _report_damaged(damaged, names, out)
        return ExtractResult(
            out, exits, n, dim, complete, extracted, resumed, skipped, secs,
            damaged_rows=damaged, problems=dict(store.problems),
        )  # fmt: skip

    # ---- distributed.  Every rank validates an existing store itself, so that a mismatch
    # raises on all ranks at once instead of leaving the others waiting at a barrier.
    out.mkdir(parents=True, exist_ok=True)
    if not overwrite:
        check_resumable(out, manifest, "features")
    part_root = out / f"partial-w{ctx.world}-{shard}"
    # rank 0 holds the store's lock for the whole launch: no other run may write it meanwhile
    out_lock = StoreLock(out).acquire() if ctx.rank == 0 else None
    try:
        return _extract_distributed(
            model, meta, out, exits, rt, ctx, loop, manifest, part_root, overwrite, shard, desc
        )
    finally:
        if out_lock is not None:
            out_lock.release()


def _extract_distributed(
    model: VisionTransformer | OnnxModel,
    meta: IJBMeta,
    out: Path,
    exits: list[int],
    rt: Runtime,
    ctx: Dist,
    loop: _Loop,
    manifest: Manifest,
    part_root: Path,
    overwrite: bool,
    shard: str,
    desc: str,
) -> ExtractResult:
    n = len(meta)
    dim = int(model.num_features)
    names = meta.names
    rows_all = np.arange(n, dtype=np.int64)
    if ctx.rank == 0:
        if overwrite:
            for old_part in out.glob("partial-w*"):
                shutil.rmtree(old_part, ignore_errors=True)
        final = FeatureStore.open(out, rows_all, manifest, overwrite, "features", lock=False)
        final.save(names)
        final.close()
    ctx.barrier()
    final_manifest = Manifest.read(out) or manifest
    pending = rows_all[~final_manifest.done_mask(n, out)]
    checked = _preflight(meta, pending, loop, out)  # every rank: all raise together
    mine = _shard(pending, ctx.rank, ctx.world, shard, loop.batch_size)
    part_dir = part_root / f"rank{ctx.rank}"
    part_manifest = dataclasses.replace(
        manifest,
        n_images=int(mine.size),
        extra={
            "shard_rows_digest": hashlib.sha256(mine.tobytes()).hexdigest()[:24],
            "rank": ctx.rank,
            "world_size": ctx.world,
            "shard": shard,
        },
    )
    what = f"rank {ctx.rank} shard"
    try:
        store = FeatureStore.open(part_dir, mine, part_manifest, False, what)
        if store.manifest.extra.get("shard_rows_digest") != part_manifest.extra["shard_rows_digest"]:
            raise StoreError("it holds other pending rows")
    except StoreError as e:
        # The partial files of an interrupted run over other pending rows: start this shard
        # over (its finished rows were not assembled, so nothing is lost but time).
        log.warning("rank %d: not resuming %s (%s); starting over", ctx.rank, part_dir, e)
        store = FeatureStore.open(part_dir, mine, part_manifest, True, what)
    np.save(part_dir / "rows.npy", mine)
    store.save(names)
    resumed = int(store.done.sum())
    if resumed:
        log.info("rank %d: resuming, %d of %d images done", ctx.rank, resumed, mine.size)
    rank_loop = dataclasses.replace(loop, progress=loop.progress and ctx.rank == 0)
    extracted, bad, secs = _extract_store(
        model, store, meta, exits, rt, rank_loop, f"{desc} (rank 0 of {ctx.world})", checked
    )
    if bad:
        log.warning("rank %d: skipped %d unreadable images", ctx.rank, bad)
    ctx.barrier()
    if ctx.rank == 0:
        assemble(out, part_root, ctx.world, names)
    ctx.barrier()
    fin = Manifest.read(out) or manifest
    complete = bool(fin.complete)
    skipped = [int(r) for r in (fin.skipped or {}).get("rows", [])]
    damaged = [int(r) for r in (fin.damaged_used or {}).get("rows", [])]
    problems = {int(k): v for k, v in (fin.problems or {}).items()}
    if ctx.rank == 0:
        _report_skipped(skipped, len(skipped), names, out, problems)
        _report_damaged(damaged, names, out)
    return ExtractResult(
        out, exits, n, dim, complete, extracted, resumed, skipped, secs, ctx.rank, ctx.world,
        damaged_rows=damaged, problems=problems,
    )  # fmt: skip


def _preflight(meta: IJBMeta, rows: npt.NDArray[np.int64], loop: _Loop, folder: Path) -> _Checked:
    """Check ``rows`` before any compute; raise naming every unusable image unless
    ``skip_bad`` (then they are to be skipped) or, for truncated files, ``use_damaged``.

    Every rank of a torchrun launch runs it on all pending rows, so that all raise together.
    """
    crops = IJBCrops(meta=meta, indices=rows, normalize=False)
    problems = crops.check() if rows.size else {}
    usable: dict[int, str] = {}
    if loop.use_damaged:
        usable = {r: p for r, p in problems.items() if p.startswith(USABLE_DAMAGE)}
        problems = {r: p for r, p in problems.items() if r not in usable}
    if problems and not loop.skip_bad:
        raise _bad_image_error(crops, problems, folder, before=True)
    return _Checked(problems, usable)


@dataclasses.dataclass
class _Checked:
    skip: dict[int, str]  # unusable rows to write as zeros (skip_bad)
    damaged: dict[int, str]  # damaged rows to decode leniently (use_damaged)


def _extract_store(
    model: VisionTransformer | OnnxModel,
    store: FeatureStore,
    meta: IJBMeta,
    exits: list[int],
    rt: Runtime,
    loop: _Loop,
    desc: str,
    checked: _Checked,
) -> tuple[int, int, float]:
    """Run the pending rows of ``store`` (after the pre-flight ``checked``); returns
    (images extracted, bad images, seconds)."""
    t0 = time.perf_counter()
    extracted, bad = 0, 0
    try:
        mine = set(store.pending().tolist())
        skip = np.array(sorted(r for r in checked.skip if r in mine), dtype=np.int64)
        store.write_zeros(skip, checked.skip)
        bad = int(skip.size)
        store.problems.update({r: p for r, p in checked.damaged.items() if r in mine})
        pending = store.pending()
        if pending.size:
            crops = IJBCrops(
                meta=meta, indices=pending, normalize=False, skip_bad=True,
                lenient=loop.use_damaged, face_input=loop.face_input,
            )  # fmt: skip
            extracted, bad_run = _run_loader(model, store, crops, exits, rt, loop, desc, meta.names)
            bad += bad_run
    finally:
        store.save(meta.names)
        store.close()
    return extracted, bad, time.perf_counter() - t0


def _report_skipped(
    skipped: list[int],
    bad_now: int,
    names: npt.NDArray[np.str_],
    out: Path,
    problems: Mapping[int, str] | None = None,
) -> None:
    if not skipped:
        return
    why = problems or {}
    shown = ", ".join(
        str(names[r]) + (f" ({why[r]})" if r in why else "") for r in skipped[:5]
    ) + (", ..." if len(skipped) > 5 else "")
    log.warning(
        "skipped %d unreadable images (%d in this run), written as zero features and listed "
        "in %s: %s",
        len(skipped), bad_now, out / "manifest.json", shown,
    )  # fmt: skip


def _report_damaged(damaged: list[int], names: npt.NDArray[np.str_], out: Path) -> None:
    if not damaged:
        return
    shown = ", ".join(str(names[r]) for r in damaged[:5]) + (", ..." if len(damaged) > 5 else "")
    log.warning(
        "used %d damaged images as far as they decode (--use-damaged), listed in %s: %s",
        len(damaged), out / "manifest.json", shown,
    )  # fmt: skip


# --------------------------------------------------------------------------------------
# .bin sets and pair lists
# --------------------------------------------------------------------------------------


def extract_bin(
    model: VisionTransformer,
    pairset: Any,
    exits: Sequence[int] | None = None,
    batch_size: int = 64,
    *,
    device: str | torch.device | None = None,
    amp: str | None = None,
    progress: bool = False,
) -> dict[int, npt.NDArray[np.float32]]:
    """Embeddings of a verification set at each exit: emb(image) + emb(flipped image).

    The community's ``.bin`` evaluation sums the raw embeddings of the image and its
    horizontal flip (docs/protocols.md §5); :func:`vitfree.metrics.kfold_accuracy` normalises them.
    Image and flip of a batch run as one batch of 2B through one pass.

    Args:
        model: the face ViT (moved to ``device``, eval mode).
        pairset: a :class:`vitfree.data.PairSet` (``images`` (2N, 112, 112, 3) uint8 RGB) or
            such an array.
        exits: exits, 1-based (negative from the end); ``None`` = every block.
        batch_size: images per batch.
        device, amp: as in :func:`extract_ijb`.
        progress: show a progress bar.

    Returns:
        ``{exit: (2N, num_features) float32}``, rows in image order (pair i = rows 2i, 2i+1).
    """
    from tqdm.auto import tqdm

    check_face_model(model)
    images = np.asarray(getattr(pairset, "images", pairset))
    faces = ArrayFaces(images)  # checks uint8 RGB (M, H, W, 3)
    if images.shape[1:3] != (model.img_size, model.img_size):
        raise InputError(
            f"the faces are {images.shape[2]}x{images.shape[1]} but the model takes "
            f"{model.img_size}x{model.img_size}; align them to 112x112 first"
        )
    rt = runtime(device, amp)
    wanted = sorted(set(model.resolve_exits(None if exits is None else list(exits))))
    model.to(rt.device).eval()
    m = images.shape[0]
    out = {k: np.empty((m, model.num_features), dtype=np.float32) for k in wanted}
    src = getattr(pairset, "source", "") or "images"
    bar = tqdm(total=m, desc=f"{Path(src).name}", unit="img", disable=not progress)
    with bar:
        for batch in face_batches(faces, batch_size):
            embs = embed_batch(model, batch, wanted, rt, lambda r: f"image {r} of {Path(src).name}")
            s, b = int(batch.rows[0]), len(batch)
            for k in wanted:
                out[k][s : s + b] = embs[k].feats + embs[k].flips  # emb(image) + emb(flip)
            bar.update(b)
    return out
