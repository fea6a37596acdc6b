"""The ``vitfree`` command line: thin modules that parse arguments and call
:mod:`vitfree.pipelines`.

    vitfree eval features FEATS --meta ROOT [--out OUT]   evaluate saved per-exit features
    vitfree eval ijbc --root DIR --model CKPT [--out OUT]  extract features at every exit, evaluate
    vitfree eval ijbb --root DIR --model CKPT [--out OUT]  the same on IJB-B
    vitfree eval bin lfw.bin ... --model CKPT [--out OUT]  LFW-style .bin sets at every exit
    vitfree eval pairs LIST ... --model CKPT [--out OUT]   a pairs list of one's own aligned faces
    vitfree demo [--out OUT]                             the same on generated (synthetic) data
    vitfree synth faces|ijbc|bin|pairs --out DIR         SYNTHETIC faces in the real formats
    vitfree train --out DIR [--data synth|FOLDER]         a face ViT with a margin loss
    vitfree dynamic calibrate --model CKPT --root DIR ...  a dynamic-exit policy file for --policy
    vitfree finetune --model CKPT --exits 2,4 --out H.pt  exit-specific heads, backbone frozen
    vitfree analyze --model CKPT --data DATA --out DIR    depth analysis: tokens, CKA, attention, exits

One module per command group: :mod:`vitfree.cli.eval` (``eval ...``), :mod:`vitfree.cli.demo`,
:mod:`vitfree.cli.synth`;
the options they share are in :mod:`vitfree.cli.options`.  Extraction runs under
``torchrun --nproc_per_node N -m vitfree eval ijbc ...`` too: every rank extracts a shard,
rank 0 assembles the features and evaluates.

Every command prints the per-exit table and writes ``OUT/results.json``, ``OUT/results.csv``
and PNG plots.  Errors about the inputs (:class:`vitfree.errors.VitfreeError`, a missing
file, an operating-system error such as a full disk) print one line and exit with status 2;
anything else is a bug and keeps its traceback.  Threads, device, precision and ``--out`` are
checked before any file is read.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import vitfree
from vitfree._logging import set_verbosity
from vitfree.cli import analyze as analyze_cmd
from vitfree.cli import demo as demo_cmd
from vitfree.cli import dynamic as dynamic_cmd
from vitfree.cli import eval as eval_cmd
from vitfree.cli import finetune as finetune_cmd
from vitfree.cli import synth as synth_cmd
from vitfree.cli import train as train_cmd
from vitfree.errors import InputError, VitfreeError
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
    synth_cmd.add_parser(sub)
    train_cmd.add_parser(sub)
    dynamic_cmd.add_parser(sub)
    finetune_cmd.add_parser(sub)
    analyze_cmd.add_parser(sub)
    return parser


def _check_out(out: Path) -> None:
    """The output folder exists or can be made, and can be written: checked before any work."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".vitfree-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise InputError(f"--out {out} cannot be written: {e.strerror or e}") from None


def _check_early(args: argparse.Namespace) -> None:
    """What can be checked before any file is read: threads, device and precision, --out."""
    if getattr(args, "threads", 0):
        vitfree.set_num_threads(args.threads)
    if getattr(args, "device", None) is not None:
        from vitfree.runtime import runtime

        runtime(args.device, getattr(args, "amp", None))
    if getattr(args, "out", None) is not None:
        out = Path(args.out)
        if getattr(args, "command", "") == "synth" and getattr(args, "kind", "") == "bin":
            _check_out(out.parent)  # --out is the .bin file itself
        elif getattr(args, "command", "") == "finetune":
            _check_out(out.parent)  # --out is the heads file itself
        else:
            _check_out(out)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 bad input, 130 interrupted).

    Bad input (a :class:`vitfree.errors.VitfreeError`) and operating-system errors (a missing
    file, a permission, a full disk) print one line; anything else keeps its traceback.
    """
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    # the command as a user would type it: recorded in what training writes
    args.command_line = shlex.join(["vitfree", *argv])
    set_verbosity(logging.INFO)
    try:
        _check_early(args)
        return int(args.func(args))
    except (VitfreeError, OSError) as exc:
        print(f"vitfree: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vitfree: interrupted", file=sys.stderr)
        return 130
    finally:
        set_verbosity(logging.WARNING)


if __name__ == "__main__":
    sys.exit(main())
