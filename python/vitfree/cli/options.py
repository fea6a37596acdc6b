"""Options shared by the commands: protocol, output, model and exits."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = [
    "add_ijb_protocol_options",
    "add_model_options",
    "add_output_options",
    "float_list",
    "ijb_options",
    "int_list",
    "load_model",
]


def int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def float_list(text: str) -> list[float]:
    try:
        return [float(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def add_ijb_protocol_options(p: argparse.ArgumentParser, dataset_option: bool = True) -> None:
    g = p.add_argument_group("IJB protocol (defaults: the community setting, docs/protocols.md §3-4)")
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
        "--fars", type=float_list, default=[1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1], help="FAR targets of the 1:1 table"
    )
    g.add_argument("--no-1n", action="store_true", help="skip 1:N identification")
    g.add_argument(
        "--search",
        choices=["flat", "ivf", "hnsw"],
        default="flat",
        help="faiss search for 1:N: exact inner product (flat, default) or approximate",
    )


def add_output_options(p: argparse.ArgumentParser, default_out: str) -> None:
    p.add_argument("--out", type=Path, default=Path(default_out), help=f"output folder (default {default_out})")
    p.add_argument("--no-plots", action="store_true", help="do not write PNG plots")
    p.add_argument("--threads", type=int, default=0, help="threads of the Rust core (default: all cores)")


def add_model_options(p: argparse.ArgumentParser, default_batch: int) -> None:
    g = p.add_argument_group("model and exits")
    g.add_argument(
        "--model",
        type=Path,
        required=True,
        help="face-ViT checkpoint: torch.save(state_dict) .pt/.pth or .safetensors (insightface, TransFace, LVFace, "
        "CVLface), or 'demo' for the SYNTHETIC demo model shipped in the package",
    )
    g.add_argument(
        "--arch",
        default=None,
        help="architecture name (vit_t, vit_s, vit_b, vit_l, vit_h, ...; default: inferred from the tensor shapes)",
    )
    g.add_argument(
        "--exits",
        type=int_list,
        default=None,
        help=(
            "exits to evaluate: block numbers, 1-based, comma-separated, negative from the end (write "
            "--exits=-2,-1); each block counts once (4,4,-1 on 12 blocks = 4,12); default 1/3, 1/2, 2/3, "
            "5/6 of the depth and the full model (4,6,8,10,12 for 12 blocks)"
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


def ijb_options(args: argparse.Namespace) -> Any:
    """The :class:`vitfree.evaluate.IJBOptions` of the protocol options."""
    from vitfree.evaluate import IJBOptions

    return IJBOptions(
        use_flip=not args.no_flip,
        use_faceness=not args.no_faceness,
        normalize_images=args.normalize_images,
        fars=tuple(args.fars),
        search=args.search,
    )


def load_model(args: argparse.Namespace) -> Any:
    """The checkpoint of ``--model`` (``--arch`` when given), checked to exist."""
    from vitfree.models import load

    if str(args.model) == "demo" and not args.model.exists():
        return load("demo", args.arch)  # the SYNTHETIC demo model shipped in the package
    if not args.model.is_file():
        raise FileNotFoundError(f"model checkpoint not found: {args.model}")
    return load(args.model, args.arch)
