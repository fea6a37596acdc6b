"""Dataset readers: IJB-B/C meta files and crops, LFW-style ``.bin`` sets, 5-point alignment.

- :mod:`vitfree.data.align`: :func:`align_face`, :func:`estimate_similarity` (PROTOCOLS §3).
- :mod:`vitfree.data.ijb`: :func:`load_ijb_meta`, :func:`load_ijb_1n`, :class:`IJBCrops`.
- :mod:`vitfree.data.bins`: :func:`load_bin`, :func:`load_pair_list` (PROTOCOLS §5).
"""

from vitfree.data.align import ALIGNED_SIZE, ARCFACE_TEMPLATE, align_face, estimate_similarity
from vitfree.data.bins import BinFormatError, PairSet, decode_images, load_bin, load_pair_list
from vitfree.data.ijb import (
    IJB1N,
    IJBCrops,
    IJBFormatError,
    IJBMeta,
    find_meta_dir,
    load_ijb_1n,
    load_ijb_meta,
    meta_paths,
    read_1n_csv,
    read_face_tid_mid,
    read_name_5pts_score,
    read_template_pair_label,
)

__all__ = [
    "ALIGNED_SIZE",
    "ARCFACE_TEMPLATE",
    "IJB1N",
    "BinFormatError",
    "IJBCrops",
    "IJBFormatError",
    "IJBMeta",
    "PairSet",
    "align_face",
    "decode_images",
    "estimate_similarity",
    "find_meta_dir",
    "load_bin",
    "load_ijb_1n",
    "load_ijb_meta",
    "load_pair_list",
    "meta_paths",
    "read_1n_csv",
    "read_face_tid_mid",
    "read_name_5pts_score",
    "read_template_pair_label",
]
