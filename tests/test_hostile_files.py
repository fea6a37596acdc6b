"""Hostile and broken input files (issue 14): a ``.bin`` or a checkpoint never runs code, and
every bad file is one clear VitfreeError, through the API and through the command line.

A ``.bin`` is read with vitfree's restricted unpickler (:mod:`vitfree.safe_pickle`),
checkpoints with ``torch.load(weights_only=True)`` or safetensors.  Each hostile file here
would create a marker file if anything in it were called; the tests check that it was not.
"""

from __future__ import annotations

import builtins
import copyreg
import io
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ijb_fixtures import aligned_face_image, encode_jpeg, py2_pickle_bytes, write_bin
from safetensors.torch import save_file
from vitfree import models
from vitfree.cli import main
from vitfree.data import BinFormatError, load_bin
from vitfree.errors import CheckpointError
from vitfree.safe_pickle import BIN_GLOBALS, RefusedGlobal, restricted_loads

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------
# hostile objects: each would create ``marker`` when unpickled by pickle.load
# --------------------------------------------------------------------------------------


class _System:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (os.system, (f"touch {self.marker}",))


class _Popen(_System):
    def __reduce__(self) -> Any:
        return (subprocess.Popen, (["touch", str(self.marker)],))


class _Eval(_System):
    def __reduce__(self) -> Any:
        return (builtins.eval, (f"open({str(self.marker)!r}, 'w').close()",))


class _ReduceEx(_System):
    """``__reduce__`` looks harmless; pickle uses ``__reduce_ex__``, which is not."""

    def __reduce__(self) -> Any:
        return (list, ())

    def __reduce_ex__(self, protocol: Any) -> Any:
        return (os.system, (f"touch {self.marker}",))


HOSTILE = {"os.system": _System, "Popen": _Popen, "eval": _Eval, "reduce_ex": _ReduceEx}
ASKS_FOR = {
    "os.system": r"(os|posix|nt)\.system",
    "Popen": r"(subprocess|commands)\.Popen",
    "eval": r"(builtins|__builtin__)\.eval",
    "reduce_ex": r"(os|posix|nt)\.system",
}


@pytest.fixture(scope="module")
def jpgs() -> list[bytes]:
    rng = np.random.default_rng(14)
    return [encode_jpeg(aligned_face_image(rng)) for _ in range(4)]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    model = models.create_model("vit_t", depth=2, embed_dim=32, num_heads=4, num_features=16)
    torch.save(model.state_dict(), path)
    return path


def _hostile_layouts(evil: Any, jpgs: list[bytes]) -> dict[str, Any]:
    return {
        "image": ([evil, jpgs[1]], [True]),
        "flag": ([jpgs[0], jpgs[1]], [evil]),
        "nested-flag": ([jpgs[0], jpgs[1]], [[{"x": (evil,)}]]),
        "whole": evil,
    }


# --------------------------------------------------------------------------------------
# .bin: hostile pickles are refused before anything runs
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(HOSTILE))
@pytest.mark.parametrize("layout", ["image", "flag", "nested-flag", "whole"])
@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_hostile_bin_runs_nothing(
    tmp_path: Path, jpgs: list[bytes], kind: str, layout: str, protocol: int
) -> None:
    marker = tmp_path / "PWNED"
    evil = tmp_path / "lfw.bin"
    obj = _hostile_layouts(HOSTILE[kind](marker), jpgs)[layout]
    evil.write_bytes(pickle.dumps(obj, protocol=protocol))
    with pytest.raises(BinFormatError) as e:
        load_bin(evil)
    msg = str(e.value)
    assert msg.startswith(f"refusing to load {evil}: it asks for ")
    assert msg.endswith("; a .bin holds only images and flags")
    assert __import__("re").search(ASKS_FOR[kind], msg), msg
    assert not marker.exists()


def test_hostile_bin_refusal_is_not_a_fallback(tmp_path: Path, jpgs: list[bytes]) -> None:
    """The refusal is final: the reader does not retry with another encoding and succeed."""
    marker = tmp_path / "PWNED"
    evil = tmp_path / "x.bin"
    # a Python-2 pickle (as insightface's) with a hostile flag spliced into the flag list
    good = py2_pickle_bytes([jpgs[0], jpgs[1]], [True])
    cmd = f"touch {marker}".encode()
    call = b"cos\nsystem\n(X" + struct.pack("<I", len(cmd)) + cmd + b"tR"
    spliced = good.replace(b"\x88e", b"\x88" + call + b"e", 1)
    assert spliced != good
    evil.write_bytes(spliced)
    with pytest.raises(BinFormatError, match=r"it asks for os\.system; a \.bin holds only"):
        load_bin(evil)
    assert not marker.exists()


