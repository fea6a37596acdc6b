"""``vitfree dynamic calibrate``: a dynamic-exit policy for a model, calibrated on a held-out set."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from vitfree.cli.options import int_list, load_model

__all__ = ["add_parser", "cmd_calibrate"]


def add_parser(sub: Any) -> None:
    """Add ``dynamic`` and its sub-command ``calibrate`` to the top-level sub-parsers."""
    dyn = sub.add_parser("dynamic", help="dynamic exits: the exit chosen per face (pair, probe) at run time")
    dsub = dyn.add_subparsers(dest="dynamic_command", required=True)
    p = dsub.add_parser(
        "calibrate",
        help="calibrate a dynamic-exit policy on a held-out IJB-format set; writes the policy file for --policy",
        description=(
            "Embeds a held-out IJB-format calibration set (people disjoint from the evaluation set's) at every "
            "checked exit once, then tries hundreds of settings of the policy offline and keeps the one that "
            "meets the target: at most --max-tar-loss points of TAR@--far (--max-rank1-loss for the search "
            "cascade) lost against the full model, or an average of at most --max-blocks blocks per face. "
            "Writes a JSON policy file recording the model's fingerprint, the target and the calibration data; "
            "use it with 'vitfree eval ijbc|ijbb|bin|pairs --policy FILE' (the same model only)."
        ),
    )
    p.add_argument("--model", type=Path, required=True, help="face-ViT checkpoint, or 'demo' for the shipped demo model")
    p.add_argument("--arch", default=None, help="architecture name (default: inferred from the tensor shapes)")
    p.add_argument(
        "--kind",
        choices=["stability", "learned", "cascade", "search-cascade"],
        default="stability",
        help="stability (default): stop a face when its embedding's cosine with the previous checked exit's "
        "reaches tau; learned: a tiny decision net trained on SYNTHETIC faces, backbone frozen; cascade: decide "
        "a 1:1 pair at an exit when its score is far from that exit's threshold; search-cascade: 1:N search at "
        "the first exit, re-rank the top candidates deeper",
    )
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument("--root", type=Path, help="the calibration set: folder holding IJBC/ (or IJBB/), or its meta folder")
    data.add_argument(
        "--synth-seed",
        type=int,
        help="render a SYNTHETIC IJB-C-format calibration set of the people of this seed (keep it apart from the "
        "evaluation and training seeds) into --work/data, 100 impostor pairs per genuine pair",
    )
    p.add_argument("--synth-subjects", type=int, default=150, help="people of the rendered set (default 150)")
    tgt = p.add_mutually_exclusive_group(required=True)
    tgt.add_argument("--max-tar-loss", type=float, help="at most this many points of TAR@--far lost against the full model")
    tgt.add_argument("--max-rank1-loss", type=float, help="search-cascade: at most this many points of 1:N rank-1 lost")
    tgt.add_argument("--max-blocks", type=float, help="an average of at most this many blocks per face (pair, probe)")
    p.add_argument("--far", type=float, default=1e-4, help="FAR of the TAR target and of the cascade's thresholds (default 1e-4)")
    p.add_argument(
        "--exits",
        type=int_list,
        default=None,
        help="checked exits, increasing (default: every block from a quarter of the depth for face policies, "
        "1/3, 1/2, 2/3, 5/6 and the full depth for the cascades)",
    )
    p.add_argument("--top-k", type=int, default=10, help="search-cascade: candidates re-ranked deeper (default 10)")
    p.add_argument("--per-template", action="store_true",
                   help="face policies: calibrate with every image of a template at the deepest exit chosen for "
                   "any of its images (evaluate with --policy-per-template)")  # fmt: skip
    p.add_argument("--pairs", choices=["own", "common"], default="own",
                   help="face policies: 'common' calibrates pairs scored at the deepest exit both templates reached "
                   "(evaluate with --policy-pairs common)")  # fmt: skip
    g = p.add_argument_group("learned policy: the decision net's SYNTHETIC training faces")
    g.add_argument("--train-identities", type=int, default=200, help="people (default 200)")
    g.add_argument("--train-images", type=int, default=6, help="images per person (default 6)")
    g.add_argument("--train-seed", type=int, default=21, help="who the people are (default 21)")
    g = p.add_argument_group("protocol and run")
    g.add_argument("--dataset", choices=["IJBC", "IJBB"], default="IJBC", help="which IJB layout (default IJBC)")
    g.add_argument("--no-flip", action="store_true", help="no flip test (default: image + flip, as the community)")
    g.add_argument("--no-faceness", action="store_true", help="do not weight images by the detector score")
    g.add_argument("--normalize-images", action="store_true", help="L2-normalise each image feature before aggregation")
    g.add_argument("--work", type=Path, default=None, help="folder for the features (and rendered data); default a temporary one")
    g.add_argument("--batch-size", type=int, default=64, help="images per batch (default 64)")
    g.add_argument("--workers", type=int, default=None, help="decoding worker processes (default min(4, CPUs))")
    g.add_argument("--device", default="auto", help="cpu, cuda or cuda:N (default auto)")
    g.add_argument("--amp", choices=["bf16", "fp16"], default=None, help="mixed precision on GPU")
    g.add_argument("--threads", type=int, default=0, help="threads of the Rust core (default: all cores)")
    p.add_argument("--out", dest="policy_file", type=Path, required=True, help="the policy file to write (JSON)")
    p.set_defaults(func=cmd_calibrate)


def _target(args: argparse.Namespace) -> Any:
    from vitfree.dynamic import Target

    if args.max_tar_loss is not None:
        return Target("tar_loss", args.max_tar_loss, args.far)
    if args.max_rank1_loss is not None:
        return Target("rank1_loss", args.max_rank1_loss, args.far)
    return Target("blocks", args.max_blocks, args.far)


def cmd_calibrate(args: argparse.Namespace) -> int:
    """``vitfree dynamic calibrate``."""
    from vitfree.dynamic import calibrate
    from vitfree.errors import InputError

    target = _target(args)  # checked before any file is read
    out = Path(args.policy_file)
    if out.is_dir():
        raise InputError(f"--out {out} is a folder; give the policy file's name (e.g. policy.json)")
    if args.synth_seed is not None and args.work is None:
        raise InputError("--synth-seed renders the calibration set into --work: give --work DIR")
    model = load_model(args)
    policy = calibrate(
        model,
        args.kind,
        target,
        args.root,
        exits=args.exits,
        out=out,
        work=args.work,
        synth_seed=args.synth_seed,
        synth_subjects=args.synth_subjects,
        dataset=args.dataset,
        top_k=args.top_k,
        train_identities=args.train_identities,
        train_images=args.train_images,
        train_seed=args.train_seed,
        batch_size=args.batch_size,
        num_workers=args.workers,
        device=args.device,
        amp=args.amp,
        use_flip=not args.no_flip,
        use_faceness=not args.no_faceness,
        normalize_images=args.normalize_images,
        per_template=args.per_template,
        pair_exit=args.pairs,
    )
    cal = {k: v for k, v in (policy.calibration or {}).items() if k not in ("curve", "curve_columns")}
    print(f"{policy.describe()}\ntarget: {target.describe()}\ncalibration: {json.dumps(cal)}\nwrote {out}")
    return 0
