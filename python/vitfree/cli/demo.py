"""``vitfree demo`` (the main job: the demo model on SYNTHETIC faces) and ``vitfree demo-features``."""

from __future__ import annotations

import argparse
from typing import Any

from vitfree.cli.options import add_output_options, int_list

__all__ = ["add_parser", "cmd_demo", "cmd_demo_features"]


def add_parser(sub: Any) -> None:
    """Add ``demo`` and ``demo-features`` to the top-level sub-parsers."""
    demo = sub.add_parser(
        "demo",
        help="the main job, offline: the SYNTHETIC demo face ViT at every exit on rendered faces",
        description=(
            "Renders a held-out SYNTHETIC IJB-C-format benchmark (JPEG loose crops, landmarks, meta files, "
            "1:N csvs) and an LFW-style .bin set, then runs 'vitfree eval ijbc' and 'vitfree eval bin' with "
            "the demo model shipped in the package at every exit: decoding, 5-point alignment, image + flip "
            "in one pass for all exits, TAR@FAR, 1:N, 10-fold accuracy, GFLOPs and measured speed-up. "
            "Rendered faces, not people: the numbers show the pipeline and the trade-off."
        ),
    )
    demo.add_argument("--subjects", type=int, default=150, help="people in the benchmark (default 150)")
    demo.add_argument("--pairs", type=int, default=600, help="pairs of the .bin set (default 600)")
    demo.add_argument("--exits", type=int_list, default=None, help="exits (default: every block)")
    demo.add_argument("--seed", type=int, default=1, help="who the benchmark's people are (default 1)")
    demo.add_argument("--model", default="demo", help="model (default: the shipped demo model)")
    add_output_options(demo, "out/demo")
    demo.set_defaults(func=cmd_demo)

    feats = sub.add_parser(
        "demo-features",
        help="generate a SYNTHETIC IJB-C-size feature set for several exits and evaluate it (no model)",
        description=(
            "Writes IJB-C-format meta files and per-exit features of a synthetic population "
            "(identity structure, detector scores, IJB-C sizes; shallower exits noisier) and "
            "runs 'vitfree eval features' on them: the verification core at full IJB-C size. "
            "The numbers are not those of a real model."
        ),
    )
    feats.add_argument("--scale", type=float, default=1.0, help="fraction of the IJB-C sizes (default 1.0 = full)")
    feats.add_argument("--exits", type=int_list, default=[4, 6, 8, 10, 12], help="exits to simulate")
    feats.add_argument("--seed", type=int, default=0, help="random seed")
    add_output_options(feats, "out/demo-features")
    feats.set_defaults(func=cmd_demo_features)


def cmd_demo(args: argparse.Namespace) -> int:
    """``vitfree demo``."""
    from vitfree.pipelines import demo

    ijbc, bins = demo(args.out, subjects=args.subjects, pairs=args.pairs, exits=args.exits,
                      seed=args.seed, plots=not args.no_plots, model=args.model)  # fmt: skip
    print(ijbc.table())
    print()
    print(bins.table())
    return 0


def cmd_demo_features(args: argparse.Namespace) -> int:
    """``vitfree demo-features``."""
    from vitfree.pipelines import demo_features

    ev = demo_features(args.out, scale=args.scale, exits=args.exits, seed=args.seed, plots=not args.no_plots)
    print(ev.table())
    return 0
