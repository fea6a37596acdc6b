"""vitfree.finetune: exit-specific heads trained with the backbone frozen.

What the method promises, each as a property that can fail: the backbone's weights and
buffers are bit-identical after training and receive no gradient; one frozen pass per step
serves every exit (counted); exits train independently of each other; resume reaches the
same weights as an uninterrupted run; self-distillation pulls an exit toward the final
embedding; a fine-tuned head lifts a shallow exit of the demo model on held-out SYNTHETIC
identities.  Then bad input, the heads file, the command line, and the command line under
torchrun (two gloo processes on CPU: one set of heads, each rank its own data).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from vitfree.cli import main
from vitfree.errors import CheckpointError, InputError
from vitfree.finetune import FinetuneConfig, PairValidation, finetune
from vitfree.models import Head, VisionTransformer, create_model, load, preprocess
from vitfree.models.files import backbone_fingerprint, read_exit_heads_file

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(depth: int = 4, seed: int = 0) -> VisionTransformer:
    torch.manual_seed(seed)
    m = create_model("vit_t", depth=depth, embed_dim=32, num_heads=4, num_features=24)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm1d):
                mod.running_mean.normal_(0, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    return m.eval()


class Faces(torch.utils.data.Dataset):
    """In-memory ``(uint8 (112, 112, 3), label)`` items with a class count."""

    def __init__(self, images: np.ndarray, labels, num_classes: int | None = None) -> None:
        self.images, self.labels = images, list(labels)
        self.num_classes = num_classes if num_classes is not None else int(max(self.labels)) + 1

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], self.labels[i]


def noise_faces(n: int, classes: int, seed: int = 0) -> Faces:
    rng = np.random.default_rng(seed)
    return Faces(rng.integers(0, 256, (n, 112, 112, 3), dtype=np.uint8), [i % classes for i in range(n)])


def quick(**kw) -> FinetuneConfig:
    base = {"steps": 3, "batch_size": 4, "warmup": 1, "workers": 0, "lr": 1e-2}
    return FinetuneConfig(**{**base, **kw})


def heads_state(path: Path) -> dict[int, dict[str, Tensor]]:
    return {k: s.state_dict for k, s in read_exit_heads_file(path).heads.items()}


# --------------------------------------------------------------------------------------
# the frozen backbone
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["copy", "lora"])
def test_backbone_is_bit_identical_and_gets_no_gradient(tmp_path, kind: str) -> None:
    model = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = finetune(model, noise_faces(12, 3), [1, 3], tmp_path / "h.pt",
                   quick(head=kind, loss="cosface+distill"), progress=False)  # fmt: skip
    after = model.state_dict()
    assert set(after) == set(before)  # no head installed in the model
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN buffers
    assert all(p.grad is None for p in model.parameters())  # no gradient reached the backbone
    assert all(p.requires_grad for p in model.parameters())  # flags restored
    assert not model.training
    start = Head.start(model, kind).state_dict()
    for k in (1, 3):  # the heads did train
        sd = res.heads[k].state_dict()
        moved = [n for n in sd if sd[n].is_floating_point() and not torch.equal(sd[n], start[n])]
        assert moved, f"exit {k}: no tensor changed"
    f = read_exit_heads_file(res.heads_file)
    assert f.backbone == backbone_fingerprint(model) and sorted(f.heads) == [1, 3]
    assert f.info["loss"]["name"] == "cosface+distill" and f.info["kind"] == kind
    assert f.info["data"]["kind"] == "dataset" and f.info["exits"] == [1, 3]


@pytest.mark.parametrize("loss", ["cosface", "distill"])
def test_one_frozen_pass_per_step_serves_every_exit(tmp_path, loss: str) -> None:
    model = tiny(depth=4)
    calls = {"embed": 0, **{b: 0 for b in range(4)}}
    embed = model.embed

    def counting_embed(x: Tensor) -> Tensor:
        calls["embed"] += 1
        return embed(x)

    model.embed = counting_embed  # type: ignore[method-assign]
    for b, blk in enumerate(model.blocks):
        blk.register_forward_hook(lambda *_, b=b: calls.__setitem__(b, calls[b] + 1))
    finetune(model, noise_faces(8, 2), [1, 2, 3], tmp_path / "h.pt", quick(loss=loss, accum=2),
             progress=False)  # fmt: skip
    micro = 3 * 2  # steps x accumulation
    assert calls["embed"] == micro
    assert [calls[b] for b in range(3)] == [micro] * 3  # each block once per micro-batch
    assert calls[3] == (micro if loss == "distill" else 0)  # block 4 only for the final target


def test_exits_train_independently_of_each_other(tmp_path) -> None:
    model = tiny(depth=4)
    data = noise_faces(12, 3)
    together = finetune(model, data, [1, 3], tmp_path / "a.pt", quick(head="lora"), progress=False)
    alone = finetune(model, data, [3], tmp_path / "b.pt", quick(head="lora"), progress=False)
    a, b = together.heads[3].state_dict(), alone.heads[3].state_dict()
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("data", ["synth", "dataset"])
def test_resume_reaches_the_weights_of_an_uninterrupted_run(tmp_path, data: str) -> None:
    model = tiny(depth=3)
    src = "synth" if data == "synth" else noise_faces(10, 3)
    cfg = quick(steps=6, accum=2, save_every=2, identities=5, batch_size=3, head="lora")
    whole = finetune(model, src, [1, 2], tmp_path / "whole.pt", cfg, progress=False)
    part = finetune(model, src, [1, 2], tmp_path / "part.pt", cfg, progress=False, stop_after=3)
    assert part.steps == 3 and read_exit_heads_file(tmp_path / "part.pt").info["complete"] is False
    rest = finetune(model, src, [1, 2], tmp_path / "part.pt", cfg, progress=False, resume=True)
    assert rest.steps == 6 and len(rest.losses) == 3
    assert rest.losses == whole.losses[3:]
    a, b = heads_state(tmp_path / "whole.pt"), heads_state(tmp_path / "part.pt")
    for k in (1, 2):
        for n in a[k]:
            assert torch.equal(a[k][n], b[k][n]), (k, n)
    with pytest.raises(InputError, match="another run"):
        finetune(model, src, [1, 2], tmp_path / "part.pt", quick(steps=7), progress=False, resume=True)


# --------------------------------------------------------------------------------------
# what training achieves
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_faces() -> tuple[Faces, Tensor, np.ndarray]:
    """SYNTHETIC faces for the demo model: 30 training identities of seed 200 (6 images each)
    and 40 held-out identities of seed 300 (4 each; no seed the demo model was trained or
    benchmarked on)."""
    from vitfree.synthetic.faces import aligned_faces

    ids = np.repeat(np.arange(30), 6)
    train = Faces(aligned_faces(ids, seed=200, image_seed=5), ids.tolist())
    held_ids = np.repeat(np.arange(40), 4)
    return train, preprocess(aligned_faces(held_ids, seed=300, image_seed=6)), held_ids


def test_self_distillation_pulls_an_exit_toward_the_final_embedding(tmp_path, demo_faces) -> None:
    """Label-free: the demo model's exit 1 on held-out faces moves toward its exit 12."""
    train, held, _ = demo_faces
    model = load("demo")

    def cosine_to_final() -> float:
        with torch.no_grad():
            e = model.forward_exits(held, [1, 12])
        return float(nn.functional.cosine_similarity(e[1], e[12]).mean())

    before = cosine_to_final()  # about 0.3
    res = finetune(model, train, [1], tmp_path / "h.pt",
                   FinetuneConfig(loss="distill", steps=20, batch_size=16, warmup=4, workers=0),
                   progress=False)  # fmt: skip
    model.set_exit_heads(res.heads)
    after = cosine_to_final()  # about 0.84
    assert after > before + 0.3, (before, after)
    assert np.mean(res.losses[-3:]) < np.mean(res.losses[:3])


