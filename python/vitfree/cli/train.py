"""``vitfree train``: a face ViT from scratch with a margin loss (how the demo model was made)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "cmd_train"]


def add_parser(sub: Any) -> None:
    """Add ``train`` to the top-level sub-parsers."""
    p = sub.add_parser(
        "train",
        help="train a face ViT with a margin loss on SYNTHETIC faces generated on the fly or an image folder",
        description=(
            "Train a face ViT (insightface layout: patch 9, 112x112) from scratch with CosFace or ArcFace, "
            "AdamW and a warm-up + cosine schedule, flip augmentation; seeded; checkpoints every --save-every "
            "steps (--resume continues); writes OUT/model.pt and OUT/model.json (config, command, final loss). "
            "Under torchrun every process trains on its own data stream (DDP)."
        ),
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--data", default="synth", help="'synth' (faces generated on the fly), an image folder (one sub-folder per identity) or an insightface RecordIO train.rec")
    p.add_argument("--identities", type=int, default=1000, help="synthetic identities (default 1000)")
    p.add_argument("--synth-seed", type=int, default=100, help="who the synthetic people are (default 100)")
    p.add_argument("--preset", choices=["easy", "medium", "hard"], default="medium", help="synthetic variation")
    p.add_argument("--embed-dim", type=int, default=128, help="token width (default 128)")
    p.add_argument("--depth", type=int, default=12, help="blocks (default 12)")
    p.add_argument("--heads", type=int, default=4, help="attention heads (default 4)")
    p.add_argument("--num-features", type=int, default=128, help="embedding size (default 128)")
    p.add_argument("--steps", type=int, default=2000, help="optimisation steps (default 2000)")
    p.add_argument("--batch-size", type=int, default=64, help="faces per step and process (default 64)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    p.add_argument("--warmup", type=int, default=200, help="warm-up steps (default 200)")
    p.add_argument("--loss", choices=["cosface", "arcface"], default="cosface", help="margin loss (default cosface)")
    p.add_argument("--seed", type=int, default=0, help="model init, data and order (default 0)")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: the cores)")
    p.add_argument("--save-every", type=int, default=200, help="steps between checkpoints (default 200)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--amp", choices=["bf16", "fp16"], default=None, help="mixed precision on CUDA")
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    """``vitfree train``."""
    from vitfree.train import TrainConfig, train

    cfg = TrainConfig(
        model={"embed_dim": args.embed_dim, "depth": args.depth, "num_heads": args.heads,
               "num_features": args.num_features},  # fmt: skip
        data=args.data,
        identities=args.identities,
        synth_seed=args.synth_seed,
        preset=args.preset,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup=min(args.warmup, max(args.steps - 1, 1)),
        loss=args.loss,
        seed=args.seed,
        workers=args.workers,
        amp=args.amp,
        save_every=args.save_every,
    )
    res = train(cfg, args.out, resume=args.resume, device=args.device,
                command=getattr(args, "command_line", None))
    meta = json.loads((args.out / "model.json").read_text())
    print(f"trained {res.steps} steps in {res.seconds:.0f} s, final loss {meta['final_loss']:.3f}: {res.weights}")
    return 0