def test_other_routes_to_a_global_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    cmd = f"touch {marker}".encode()
    routes = {
        # protocol 0 INST: module and name on the opcode line
        "inst": b"(S'" + cmd + b"'\nios\nsystem\n.",
        # protocol 4 STACK_GLOBAL
        "stack_global": b"\x80\x04\x8c\x02os\x8c\x06system\x93\x8c"
        + bytes([len(cmd)])
        + cmd
        + b"\x85R.",
        # OBJ with a class from GLOBAL
        "obj": b"(cos\nsystem\nS'" + cmd + b"'\no.",
    }
    for name, data in routes.items():
        with pytest.raises(RefusedGlobal):
            restricted_loads(data, BIN_GLOBALS)
        p = tmp_path / f"{name}.bin"
        p.write_bytes(data)
        with pytest.raises(BinFormatError, match=r"refusing to load .*it asks for os\.system"):
            load_bin(p)
    # EXT1: the extension registry maps a code to (module, name); still refused by name
    copyreg.add_extension("os", "system", 0xF3)
    try:
        data = b"\x80\x02\x82\xf3S'" + cmd + b"'\n\x85R."
        with pytest.raises(RefusedGlobal, match=r"os\.system"):
            restricted_loads(data, BIN_GLOBALS)
    finally:
        copyreg.remove_extension("os", "system", 0xF3)
    assert not marker.exists()


_RECONSTRUCT = (
    b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R"
)


def test_numpy_globals_cannot_be_misused(tmp_path: Path) -> None:
    """numpy.ndarray is a token, not the class; wrappers refuse object dtypes from raw bytes,
    dtype states that change a dtype's size or flags, and structured dtypes.

    ``numpy.ndarray((1,), object, buffer=b"A" * 8)`` dereferences 0x4141414141414141 (a
    crash, or worse); each attempt is run in a child process so that a regression fails the
    test instead of killing the test run.
    """
    attempts = {
        # REDUCE: numpy.ndarray((1,), dtype("O"), b"AAAAAAAA")
        "reduce": b"\x80\x02cnumpy\nndarray\n(K\x01\x85cnumpy\ndtype\nU\x01O\x85RC\x08AAAAAAAAtR.",
        # NEWOBJ: numpy.ndarray.__new__(numpy.ndarray, ...)
        "newobj": b"\x80\x02cnumpy\nndarray\n(K\x01\x85cnumpy\ndtype\nU\x01O\x85RC\x08AAAAAAAAt\x81.",
        # protocol 5 _frombuffer with an object dtype
        "frombuffer": b"\x80\x05cnumpy._core.numeric\n_frombuffer\n(C\x08AAAAAAAAcnumpy\ndtype\n"
        b"U\x01O\x85RK\x01\x85U\x01CtR.",
        # scalar of an object dtype from bytes
        "scalar": b"\x80\x02cnumpy.core.multiarray\nscalar\n(cnumpy\ndtype\nU\x01O\x85RC\x08AAAAAAAAtR.",
        # _reconstruct with a subtype other than numpy.ndarray
        "reconstruct": b"\x80\x02cnumpy.core.multiarray\n_reconstruct\n(cnumpy\ndtype\nK\x00\x85U\x01btR.",
        # _codecs.encode with another codec
        "codecs": b"\x80\x02c_codecs\nencode\n(X\x02\x00\x00\x00hiX\x06\x00\x00\x00base64tR.",
        # bytearray(10**12)
        "bytearray": b"\x80\x02c__builtin__\nbytearray\n(\x8a\x06\x00\x10\xa5\xd4\xe8\x00tR.",
        # a uint64 dtype whose state sets the "holds objects" flags, then raw bytes as its data
        "dtype-flags": _RECONSTRUCT
        + b"(K\x01K\x01\x85cnumpy\ndtype\nU\x02u8K\x00K\x01\x87R"
        + b"(K\x03U\x01<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK?tb\x89C\x08AAAAAAAAtb.",
        # an S4 array, then a second BUILD of its dtype making the items 1000 bytes long
        "dtype-resize": b"("
        + _RECONSTRUCT
        + b"(K\x01K\x02\x85cnumpy\ndtype\nU\x02S4K\x00K\x01\x87Rq\x01"
        + b"(K\x03U\x01|NNNK\x04K\x01K\x00tb\x89C\x08abcdefghtb"
        + b"h\x01(K\x03U\x01|NNNM\xe8\x03K\x01K\x00tbl.",
        # a structured dtype spec instead of a plain type string
        "dtype-fields": b"\x80\x02cnumpy\ndtype\n(]U\x01aU\x01O\x86atR.",
        # a second BUILD of an array that numpy already filled
        "array-twice": _RECONSTRUCT
        + b"q\x05(K\x01K\x01\x85cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R\x89C\x01\x01tb"
        + b"h\x05(K\x01K\x02\x85cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R\x89C\x02\x01\x02tb.",
    }
    # a structured array, pickled by numpy itself
    rec = np.zeros(2, dtype=[("a", "O"), ("b", "u1")])
    attempts["structured"] = pickle.dumps(rec, protocol=2)
    for name, data in attempts.items():
        p = tmp_path / f"{name}.bin"
        p.write_bytes(data)
        code = (
            "import sys\n"
            "from vitfree.data import load_bin, BinFormatError\n"
            "try:\n"
            f"    load_bin({str(p)!r})\n"
            "except BinFormatError as e:\n"
            "    print('REFUSED', e)\n"
            "    sys.exit(0)\n"
            "print('LOADED')\n"
            "sys.exit(1)\n"
        )
        r = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
        )
        assert r.returncode == 0 and "REFUSED" in r.stdout, (name, r.returncode, r.stdout, r.stderr)
        assert "not a readable pickle" in r.stdout, (name, r.stdout)


