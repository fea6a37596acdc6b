"""Feature extraction (vitfree.extract) against a direct per-image reference.

The reference reads each loose crop with OpenCV, aligns it with ``align_face``, normalises it
with ``preprocess`` and runs the image and its flip through the model separately, one image
at a time.  Extraction batches, uses DataLoader workers, memory-maps, resumes, shards across
processes; none of that may change a feature.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ijb_fixtures import write_bin
from model_fixtures import reference_features, tiny_model
from reference import lfw_kfold
from vitfree.data import IJBFormatError, load_bin, load_ijb_meta
from vitfree.extract import (
    evaluate_pairset,
    exit_cost_table,
    extract_bin,
    extract_ijb,
    measure_speed,
    model_fingerprint,
)
from vitfree.features import exit_filename, load_feature_sets, read_manifest
from vitfree.metrics import kfold_accuracy
from vitfree.models import exit_costs, load, preprocess

# The tiny models here are dominated by per-op overhead; one thread keeps them fast and
# immune to other processes competing for the cores.
pytestmark = pytest.mark.usefixtures("one_thread")

EXITS = [1, 2, 3]
BATCH = 4


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint) -> Path:
    return tiny_checkpoint(seed=0)


@pytest.fixture(scope="module")
def ijb(ijb_folder) -> Path:
    root, _ = ijb_folder(n_subjects=4, max_images_per_template=2, seed=1)
    return root


@pytest.fixture(scope="module")
def reference(ijb, ckpt):
    torch.set_num_threads(1)
    return reference_features(load(ckpt), load_ijb_meta(ijb, pairs=False), EXITS)


def read_store(folder: Path, exits=EXITS) -> dict[tuple[int, bool], np.ndarray]:
    return {
        (k, flip): np.load(folder / exit_filename(k, flip)) for k in exits for flip in (False, True)
    }


def assert_matches_reference(store, reference, rows=None):
    feats, flips = reference
    for (k, flip), got in store.items():
        want = (flips if flip else feats)[k]
        if rows is not None:
            got, want = got[rows], want[rows]
        scale = float(np.abs(want).max())
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * scale, err_msg=f"exit {k}")


@pytest.fixture(scope="module")
def full_run(ijb, ckpt, tmp_path_factory):
    """An uninterrupted extraction with 2 workers (the run others are compared with)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("full") / "features"
    res = extract_ijb(
        load(ckpt), ijb, out, exits=[1, -2, 3], batch_size=BATCH, num_workers=2, model_path=ckpt
    )
    return out, res


# --------------------------------------------------------------------------------------
# correctness, manifest, layout
# --------------------------------------------------------------------------------------


def test_extraction_equals_direct_per_image_reference(full_run, reference, ckpt):
    out, res = full_run
    n = reference[0][1].shape[0]
    assert res.complete and res.exits == EXITS and res.n_images == n and res.dim == 512
    assert res.extracted == n and res.resumed == 0 and res.skipped_rows == []
    store = read_store(out)
    for arr in store.values():
        assert arr.dtype == np.float32 and arr.shape == (n, 512)
    assert_matches_reference(store, reference)
    # flips are real flips: they differ from the images
    assert not np.allclose(store[(3, False)], store[(3, True)])

    man = read_manifest(out)
    assert man["exits"] == EXITS and man["n_images"] == n and man["dim"] == 512
    assert man["done"] == [[0, n]] and man["complete"] is True
    assert man["skipped"] == {"count": 0, "rows": [], "files": []}
    assert man["model"]["checkpoint"] == str(ckpt.resolve())
    assert man["model"]["depth"] == 3
    assert man["model_fingerprint"] == model_fingerprint(load(ckpt))
    assert man["dataset"] == "IJBC"
    costs = {str(c.exit): c.as_dict() for c in exit_costs(load(ckpt), EXITS)}
    assert man["costs"] == costs  # JSON round-trips floats exactly
    # the evaluation side reads the store back, costs included
    sets = load_feature_sets(out)
    assert [s.exit for s in sets] == EXITS
    assert sets[0].cost["flop_ratio"] == pytest.approx(costs["1"]["flop_ratio"])
    np.testing.assert_array_equal(sets[1].flip, store[(2, True)])


