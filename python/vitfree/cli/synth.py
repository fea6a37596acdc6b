"""``vitfree synth faces|rec|ijbc|bin|pairs``: SYNTHETIC face sets in the real formats."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "cmd_synth"]

_HELP = {
    "faces": "a training set: one folder per identity of aligned 112x112 JPEGs",
    "rec": "the same training set as insightface RecordIO (DIR/train.rec, train.idx, property)",
    "ijbc": "an IJB-C-format benchmark (DIR/IJBC/loose_crop, meta files, 1:N csvs) for 'vitfree eval ijbc --root DIR'",
    "bin": "an LFW-style .bin verification set (OUT is the .bin file)",
    "pairs": "aligned images and a 'path1 path2 label' pair list for 'vitfree eval pairs'",
}


def add_parser(sub: Any) -> None:
    """Add ``synth`` and its sub-commands to the top-level sub-parsers."""
    sp = sub.add_parser(
        "synth",
        help="write SYNTHETIC faces (rendered 2.5D heads, not real people) in the real formats",
        description=(
            "Render synthetic faces (identities fixed by the seed; pose, light, expression, occlusion, "
            "blur and noise varied per image; exact 5-point landmarks) and write them in the formats of the "
            "real sets. A seed other than the training seed gives only unseen identities."
        ),
    )
    kinds = sp.add_subparsers(dest="kind", required=True)
    for kind, help_ in _HELP.items():
        p = kinds.add_parser(kind, help=help_, description=help_)
        p.add_argument("--out", type=Path, required=True, help="output folder (a .bin file for 'bin')")
        p.add_argument("--seed", type=int, default={"faces": 0, "rec": 0, "ijbc": 1, "bin": 2, "pairs": 3}[kind],
                       help="who the identities are (and the image variation)")  # fmt: skip
        p.add_argument(
            "--preset", choices=["easy", "medium", "hard"], default="medium", help="per-image variation (default medium)"
        )
        if kind in ("faces", "rec"):
            p.add_argument("--identities", type=int, default=100, help="number of people (default 100)")
            p.add_argument("--images", type=int, default=20, help="images per person (default 20)")
        elif kind == "ijbc":
            p.add_argument("--identities", type=int, default=50, help="number of subjects (default 50)")
            p.add_argument("--probe-templates", type=int, default=2, help="probe templates per subject (default 2)")
        else:
            p.add_argument("--pairs", type=int, default=600 if kind == "bin" else 300, help="number of pairs")
            p.add_argument("--identities", type=int, default=None, help="people to draw pairs from (default: as many as pairs)")
        p.add_argument("--overwrite", action="store_true", help="write into a folder that is not empty")
        p.set_defaults(func=cmd_synth)


def cmd_synth(args: argparse.Namespace) -> int:
    """``vitfree synth``."""
    from vitfree.synthetic import sets

    if args.kind == "faces":
        out = sets.write_image_folder(args.out, args.identities, args.images, seed=args.seed,
                                      preset=args.preset, overwrite=args.overwrite)  # fmt: skip
        print(f"SYNTHETIC image folder: {args.identities} identities x {args.images} images in {out}")
    elif args.kind == "rec":
        out = sets.write_recordio_set(args.out, args.identities, args.images, seed=args.seed,
                                      preset=args.preset, overwrite=args.overwrite)  # fmt: skip
        print(f"SYNTHETIC RecordIO set: {args.identities} identities x {args.images} images in {out}")
    elif args.kind == "ijbc":
        info = sets.write_ijbc(args.out, args.identities, seed=args.seed, preset=args.preset,
                               probe_templates=args.probe_templates, overwrite=args.overwrite)  # fmt: skip
        print(
            f"SYNTHETIC IJB-C-format benchmark in {info['root'] / 'IJBC'}: {info['images']} images, "
            f"{info['templates']} templates, {info['pairs']} pairs ({info['genuine']} genuine)"
        )
    elif args.kind == "bin":
        out = sets.write_bin(args.out, args.pairs, seed=args.seed, preset=args.preset,
                             identities=args.identities, overwrite=args.overwrite)  # fmt: skip
        print(f"SYNTHETIC .bin set: {args.pairs} pairs in {out}")
    else:
        out = sets.write_pairs(args.out, args.pairs, seed=args.seed, preset=args.preset,
                               identities=args.identities, overwrite=args.overwrite)  # fmt: skip
        print(f"SYNTHETIC pair list: {args.pairs} pairs in {out}")
    return 0
