"""`vitfree eval features` at IJB-C size: 1:1 + 1:N of 12 exits from saved features.

Full size (VITFREE_BENCH_FULL=1): the synthetic IJB-C set (469,375 images, 15,658,489 pairs,
G1/G2 galleries and 19,593 probes), features written once and linked as exits 1..12, so the
12 evaluations read the same 0.9 GB file from the page cache. Default: 1% size, 3 exits.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from benchconfig import FULL
from vitfree.data import load_ijb_1n, load_ijb_meta
from vitfree.evaluate import evaluate_ijb_exits
from vitfree.features import exit_filename, load_feature_sets
from vitfree.ijb import evaluate_verification
from vitfree.synthetic import ijb_features, write_ijb_meta

SCALE = 1.0 if FULL else 0.01
EXITS = list(range(1, 13)) if FULL else [4, 8, 12]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("ijbc")
    data = ijb_features(scale=SCALE, seed=1)
    write_ijb_meta(data, root / "data")
    feats = root / "features"
    feats.mkdir()
    first = feats / exit_filename(EXITS[0])
    np.save(first, data.feats)
    for k in EXITS[1:]:
        os.link(first, feats / exit_filename(k))
    return root, data


def test_eval_12_exits_from_saved_features(benchmark, saved):
    benchmark.group = "eval features: 1:1 + 1:N per exit"
    root, data = saved

    def run():
        meta = load_ijb_meta(root / "data")
        onen = load_ijb_1n(root / "data")
        return evaluate_ijb_exits(load_feature_sets(root / "features"), meta, onen)

    results = benchmark.pedantic(run, rounds=1)
    assert [r.exit for r in results] == EXITS
    ref = evaluate_verification(
        data.feats, data.templates, data.medias, data.p1, data.p2, data.labels, faceness=data.faceness
    )
    for r in results:
        np.testing.assert_array_equal(r.verification.nearest.tar, ref.nearest.tar)
        assert r.identification is not None and r.identification.n_probes > 0
