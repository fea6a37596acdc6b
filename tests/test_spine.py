"""What the package redesign promises: an import graph without cycles, evaluation without
torch, one feature-store owner, library functions for the commands, logging not printing."""

from __future__ import annotations

import ast
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import vitfree
from vitfree import _core
from vitfree.costs import ExitCost
from vitfree.errors import (
    BinFormatError,
    CheckpointError,
    IJBFormatError,
    InputError,
    InputTypeError,
    StoreError,
    VitfreeError,
)
from vitfree.ijb import score_pairs
from vitfree.store import FeatureStore, Manifest, load_feature_sets, write_feature_store

PACKAGE = Path(vitfree.__file__).parent


@pytest.fixture(scope="module")
def ijb_feature_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """IJB-C-format meta files and a two-exit feature store of a small synthetic set."""
    from vitfree.synthetic import ijb_features, write_ijb_meta

    root = tmp_path_factory.mktemp("spine")
    data = ijb_features(scale=0.003, dim=16, seed=5, flip=True)
    write_ijb_meta(data, root / "data", "IJBC")
    noisy = data.feats + np.random.default_rng(1).normal(scale=10.0, size=data.feats.shape)
    write_feature_store(
        root / "features",
        [(6, noisy.astype(np.float32), None), (12, data.feats, data.flip_feats)],
        Manifest(exits=[], costs={6: ExitCost(6, flop_ratio=0.5), 12: ExitCost(12, flop_ratio=1.0)}),
    )
    return root


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _runtime_imports(path: Path, name: str) -> set[str]:
    """vitfree modules imported by ``path`` at any place that runs (functions included),
    except ``if TYPE_CHECKING:`` blocks, which only the type checker reads, and a module-level
    ``__getattr__``, which only re-exports names that moved away (for old imports) and is
    not used by the module's own code."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__" and node in tree.body:
            return
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("vitfree"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            if mod.startswith("vitfree"):
                found.add(mod)
                # "from vitfree import pipelines": the names may be modules themselves
                found.update(f"{mod}.{a.name}" for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        deps = set()
        for mod in _runtime_imports(path, name):
            # a module imports its packages' __init__ too, but those re-export, not depend
            while mod and mod not in files:
                mod = mod.rpartition(".")[0]
            if mod and mod != name and not name.startswith(mod + "."):
                deps.add(mod)
        graph[name] = deps
    return graph


def test_no_import_cycle_in_the_package() -> None:
    graph = _graph()
    # re-exporting package __init__ files are leaves of nothing: skip edges *into* them
    inits = {n for n in graph if (PACKAGE.parent / n.replace(".", "/") / "__init__.py").exists()}
    edges = {n: {d for d in deps if d not in inits} for n, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for d in sorted(edges.get(n, ())):
            if state.get(d) == 1:
                cycle = stack[stack.index(d) :] + [d]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if d not in state:
                dfs(d)
        stack.pop()
        state[n] = 2

    for n in sorted(edges):
        if n not in state:
            dfs(n)
    # and the model layer in particular imports nothing that imports it back
    assert "vitfree.models.checkpoint" not in graph["vitfree.models.vit"]
    assert "vitfree.models.vit" not in graph["vitfree.models.costs"]
    assert "vitfree.models.vit" not in graph["vitfree.models.files"]


def test_the_cycle_check_can_fail(tmp_path: Path) -> None:
    a = tmp_path / "a.py"
    a.write_text("def f():\n    from vitfree.models import vit\n")
    assert "vitfree.models.vit" in _runtime_imports(a, "vitfree.models.costs")
    c = tmp_path / "c.py"
    c.write_text("import vitfree.store\ndef __getattr__(name):\n    from vitfree import faces\n")
    assert _runtime_imports(c, "vitfree.data.ijb") == {"vitfree.store"}
    b = tmp_path / "b.py"
    b.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import vitfree.models.vit\n")
    assert _runtime_imports(b, "vitfree.models.costs") == set()


def test_eval_features_imports_neither_torch_nor_cv2(ijb_feature_root: Path, tmp_path: Path) -> None:
    root = ijb_feature_root
    code = f"""
import sys
from vitfree.cli import main
rc = main(["eval", "features", {str(root / 'features')!r}, "--meta", {str(root / 'data')!r},
           "--out", {str(tmp_path / 'out')!r}])
heavy = sorted(m for m in ("torch", "cv2", "faiss") if m in sys.modules)
print("HEAVY", heavy, rc)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("HEAVY")][0]
    # faiss is needed by 1:N search; torch and OpenCV are not needed at all
    assert "torch" not in line and "cv2" not in line and line.endswith(" 0"), line
    assert (tmp_path / "out" / "results.json").is_file()


def test_import_vitfree_is_light() -> None:
    code = "import sys, vitfree, vitfree.data, vitfree.store, vitfree.evaluate, vitfree.report\n"
    code += "print(sorted(m for m in ('torch', 'cv2', 'matplotlib.pyplot') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_one_root_exception() -> None:
    for cls in (BinFormatError, CheckpointError, IJBFormatError, InputError, StoreError):
        assert issubclass(cls, VitfreeError) and issubclass(cls, ValueError)
    assert issubclass(InputTypeError, VitfreeError) and issubclass(InputTypeError, TypeError)
    # the Rust core raises them too
    with pytest.raises(InputError, match="unknown template id 9"):
        score_pairs(np.ones((2, 3), np.float32), [1, 2], [1], [9])
    with pytest.raises(InputTypeError, match="feats must be float32 or float64"):
        _core.aggregate_templates(np.ones((2, 3), np.int64), np.array([1, 2]), np.array([1, 2]))


