"""Per-exit IJB-B/C evaluation from image features: 1:1 verification and 1:N identification.

This is the engine behind ``vitfree eval features`` (and behind ``vitfree eval ijbc`` once
features are extracted): for every feature set (one per exit) it aggregates templates once and
reuses them for both protocols.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vitfree.data.ijb import IJB1N, IJBMeta
from vitfree.features import FeatureSet
from vitfree.identification import (
    DEFAULT_FPIRS,
    DEFAULT_RANKS,
    IJBIdentificationResult,
    ijb_identification,
)
from vitfree.ijb import VerificationResult, evaluate_verification
from vitfree.metrics import DEFAULT_FARS

__all__ = ["ExitResult", "IJBOptions", "evaluate_ijb_exits"]


@dataclass(frozen=True)
class IJBOptions:
    """How image features become template features (PROTOCOLS §3 community default: flip on,
    detector score on, no per-image normalisation) and which metrics are computed.

    Attributes:
        use_flip: add the flipped-image features when present.
        use_faceness: weight images by the detector score.
        normalize_images: L2-normalise each image vector first.
        fars: FAR targets of the 1:1 table; fpirs, ranks: of the 1:N table.
        search: faiss search kind for 1:N ("flat" exact, "ivf", "hnsw").
    """

    use_flip: bool = True
    use_faceness: bool = True
    normalize_images: bool = False
    fars: Sequence[float] = DEFAULT_FARS
    fpirs: Sequence[float] = DEFAULT_FPIRS
    ranks: Sequence[int] = DEFAULT_RANKS
    search: str = "flat"


@dataclass
class ExitResult:
    """Results of one feature set (one exit)."""

    label: str
    exit: int | None
    verification: VerificationResult
    identification: IJBIdentificationResult | None
    cost: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "exit": self.exit, "cost": self.cost}
        out["verification"] = self.verification.as_dict()
        if self.identification is not None:
            ident = self.identification
            out["identification"] = {
                "fpirs": [float(f) for f in ident.fpirs],
                "tpir": [round(float(t) * 100, 4) for t in ident.tpir],
                "rank": {str(k): round(float(v) * 100, 4) for k, v in ident.rank.items()},
                "galleries": {
                    name: {
                        "tpir": [round(float(t) * 100, 4) for t in g.tpir],
                        "rank": {str(k): round(float(v) * 100, 4) for k, v in g.rank.items()},
                        "n_mated": g.n_mated,
                        "n_nonmated": g.n_nonmated,
                    }
                    for name, g in ident.galleries.items()
                },
                "n_probes": ident.n_probes,
            }
        out["seconds"] = round(self.seconds, 3)
        return out


def evaluate_ijb_exits(
    feature_sets: Sequence[FeatureSet],
    meta: IJBMeta,
    onen: IJB1N | None = None,
    options: IJBOptions = IJBOptions(),
    progress: Callable[[str], None] | None = None,
) -> list[ExitResult]:
    """Evaluate each feature set with the IJB 1:1 (and, given ``onen``, 1:N) protocols.

    Args:
        feature_sets: one per exit; rows in the order of ``meta`` (face_tid_mid.txt).
        meta: the 1:1 meta data (:func:`vitfree.data.load_ijb_meta`).
        onen: the 1:N lists (:func:`vitfree.data.load_ijb_1n`), or None to skip 1:N.
        options: see :class:`IJBOptions`.
        progress: called with a short message as each step starts (for progress bars).

    Raises:
        ValueError: a feature set whose row count differs from the meta files.
    """
    n = len(meta)
    for fs in feature_sets:
        if fs.feats.shape[0] != n:
            raise ValueError(
                f"{fs.label}: {fs.feats.shape[0]} feature rows but the meta files list {n} images"
                " (rows must follow face_tid_mid.txt)"
            )
    results = []
    for fs in feature_sets:
        t0 = time.perf_counter()
        if progress:
            progress(f"{fs.label}: 1:1")
        ver = evaluate_verification(
            np.asarray(fs.feats),
            meta.templates,
            meta.medias,
            meta.p1,
            meta.p2,
            meta.labels,
            faceness=meta.faceness if options.use_faceness else None,
            flip_feats=np.asarray(fs.flip) if (options.use_flip and fs.flip is not None) else None,
            normalize_images=options.normalize_images,
            fars=options.fars,
        )
        ident = None
        if onen is not None:
            if progress:
                progress(f"{fs.label}: 1:N")
            ident = ijb_identification(
                ver.template_feats,
                ver.template_ids,
                onen.gallery1,
                onen.gallery2,
                onen.probes,
                fpirs=options.fpirs,
                ranks=options.ranks,
                gallery_names=onen.gallery_names,
                search=options.search,  # type: ignore[arg-type]
            )
        results.append(ExitResult(fs.label, fs.exit, ver, ident, fs.cost, time.perf_counter() - t0))
    return results