def test_a_finetuned_head_lifts_a_shallow_exit_on_held_out_identities(tmp_path, demo_faces) -> None:
    """The demo model's exit 2, CosFace on the 30 training identities, verified on the 40
    held-out ones: the AUC of all 12,720 pairs rises (shared head about 0.93, tuned 0.98)."""
    from sklearn.metrics import roc_auc_score

    train, held, held_ids = demo_faces
    iu = np.triu_indices(len(held_ids), 1)
    same = (held_ids[:, None] == held_ids[None])[iu]
    model = load("demo")

    def auc() -> float:
        with torch.no_grad():
            e = nn.functional.normalize(model.forward_exit(held, 2)).numpy()
        return float(roc_auc_score(same, (e @ e.T)[iu]))

    shared = auc()
    res = finetune(model, train, [2], tmp_path / "h.pt",
                   FinetuneConfig(steps=40, batch_size=32, warmup=8, workers=0), progress=False)  # fmt: skip
    model.set_exit_heads(res.heads)
    tuned = auc()
    assert tuned > shared + 0.02, (shared, tuned)


def test_validation_keeps_each_exits_best_head_and_stops_early(tmp_path) -> None:
    model = tiny(depth=3)
    cfg = quick(steps=12, lr=0.5, warmup=1, val="synth", val_pairs=20, val_every=1, patience=2,
                val_seed=11)  # fmt: skip
    res = finetune(model, noise_faces(12, 3), [1, 2], tmp_path / "h.pt", cfg, progress=False)
    hist = res.validation
    assert hist[0]["step"] == 0 and hist[0].get("shared")
    info = read_exit_heads_file(res.heads_file).info
    if info["stopped_early"] is not None:
        assert res.steps == info["stopped_early"] < 12
    val = PairValidation("synth", 20, 11)
    got = val.accuracy(model, [1, 2], res.heads, batch_size=4)
    for k in (1, 2):  # the head written is the best one seen
        best = max(h["accuracy"][k] for h in hist)
        assert got[k] == pytest.approx(best) and info["validation"]["best"][str(k)] == pytest.approx(best)


