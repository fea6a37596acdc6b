"""``vitfree demo``: the main job on generated (SYNTHETIC) data."""

from __future__ import annotations

import argparse
from typing import Any

from vitfree.cli.options import add_output_options, int_list

__all__ = ["add_parser", "cmd_demo"]


def add_parser(sub: Any) -> None:
    """Add ``demo`` to the top-level sub-parsers."""
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
    demo.add_argument("--exits", type=int_list, default=[4, 6, 8, 10, 12], help="exits to simulate")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    add_output_options(demo, "out/demo")
    demo.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    """``vitfree demo``."""
    from vitfree.pipelines import demo

    ev = demo(args.out, scale=args.scale, exits=args.exits, seed=args.seed, plots=not args.no_plots)
    print(ev.table())
    return 0
