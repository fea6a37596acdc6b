"""vitfree: training-free early exits for face-recognition Vision Transformers.

Data flow, and the module that owns each arrow::

    faces ──────────> batches ──────────> model / exits ──────────> feature store
      vitfree.data       vitfree.faces       vitfree.inference          vitfree.store
      (readers and       (torch Datasets,    (image + flip in one       (manifest schema,
      writers of IJB,    aligned uint8       pass, every exit:          open / resume /
      .bin, pair lists;  batches and their   vitfree.models; device     write / assemble /
      5-point align)     flips)              and AMP: vitfree.runtime)  read)
                           └──── the DataLoader loop and sharding: vitfree.extract ────┘

    feature store ──────────> protocols ──────────> report
      vitfree.store              vitfree.evaluate          vitfree.report
                                 (per-exit orchestration;  (table, results.json/csv,
                                 1:1 vitfree.ijb +         PNG plots on Figure objects)
                                 vitfree.metrics (Rust),
                                 1:N vitfree.identification
                                 + vitfree.search, k-fold)

- :mod:`vitfree.pipelines`: one library function per command (:func:`evaluate_features`,
  :func:`evaluate_ijb`, :func:`evaluate_pairsets`, :func:`demo`), re-exported here;
  :mod:`vitfree.cli` parses arguments and calls them.
- :mod:`vitfree.models`: face ViTs (insightface / TransFace / LVFace) with block stepping,
  exits, head components, truncation, costs.
- :mod:`vitfree.finetune`: exit-specific heads trained with the backbone frozen
  (``vitfree finetune``), written as an exit-heads file that every evaluation takes
  (``--exit-heads``); :mod:`vitfree.train` trains a whole face ViT (``vitfree train``).
- :mod:`vitfree.costs` (the per-exit cost record), :mod:`vitfree.errors` (one root
  exception), :mod:`vitfree.synthetic` (IJB-shaped synthetic data, labelled so).
- The protocols and formats are described in ``docs/protocols.md``.

Evaluation from saved features (:mod:`vitfree.store`, :mod:`vitfree.evaluate`,
:mod:`vitfree.report`, :func:`evaluate_features`) imports neither torch nor OpenCV.
"""

from typing import Any

from vitfree._core import __version__
from vitfree._threads import get_num_threads, sanitize_environment, set_num_threads
from vitfree.errors import VitfreeError

sanitize_environment()

__all__ = [
    "VitfreeError",
    "__version__",
    "demo",
    "demo_features",
    "evaluate_features",
    "evaluate_ijb",
    "evaluate_pairsets",
    "get_num_threads",
    "set_num_threads",
]

_PIPELINES = ("demo", "demo_features", "evaluate_features", "evaluate_ijb", "evaluate_pairsets")


def __getattr__(name: str) -> Any:
    # The pipelines are imported on first use, so that `import vitfree` stays light.
    if name in _PIPELINES:
        from vitfree import pipelines

        return getattr(pipelines, name)
    raise AttributeError(f"module 'vitfree' has no attribute {name!r}")
