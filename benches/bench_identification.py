"""IJB-C 1:N identification and meta parsing: vitfree vs the straightforward numpy procedure.

Full size (VITFREE_BENCH_FULL=1): galleries G1 = 1,772 and G2 = 1,759 templates, 19,593 probe
templates, 512-d (synthetic unit features with identity structure; every probe is mated in
exactly one gallery, as in IJB-C); the pair file of 15,658,489 lines written to a temporary
folder. Default: a smoke size. Each benchmark checks its result against the reference before
timing; pairs share a ``group``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from benchconfig import FULL
from ijb_fixtures import format_int_rows
from vitfree.data.ijb import read_template_pair_label
from vitfree.identification import DEFAULT_FPIRS, ijb_identification

G1, G2, PROBES, DIM = (1772, 1759, 19593, 512) if FULL else (177, 176, 1959, 128)
PAIRS = 15_658_489 if FULL else 156_585
ROUNDS = 3 if FULL else 1
RANKS = (1, 5, 10)


@pytest.fixture(scope="module")
def features() -> dict[str, np.ndarray]:
    """Unit template features: gallery = subject centre + noise, probe = centre + more noise."""
    rng = np.random.default_rng(0)
    n_subj = G1 + G2
    centers = rng.standard_normal((n_subj, DIM), dtype=np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    gallery = centers + 0.8 * rng.standard_normal((n_subj, DIM), dtype=np.float32) / np.sqrt(DIM)
    psub = rng.integers(0, n_subj, PROBES)
    # Non-mate scores spread as 1/sqrt(DIM): scale the probe noise so that rank 1 stays ~50-80%.
    level = 2.2 * np.sqrt(DIM / 128)
    noise = level * rng.standard_normal((PROBES, DIM), dtype=np.float32) / np.sqrt(DIM)
    probes = centers[psub] + noise
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    gallery_ids = np.arange(1, n_subj + 1, dtype=np.int64)
    probe_ids = np.arange(100_000, 100_000 + PROBES, dtype=np.int64)
    subjects = np.arange(n_subj, dtype=np.int64) + 5000
    return {
        "feats": np.concatenate([gallery, probes]).astype(np.float32),
        "ids": np.concatenate([gallery_ids, probe_ids]),
        "g1": (gallery_ids[:G1], subjects[:G1]),
        "g2": (gallery_ids[G1:], subjects[G1:]),
        "probes": (probe_ids, subjects[psub]),
    }


def numpy_identification(
    feats: np.ndarray, ids: np.ndarray, g1: tuple, g2: tuple, probes: tuple
) -> dict[str, np.ndarray | dict[int, float]]:
    """The straightforward procedure: full score matrix, argsort of every row, docs/protocols.md §4."""
    row = {int(t): i for i, t in enumerate(ids)}
    p_rows = np.array([row[int(t)] for t in probes[0]])
    pf = feats[p_rows]
    tpirs = []
    hits = {k: 0 for k in RANKS}
    for g_ids, g_subj in (g1, g2):
        gf = feats[np.array([row[int(t)] for t in g_ids])]
        s = pf @ gf.T  # (P, G) float32
        order = np.argsort(-s, axis=1)
        ranked_subj = g_subj[order]
        mated = np.isin(probes[1], g_subj)
        pos = np.argmax(ranked_subj == probes[1][:, None], axis=1)  # 0-based rank of the mate
        mate = s[np.arange(len(pf)), order[np.arange(len(pf)), pos]]
        top = s[np.arange(len(pf)), order[:, 0]]
        neg = np.sort(top[~mated])[::-1]
        n = neg.size
        thr = np.array([neg[max(int(n * f) - 1, 0)] for f in DEFAULT_FPIRS])
        r1 = mate[mated & (pos == 0)]
        tpirs.append(np.array([np.sum(r1 > t) for t in thr]) / mated.sum())
        for k in RANKS:
            hits[k] += int(np.sum(mated & (pos < k)))
    return {
        "tpir": (tpirs[0] + tpirs[1]) / 2,
        "rank": {k: hits[k] / len(pf) for k in RANKS},
    }


@pytest.fixture(scope="module")
def reference(features: dict) -> dict:
    return numpy_identification(
        features["feats"], features["ids"], features["g1"], features["g2"], features["probes"]
    )


def run_vitfree(f: dict):
    return ijb_identification(
        f["feats"], f["ids"], f["g1"], f["g2"], f["probes"], DEFAULT_FPIRS, RANKS
    )


def test_identification_vitfree(benchmark, features, reference) -> None:
    benchmark.group = "IJB-C 1:N identification"
    res = run_vitfree(features)
    np.testing.assert_array_equal(res.tpir, reference["tpir"])
    assert res.rank == reference["rank"]
    assert 0.05 < res.rank[1] < 0.99  # a non-trivial task
    benchmark.pedantic(run_vitfree, args=(features,), rounds=ROUNDS)


def test_identification_numpy(benchmark, features, reference) -> None:
    benchmark.group = "IJB-C 1:N identification"
    f = features
    out = benchmark.pedantic(
        numpy_identification, args=(f["feats"], f["ids"], f["g1"], f["g2"], f["probes"]), rounds=1
    )
    np.testing.assert_array_equal(out["tpir"], reference["tpir"])


# --------------------------------------------------------------------------------------------
# Meta parsing: the template pair file
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pair_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray]]:
    rng = np.random.default_rng(1)
    cols = [
        rng.integers(1, 190_000, PAIRS),
        rng.integers(1, 190_000, PAIRS),
        (rng.random(PAIRS) < 19_557 / 15_658_489).astype(np.int64),
    ]
    path = tmp_path_factory.mktemp("ijbc_meta") / "ijbc_template_pair_label.txt"
    path.write_bytes(format_int_rows(cols))
    return path, cols


def test_parse_pairs_vitfree(benchmark, pair_file) -> None:
    benchmark.group = "parse IJB-C pair file"
    path, cols = pair_file
    p1, p2, labels = benchmark.pedantic(read_template_pair_label, args=(path,), rounds=ROUNDS)
    np.testing.assert_array_equal(p1, cols[0])
    np.testing.assert_array_equal(p2, cols[1])
    np.testing.assert_array_equal(labels, cols[2])


def test_parse_pairs_numpy_loadtxt(benchmark, pair_file) -> None:
    benchmark.group = "parse IJB-C pair file"
    path, cols = pair_file
    out = benchmark.pedantic(np.loadtxt, args=(path,), kwargs={"dtype": np.int64}, rounds=1)
    np.testing.assert_array_equal(out[:, 0], cols[0])
