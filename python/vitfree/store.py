"""The feature store: per-exit feature files with one owner, from extraction to evaluation.

A *feature store* is a folder with one ``.npy`` per exit (and per flip), rows in meta-file
order, and a ``manifest.json`` whose schema is :class:`Manifest`::

    features/
      manifest.json            exits, n_images, dim, model identity, costs, done row ranges, ...
      exit_04.npy              (N, 512) float32, embedding of each image at exit 4
      exit_04_flip.npy         (N, 512) float32, embedding of its horizontal flip (optional)
      ...

This module is the only one that reads or writes that layout:

* writing: :class:`FeatureStore` opens (or resumes) a store, takes batches of rows
  (:meth:`FeatureStore.write`) into memory-mapped files, and records progress atomically
  (:meth:`FeatureStore.save`: the maps are flushed first, then the manifest replaced, so a
  row listed as done is on disk even after a hard kill); :func:`assemble` copies the partial
  stores of a torchrun launch into the final one; :func:`write_feature_store` writes whole
  in-memory arrays (the demo, tests);
* reading: :func:`load_feature_sets` reads a store, an ``.npz`` (one feature set per array;
  ``<name>_flip`` holds the flips of ``<name>``) or an ``.npy``, memory-mapped where the
  format allows, and insightface's saved ``(N, 2D)`` image+flip matrix (``flip_halves``).

It needs numpy only (no torch), so evaluating saved features stays light.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vitfree._checks import as_features
from vitfree.costs import ExitCost, cost_table
from vitfree.errors import InputError, StoreError

__all__ = [
    "FEATURE_FORMAT",
    "FeatureSet",
    "FeatureStore",
    "Manifest",
    "StoreLock",
    "assemble",
    "exit_filename",
    "load_feature_sets",
    "read_manifest",
    "write_feature_store",
    "write_manifest",
]

#: ``format`` field of the manifests vitfree writes.
FEATURE_FORMAT = "vitfree.features"
STORE_VERSION = 1

_EXIT_FILE = re.compile(r"^exit_(\d+)(_flip)?\.npy$")


def exit_filename(k: int, flip: bool = False) -> str:
    """``exit_04.npy`` / ``exit_04_flip.npy``."""
    return f"exit_{k:02d}{'_flip' if flip else ''}.npy"


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``manifest.json`` of a feature store as a JSON dict ({} when absent)."""
    p = Path(folder) / "manifest.json"
    if not p.exists():
        return {}
    try:
        obj = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise StoreError(f"{p} is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise StoreError(f"{p} does not hold a JSON object")
    return obj


def write_manifest(folder: str | os.PathLike[str], manifest: Mapping[str, Any]) -> Path:
    """Write ``manifest.json`` atomically (so an interrupted run never leaves half a file)."""
    p = Path(folder) / "manifest.json"
    tmp = p.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(dict(manifest), indent=2, sort_keys=True))
    os.replace(tmp, p)
    return p


# --------------------------------------------------------------------------------------
# the manifest schema
# --------------------------------------------------------------------------------------

#: Fields that say *what* a store holds: resuming is refused when any differs.
IDENTITY_FIELDS = {
    "model_fingerprint": "model weights",
    "model_config": "model architecture",
    "exits": "exits",
    "n_images": "number of images",
    "dim": "embedding size",
    "images_digest": "image list (names and landmarks of the meta files)",
    "amp": "precision (--amp)",
    "flip": "flip features",
    "face_input": "face preprocessing (alignment arithmetic and template, pixel scaling: --reproduce)",
}

#: What a store without a ``face_input`` record was extracted with (vitfree before presets):
#: float64 alignment to the docs/protocols.md §3.3 template, ``(x / 255 - 0.5) / 0.5``.
LEGACY_FACE_INPUT: dict[str, Any] = {
    "align_dtype": "float64",
    "template": "arcface",
    "pixel_scaling": "div255",
}