def test_manifest_schema_round_trips_and_keeps_unknown_fields(tmp_path: Path) -> None:
    m = Manifest(
        exits=[4, 12],
        n_images=3,
        dim=2,
        costs={4: ExitCost(4, gflops=1.5, flop_ratio=0.34), 12: ExitCost(12, gflops=4.4, speedup=1.0)},
        extra={"assembled_from": {"world_size": 2}},
    )
    m.write(tmp_path)
    raw = json.loads((tmp_path / "manifest.json").read_text())
    assert raw["costs"]["4"] == {"exit": 4, "gflops": 1.5, "flop_ratio": 0.34}
    assert raw["assembled_from"] == {"world_size": 2} and "extra" not in raw
    back = Manifest.read(tmp_path)
    assert back == m
    assert back.costs[12]["speedup"] == 1.0 and "flop_ratio" not in back.costs[12]
    (tmp_path / "manifest.json").write_text(json.dumps({"exits": [1], "costs": {"1": {"gflops": "x"}}}))
    with pytest.raises(StoreError, match="gflops must be a finite number"):
        Manifest.read(tmp_path)


def test_store_resume_refuses_other_settings_and_keeps_progress(tmp_path: Path) -> None:
    rows = np.arange(4, dtype=np.int64)
    m = Manifest(exits=[1], n_images=4, dim=2, model_fingerprint="abc")
    s = FeatureStore.open(tmp_path, rows, m)
    s.write(np.array([0, 1]), {1: np.ones((2, 2), np.float32)}, {1: np.zeros((2, 2), np.float32)})
    s.save()
    s.close()
    again = FeatureStore.open(tmp_path, rows, m)
    assert again.done.tolist() == [True, True, False, False]
    # a second writer (resuming or --overwrite) is refused while the first holds the store
    with pytest.raises(StoreError, match=r"another process \(pid \d+\) is writing the feature store"):
        FeatureStore.open(tmp_path, rows, m, overwrite=True)
    again.close()
    with pytest.raises(StoreError, match="model weights: stored 'abc', now 'xyz'"):
        FeatureStore.open(tmp_path, rows, Manifest(exits=[1], n_images=4, dim=2, model_fingerprint="xyz"))
    with pytest.raises(StoreError, match="is not complete"):
        load_feature_sets(tmp_path)


def test_write_feature_store_streams_exits(tmp_path: Path) -> None:
    def gen():
        for k in (2, 6):
            yield k, np.full((3, 4), k, np.float32), np.full((3, 4), -k, np.float32)

    m = write_feature_store(tmp_path, gen(), Manifest(exits=[], synthetic=True))
    assert m.exits == [2, 6] and m.complete and m.flip and m.synthetic
    sets = load_feature_sets(tmp_path)
    assert [s.exit for s in sets] == [2, 6] and float(sets[1].flip[0, 0]) == -6.0


def test_library_functions_equal_the_commands(ijb_feature_root: Path, tmp_path: Path) -> None:
    from vitfree.cli import main

    root = ijb_feature_root
    ev = vitfree.evaluate_features(root / "features", root / "data", tmp_path / "lib", plots=False, progress=False)
    assert main(["eval", "features", str(root / "features"), "--meta", str(root / "data"), "--out", str(tmp_path / "cli"), "--no-plots"]) == 0
    lib = json.loads((tmp_path / "lib" / "results.json").read_text())
    cli = json.loads((tmp_path / "cli" / "results.json").read_text())
    strip = lambda d: [{k: v for k, v in e.items() if k != "seconds"} for e in d["exits"]]  # noqa: E731
    assert strip(lib) == strip(cli)
    assert "TAR@" in ev.table() and len(ev.results) == len(lib["exits"])


def test_library_logs_and_does_not_switch_the_matplotlib_backend(ijb_feature_root: Path, tmp_path: Path, capsys) -> None:
    import matplotlib

    backend = matplotlib.get_backend()
    root = ijb_feature_root
    vitfree.evaluate_features(root / "features", root / "data", tmp_path / "o", progress=False)
    assert matplotlib.get_backend() == backend
    assert (tmp_path / "o" / "roc.png").stat().st_size > 0
    # INFO notes are quiet in library use, warnings reach stderr
    logger = logging.getLogger("vitfree.pipelines")
    logger.info("an info note")
    logger.warning("a warning note")
    err = capsys.readouterr().err
    assert "a warning note" in err and "an info note" not in err


def test_a_full_disk_is_an_error_before_extraction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import shutil

    rows = np.arange(1000, dtype=np.int64)
    m = Manifest(exits=[1, 2], n_images=1000, dim=512)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage._replace(free=1000))
    with pytest.raises(StoreError, match=r"not enough space in .*need 8192000 bytes .*1000 are free"):
        FeatureStore.open(tmp_path / "a", rows, m)
    monkeypatch.undo()

    def enospc(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("os.posix_fallocate", enospc)
    with pytest.raises(StoreError, match=r"cannot reserve \d+ bytes for .*exit_01.npy .*No space left"):
        FeatureStore.open(tmp_path / "b", rows, m)
    # the lock was released with the error: the folder can be opened again
    monkeypatch.undo()
    FeatureStore.open(tmp_path / "b", rows, m, overwrite=True).close()


def test_a_small_real_file_system_fills_without_a_crash(tmp_path: Path) -> None:
    import os
    import shutil

    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root and mount(8)")
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({out.stderr.decode().strip()})")
    try:
        m = Manifest(exits=[1, 2, 3], n_images=2000, dim=64)  # 3 MB of features > 256 kB
        with pytest.raises(StoreError, match="not enough space|cannot reserve"):
            FeatureStore.open(mnt / "f", np.arange(2000, dtype=np.int64), m)
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