def test_shared_numpy_dtype_is_never_changed() -> None:
    # dtype("u8", align=False, copy=False) is numpy's shared descriptor; the BUILD after it
    # would change the byte order of every uint64 array in the process.
    data = (
        b"\x80\x02cnumpy\ndtype\nU\x02u8\x89\x89\x87R"
        b"(K\x03U\x01>NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb."
    )
    got = restricted_loads(data, BIN_GLOBALS)
    assert got is not np.dtype("u8") and got.byteorder == ">"
    assert np.dtype("u8").byteorder == "=" and np.arange(3, dtype="u8").tolist() == [0, 1, 2]


def test_memo_index_bomb_costs_nothing(tmp_path: Path) -> None:
    # LONG_BINPUT 2**31 - 1: the C unpickler would allocate and clear a 16 GiB memo table.
    p = tmp_path / "memo.bin"
    p.write_bytes(b"\x80\x02Nr\xff\xff\xff\x7f.")
    with pytest.raises(BinFormatError, match="expected a pickled"):
        load_bin(p)
    p.write_bytes(b"\x80\x02]r\xff\xff\xff\x7f]r\xfe\xff\xff\x7f\x86.")
    assert len(load_bin(p)) == 0


def test_hostile_image_header_is_a_bin_error(tmp_path: Path) -> None:
    """A PNG header claiming 200000 x 200000 pixels: OpenCV raises; vitfree names the image."""
    import zlib

    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 200000, 200000, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 10))
        + chunk(b"IEND", b"")
    )
    p = tmp_path / "big.bin"
    p.write_bytes(pickle.dumps(([png, png], [True])))
    with pytest.raises(BinFormatError, match="cannot decode image 0"):
        load_bin(p)


