"""Evidence for docs/dynamic.md: dynamic exits of the demo model on its SYNTHETIC benchmark.

    nice .venv/bin/python docs/dynamic_evidence.py [--out out/dynamic] [--threads 2]

Renders (once) the held-out evaluation set of ``vitfree demo`` (150 people of seed 1) and a
calibration set of other people (150 of seed 11), embeds both at every exit (resumable
feature stores), calibrates every policy on the calibration set only, evaluates the
calibrated policies and the static exits on the evaluation set, runs the face policies for
real (:func:`vitfree.dynamic.run_dynamic`, compaction) on the evaluation faces and checks
them against the offline simulation, measures wall time per face against the static exits,
and writes ``OUT/evidence.json``, the tables printed below and ``docs/img/dynamic_tradeoff.png``.
Everything here is SYNTHETIC (rendered faces, a demo model trained on other rendered faces).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from vitfree import dynamic as dy
from vitfree.data import load_ijb_meta
from vitfree.faces import IJBCrops, face_batches
from vitfree.metrics import tar_at_far
from vitfree.models import load
from vitfree.synthetic.sets import write_ijbc

FARS = (1e-4, 1e-3)
FACE_EXITS = list(range(3, 13))
CASCADE_EXITS = [4, 6, 8, 10, 12]
STATIC_SHOWN = [4, 6, 8, 10, 12]


def _data(out: Path, name: str, seed: int) -> Path:
    root = out / name
    if not (root / "IJBC" / "SYNTHETIC.txt").is_file():
        write_ijbc(root, 150, seed=seed, preset="medium", impostor_ratio=100.0, overwrite=True, progress=True)
    return root


def _faces(root: Path) -> np.ndarray:
    """The aligned uint8 faces of an IJB folder, in meta order (as extraction sees them)."""
    meta = load_ijb_meta(root, pairs=False)
    crops = IJBCrops(meta=meta, normalize=False)
    out = np.zeros((len(meta), 112, 112, 3), np.uint8)
    for b in face_batches(crops, 128, num_workers=0):
        out[b.rows] = b.images.permute(0, 2, 3, 1).numpy()
    return out


def _tars(cs: dy.CalibrationSet, img: np.ndarray) -> list[float]:
    s = cs.pair_scores(img)
    return [round(float(t) * 100, 2) for t in tar_at_far(cs.labels, s, list(FARS))]


def _static_rank1(cs: dy.CalibrationSet, k: int) -> float:
    pol = dy.make_policy("search-cascade", [k], top_k=1, margin=0.0)
    r1, *_ = dy.search_rank1(pol, cs)
    return round(r1 * 100, 2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("out/dynamic"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--img", type=Path, default=Path("docs/img/dynamic_tradeoff.png"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out: Path = args.out
    t_start = time.time()
    model = load("demo").eval()
    ev_root, cal_root = _data(out, "eval", 1), _data(out, "calib", 11)
    all_exits = list(range(1, 13))
    cal = dy.calibration_set(model, cal_root, all_exits, out / "static-calib", one_n=True, num_workers=1)
    ev = dy.calibration_set(model, ev_root, all_exits, out / "static-eval", one_n=True, num_workers=1)
    rec: dict = {"data": {"eval": ev.source, "calib": cal.source}, "fars": list(FARS)}

    # ---- static exits
    static = {k: {"blocks": k, "tar": _tars(ev, ev.feats[k]), "rank1": _static_rank1(ev, k)} for k in all_exits}
    rec["static"] = static

    # ---- calibrated policies (calibration set only), evaluated on the evaluation set
    t0 = time.time()
    net = dy.train_decision_net(model, FACE_EXITS, identities=200, images_per_identity=6, seed=21)
    rec["decision_net"] = {"training": net["training"], "seconds": round(time.time() - t0, 1)}
    targets = [dy.Target("tar_loss", v) for v in (1.0, 2.0, 5.0)] + [dy.Target("blocks", v) for v in (6.0, 8.0, 10.0)]
    face_pols: dict[str, dy.Policy] = {}
    for kind in ("stability", "learned"):
        for t in targets:
            p = dy.calibrate_features(kind, cal, t, exits=FACE_EXITS, depth=12, net=net if kind == "learned" else None,
                                      model=dy.model_record(model))  # fmt: skip
            name = f"{kind}, {'loss<=' if t.metric == 'tar_loss' else 'blocks<='}{t.value:g}"
            face_pols[name] = p
    casc_pols = {}
    for t in [dy.Target("tar_loss", v) for v in (0.5, 1.0, 2.0)] + [dy.Target("blocks", 5.0)]:
        name = f"cascade, {'loss<=' if t.metric == 'tar_loss' else 'pair blocks<='}{t.value:g}"
        casc_pols[name] = dy.calibrate_features("cascade", cal, t, exits=CASCADE_EXITS, depth=12)
    search_pols = {}
    for t in [dy.Target("rank1_loss", v) for v in (0.0, 0.5, 1.0)] + [dy.Target("blocks", 5.0)]:
        name = f"search-cascade, {'loss<=' if t.metric == 'rank1_loss' else 'probe blocks<='}{t.value:g}"
        search_pols[name] = dy.calibrate_features("search-cascade", cal, t, exits=CASCADE_EXITS, depth=12, top_k=10)

    # ---- face policies on the evaluation faces: run for real (run_dynamic, compaction) for
    # the timed ones and checked against the offline simulation; the others simulated
    faces = _faces(ev_root)
    timed_names = ("stability, loss<=1", "stability, blocks<=8", "learned, loss<=1", "learned, blocks<=8")
    dyn_rows = {}
    for name, p in face_pols.items():
        sim = dy.simulate(p, ev.feats)
        row = {"param": p.threshold,
               "calib": {k: p.calibration[k] for k in ("avg_blocks", "tar_percent", "full_tar_percent")}}  # fmt: skip
        r = sim
        if name in timed_names:
            t0 = time.time()
            r = dy.embed_faces(model, faces, p, batch_size=64)
            row["run_seconds"] = round(time.time() - t0, 2)
            row["exits_equal_simulation"] = float((sim.exits == r.exits).mean())
            row["tar_simulated"] = _tars(ev, sim.embeddings)
        cost = dy.dynamic_cost(model, p, r.exits)
        row.update(blocks=round(float(r.exits.mean()), 3), heads=round(cost["avg_heads"], 3),
                   flop_ratio=round(cost["flop_ratio"], 4), tar=_tars(ev, r.embeddings),
                   source="run_dynamic" if name in timed_names else "simulate")  # fmt: skip
        dyn_rows[name] = row
        print(name, row, flush=True)
    rec["face_policies"] = dyn_rows

    # ---- the verification cascade (pairs) and the search cascade (probes)
    mat = np.stack([np.asarray(ev.pair_scores(ev.feats[k]), np.float64) for k in CASCADE_EXITS], axis=1)
    casc_rows = {}
    for name, p in casc_pols.items():
        r = dy.cascade_scores(p, mat)
        casc_rows[name] = {
            "alpha": p.params["alpha"], "pair_blocks": round(float(r.exits.mean()), 3),
            "face_blocks": round(dy.face_blocks_of_pairs(r.exits, ev.p1, ev.p2, ev.templates), 3),
            "tar": [round(float(t) * 100, 2) for t in tar_at_far(ev.labels, r.scores, list(FARS))],
            "calib": {k: p.calibration[k] for k in ("avg_blocks", "tar_percent", "full_tar_percent")},
            "histogram": {str(k): int((r.exits == k).sum()) for k in CASCADE_EXITS},
        }  # fmt: skip
        print(name, casc_rows[name], flush=True)
    rec["cascade"] = casc_rows
    search_rows = {}
    for name, p in search_pols.items():
        r1, blocks, comps, _ = dy.search_rank1(p, ev)
        search_rows[name] = {"margin": p.params["margin"], "probe_blocks": round(blocks, 3), "rank1": round(r1 * 100, 2),
                             "comparisons": comps,
                             "calib": {k: p.calibration[k] for k in ("avg_blocks", "rank1_percent", "full_rank1_percent")}}  # fmt: skip
        print(name, search_rows[name], flush=True)
    rec["search_cascade"] = search_rows

    # ---- sweeps of the face policies on the evaluation set (the whole trade-off curve)
    sweeps = {}
    for kind, p in (("stability", face_pols["stability, loss<=1"]), ("learned", face_pols["learned, loss<=1"])):
        stats = dy.face_statistics(p, ev.feats)
        pts = []
        for q in np.linspace(0.02, 0.98, 25):
            thr = float(np.quantile(stats[:, :-1], q))
            sim = dy.simulate(p.with_threshold(thr), ev.feats)
            pts.append([thr, round(float(sim.exits.mean()), 3), *_tars(ev, sim.embeddings)])
        sweeps[kind] = pts
    rec["sweeps"] = sweeps

    # ---- wall time per face (image + flip), interleaved rounds, best round each
    timed = {n: face_pols[n] for n in timed_names}
    sample = faces[:: max(1, faces.shape[0] // 512)][:512]
    secs = dy.measure_dynamic_speed(model, sample, timed, STATIC_SHOWN, batch_size=64, rounds=3)
    rec["seconds_per_face"] = {"threads": args.threads, "faces": int(sample.shape[0]), "batch_size": 64,
                               **{k: round(v * 1000, 3) for k, v in secs.items()}}  # ms per face  # fmt: skip
    print("ms per face", rec["seconds_per_face"], flush=True)
    rec["cpu_seconds_total"] = round(time.time() - t_start, 1)
    (out / "evidence.json").write_text(json.dumps(rec, indent=1, default=float))
    _plot(rec, args.img)
    print(f"wrote {out / 'evidence.json'} and {args.img} in {time.time() - t_start:.0f} s")


def _plot(rec: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 4.6))
    axes = fig.subplots(1, 3)
    st = rec["static"]
    ks = sorted(int(k) for k in st)
    ax = axes[0]
    ax.plot(ks, [st[k]["tar"][0] for k in ks], "o-", color="k", label="static exit k")
    for kind, color in (("stability", "tab:blue"), ("learned", "tab:orange")):
        pts = np.array(rec["sweeps"][kind])
        ax.plot(pts[:, 1], pts[:, 2], "-", color=color, alpha=0.5, label=f"{kind}: threshold sweep")
        rows = [v for n, v in rec["face_policies"].items() if n.startswith(kind)]
        ax.plot([r["blocks"] for r in rows], [r["tar"][0] for r in rows], "s", color=color,
                label=f"{kind}: calibrated (held-out)")  # fmt: skip
    rows = list(rec["cascade"].values())
    ax.plot([r["pair_blocks"] for r in rows], [r["tar"][0] for r in rows], "^", color="tab:green",
            label="cascade: blocks per pair")  # fmt: skip
    ax.plot([r["face_blocks"] for r in rows], [r["tar"][0] for r in rows], "v", color="tab:green", mfc="none",
            label="cascade: blocks per face (whole benchmark)")  # fmt: skip
    ax.set_xlabel("average blocks per face (pair)")
    ax.set_ylabel("TAR@FAR=1e-4 (%)")
    ax.set_title("SYNTHETIC IJB-C-format benchmark, demo model: 1:1", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")

    ax = axes[1]
    ms = rec["seconds_per_face"]
    xs = [ms[f"exit {k}"] for k in STATIC_SHOWN]
    ax.plot(xs, [st[k]["tar"][0] for k in STATIC_SHOWN], "o-", color="k", label="static exit k")
    for n in ("stability, loss<=1", "stability, blocks<=8", "learned, loss<=1", "learned, blocks<=8"):
        ax.plot(ms[n], rec["face_policies"][n]["tar"][0], "s", label=n)
    ax.set_xlabel(f"measured ms per face (image + flip, batch 64, {ms['threads']} CPU threads)")
    ax.set_ylabel("TAR@FAR=1e-4 (%)")
    ax.set_title("accuracy against measured time", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")

    ax = axes[2]
    ax.plot(ks, [st[k]["rank1"] for k in ks], "o-", color="k", label="static exit k")
    rows = list(rec["search_cascade"].values())
    ax.plot([r["probe_blocks"] for r in rows], [r["rank1"] for r in rows], "D", color="tab:red",
            label="search cascade (calibrated, held-out)")  # fmt: skip
    ax.set_xlabel("average blocks per probe image")
    ax.set_ylabel("1:N closed-set rank-1 (%)")
    ax.set_title("1:N: search at exit 4, re-rank top-10 deeper", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("Dynamic exits (SYNTHETIC data; calibrated on other people, evaluated on the demo benchmark)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
