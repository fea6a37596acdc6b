"""The ``vitfree`` command line.

    vitfree eval features FEATS --meta ROOT [--out OUT]   evaluate saved per-exit features
    vitfree eval ijbc --root DIR --model CKPT [--out OUT]  extract features at every exit, evaluate
    vitfree eval ijbb --root DIR --model CKPT [--out OUT]  the same on IJB-B
    vitfree eval bin lfw.bin ... --model CKPT [--out OUT]  LFW-style .bin sets at every exit
    vitfree eval pairs LIST ... --model CKPT [--out OUT]   a pairs list of one's own aligned faces
    vitfree demo [--out OUT]                             the same on generated (synthetic) data

Extraction runs under ``torchrun --nproc_per_node N -m vitfree eval ijbc ...`` too: every rank
extracts a shard, rank 0 assembles the features and evaluates.

Every command prints the per-exit table and writes ``OUT/results.json``, ``OUT/results.csv``
and PNG plots. ``vitfree <command> --help`` explains every option.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import vitfree

__all__ = ["main"]


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _float_list(text: str) -> list[float]:
    try:
        return [float(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _progress(total: int, desc: str) -> tuple[Callable[[str], None], Any]:
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="step", file=sys.stderr, dynamic_ncols=True)

    def step(msg: str) -> None:
        bar.set_postfix_str(msg)
        bar.update(1)

    return step, bar


def _add_ijb_protocol_options(p: argparse.ArgumentParser, dataset_option: bool = True) -> None:
    g = p.add_argument_group("IJB protocol (defaults: the community setting, PROTOCOLS §3-4)")
    if dataset_option:
        g.add_argument("--dataset", choices=["IJBC", "IJBB"], default="IJBC", help="which IJB set (default IJBC)")
    g.add_argument("--no-flip", action="store_true", help="ignore flipped-image features (default: add them)")
    g.add_argument(
        "--no-faceness", action="store_true", help="do not weight images by the detector score (default: weight)"
    )
    g.add_argument(
        "--normalize-images", action="store_true", help="L2-normalise each image feature before aggregation"
    )
    g.add_argument(
        "--fars", type=_float_list, default=[1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1], help="FAR targets of the 1:1 table"
    )
    g.add_argument("--no-1n", action="store_true", help="skip 1:N identification")
    g.add_argument(
        "--search",
        choices=["flat", "ivf", "hnsw"],
        default="flat",
        help="faiss search for 1:N: exact inner product (flat, default) or approximate",
    )


def _add_output_options(p: argparse.ArgumentParser, default_out: str) -> None:
    p.add_argument("--out", type=Path, default=Path(default_out), help=f"output folder (default {default_out})")
    p.add_argument("--no-plots", action="store_true", help="do not write PNG plots")
    p.add_argument("--threads", type=int, default=0, help="threads of the Rust core (default: all cores)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vitfree",
        description="Training-free early exits for face-recognition ViTs: accuracy and cost at every exit.",
    )
    parser.add_argument("--version", action="version", version=f"vitfree {vitfree.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

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
    feats.add_argument("--exits", type=_int_list, default=None, help="only these exits of a folder, e.g. 4,8,12")
    feats.add_argument(
        "--flip-halves",
        action="store_true",
        help="arrays are (N, 2D): image features then flip features (insightface's saved format)",
    )
    _add_ijb_protocol_options(feats)
    _add_output_options(feats, "out/eval")
    feats.set_defaults(func=cmd_eval_features)

    _add_model_eval_parsers(evsub)

    demo = sub.add_parser(
        "demo",
        help="generate a SYNTHETIC IJB-C-shaped feature set for several exits and evaluate it",
        description=(
            "Writes IJB-C-format meta files and per-exit features of a synthetic population "
            "(identity structure, detector scores, IJB-C sizes; shallower exits noisier) and "
            "runs 'vitfree eval features' on them. The numbers are not those of a real model."
        ),
    )
    demo.add_argument("--scale", type=float, default=1.0, help="fraction of the IJB-C sizes (default 1.0 = full)")
    demo.add_argument("--exits", type=_int_list, default=[4, 6, 8, 10, 12], help="exits to simulate")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    _add_output_options(demo, "out/demo")
    demo.set_defaults(func=cmd_demo)
    return parser


def _options(args: argparse.Namespace) -> Any:
    from vitfree.evaluate import IJBOptions

    return IJBOptions(
        use_flip=not args.no_flip,
        use_faceness=not args.no_faceness,
        normalize_images=args.normalize_images,
        fars=tuple(args.fars),
        search=args.search,
    )


def _load_1n(args: argparse.Namespace, root: Path) -> Any:
    if args.no_1n:
        return None
    from vitfree.data import load_ijb_1n

    try:
        return load_ijb_1n(root, args.dataset)
    except FileNotFoundError as exc:
        print(f"note: skipping 1:N identification: {exc} (pass --no-1n to silence)", file=sys.stderr)
        return None


def run_ijb_features(
    sets: Sequence[Any], meta_root: Path, args: argparse.Namespace, title: str, info: dict[str, Any]
) -> list[Any]:
    """Evaluate feature sets on IJB, print the table, save results and plots."""
    from vitfree.data import load_ijb_meta
    from vitfree.evaluate import evaluate_ijb_exits
    from vitfree.report import format_ijb_table, plot_ijb, save_ijb

    t0 = time.perf_counter()
    meta = load_ijb_meta(meta_root, args.dataset)
    onen = _load_1n(args, meta_root)
    print(f"{meta!r} read in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    steps = len(sets) * (2 if onen is not None else 1)
    step, bar = _progress(steps, "evaluating")
    try:
        results = evaluate_ijb_exits(sets, meta, onen, _options(args), progress=step)
        bar.update(steps - bar.n)
    finally:
        bar.close()
    print(format_ijb_table(results, title))
    info = dict(info, dataset=args.dataset, options=vars(_options(args)), meta=str(meta.meta_dir))
    written = save_ijb(results, args.out, info)
    if not args.no_plots:
        written += plot_ijb(results, args.out, title)
    print("wrote " + ", ".join(str(p) for p in written), file=sys.stderr)
    return results


def cmd_eval_features(args: argparse.Namespace) -> int:
    from vitfree.features import load_feature_sets

    sets = load_feature_sets(args.features, flip_halves=args.flip_halves, exits=args.exits)
    run_ijb_features(sets, args.meta, args, f"{args.dataset} from {args.features}", {"features": str(args.features)})
    return 0


def _demo_noise(k: int, depth: int = 12) -> float:
    """Image noise of the synthetic exit k: shallower exits are noisier (a monotone made-up law)."""
    return 2.6 + 0.05 * max(depth - k, 0) ** 1.6


def _demo_costs(exits: Sequence[int]) -> dict[str, dict[str, float]]:
    """FLOPs of vit_s at these exits, counted by torch's FlopCounterMode (empty if unavailable)."""
    try:
        from vitfree.models import exit_costs, vit_s

        costs = exit_costs(vit_s(), exits=list(exits))
        return {str(c.exit): c.as_dict() for c in costs}
    except Exception as exc:  # the demo works without the model stack
        print(f"note: no FLOP counts for the demo ({exc})", file=sys.stderr)
        return {}