# --------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------


def test_bad_exits_and_data_sets_are_named(tmp_path) -> None:
    model = tiny(depth=3)
    out = tmp_path / "h.pt"
    with pytest.raises(InputError, match="exit 4 is out of range for a 3-block model"):
        finetune(model, noise_faces(4, 2), [1, 4], out, quick(), progress=False)
    with pytest.raises(InputError, match="is empty"):
        finetune(model, Faces(np.zeros((0, 112, 112, 3), np.uint8), [], 2), [1], out, quick(), progress=False)
    with pytest.raises(InputError, match="has 1 identity.*loss='distill'"):
        finetune(model, noise_faces(4, 1), [1], out, quick(), progress=False)
    finetune(model, noise_faces(4, 1), [1], out, quick(loss="distill", steps=1), progress=False)  # no labels needed
    floats = noise_faces(4, 2)
    floats.labels = [0, 1.5, 0, 1]
    with pytest.raises(InputError, match=r"label 1\.5 is not an integer"):
        finetune(model, floats, [1], out, quick(), progress=False)
    with pytest.raises(InputError, match="unknown head kind 'wide'"):
        finetune(model, noise_faces(4, 2), [1], out, quick(head="wide"), progress=False)
    with pytest.raises(InputError, match="loss must be one of"):
        finetune(model, noise_faces(4, 2), [1], out, quick(loss="softmax"), progress=False)
    with pytest.raises(FileNotFoundError, match="training data not found"):
        finetune(model, tmp_path / "nowhere", [1], out, quick(), progress=False)


def test_corrupt_images_stop_the_run_naming_the_file_or_are_skipped(tmp_path) -> None:
    from vitfree.synthetic.sets import write_image_folder

    folder = write_image_folder(tmp_path / "faces", 3, 2, seed=5, progress=False)
    bad = folder / "000001" / "0001.jpg"
    bad.write_bytes(bad.read_bytes()[:300])
    model = tiny(depth=2)
    cfg = quick(batch_size=6, steps=2)
    with pytest.raises(InputError, match=r"000001/0001\.jpg.*--skip-corrupt"):
        finetune(model, folder, [1], tmp_path / "h.pt", cfg, progress=False)
    res = finetune(model, folder, [1], tmp_path / "h.pt", quick(batch_size=6, steps=2, skip_corrupt=True),
                   progress=False)  # fmt: skip
    assert res.skipped_images == 2 and res.steps == 2  # drawn once per epoch, two epochs
    info = read_exit_heads_file(res.heads_file).info
    assert info["skipped_images"] == 2 and info["data"]["kind"] == "folder" and info["data"]["synthetic"]