# --------------------------------------------------------------------------------------
# .bin: every real layout still loads, with identical images
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "protocol,blob_type",
    [(2, "bytes")] + [(p, b) for p in (3, 4, 5) for b in ("bytes", "ndarray")],
)
def test_real_bins_still_load(tmp_path: Path, protocol: int, blob_type: str) -> None:
    path = tmp_path / "lfw.bin"
    exp = write_bin(path, n_pairs=3, protocol=protocol, seed=protocol, blob_type=blob_type)
    got = load_bin(path)
    np.testing.assert_array_equal(got.images, exp["images"])
    np.testing.assert_array_equal(got.issame, exp["issame"])


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_resaved_layouts_load(tmp_path: Path, jpgs: list[bytes], protocol: int) -> None:
    flags = [True, False]
    ref = load_bin(write_bin(tmp_path / "ref.bin", n_pairs=0)["path"])  # empty set loads
    assert len(ref) == 0
    layouts = {
        "bytes": (jpgs, flags),
        "tuples": (tuple(jpgs), tuple(flags)),
        "bytearray": ([bytearray(j) for j in jpgs], flags),
        "ndarray-images": ([np.frombuffer(j, np.uint8) for j in jpgs], flags),
        "numpy-bool-flags": (jpgs, np.array(flags)),
        "numpy-bool-scalars": (jpgs, [np.bool_(f) for f in flags]),
        "int-flags": (jpgs, [1, 0]),
        "numpy-int-flags": (jpgs, np.array([1, 0], dtype=np.int64)),
        "object-array-images": (np.array(jpgs, dtype=object), flags),
        "bytes-array-images": (np.array(jpgs), np.array(flags)),
    }
    expected = None
    for name, obj in layouts.items():
        p = tmp_path / f"{name}.bin"
        p.write_bytes(pickle.dumps(obj, protocol=protocol))
        got = load_bin(p)
        if expected is None:
            expected = got.images
        np.testing.assert_array_equal(got.images, expected, err_msg=name)
        assert got.issame.tolist() == flags, name


def _py2_ndarray(raw: bytes, typestr: bytes) -> bytes:
    """The opcodes Python 2's cPickle writes for a 1-D numpy array (numpy 1.x names)."""
    n = len(raw) // np.dtype(typestr.decode()).itemsize
    return (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R"
        + b"(K\x01J"
        + struct.pack("<i", n)
        + b"\x85cnumpy\ndtype\nU"
        + bytes([len(typestr)])
        + typestr
        + b"K\x00K\x01\x87R(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
        + b"\x89T"
        + struct.pack("<i", len(raw))
        + raw
        + b"tb"
    )


def test_python2_numpy_pickle_loads(tmp_path: Path, jpgs: list[bytes]) -> None:
    images = b"(" + b"".join(_py2_ndarray(j, b"u1") for j in jpgs[:2]) + b"l"
    flags = _py2_ndarray(b"\x01", b"b1")
    p = tmp_path / "py2np.bin"
    p.write_bytes(b"\x80\x02" + images + flags + b"\x86.")
    got = load_bin(p)
    ref = tmp_path / "ref.bin"
    ref.write_bytes(py2_pickle_bytes(jpgs[:2], [True]))
    np.testing.assert_array_equal(got.images, load_bin(ref).images)
    assert got.issame.tolist() == [True]