def cmd_demo(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from vitfree.features import exit_filename, load_feature_sets, write_manifest
    from vitfree.synthetic import ijb_features, write_ijb_meta

    banner = (
        "SYNTHETIC DATA: IJB-C-shaped features generated with identity structure, one noise level "
        "per exit.\nThey exercise the real readers and protocols at IJB-C size; they are not results "
        "of a real model or dataset."
    )
    print(banner, file=sys.stderr)
    out: Path = args.out
    feats_dir = out / "features"
    feats_dir.mkdir(parents=True, exist_ok=True)
    exits = sorted(set(args.exits))
    costs = _demo_costs(exits)
    for i, k in enumerate(tqdm(exits, desc="generating synthetic exits", file=sys.stderr)):
        data = ijb_features(scale=args.scale, seed=args.seed, noise=_demo_noise(k))
        if i == 0:
            write_ijb_meta(data, out / "data", "IJBC")
        np.save(feats_dir / exit_filename(k), data.feats)
        del data
    write_manifest(
        feats_dir,
        {"exits": exits, "synthetic": True, "costs": costs, "note": "vitfree demo: synthetic features"},
    )
    args.dataset = "IJBC"
    args.no_flip = args.no_faceness = args.normalize_images = args.no_1n = False
    args.fars = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1]
    args.search = "flat"
    sets = load_feature_sets(feats_dir)
    title = f"SYNTHETIC IJB-C-shaped demo (scale {args.scale:g}; FLOPs of vit_s)"
    run_ijb_features(sets, out / "data", args, title, {"synthetic": True, "scale": args.scale})
    return 0


