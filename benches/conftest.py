"""The fixtures of tests/conftest.py that the benches share.

pytest applies a conftest.py to its own folder only, and tests/conftest.py cannot be imported
as ``conftest`` (that is this file's name while pytest loads it); it is imported as
``tests.conftest`` instead (``pythonpath`` in pyproject.toml puts the repository root on
``sys.path``), and the fixtures imported here are registered for benches/ as if defined here.
"""

from tests.conftest import ijb_folder

__all__ = ["ijb_folder"]
