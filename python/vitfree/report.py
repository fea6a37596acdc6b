"""Per-exit reports: the table on stdout, ``results.json``, ``results.csv`` and PNG plots.

IJB-B/C results are :class:`vitfree.evaluate.ExitResult`; ``.bin`` / pair-list results are
:class:`vitfree.evaluate.PairSetResult`.  Plots are drawn on ``matplotlib.figure.Figure``
objects and saved, so the matplotlib backend of a user's session is never switched.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vitfree.costs import ExitCost
from vitfree.evaluate import ExitResult, PairSetResult
from vitfree.ijb import format_far

__all__ = [
    "bin_rows",
    "format_bin_table",
    "format_ijb_table",
    "ijb_rows",
    "plot_bin",
    "plot_ijb",
    "save_bin",
    "save_ijb",
]


def _cost_cols(cost: ExitCost | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if cost is None:
        return out
    if cost.gflops is not None:
        out["GFLOPs"] = round(cost.gflops, 3)
    if cost.flop_ratio is not None:
        out["rel. FLOPs"] = round(cost.flop_ratio, 3)
    if cost.speedup is not None:
        out["speed-up"] = round(cost.speedup, 2)
    return out


def _flop_ratios(results: Sequence[Any]) -> list[float] | None:
    """The FLOP ratio of every result, or None when one of them has none."""
    ratios = [r.cost.flop_ratio if r.cost is not None else None for r in results]
    if any(x is None for x in ratios):
        return None
    return [float(x) for x in ratios if x is not None]


def _figure() -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.8))
    return fig, fig.subplots()


def ijb_rows(results: Sequence[ExitResult], rule: str = "nearest") -> list[dict[str, Any]]:
    """One flat dict per exit: TAR@FAR in percent (by ``rule``: "nearest", the community
    rule, or "at_most"), AUC, 1:N, cost."""
    rows = []
    for r in results:
        row: dict[str, Any] = {"exit": r.label}
        v = r.verification
        for far, tar in zip(v.fars, (v.at_most if rule == "at_most" else v.nearest).tar):
            row[f"TAR@{format_far(far)}"] = round(float(tar) * 100, 2)
        row["AUC"] = round(v.auc * 100, 3)
        if r.identification is not None:
            ident = r.identification
            for k, val in ident.rank.items():
                row[f"rank-{k}"] = round(float(val) * 100, 2)
            for f, t in zip(ident.fpirs, ident.tpir):
                row[f"TPIR@{format_far(f)}"] = round(float(t) * 100, 2)
        row.update(_cost_cols(r.cost))
        rows.append(row)
    return rows


def format_ijb_table(results: Sequence[ExitResult], title: str = "", rule: str = "nearest") -> str:
    """A fixed-width table of :func:`ijb_rows` (percent, two decimals)."""
    rows = ijb_rows(results, rule)
    if not rows:
        return "(no results)"
    cols = list(dict.fromkeys(k for row in rows for k in row))
    width = {c: max(len(c), *(len(_fmt(row.get(c, ""))) for row in rows)) for c in cols}
    lines = []
    if title:
        lines.append(title)
    lines.append("  ".join(c.rjust(width[c]) if c != "exit" else c.ljust(width[c]) for c in cols))
    for row in rows:
        lines.append(
            "  ".join(
                _fmt(row.get(c, "")).rjust(width[c]) if c != "exit" else _fmt(row[c]).ljust(width[c])
                for c in cols
            )
        )
    if rule == "at_most":
        lines.append("TAR: strict FPR<=FAR rule; results.json also has the nearest-FPR rule (insightface).")
    else:
        lines.append("TAR: nearest-FPR rule (insightface); results.json also has the strict FPR<=FAR rule.")
    return "\n".join(lines)


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.2f}"
    return str(x)


def _write_results(out: str | os.PathLike[str], payload: dict[str, Any], rows: list[dict[str, Any]]) -> list[Path]:
    """``results.json`` with ``payload`` and ``results.csv`` with the table ``rows``."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    js = folder / "results.json"
    js.write_text(json.dumps(payload, indent=2))
    cols = list(dict.fromkeys(k for row in rows for k in row))
    cs = folder / "results.csv"
    with cs.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    return [js, cs]


def save_ijb(results: Sequence[ExitResult], out: str | os.PathLike[str], info: dict[str, Any]) -> list[Path]:
    """Write ``results.json`` (everything, both TAR rules) and ``results.csv`` (the table)."""
    payload = {"info": info, "exits": [r.as_dict() for r in results]}
    rule = str((info.get("options") or {}).get("tar_rule", "nearest"))
    return _write_results(out, payload, ijb_rows(results, rule))


