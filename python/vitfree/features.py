"""Per-exit feature files: moved to :mod:`vitfree.store`, the one owner of the feature store.

The names below are re-exported from there for code written against earlier versions.
"""

from vitfree.store import (
    FEATURE_FORMAT,
    FeatureSet,
    Manifest,
    exit_filename,
    load_feature_sets,
    read_manifest,
    write_manifest,
)

__all__ = [
    "FEATURE_FORMAT",
    "FeatureSet",
    "Manifest",
    "exit_filename",
    "load_feature_sets",
    "read_manifest",
    "write_manifest",
]
