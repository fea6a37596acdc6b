"""The ``vitfree`` command line: thin modules that parse arguments and call
:mod:`vitfree.pipelines`.

    vitfree eval features FEATS --meta ROOT [--out OUT]   evaluate saved per-exit features
    vitfree eval ijbc --root DIR --model CKPT [--out OUT]  extract features at every exit, evaluate
    vitfree eval ijbb --root DIR --model CKPT [--out OUT]  the same on IJB-B
    vitfree eval bin lfw.bin ... --model CKPT [--out OUT]  LFW-style .bin sets at every exit
    vitfree eval pairs LIST ... --model CKPT [--out OUT]   a pairs list of one's own aligned faces
    vitfree demo [--out OUT]                             the same on generated (synthetic) data

One module per command group: :mod:`vitfree.cli.eval` (``eval ...``), :mod:`vitfree.cli.demo`;
the options they share are in :mod:`vitfree.cli.options`.  Extraction runs under
``torchrun --nproc_per_node N -m vitfree eval ijbc ...`` too: every rank extracts a shard,
rank 0 assembles the features and evaluates.

Every command prints the per-exit table and writes ``OUT/results.json``, ``OUT/results.csv``
and PNG plots.  Errors about the inputs (:class:`vitfree.errors.VitfreeError`, a missing
file) print one line and exit with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import vitfree
from vitfree._logging import set_verbosity
from vitfree.cli import demo as demo_cmd
from vitfree.cli import eval as eval_cmd
from vitfree.errors import VitfreeError
from vitfree.pipelines import default_exits

__all__ = ["build_parser", "default_exits", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(
        prog="vitfree",
        description="Training-free early exits for face-recognition ViTs: accuracy and cost at every exit.",
    )
    parser.add_argument("--version", action="version", version=f"vitfree {vitfree.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    eval_cmd.add_parsers(sub)
    demo_cmd.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 bad input, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "threads", 0):
        vitfree.set_num_threads(args.threads)
    set_verbosity(logging.INFO)
    try:
        return int(args.func(args))
    except (VitfreeError, FileNotFoundError) as exc:
        print(f"vitfree: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vitfree: interrupted", file=sys.stderr)
        return 130
    finally:
        set_verbosity(logging.WARNING)


if __name__ == "__main__":
    sys.exit(main())