@dataclass
class Manifest:
    """The schema of ``manifest.json``.  Only ``exits`` is required (stores of other tools).

    Identity (what the store holds; see :data:`IDENTITY_FIELDS`):
        format, version, exits, n_images, dim, flip, amp, model_fingerprint, model_config,
        images_digest.
    Description:
        dataset, meta_dir, image_dir, model (arch, checkpoint, depth, exit_heads, config),
        costs (``{exit: ExitCost}``), skip_bad, rows_order, synthetic.
    ``face_input`` (identity too): how the faces were aligned and scaled
    (:meth:`vitfree.reproduce.FaceInput.as_dict`); absent in stores written before it was
    recorded, which were made as :data:`LEGACY_FACE_INPUT` says.  Image and flip features
    are separate files, so every N/D/F mode can be computed from one store.
    Progress (written by extraction; ``done`` is None for stores not written that way):
        done ([[start, stop), ...] row ranges), n_done, complete, skipped
        (``{"count", "rows", "files"}``: unusable images, written as zeros), damaged_used
        (the same for damaged images used as decoded), problems (``{row: what is wrong}``
        for both).
    Anything else (a torchrun part's rank and shard, ``assembled_from``, notes) is kept in
    ``extra`` and written back unchanged.
    """

    exits: list[int]
    n_images: int | None = None
    dim: int | None = None
    format: str | None = FEATURE_FORMAT
    version: int | None = STORE_VERSION
    flip: bool | None = None
    amp: str | None = None
    model_fingerprint: str | None = None
    model_config: dict[str, Any] | None = None
    images_digest: str | None = None
    dataset: str | None = None
    meta_dir: str | None = None
    image_dir: str | None = None
    model: dict[str, Any] | None = None
    costs: dict[int, ExitCost] = field(default_factory=dict)
    skip_bad: bool | None = None
    rows_order: str | None = None
    synthetic: bool | None = None
    face_input: dict[str, Any] | None = None
    done: list[list[int]] | None = None
    n_done: int | None = None
    complete: bool | None = None
    skipped: dict[str, Any] | None = None
    damaged_used: dict[str, Any] | None = None
    problems: dict[str, str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: unset fields left out, costs keyed by ``str(exit)``, extra merged."""
        out: dict[str, Any] = dict(self.extra)
        for f in dataclasses.fields(self):
            if f.name in ("extra", "costs"):
                continue
            v = getattr(self, f.name)
            if v is not None:
                out[f.name] = v
        if self.costs:
            out["costs"] = {str(k): c.as_dict() for k, c in sorted(self.costs.items())}
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str | os.PathLike[str] = "manifest") -> Manifest:
        """Parse a manifest's JSON dict.

        Raises:
            StoreError: a field of the wrong type (the field and the file named).
        """
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kw: dict[str, Any] = {k: v for k, v in d.items() if k in names}
        try:
            kw["exits"] = [int(k) for k in d.get("exits", [])]
            kw["costs"] = cost_table(d.get("costs"))
        except (TypeError, ValueError) as e:
            raise StoreError(f"{where}: malformed exits or costs: {e}") from None
        return cls(**kw, extra={k: v for k, v in d.items() if k not in names})

    @classmethod
    def read(cls, folder: str | os.PathLike[str]) -> Manifest | None:
        """The manifest of ``folder``, or None when it has none."""
        d = read_manifest(folder)
        return cls.from_dict(d, Path(folder) / "manifest.json") if d else None

    def write(self, folder: str | os.PathLike[str]) -> Path:
        """Write atomically into ``folder/manifest.json``."""
        return write_manifest(folder, self.to_dict())

    def done_mask(self, n: int, where: str | os.PathLike[str] = "manifest") -> npt.NDArray[np.bool_]:
        """(n,) bool: the rows recorded as done."""
        return _done_mask(self.done or [], n, Path(where))

    def identity(self) -> dict[str, Any]:
        """The identity fields, as stored (``face_input`` reduced to its three settings;
        a store without one has :data:`LEGACY_FACE_INPUT`)."""
        d = self.to_dict()
        out = {k: d.get(k) for k in IDENTITY_FIELDS}
        fi = d.get("face_input") or LEGACY_FACE_INPUT
        out["face_input"] = {k: fi.get(k) for k in LEGACY_FACE_INPUT}
        return out

    def identity_diff(self, other: Manifest) -> list[str]:
        """Human-readable differences of identity between ``self`` (stored) and ``other``."""
        old, new = self.identity(), other.identity()
        out = []
        for key, label in IDENTITY_FIELDS.items():
            if old.get(key) != new.get(key):
                a, b = old.get(key), new.get(key)
                if key == "model_config":
                    a = {k: v for k, v in (a or {}).items() if (b or {}).get(k) != v}
                    b = {k: v for k, v in (b or {}).items() if k in a}
                out.append(f"{label}: stored {a!r}, now {b!r}")
        return out


def _ranges(done: npt.NDArray[np.bool_]) -> list[list[int]]:
    """[[start, stop), ...] of the True runs of ``done``."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], done.astype(np.int8), [0]])))
    return [[int(a), int(b)] for a, b in zip(edges[0::2], edges[1::2])]


def _done_mask(ranges: Sequence[Sequence[int]], n: int, where: Path) -> npt.NDArray[np.bool_]:
    done = np.zeros(n, dtype=bool)
    for r in ranges:
        a, b = int(r[0]), int(r[1])
        if not 0 <= a <= b <= n:
            raise StoreError(f"{where}: done range {list(r)} lies outside 0..{n}")
        done[a:b] = True
    return done


def _check_resumable(folder: Path, old: Manifest, new: Manifest, what: str) -> None:
    """Raise unless ``old`` was written by extraction for the same identity as ``new``."""
    if old.format != FEATURE_FORMAT or old.done is None:
        raise StoreError(
            f"{folder / 'manifest.json'} was not written by vitfree extraction (no 'done' "
            f"record), so it cannot be resumed; use another output folder or overwrite=True "
            f"(--overwrite)"
        )
    diff = old.identity_diff(new)
    if diff:
        raise StoreError(
            f"cannot resume the {what} in {folder}: it was extracted with different "
            f"settings:\n  " + "\n  ".join(diff) + "\nuse another output folder, or "
            "overwrite=True (--overwrite) to start over"
        )


def check_resumable(folder: str | os.PathLike[str], manifest: Manifest, what: str = "features") -> None:
    """Raise :class:`StoreError` unless ``folder`` holds no store or one ``manifest`` resumes."""
    old = Manifest.read(folder)
    if old is not None:
        _check_resumable(Path(folder), old, manifest, what)


# --------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------


class StoreLock:
    """An exclusive lock on a store folder while one process writes it (``.lock``, flock).

    A second extraction into the same folder, resuming or with ``overwrite``, is refused
    while the first runs, instead of wiping the files under it.  The operating system drops
    the lock when the process ends, also after a kill, so a stale lock never blocks.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.path = Path(folder) / ".lock"
        self._fd: int | None = None

    def acquire(self) -> StoreLock:
        """Take the lock or raise :class:`StoreError` naming the process that holds it."""
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StoreError(
                f"another process (pid {holder}) is writing the feature store in "
                f"{self.path.parent}; wait for it to finish, or use another output folder"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (idempotent)."""
        if self._fd is not None:
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StoreLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _reserve(path: Path, folder: Path, needed_total: int) -> None:
    """Allocate the blocks of a new memory-mapped file now, so that a full disk is an error
    here and not a SIGBUS in the middle of an extraction."""
    size = path.stat().st_size
    try:
        with open(path, "r+b") as f:
            os.posix_fallocate(f.fileno(), 0, size)
    except OSError as e:
        import errno

        if e.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            return  # the file system cannot reserve: the free-space check before is all we have
        free = shutil.disk_usage(folder).free
        raise StoreError(
            f"cannot reserve {size} bytes for {path} ({e.strerror or e}): the feature files in "
            f"{folder} need {needed_total} bytes, {free} are free; free some space or use "
            f"another output folder"
        ) from None


class FeatureStore:
    """``rows`` (sorted meta rows) -> per-exit memory-mapped files in ``folder``.

    Position ``i`` of the files holds meta row ``rows[i]`` (the final store: ``rows`` =
    0..N-1, so position = row; a torchrun part: this rank's rows).  ``done`` and
    ``skipped`` are the progress; :meth:`save` records them.  Open with :meth:`open`.
    """

    def __init__(
        self,
        folder: Path,
        rows: npt.NDArray[np.int64],
        manifest: Manifest,
        fresh: bool,
        lock: StoreLock | None = None,
    ) -> None:
        self.folder = folder
        self.lock = lock
        self.rows = rows
        self.exits = list(manifest.exits)
        self.manifest = manifest
        n = int(rows.shape[0])
        dim = int(manifest.dim or 0)
        mode = "w+" if fresh else "r+"
        self.files: dict[tuple[int, bool], np.memmap] = {}
        needed = 2 * len(self.exits) * n * dim * 4
        if fresh and n:
            old = sum(
                (folder / exit_filename(k, fl)).stat().st_size
                for k in self.exits
                for fl in (False, True)
                if (folder / exit_filename(k, fl)).is_file()
            )
            free = shutil.disk_usage(folder).free + old
            if needed > free:
                raise StoreError(
                    f"not enough space in {folder}: the feature files need {needed} bytes "
                    f"({needed / 2**30:.2f} GiB), {free} are free; free some space or use "
                    f"another output folder"
                )
        for k in self.exits if n else []:  # an empty shard has no files (mmap needs >= 1 byte)
            for flip in (False, True):
                p = folder / exit_filename(k, flip)
                if mode == "r+":
                    try:
                        mm = np.lib.format.open_memmap(p, mode="r+")
                    except (OSError, ValueError) as e:
                        raise StoreError(
                            f"cannot resume {folder}: {p.name} is missing or unreadable ({e}); "
                            f"start over with overwrite=True (--overwrite) or another folder"
                        ) from None
                    if mm.shape != (n, dim) or mm.dtype != np.float32:
                        raise StoreError(
                            f"cannot resume {folder}: {p.name} is {mm.dtype} {mm.shape}, "
                            f"expected float32 {(n, dim)}; start over with overwrite=True "
                            f"(--overwrite) or another folder"
                        )
                else:
                    try:
                        mm = np.lib.format.open_memmap(
                            p, mode="w+", dtype=np.float32, shape=(n, dim)
                        )
                    except OSError as e:
                        raise StoreError(f"cannot create {p}: {e.strerror or e}") from None
                    _reserve(p, folder, needed)
                self.files[(k, flip)] = mm
        #: {row: what is wrong} of the skipped and the damaged-but-used images
        self.problems: dict[int, str] = {}
        if fresh:
            self.done = np.zeros(n, dtype=bool)
            self.skipped: list[int] = []
            self.damaged: list[int] = []
        else:
            self.done = _done_mask(manifest.done or [], n, folder)
            self.skipped = [int(r) for r in (manifest.skipped or {}).get("rows", [])]
            self.damaged = [int(r) for r in (manifest.damaged_used or {}).get("rows", [])]
            self.problems = {int(k): str(v) for k, v in (manifest.problems or {}).items()}

    @classmethod
    def open(
        cls,
        folder: str | os.PathLike[str],
        rows: npt.NDArray[np.int64],
        manifest: Manifest,
        overwrite: bool = False,
        what: str = "features",
        *,
        lock: bool = True,
    ) -> FeatureStore:
        """Resume the store in ``folder`` if it was written for ``manifest``'s identity, else
        start one (``overwrite=True`` always starts over).

        ``manifest`` describes the store (exits, dim, identity, costs, ...); progress and the
        unknown fields of an existing manifest are carried over when resuming.  The store
        holds a :class:`StoreLock` on the folder until :meth:`close` (``lock=False`` for a
        caller that holds it already); new files have their disk space reserved.

        Raises:
            StoreError: another process writes this store; an existing store of other
                settings (which differ is said), or one not written by extraction, or
                missing/damaged files; not enough disk space (bytes needed and free said).
        """
        folder = Path(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create the feature store folder {folder}: {e.strerror or e}") from None
        held = StoreLock(folder).acquire() if lock else None
        try:
            return cls._open(folder, rows, manifest, overwrite, what, held)
        except BaseException:
            if held is not None:
                held.release()
            raise

    @classmethod
    def _open(
        cls,
        folder: Path,
        rows: npt.NDArray[np.int64],
        manifest: Manifest,
        overwrite: bool,
        what: str,
        lock: StoreLock | None,
    ) -> FeatureStore:
        old = None if overwrite else Manifest.read(folder)
        if old is not None:
            _check_resumable(folder, old, manifest, what)
            manifest = dataclasses.replace(
                manifest,
                done=old.done,
                skipped=old.skipped,
                damaged_used=old.damaged_used,
                problems=old.problems,
                extra={**old.extra, **manifest.extra},
            )
        return cls(folder, rows, manifest, fresh=old is None, lock=lock)

    def pending(self) -> npt.NDArray[np.int64]:
        """The rows not done yet."""
        return self.rows[~self.done]

    def positions(self, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """File positions of meta ``rows``."""
        pos = np.searchsorted(self.rows, rows)
        return pos.astype(np.int64)

    def write(
        self,
        pos: npt.NDArray[np.int64],
        feats: Mapping[int, npt.NDArray[np.float32]],
        flips: Mapping[int, npt.NDArray[np.float32]],
    ) -> None:
        """Store a batch: ``feats[k]``/``flips[k]`` (B, D) at positions ``pos``; mark them done."""
        # Batches are contiguous runs of rows unless resuming around holes: slices are cheaper.
        contiguous = pos.size > 0 and int(pos[-1]) - int(pos[0]) == pos.size - 1
        sl: Any = slice(int(pos[0]), int(pos[-1]) + 1) if contiguous else pos
        for k in self.exits:
            self.files[(k, False)][sl] = feats[k]
            self.files[(k, True)][sl] = flips[k]
        self.done[pos] = True

    def write_zeros(self, rows: npt.NDArray[np.int64], problems: Mapping[int, str]) -> None:
        """Skip meta ``rows``: zero features, done, listed as skipped with their problems."""
        if rows.size == 0:
            return
        pos = self.positions(rows)
        for mm in self.files.values():
            mm[pos] = 0.0
        self.done[pos] = True
        self.skipped.extend(int(r) for r in rows)
        self.problems.update({int(r): problems[int(r)] for r in rows if int(r) in problems})

    def save(self, names: npt.NDArray[np.str_] | None = None) -> None:
        """Flush the maps, then record the done ranges (this order makes 'done' trustworthy).

        Raises:
            StoreError: the manifest cannot be written (disk full, permissions): the path
                and the reason named; the previous manifest stays, so the store still
                resumes from the last save.
        """
        for mm in self.files.values():
            mm.flush()
        m = self.manifest
        m.done = _ranges(self.done)
        m.n_done = int(self.done.sum())
        m.complete = bool(self.done.all())

        def record(rows_in: list[int]) -> dict[str, Any]:
            rows = sorted(set(rows_in))
            rec: dict[str, Any] = {"count": len(rows), "rows": rows}
            if names is not None:
                rec["files"] = [str(names[r]) for r in rows]
            return rec

        m.skipped = record(self.skipped)
        m.damaged_used = record(self.damaged) if self.damaged else None
        m.problems = {str(k): v for k, v in sorted(self.problems.items())} or None
        try:
            m.write(self.folder)
        except OSError as e:
            raise StoreError(
                f"cannot write {self.folder / 'manifest.json'}: {e.strerror or e}; the store "
                f"resumes from its last saved state once the cause is fixed"
            ) from None

    def close(self) -> None:
        """Flush and release the memory maps, then the lock."""
        for mm in self.files.values():
            mm.flush()
        self.files.clear()
        if self.lock is not None:
            self.lock.release()


def assemble(
    out: str | os.PathLike[str],
    part_root: str | os.PathLike[str],
    world: int,
    names: npt.NDArray[np.str_],
) -> Manifest:
    """Copy every rank's finished rows (``part_root/rank{r}``) into the final store ``out``.

    Rank 0 calls it after the extraction of a torchrun launch; the final manifest records
    the union of done rows and skipped images, and the parts are removed once complete.
    """
    out, part_root = Path(out), Path(part_root)
    manifest = Manifest.read(out)
    if manifest is None:
        raise StoreError(f"{out}: no manifest.json to assemble into")
    n = int(manifest.n_images or 0)
    done = _done_mask(manifest.done or [], n, out)
    skipped = {int(r) for r in (manifest.skipped or {}).get("rows", [])}
    damaged = {int(r) for r in (manifest.damaged_used or {}).get("rows", [])}
    problems = dict(manifest.problems or {})
    finals = {
        (k, flip): np.lib.format.open_memmap(out / exit_filename(k, flip), mode="r+")
        for k in manifest.exits
        for flip in (False, True)
    }
    all_parts_complete = True
    for r in range(world):
        d = part_root / f"rank{r}"
        pm = Manifest.read(d) or Manifest(exits=manifest.exits)
        rows = np.load(d / "rows.npy", allow_pickle=False)
        pdone = _done_mask(pm.done or [], rows.size, d)
        all_parts_complete &= bool(pdone.all())
        take = np.flatnonzero(pdone)
        if take.size == 0:
            continue
        for (k, flip), mm in finals.items():
            part = np.load(d / exit_filename(k, flip), mmap_mode="r", allow_pickle=False)
            # Copy in blocks of positions so that memory stays bounded on IJB-C.
            for s in range(0, take.size, 65536):
                pos = take[s : s + 65536]
                mm[rows[pos]] = part[pos]
        done[rows[take]] = True
        skipped.update(int(x) for x in (pm.skipped or {}).get("rows", []))
        damaged.update(int(x) for x in (pm.damaged_used or {}).get("rows", []))
        problems.update(pm.problems or {})
    for mm in finals.values():
        mm.flush()
    del finals
    manifest.done = _ranges(done)
    manifest.n_done = int(done.sum())
    manifest.complete = bool(done.all())
    manifest.skipped = {
        "count": len(skipped),
        "rows": sorted(skipped),
        "files": [str(names[r]) for r in sorted(skipped)],
    }
    if damaged:
        manifest.damaged_used = {
            "count": len(damaged),
            "rows": sorted(damaged),
            "files": [str(names[r]) for r in sorted(damaged)],
        }
    manifest.problems = dict(sorted(problems.items(), key=lambda kv: int(kv[0]))) or None
    manifest.extra["assembled_from"] = {"world_size": world, "folder": part_root.name}
    manifest.write(out)
    if all_parts_complete:
        shutil.rmtree(part_root, ignore_errors=True)
    return manifest


def write_feature_store(
    folder: str | os.PathLike[str],
    feats: Mapping[int, npt.ArrayLike] | Iterable[tuple[int, npt.ArrayLike, npt.ArrayLike | None]],
    manifest: Manifest | None = None,
) -> Manifest:
    """Write whole per-exit arrays as a complete store.

    Args:
        folder: the store folder (created).
        feats: ``{exit: (N, D)}``, or an iterable of ``(exit, feats, flips or None)`` that is
            consumed one exit at a time (so a generator keeps one exit in memory).
        manifest: description fields (costs, synthetic, ...); exits, n_images, dim, flip
            and the progress fields are filled in from the arrays.

    Raises:
        ValueError: no exit, or arrays of different shapes.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    items = (
        ((int(k), v, None) for k, v in feats.items()) if isinstance(feats, Mapping) else feats
    )
    exits: list[int] = []
    shape: tuple[int, ...] | None = None
    any_flip = False
    for k, f, fl in items:
        arr = np.asarray(f)
        shape = arr.shape if shape is None else shape
        if arr.ndim != 2 or arr.shape != shape:
            raise InputError(f"exit {k}: features of shape {arr.shape}, expected {shape}")
        np.save(folder / exit_filename(k), arr)
        if fl is not None:
            np.save(folder / exit_filename(k, True), np.asarray(fl))
            any_flip = True
        exits.append(int(k))
    if shape is None:
        raise InputError("write_feature_store needs at least one exit")
    n, dim = int(shape[0]), int(shape[1])
    m = dataclasses.replace(
        manifest or Manifest(exits=exits),
        exits=sorted(exits),
        n_images=n,
        dim=dim,
        flip=any_flip,
        done=[[0, n]],
        n_done=n,
        complete=True,
        skipped={"count": 0, "rows": [], "files": []},
    )
    m.write(folder)
    return m


# --------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------


@dataclass
class FeatureSet:
    """Image features of one exit (or one model).

    Attributes:
        label: display name ("exit 4", or the array / file name).
        feats: (N, D) float image embeddings (possibly memory-mapped).
        flip: (N, D) embeddings of the flipped images, or None.
        exit: the exit index (1-based block), when known.
        cost: cost record of this exit (:class:`vitfree.costs.ExitCost`), when known.
    """

    label: str
    feats: npt.NDArray[Any]
    flip: npt.NDArray[Any] | None = None
    exit: int | None = None
    cost: ExitCost | None = None


def _check(arr: np.ndarray, where: str) -> np.ndarray:
    return as_features(arr, where, allow_empty=True, contiguous=False)


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise StoreError(f"cannot read {path} as a .npy array: {exc}") from None


def load_feature_sets(
    path: str | os.PathLike[str],
    *,
    flip_halves: bool = False,
    exits: list[int] | None = None,
    allow_incomplete: bool = False,
) -> list[FeatureSet]:
    """Read feature sets from a feature store folder, an ``.npz`` or an ``.npy``.

    Args:
        path: folder (``exit_XX.npy`` files), ``.npz`` or ``.npy``.
        flip_halves: the arrays are ``(N, 2D)`` with image features in the first half and flip
            features in the second (insightface's saved ``img_feats``).
        exits: only these exits of a folder (default: all found).
        allow_incomplete: read a folder whose manifest says the extraction is not finished
            (rows not yet extracted are zeros); by default that is an error.

    Raises:
        FileNotFoundError: the path or a requested exit file does not exist (named).
        ValueError: unreadable files, non-2-D arrays, flips whose shape differs.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"features not found: {p}")
    sets: list[FeatureSet] = []
    if p.is_dir():
        manifest = Manifest.read(p) or Manifest(exits=[])
        if manifest.complete is False and not allow_incomplete:
            raise StoreError(
                f"{p}: the extraction recorded in manifest.json is not complete (rows not yet "
                "extracted are zeros); rerun the extraction to resume it, or pass "
                "allow_incomplete=True to read it anyway"
            )
        found: dict[int, dict[str, Path]] = {}
        for f in sorted(p.iterdir()):
            m = _EXIT_FILE.match(f.name)
            if m:
                found.setdefault(int(m.group(1)), {})["flip" if m.group(2) else "feats"] = f
        if exits is not None:
            missing = [k for k in exits if "feats" not in found.get(k, {})]
            if missing:
                raise FileNotFoundError(
                    f"no features for exits {missing} in {p} (looked for "
                    f"{', '.join(exit_filename(k) for k in missing)}; found exits {sorted(found)})"
                )
        wanted = sorted(found) if exits is None else list(dict.fromkeys(exits))  # each exit once
        if not wanted:
            raise FileNotFoundError(f"no exit_XX.npy feature files in {p}")
        costs = manifest.costs
        for k in wanted:
            files = found[k]
            if "feats" not in files:
                raise FileNotFoundError(f"{p / exit_filename(k, True)} has no {exit_filename(k)}")
            feats = _check(_load_npy(files["feats"]), str(files["feats"]))
            flip = _check(_load_npy(files["flip"]), str(files["flip"])) if "flip" in files else None
            sets.append(FeatureSet(f"exit {k}", feats, flip, k, costs.get(k)))
    elif p.suffix == ".npz":
        try:
            z = np.load(p, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise StoreError(f"cannot read {p} as an .npz archive: {exc}") from None
        names = list(z.files)
        for name in names:
            if name.endswith("_flip") and name[: -len("_flip")] in names:
                continue
            feats = _check(z[name], f"{p}[{name}]")
            flip = _check(z[name + "_flip"], f"{p}[{name}_flip]") if name + "_flip" in names else None
            m = re.fullmatch(r"exit_?(\d+)", name)
            sets.append(FeatureSet(name, feats, flip, int(m.group(1)) if m else None))
    elif p.suffix == ".npy":
        sets.append(FeatureSet(p.stem, _check(_load_npy(p), str(p))))
    else:
        raise InputError(f"{p}: expected a folder of exit_XX.npy files, an .npz or an .npy")
    for s in sets:
        if flip_halves:
            if s.flip is not None:
                raise InputError(f"{s.label}: flip_halves given but a separate flip array exists")
            d = s.feats.shape[1]
            if d % 2:
                raise InputError(f"{s.label}: flip_halves needs an even width, got {d}")
            s.feats, s.flip = s.feats[:, : d // 2], s.feats[:, d // 2 :]
        if s.flip is not None and s.flip.shape != s.feats.shape:
            raise InputError(f"{s.label}: flip features have shape {s.flip.shape}, features {s.feats.shape}")
    return sets