def test_no_workers_and_other_batch_sizes_give_the_same_features(full_run, ijb, ckpt, tmp_path):
    out, _ = full_run
    want = read_store(out)
    res = extract_ijb(load(ckpt), ijb, tmp_path / "a", exits=EXITS, batch_size=BATCH, num_workers=0)
    got = read_store(tmp_path / "a")
    for key in want:  # same batches, same numbers: bit-identical
        np.testing.assert_array_equal(got[key], want[key])
    assert res.complete
    extract_ijb(load(ckpt), ijb, tmp_path / "b", exits=[3], batch_size=7, num_workers=1)
    np.testing.assert_allclose(
        np.load(tmp_path / "b" / exit_filename(3)), want[(3, False)], rtol=0, atol=1e-5
    )


def test_meta_object_and_progress_off(ijb, ckpt, tmp_path, full_run):
    meta = load_ijb_meta(ijb, pairs=False)
    res = extract_ijb(
        load(ckpt), None, tmp_path, meta=meta, exits=[2], num_workers=0, progress=False
    )
    assert res.complete
    np.testing.assert_array_equal(
        np.load(tmp_path / exit_filename(2)), read_store(full_run[0])[(2, False)]
    )


# --------------------------------------------------------------------------------------
# resume
# --------------------------------------------------------------------------------------


def test_resume_after_an_exception(full_run, ijb, ckpt, tmp_path):
    model = load(ckpt)
    real = model.forward_exits
    calls = []

    def failing(x, exits):
        calls.append(x.shape[0])
        if len(calls) == 3:
            raise RuntimeError("simulated crash in batch 3")
        return real(x, exits)

    model.forward_exits = failing
    with pytest.raises(RuntimeError, match="simulated crash"):
        extract_ijb(model, ijb, tmp_path, exits=EXITS, batch_size=BATCH, num_workers=2)
    man = read_manifest(tmp_path)
    assert man["done"] == [[0, 2 * BATCH]] and man["complete"] is False

    calls.clear()
    model.forward_exits = lambda x, exits: (calls.append(x.shape[0]), real(x, exits))[1]
    res = extract_ijb(model, ijb, tmp_path, exits=EXITS, batch_size=BATCH, num_workers=2)
    n = res.n_images
    assert res.resumed == 2 * BATCH and res.extracted == n - 2 * BATCH and res.complete
    assert sum(calls) == 2 * (n - 2 * BATCH)  # the done rows were not run again
    want = read_store(full_run[0])
    got = read_store(tmp_path)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])
    assert read_manifest(tmp_path)["done"] == [[0, n]]


_KILL_SCRIPT = """
import os, signal, sys, torch
torch.set_num_threads(1)
from vitfree.extract import extract_ijb
from vitfree.models import load

def on_batch(done):
    if done == 3:
        os.kill(os.getpid(), signal.SIGKILL)

extract_ijb(load(sys.argv[1]), sys.argv[2], sys.argv[3], exits=[1, 2, 3], batch_size=4,
            num_workers=1, save_every=0, on_batch=on_batch, progress=False)
"""


def test_resume_after_a_hard_kill(full_run, ijb, ckpt, tmp_path, reference):
    """SIGKILL (no cleanup runs): the manifest saved per batch lists only rows on disk."""
    out = tmp_path / "features"
    proc = subprocess.run(
        [sys.executable, "-c", _KILL_SCRIPT, str(ckpt), str(ijb), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    man = read_manifest(out)
    assert man["complete"] is False
    ((a, b),) = man["done"]
    assert a == 0 and 0 < b < man["n_images"] and b % BATCH == 0
    assert_matches_reference(read_store(out), reference, rows=slice(0, b))

    res = extract_ijb(load(ckpt), ijb, out, exits=EXITS, batch_size=BATCH, num_workers=1)
    assert res.resumed == b and res.complete
    want = read_store(full_run[0])
    for key, got in read_store(out).items():
        np.testing.assert_array_equal(got, want[key])


def test_refuses_to_resume_with_other_settings(ijb, ckpt, tmp_path):
    res = extract_ijb(
        load(ckpt), ijb, tmp_path, exits=[1, 3], batch_size=BATCH, num_workers=0, max_batches=1
    )
    assert not res.complete and res.extracted == BATCH
    with pytest.raises(
        ValueError, match=r"(?s)cannot resume.*exits: stored \[1, 3\], now \[1, 2, 3\]"
    ):
        extract_ijb(load(ckpt), ijb, tmp_path, exits=EXITS, num_workers=0)
    with pytest.raises(ValueError, match="model weights"):
        extract_ijb(tiny_model(seed=5), ijb, tmp_path, exits=[1, 3], num_workers=0)
    with pytest.raises(ValueError, match="model architecture"):
        extract_ijb(tiny_model(depth=4), ijb, tmp_path, exits=[1, 3], num_workers=0)
    # the refused attempts changed nothing; overwrite starts over
    assert read_manifest(tmp_path)["done"] == [[0, BATCH]]
    res = extract_ijb(tiny_model(seed=5), ijb, tmp_path, exits=[2], num_workers=0, overwrite=True)
    assert res.complete and res.resumed == 0
    assert read_manifest(tmp_path)["exits"] == [2]


def test_refuses_a_folder_it_did_not_write(ijb, ckpt, tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"exits": [1], "synthetic": True}))
    with pytest.raises(ValueError, match="not written by vitfree extraction"):
        extract_ijb(load(ckpt), ijb, tmp_path, exits=[1], num_workers=0)