def plot_ijb(results: Sequence[ExitResult], out: str | os.PathLike[str], title: str = "") -> list[Path]:
    """``roc.png`` (ROC of every exit, log FAR axis) and ``accuracy_vs_cost.png``."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, ax = _figure()
    for r in results:
        roc = r.verification.roc
        # a few thousand points on a log grid are enough to draw millions
        idx = np.unique(np.searchsorted(roc.fpr, np.logspace(-7, 0, 3000), side="right") - 1)
        idx = idx[roc.fpr[idx] > 0]
        ax.step(roc.fpr[idx], roc.tpr[idx] * 100, where="post", label=r.label)
    ax.set_xscale("log")
    ax.set_xlim(1e-6, 1)
    ax.set_xlabel("FAR")
    ax.set_ylabel("TAR (%)")
    ax.set_title(f"ROC {title}".strip(), fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    paths.append(folder / "roc.png")
    fig.savefig(paths[-1], dpi=120)

    fig, ax = _figure()
    far_idx = int(np.argmin(np.abs(np.log10(results[0].verification.fars) + 4))) if results else 0
    far = results[0].verification.fars[far_idx] if results else 1e-4
    ratios = _flop_ratios(results)
    have_cost = ratios is not None
    xs = ratios if ratios is not None else [r.exit or i + 1 for i, r in enumerate(results)]
    ys = [float(r.verification.nearest.tar[far_idx]) * 100 for r in results]
    ax.plot(xs, ys, "o-")
    for x, y, r in zip(xs, ys, results):
        ax.annotate(r.label, (x, y), textcoords="offset points", xytext=(4, -10), fontsize=8)
    ax.set_xlabel("relative FLOPs (full model = 1)" if have_cost else "exit (block)")
    ax.set_ylabel(f"TAR@FAR={format_far(far)} (%)")
    ax.set_title(f"Accuracy against cost {title}".strip(), fontsize=9)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    paths.append(folder / "accuracy_vs_cost.png")
    fig.savefig(paths[-1], dpi=120)
    return paths


# --------------------------------------------------------------------------------------
# LFW-style .bin sets and pair lists (docs/protocols.md §5)
# --------------------------------------------------------------------------------------


def bin_rows(results: Sequence[PairSetResult]) -> list[dict[str, Any]]:
    """One flat dict per (set, exit): accuracy and VAL in percent, then the cost columns."""
    rows = []
    for r in results:
        k = r.kfold
        row: dict[str, Any] = {"set": r.name, "exit": r.exit}
        row["accuracy"] = round(k.mean * 100, 2)
        row["acc. std"] = round(k.std * 100, 2)
        far = format_far(k.far_target)
        row[f"VAL@{far}"] = round(k.val_mean * 100, 2)
        row["VAL std"] = round(k.val_std * 100, 2)
        row.update(_cost_cols(r.cost))
        rows.append(row)
    return rows


def format_bin_table(results: Sequence[PairSetResult], title: str = "") -> str:
    """A fixed-width table of :func:`bin_rows` (percent, two decimals), one block per set."""
    rows = bin_rows(results)
    if not rows:
        return "(no results)"
    cols = list(dict.fromkeys(k for row in rows for k in row))
    left = ("set", "exit")
    width = {c: max(len(c), *(len(_fmt(row.get(c, ""))) for row in rows)) for c in cols}
    lines = [title] if title else []
    lines.append("  ".join(c.ljust(width[c]) if c in left else c.rjust(width[c]) for c in cols))
    prev = None
    for row in rows:
        cells = []
        for c in cols:
            v = _fmt(row.get(c, ""))
            if c == "set" and row["set"] == prev:
                v = ""
            cells.append(v.ljust(width[c]) if c in left else v.rjust(width[c]))
        prev = row["set"]
        lines.append("  ".join(cells))
    n_folds = len(results[0].kfold.accuracies)
    lines.append(
        f"accuracy: mean and std over {n_folds} contiguous folds (threshold chosen on the other "
        f"folds); embedding = image + flip, L2-normalised."
    )
    return "\n".join(lines)


def save_bin(results: Sequence[PairSetResult], out: str | os.PathLike[str], info: dict[str, Any]) -> list[Path]:
    """Write ``results.json`` (per set and exit, fold accuracies included) and ``results.csv``."""
    sets: dict[str, Any] = {}
    for r in results:
        entry = sets.setdefault(r.name, {"n_pairs": r.n_pairs, "exits": []})
        entry["exits"].append(r.as_dict())
    return _write_results(out, {"info": info, "sets": sets}, bin_rows(results))


def plot_bin(results: Sequence[PairSetResult], out: str | os.PathLike[str], title: str = "") -> list[Path]:
    """``accuracy_vs_cost.png``: accuracy (mean, std bars) against relative FLOPs, a line per set."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    have_cost = _flop_ratios(results) is not None
    fig, ax = _figure()
    for name in dict.fromkeys(r.name for r in results):
        rs = [r for r in results if r.name == name]
        xs: list[float] = (_flop_ratios(rs) or []) if have_cost else [float(r.exit) for r in rs]
        ys = [r.kfold.mean * 100 for r in rs]
        es = [r.kfold.std * 100 for r in rs]
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=name)
        for x, y, r in zip(xs, ys, rs):
            ax.annotate(str(r.exit), (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_xlabel("relative FLOPs (full model = 1)" if have_cost else "exit (block)")
    ax.set_ylabel("10-fold accuracy (%)" if results and len(results[0].kfold.accuracies) == 10 else "accuracy (%)")
    ax.set_title(f"Accuracy against cost {title}".strip(), fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path = folder / "accuracy_vs_cost.png"
    fig.savefig(path, dpi=120)
    return [path]
