"""The ``vitfree`` command line.

    vitfree eval features FEATS --meta ROOT [--out OUT]   evaluate saved per-exit features
    vitfree demo [--out OUT]                             the same on generated (synthetic) data

Every command prints the per-exit table and writes ``OUT/results.json``, ``OUT/results.csv``
and PNG plots. ``vitfree <command> --help`` explains every option.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

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


def _add_ijb_protocol_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("IJB protocol (defaults: the community setting, PROTOCOLS §3-4)")
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
