"""Per-exit feature files: the hand-off between extraction and evaluation.

A *feature store* is a folder with one ``.npy`` per exit, rows in meta-file order::

    features/
      manifest.json            {"exits": [4, 6, ...], "n_images": N, "dim": 512, "costs": {...}}
      exit_04.npy              (N, 512) float32, embedding of each image at exit 4
      exit_04_flip.npy         (N, 512) float32, embedding of its horizontal flip (optional)
      ...

:func:`load_feature_sets` also reads a single ``.npy`` (one feature set), an ``.npz`` (one
feature set per array; an array named ``<name>_flip`` holds the flips of ``<name>``), or
insightface's saved ``(N, 2D)`` matrix of image and flip halves (``flip_halves=True``).
Arrays are memory-mapped, not read into memory, where the format allows.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["FeatureSet", "exit_filename", "load_feature_sets", "read_manifest", "write_manifest"]

_EXIT_FILE = re.compile(r"^exit_(\d+)(_flip)?\.npy$")


@dataclass
class FeatureSet:
    """Image features of one exit (or one model).

    Attributes:
        label: display name ("exit 4", or the array / file name).
        feats: (N, D) float image embeddings (possibly memory-mapped).
        flip: (N, D) embeddings of the flipped images, or None.
        exit: the exit index (1-based block), when known.
        cost: optional cost record of this exit (gflops, params, flop_ratio, ...).
    """

    label: str
    feats: npt.NDArray[Any]
    flip: npt.NDArray[Any] | None = None
    exit: int | None = None
    cost: dict[str, Any] = field(default_factory=dict)


def exit_filename(k: int, flip: bool = False) -> str:
    """``exit_04.npy`` / ``exit_04_flip.npy``."""
    return f"exit_{k:02d}{'_flip' if flip else ''}.npy"


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``manifest.json`` of a feature store ({} when absent)."""
    p = Path(folder) / "manifest.json"
    if not p.exists():
        return {}
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p} is not valid JSON: {exc}") from None


def write_manifest(folder: str | os.PathLike[str], manifest: dict[str, Any]) -> Path:
    """Write ``manifest.json`` atomically (so an interrupted run never leaves half a file)."""
    p = Path(folder) / "manifest.json"
    tmp = p.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    os.replace(tmp, p)
    return p


def _check(arr: np.ndarray, where: str) -> np.ndarray:
    if arr.ndim != 2:
        raise ValueError(f"{where}: expected an (N, D) feature matrix, got shape {arr.shape}")
    if arr.dtype.kind != "f":
        raise ValueError(f"{where}: expected float features, got dtype {arr.dtype}")
    return arr


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ValueError(f"cannot read {path} as a .npy array: {exc}") from None


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
        manifest = read_manifest(p)
        if manifest.get("complete") is False and not allow_incomplete:
            raise ValueError(
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
        wanted = sorted(found) if exits is None else list(exits)
        if not wanted:
            raise FileNotFoundError(f"no exit_XX.npy feature files in {p}")
        costs = manifest.get("costs", {})
        for k in wanted:
            files = found[k]
            if "feats" not in files:
                raise FileNotFoundError(f"{p / exit_filename(k, True)} has no {exit_filename(k)}")
            feats = _check(_load_npy(files["feats"]), str(files["feats"]))
            flip = _check(_load_npy(files["flip"]), str(files["flip"])) if "flip" in files else None
            sets.append(FeatureSet(f"exit {k}", feats, flip, k, dict(costs.get(str(k), {}))))
    elif p.suffix == ".npz":
        try:
            z = np.load(p, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise ValueError(f"cannot read {p} as an .npz archive: {exc}") from None
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
        raise ValueError(f"{p}: expected a folder of exit_XX.npy files, an .npz or an .npy")
    for s in sets:
        if flip_halves:
            if s.flip is not None:
                raise ValueError(f"{s.label}: flip_halves given but a separate flip array exists")
            d = s.feats.shape[1]
            if d % 2:
                raise ValueError(f"{s.label}: flip_halves needs an even width, got {d}")
            s.feats, s.flip = s.feats[:, : d // 2], s.feats[:, d // 2 :]
        if s.flip is not None and s.flip.shape != s.feats.shape:
            raise ValueError(f"{s.label}: flip features have shape {s.flip.shape}, features {s.feats.shape}")
    return sets
