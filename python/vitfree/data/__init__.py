"""Dataset formats, each reader beside its writer: IJB-B/C meta files and 1:N csvs, LFW-style
``.bin`` sets and pair lists, and the 5-point alignment.  No torch here (the torch datasets
are in :mod:`vitfree.faces`), and OpenCV is imported only by the functions that decode or warp.

- :mod:`vitfree.data.align`: :func:`align_face`, :func:`estimate_similarity` (docs/protocols.md §3).
- :mod:`vitfree.data.ijb`: :func:`load_ijb_meta`, :func:`load_ijb_1n`; :func:`write_ijb_meta`,
  :func:`write_1n_csv` (§3, §4).
- :mod:`vitfree.data.bins`: :func:`load_bin`, :func:`load_pair_list`; :func:`write_bin`,
  :func:`write_pair_list` (§5).
- :mod:`vitfree.data.recordio`: insightface RecordIO training sets (``train.rec``/``.idx``/
  ``property``) without mxnet: :class:`RecordIO`, :class:`RecordIOFaces` (a map-style
  dataset, no torch import), :func:`read_property`; :func:`write_recordio` (§7).
"""

from vitfree.data.align import ALIGNED_SIZE, ARCFACE_TEMPLATE, align_face, estimate_similarity
from vitfree.data.bins import (
    BinFormatError,
    PairSet,
    decode_images,
    load_bin,
    load_pair_list,
    py2_pickle_bytes,
    write_bin,
    write_pair_list,
)
from vitfree.data.ijb import (
    IJB1N,
    IJBFormatError,
    IJBMeta,
    find_meta_dir,
    format_int_rows,
    load_ijb_1n,
    load_ijb_meta,
    meta_paths,
    read_1n_csv,
    read_face_tid_mid,
    read_name_5pts_score,
    read_template_pair_label,
    write_1n_csv,
    write_ijb_meta,
)
from vitfree.data.recordio import (
    RecordIO,
    RecordIOFaces,
    RecordIOFormatError,
    read_property,
    write_recordio,
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
    "RecordIO",
    "RecordIOFaces",
    "RecordIOFormatError",
    "align_face",
    "decode_images",
    "estimate_similarity",
    "find_meta_dir",
    "format_int_rows",
    "load_bin",
    "load_ijb_1n",
    "load_ijb_meta",
    "load_pair_list",
    "meta_paths",
    "py2_pickle_bytes",
    "read_1n_csv",
    "read_face_tid_mid",
    "read_name_5pts_score",
    "read_property",
    "read_template_pair_label",
    "write_1n_csv",
    "write_bin",
    "write_ijb_meta",
    "write_pair_list",
    "write_recordio",
]


def __getattr__(name: str) -> object:
    # IJBCrops (a torch Dataset) lives in vitfree.faces; re-exported lazily so that the
    # readers of this package import neither torch nor OpenCV.
    if name == "IJBCrops":
        from vitfree.faces import IJBCrops

        return IJBCrops
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
