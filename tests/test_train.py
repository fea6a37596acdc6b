"""vitfree.train: the margin losses against their formulas, a seeded smoke run, resume."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from vitfree.errors import InputError
from vitfree.models import load
from vitfree.train import MarginHead, TrainConfig, train

TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2, "num_features": 16}


@pytest.mark.parametrize("kind", ["cosface", "arcface"])
def test_margin_losses_equal_their_formulas(kind: str) -> None:
    torch.manual_seed(0)
    head = MarginHead(4, 5, kind)
    emb = torch.randn(3, 4)
    y = torch.tensor([0, 3, 4])
    w = torch.nn.functional.normalize(head.weight.detach())
    e = torch.nn.functional.normalize(emb)
    want = 0.0
    for i in range(3):
        cos = (w @ e[i]).tolist()
        t = cos[y[i]]
        cos[y[i]] = t - 0.35 if kind == "cosface" else math.cos(math.acos(t) + 0.5)
        z = [64 * c for c in cos]
        want += -z[y[i]] + math.log(sum(math.exp(v) for v in z))
    assert head(emb, y).detach().item() == pytest.approx(want / 3, rel=1e-5)
    with pytest.raises(InputError, match="loss must be"):
        MarginHead(4, 5, "softmax")


def test_a_seeded_run_is_reproducible_loads_and_resumes(tmp_path) -> None:
    cfg = TrainConfig(model=TINY, identities=10, steps=4, batch_size=6, warmup=2, workers=0, save_every=2)
    a = train(cfg, tmp_path / "a", progress=False, command="vitfree train (test)")
    b = train(cfg, tmp_path / "b", progress=False)
    sa, sb = torch.load(a.weights), torch.load(b.weights)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # same seed, same weights
    assert all(math.isfinite(v) for v in a.losses) and len(a.losses) == 4
    model = load(a.weights)  # a plain checkpoint of the published layout
    assert model.depth == 2 and model.num_features == 16
    meta = json.loads((tmp_path / "a" / "model.json").read_text())
    assert meta["command"] == "vitfree train (test)" and meta["synthetic"] and meta["steps"] == 4
    again = train(cfg, tmp_path / "a", resume=True, progress=False)  # already at the last step
    assert again.steps == 4 and again.losses == []
    with pytest.raises(InputError, match="another configuration"):
        train(TrainConfig(**{**cfg.__dict__, "steps": 5}), tmp_path / "a", resume=True, progress=False)


def test_training_from_an_image_folder(tmp_path) -> None:
    from vitfree.synthetic.sets import write_image_folder

    folder = write_image_folder(tmp_path / "faces", 3, 2, seed=5, progress=False)
    cfg = TrainConfig(model=TINY, data=str(folder), steps=2, batch_size=4, warmup=1, workers=0)
    res = train(cfg, tmp_path / "run", progress=False)
    assert res.steps == 2 and load(res.weights).num_features == 16


def test_training_from_a_recordio_set_sees_the_folder_faces(tmp_path) -> None:
    from vitfree.synthetic.sets import write_image_folder, write_recordio_set
    from vitfree.train import open_faces

    folder = write_image_folder(tmp_path / "faces", 3, 2, seed=5, progress=False)
    rec = write_recordio_set(tmp_path / "rec", 3, 2, seed=5, progress=False)
    (a, ka), (b, kb) = open_faces(folder), open_faces(rec)
    assert (ka, kb) == ("folder", "recordio") and a.classes == b.classes == 3
    assert all(np.array_equal(a[i][0], b[i][0]) and a[i][1] == b[i][1] for i in range(6))
    assert open_faces(rec.parent)[1] == "recordio"  # the folder holding train.rec
    cfg = TrainConfig(model=TINY, data=str(rec), steps=2, batch_size=4, warmup=1, workers=0)
    assert train(cfg, tmp_path / "run", progress=False).steps == 2


def test_loose_images_with_a_landmarks_file_are_aligned_as_the_benchmarks_are(tmp_path) -> None:
    import cv2
    from vitfree.synthetic.faces import aligned_faces, render_faces
    from vitfree.train import FolderFaces

    ids = [0, 0, 1]
    r = render_faces(ids, seed=4, image_seed=9, size=128)  # loose crops + their landmarks
    lines = []
    for j, (img, lmk, i) in enumerate(zip(r.images, r.landmarks, ids)):
        (tmp_path / f"p{i}").mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / f"p{i}" / f"{j}.png"), img)  # lossless
        lines.append(f"p{i}/{j}.png " + " ".join(f"{v:.6f}" for v in lmk.ravel()))
    (tmp_path / "landmarks.txt").write_text("# file x1 y1 ... x5 y5\n" + "\n".join(lines) + "\n")
    faces = FolderFaces(tmp_path)
    want = aligned_faces(ids, seed=4, image_seed=9, size=128)
    for j in range(3):
        img, label = faces[j]
        assert label == ids[j] and img.shape == (112, 112, 3)
        # the landmarks went through 6 decimals: at most a grey level here and there
        assert np.abs(img.astype(int) - want[j].astype(int)).mean() < 0.05

    def refused(text: str, match: str) -> None:
        (tmp_path / "landmarks.txt").write_text(text)
        with pytest.raises(InputError, match=match):
            FolderFaces(tmp_path)

    refused("\n".join(lines[:2]) + "\n", r"no landmarks for 1 image")
    refused("\n".join(lines) + "\np9/x.png 1 2 3 4 5 6 7 8 9 10\n", r":4: p9/x.png is not an image")
    refused(lines[0] + " 7\n", r"landmarks.txt:1: expected")
    refused("\n".join([*lines[:2], "p1/2.png 1 1 5 1 3 1 2 1 4 1"]) + "\n", r":3: landmarks of p1/2.png cannot")
    refused("\n".join([lines[0], lines[0]]) + "\n", r"second line")