# --------------------------------------------------------------------------------------
# evaluating a model: eval ijbc / ijbb / bin / pairs
# --------------------------------------------------------------------------------------


def default_exits(depth: int) -> list[int]:
    """1/3, 1/2, 2/3, 5/6 of the depth and the full model: 4,6,8,10,12 for 12 blocks."""
    return sorted({max(1, round(depth * f)) for f in (1 / 3, 1 / 2, 2 / 3, 5 / 6, 1.0)})


def _add_model_options(p: argparse.ArgumentParser, default_batch: int) -> None:
    g = p.add_argument_group("model and exits")
    g.add_argument(
        "--model",
        type=Path,
        required=True,
        help="face-ViT checkpoint: torch.save(state_dict) .pt/.pth or .safetensors (insightface, TransFace, LVFace)",
    )
    g.add_argument(
        "--arch",
        default=None,
        help="architecture name (vit_t, vit_s, vit_b, vit_l, vit_h, ...; default: inferred from the tensor shapes)",
    )
    g.add_argument(
        "--exits",
        type=_int_list,
        default=None,
        help=(
            "exits to evaluate: block numbers, 1-based, comma-separated, negative from the end (write "
            "--exits=-2,-1); default 1/3, 1/2, 2/3, 5/6 of the depth and the full model (4,6,8,10,12 for 12 blocks)"
        ),
    )
    g.add_argument(
        "--batch-size", type=int, default=default_batch, help=f"images per batch; each also runs its flip (default {default_batch})"
    )
    g.add_argument(
        "--device", default="auto", help="cpu, cuda or cuda:N (default auto: cuda when available, else cpu)"
    )
    g.add_argument(
        "--amp",
        choices=["bf16", "fp16"],
        default=None,
        help="mixed precision on GPU (attention and head stay fp32, as the reference); default fp32",
    )
    g.add_argument(
        "--no-speed",
        action="store_true",
        help="skip the short speed measurement (latency at batch 1, throughput at batch 64) that fills 'speed-up'",
    )


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
                f"process extracts a shard (gloo on CPU, nccl on GPU) and rank 0 evaluates."
            ),
        )
        p.add_argument(
            "--root",
            type=Path,
            required=True,
            help=f"folder holding {ds}/ (with loose_crop/ and meta/), the {ds} folder itself, or its meta folder",
        )
        _add_model_options(p, 64)
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
            help="write zero features for missing or undecodable images, count and list them in the manifest "
            "(default: stop with an error naming the file)",
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
        _add_ijb_protocol_options(p, dataset_option=False)
        _add_output_options(p, f"out/{name}")
        p.set_defaults(func=cmd_eval_ijb, dataset=ds)

    for name in ("bin", "pairs"):
        if name == "bin":
            help_ = "LFW-style .bin sets (lfw, cfp_fp, agedb_30, calfw, cplfw) at every exit of a model"
            desc = (
                "10-fold accuracy (mean and std, percent) and VAL@FAR=1e-3 of each insightface .bin set (Python 2 or "
                "3 pickle of aligned 112x112 JPEGs and issame flags) at every requested exit. Embedding = "
                "emb(image) + emb(flip), L2-normalised; squared Euclidean distance; folds contiguous (PROTOCOLS §5)."
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
        _add_model_options(p, 64)
        g = p.add_argument_group("protocol (defaults: the community setting)")
        g.add_argument("--folds", type=int, default=10, help="number of contiguous folds (default 10)")
        g.add_argument("--far", type=float, default=1e-3, help="FAR of the VAL metric (default 1e-3)")
        if name == "pairs":
            g.add_argument(
                "--resize",
                action="store_true",
                help="resize images that are not 112x112 (only right for crops that are aligned already)",
            )
        _add_output_options(p, f"out/{name}")
        p.set_defaults(func=cmd_eval_pairsets, kind=name)


def _load_model(args: argparse.Namespace) -> Any:
    from vitfree.models import load

    return load(args.model, args.arch)


def _costs_with_speed(model: Any, exits: list[int], args: argparse.Namespace) -> dict[str, dict[str, float]]:
    from vitfree.extract import exit_cost_table, measure_speed

    speed = None
    if not args.no_speed:
        print("measuring speed per exit (seconds on a GPU, up to a minute on CPU; --no-speed skips it)", file=sys.stderr)
        speed = measure_speed(model, exits, args.device, amp=args.amp)
    return exit_cost_table(model, exits, speed)


def cmd_eval_ijb(args: argparse.Namespace) -> int:
    from vitfree.extract import extract_ijb, resolve_device
    from vitfree.features import load_feature_sets, read_manifest, write_manifest

    if not args.model.is_file():
        raise FileNotFoundError(f"model checkpoint not found: {args.model}")
    model = _load_model(args)
    exits = args.exits if args.exits is not None else default_exits(model.depth)
    feats_dir = args.out / "features"
    res = extract_ijb(
        model,
        args.root,
        feats_dir,
        dataset=args.dataset,
        exits=exits,
        batch_size=args.batch_size,
        num_workers=args.workers,
        device=args.device,
        amp=args.amp,
        skip_bad=args.skip_bad,
        model_path=args.model,
        overwrite=args.overwrite,
        shard=args.shard,
    )
    if res.rank != 0:
        return 0  # under torchrun, rank 0 evaluates
    if not res.complete:
        raise ValueError(f"extraction into {feats_dir} is incomplete; rerun the same command to resume it")
    print(
        f"features of {res.n_images} images at exits {res.exits} in {feats_dir} "
        f"({res.extracted} extracted now, {res.images_per_s:.1f} images/s; {res.resumed} were done before)",
        file=sys.stderr,
    )
    manifest = read_manifest(feats_dir)
    manifest["costs"] = _costs_with_speed(model, res.exits, args)
    write_manifest(feats_dir, manifest)
    sets = load_feature_sets(feats_dir, exits=res.exits)
    arch = model.arch or model.config.describe()
    info = {
        "model": str(args.model),
        "arch": arch,
        "features": str(feats_dir),
        "exits": res.exits,
        "skipped_images": len(res.skipped_rows),
        "device": str(resolve_device(args.device)),
        "amp": args.amp,
    }
    run_ijb_features(sets, args.root, args, f"{args.dataset}, {arch} ({args.model.name})", info)
    return 0


def cmd_eval_pairsets(args: argparse.Namespace) -> int:
    from vitfree.data import load_bin, load_pair_list
    from vitfree.extract import evaluate_pairset, resolve_device
    from vitfree.report import format_bin_table, plot_bin, save_bin

    missing = [str(f) for f in [args.model, *args.files] if not f.is_file()]
    if missing:
        raise FileNotFoundError("not found: " + ", ".join(missing))
    model = _load_model(args)
    exits = args.exits if args.exits is not None else default_exits(model.depth)
    exits = sorted(set(model.resolve_exits(exits)))
    sets = []
    for f in args.files:  # read everything first: a bad file fails before any compute
        sets.append(load_bin(f) if args.kind == "bin" else load_pair_list(f, resize=args.resize))
    costs = _costs_with_speed(model, exits, args)
    results = []
    for f, ps in zip(args.files, sets):
        results += evaluate_pairset(
            model,
            ps,
            exits,
            name=f.stem,
            batch_size=args.batch_size,
            n_folds=args.folds,
            far_target=args.far,
            costs=costs,
            device=args.device,
            amp=args.amp,
            progress=True,
        )
    arch = model.arch or model.config.describe()
    title = f"{arch} ({args.model.name})"
    print(format_bin_table(results, title))
    info = {
        "model": str(args.model),
        "arch": arch,
        "files": [str(f) for f in args.files],
        "exits": exits,
        "folds": args.folds,
        "far": args.far,
        "device": str(resolve_device(args.device)),
        "amp": args.amp,
    }
    written = save_bin(results, args.out, info)
    if not args.no_plots:
        written += plot_bin(results, args.out, title)
    print("wrote " + ", ".join(str(p) for p in written), file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "threads", 0):
        vitfree.set_num_threads(args.threads)
    try:
        return int(args.func(args))
    except (FileNotFoundError, ValueError, TypeError) as exc:
        print(f"vitfree: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vitfree: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