# --------------------------------------------------------------------------------------
# bad images
# --------------------------------------------------------------------------------------


@pytest.fixture()
def damaged_ijb(ijb, tmp_path):
    root = tmp_path / "damaged"
    shutil.copytree(ijb, root)
    meta = load_ijb_meta(root, pairs=False)
    corrupt = meta.image_dir / meta.names[5]
    corrupt.write_bytes(b"this is not a JPEG")
    missing = meta.image_dir / meta.names[9]
    missing.unlink()
    return root, corrupt, missing


def test_bad_images_stop_the_run_before_extraction_naming_every_one(damaged_ijb, ckpt, tmp_path):
    root, corrupt, missing = damaged_ijb
    out = tmp_path / "f"
    with pytest.raises(IJBFormatError) as info:
        extract_ijb(load(ckpt), root, out, exits=EXITS, batch_size=BATCH, num_workers=2)
    msg = str(info.value)
    assert "2 IJB images cannot be used, found before extraction" in msg
    assert f"{corrupt} (meta row 5): not a JPEG image" in msg
    assert f"{missing} (meta row 9): not found" in msg and "--skip-bad" in msg
    assert read_manifest(out).get("done") == []  # nothing computed
    # only the missing file left: a FileNotFoundError, still before any compute
    shutil.copy(missing.parent / load_ijb_meta(root, pairs=False).names[0], corrupt)
    with pytest.raises(FileNotFoundError, match=f"{re.escape(str(missing))} \\(meta row 9\\): not found"):
        extract_ijb(load(ckpt), root, out, exits=EXITS, batch_size=BATCH, num_workers=0)


def _corrupt_inside(path: Path) -> None:
    """Garbage in the middle of the entropy-coded data: header and end marker stay whole, so
    only decoding finds it (libjpeg: corrupt data, bad Huffman code)."""
    data = bytearray(path.read_bytes())
    sos = data.index(b"\xff\xda")
    mid = (sos + len(data)) // 2
    data[mid : mid + 40] = bytes(range(200, 240))
    path.write_bytes(bytes(data))


def test_damage_found_while_decoding_stops_there_and_resumes(ijb, ckpt, tmp_path):
    root = tmp_path / "inside"
    shutil.copytree(ijb, root)
    meta = load_ijb_meta(root, pairs=False)
    row = BATCH + 1  # in the second batch
    _corrupt_inside(meta.image_dir / meta.names[row])
    out = tmp_path / "f"
    with pytest.raises(IJBFormatError, match=f"(?s)found while extracting.*meta row {row}.*skip-bad"):
        extract_ijb(load(ckpt), root, out, exits=EXITS, batch_size=BATCH, num_workers=2)
    assert read_manifest(out)["done"] == [[0, BATCH]]  # the batch before it is kept
    res = extract_ijb(
        load(ckpt), root, out, exits=EXITS, batch_size=BATCH, num_workers=0, skip_bad=True
    )
    assert res.complete and res.skipped_rows == [row] and res.resumed == BATCH
    assert "damaged JPEG" in res.problems[row]
    man = read_manifest(out)
    assert man["skipped"]["rows"] == [row] and "damaged JPEG" in man["problems"][str(row)]


def test_use_damaged_uses_truncated_files_and_lists_them(ijb, ckpt, tmp_path, reference):
    root = tmp_path / "trunc"
    shutil.copytree(ijb, root)
    meta = load_ijb_meta(root, pairs=False)
    f = meta.image_dir / meta.names[3]
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(IJBFormatError, match="(?s)meta row 3\\): truncated JPEG.*use-damaged"):
        extract_ijb(load(ckpt), root, tmp_path / "a", exits=EXITS, batch_size=BATCH, num_workers=0)
    res = extract_ijb(
        load(ckpt), root, tmp_path / "b", exits=EXITS, batch_size=BATCH, num_workers=2,
        use_damaged=True,
    )  # fmt: skip
    assert res.complete and res.damaged_rows == [3] and res.skipped_rows == []
    man = read_manifest(tmp_path / "b")
    assert man["damaged_used"]["rows"] == [3] and "truncated" in man["problems"]["3"]
    store = read_store(tmp_path / "b")
    assert all(arr[3].any() for arr in store.values())  # used, not zeroed
    good = np.setdiff1d(np.arange(res.n_images), [3])
    assert_matches_reference(store, reference, rows=good)