def test_training_from_a_recordio_set(tmp_path) -> None:
    import cv2

    recordio = pytest.importorskip("vitfree.data.recordio")
    rng = np.random.default_rng(0)
    items = []
    for i in range(6):
        img = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
        items.append((i % 3, cv2.imencode(".jpg", img)[1].tobytes()))
    recordio.write_recordio(tmp_path / "train.rec", None, items)
    res = finetune(tiny(depth=2), tmp_path / "train.rec", [1], tmp_path / "h.pt", quick(steps=2), progress=False)
    info = read_exit_heads_file(res.heads_file).info
    assert info["data"]["kind"] == "recordio" and info["data"]["identities"] == 3 and info["data"]["images"] == 6


def test_finetuned_heads_refuse_another_backbone(tmp_path) -> None:
    res = finetune(tiny(seed=0), noise_faces(8, 2), [2], tmp_path / "h.safetensors", quick(head="norms"),
                   progress=False)  # fmt: skip
    with pytest.raises(CheckpointError, match="another backbone"):
        tiny(seed=1).load_exit_heads(res.heads_file)
    same = tiny(seed=0)
    same.load_exit_heads(res.heads_file)
    assert same.exit_heads["2"].kind == "norms"


# --------------------------------------------------------------------------------------
# the command line
# --------------------------------------------------------------------------------------


def test_finetune_then_evaluate_with_the_heads(tmp_path, tiny_checkpoint, capsys) -> None:
    from vitfree.synthetic.sets import write_bin, write_image_folder

    ckpt = tiny_checkpoint(seed=3)
    folder = write_image_folder(tmp_path / "faces", 3, 2, seed=5, progress=False)
    heads = tmp_path / "heads" / "h.pt"
    rc = main(["finetune", "--model", str(ckpt), "--data", str(folder), "--exits", "1,-1", "--out", str(heads),
               "--steps", "2", "--batch-size", "4", "--workers", "0", "--head", "lora", "--rank", "2",
               "--device", "cpu"])  # fmt: skip
    assert rc == 0 and heads.is_file() and (tmp_path / "heads" / "h.json").is_file()
    assert "2 lora heads at exits [1, 3]" in capsys.readouterr().out
    info = read_exit_heads_file(heads).info
    assert info["command"].startswith("vitfree finetune") or "finetune" in info["command"]
    assert info["head_options"] == {"rank": 2, "alpha": 2.0}
    binf = write_bin(tmp_path / "s.bin", 20, seed=4)
    out = tmp_path / "eval"
    rc = main(["eval", "bin", str(binf), "--model", str(ckpt), "--exit-heads", str(heads), "--exits", "1,2,3",
               "--no-speed", "--no-plots", "--batch-size", "8", "--device", "cpu", "--out", str(out)])  # fmt: skip
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["info"]["exit_heads"] == {"file": str(heads), "kinds": {"1": "lora", "3": "lora"}}
    # heads of another backbone: one line, status 2
    other = tmp_path / "other.pt"
    shutil.copyfile(tiny_checkpoint(seed=4), other)
    rc = main(["eval", "bin", str(binf), "--model", str(other), "--exit-heads", str(heads), "--no-speed",
               "--device", "cpu", "--out", str(tmp_path / "e2")])  # fmt: skip
    assert rc == 2 and "another backbone" in capsys.readouterr().err
    rc = main(["finetune", "--model", str(ckpt), "--exits", "9", "--out", str(heads), "--steps", "1",
               "--device", "cpu"])  # fmt: skip
    assert rc == 2 and "exit 9 is out of range" in capsys.readouterr().err


