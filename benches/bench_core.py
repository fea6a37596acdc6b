"""IJB-C 1:1 verification core: vitfree vs the straightforward numpy / scikit-learn procedure.

Full size (VITFREE_BENCH_FULL=1): 469,375 images x 512-d, 23,124 templates, 15,658,489 pairs of
which 19,557 genuine (synthetic, with identity structure). Default: 1% of that, as a smoke test.
Each benchmark checks its result against the reference before timing; pairs share a ``group``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from benchconfig import FULL
from reference import image2template_feature
from sklearn.metrics import roc_curve
from vitfree.ijb import aggregate_templates, evaluate_verification, score_pairs
from vitfree.metrics import DEFAULT_FARS, tar_at_far
from vitfree.synthetic import ijb_features

SCALE = 1.0 if FULL else 0.01
ROUNDS = 3 if FULL else 1


@pytest.fixture(scope="module")
def data():
    return ijb_features(scale=SCALE, dim=512, seed=0)


@pytest.fixture(scope="module")
def ours(data):
    tf, ids = aggregate_templates(data.feats, data.templates, data.medias, data.faceness)
    scores = score_pairs(tf, ids, data.p1, data.p2)
    return tf, ids, scores


def numpy_aggregate(data):
    return image2template_feature(data.feats * data.faceness[:, None], data.templates, data.medias)


def numpy_score(tf, ids, p1, p2, batch=100_000):
    # the community code: template id -> row table, 100k-pair chunks of gather-multiply-sum
    template2id = np.zeros(int(ids.max()) + 1, dtype=np.int64)
    template2id[ids] = np.arange(len(ids))
    score = np.empty(len(p1))
    for s in range(0, len(p1), batch):
        f1 = tf[template2id[p1[s : s + batch]]]
        f2 = tf[template2id[p2[s : s + batch]]]
        score[s : s + batch] = np.sum(f1 * f2, -1)
    return score


def sklearn_tar(labels, scores, fars=DEFAULT_FARS):
    fpr, tpr, _ = roc_curve(labels, scores)
    fpr, tpr = np.flipud(fpr), np.flipud(tpr)
    return np.array([tpr[min(zip(np.abs(fpr - f), range(len(fpr))))[1]] for f in fars])


def test_aggregate_vitfree(benchmark, data, ours):
    benchmark.group = "aggregate templates"
    tf, ids = benchmark.pedantic(
        aggregate_templates, args=(data.feats, data.templates, data.medias, data.faceness), rounds=ROUNDS
    )
    np.testing.assert_array_equal(tf, ours[0])


def test_aggregate_numpy(benchmark, data, ours):
    benchmark.group = "aggregate templates"
    ref, ref_ids = benchmark.pedantic(numpy_aggregate, args=(data,), rounds=1)
    np.testing.assert_array_equal(ref_ids, ours[1])
    np.testing.assert_allclose(ref, ours[0], atol=2e-6)


def test_score_vitfree(benchmark, data, ours):
    benchmark.group = "score pairs"
    tf, ids, scores = ours
    out = benchmark.pedantic(score_pairs, args=(tf, ids, data.p1, data.p2), rounds=ROUNDS)
    np.testing.assert_array_equal(out, scores)


def test_score_numpy(benchmark, data, ours):
    benchmark.group = "score pairs"
    tf, ids, scores = ours
    ref = benchmark.pedantic(numpy_score, args=(tf.astype(np.float64), ids, data.p1, data.p2), rounds=1)
    np.testing.assert_allclose(ref, scores, atol=1e-6)


def test_tar_vitfree(benchmark, data, ours):
    benchmark.group = "TAR@FAR"
    tar = benchmark.pedantic(tar_at_far, args=(data.labels, ours[2]), rounds=ROUNDS)
    np.testing.assert_array_equal(tar, sklearn_tar(data.labels, ours[2]))


def test_tar_sklearn(benchmark, data, ours):
    benchmark.group = "TAR@FAR"
    ref = benchmark.pedantic(sklearn_tar, args=(data.labels, ours[2]), rounds=1)
    assert ref.shape == (len(DEFAULT_FARS),)


def test_pipeline_vitfree(benchmark, data, ours):
    benchmark.group = "whole 1:1 evaluation"
    r = benchmark.pedantic(
        evaluate_verification,
        args=(data.feats, data.templates, data.medias, data.p1, data.p2, data.labels),
        kwargs=dict(faceness=data.faceness),
        rounds=ROUNDS,
    )
    np.testing.assert_array_equal(r.scores, ours[2])
    if FULL:  # identity structure makes the synthetic set look like a good model on IJB-C
        assert 0.94 < r.tar[2] < 0.99


def test_pipeline_reference(benchmark, data, ours):
    benchmark.group = "whole 1:1 evaluation"

    def reference():
        tf, ids = numpy_aggregate(data)
        return sklearn_tar(data.labels, numpy_score(tf, ids, data.p1, data.p2))

    tar = benchmark.pedantic(reference, rounds=1)
    np.testing.assert_allclose(tar, tar_at_far(data.labels, ours[2]), atol=3.0 / data.labels.sum())


MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from vitfree.synthetic import ijb_features
    from vitfree.ijb import evaluate_verification

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    d = ijb_features(scale=float(sys.argv[1]), dim=512, seed=0)
    inputs = sum(a.nbytes for a in (d.feats, d.templates, d.medias, d.faceness, d.p1, d.p2, d.labels))
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak RSS
    before = status("VmRSS:")
    evaluate_verification(d.feats, d.templates, d.medias, d.p1, d.p2, d.labels, faceness=d.faceness)
    print(json.dumps(dict(inputs=inputs, extra=status("VmHWM:") - before)))
    """
)


def test_peak_extra_memory_below_inputs():
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(SCALE)], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr
    m = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"\npeak extra memory {m['extra'] / 2**20:.0f} MiB for {m['inputs'] / 2**20:.0f} MiB of inputs")
    assert m["extra"] <= m["inputs"]
