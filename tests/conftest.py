"""Fixtures shared by several test modules (and by the benchmarks, see benches/conftest.py).

Fixtures used by a single module stay in that module.  Plain helpers that test code calls
live in importable modules next to this file (ijb_fixtures.py, model_fixtures.py,
reference.py, models_reference.py; ``pythonpath`` in pyproject.toml puts this folder on
``sys.path`` for the benchmarks too): a conftest is loaded by pytest, not imported by tests.

The two factories are session-scoped and cache what they write by their arguments, so a
module asking twice for the same data gets the same folder.  What they return is shared:
copy a folder before corrupting it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from ijb_fixtures import write_ijb


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread during each test of the modules that opt in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``.

    The tiny models there are dominated by per-op overhead; one thread keeps them fast and
    immune to other processes competing for the cores.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def ijb_folder(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[..., tuple[Path, dict[str, Any]]]:
    """``ijb_folder(*args, **kw) -> (root, expected)``: an IJB folder in the real format,
    written by ``ijb_fixtures.write_ijb(root, *args, **kw)``, and what it returned."""
    made: dict[tuple, tuple[Path, dict[str, Any]]] = {}

    def make(*args: Any, **kw: Any) -> tuple[Path, dict[str, Any]]:
        key = (args, tuple(sorted(kw.items())))
        if key not in made:
            root = tmp_path_factory.mktemp("ijb")
            made[key] = (root, write_ijb(root, *args, **kw))
        root, expected = made[key]
        return root, dict(expected)  # a caller may add keys without touching the cache

    return make


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``tiny_checkpoint(seed=0, **kw) -> path``: ``torch.save(tiny_model(seed, **kw)
    .state_dict(), path)``, a small random-weight checkpoint as users pass to ``--model``."""
    # imported here: vitfree.models is only needed by the modules that ask for a checkpoint
    from model_fixtures import tiny_model

    made: dict[tuple, Path] = {}

    def make(seed: int = 0, **kw: Any) -> Path:
        key = (seed, tuple(sorted(kw.items())))
        if key not in made:
            path = tmp_path_factory.mktemp("model") / "tiny.pt"
            torch.save(tiny_model(seed=seed, **kw).state_dict(), path)
            made[key] = path
        return made[key]

    return make
