"""Options shared by the commands: protocol, output, model and exits."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = [
    "add_ijb_protocol_options",
    "add_reproduce_options",
    "add_model_options",
    "add_output_options",
    "add_policy_option",
    "add_policy_template_options",
    "float_list",
    "ijb_options",
    "int_list",
    "load_model",
    "reproduction",
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
        "--fars",
        type=float_list,
        default=None,
        help="FAR targets of the 1:1 table (default the preset's: 1e-6,1e-5,1e-4,1e-3,1e-2,1e-1)",
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
    g.add_argument(
        "--exit-heads",
        type=Path,
        default=None,
        metavar="FILE",
        help="exit-specific heads (written by 'vitfree finetune' or save_exit_heads) used at their exits instead "
        "of the shared head; they must have been trained on this --model (its fingerprint is checked); "
        "results.json names the file and the head kinds",
    )


def ijb_options(args: argparse.Namespace) -> Any:
    """The :class:`vitfree.evaluate.IJBOptions` of the protocol options."""
    from vitfree.evaluate import IJBOptions

    opts = IJBOptions(
        use_flip=not args.no_flip,
        use_faceness=not args.no_faceness,
        normalize_images=args.normalize_images,
        search=args.search,
    )
    if getattr(args, "fars", None) is not None:
        import dataclasses

        opts = dataclasses.replace(opts, fars=tuple(args.fars))
    return opts


def add_reproduce_options(p: argparse.ArgumentParser, images: bool = True) -> None:
    """``--reproduce`` and the conventions it sets (docs/reproduce.md); ``images``: the
    options that act at extraction (pixel scaling, alignment) too."""
    g = p.add_argument_group(
        "reproducing a community script (a preset sets every convention; explicit options win)"
    )
    g.add_argument(
        "--reproduce",
        choices=["eval_ijbc", "ijb_evals"],
        default="eval_ijbc",
        help="whose numbers to reproduce: eval_ijbc = insightface arcface_torch eval_ijbc.py (default), "
        "ijb_evals = insightface _evaluation_/ijb/ijb_evals.py"
        + (": pixel scaling, alignment arithmetic and template, N/D/F mode, TAR rule, FAR/FPIR grids"
           if images else ": N/D/F mode, TAR rule, FAR/FPIR grids"),
    )  # fmt: skip
    g.add_argument(
        "--modes",
        default=None,
        help="N/D/F modes of template aggregation: 'all' (the 8 tables of ijb_evals.py -B, from one "
        "extraction) or a list such as N0D1F1,N1D1F1 (N1: L2-normalise image features, D1: detector-score "
        "weights, F1: add the flip); default the preset's (N0D1F1); not with --no-flip/--no-faceness/"
        "--normalize-images",
    )
    g.add_argument(
        "--tar-rule",
        choices=["nearest", "at_most"],
        default=None,
        help="TAR@FAR rule of the table: nearest (the ROC point with the nearest FPR, both scripts; default) "
        "or at_most (FPR <= FAR); results.json has both",
    )
    if images:
        g.add_argument(
            "--pixel-scaling",
            choices=["div255", "div128"],
            default=None,
            help="div255: (x/255-0.5)/0.5 (eval_ijbc.py); div128: (x-127.5)*0.0078125 (ijb_evals.py); "
            "default the preset's",
        )
        g.add_argument(
            "--align-dtype",
            choices=["float32", "float64"],
            default=None,
            help="float32: scikit-image's float32 transform estimate and the script's template, crops "
            "bit-identical to the scripts' (both presets); float64: vitfree's float64 estimate",
        )


def reproduction(args: argparse.Namespace) -> Any:
    """The :class:`vitfree.reproduce.Reproduction` of ``--reproduce`` under the explicit options."""
    from vitfree.reproduce import apply_preset

    return apply_preset(
        getattr(args, "reproduce", None) or "eval_ijbc",
        pixel_scaling=getattr(args, "pixel_scaling", None),
        align_dtype=getattr(args, "align_dtype", None),
        modes=getattr(args, "modes", None),
        tar_rule=getattr(args, "tar_rule", None),
        fars=getattr(args, "fars", None),
        normalize_images=True if getattr(args, "normalize_images", False) else None,
        use_faceness=False if getattr(args, "no_faceness", False) else None,
        use_flip=False if getattr(args, "no_flip", False) else None,
    )


def load_model(args: argparse.Namespace, allow_onnx: bool = False) -> Any:
    """The checkpoint of ``--model`` (``--arch`` when given), checked to exist; with
    ``allow_onnx`` a ``.onnx`` file opens as a :class:`vitfree.models.onnx.OnnxModel`
    (onnxruntime, final embedding only)."""
    from vitfree.models import load

    if allow_onnx and str(args.model).lower().endswith(".onnx"):
        from vitfree.errors import InputError
        from vitfree.models.onnx import load_onnx

        if getattr(args, "arch", None):
            raise InputError(f"--arch does not apply to an ONNX model ({args.model}): the graph is fixed")
        if getattr(args, "amp", None):
            raise InputError(
                f"--amp does not apply to an ONNX model ({args.model}): it runs in the graph's precision"
            )
        if getattr(args, "exit_heads", None) is not None:
            raise InputError(
                f"--exit-heads does not apply to an ONNX model ({args.model}): export a truncated model "
                f"with its head instead"
            )
        from vitfree.runtime import resolve_device

        return load_onnx(args.model, device=resolve_device(getattr(args, "device", "auto")))

    heads = getattr(args, "exit_heads", None)  # --exit-heads: installed after loading
    if heads is not None and not Path(heads).is_file():
        raise FileNotFoundError(f"exit-heads file not found: {heads}")
    if str(args.model) == "demo" and not args.model.exists():
        model = load("demo", args.arch)  # the SYNTHETIC demo model shipped in the package
    elif not args.model.is_file():
        raise FileNotFoundError(f"model checkpoint not found: {args.model}")
    else:
        model = load(args.model, args.arch)
    if heads is not None:
        model.load_exit_heads(heads)  # CheckpointError for heads of another backbone
    return model


def add_policy_template_options(p: argparse.ArgumentParser) -> None:
    """``--policy-per-template``, ``--policy-pairs``: how a face policy meets IJB templates."""
    p.add_argument(
        "--policy-per-template",
        action="store_true",
        help="with --policy (a face policy): every image of a template stops at one exit, the deepest exit the "
        "policy chose for any of its images (images are decided first, then those of deeper templates rerun)",
    )
    p.add_argument(
        "--policy-pairs",
        choices=["own", "common"],
        default="own",
        help="with --policy (a face policy): 'own' (default) aggregates each template from its images' own exits; "
        "'common' scores each pair at the deepest exit both templates reached (1:1 only)",
    )


def add_policy_option(p: argparse.ArgumentParser) -> None:
    """``--policy FILE``: dynamic exits (:mod:`vitfree.dynamic`) next to the static exits."""
    p.add_argument(
        "--policy",
        type=Path,
        default=None,
        help="dynamic exits: a policy file written by 'vitfree dynamic calibrate' for this model; adds a row "
        "where every face stops at its own exit (or, for a cascade policy, every pair), with its average blocks",
    )
