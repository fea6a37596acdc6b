"""Synthetic data, labelled so wherever it is shown: nothing here is a real face or a real model.

- :mod:`vitfree.synthetic.features`: IJB-shaped *feature* sets with identity structure, at
  IJB-C size (the core's benchmarks, the feature-level demo).
- :mod:`vitfree.synthetic.faces`: rendered synthetic *faces* (2.5D heads: identities from a
  seed, pose, light, expression, occlusion, blur, noise) with exact 5-point landmarks.
- :mod:`vitfree.synthetic.sets`: those faces written in the real formats (image folders, an
  IJB-C folder, ``.bin`` sets, pair lists).
"""

from vitfree.synthetic.features import (
    IJBB_SIZES,
    IJBC_SIZES,
    SyntheticIJB,
    ijb_1n_split,
    ijb_features,
    write_ijb_meta,
)

__all__ = [
    "IJBB_SIZES",
    "IJBC_SIZES",
    "SyntheticIJB",
    "ijb_1n_split",
    "ijb_features",
    "write_ijb_meta",
]