def test_bad_landmark_lines_are_refused_before_extraction(ijb, ckpt, tmp_path):
    root = tmp_path / "lmk"
    shutil.copytree(ijb, root)
    path = root / "IJBC" / "meta" / "ijbc_name_5pts_score.txt"
    lines = path.read_text().splitlines()
    name, *vals = lines[2].split()
    far = [f"{float(v) + 5000:.3f}" for v in vals[:10]]  # a face, but far outside the image
    lines[2] = " ".join([name, *far, vals[10]])
    lines[4] = lines[4].split()[0] + " " + " ".join(["20.0"] * 10) + " 0.9"  # one point
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(IJBFormatError) as info:
        extract_ijb(load(ckpt), root, tmp_path / "a", exits=EXITS, batch_size=BATCH, num_workers=0)
    msg = str(info.value)
    assert "(meta row 2): landmark line 3: " in msg and "mostly outside the image" in msg
    assert "(meta row 4): landmark line 5: degenerate landmarks" in msg
    res = extract_ijb(
        load(ckpt), root, tmp_path / "b", exits=EXITS, batch_size=BATCH, num_workers=0,
        skip_bad=True,
    )  # fmt: skip
    assert res.skipped_rows == [2, 4]


def test_skip_bad_writes_zeros_and_lists_them(damaged_ijb, ckpt, tmp_path, reference, capsys):
    root, corrupt, missing = damaged_ijb
    out = tmp_path / "f"
    res = extract_ijb(
        load(ckpt), root, out, exits=EXITS, batch_size=BATCH, num_workers=2, skip_bad=True
    )
    assert res.complete and res.skipped_rows == [5, 9]
    err = capsys.readouterr().err
    assert "skipped 2 unreadable images" in err and corrupt.name in err
    man = read_manifest(out)
    assert man["skipped"] == {"count": 2, "rows": [5, 9], "files": [corrupt.name, missing.name]}
    store = read_store(out)
    for arr in store.values():
        assert not arr[[5, 9]].any()
    good = np.setdiff1d(np.arange(res.n_images), [5, 9])
    assert_matches_reference(store, reference, rows=good)


# --------------------------------------------------------------------------------------
# distributed
# --------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn_worker(
    rank: int, world: int, port: int, ckpt: str, root: str, out: str, shard: str, own: bool
):
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    kw = dict(exits=EXITS, batch_size=BATCH, num_workers=1, device="cpu", shard=shard)
    if not own:  # extract_ijb starts the process group from the environment, and ends it
        res = extract_ijb(load(ckpt), root, out, progress=False, **kw)
        assert not torch.distributed.is_initialized()
    else:  # a group the caller started; first an interrupted run, then the resumed one
        torch.distributed.init_process_group("gloo")
        part = extract_ijb(load(ckpt), root, out, progress=False, max_batches=1, **kw)
        assert not part.complete and part.extracted == BATCH
        res = extract_ijb(load(ckpt), root, out, progress=False, **kw)
        assert res.resumed == 0 and res.extracted < res.n_images - BATCH  # assembled rows skipped
        torch.distributed.destroy_process_group()
    assert res.world_size == world and res.rank == rank and res.complete


@pytest.mark.parametrize("shard, own", [("contiguous", False), ("strided", True)])
def test_two_gloo_processes_equal_one(full_run, ijb, ckpt, tmp_path, shard, own):
    import torch.multiprocessing as mp

    want = read_store(full_run[0])
    out = tmp_path / "features"
    mp.spawn(
        _spawn_worker,
        args=(2, _free_port(), str(ckpt), str(ijb), str(out), shard, own),
        nprocs=2,
    )
    got = read_store(out)
    for key in want:
        scale = float(np.abs(want[key]).max())
        np.testing.assert_allclose(got[key], want[key], rtol=0, atol=1e-6 * scale)
        if shard == "contiguous":  # shards cut at batch boundaries: the batches of one process
            np.testing.assert_array_equal(got[key], want[key])
    man = read_manifest(out)
    assert man["complete"] and man["done"] == [[0, man["n_images"]]]
    assert man["assembled_from"]["world_size"] == 2
    assert not list(out.glob("partial-*"))  # partial files removed after assembly


