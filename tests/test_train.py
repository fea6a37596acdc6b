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
