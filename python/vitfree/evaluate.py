"""Per-exit evaluation from features, without torch: the protocols and their orchestration.

* IJB-B/C (docs/protocols.md §3, §4): :func:`evaluate_ijb_exits` aggregates the templates
  of each feature set (one per exit) once and reuses them for 1:1 verification
  (:mod:`vitfree.ijb`) and 1:N identification (:mod:`vitfree.identification`); one
  :class:`ExitResult` per exit.
* LFW-style ``.bin`` sets and pair lists (§5): :func:`evaluate_pairset_embeddings` runs the
  k-fold protocol (:func:`vitfree.metrics.kfold_accuracy`) on each exit's embeddings; one
  :class:`PairSetResult` per exit.

Every result serialises itself (``as_dict``); costs travel as :class:`vitfree.costs.ExitCost`.
This is the engine behind ``vitfree eval features`` and, once features are extracted,
behind ``vitfree eval ijbc|ijbb|bin|pairs``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from vitfree.costs import ExitCost, cost_table
from vitfree.data.ijb import IJB1N, IJBMeta
from vitfree.errors import InputError
from vitfree.identification import (
    DEFAULT_FPIRS,
    DEFAULT_RANKS,
    IJBIdentificationResult,
    ijb_identification,
)
from vitfree.ijb import VerificationResult, evaluate_verification
from vitfree.metrics import DEFAULT_FARS, KFoldResult, kfold_accuracy
from vitfree.store import FeatureSet

__all__ = [
    "ExitResult",
    "IJBOptions",
    "PairSetResult",
    "evaluate_ijb_exits",
    "evaluate_ijb_modes",
    "evaluate_pairset_embeddings",
]


@dataclass(frozen=True)
class IJBOptions:
    """How image features become template features (docs/protocols.md §3 community default: flip on,
    detector score on, no per-image normalisation) and which metrics are computed.

    Attributes:
        use_flip: add the flipped-image features when present.
        use_faceness: weight images by the detector score.
        normalize_images: L2-normalise each image vector first.
        fars: FAR targets of the 1:1 table; fpirs, ranks: of the 1:N table.
        search: faiss search kind for 1:N ("flat" exact, "ivf", "hnsw").
        tar_rule: the TAR@FAR rule the table shows, "nearest" (the community's) or
            "at_most"; results.json always has both (docs/protocols.md §3.7).
    """

    use_flip: bool = True
    use_faceness: bool = True
    normalize_images: bool = False
    fars: Sequence[float] = DEFAULT_FARS
    fpirs: Sequence[float] = DEFAULT_FPIRS
    ranks: Sequence[int] = DEFAULT_RANKS
    search: str = "flat"
    tar_rule: str = "nearest"

    @property
    def mode(self) -> str:
        """The N/D/F name of these switches (``"N0D1F1"``: no normalisation, detector
        score, flip), as ``ijb_evals.py -B`` prints it (docs/reproduce.md)."""
        return f"N{self.normalize_images:d}D{self.use_faceness:d}F{self.use_flip:d}"


@dataclass
class ExitResult:
    """Results of one feature set (one exit) on IJB-B/C.

    Attributes:
        label: display name ("exit 4").
        exit: the exit (1-based block), when known.
        verification: the 1:1 results.
        identification: the 1:N results, or None when not run.
        cost: the exit's cost record, when known.
        seconds: wall time of this exit's evaluation.
        mode: the N/D/F mode (``"N0D1F1"``) of a multi-mode evaluation
            (:func:`evaluate_ijb_modes`), else None.
    """

    label: str
    exit: int | None
    verification: VerificationResult
    identification: IJBIdentificationResult | None
    cost: ExitCost | None = None
    seconds: float = 0.0
    mode: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON form, as in ``results.json``."""
        out: dict[str, Any] = {
            "label": self.label,
            "exit": self.exit,
            "cost": self.cost.as_dict() if self.cost is not None else {},
        }
        if self.mode is not None:
            out["mode"] = self.mode
        out["verification"] = self.verification.as_dict()
        if self.identification is not None:
            out["identification"] = self.identification.as_dict()
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
            raise InputError(
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


def evaluate_ijb_modes(
    feature_sets: Sequence[FeatureSet],
    meta: IJBMeta,
    onen: IJB1N | None,
    options: IJBOptions,
    modes: Sequence[str],
    progress: Callable[[str], None] | None = None,
) -> list[ExitResult]:
    """:func:`evaluate_ijb_exits` once per N/D/F mode, from the same features.

    Image and flip features are kept apart in a feature store, so one extraction gives
    every mode; each mode's results equal a separate run with that mode's switches.

    Args:
        feature_sets, meta, onen, progress: as in :func:`evaluate_ijb_exits`.
        options: FARs, FPIRs, ranks, search and TAR rule; its N/D/F switches are replaced
            by each mode's.
        modes: mode names (``"N1D1F1"``, ...; :data:`vitfree.reproduce.ALL_MODES`).

    Returns:
        The results mode by mode, each mode's exits in order; ``mode`` is set on each and,
        with more than one mode, the label reads ``"N1D1F1 exit 12"``.
    """
    import dataclasses
    import re

    out: list[ExitResult] = []
    for name in modes:
        m = re.fullmatch(r"N([01])D([01])F([01])", str(name).strip().upper())
        if m is None:
            raise InputError(f"mode {name!r} is not N{{0,1}}D{{0,1}}F{{0,1}} (e.g. N0D1F1)")
        opts = dataclasses.replace(
            options,
            normalize_images=m.group(1) == "1",
            use_faceness=m.group(2) == "1",
            use_flip=m.group(3) == "1",
        )
        res = evaluate_ijb_exits(feature_sets, meta, onen, opts, progress)
        for r in res:
            r.mode = opts.mode
            if len(modes) > 1:
                r.label = f"{opts.mode} {r.label}"
        out += res
    return out


@dataclass
class PairSetResult:
    """k-fold results of one verification set at one exit.

    Attributes:
        name: the set ("lfw", "cfp_fp", ... : the file name without extension).
        exit: the exit (1-based block).
        kfold: :class:`vitfree.metrics.KFoldResult` (fractions, not percent).
        n_pairs: pairs in the set.
        cost: the exit's cost record, when known.
    """

    name: str
    exit: int
    kfold: KFoldResult
    n_pairs: int
    cost: ExitCost | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON form (percent, 4 decimals), as in ``results.json``."""
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
            "cost": self.cost.as_dict() if self.cost is not None else {},
        }


def evaluate_pairset_embeddings(
    embeddings: Mapping[int, npt.ArrayLike],
    issame: npt.ArrayLike,
    *,
    name: str = "pairs",
    n_folds: int = 10,
    far_target: float = 1e-3,
    costs: Mapping[Any, Any] | None = None,
) -> list[PairSetResult]:
    """The ``.bin`` protocol (docs/protocols.md §5) at every exit, from embeddings.

    Args:
        embeddings: ``{exit: (2N, D)}`` embeddings, pair i = rows 2i and 2i+1 (each the sum
            of the image's and its flip's raw embeddings, as :func:`vitfree.extract.extract_bin`
            returns them).
        issame: (N,) bool, pair i is a genuine pair.
        name: label of the set.
        n_folds, far_target: the protocol (10 contiguous folds, VAL@FAR=1e-3).
        costs: ``{exit: ExitCost}`` (or a manifest's ``{"4": {...}}``) for the cost columns.

    Returns:
        One :class:`PairSetResult` per exit, in the order of ``embeddings``.
    """
    same = np.asarray(issame, dtype=bool)
    table = cost_table(costs)
    results = []
    for k, e in embeddings.items():
        e = np.asarray(e)
        kf = kfold_accuracy(e[0::2], e[1::2], same, n_folds, far_target=far_target)
        results.append(PairSetResult(name, int(k), kf, int(same.size), table.get(int(k))))
    return results
