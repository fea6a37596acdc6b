"""Library functions for every command: what ``vitfree eval ...`` and ``vitfree demo`` do,
callable from Python (a notebook, a script) with the same defaults.

=========================================  ==============================================
command                                    function
=========================================  ==============================================
``vitfree eval features FEATS --meta R``   :func:`evaluate_features` (no torch needed)
``vitfree eval ijbc|ijbb --root R ...``    :func:`evaluate_ijb`
``vitfree eval bin|pairs FILES ...``       :func:`evaluate_pairsets`
``vitfree demo``                           :func:`demo` (the demo model, real pixels)
``vitfree demo-features``                  :func:`demo_features` (IJB-C-size features)
=========================================  ==============================================

Each returns a :class:`Evaluation` (the per-exit results, a title, the run's description and
the files written); ``Evaluation.table()`` is the table the command prints.  With ``out``
they write ``results.json``, ``results.csv`` and, unless ``plots=False``, the PNG plots.

This module imports no torch itself: the model-running functions import it when called,
so ``vitfree eval features`` stays light.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vitfree._logging import get_logger
from vitfree.costs import ExitCost
from vitfree.errors import InputError
from vitfree.evaluate import (
    IJBOptions,
    PairSetResult,
    evaluate_ijb_exits,
    evaluate_pairset_embeddings,
)
from vitfree.store import FeatureSet, Manifest, load_feature_sets, write_feature_store

if TYPE_CHECKING:
    from vitfree.data.bins import PairSet
    from vitfree.data.ijb import IJB1N, IJBMeta
    from vitfree.models import VisionTransformer
    from vitfree.models.onnx import OnnxModel
    from vitfree.reproduce import Reproduction

__all__ = [
    "Evaluation",
    "PairSetResult",
    "default_exits",
    "demo",
    "demo_features",
    "evaluate_features",
    "evaluate_ijb",
    "evaluate_pairset",
    "evaluate_pairsets",
]

log = get_logger(__name__)

#: Banner of everything computed on generated data.
SYNTHETIC_BANNER = (
    "SYNTHETIC DATA: IJB-C-shaped features generated with identity structure, one noise level "
    "per exit.\nThey exercise the real readers and protocols at IJB-C size; they are not results "
    "of a real model or dataset."
)


@dataclass
class Evaluation:
    """What an evaluation pipeline produced.

    Attributes:
        kind: "ijb" (results are :class:`ExitResult`) or "pairs" (:class:`PairSetResult`).
        results: one per exit (per set and exit for "pairs").
        title: the title of the table and plots.
        info: the description written under ``"info"`` in ``results.json``.
        files: the files written (empty without ``out``).
    """

    kind: str
    results: list[Any]
    title: str
    info: dict[str, Any] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    def table(self) -> str:
        """The fixed-width per-exit table the command line prints (IJB with several N/D/F
        modes: one table per mode, as ``ijb_evals.py -B`` prints them)."""
        from vitfree.report import format_bin_table, format_ijb_table

        if self.kind == "ijb":
            rule = str((self.info.get("options") or {}).get("tar_rule", "nearest"))
            modes = list(dict.fromkeys(getattr(r, "mode", None) for r in self.results))
            if len(modes) <= 1:
                return format_ijb_table(self.results, self.title, rule)
            return "\n\n".join(
                format_ijb_table(
                    [r for r in self.results if r.mode == m], f"{self.title} [{m}]", rule
                )
                for m in modes
            )
        return format_bin_table(self.results, self.title)


def default_exits(depth: int) -> list[int]:
    """1/3, 1/2, 2/3, 5/6 of the depth and the full model: 4,6,8,10,12 for 12 blocks."""
    return sorted({max(1, round(depth * f)) for f in (1 / 3, 1 / 2, 2 / 3, 5 / 6, 1.0)})


# --------------------------------------------------------------------------------------
# IJB-B/C from features
# --------------------------------------------------------------------------------------


def _progress(total: int, desc: str, enabled: bool) -> tuple[Callable[[str], None], Any]:
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, disable=not enabled)

    def step(msg: str) -> None:
        bar.set_postfix_str(msg)
        bar.update(1)

    return step, bar


def _evaluate_ijb_sets(
    sets: Sequence[FeatureSet],
    meta_root: str | os.PathLike[str],
    *,
    dataset: str,
    options: IJBOptions,
    one_n: bool,
    out: str | os.PathLike[str] | None,
    plots: bool,
    title: str,
    info: Mapping[str, Any],
    progress: bool,
    loaded: tuple[IJBMeta, IJB1N | None] | None = None,
    reproduction: Reproduction | None = None,
    extra: Sequence[Any] = (),
) -> Evaluation:
    """The IJB 1:1 (+ 1:N) protocols on feature sets, then results.json/csv and plots.

    With ``reproduction`` its modes, FARs, FPIRs and TAR rule replace those of ``options``
    and it is recorded under ``info.reproduce``; several modes give one result per mode and
    exit (:func:`vitfree.evaluate.evaluate_ijb_modes`)."""
    from vitfree.evaluate import evaluate_ijb_modes
    from vitfree.report import plot_ijb, save_ijb

    meta, onen = loaded if loaded is not None else _read_ijb(meta_root, dataset, one_n)
    modes: tuple[str, ...] | None = None
    if reproduction is not None:
        options = reproduction.options(base=options)
        modes = reproduction.modes
    steps = len(sets) * (2 if onen is not None else 1) * (len(modes) if modes else 1)
    step, bar = _progress(steps, "evaluating", progress)
    try:
        if modes is not None:
            results = evaluate_ijb_modes(sets, meta, onen, options, modes, progress=step)
        else:
            results = evaluate_ijb_exits(sets, meta, onen, options, progress=step)
        for r in extra:  # rows computed by the caller (dynamic exits), under the first mode
            r.mode = r.mode or (results[0].mode if results else None)
        results = [*results, *extra]
        bar.update(steps - bar.n)
    finally:
        bar.close()
    opts = {
        "use_flip": options.use_flip,
        "use_faceness": options.use_faceness,
        "normalize_images": options.normalize_images,
        "fars": list(options.fars),
        "search": options.search,
        "fpirs": list(options.fpirs),
        "tar_rule": options.tar_rule,
        "modes": list(modes) if modes else [options.mode],
    }
    full_info = dict(info, dataset=dataset, options=opts, meta=str(meta.meta_dir))
    if reproduction is not None:
        full_info["reproduce"] = reproduction.as_dict()
    ev = Evaluation("ijb", results, title, full_info)
    if out is not None:
        ev.files = save_ijb(results, out, full_info)
        if plots:
            # one curve per exit: with several modes, the first mode's (the preset's own
            # mode comes first when it is among them)
            main_mode = results[0].mode if results else None
            if modes and reproduction is not None and reproduction.preset.conventions.modes[0] in modes:
                main_mode = reproduction.preset.conventions.modes[0]
            shown = [r for r in results if r.mode == main_mode] if modes and len(modes) > 1 else results
            ev.files += plot_ijb(shown, out, title + (f" [{main_mode}]" if modes and len(modes) > 1 else ""))
        log.info("wrote %s", ", ".join(str(p) for p in ev.files))
    return ev


def _explicit_options(options: IJBOptions | None) -> dict[str, Any]:
    """The protocol settings of ``options`` that differ from :class:`IJBOptions` ' defaults:
    explicit choices that override a preset (:func:`vitfree.reproduce.apply_preset`)."""
    if options is None:
        return {}
    base = IJBOptions()
    out: dict[str, Any] = {}
    for f in ("normalize_images", "use_faceness", "use_flip", "tar_rule"):
        if getattr(options, f) != getattr(base, f):
            out[f] = getattr(options, f)
    for f in ("fars", "fpirs"):
        if tuple(float(x) for x in getattr(options, f)) != tuple(getattr(base, f)):
            out[f] = tuple(getattr(options, f))
    return out


def _reproduction(
    reproduce: str | Reproduction | None, options: IJBOptions | None, modes: Any
) -> Reproduction:
    """``reproduce`` (a preset name or a :class:`vitfree.reproduce.Reproduction`) under the
    explicit settings of ``options`` and ``modes``."""
    from vitfree.reproduce import DEFAULT_PRESET, apply_preset

    over = _explicit_options(options)
    if modes is not None:
        over["modes"] = modes
    return apply_preset(reproduce if reproduce is not None else DEFAULT_PRESET, **over)


def _read_ijb(root: Any, dataset: str, one_n: bool) -> tuple[IJBMeta, IJB1N | None]:
    """The 1:1 meta files and, with ``one_n``, the 1:N csvs, checked against each other."""
    from vitfree.data import load_ijb_1n, load_ijb_meta
    from vitfree.data.ijb import check_1n

    t0 = time.perf_counter()
    meta = load_ijb_meta(root, dataset)
    onen = None
    if one_n:
        try:
            onen = load_ijb_1n(root, dataset)
        except FileNotFoundError as exc:
            log.warning("note: skipping 1:N identification: %s (pass --no-1n to silence)", exc)
        if onen is not None:
            check_1n(onen, meta)
    log.info("%r read in %.1f s", meta, time.perf_counter() - t0)
    return meta, onen


def evaluate_features(
    features: str | os.PathLike[str],
    meta_root: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    dataset: str = "IJBC",
    exits: Sequence[int] | None = None,
    flip_halves: bool = False,
    options: IJBOptions | None = None,
    one_n: bool = True,
    plots: bool = True,
    progress: bool = True,
    reproduce: str | Reproduction | None = None,
    modes: str | Sequence[str] | None = None,
) -> Evaluation:
    """IJB-B/C 1:1 and 1:N of saved per-exit features (``vitfree eval features``).

    Args:
        features: a feature store folder (``exit_XX.npy``), an ``.npz`` or an ``.npy``;
            rows follow ``face_tid_mid.txt`` (:func:`vitfree.store.load_feature_sets`).
        meta_root: folder holding ``IJBC/meta`` (or ``IJBB/meta``), or the meta folder.
        out: folder for results.json, results.csv and plots (None: write nothing).
        dataset: "IJBC" or "IJBB".
        exits: only these exits of a store.
        flip_halves: arrays are (N, 2D) image + flip halves (insightface's saved format).
        options: the protocol (:class:`IJBOptions`; default: the community setting); its
            N/D/F switches, FARs, FPIRs and TAR rule, where they differ from the defaults,
            override the preset.
        one_n: also run 1:N when the csvs exist.
        plots: write roc.png and accuracy_vs_cost.png.
        progress: show a progress bar.
        reproduce: a preset, ``"eval_ijbc"`` (default) or ``"ijb_evals"``, or a
            :class:`vitfree.reproduce.Reproduction` (:func:`vitfree.reproduce.apply_preset`):
            its modes, TAR rule and FAR/FPIR grids apply (its alignment and pixel scaling
            were the extraction's business; a store's manifest records them).
        modes: N/D/F modes, e.g. ``"all"`` (the eight of ``ijb_evals.py -B``) or
            ``["N0D1F1", "N1D1F1"]``: one result per mode and exit from the same features.
    """
    sets = load_feature_sets(features, flip_halves=flip_halves, exits=None if exits is None else list(exits))
    repro = _reproduction(reproduce, options, modes)
    info: dict[str, Any] = {"features": str(features)}
    stored = Manifest.read(features) if Path(features).is_dir() else None
    if stored is not None and stored.format == "vitfree.features" and stored.done is not None:
        from vitfree.store import LEGACY_FACE_INPUT

        info["face_input"] = stored.face_input or dict(LEGACY_FACE_INPUT)
        info["face_input_note"] = (
            "how these features were aligned and scaled, from the store's manifest; a "
            "preset's alignment and pixel scaling act at extraction only"
        )
    return _evaluate_ijb_sets(
        sets,
        meta_root,
        dataset=dataset,
        options=options or IJBOptions(),
        one_n=one_n,
        out=out,
        plots=plots,
        title=f"{dataset} from {features}",
        info=info,
        progress=progress,
        reproduction=repro,
    )


# --------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------


def _costs_with_speed(
    model: VisionTransformer, exits: list[int], speed: bool, device: Any, amp: str | None
) -> dict[int, ExitCost]:
    from vitfree.models import exit_cost_records, measure_speed

    measured = None
    if speed:
        log.info(
            "measuring speed per exit (seconds on a GPU, up to a minute on CPU; --no-speed skips it)"
        )
        measured = measure_speed(model, exits, device, amp=amp)
    return {c.exit: c for c in exit_cost_records(model, exits, measured)}


def _model_info(
    model: VisionTransformer | OnnxModel, model_path: Any, device: Any, amp: str | None, **more: Any
) -> tuple[str, dict[str, Any]]:
    """The report title's model part ("vit_s (model.pt)") and the run's description."""
    from vitfree.models.onnx import OnnxModel
    from vitfree.runtime import resolve_device

    if isinstance(model, OnnxModel):
        more = {"runtime": model.describe(), **more}
        if model_path is None:
            model_path = model.path
        arch = model.arch
    else:
        arch = model.arch or model.config.describe()
    name = Path(model_path).name if model_path is not None else "in memory"
    heads = None if isinstance(model, OnnxModel) else _exit_heads_info(model)
    info = {
        "model": str(model_path) if model_path is not None else None,
        "arch": arch,
        **({"exit_heads": heads} if heads else {}),
        **more,
        "device": str(resolve_device(device)),
        "amp": amp,
    }
    if heads:
        label = Path(heads["file"]).name if heads["file"] else "in memory"
        kinds = ",".join(sorted(set(heads["kinds"].values())))
        name += f" + {kinds} exit heads ({label}) at exits {','.join(heads['kinds'])}"
    return f"{arch} ({name})", info


def _install_exit_heads(model: Any, path: str | os.PathLike[str] | None) -> None:
    """Load an exit-heads file onto ``model`` (the ``exit_heads=`` of the pipelines)."""
    if path is None:
        return
    from vitfree.models.onnx import OnnxModel

    if isinstance(model, OnnxModel):
        raise InputError(f"exit heads ({path}) do not apply to an ONNX model: it has no exits")
    if not Path(path).is_file():
        raise FileNotFoundError(f"exit-heads file not found: {path}")
    model.load_exit_heads(path)


def _exit_heads_info(model: VisionTransformer) -> dict[str, Any] | None:
    """Which exit-specific heads the model uses, for ``results.json`` (None: none)."""
    if not len(model.exit_heads):
        return None
    kinds = {str(k): h.kind for k, h in sorted(model.exit_heads.items(), key=lambda kv: int(kv[0]))}
    return {"file": getattr(model, "exit_heads_file", None), "kinds": kinds}


def evaluate_ijb(
    model: VisionTransformer | OnnxModel,
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    dataset: str = "IJBC",
    exits: Sequence[int] | None = None,
    batch_size: int = 64,
    num_workers: int | None = None,
    device: Any = "auto",
    amp: str | None = None,
    skip_bad: bool = False,
    use_damaged: bool = False,
    overwrite: bool = False,
    shard: str = "contiguous",
    options: IJBOptions | None = None,
    one_n: bool = True,
    speed: bool = True,
    model_path: str | os.PathLike[str] | None = None,
    plots: bool = True,
    progress: bool = True,
    reproduce: str | Reproduction | None = None,
    exit_heads: str | os.PathLike[str] | None = None,
    modes: str | Sequence[str] | None = None,
    policy: Any = None,
    policy_per_template: bool = False,
    policy_pairs: str = "own",
) -> Evaluation | None:
    """Evaluate a checkpoint on IJB-B/C at every exit (``vitfree eval ijbc|ijbb``).

    Extracts image and flip features of every image into ``out/features`` (resumable; under
    torchrun every rank extracts a shard), records the exits' costs (FLOPs, and the measured
    speed unless ``speed=False``) in the store, then runs the 1:1 and 1:N protocols.

    Args:
        model: the face ViT (:func:`vitfree.models.load`), or an ONNX model
            (:func:`vitfree.models.onnx.load_onnx`: final embedding only, no exits).
        root: folder holding ``IJBC/`` (with ``loose_crop/`` and ``meta/``), the dataset
            folder, or its meta folder.
        out: output folder: ``features/``, results.json, results.csv, plots.
        exits: 1-based exits; default :func:`default_exits` of the model's depth.
        batch_size, num_workers, device, amp, skip_bad, use_damaged, overwrite, shard: as in
            :func:`vitfree.extract.extract_ijb`.  The images skipped or used damaged are
            listed, with what is wrong, under ``info.bad_images`` in ``results.json``.
        options, one_n, plots, progress: as in :func:`evaluate_features`.
        speed: measure latency and throughput per exit (the "speed-up" column).
        model_path: the checkpoint file, recorded in the manifest and the report.
        reproduce: the community script to reproduce (:mod:`vitfree.reproduce`):
            ``"eval_ijbc"`` (default; arcface_torch ``eval_ijbc.py``) or ``"ijb_evals"``
            (insightface ``ijb_evals.py``), or a :class:`vitfree.reproduce.Reproduction`
            with explicit overrides (:func:`vitfree.reproduce.apply_preset`).  It sets the
            alignment arithmetic and template, the pixel scaling, the N/D/F mode(s), the TAR
            rule and the FAR/FPIR grids; settings of ``options`` that differ from the
            defaults override it.  ``results.json`` records it under ``info.reproduce``.
        modes: N/D/F modes, e.g. ``"all"``: one result per mode and exit from the one
            extraction (as :func:`evaluate_features`).
        exit_heads: an exit-heads file (``vitfree finetune``) to load onto the model first
            (:meth:`VisionTransformer.load_exit_heads`: trained on this backbone, else
            :class:`~vitfree.errors.CheckpointError`); heads already installed count too.
            ``results.json`` names the file and the head kinds under ``info.exit_heads``.
        policy: a dynamic-exit policy or policy file (:mod:`vitfree.dynamic`, calibrated for
            this model): adds its row next to the static exits (face policies: every image at
            its own exit; ``cascade``: pairs decided exit by exit) and ``info.dynamic``.
        policy_per_template, policy_pairs: face policies: every image of a template at the
            template's deepest image exit; ``"common"``: each pair scored at the deepest exit
            both templates reached (:func:`vitfree.dynamic.dynamic_ijb_results`).

    Returns:
        The :class:`Evaluation` on rank 0; None on the other ranks of a torchrun launch.

    Raises:
        vitfree.errors.StoreError: the extraction did not complete (rerun to resume).
    """
    from vitfree.errors import StoreError
    from vitfree.extract import extract_ijb
    from vitfree.models.onnx import OnnxModel

    repro = _reproduction(reproduce, options, modes)
    _install_exit_heads(model, exit_heads)
    onnx = isinstance(model, OnnxModel)
    if isinstance(model, OnnxModel):
        wanted = model.resolve_exits(None if exits is None else list(exits))  # final only
    else:
        wanted = list(exits) if exits is not None else default_exits(model.depth)
    pol = None
    if policy is None and (policy_per_template or policy_pairs != "own"):
        raise InputError("--policy-per-template and --policy-pairs are options of a dynamic-exit policy (--policy FILE)")
    if policy is not None:
        from vitfree.dynamic import PAIR_EXITS, resolve_policy

        if policy_pairs not in PAIR_EXITS:
            raise InputError(f"unknown policy_pairs {policy_pairs!r}; known: {', '.join(PAIR_EXITS)}")

        if onnx:
            raise InputError("dynamic exits (policy) need a vitfree model with exits, not an ONNX graph")
        pol = resolve_policy(policy, model)  # type: ignore[arg-type]
        if not pol.is_face_policy and (policy_per_template or policy_pairs != "own"):
            raise InputError(f"--policy-per-template and --policy-pairs common take face policies, not a {pol.kind} policy")
        if not pol.is_face_policy:  # the cascades work on the static exits' features
            wanted = sorted(set(model.resolve_exits(wanted)) | set(pol.exits))  # type: ignore[union-attr]
    feats_dir = Path(out) / "features"
    # every meta file (pairs, 1:N csvs against face_tid_mid) is checked before extraction:
    # a bad pair file must not cost an hour of features first
    meta, onen = _read_ijb(root, dataset, one_n)
    res = extract_ijb(
        model,
        root,
        feats_dir,
        meta=meta,
        dataset=dataset,
        exits=wanted,
        batch_size=batch_size,
        num_workers=num_workers,
        device=device,
        amp=amp,
        skip_bad=skip_bad,
        use_damaged=use_damaged,
        model_path=model_path,
        overwrite=overwrite,
        shard=shard,
        progress=progress,
        face_input=repro.face_input,
    )
    if res.rank != 0:
        return None  # under torchrun, rank 0 evaluates
    if not res.complete:
        raise StoreError(f"extraction into {feats_dir} is incomplete; rerun the same command to resume it")
    log.info(
        "features of %d images at exits %s in %s (%d extracted now, %.1f images/s; %d were done before)",
        res.n_images, res.exits, feats_dir, res.extracted, res.images_per_s, res.resumed,
    )  # fmt: skip
    manifest = Manifest.read(feats_dir) or Manifest(exits=res.exits)
    if not isinstance(model, OnnxModel):  # an ONNX graph has no FLOP count or exits to time
        manifest.costs = _costs_with_speed(model, res.exits, speed, device, amp)
        manifest.write(feats_dir)
    sets = load_feature_sets(feats_dir, exits=res.exits)
    if onnx:
        for fs in sets:
            fs.label = "final (ONNX)" if fs.exit == 0 else f"exit {fs.exit} (ONNX, final)"
    names = _image_names(manifest)
    bad_images = [
        {
            "row": r,
            "file": names.get(r, ""),
            "problem": res.problems.get(r, ""),
            "action": "skipped (zero features)" if r in set(res.skipped_rows) else "used as decoded",
        }
        for r in sorted(set(res.skipped_rows) | set(res.damaged_rows))
    ]
    model_title, info = _model_info(
        model, model_path, device, amp,
        features=str(feats_dir), exits=res.exits, skipped_images=len(res.skipped_rows),
        damaged_images_used=len(res.damaged_rows), bad_images=bad_images,
    )  # fmt: skip
    extra: list[Any] = []
    if pol is not None:
        from vitfree.dynamic import dynamic_ijb_results

        extra, info["dynamic"] = dynamic_ijb_results(
            pol, model, meta, onen, sets, repro.options(base=options or IJBOptions()),  # type: ignore[arg-type]
            batch_size=batch_size, num_workers=num_workers, device=device, amp=amp,
            skipped_rows=res.skipped_rows, speed=speed, progress=progress, face_input=repro.face_input,
            per_template=policy_per_template, pair_exit=policy_pairs,
        )  # fmt: skip
    return _evaluate_ijb_sets(
        sets,
        root,
        dataset=dataset,
        options=options or IJBOptions(),
        one_n=one_n,
        out=out,
        plots=plots,
        title=f"{dataset}, {model_title}",
        info=info,
        progress=progress,
        loaded=(meta, onen),
        reproduction=repro,
        extra=extra,
    )


def _image_names(manifest: Manifest) -> dict[int, str]:
    """File names of the skipped / damaged rows, as the manifest lists them."""
    out: dict[int, str] = {}
    for rec in (manifest.skipped, manifest.damaged_used):
        for r, f in zip((rec or {}).get("rows", []), (rec or {}).get("files", [])):
            out[int(r)] = str(f)
    return out


def evaluate_pairset(
    model: VisionTransformer,
    pairset: PairSet | Any,
    exits: Sequence[int] | None = None,
    *,
    name: str | None = None,
    batch_size: int = 64,
    n_folds: int = 10,
    far_target: float = 1e-3,
    costs: Mapping[Any, Any] | None = None,
    device: Any = None,
    amp: str | None = None,
    progress: bool = False,
) -> list[PairSetResult]:
    """The ``.bin`` protocol at every exit of a model on one set: extraction + k-fold.

    Args:
        pairset: a :class:`vitfree.data.PairSet` (pair i = images 2i and 2i+1).
        name: label of the set (default: its source file name without extension).
        n_folds, far_target: the protocol (10 contiguous folds, VAL@FAR=1e-3).
        costs: ``{exit: ExitCost}`` or a manifest's ``{"4": {...}}`` for the cost columns.
        batch_size, device, amp, progress: as in :func:`vitfree.extract.extract_bin`.

    Returns:
        One :class:`PairSetResult` per exit, in exit order.
    """
    from vitfree.extract import extract_bin

    embs = extract_bin(model, pairset, exits, batch_size, device=device, amp=amp, progress=progress)
    label = name or Path(getattr(pairset, "source", "") or "pairs").stem
    return evaluate_pairset_embeddings(
        embs, pairset.issame, name=label, n_folds=n_folds, far_target=far_target, costs=costs
    )


def evaluate_pairsets(
    model: VisionTransformer,
    files: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str] | None = None,
    *,
    kind: str = "bin",
    exits: Sequence[int] | None = None,
    batch_size: int = 64,
    n_folds: int = 10,
    far: float = 1e-3,
    device: Any = "auto",
    amp: str | None = None,
    speed: bool = True,
    resize: bool = False,
    model_path: str | os.PathLike[str] | None = None,
    plots: bool = True,
    progress: bool = True,
    exit_heads: str | os.PathLike[str] | None = None,
    policy: Any = None,
) -> Evaluation:
    """10-fold accuracy and VAL@FAR of ``.bin`` sets or pair lists at every exit
    (``vitfree eval bin|pairs``).

    Args:
        model: the face ViT.
        files: ``.bin`` files (``kind="bin"``) or pair lists (``kind="pairs"``); all are read
            before any compute, so a bad file fails early.
        out: folder for results.json, results.csv and the plot (None: write nothing).
        exits: 1-based exits; default :func:`default_exits`.
        n_folds, far: the protocol.
        resize: pair lists only: resize images that are not 112x112.
        device, amp, speed, batch_size, model_path, plots, progress, exit_heads: as in
            :func:`evaluate_ijb`.
        policy: a face policy or policy file (:mod:`vitfree.dynamic`): adds, per set, a
            row of embeddings taken at each face's own exit, and ``info.dynamic``.
    """
    from vitfree.data import load_bin, load_pair_list
    from vitfree.report import plot_bin, save_bin

    if kind not in ("bin", "pairs"):
        raise InputError(f"kind must be 'bin' or 'pairs', got {kind!r}")
    _install_exit_heads(model, exit_heads)
    missing = [str(f) for f in files if not Path(f).is_file()]
    if missing:
        raise FileNotFoundError("not found: " + ", ".join(missing))
    wanted = list(exits) if exits is not None else default_exits(model.depth)
    wanted = sorted(set(model.resolve_exits(wanted)))
    pol = None
    if policy is not None:
        from vitfree.dynamic import dynamic_pairset_results, resolve_policy

        pol = resolve_policy(policy, model)
    dyn_info: list[dict[str, Any]] = []
    sets = [load_bin(f) if kind == "bin" else load_pair_list(f, resize=resize) for f in files]
    costs = _costs_with_speed(model, wanted, speed, device, amp)
    results: list[PairSetResult] = []
    for f, ps in zip(files, sets):
        results += evaluate_pairset(
            model,
            ps,
            wanted,
            name=Path(f).stem,
            batch_size=batch_size,
            n_folds=n_folds,
            far_target=far,
            costs=costs,
            device=device,
            amp=amp,
            progress=progress,
        )
        if pol is not None:
            dyn, d_info = dynamic_pairset_results(
                pol, model, ps, name=Path(f).stem, batch_size=batch_size, n_folds=n_folds,
                far_target=far, amp=amp, progress=progress,
            )  # fmt: skip
            results += dyn
            dyn_info.append(d_info)
    title, info = _model_info(
        model, model_path, device, amp,
        files=[str(f) for f in files], exits=wanted, folds=n_folds, far=far,
    )  # fmt: skip
    if pol is not None:
        info["dynamic"] = {"policy": pol.describe(), "sets": dyn_info}
    ev = Evaluation("pairs", results, title, info)
    if out is not None:
        ev.files = save_bin(results, out, info)
        if plots:
            ev.files += plot_bin(results, out, title)
        log.info("wrote %s", ", ".join(str(p) for p in ev.files))
    return ev


# --------------------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------------------


def _demo_noise(k: int, depth: int = 12) -> float:
    """Image noise of the synthetic exit k: shallower exits are noisier (a monotone made-up law)."""
    return 2.6 + 0.05 * max(depth - k, 0) ** 1.6


def _demo_costs(exits: Sequence[int]) -> dict[int, ExitCost]:
    """FLOPs of vit_s at these exits, counted by torch's FlopCounterMode."""
    from vitfree.models import exit_costs

    return {c.exit: c for c in exit_costs("vit_s", exits=list(exits))}


