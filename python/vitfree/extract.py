"""Feature extraction at every requested exit: IJB-B/C crops into a feature store, ``.bin`` sets
into memory, and the per-exit speed measurement that fills the cost columns of the reports.

:func:`extract_ijb` writes the feature-store layout of :mod:`vitfree.features`::

    OUT/manifest.json      exits, n_images, dim, model, costs, done row ranges, skipped rows
    OUT/exit_04.npy        (N, 512) float32, image i of face_tid_mid.txt in row i
    OUT/exit_04_flip.npy   (N, 512) float32, its horizontal flip
    ...

How it works, and why:

* Decoding and alignment run in DataLoader worker processes (:class:`vitfree.data.IJBCrops`,
  uint8 tensors, so a batch costs a quarter of the float32 inter-process traffic); the main
  process normalises with :func:`vitfree.models.preprocess` and runs image and flip as one
  batch of 2B through :meth:`VisionTransformer.forward_exits`: one pass up to the deepest exit
  gives every requested exit.
* Features go straight into memory-mapped ``.npy`` files (``np.lib.format.open_memmap``), so
  IJB-C at five exits (5 x 2 x 469,375 x 512 float32 = 9.6 GB) never sits in memory.
* Resume: ``manifest.json`` records the completed row ranges.  Every ``save_every`` seconds
  (and when the run ends, also by an exception or Ctrl-C) the memory maps are flushed first and
  the manifest is then replaced atomically (:func:`vitfree.features.write_manifest`), so a row
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
* Unreadable images fail the run by default, naming the file; ``skip_bad=True`` writes zero
  features for them (so they add nothing to their template; a template with only bad images
  then has no feature and the evaluation names it) and lists them in the manifest.

Rejected: one process writing while others send features through ``torch.distributed``
(gather) -- it needs every rank's features in memory or a protocol of its own, while partial
files are resumable per rank for free; ranks writing directly into the shared final files --
concurrent writes to one memory-mapped file are not safe on network file systems.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from vitfree.data.ijb import IJBCrops, IJBFormatError, IJBMeta, load_ijb_meta
from vitfree.features import exit_filename, read_manifest, write_manifest
from vitfree.metrics import KFoldResult, kfold_accuracy
from vitfree.models import VisionTransformer, exit_costs, preprocess

__all__ = [
    "FEATURE_FORMAT",
    "ExtractResult",
    "PairSetResult",
    "evaluate_pairset",
    "exit_cost_table",
    "extract_bin",
    "extract_ijb",
    "measure_speed",
    "model_fingerprint",
    "resolve_device",
]

#: ``format`` field of the manifests written here.
FEATURE_FORMAT = "vitfree.features"
_VERSION = 1
_FACE_SIZE = 112
_AMP = {"bf16": torch.bfloat16, "fp16": torch.float16}


# --------------------------------------------------------------------------------------
# devices, precision, model checks
# --------------------------------------------------------------------------------------


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"``: CUDA when available, else CPU; otherwise the device given.

    Under ``torchrun`` a bare ``"cuda"`` means this process's GPU (``cuda:LOCAL_RANK``).
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(dev)!r} asked for, but CUDA is not available here")
        if dev.index is None:
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return dev


def _amp_dtype(amp: str | None, device: torch.device) -> torch.dtype | None:
    if amp in (None, "", "none", "fp32"):
        return None
    if amp not in _AMP:
        raise ValueError(f"amp must be 'bf16', 'fp16' or None, got {amp!r}")
    if device.type != "cuda":
        raise ValueError(
            f"--amp {amp} needs a CUDA device (running on {device}); on CPU the model runs "
            f"in float32, as the reference does"
        )
    return _AMP[amp]


def _autocast(device: torch.device, amp_dtype: torch.dtype | None) -> Any:
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def _check_model(model: VisionTransformer, size: int = _FACE_SIZE) -> None:
    if not isinstance(model, VisionTransformer):
        raise TypeError(f"expected a vitfree.models.VisionTransformer, got {type(model).__name__}")
    if model.img_size != size or model.in_chans != 3:
        raise ValueError(
            f"the model takes {model.in_chans}x{model.img_size}x{model.img_size} inputs "
            f"({model.config.describe()}), but aligned faces are 3x{size}x{size}; "
            f"face benchmarks need a model built for {size}x{size} RGB crops"
        )


def model_fingerprint(model: torch.nn.Module) -> str:
    """A short digest of a model's state_dict: names, shapes, dtypes and sampled values.

    Up to 4096 evenly spaced values per tensor are hashed exactly (no reductions, so the
    digest does not depend on the device); two different checkpoints differ in essentially
    every weight, so this tells them apart in well under a second even for vit_h.
    """
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        flat = t.detach().reshape(-1)
        if flat.numel() > 4096:
            # integer spacing: float linspace rounds past the end for tensors of > 2^24 values
            idx = torch.arange(4096, device=flat.device) * (flat.numel() - 1) // 4095
            flat = flat[idx]
        h.update(flat.cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:24]


def _resolve_exits(model: VisionTransformer, exits: Sequence[int] | None) -> list[int]:
    return sorted(set(model.resolve_exits(None if exits is None else list(exits))))


# --------------------------------------------------------------------------------------
# costs and speed
# --------------------------------------------------------------------------------------


def _time_runs(fn: Callable[[], Any], device: torch.device, iters: int, budget_s: float) -> float:
    """Fastest of at most ``iters`` runs of ``fn`` in seconds (at least one; stops after budget)."""
    times: list[float] = []
    spent = 0.0
    while len(times) < max(iters, 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dt = time.perf_counter() - t0
        times.append(dt)
        spent += dt
        if spent >= budget_s:
            break
    return float(min(times))  # noise (other processes, frequency changes) only adds time


def measure_speed(
    model: VisionTransformer,
    exits: Sequence[int] | None = None,
    device: str | torch.device | None = None,
    *,
    batch_size: int = 64,
    latency_iters: int = 10,
    throughput_iters: int = 3,
    budget_s: float = 1.0,
    amp: str | None = None,
) -> dict[int, dict[str, float]]:
    """Wall-clock speed of each exit relative to the full model, measured briefly.

    Each exit runs only its blocks and its head (:meth:`VisionTransformer.forward_exit`).
    After one warm-up pass, latency is the fastest of up to ``latency_iters`` single-image
    passes and throughput the fastest of up to ``throughput_iters`` batches of ``batch_size``;
    each measurement stops early once it has used ``budget_s`` seconds (at least one run),
    so a whole table costs seconds on a GPU and up to a minute for vit_s on 2 CPU cores.

    Args:
        model: the model (moved to ``device`` and put in eval mode).
        exits: exits to measure (1-based, negative from the end); ``None`` = every block.
        device: see :func:`resolve_device`.
        batch_size: batch of the throughput measurement (64).
        latency_iters, throughput_iters, budget_s: how long to measure (see above).
        amp: ``"bf16"``/``"fp16"`` autocast on CUDA, as in extraction.

    Returns:
        ``{exit: {"latency_ms", "throughput" (images/s), "speedup" (throughput relative to
        the full model), "latency_speedup" (batch-1 latency of the full model / this exit's),
        "batch_size"}}`` for the requested exits.  The full model is always measured as the
        reference, whether or not it is requested.
    """
    _check_model(model, model.img_size)
    dev = resolve_device(device)
    amp_dtype = _amp_dtype(amp, dev)
    wanted = _resolve_exits(model, exits)
    model.to(dev).eval()
    full = model.depth
    todo = sorted(set(wanted) | {full})
    gen = torch.Generator().manual_seed(0)
    shape = (batch_size, model.in_chans, model.img_size, model.img_size)
    x_big = (torch.rand(shape, generator=gen) * 2 - 1).to(dev, model.pos_embed.dtype)
    x_one = x_big[:1].contiguous()
    lat: dict[int, float] = {}
    thr: dict[int, float] = {}
    with torch.inference_mode(), _autocast(dev, amp_dtype):
        model.forward_exit(x_big, full)  # warm-up: allocator, kernels, caches
        model.forward_exit(x_one, full)
        for k in todo:
            one = functools.partial(model.forward_exit, x_one, k)
            big = functools.partial(model.forward_exit, x_big, k)
            lat[k] = _time_runs(one, dev, latency_iters, budget_s)
            thr[k] = _time_runs(big, dev, throughput_iters, budget_s)
    return {
        k: {
            "latency_ms": lat[k] * 1e3,
            "throughput": batch_size / thr[k],
            "speedup": thr[full] / thr[k],
            "latency_speedup": lat[full] / lat[k],
            "batch_size": float(batch_size),
        }
        for k in wanted
    }


def exit_cost_table(
    model: VisionTransformer,
    exits: Sequence[int] | None = None,
    speed: Mapping[int, Mapping[str, float]] | None = None,
) -> dict[str, dict[str, float]]:
    """Per-exit cost records keyed by ``str(exit)``, as stored in the manifest.

    FLOPs and parameters from :func:`vitfree.models.exit_costs`; with ``speed`` (from
    :func:`measure_speed`) also ``latency_ms``, ``throughput`` and ``speedup``, which the
    report tables show as the "speed-up" column.
    """
    wanted = _resolve_exits(model, exits)
    out: dict[str, dict[str, float]] = {}
    for c in exit_costs(model, wanted):
        rec: dict[str, float] = dict(c.as_dict())
        if speed is not None and c.exit in speed:
            rec.update({k: float(v) for k, v in speed[c.exit].items()})
        out[str(c.exit)] = rec
    return out


# --------------------------------------------------------------------------------------
# distributed context
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False
    backend: str = ""

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            if self.backend == "nccl":
                dist.barrier(device_ids=[torch.cuda.current_device()])
            else:
                dist.barrier()

    def close(self) -> None:
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def _dist_setup(device: torch.device, distributed: bool | None) -> _Dist:
    """Join (or start, from torchrun's environment) the process group."""
    if distributed is False or not torch.distributed.is_available():
        return _Dist()
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():
        return _Dist(
            dist.get_rank(), dist.get_world_size(), local_rank, False, str(dist.get_backend())
        )
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        if distributed:
            raise ValueError(
                "distributed=True but WORLD_SIZE is not set: start with torchrun "
                "--nproc_per_node N, or call torch.distributed.init_process_group first"
            )
        return _Dist()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    return _Dist(dist.get_rank(), dist.get_world_size(), local_rank, True, backend)


# --------------------------------------------------------------------------------------
# the on-disk store of one process (final files, or one rank's partial files)
# --------------------------------------------------------------------------------------


def _ranges(done: npt.NDArray[np.bool_]) -> list[list[int]]:
    """[[start, stop), ...] of the True runs of ``done``."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], done.astype(np.int8), [0]])))
    return [[int(a), int(b)] for a, b in zip(edges[0::2], edges[1::2])]


def _done_mask(ranges: Sequence[Sequence[int]], n: int, where: Path) -> npt.NDArray[np.bool_]:
    done = np.zeros(n, dtype=bool)
    for r in ranges:
        a, b = int(r[0]), int(r[1])
        if not 0 <= a <= b <= n:
            raise ValueError(f"{where}: done range {list(r)} lies outside 0..{n}")
        done[a:b] = True
    return done


def _identity_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    labels = {
        "model_fingerprint": "model weights",
        "model_config": "model architecture",
        "exits": "exits",
        "n_images": "number of images",
        "dim": "embedding size",
        "images_digest": "image list (names and landmarks of the meta files)",
        "amp": "precision (--amp)",
        "flip": "flip features",
    }
    out = []
    for key, label in labels.items():
        if old.get(key) != new.get(key):
            a, b = old.get(key), new.get(key)
            if key in ("model_config",):
                a = {k: v for k, v in (a or {}).items() if (b or {}).get(k) != v}
                b = {k: v for k, v in (b or {}).items() if k in a}
            out.append(f"{label}: stored {a!r}, now {b!r}")
    return out


def _check_resumable(
    folder: Path, old: Mapping[str, Any], identity: Mapping[str, Any], what: str
) -> None:
    """Raise unless the manifest ``old`` (if any) was written for the same ``identity``."""
    if not old:
        return
    if old.get("format") != FEATURE_FORMAT or "done" not in old:
        raise ValueError(
            f"{folder / 'manifest.json'} was not written by vitfree extraction (no 'done' "
            f"record), so it cannot be resumed; use another output folder or overwrite=True "
            f"(--overwrite)"
        )
    diff = _identity_diff(old, identity)
    if diff:
        raise ValueError(
            f"cannot resume the {what} in {folder}: it was extracted with different "
            f"settings:\n  " + "\n  ".join(diff) + "\nuse another output folder, or "
            "overwrite=True (--overwrite) to start over"
        )


class _Store:
    """``rows`` (sorted meta rows) -> per-exit memory-mapped files in ``folder``.

    Position ``i`` of the files holds meta row ``rows[i]`` (the final store: ``rows`` =
    0..N-1, so position = row).  ``done`` is per position.
    """

    def __init__(
        self,
        folder: Path,
        rows: npt.NDArray[np.int64],
        exits: list[int],
        dim: int,
        manifest: dict[str, Any],
        identity: dict[str, Any],
        fresh: bool,
    ) -> None:
        self.folder = folder
        self.rows = rows
        self.exits = exits
        self.manifest = manifest
        n = int(rows.shape[0])
        mode = "w+" if fresh else "r+"
        self.files: dict[tuple[int, bool], np.memmap] = {}
        for k in exits if n else []:  # an empty shard has no files (mmap needs >= 1 byte)
            for flip in (False, True):
                p = folder / exit_filename(k, flip)
                if mode == "r+":
                    try:
                        mm = np.lib.format.open_memmap(p, mode="r+")
                    except (OSError, ValueError) as e:
                        raise ValueError(
                            f"cannot resume {folder}: {p.name} is missing or unreadable ({e}); "
                            f"start over with overwrite=True (--overwrite) or another folder"
                        ) from None
                    if mm.shape != (n, dim) or mm.dtype != np.float32:
                        raise ValueError(
                            f"cannot resume {folder}: {p.name} is {mm.dtype} {mm.shape}, "
                            f"expected float32 {(n, dim)}; start over with overwrite=True "
                            f"(--overwrite) or another folder"
                        )
                else:
                    mm = np.lib.format.open_memmap(p, mode="w+", dtype=np.float32, shape=(n, dim))
                self.files[(k, flip)] = mm
        if fresh:
            self.done = np.zeros(n, dtype=bool)
            self.skipped: list[int] = []
        else:
            self.done = _done_mask(manifest.get("done", []), n, folder)
            self.skipped = [int(r) for r in manifest.get("skipped", {}).get("rows", [])]
        manifest.update(identity)

    @classmethod
    def open(
        cls,
        folder: Path,
        rows: npt.NDArray[np.int64],
        exits: list[int],
        dim: int,
        identity: dict[str, Any],
        extra: dict[str, Any],
        overwrite: bool,
        what: str,
    ) -> _Store:
        """Resume the store in ``folder`` if it matches ``identity``, else start one."""
        folder.mkdir(parents=True, exist_ok=True)
        old = read_manifest(folder)
        fresh = overwrite or not old
        if not fresh:
            _check_resumable(folder, old, identity, what)
        manifest = dict(old) if not fresh else {}
        manifest.update(extra)
        return cls(folder, rows, exits, dim, manifest, identity, fresh)

    def pending(self) -> npt.NDArray[np.int64]:
        return self.rows[~self.done]

    def positions(self, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        pos = np.searchsorted(self.rows, rows)
        return pos.astype(np.int64)

    def write(
        self,
        pos: npt.NDArray[np.int64],
        feats: Mapping[int, npt.NDArray[np.float32]],
        flips: Mapping[int, npt.NDArray[np.float32]],
    ) -> None:
        # Batches are contiguous runs of rows unless resuming around holes: slices are cheaper.
        contiguous = pos.size > 0 and int(pos[-1]) - int(pos[0]) == pos.size - 1
        sl: Any = slice(int(pos[0]), int(pos[-1]) + 1) if contiguous else pos
        for k in self.exits:
            self.files[(k, False)][sl] = feats[k]
            self.files[(k, True)][sl] = flips[k]
        self.done[pos] = True

    def save(self, names: npt.NDArray[np.str_] | None = None) -> None:
        """Flush the maps, then record the done ranges (this order makes 'done' trustworthy)."""
        for mm in self.files.values():
            mm.flush()
        self.manifest["done"] = _ranges(self.done)
        self.manifest["n_done"] = int(self.done.sum())
        self.manifest["complete"] = bool(self.done.all())
        skipped = sorted(set(self.skipped))
        rec: dict[str, Any] = {"count": len(skipped), "rows": skipped}
        if names is not None:
            rec["files"] = [str(names[r]) for r in skipped]
        self.manifest["skipped"] = rec
        write_manifest(self.folder, self.manifest)

    def close(self) -> None:
        for mm in self.files.values():
            mm.flush()
        self.files.clear()


# --------------------------------------------------------------------------------------
# IJB extraction
# --------------------------------------------------------------------------------------


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
        skipped_rows: meta rows whose image could not be read (all ranks), zero features.
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

    @property
    def images_per_s(self) -> float:
        """Images (each with its flip) per second in this process."""
        return self.extracted / self.seconds if self.seconds > 0 else float("nan")


def _worker_context() -> Any:
    """Fork on Linux, whatever the process's default start method.

    Processes started by ``torch.multiprocessing.spawn`` inherit the "spawn" method (and
    Python 3.14 makes "forkserver" the default), under which every worker re-imports torch:
    seconds per worker.  Workers here only read, align and flip images (no CUDA, no torch
    compute), which is what fork is safe for.  Elsewhere the platform default is kept.

    (Workers leave OpenCV's thread count alone: ``cv2.setNumThreads`` in a forked child whose
    parent has already run ``cv2.warpAffine`` deadlocks with OpenCV's pthreads backend.
    torch's DataLoader already sets one torch thread per worker.)
    """
    import multiprocessing

    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("fork")
    return None


def _default_workers(world: int) -> int:
    """min(4, CPUs per process), at least 1."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(4, max(1, (cpus or 1) // max(world, 1)))


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
        raise ValueError(f"shard must be 'contiguous' or 'strided', got {mode!r}")
    # Cut at multiples of the batch size: every rank then forms the batches a single process
    # would, which keeps the features bit-identical to a single-process run.
    n_batches = -(-pending.size // batch_size)
    per = np.array_split(np.arange(n_batches), world)[rank]
    if per.size == 0:
        return pending[:0]
    return pending[int(per[0]) * batch_size : min((int(per[-1]) + 1) * batch_size, pending.size)]


def _run_loader(
    model: VisionTransformer,
    store: _Store,
    crops: IJBCrops,
    exits: list[int],
    *,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    batch_size: int,
    num_workers: int,
    skip_bad: bool,
    save_every: float,
    show_progress: bool,
    desc: str,
    max_batches: int | None,
    on_batch: Callable[[int], None] | None,
    names: npt.NDArray[np.str_],
) -> tuple[int, int]:
    """Extract ``crops`` into ``store``; returns (images extracted, bad images in this run)."""
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    n_total = int(store.rows.shape[0])
    loader = DataLoader(
        crops,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        multiprocessing_context=_worker_context() if num_workers > 0 else None,
        drop_last=False,
    )
    bar = tqdm(
        total=n_total,
        initial=int(store.done.sum()),
        desc=desc,
        unit="img",
        file=sys.stderr,
        dynamic_ncols=True,
        disable=not show_progress,
    )
    extracted = 0
    bad_now = 0
    batches = 0
    last_save = time.monotonic()
    try:
        for img, flipped, rows_t, ok_t in loader:
            rows = rows_t.numpy().astype(np.int64)
            ok = ok_t.numpy().astype(bool)
            if not ok.all():
                bad = rows[~ok]
                if not skip_bad:
                    r = int(bad[0])
                    path = crops.path(r)
                    why = "not found" if not os.path.isfile(path) else "cannot be decoded"
                    exc_type = FileNotFoundError if why == "not found" else IJBFormatError
                    raise exc_type(
                        f"IJB image {path} (meta row {r}) {why}"
                        + (f"; {bad.size} unreadable images in this batch" if bad.size > 1 else "")
                        + f". Rerun with skip_bad=True (--skip-bad) to write zero features for "
                        f"unreadable images and list them in {store.folder / 'manifest.json'}; "
                        f"the {int(store.done.sum())} rows done so far are kept and skipped "
                        f"on restart"
                    )
                store.skipped.extend(int(r) for r in bad)
                bad_now += int(bad.size)
            b = rows.shape[0]
            x = torch.cat([img, flipped]).to(device, non_blocking=True)
            x = preprocess(x.permute(0, 2, 3, 1), dtype=model.pos_embed.dtype)
            with torch.inference_mode(), _autocast(device, amp_dtype):
                embs = model.forward_exits(x, exits)
            feats: dict[int, npt.NDArray[np.float32]] = {}
            flips: dict[int, npt.NDArray[np.float32]] = {}
            for k in exits:
                e = embs[k].float().cpu().numpy()
                f, fl = e[:b], e[b:]
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
            if on_batch is not None:
                on_batch(batches)
            if time.monotonic() - last_save >= save_every:
                store.save(names)
                last_save = time.monotonic()
            if max_batches is not None and batches >= max_batches:
                break
    finally:
        bar.close()
        store.save(names)  # whatever is done stays done, also after an error or Ctrl-C
    return extracted, bad_now


def extract_ijb(
    model: VisionTransformer,
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
    model_path: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    distributed: bool | None = None,
    shard: str = "contiguous",
    save_every: float = 30.0,
    progress: bool = True,
    max_batches: int | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> ExtractResult:
    """Extract image and flip features of every IJB-B/C image at the requested exits.

    Writes (or resumes) the feature store ``out`` (layout in :mod:`vitfree.features` and this
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
        device: see :func:`resolve_device` (CUDA when available, else CPU).
        amp: ``"bf16"``/``"fp16"``: autocast on CUDA (attention and head stay float32).
        skip_bad: write zero features for images that are missing or cannot be decoded,
            list them in the manifest and print their count; default: stop with an error
            naming the file.
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

    Returns:
        :class:`ExtractResult`.

    Raises:
        FileNotFoundError: meta files or (without ``skip_bad``) an image missing, named.
        IJBFormatError: an undecodable image (without ``skip_bad``), named.
        ValueError: a model not built for 112x112 faces; an existing store in ``out`` made
            with another model, exits, image list or precision (says which differ).
    """
    _check_model(model)
    dev = resolve_device(device)
    amp_dtype = _amp_dtype(amp, dev)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if shard not in ("contiguous", "strided"):
        raise ValueError(f"shard must be 'contiguous' or 'strided', got {shard!r}")
    wanted = _resolve_exits(model, exits)
    if meta is None:
        if root is None:
            raise ValueError("give root (the IJB folder) or meta")
        meta = load_ijb_meta(root, dataset, pairs=False)
    n = len(meta)
    if n == 0:
        raise ValueError(f"{meta.meta_dir}: the meta files list no images")
    if not Path(meta.image_dir).is_dir():
        raise FileNotFoundError(
            f"IJB image folder not found: {meta.image_dir} (expected loose_crop next to "
            f"{meta.meta_dir})"
        )
    ctx = _dist_setup(dev, distributed)
    try:
        return _extract(
            model, meta, Path(out), wanted, dev, amp, amp_dtype, ctx,
            batch_size=batch_size, num_workers=num_workers, skip_bad=skip_bad,
            model_path=model_path, overwrite=overwrite, shard=shard, save_every=save_every,
            progress=progress, max_batches=max_batches, on_batch=on_batch,
        )  # fmt: skip
    finally:
        ctx.close()


def _extract(
    model: VisionTransformer,
    meta: IJBMeta,
    out: Path,
    exits: list[int],
    dev: torch.device,
    amp: str | None,
    amp_dtype: torch.dtype | None,
    ctx: _Dist,
    *,
    batch_size: int,
    num_workers: int | None,
    skip_bad: bool,
    model_path: str | os.PathLike[str] | None,
    overwrite: bool,
    shard: str,
    save_every: float,
    progress: bool,
    max_batches: int | None,
    on_batch: Callable[[int], None] | None,
) -> ExtractResult:
    n = len(meta)
    dim = int(model.num_features)
    model.to(dev).eval()
    identity = {
        "format": FEATURE_FORMAT,
        "version": _VERSION,
        "exits": exits,
        "n_images": n,
        "dim": dim,
        "flip": True,
        "amp": amp if amp_dtype is not None else None,
        "model_fingerprint": model_fingerprint(model),
        "model_config": dataclasses.asdict(model.config.replace(depth=model.depth)),
        "images_digest": _images_digest(meta),
    }
    extra = {
        "dataset": meta.dataset,
        "meta_dir": str(meta.meta_dir),
        "image_dir": str(meta.image_dir),
        "model": {
            "arch": model.arch,
            "checkpoint": None if model_path is None else str(Path(model_path).resolve()),
            "depth": model.depth,
            "exit_heads": sorted(int(k) for k in model.exit_heads),
            "config": model.config.describe(),
        },
        "costs": exit_cost_table(model, exits),
        "skip_bad": skip_bad,
        "rows_order": "face_tid_mid.txt",
    }
    workers = _default_workers(ctx.world) if num_workers is None else int(num_workers)
    names = meta.names
    rows_all = np.arange(n, dtype=np.int64)
    desc = f"{meta.dataset} exits {','.join(map(str, exits))}"

    if ctx.world == 1:
        store = _Store.open(out, rows_all, exits, dim, identity, extra, overwrite, "features")
        resumed = int(store.done.sum())
        if resumed:
            print(f"resuming {out}: {resumed} of {n} images done", file=sys.stderr)
        store.save(names)
        extracted, bad, secs = _extract_store(
            model, store, meta, exits, dev, amp_dtype, batch_size=batch_size, workers=workers,
            skip_bad=skip_bad, save_every=save_every, progress=progress, desc=desc,
            max_batches=max_batches, on_batch=on_batch,
        )  # fmt: skip
        complete = bool(store.done.all())
        skipped = sorted(set(store.skipped))
        if complete:  # partial files of an interrupted torchrun run are of no use any more
            for stale in out.glob("partial-w*"):
                shutil.rmtree(stale, ignore_errors=True)
        _report_skipped(skipped, bad, names, out)
        return ExtractResult(out, exits, n, dim, complete, extracted, resumed, skipped, secs)

    # ---- distributed.  Every rank validates an existing store itself, so that a mismatch
    # raises on all ranks at once instead of leaving the others waiting at a barrier.
    out.mkdir(parents=True, exist_ok=True)
    if not overwrite:
        _check_resumable(out, read_manifest(out), identity, "features")
    part_root = out / f"partial-w{ctx.world}-{shard}"
    if ctx.rank == 0:
        if overwrite:
            for old_part in out.glob("partial-w*"):
                shutil.rmtree(old_part, ignore_errors=True)
        final = _Store.open(out, rows_all, exits, dim, identity, extra, overwrite, "features")
        final.save(names)
        final.close()
    ctx.barrier()
    done_final = _done_mask(read_manifest(out).get("done", []), n, out)
    pending = rows_all[~done_final]
    mine = _shard(pending, ctx.rank, ctx.world, shard, batch_size)
    part_dir = part_root / f"rank{ctx.rank}"
    part_identity = dict(
        identity,
        n_images=int(mine.size),
        shard_rows_digest=hashlib.sha256(mine.tobytes()).hexdigest()[:24],
    )
    part_extra = dict(extra, rank=ctx.rank, world_size=ctx.world, shard=shard)
    what = f"rank {ctx.rank} shard"
    try:
        store = _Store.open(part_dir, mine, exits, dim, part_identity, part_extra, False, what)
    except ValueError as e:
        # The partial files of an interrupted run over other pending rows: start this shard
        # over (its finished rows were not assembled, so nothing is lost but time).
        print(f"rank {ctx.rank}: not resuming {part_dir} ({e}); starting over", file=sys.stderr)
        store = _Store.open(part_dir, mine, exits, dim, part_identity, part_extra, True, what)
    np.save(part_dir / "rows.npy", mine)
    store.save(names)
    resumed = int(store.done.sum())
    if resumed:
        print(f"rank {ctx.rank}: resuming, {resumed} of {mine.size} images done", file=sys.stderr)
    extracted, bad, secs = _extract_store(
        model, store, meta, exits, dev, amp_dtype, batch_size=batch_size, workers=workers,
        skip_bad=skip_bad, save_every=save_every, progress=progress and ctx.rank == 0,
        desc=f"{desc} (rank 0 of {ctx.world})", max_batches=max_batches, on_batch=on_batch,
    )  # fmt: skip
    if bad:
        print(f"rank {ctx.rank}: skipped {bad} unreadable images", file=sys.stderr)
    ctx.barrier()
    if ctx.rank == 0:
        _assemble(out, part_root, ctx.world, exits, n, names)
    ctx.barrier()
    fin = read_manifest(out)
    complete = bool(fin.get("complete"))
    skipped = [int(r) for r in fin.get("skipped", {}).get("rows", [])]
    if ctx.rank == 0:
        _report_skipped(skipped, len(skipped), names, out)
    return ExtractResult(
        out, exits, n, dim, complete, extracted, resumed, skipped, secs, ctx.rank, ctx.world
    )


def _extract_store(
    model: VisionTransformer,
    store: _Store,
    meta: IJBMeta,
    exits: list[int],
    dev: torch.device,
    amp_dtype: torch.dtype | None,
    *,
    batch_size: int,
    workers: int,
    skip_bad: bool,
    save_every: float,
    progress: bool,
    desc: str,
    max_batches: int | None,
    on_batch: Callable[[int], None] | None,
) -> tuple[int, int, float]:
    """Run the pending rows of ``store``; returns (images extracted, bad images, seconds)."""
    t0 = time.perf_counter()
    pending = store.pending()
    extracted, bad = 0, 0
    try:
        if pending.size:
            crops = IJBCrops(meta=meta, indices=pending, normalize=False, skip_bad=True)
            extracted, bad = _run_loader(
                model, store, crops, exits, device=dev, amp_dtype=amp_dtype,
                batch_size=batch_size, num_workers=workers, skip_bad=skip_bad,
                save_every=save_every, show_progress=progress, desc=desc,
                max_batches=max_batches, on_batch=on_batch, names=meta.names,
            )  # fmt: skip
    finally:
        store.close()
    return extracted, bad, time.perf_counter() - t0


def _assemble(
    out: Path,
    part_root: Path,
    world: int,
    exits: list[int],
    n: int,
    names: npt.NDArray[np.str_],
) -> None:
    """Rank 0: copy every rank's finished rows into the final files, in row order."""
    manifest = read_manifest(out)
    done = _done_mask(manifest.get("done", []), n, out)
    skipped = {int(r) for r in manifest.get("skipped", {}).get("rows", [])}
    finals = {
        (k, flip): np.lib.format.open_memmap(out / exit_filename(k, flip), mode="r+")
        for k in exits
        for flip in (False, True)
    }
    all_parts_complete = True
    for r in range(world):
        d = part_root / f"rank{r}"
        pm = read_manifest(d)
        rows = np.load(d / "rows.npy")
        pdone = _done_mask(pm.get("done", []), rows.size, d)
        all_parts_complete &= bool(pdone.all())
        take = np.flatnonzero(pdone)
        if take.size == 0:
            continue
        for (k, flip), mm in finals.items():
            part = np.load(d / exit_filename(k, flip), mmap_mode="r")
            # Copy in blocks of positions so that memory stays bounded on IJB-C.
            for s in range(0, take.size, 65536):
                pos = take[s : s + 65536]
                mm[rows[pos]] = part[pos]
        done[rows[take]] = True
        skipped.update(int(x) for x in pm.get("skipped", {}).get("rows", []))
    for mm in finals.values():
        mm.flush()
    del finals
    manifest["done"] = _ranges(done)
    manifest["n_done"] = int(done.sum())
    manifest["complete"] = bool(done.all())
    manifest["skipped"] = {
        "count": len(skipped),
        "rows": sorted(skipped),
        "files": [str(names[r]) for r in sorted(skipped)],
    }
    manifest["assembled_from"] = {"world_size": world, "folder": part_root.name}
    write_manifest(out, manifest)
    if all_parts_complete:
        shutil.rmtree(part_root, ignore_errors=True)


def _report_skipped(
    skipped: list[int], bad_now: int, names: npt.NDArray[np.str_], out: Path
) -> None:
    if not skipped:
        return
    shown = ", ".join(str(names[r]) for r in skipped[:5]) + (", ..." if len(skipped) > 5 else "")
    print(
        f"skipped {len(skipped)} unreadable images ({bad_now} in this run), written as zero "
        f"features and listed in {out / 'manifest.json'}: {shown}",
        file=sys.stderr,
    )


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
    horizontal flip (PROTOCOLS §5); :func:`vitfree.metrics.kfold_accuracy` normalises them.
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

    _check_model(model)
    images = np.asarray(getattr(pairset, "images", pairset))
    if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"expected uint8 RGB faces (M, H, W, 3), got {images.dtype} {images.shape}"
        )
    if images.shape[1:3] != (model.img_size, model.img_size):
        raise ValueError(
            f"the faces are {images.shape[2]}x{images.shape[1]} but the model takes "
            f"{model.img_size}x{model.img_size}; align them to 112x112 first"
        )
    dev = resolve_device(device)
    amp_dtype = _amp_dtype(amp, dev)
    wanted = _resolve_exits(model, exits)
    model.to(dev).eval()
    m = images.shape[0]
    out = {k: np.empty((m, model.num_features), dtype=np.float32) for k in wanted}
    src = getattr(pairset, "source", "") or "images"
    for s in tqdm(
        range(0, m, batch_size), desc=f"{Path(src).name}", unit="batch", file=sys.stderr,
        disable=not progress,
    ):  # fmt: skip
        chunk = images[s : s + batch_size]
        b = chunk.shape[0]
        both = np.concatenate([chunk, chunk[:, :, ::-1]])  # image, then its horizontal flip
        x = preprocess(both, device=dev, dtype=model.pos_embed.dtype)
        with torch.inference_mode(), _autocast(dev, amp_dtype):
            embs = model.forward_exits(x, wanted)
        for k in wanted:
            e = embs[k].float()
            out[k][s : s + b] = (e[:b] + e[b:]).cpu().numpy()
    return out


@dataclasses.dataclass
class PairSetResult:
    """k-fold results of one verification set at one exit.

    Attributes:
        name: the set ("lfw", "cfp_fp", ... : the file name without extension).
        exit: the exit (1-based block).
        kfold: :class:`vitfree.metrics.KFoldResult` (fractions, not percent).
        n_pairs: pairs in the set.
        cost: per-exit cost record (gflops, flop_ratio, speedup, ...).
    """

    name: str
    exit: int
    kfold: KFoldResult
    n_pairs: int
    cost: dict[str, Any] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        k = self.kfold
        return {
            "set": self.name,
            "exit": self.exit,
            "n_pairs": self.n_pairs,
            "accuracy_mean": round(k.mean * 100, 4),
            "accuracy_std": round(k.std * 100, 4),
            "accuracies": [round(float(a) * 100, 4) for a in k.accuracies],
            "thresholds": [round(float(t), 4) for t in k.thresholds],
            "val_far": k.far_target,
            "val_mean": round(k.val_mean * 100, 4),
            "val_std": round(k.val_std * 100, 4),
            "far_mean": k.far_mean,
            "cost": self.cost,
        }


def evaluate_pairset(
    model: VisionTransformer,
    pairset: Any,
    exits: Sequence[int] | None = None,
    *,
    name: str | None = None,
    batch_size: int = 64,
    n_folds: int = 10,
    far_target: float = 1e-3,
    costs: Mapping[str, Mapping[str, Any]] | None = None,
    device: str | torch.device | None = None,
    amp: str | None = None,
    progress: bool = False,
) -> list[PairSetResult]:
    """The ``.bin`` protocol at every exit: :func:`extract_bin` + :func:`kfold_accuracy`.

    Args:
        pairset: a :class:`vitfree.data.PairSet` (pair i = images 2i and 2i+1).
        name: label of the set (default: its source file name without extension).
        n_folds, far_target: the protocol (10 contiguous folds, VAL@FAR=1e-3).
        costs: per-exit cost records keyed by ``str(exit)`` (:func:`exit_cost_table`).

    Returns:
        One :class:`PairSetResult` per exit, in exit order.
    """
    issame = np.asarray(pairset.issame, dtype=bool)
    embs = extract_bin(model, pairset, exits, batch_size, device=device, amp=amp, progress=progress)
    label = name or Path(getattr(pairset, "source", "") or "pairs").stem
    results = []
    for k, e in embs.items():
        kf = kfold_accuracy(e[0::2], e[1::2], issame, n_folds, far_target=far_target)
        cost = dict((costs or {}).get(str(k), {}))
        results.append(PairSetResult(label, k, kf, int(issame.size), cost))
    return results