# --------------------------------------------------------------------------------------
# .bin sets, speed, errors
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 4])
def test_extract_bin_and_kfold_match_direct_embeddings(tmp_path, protocol, ckpt):
    info = write_bin(tmp_path / "set.bin", n_pairs=20, protocol=protocol, seed=protocol)
    pairset = load_bin(tmp_path / "set.bin")
    model = load(ckpt)
    embs = extract_bin(model, pairset, [1, 3], batch_size=6)
    with torch.inference_mode():
        direct = {k: [] for k in (1, 3)}
        for img in info["images"]:
            a = model.forward_exits(preprocess(img), [1, 3])
            b = model.forward_exits(preprocess(np.ascontiguousarray(img[:, ::-1])), [1, 3])
            for k in direct:
                direct[k].append((a[k] + b[k])[0].numpy())
    for k in (1, 3):
        want = np.stack(direct[k])
        assert embs[k].shape == (40, 512) and embs[k].dtype == np.float32
        np.testing.assert_allclose(embs[k], want, rtol=0, atol=1e-5 * np.abs(want).max())
    results = evaluate_pairset(
        model, pairset, [1, 3], batch_size=6, costs=exit_cost_table(model, [1, 3])
    )
    assert [r.exit for r in results] == [1, 3] and results[0].name == "set"
    for r in results:
        want = kfold_accuracy(embs[r.exit][0::2], embs[r.exit][1::2], info["issame"])
        np.testing.assert_equal(r.kfold.accuracies, want.accuracies)
        np.testing.assert_equal(r.kfold.val, want.val)  # NaN where a fold has no genuine pair
        acc, _, _ = lfw_kfold(embs[r.exit][0::2], embs[r.exit][1::2], info["issame"])
        np.testing.assert_allclose(r.kfold.accuracies, acc)
        assert r.cost["flop_ratio"] == pytest.approx(exit_costs(model, [r.exit])[0].flop_ratio)
        assert r.as_dict()["accuracy_mean"] == pytest.approx(want.mean * 100)


def test_measure_speed_reports_every_exit_relative_to_the_full_model(ckpt):
    model = load(ckpt)
    speed = measure_speed(model, [1, -1], "cpu", batch_size=4, latency_iters=2, throughput_iters=1)
    assert sorted(speed) == [1, 3]
    for rec in speed.values():
        assert rec["latency_ms"] > 0 and rec["throughput"] > 0 and rec["batch_size"] == 4
    assert speed[3]["speedup"] == 1.0 and speed[3]["latency_speedup"] == 1.0
    assert speed[1]["speedup"] > 0
    costs = exit_cost_table(model, [1, 3], speed)
    assert costs["1"]["speedup"] == speed[1]["speedup"] and "gflops" in costs["1"]


def test_model_fingerprint_tells_weights_apart_and_handles_big_tensors():
    big = torch.nn.Linear(4500, 4096, bias=False)  # 18.4M values > 2^24: float32 index limit
    a = model_fingerprint(big)
    assert a == model_fingerprint(big) and len(a) == 24
    with torch.no_grad():
        big.weight.view(-1)[-1] += 1.0  # the last value is always sampled
    assert model_fingerprint(big) != a
    assert model_fingerprint(tiny_model(seed=1)) != model_fingerprint(tiny_model(seed=2))
    assert model_fingerprint(tiny_model().double()) != model_fingerprint(tiny_model())


def test_model_not_built_for_112_faces_is_refused(ijb, tmp_path):
    small = tiny_model(img_size=90)
    with pytest.raises(ValueError, match=r"90x90 inputs.*3x112x112"):
        extract_ijb(small, ijb, tmp_path, exits=[1])
    with pytest.raises(ValueError, match="112x112"):
        extract_bin(small, np.zeros((2, 112, 112, 3), np.uint8), [1])
    with pytest.raises(ValueError, match="align them to 112x112"):
        extract_bin(tiny_model(), np.zeros((2, 100, 100, 3), np.uint8), [1])


def test_amp_needs_cuda_and_exits_are_checked(ijb, ckpt, tmp_path):
    with pytest.raises(ValueError, match="needs a CUDA device"):
        extract_ijb(load(ckpt), ijb, tmp_path, exits=[1], device="cpu", amp="bf16")
    with pytest.raises(ValueError, match="out of range"):
        extract_ijb(load(ckpt), ijb, tmp_path, exits=[7])
    with pytest.raises(FileNotFoundError, match="no IJBC meta folder"):
        extract_ijb(load(ckpt), tmp_path / "nowhere", tmp_path / "out", exits=[1])