def demo(
    out: str | os.PathLike[str] = "out/demo",
    *,
    subjects: int = 150,
    pairs: int = 600,
    exits: Sequence[int] | None = None,
    seed: int = 1,
    plots: bool = True,
    progress: bool = True,
    model: Any = "demo",
) -> tuple[Evaluation, Evaluation]:
    """``vitfree demo``, the main job: the SYNTHETIC demo face ViT at every exit on real pixels.

    Renders a held-out SYNTHETIC IJB-C-format benchmark (``subjects`` people of ``seed``,
    never seen in training; JPEG loose crops, landmarks, detector scores, 1:N csvs) and an
    LFW-style ``.bin`` set, then runs :func:`evaluate_ijb` (decoding, 5-point alignment,
    image + flip in one pass for all exits, 1:1 and 1:N, measured speed) and
    :func:`evaluate_pairsets` with the demo model (``load("demo")``) at every exit.

    Args:
        out: output folder: ``data/`` (the benchmark), ``ijbc/`` and ``bin/`` (results).
        subjects: benchmark size (150: about 1,900 images, 45,000 pairs).
        pairs: pairs of the ``.bin`` set.
        exits: default every block.
        seed: who the benchmark's people are (the demo model was trained on seed 100).
        model: the model (default the shipped demo model).

    Returns:
        ``(ijbc, bin)`` evaluations.
    """
    from vitfree.models import load
    from vitfree.synthetic.sets import write_bin, write_ijbc

    log.warning(
        "SYNTHETIC DEMO: rendered faces (not people) and a demo model trained on other rendered "
        "faces; the numbers show the pipeline and the accuracy/cost trade-off, not real-world accuracy"
    )
    base = Path(out)
    data = base / "data"
    if not (data / "IJBC" / "SYNTHETIC.txt").is_file():
        write_ijbc(data, subjects, seed=seed, preset="medium", impostor_ratio=100.0,
                   overwrite=True, progress=progress)  # fmt: skip
    bin_path = data / "synthetic_lfw.bin"
    if not bin_path.is_file():
        write_bin(bin_path, pairs, seed=seed + 1, preset="medium")
    net = load(model) if isinstance(model, (str, os.PathLike)) else model
    wanted = list(exits) if exits is not None else list(range(1, net.depth + 1))
    ijbc = evaluate_ijb(
        net, data, base / "ijbc", exits=wanted, overwrite=True, plots=plots, progress=progress,
        model_path=str(model) if isinstance(model, (str, os.PathLike)) else None,
    )  # fmt: skip
    assert ijbc is not None
    ijbc.title = "SYNTHETIC " + ijbc.title
    pairs_ev = evaluate_pairsets(
        net, [bin_path], base / "bin", exits=wanted, plots=plots, progress=progress,
        model_path=str(model) if isinstance(model, (str, os.PathLike)) else None,
    )  # fmt: skip
    pairs_ev.title = "SYNTHETIC " + pairs_ev.title
    return ijbc, pairs_ev


