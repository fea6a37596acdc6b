"""vitfree: training-free early exits for face-recognition Vision Transformers."""

from vitfree._core import __version__

__all__ = ["__version__"]
