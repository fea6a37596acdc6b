"""``vitfree finetune``: exit-specific heads trained with the backbone frozen."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from vitfree.cli.options import int_list

__all__ = ["add_parser", "cmd_finetune"]

_LOSSES = ("cosface", "arcface", "distill", "cosface+distill", "arcface+distill")
_KINDS = ("copy", "lora", "norms", "lgvit_local", "lgvit_global")


def _head_option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. rank=16), got {text!r}")
    for cast in (int, float):
        try:
            return key, cast(value)
        except ValueError:
            pass
    return key, value


def add_parser(sub: Any) -> None:
    """Add ``finetune`` to the top-level sub-parsers."""
    p = sub.add_parser(
        "finetune",
        help="train exit-specific heads with every block frozen; writes an exit-heads file for --exit-heads",
        description=(
            "Fine-tune one head per exit, started from the checkpoint's own head, on an image folder, an "
            "insightface train.rec or SYNTHETIC faces rendered on the fly, with the backbone frozen: one frozen "
            "pass per batch gives every exit's tokens, all heads train together (AdamW, warm-up + cosine, "
            "seeded). Losses: CosFace/ArcFace with one classifier per exit, label-free self-distillation "
            "toward the model's final embedding, or their sum. Writes OUT (the heads: only what they train, "
            "the backbone fingerprint, exits, loss, data, command), OUT's .json (the run) and .ckpt.pt "
            "(--resume continues exactly). Use the heads with 'vitfree eval ... --exit-heads OUT'. Under "
            "torchrun every process trains on its own data (DDP)."
        ),
    )
    p.add_argument("--model", type=Path, required=True,
                   help="face-ViT checkpoint (.pt/.pth/.safetensors), or 'demo' for the SYNTHETIC demo model")  # fmt: skip
    p.add_argument("--arch", default=None, help="architecture name (default: inferred from the tensor shapes)")
    p.add_argument("--data", default="synth",
                   help="'synth' (SYNTHETIC faces rendered on the fly), an image folder (one sub-folder of aligned "
                        "112x112 faces per identity) or an insightface train.rec (with train.idx, property)")  # fmt: skip
    p.add_argument("--exits", type=int_list, required=True,
                   help="exits that get a head: 1-based, comma-separated, negative from the end (e.g. 2,4,6)")  # fmt: skip
    p.add_argument("--out", type=Path, required=True, help="the exit-heads file to write (.pt or .safetensors)")
    g = p.add_argument_group("heads and loss")
    g.add_argument("--head", choices=_KINDS, default="copy",
                   help="copy: a full copy of the head; lora: low-rank update of its first Linear + norms; norms: "
                        "LayerNorm, BatchNorms, second Linear; lgvit_local / lgvit_global: LGViT exit heads "
                        "before a copy (default copy)")  # fmt: skip
    g.add_argument("--rank", type=int, default=None, help="rank of a lora head (default 8)")
    g.add_argument("--head-option", type=_head_option, action="append", default=[], metavar="KEY=VALUE",
                   help="another head option (lora: alpha; lgvit_local: hidden; lgvit_global: pool, heads)")  # fmt: skip
    g.add_argument("--loss", choices=_LOSSES, default="cosface",
                   help="cosface (s=64, m=0.35), arcface (s=64, m=0.5), distill (1 - cosine to the frozen final "
                        "embedding, no labels) or a sum (default cosface)")  # fmt: skip
    g.add_argument("--distill-weight", type=float, default=1.0, help="weight of distill in a sum (default 1)")
    g.add_argument("--margin-weight", type=float, default=1.0, help="weight of the margin loss in a sum (default 1)")
    g = p.add_argument_group("training")
    g.add_argument("--steps", type=int, default=None, help="optimiser steps (default 500 unless --epochs)")
    g.add_argument("--epochs", type=float, default=None, help="passes over a folder / RecordIO set instead of --steps")
    g.add_argument("--batch-size", type=int, default=64, help="faces per micro-batch and process (default 64)")
    g.add_argument("--accum", type=int, default=1, help="micro-batches per step (gradient accumulation; default 1)")
    g.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    g.add_argument("--warmup", type=int, default=50, help="warm-up steps (default 50)")
    g.add_argument("--weight-decay", type=float, default=0.05, help="AdamW weight decay (default 0.05)")
    g.add_argument("--no-flip", action="store_true", help="no random horizontal flips")
    g.add_argument("--seed", type=int, default=0, help="initialisation, data order and flips (default 0)")
    g.add_argument("--identities", type=int, default=1000, help="synthetic identities of --data synth (default 1000)")
    g.add_argument("--synth-seed", type=int, default=200,
                   help="who the synthetic people are (default 200; keep it apart from the benchmarks' seeds)")  # fmt: skip
    g.add_argument("--preset", choices=["easy", "medium", "hard"], default="medium", help="synthetic variation")
    g.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: the cores)")
    g.add_argument("--skip-corrupt", action="store_true",
                   help="skip and count unusable training images (default: stop, naming the file)")  # fmt: skip
    g.add_argument("--save-every", type=int, default=100, help="steps between checkpoints (default 100)")
    g.add_argument("--resume", action="store_true", help="continue from OUT's .ckpt.pt")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    g.add_argument("--amp", choices=["bf16", "fp16"], default=None, help="mixed precision of the frozen pass on CUDA")
    g = p.add_argument_group("validation")
    g.add_argument("--val", default=None,
                   help="'synth' (SYNTHETIC pairs of --val-seed) or a .bin set: 10-fold accuracy per exit every "
                        "--val-every steps; each exit keeps its best head")  # fmt: skip
    g.add_argument("--val-every", type=int, default=100, help="steps between validations (default 100)")
    g.add_argument("--val-pairs", type=int, default=300, help="pairs of --val synth (default 300)")
    g.add_argument("--val-seed", type=int, default=7, help="identities of --val synth (default 7)")
    g.add_argument("--patience", type=int, default=None,
                   help="stop after this many validations in which no exit improved (default: never)")  # fmt: skip
    p.set_defaults(func=cmd_finetune)


def cmd_finetune(args: argparse.Namespace) -> int:
    """``vitfree finetune``."""
    from vitfree.cli.options import load_model
    from vitfree.errors import InputError
    from vitfree.finetune import FinetuneConfig, finetune

    if args.out.is_dir():
        raise InputError(f"--out {args.out} is a folder; give the heads file to write (e.g. heads.pt)")
    options = dict(args.head_option)
    if args.rank is not None:
        if args.head != "lora":
            raise InputError("--rank applies to --head lora")
        options["rank"] = args.rank
    steps = args.steps if args.steps is not None else (None if args.epochs is not None else 500)
    cfg = FinetuneConfig(
        head=args.head,
        head_options=options,
        loss=args.loss,
        margin_weight=args.margin_weight,
        distill_weight=args.distill_weight,
        identities=args.identities,
        synth_seed=args.synth_seed,
        preset=args.preset,
        steps=steps,
        epochs=args.epochs,
        batch_size=args.batch_size,
        accum=args.accum,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup=args.warmup,
        flip=not args.no_flip,
        seed=args.seed,
        workers=args.workers,
        amp=args.amp,
        save_every=args.save_every,
        val=args.val,
        val_pairs=args.val_pairs,
        val_seed=args.val_seed,
        val_every=args.val_every,
        patience=args.patience,
        skip_corrupt=args.skip_corrupt,
    )
    cfg.check()
    model = load_model(args)
    res = finetune(model, args.data, args.exits, args.out, cfg, resume=args.resume, device=args.device,
                   model_path=args.model, command=getattr(args, "command_line", None))  # fmt: skip
    if res.rank != 0:
        return 0  # under torchrun, rank 0 reports
    rec = json.loads(res.record.read_text()) if res.record.is_file() else {}
    msg = f"{len(res.heads)} {args.head} heads at exits {sorted(res.heads)}, {res.steps} steps in {res.seconds:.0f} s"
    if rec.get("final_loss") is not None:
        msg += f", final loss {rec['final_loss']:.3f}"
    if res.skipped_images:
        msg += f", {res.skipped_images} unusable images skipped"
    print(f"{msg}: {res.heads_file}")
    if res.validation:
        before, after = res.validation[0]["accuracy"], (rec.get("validation") or {}).get("best", {})
        for k in sorted(res.heads):
            best = after.get(str(k))
            if best is not None:
                print(f"  exit {k}: 10-fold accuracy {before[k]:.2f}% (shared head) -> {best:.2f}% (fine-tuned)")
    return 0