def test_the_evaluation_api_takes_and_names_the_heads(tmp_path) -> None:
    from vitfree.pipelines import evaluate_pairsets
    from vitfree.synthetic.sets import write_bin

    model = tiny(depth=3)
    res = finetune(model, noise_faces(8, 2), [1, 2], tmp_path / "h.pt", quick(head="lgvit_global"),
                   progress=False)  # fmt: skip
    binf = write_bin(tmp_path / "s.bin", 20, seed=4)
    ev = evaluate_pairsets(model, [binf], None, exits=[1, 2, 3], exit_heads=res.heads_file, speed=False,
                           batch_size=8, device="cpu", progress=False)  # fmt: skip
    assert ev.info["exit_heads"] == {"file": str(res.heads_file), "kinds": {"1": "lgvit_global", "2": "lgvit_global"}}
    assert "lgvit_global exit heads (h.pt) at exits 1,2" in ev.title
    model.clear_exit_heads()
    shared = evaluate_pairsets(model, [binf], None, exits=[1, 2, 3], speed=False, batch_size=8, device="cpu",
                               progress=False)  # fmt: skip
    assert "exit_heads" not in shared.info
    tuned = {r.exit: r.kfold.mean for r in ev.results}
    plain = {r.exit: r.kfold.mean for r in shared.results}
    assert tuned[3] == plain[3]  # exit 3 has no head: the same embeddings


def test_help_explains_every_finetune_option(capsys) -> None:
    import argparse

    from vitfree.cli import build_parser

    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    sub = action.choices["finetune"]
    for act in sub._actions:
        assert act.help and act.help != argparse.SUPPRESS, act.option_strings
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    text = capsys.readouterr().out
    for opt in ("--model", "--data", "--exits", "--out", "--head", "--loss", "--steps", "--epochs", "--batch-size",
                "--lr", "--device", "--amp", "--val", "--val-every", "--resume", "--skip-corrupt", "--patience"):  # fmt: skip
        assert opt in text


# --------------------------------------------------------------------------------------
# torchrun
# --------------------------------------------------------------------------------------

# Runs ``vitfree finetune`` (the CLI's main) in each torchrun process and saves what that
# process's finetune() returned, so the test can compare the ranks: only rank 0 writes files.
_CAPTURE_RANKS = """
import os, sys
import torch
import vitfree.finetune as ft
from vitfree.cli import main

run = ft.finetune

def finetune_and_save(model, *args, **kw):
    res = run(model, *args, **kw)
    torch.save({"rank": res.rank, "steps": res.steps, "losses": res.losses,
                "params": {k: {n: p.detach() for n, p in h.named_parameters()}
                           for k, h in res.heads.items()},
                "state": {k: h.state_dict() for k, h in res.heads.items()},
                "backbone": model.state_dict(),
                "backbone_grads": [p.grad for p in model.parameters() if p.grad is not None]},
               os.path.join(os.environ["VITFREE_TEST_DUMP"], f"rank{res.rank}.pt"))
    return res

ft.finetune = finetune_and_save  # cmd_finetune imports it when it runs
sys.exit(main(sys.argv[1:]))
"""