def demo_features(
    out: str | os.PathLike[str] = "out/demo-features",
    *,
    scale: float = 1.0,
    exits: Sequence[int] = (4, 6, 8, 10, 12),
    seed: int = 0,
    plots: bool = True,
    progress: bool = True,
) -> Evaluation:
    """``vitfree demo-features``: a SYNTHETIC IJB-C-shaped feature set per exit, then
    :func:`evaluate_features` on it (IJB-C size: the verification core at full size).

    Writes IJB-C-format meta files under ``out/data`` and a feature store under
    ``out/features`` (features of a synthetic population with identity structure and
    detector scores, shallower exits noisier, FLOPs of vit_s), then the report in ``out``.
    The numbers are not those of a real model and are labelled SYNTHETIC.

    Args:
        out: output folder.
        scale: fraction of the IJB-C sizes (1.0 writes about 1 GB of features per exit).
        exits: exits to simulate.
        seed: random seed.
        plots, progress: as in :func:`evaluate_features`.
    """
    from tqdm.auto import tqdm

    from vitfree.synthetic import ijb_features, write_ijb_meta

    log.warning(SYNTHETIC_BANNER)
    out = Path(out)
    wanted = sorted(set(int(k) for k in exits))

    def generate() -> Iterator[tuple[int, np.ndarray, None]]:
        for i, k in enumerate(tqdm(wanted, desc="generating synthetic exits", disable=not progress)):
            data = ijb_features(scale=scale, seed=seed, noise=_demo_noise(k))
            if i == 0:
                write_ijb_meta(data, out / "data", "IJBC")
            yield k, data.feats, None
            del data

    manifest = Manifest(
        exits=wanted,
        format=None,
        version=None,
        synthetic=True,
        costs=_demo_costs(wanted),
        extra={"note": "vitfree demo: synthetic features"},
    )
    write_feature_store(out / "features", generate(), manifest)
    sets = load_feature_sets(out / "features")
    return _evaluate_ijb_sets(
        sets,
        out / "data",
        dataset="IJBC",
        options=IJBOptions(),
        one_n=True,
        out=out,
        plots=plots,
        title=f"SYNTHETIC IJB-C-shaped demo (scale {scale:g}; FLOPs of vit_s)",
        info={"synthetic": True, "scale": scale},
        progress=progress,
    )
