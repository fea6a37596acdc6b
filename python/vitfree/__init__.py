"""vitfree: training-free early exits for face-recognition Vision Transformers.

Submodules: :mod:`vitfree.ijb` (IJB-B/C 1:1 pipeline), :mod:`vitfree.metrics` (ROC, TAR@FAR,
k-fold accuracy), :mod:`vitfree.models` (face ViTs with early exits), :mod:`vitfree.data`
(dataset readers and alignment), :mod:`vitfree.identification` (1:N), :mod:`vitfree.cli`.
"""

from vitfree._core import __version__, get_num_threads, set_num_threads

__all__ = ["__version__", "get_num_threads", "set_num_threads"]