def test_torchrun_two_gloo_processes_train_one_set_of_heads(
    tmp_path, tiny_checkpoint, capsys
) -> None:
    """``vitfree finetune`` under ``torchrun --nproc_per_node 2`` (gloo, CPU).

    Each rank renders its own SYNTHETIC micro-batches (a function of ``(seed, rank, b)``) and
    DDP averages the heads' gradients.  Checked: both ranks end with bit-identical head
    parameters; rank 1 trained on other faces than rank 0 (another step-0 loss); rank 0's
    step-0 loss is a single-process run's (same heads, same rank-0 faces), but the DDP heads
    are not that run's heads (rank 1's gradients count: had both ranks read the same faces,
    the average of two equal gradients would reproduce the single-process heads bit for bit);
    the heads trained, the backbone is untouched, the file and record say world size 2.

    Why not "DDP equals one process with both ranks' batches combined": every head kind has
    BatchNorm1d layers, in training mode normalised by the statistics of each rank's own
    micro-batch (no SyncBatchNorm), so a combined batch of 8 normalises differently from two
    of 4; and DDP broadcasts rank 0's BatchNorm running statistics at each forward, so the
    ranks' running statistics differ after the last step (rank 0's are the ones written).
    """
    import os
    import socket
    import subprocess
    import sys

    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with the gloo backend is not available in this torch build")
    ckpt = tiny_checkpoint(seed=2)  # 3 blocks, 64 wide
    ckpt_bytes = ckpt.read_bytes()
    script = tmp_path / "finetune_ranks.py"
    script.write_text(_CAPTURE_RANKS)
    # --no-flip: flips depend on the rank too, and the test is that each rank's faces differ
    args = ["finetune", "--model", str(ckpt), "--data", "synth", "--identities", "10",
            "--exits", "1,2", "--steps", "3", "--batch-size", "4", "--accum", "2",
            "--workers", "0", "--device", "cpu", "--no-flip"]  # fmt: skip
    heads = tmp_path / "ddp" / "H.pt"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(port), str(script)]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", VITFREE_TEST_DUMP=str(tmp_path))
    proc = subprocess.run([*cmd, *args, "--out", str(heads)], capture_output=True, text=True,
                          env=env, timeout=240)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    # only rank 0 reports
    assert proc.stdout.count("2 copy heads at exits [1, 2], 3 steps") == 1, proc.stdout
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert (r0["rank"], r1["rank"], r0["steps"], r1["steps"]) == (0, 1, 3, 3)

    # one set of heads: DDP kept the ranks' parameters bit-identical
    for k in (1, 2):
        assert r0["params"][k].keys() == r1["params"][k].keys()
        for n, p in r0["params"][k].items():
            assert torch.equal(p, r1["params"][k][n]), (k, n)
    # each rank its own data: at step 0 both hold the same heads, yet see other faces
    assert r0["losses"][0] != pytest.approx(r1["losses"][0], rel=1e-3)

    # the file: rank 0's heads, loadable onto the checkpoint it was trained on
    model = load(ckpt)
    model.load_exit_heads(heads)
    assert sorted(model.exit_heads) == ["1", "2"]
    for k in (1, 2):
        loaded = model.exit_heads[str(k)].state_dict()
        assert loaded.keys() == r0["state"][k].keys()
        assert all(torch.equal(loaded[n], t) for n, t in r0["state"][k].items()), k
    f = read_exit_heads_file(heads)
    assert f.info["world"] == 2 and f.info["steps"] == 3 and f.info["complete"] is True
    assert f.info["data"]["kind"] == "synth" and f.info["synthetic"] is True
    record = json.loads((tmp_path / "ddp" / "H.json").read_text())
    assert record["world"] == 2 and record["losses"] == r0["losses"]

    # the heads trained (moved from the checkpoint's head), the backbone did not
    fresh = load(ckpt)
    start = Head.start(fresh, "copy").state_dict()
    for k in (1, 2):
        moved = [n for n, p in r0["params"][k].items() if not torch.equal(p, start[n])]
        assert moved, f"exit {k}: no parameter changed"
    assert ckpt.read_bytes() == ckpt_bytes
    for r in (r0, r1):
        assert r["backbone"].keys() == fresh.state_dict().keys()
        assert all(torch.equal(t, fresh.state_dict()[n]) for n, t in r["backbone"].items())
        assert r["backbone_grads"] == []

    # against one process with the same arguments: it reads rank 0's faces only
    single = tmp_path / "single" / "H.pt"
    assert main([*args, "--out", str(single)]) == 0
    capsys.readouterr()
    one = json.loads((tmp_path / "single" / "H.json").read_text())
    assert one["world"] == 1
    assert one["losses"][0] == pytest.approx(r0["losses"][0], rel=1e-5)  # same heads, same faces
    alone = heads_state(single)
    gap = max(float((alone[k][n] - p).abs().max())
              for k in (1, 2) for n, p in r0["params"][k].items())  # fmt: skip
    assert gap > 1e-5, "DDP gave the single-process heads: rank 1's gradients did not count"
