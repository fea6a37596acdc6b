"""Where and how models run: device, mixed precision, the torchrun process group, workers.

Shared by every pipeline that runs a model (extraction, ``.bin`` evaluation, speed
measurement, and later fine-tuning, analysis and dynamic exits), so that ``--device``,
``--amp``, ``torchrun`` and ``--workers`` mean the same thing everywhere.

* :func:`resolve_device`: ``"auto"`` -> CUDA when available, else CPU; under torchrun a bare
  ``"cuda"`` is this process's GPU.
* :func:`amp_dtype` / :func:`autocast`: ``"bf16"``/``"fp16"`` autocast on CUDA only (on CPU the
  model runs in float32, as the reference does).
* :class:`Runtime`: the three resolved together, :func:`runtime` builds it.
* :class:`Dist` / :func:`dist_setup`: join or start the process group of a torchrun launch.
* :func:`worker_context` / :func:`default_workers`: DataLoader worker start method and count.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from typing import Any

import torch

from vitfree.errors import InputError

__all__ = [
    "AMP_DTYPES",
    "Dist",
    "Runtime",
    "amp_dtype",
    "autocast",
    "default_workers",
    "dist_setup",
    "resolve_device",
    "runtime",
    "synchronize",
    "worker_context",
]

#: ``--amp`` names and their autocast dtypes.
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"``: CUDA when available, else CPU; otherwise the device given.

    Under ``torchrun`` a bare ``"cuda"`` means this process's GPU (``cuda:LOCAL_RANK``).
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise InputError(f"unknown device {device!r}: use cpu, cuda, cuda:N or auto") from e
    if dev.type not in ("cpu", "cuda"):
        raise InputError(f"device {str(dev)!r} is not supported: use cpu, cuda, cuda:N or auto")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {str(dev)!r} asked for, but CUDA is not available here")
        if dev.index is None:
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        elif dev.index >= torch.cuda.device_count():
            raise InputError(
                f"device {str(dev)!r} asked for, but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
    return dev


def amp_dtype(amp: str | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``--amp`` (None for fp32); raises unless ``device`` is CUDA."""
    if amp in (None, "", "none", "fp32"):
        return None
    if amp not in AMP_DTYPES:
        raise InputError(f"amp must be 'bf16', 'fp16' or None, got {amp!r}")
    if device.type != "cuda":
        raise InputError(
            f"--amp {amp} needs a CUDA device (running on {device}); on CPU the model runs "
            f"in float32, as the reference does"
        )
    return AMP_DTYPES[amp]


def autocast(device: torch.device, amp_dtype: torch.dtype | None) -> Any:
    """``torch.autocast`` in ``amp_dtype`` on ``device``, or a no-op context for None."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclasses.dataclass(frozen=True)
class Runtime:
    """A resolved device and precision: what every model-running pipeline takes.

    Attributes:
        device: the torch device.
        amp: ``"bf16"``, ``"fp16"`` or None (float32).
        amp_dtype: the autocast dtype, or None.
    """

    device: torch.device
    amp: str | None = None
    amp_dtype: torch.dtype | None = None

    def autocast(self) -> Any:
        """The autocast context of this runtime (a no-op for float32)."""
        return autocast(self.device, self.amp_dtype)


def runtime(device: str | torch.device | None = None, amp: str | None = None) -> Runtime:
    """Resolve ``device`` (:func:`resolve_device`) and ``amp`` (:func:`amp_dtype`) together."""
    dev = resolve_device(device)
    dt = amp_dtype(amp, dev)
    return Runtime(dev, amp if dt is not None else None, dt)


@dataclasses.dataclass
class Dist:
    """This process in a torchrun launch (rank 0 of 1 otherwise).

    Attributes:
        rank, world, local_rank: from the process group / torchrun's environment.
        owns_group: the group was started here (and :meth:`close` destroys it).
        backend: "gloo" (CPU), "nccl" (GPU) or "" without a group.
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False
    backend: str = ""

    def barrier(self) -> None:
        """Wait for every rank (no-op in a single process)."""
        if self.world > 1:
            import torch.distributed as dist

            if self.backend == "nccl":
                dist.barrier(device_ids=[torch.cuda.current_device()])
            else:
                dist.barrier()

    def close(self) -> None:
        """Destroy the process group if it was started here."""
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def dist_setup(device: torch.device, distributed: bool | None) -> Dist:
    """Join (or start, from torchrun's environment) the process group."""
    if distributed is False or not torch.distributed.is_available():
        return Dist()
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():
        return Dist(
            dist.get_rank(), dist.get_world_size(), local_rank, False, str(dist.get_backend())
        )
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        if distributed:
            raise InputError(
                "distributed=True but WORLD_SIZE is not set: start with torchrun "
                "--nproc_per_node N, or call torch.distributed.init_process_group first"
            )
        return Dist()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank, True, backend)


def worker_context() -> Any:
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


def default_workers(world: int) -> int:
    """The CPUs this process may use (its affinity), shared among ``world`` processes; >= 1.

    Decoding and aligning IJB crops costs about 2.5 ms per image per core, so on a GPU
    machine the workers, not the model, bound an extraction: use every core there is.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cpus or 1) // max(world, 1))


