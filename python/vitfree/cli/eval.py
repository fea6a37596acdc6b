"""``vitfree eval features|ijbc|ijbb|bin|pairs``: parse, then call :mod:`vitfree.pipelines`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vitfree.cli.options import (
    add_ijb_protocol_options,
    add_model_options,
    add_output_options,
    add_policy_option,
    add_policy_template_options,
    add_reproduce_options,
    ijb_options,
    int_list,
    load_model,
    reproduction,
)

__all__ = ["add_parsers", "cmd_eval_features", "cmd_eval_ijb", "cmd_eval_pairsets"]


def add_parsers(sub: Any) -> None:
    """Add ``eval`` and its sub-commands to the top-level sub-parsers."""
    ev = sub.add_parser("eval", help="evaluate a model or saved features on a benchmark")
    evsub = ev.add_subparsers(dest="benchmark", required=True)
    feats = evsub.add_parser(
        "features",
        help="IJB-B/C 1:1 and 1:N from saved image features (no model needed)",
        description=(
            "Evaluate saved image features with the IJB-B/C protocols. FEATS is a folder of "
            "exit_XX.npy files (as written by extraction), an .npz (one array per exit; "
            "'<name>_flip' arrays hold flips) or an .npy; rows follow face_tid_mid.txt."
        ),
    )
    feats.add_argument("features", type=Path, help="features: folder of exit_XX.npy, .npz or .npy")
    feats.add_argument(
        "--meta", type=Path, required=True, help="folder holding IJBC/meta (or IJBB/meta), or the meta folder itself"
    )
    feats.add_argument("--exits", type=int_list, default=None, help="only these exits of a folder, e.g. 4,8,12")
    feats.add_argument(
        "--flip-halves",
        action="store_true",
        help="arrays are (N, 2D): image features then flip features (insightface's saved format)",
    )
    add_ijb_protocol_options(feats)
    add_reproduce_options(feats, images=False)
    add_output_options(feats, "out/eval")
    feats.set_defaults(func=cmd_eval_features)

    _add_model_eval_parsers(evsub)


def _add_model_eval_parsers(evsub: Any) -> None:
    for name, ds in (("ijbc", "IJBC"), ("ijbb", "IJBB")):
        p = evsub.add_parser(
            name,
            help=f"{ds[:3]}-{ds[3]} 1:1 and 1:N at every exit of a model (extracts features, then evaluates)",
            description=(
                f"Extract image and flip features of every {ds} image at the requested exits into OUT/features "
                f"(memory-mapped exit_XX.npy, resumable: rerun the same command after an interruption), then "
                f"evaluate 1:1 verification and, when the 1:N csvs exist, 1:N identification. Prints the per-exit "
                f"table with GFLOPs, relative FLOPs and measured speed-up; writes OUT/results.json, "
                f"OUT/results.csv and plots. Under 'torchrun --nproc_per_node N -m vitfree eval {name} ...' every "
                f"process extracts a shard (gloo on CPU, nccl on GPU) and rank 0 evaluates. "
                f"--reproduce eval_ijbc|ijb_evals matches a community script convention for convention "
                f"(docs/reproduce.md); --modes all gives the 8 N/D/F tables from one extraction. --model may "
                f"be an .onnx file (run with onnxruntime, final embedding only) or a TorchScript .pt (its "
                f"weights are read without running its code)."
            ),
        )
        p.add_argument(
            "--root",
            type=Path,
            required=True,
            help=f"folder holding {ds}/ (with loose_crop/ and meta/), the {ds} folder itself, or its meta folder",
        )
        add_model_options(p, 64)
        g = p.add_argument_group("extraction")
        g.add_argument(
            "--workers",
            type=int,
            default=None,
            help="worker processes decoding and aligning images (default min(4, CPUs per process); 0: in the main process)",
        )
        g.add_argument(
            "--skip-bad",
            action="store_true",
            help="write zero features for images that cannot be used (missing, empty, damaged, landmark lines "
            "that give no face) and list them, with what is wrong, in the manifest and results.json "
            "(default: stop with an error naming every one, before extraction where a pre-flight pass finds them)",
        )
        g.add_argument(
            "--use-damaged",
            action="store_true",
            help="use truncated or damaged image files as far as they decode, as the community scripts do, and "
            "list them in the manifest and results.json (default: refuse them)",
        )
        g.add_argument(
            "--overwrite",
            action="store_true",
            help="start the extraction over instead of resuming the features in OUT/features",
        )
        g.add_argument(
            "--shard",
            choices=["contiguous", "strided"],
            default="contiguous",
            help="under torchrun: contiguous row blocks per process (default; identical to one process) or strided rows",
        )
        add_ijb_protocol_options(p, dataset_option=False)
        add_reproduce_options(p)
        add_policy_option(p)
        add_policy_template_options(p)
        add_output_options(p, f"out/{name}")
        p.set_defaults(func=cmd_eval_ijb, dataset=ds)

    for name in ("bin", "pairs"):
        if name == "bin":
            help_ = "LFW-style .bin sets (lfw, cfp_fp, agedb_30, calfw, cplfw) at every exit of a model"
            desc = (
                "10-fold accuracy (mean and std, percent) and VAL@FAR=1e-3 of each insightface .bin set (Python 2 or "
                "3 pickle of aligned 112x112 JPEGs and issame flags) at every requested exit. Embedding = "
                "emb(image) + emb(flip), L2-normalised; squared Euclidean distance; folds contiguous (docs/protocols.md §5)."
            )
            files_help = ".bin files, e.g. lfw.bin cfp_fp.bin agedb_30.bin"
        else:
            help_ = "a pairs list of one's own aligned faces at every exit of a model"
            desc = (
                "The .bin protocol (10-fold accuracy, VAL@FAR) on a text list of pairs: one 'path1 path2 label' per "
                "line (label 1 = same person), paths relative to the list's folder, images already aligned to "
                "112x112 (e.g. with vitfree.data.align_face); '#' starts a comment."
            )
            files_help = "pair list files ('path1 path2 label' per line)"
        p = evsub.add_parser(name, help=help_, description=desc)
        p.add_argument("files", type=Path, nargs="+", help=files_help)
        add_model_options(p, 64)
        g = p.add_argument_group("protocol (defaults: the community setting)")
        g.add_argument("--folds", type=int, default=10, help="number of contiguous folds (default 10)")
        g.add_argument("--far", type=float, default=1e-3, help="FAR of the VAL metric (default 1e-3)")
        if name == "pairs":
            g.add_argument(
                "--resize",
                action="store_true",
                help="resize images that are not 112x112 (only right for crops that are aligned already)",
            )
        add_policy_option(p)
        add_output_options(p, f"out/{name}")
        p.set_defaults(func=cmd_eval_pairsets, kind=name)


def _print_and_done(ev: Any) -> int:
    print(ev.table())
    return 0


def cmd_eval_features(args: argparse.Namespace) -> int:
    """``vitfree eval features``."""
    from vitfree.pipelines import evaluate_features

    ev = evaluate_features(
        args.features,
        args.meta,
        args.out,
        dataset=args.dataset,
        exits=args.exits,
        flip_halves=args.flip_halves,
        options=ijb_options(args),
        one_n=not args.no_1n,
        plots=not args.no_plots,
        reproduce=reproduction(args),
    )
    return _print_and_done(ev)


def cmd_eval_ijb(args: argparse.Namespace) -> int:
    """``vitfree eval ijbc|ijbb``."""
    from vitfree.pipelines import evaluate_ijb

    model = load_model(args, allow_onnx=True)
    ev = evaluate_ijb(
        model,
        args.root,
        args.out,
        dataset=args.dataset,
        exits=args.exits,
        batch_size=args.batch_size,
        num_workers=args.workers,
        device=args.device,
        amp=args.amp,
        skip_bad=args.skip_bad,
        use_damaged=args.use_damaged,
        overwrite=args.overwrite,
        shard=args.shard,
        options=ijb_options(args),
        one_n=not args.no_1n,
        speed=not args.no_speed,
        model_path=args.model,
        plots=not args.no_plots,
        reproduce=reproduction(args),
        policy=args.policy,
        policy_per_template=args.policy_per_template,
        policy_pairs=args.policy_pairs,
    )
    return 0 if ev is None else _print_and_done(ev)  # under torchrun, rank 0 reports


def cmd_eval_pairsets(args: argparse.Namespace) -> int:
    """``vitfree eval bin|pairs``."""
    from vitfree.pipelines import evaluate_pairsets

    model_file = [] if str(args.model) == "demo" else [args.model]
    missing = [str(f) for f in [*model_file, *args.files] if not Path(f).is_file()]
    if missing:
        raise FileNotFoundError("not found: " + ", ".join(missing))
    model = load_model(args)
    ev = evaluate_pairsets(
        model,
        args.files,
        args.out,
        kind=args.kind,
        exits=args.exits,
        batch_size=args.batch_size,
        n_folds=args.folds,
        far=args.far,
        device=args.device,
        amp=args.amp,
        speed=not args.no_speed,
        resize=getattr(args, "resize", False),
        model_path=args.model,
        plots=not args.no_plots,
        policy=args.policy,
    )
    return _print_and_done(ev)