# --------------------------------------------------------------------------------------
# the command line: rc 2, one line, no traceback
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_cli_refuses_hostile_bin(
    tmp_path: Path, jpgs: list[bytes], tiny_ckpt: Path, kind: str, capsys: pytest.CaptureFixture
) -> None:
    marker = tmp_path / "PWNED"
    evil = tmp_path / "lfw.bin"
    evil.write_bytes(pickle.dumps(([jpgs[0], jpgs[1]], [HOSTILE[kind](marker)]), protocol=4))
    capsys.readouterr()
    rc = main(["eval", "bin", str(evil), "--model", str(tiny_ckpt), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("vitfree: error:")]
    assert len(lines) == 1 and f"refusing to load {evil}: it asks for" in lines[0], err
    assert not marker.exists()


# --------------------------------------------------------------------------------------
# checkpoints: bad files are one CheckpointError
# --------------------------------------------------------------------------------------


def _tiny_sd() -> dict[str, torch.Tensor]:
    model = models.create_model("vit_t", depth=2, embed_dim=32, num_heads=4, num_features=16)
    return model.state_dict()


def test_empty_checkpoint(tmp_path: Path) -> None:
    for name in ("empty.pt", "empty.pth", "empty.safetensors"):
        p = tmp_path / name
        p.write_bytes(b"")
        for fn in (models.read_state_dict, models.load, models.read_exit_heads):
            with pytest.raises(CheckpointError, match=r"is empty \(0 bytes\)"):
                fn(p)


def test_random_bytes_are_not_a_checkpoint(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    p = tmp_path / "random.pt"
    p.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(CheckpointError, match="is not a PyTorch or safetensors checkpoint") as e:
        models.load(p)
    assert "beyond tensors" not in str(e.value) and "\n" not in str(e.value)
    p.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError, match="plain Python pickle"):
        models.read_state_dict(p)
    st_file = tmp_path / "st.pt"
    save_file({"a": torch.zeros(2)}, str(st_file))
    with pytest.raises(CheckpointError, match="looks like a safetensors file"):
        models.read_state_dict(st_file)
    with pytest.raises(CheckpointError, match="is a directory"):
        models.load(tmp_path)
    buf = io.BytesIO()
    torch.save(_tiny_sd(), buf)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(CheckpointError, match="not a readable PyTorch file") as e:
        models.load(truncated)
    assert "\n" not in str(e.value)


def test_hostile_checkpoint_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    for protocol, legacy in ((2, False), (2, True)):
        p = tmp_path / "evil.pt"
        torch.save(
            {"w": torch.zeros(1), "x": _System(marker)},
            p,
            pickle_protocol=protocol,
            _use_new_zipfile_serialization=not legacy,
        )
        with pytest.raises(
            CheckpointError, match=r"beyond tensors \(it asks for (posix|os)\.system"
        ):
            models.load(p)
    plain = tmp_path / "plain.pt"
    plain.write_bytes(pickle.dumps(_System(marker)))
    with pytest.raises(CheckpointError, match="plain Python pickle"):
        models.load(plain)
    assert not marker.exists()


@pytest.mark.parametrize("dtype", [torch.int64, torch.complex64, torch.bool, torch.int8])
def test_non_float_weights(tmp_path: Path, dtype: torch.dtype) -> None:
    sd = _tiny_sd()
    first = next(k for k, v in sd.items() if v.is_floating_point())
    bad = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in sd.items()}
    p = tmp_path / "bad.pt"
    torch.save(bad, p)
    name = str(dtype).replace("torch.", "")
    with pytest.raises(CheckpointError, match=rf"tensor {first} has dtype {name}, but the model"):
        models.load(p)
    # one bad tensor deep inside: that key is named
    one = dict(sd)
    one["blocks.1.mlp.fc2.weight"] = one["blocks.1.mlp.fc2.weight"].to(dtype)
    torch.save(one, p)
    with pytest.raises(
        CheckpointError, match=rf"tensor blocks\.1\.mlp\.fc2\.weight has dtype {name}"
    ):
        models.load(p)


def test_non_float_exit_heads(tmp_path: Path) -> None:
    model = models.create_model("vit_t", depth=2, embed_dim=32, num_heads=4, num_features=16)
    head = {k: v.clone() for k, v in model.new_exit_head().state_dict().items()}
    key = next(k for k, v in head.items() if v.is_floating_point())
    head[key] = head[key].to(torch.int64)
    p = tmp_path / "heads.pt"
    torch.save({"format": "vitfree.exit_heads", "version": 1, "exits": {1: head}}, p)
    with pytest.raises(CheckpointError, match=rf"tensor exits\.1\.{key} has dtype int64"):
        model.load_exit_heads(p)
    sd = dict(model.state_dict())
    sd.update({f"exit_heads.1.{k}": v for k, v in head.items()})
    torch.save(sd, tmp_path / "with_heads.pt")
    with pytest.raises(CheckpointError, match=rf"tensor exit_heads\.1\.{key} has dtype int64"):
        models.load(tmp_path / "with_heads.pt")
    sd = dict(model.state_dict())
    sd["exit_heads.one.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "bad_key.pt")
    with pytest.raises(CheckpointError, match=r"key 'exit_heads\.one\.weight' is not exit_heads"):
        models.load(tmp_path / "bad_key.pt")


def _bad_checkpoints(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    sd = _tiny_sd()
    out: dict[str, tuple[Path, str]] = {}
    p = tmp_path / "empty.pt"
    p.write_bytes(b"")
    out["empty"] = (p, r"is empty \(0 bytes\)")
    p = tmp_path / "random.pt"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 999, dtype=np.uint8).tobytes())
    out["random"] = (p, "is not a PyTorch or safetensors checkpoint")
    for dtype in (torch.int64, torch.complex64):
        p = tmp_path / f"{dtype}.pt"
        torch.save({k: (v.to(dtype) if v.is_floating_point() else v) for k, v in sd.items()}, p)
        out[str(dtype)] = (p, f"has dtype {str(dtype).replace('torch.', '')}")
    return out


