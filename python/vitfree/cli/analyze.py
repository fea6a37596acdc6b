"""``vitfree analyze``: how patch tokens, attention and exit embeddings settle across depth."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "cmd_analyze"]


def add_parser(sub: Any) -> None:
    """Add ``analyze`` to the top-level sub-parsers."""
    p = sub.add_parser(
        "analyze",
        help="depth analysis: token cosines and CKA, attention maps, exit agreement, per block",
        description=(
            "Run a face ViT over a data set in batches (one forward pass per batch, block by block) and measure, "
            "per block: patch-token cosines (consecutive blocks, last block) and minibatch linear CKA between "
            "every pair of blocks (after the model's LayerNorm, as exits see them); attention similarity "
            "(1 - Jensen-Shannon) to the previous and last block, entropy and mean distance; the attention received "
            "per patch over the average face; each exit's embedding cosine with the final one, its verification "
            "decisions' agreement with the final exit at matched FAR, and its effective rank. Writes "
            "OUT/analysis.json and PNG plots."
        ),
    )
    p.add_argument(
        "--model",
        type=Path,
        required=True,
        help="face-ViT checkpoint (.pt/.pth/.safetensors), or 'demo' for the SYNTHETIC demo model in the package",
    )
    p.add_argument(
        "--arch", default=None, help="architecture name (default: inferred from the tensor shapes)"
    )
    p.add_argument(
        "--data",
        required=True,
        help="'synth' (SYNTHETIC faces rendered on the fly), an LFW-style .bin file, an IJB-B/C root "
        "(holding IJBC/ or IJBB/) or an image folder (one sub-folder of aligned 112x112 faces per identity)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("out/analysis"),
        help="output folder (default out/analysis)",
    )
    p.add_argument("--batch-size", type=int, default=64, help="images per batch, >= 4 (default 64)")
    p.add_argument(
        "--max-images",
        type=int,
        default=None,
        help="analyse at most this many images (default: all; synth: 1024)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=1,
        help="synth: who the identities are (default 1: unseen by the demo)",
    )
    p.add_argument(
        "--identities", type=int, default=100, help="synth: number of identities (default 100)"
    )
    p.add_argument(
        "--preset", choices=["easy", "medium", "hard"], default="medium", help="synth: variation"
    )
    p.add_argument(
        "--far",
        type=float,
        default=1e-2,
        help="FAR of the exits' decision agreement (default 1e-2)",
    )
    p.add_argument(
        "--cka-features",
        choices=["flatten", "mean"],
        default="flatten",
        help="CKA features of an image: its flattened tokens, what the head reads (default), or their mean",
    )
    p.add_argument(
        "--heads",
        choices=["shared", "auto"],
        default="shared",
        help="exit embeddings from the checkpoint's head (shared, default: training-free) or exit heads where loaded",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="DataLoader workers for IJB / folder data (default 0)",
    )
    p.add_argument(
        "--device", default="auto", help="cpu, cuda or cuda:N (default auto: cuda when available)"
    )
    p.add_argument(
        "--amp",
        choices=["bf16", "fp16"],
        default=None,
        help="mixed precision on GPU (default fp32)",
    )
    p.add_argument("--no-plots", action="store_true", help="do not write PNG plots")
    p.set_defaults(func=cmd_analyze)


def cmd_analyze(args: argparse.Namespace) -> int:
    """``vitfree analyze``."""
    from vitfree.analysis import analyze_data, open_data
    from vitfree.cli.options import load_model

    # the data and the sizes are checked before the model is read
    data = open_data(args.data, batch_size=args.batch_size, max_images=args.max_images, seed=args.seed,
                     identities=args.identities, preset=args.preset, num_workers=args.workers)  # fmt: skip
    model = load_model(args)
    res = analyze_data(
        model,
        data,
        args.out,
        batch_size=args.batch_size,
        device=args.device,
        amp=args.amp,
        far=args.far,
        cka_features=args.cka_features,
        heads=args.heads,
        model_path=args.model,
        plots=not args.no_plots,
    )
    tag = "SYNTHETIC faces, " if res.synthetic else ""
    print(f"depth analysis of {res.meta['model']['name']} ({tag}{res.n_images} images)")
    print(res.table())
    print(f"wrote {args.out / 'analysis.json'}" + ("" if args.no_plots else " and PNG plots"))
    return 0
