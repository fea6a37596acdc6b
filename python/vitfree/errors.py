"""The exceptions of vitfree: one root, :class:`VitfreeError`, with the kinds of bad input under it.

Every error that vitfree raises about a *file or value handed to it* derives from
:class:`VitfreeError`, so an application (and vitfree's own command line) can catch that one
class and let everything else, a bug included, keep its traceback.  The format errors also
derive from :class:`ValueError`, which is what code written against earlier versions catches.

Hierarchy::

    VitfreeError
    ├── FormatError (ValueError)            a file that does not follow its format
    │   ├── IJBFormatError                  IJB-B/C meta files, 1:N csvs, crops
    │   └── BinFormatError                  LFW-style .bin sets and pair lists
    ├── CheckpointError (ValueError)        checkpoint / exit-head file unreadable or not fitting
    ├── StoreError (ValueError)             a feature store that cannot be resumed or read
    ├── NonFiniteFeaturesError (ValueError) a model gave NaN/inf features (the image and exit named)
    ├── InputError (ValueError)             a value vitfree cannot use: an exit out of range,
    │                                       lengths that do not match, NaN features, a model
    │                                       not built for 112x112 faces, --amp without CUDA
    └── InputTypeError (TypeError)          an array of the wrong dtype or kind

The Rust core raises :class:`InputError` / :class:`InputTypeError` too.  A missing file stays
``FileNotFoundError``.  Anything else that escapes (a plain ``ValueError`` included) is a bug
or an unexpected condition, and the command line shows its traceback.
This module imports nothing, so every other module can use it.
"""

from __future__ import annotations

__all__ = [
    "BinFormatError",
    "CheckpointError",
    "FormatError",
    "IJBFormatError",
    "InputError",
    "InputTypeError",
    "NonFiniteFeaturesError",
    "StoreError",
    "VitfreeError",
]


class VitfreeError(Exception):
    """Root of the exceptions vitfree raises about its inputs (files, checkpoints, stores)."""


class FormatError(VitfreeError, ValueError):
    """A data file that does not follow its format; the message names the file (and line)."""


class IJBFormatError(FormatError):
    """A meta file or csv that does not follow the IJB-B/C format (file and line named)."""


class BinFormatError(FormatError):
    """A ``.bin`` verification set or pair list that cannot be read (the file is named)."""


class CheckpointError(VitfreeError, ValueError):
    """A checkpoint or head file that cannot be read or does not fit the model."""


class StoreError(VitfreeError, ValueError):
    """A feature store that cannot be resumed or read (the folder and the reason named)."""


class InputError(VitfreeError, ValueError):
    """A value handed to vitfree that it cannot use (the argument and the problem named)."""


class InputTypeError(VitfreeError, TypeError):
    """An argument of the wrong type or dtype (the argument and what it must be named)."""


class NonFiniteFeaturesError(VitfreeError, ValueError):
    """A model produced NaN or infinite features (a NaN in an image, an overflow under
    fp16); the image and the exit are named, and nothing of that batch is stored."""