def test_cli_bad_checkpoints(
    tmp_path: Path, jpgs: list[bytes], capsys: pytest.CaptureFixture
) -> None:
    good_bin = tmp_path / "lfw.bin"
    good_bin.write_bytes(py2_pickle_bytes(jpgs, [True, False]))
    for name, (ckpt, match) in _bad_checkpoints(tmp_path).items():
        capsys.readouterr()
        rc = main(
            ["eval", "bin", str(good_bin), "--model", str(ckpt), "--out", str(tmp_path / "o")]
        )
        err = capsys.readouterr().err
        assert rc == 2, name
        assert "Traceback" not in err, (name, err)
        lines = [ln for ln in err.splitlines() if ln.startswith("vitfree: error:")]
        assert len(lines) == 1 and __import__("re").search(match, lines[0]), (name, err)


def test_cli_process_bad_checkpoint(tmp_path: Path, jpgs: list[bytes]) -> None:
    """The real command in its own process: rc 2, one error line, no traceback."""
    good_bin = tmp_path / "x.bin"
    good_bin.write_bytes(py2_pickle_bytes(jpgs, [True, False]))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"")
    r = subprocess.run(
        [sys.executable, "-m", "vitfree", "eval", "bin", str(good_bin), "--model", str(bad)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert f"vitfree: error: {bad} is empty (0 bytes)" in r.stderr


# --------------------------------------------------------------------------------------
# property: random bytes and random pickles give a VitfreeError or a result, never code
# --------------------------------------------------------------------------------------

_leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=24)
)
_values = st.recursive(
    _leaves,
    lambda kids: (
        st.lists(kids, max_size=4)
        | st.tuples(kids, kids)
        | st.dictionaries(st.text(max_size=4) | st.integers(0, 9), kids, max_size=3)
    ),
    max_leaves=12,
)
_random_pickles = st.builds(
    lambda v, proto: pickle.dumps(v, protocol=proto), _values, st.integers(0, 5)
)
# fmt: off
_OPCODES = [
    b"\x80\x02", b"\x80\x04", b"(", b"]", b")", b"}", b"N", b"\x88", b"\x89", b"a", b"e",
    b"t", b"\x85", b"\x86", b"\x87", b"l", b"d", b"s", b"u", b"R", b"b", b"\x81", b"\x93",
    b"0", b"1", b"2", b".", b"K\x01", b"K\x00", b"J\xff\xff\xff\x7f", b"q\x00", b"h\x00",
    b"r\xff\xff\xff\x7f", b"j\xff\xff\xff\x7f", b"C\x03abc", b"U\x03abc", b"X\x01\x00\x00\x00O",
    b"\x8c\x02os", b"\x8c\x06system", b"\x95\x05\x00\x00\x00\x00\x00\x00\x00",
    b"cos\nsystem\n", b"cbuiltins\neval\n", b"c__builtin__\nbytearray\n", b"c_codecs\nencode\n",
    b"cnumpy\nndarray\n", b"cnumpy\ndtype\n", b"cnumpy.core.multiarray\n_reconstruct\n",
    b"cnumpy._core.multiarray\nscalar\n", b"cnumpy._core.numeric\n_frombuffer\n",
    b"U\x01O", b"U\x02u1", b"U\x01b", b"X\x06\x00\x00\x00latin1", b"\x8a\x06\x00\x10\xa5\xd4\xe8\x00",
]
# fmt: on
_soup = st.lists(
    st.sampled_from(_OPCODES) | st.binary(min_size=1, max_size=3), min_size=1, max_size=24
).map(b"".join)
_any_bytes = st.binary(max_size=256) | _random_pickles | _soup


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile")


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=_any_bytes)
def test_load_bin_never_raises_anything_else(scratch: Path, data: bytes) -> None:
    p = scratch / "fuzz.bin"
    p.write_bytes(data)
    try:
        load_bin(p)
    except BinFormatError:
        pass
    assert not Path("PWNED").exists() and not (scratch / "PWNED").exists()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=_any_bytes, container=st.sampled_from(["raw.pt", "raw.safetensors", "zip.pt"]))
def test_checkpoint_readers_never_raise_anything_else(
    scratch: Path, data: bytes, container: str
) -> None:
    p = scratch / container
    if container == "zip.pt":  # the bytes as the pickle of a torch.save zip archive
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("archive/data.pkl", data)
            z.writestr("archive/byteorder", "little")
            z.writestr("archive/version", "3\n")
        p.write_bytes(buf.getvalue())
    else:
        p.write_bytes(data)
    for fn in (models.read_state_dict, models.load, models.read_exit_head_specs):
        try:
            fn(p)
        except CheckpointError:
            pass
    assert not Path("PWNED").exists()
