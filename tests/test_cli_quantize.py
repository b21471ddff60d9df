"""``amalia-edge quantize`` end to end through the CLI: bad input gives one line and leaves
nothing behind; re-runs reuse by hash; ``--force`` rebuilds; a killed run leaves no half file
and the next run completes."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from amalia_edge.cli import main
from tests import factory
from tests.plugins.models import HAVE_LLAMA_CPP

REPO = Path(__file__).resolve().parents[1]


def _hashes(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def _assert_clean_failure(
    capsys: pytest.CaptureFixture[str],
    src: Path,
    out: Path,
    *extra: str,
    expect: str,
    out_may_exist: bool = False,
) -> str:
    """Run the CLI expecting one clean error line; OUT is not even created unless the
    failure can only happen while writing (``out_may_exist``), and then it stays empty."""
    before = _hashes(src) if src.is_dir() else {}
    rc, stdout, err = _run(capsys, "quantize", str(src), "--out", str(out), *extra)
    assert rc != 0
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("amalia-edge: error: "), err
    assert expect.lower() in lines[0].lower(), lines[0]
    assert stdout == ""
    assert _files(out) == [], "something was written to OUT"
    assert out_may_exist or not out.exists(), "OUT was created for an input error"
    if src.is_dir():
        assert _hashes(src) == before, "the source was modified"
    return lines[0]


def _edit_header(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    edit(header)
    path.write_bytes(factory.raw_safetensors(header, data))


def _last_tensor(header: dict[str, Any]) -> str:
    return max(
        (k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][1]
    )


# -- bad input ------------------------------------------------------------------------------


@pytest.fixture
def fresh(tmp_path: Path, make_checkpoint: Any) -> Callable[..., Path]:
    def build(**spec: Any) -> Path:
        return Path(make_checkpoint.fresh(tmp_path / "ckpt", **spec))

    return build


def test_missing_config(capsys: Any, fresh: Callable[..., Path], tmp_path: Path) -> None:
    src = fresh()
    (src / "config.json").unlink()
    _assert_clean_failure(capsys, src, tmp_path / "out", expect="config.json")


def test_malformed_config(capsys: Any, fresh: Callable[..., Path], tmp_path: Path) -> None:
    src = fresh()
    (src / "config.json").write_text('{"architectures": ["LlamaForCausalLM"], ', "utf-8")
    _assert_clean_failure(capsys, src, tmp_path / "out", expect="json")


def test_truncated_safetensors(capsys: Any, fresh: Callable[..., Path], tmp_path: Path) -> None:
    src = fresh()
    st = src / "model.safetensors"
    st.write_bytes(st.read_bytes()[: st.stat().st_size // 2])
    _assert_clean_failure(capsys, src, tmp_path / "out", expect="model.safetensors")


@pytest.mark.parametrize("damage", ["overlap", "past_end", "dtype_shape"])
def test_bad_safetensors_offsets(
    capsys: Any, fresh: Callable[..., Path], tmp_path: Path, damage: str
) -> None:
    src = fresh()
    st = src / "model.safetensors"

    def edit(h: dict[str, Any]) -> None:
        last = _last_tensor(h)
        start, end = h[last]["data_offsets"]
        if damage == "overlap":
            h[last]["data_offsets"] = [start - 8, end - 8]
        elif damage == "past_end":
            h[last]["data_offsets"] = [start, end + 4096]
        else:
            h[last]["shape"] = [h[last]["shape"][0] + 1, *h[last]["shape"][1:]]

    _edit_header(st, edit)
    _assert_clean_failure(capsys, src, tmp_path / "out", expect="model.safetensors")


def test_absurd_header_length(capsys: Any, fresh: Callable[..., Path], tmp_path: Path) -> None:
    src = fresh()
    st = src / "model.safetensors"
    raw = bytearray(st.read_bytes())
    raw[:8] = (1 << 60).to_bytes(8, "little")
    st.write_bytes(bytes(raw))
    _assert_clean_failure(capsys, src, tmp_path / "out", expect="header")


def test_missing_shard(capsys: Any, fresh: Callable[..., Path], tmp_path: Path) -> None:
    src = fresh(dtype="BF16", shards=3)
    (src / "model-00002-of-00003.safetensors").unlink()
    _assert_clean_failure(capsys, src, tmp_path / "out", expect="model-00002-of-00003")


def test_tensor_in_index_but_absent(
    capsys: Any, fresh: Callable[..., Path], tmp_path: Path
) -> None:
    src = fresh(dtype="BF16", shards=2)
    index = src / "model.safetensors.index.json"
    doc = json.loads(index.read_text("utf-8"))
    doc["weight_map"]["model.layers.9.mlp.up_proj.weight"] = "model-00001-of-00002.safetensors"
    index.write_text(json.dumps(doc), "utf-8")
    _assert_clean_failure(capsys, src, tmp_path / "out", expect="model.layers.9.mlp.up_proj")


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt", "consolidated.pth"])
def test_pickle_checkpoint_is_refused_unopened(capsys: Any, tmp_path: Path, name: str) -> None:
    src = tmp_path / "pickled"
    src.mkdir()
    (src / "config.json").write_text(
        json.dumps({"architectures": ["LlamaForCausalLM"], "vocab_size": 8}), "utf-8"
    )
    # Not a real pickle: any attempt to unpickle it would fail loudly, not refuse politely.
    (src / name).write_bytes(b"\x80\x04this would run code")
    line = _assert_clean_failure(capsys, src, tmp_path / "out", expect="safetensors")
    assert "pickle" in line.lower()
    _assert_clean_failure(capsys, src / name, tmp_path / "out2", expect="safetensors")


def test_unsupported_architecture(capsys: Any, fresh: Callable[..., Path], tmp_path: Path) -> None:
    src = fresh(config_overrides={"architectures": ["GPT2LMHeadModel"]})
    line = _assert_clean_failure(capsys, src, tmp_path / "out", expect="GPT2LMHeadModel")
    assert "LlamaForCausalLM" in line and "MistralForCausalLM" in line


def test_vocab_size_disagrees_with_embedding(
    capsys: Any, fresh: Callable[..., Path], tmp_path: Path
) -> None:
    src = fresh()
    cfg = json.loads((src / "config.json").read_text("utf-8"))
    cfg["vocab_size"] += 7
    (src / "config.json").write_text(json.dumps(cfg), "utf-8")
    _assert_clean_failure(capsys, src, tmp_path / "out", expect="vocab")


def test_unknown_quant_type_lists_valid_ones(
    capsys: Any, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    line = _assert_clean_failure(
        capsys, tiny_checkpoint, tmp_path / "out", "--gguf", "f16,q4_k_x", expect="q4_k_x"
    )
    for valid in ("Q4_K_M", "IQ2_XXS", "TQ1_0", "BF16"):
        assert valid in line


def test_imatrix_type_without_imatrix_refuses(
    capsys: Any, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    if not HAVE_LLAMA_CPP:
        pytest.skip("llama-cpp-python is not installed")
    _assert_clean_failure(
        capsys,
        tiny_checkpoint,
        tmp_path / "out",
        "--gguf",
        "f16,iq2_xxs",
        "--imatrix",
        "none",
        expect="importance matrix",
    )


def test_bad_imatrix_file(capsys: Any, tiny_checkpoint: Path, tmp_path: Path) -> None:
    bogus = tmp_path / "imatrix.dat"
    bogus.write_bytes(b"\x01\x00\x00\x00legacy")
    _assert_clean_failure(
        capsys, tiny_checkpoint, tmp_path / "out", "--imatrix", str(bogus), expect="imatrix"
    )


def test_unwritable_output_dir(
    capsys: Any, tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "ro"
    out.mkdir()
    if os.geteuid() != 0:
        out.chmod(0o500)
    else:  # root ignores permission bits: make the first write in OUT fail as EACCES would

        def denied(*a: Any, **k: Any) -> Any:
            raise PermissionError(errno.EACCES, "Permission denied")

        monkeypatch.setattr(tempfile, "mkstemp", denied)
    try:
        _assert_clean_failure(
            capsys, tiny_checkpoint, out, "--gguf", "f16", expect="writable", out_may_exist=True
        )
    finally:
        out.chmod(0o700)
    # An output path below a regular file cannot be created either.
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _assert_clean_failure(capsys, tiny_checkpoint, blocker / "out", "--gguf", "f16", expect="out")


def test_disk_full_mid_write(
    capsys: Any, tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from amalia_edge.convert import gguf as gguf_mod

    real = gguf_mod._write
    calls = {"n": 0}

    def full(fh: Any, data: Any) -> None:
        calls["n"] += 1
        if calls["n"] > 6:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fh, data)

    monkeypatch.setattr(gguf_mod, "_write", full)
    out = tmp_path / "out"
    _assert_clean_failure(
        capsys, tiny_checkpoint, out, "--gguf", "f16", expect="disk filled up", out_may_exist=True
    )
    monkeypatch.setattr(gguf_mod, "_write", real)
    rc, _, _ = _run(capsys, "quantize", str(tiny_checkpoint), "--out", str(out), "--gguf", "f16")
    assert rc == 0
    assert _files(out) == ["Tiny-PT-F16.gguf", "manifest.json"]


# -- re-runs, --force, --json ----------------------------------------------------------------


def _types() -> str:
    return "F16,q8_0" + (",Q4_K_M" if HAVE_LLAMA_CPP else "")


def test_rerun_reuses_by_hash_and_force_rebuilds(
    capsys: Any, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = (
        "quantize",
        str(tiny_checkpoint),
        "--out",
        str(out),
        "--gguf",
        _types(),
        "--threads",
        "2",
    )
    rc, stdout, _ = _run(capsys, *args, "--imatrix", "none")
    assert rc == 0
    assert "built" in stdout and "reused" not in stdout
    ggufs = sorted(out.glob("*.gguf"))
    assert [p.name for p in ggufs] == sorted(
        f"Tiny-PT-{q.upper()}.gguf" for q in _types().split(",")
    )
    stamps = {p.name: p.stat().st_mtime_ns for p in ggufs}

    rc, stdout, _ = _run(capsys, *args, "--imatrix", "none")
    assert rc == 0
    assert "built" not in stdout
    assert {p.name: p.stat().st_mtime_ns for p in ggufs} == stamps

    # A damaged file is noticed by its hash and rebuilt; the others are left alone.
    victim = out / "Tiny-PT-Q8_0.gguf"
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    os.utime(victim, ns=(stamps[victim.name], stamps[victim.name]))
    rc, stdout, _ = _run(capsys, *args, "--imatrix", "none")
    assert rc == 0
    rows = {ln.split()[1]: ln.split()[-2] for ln in stdout.splitlines()[1:-1]}
    assert rows["Q8_0"] == "built" and rows["F16"] == "reused"

    rc, stdout, _ = _run(capsys, *args, "--imatrix", "none", "--force", "--json")
    assert rc == 0
    manifest = json.loads(stdout)
    assert {a["quant"] for a in manifest["artifacts"]} == {q.upper() for q in _types().split(",")}
    for p in ggufs:
        assert p.stat().st_mtime_ns != stamps[p.name], p.name
    for a in manifest["artifacts"]:
        f = out / a["file"]
        assert a["size"] == f.stat().st_size
        assert a["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest()
        assert a["params"] == 1967360
        assert a["source_fingerprint"] == manifest["source"]["fingerprint"]
        assert a["versions"]["amalia_edge"] and a["versions"]["gguf"]
    bpw = {a["quant"]: a["bpw"] for a in manifest["artifacts"]}
    assert bpw["F16"] == pytest.approx(16.0, abs=0.1)
    assert bpw["Q8_0"] == pytest.approx(8.5, abs=0.1)


def test_type_names_are_case_insensitive_and_defaults_apply(
    capsys: Any, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    rc, stdout, _ = _run(
        capsys, "quantize", str(tiny_checkpoint), "--out", str(out), "--gguf", "Bf16,bF16", "--json"
    )
    assert rc == 0
    assert [a["quant"] for a in json.loads(stdout)["artifacts"]] == ["BF16"]
    if HAVE_LLAMA_CPP:
        out2 = tmp_path / "out2"
        rc, _, _ = _run(
            capsys, "quantize", str(tiny_checkpoint), "--out", str(out2), "--imatrix", "none"
        )
        assert rc == 0
        assert _files(out2) == sorted(
            ["Tiny-PT-F16.gguf", "Tiny-PT-Q8_0.gguf", "Tiny-PT-Q4_K_M.gguf", "manifest.json"]
        )


# -- interrupted runs -----------------------------------------------------------------------


def test_exception_mid_write_leaves_no_half_file(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from amalia_edge.convert import gguf as gguf_mod
    from amalia_edge.convert.pipeline import quantize

    real = gguf_mod._write
    calls = {"n": 0}

    def crash(fh: Any, data: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 10:
            raise RuntimeError("simulated crash")
        real(fh, data)

    monkeypatch.setattr(gguf_mod, "_write", crash)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="simulated crash"):
        quantize(tiny_checkpoint, out, "f16", imatrix="none", progress=False)
    assert _files(out) == []
    monkeypatch.setattr(gguf_mod, "_write", real)
    quantize(tiny_checkpoint, out, "f16", imatrix="none", progress=False)
    assert _files(out) == ["Tiny-PT-F16.gguf", "manifest.json"]


KILL_SCRIPT = """
import os, signal, sys
import amalia_edge.convert.gguf as g
real, n = g._write, [0]
def write(fh, data):
    n[0] += 1
    if n[0] == 12:
        os.kill(os.getpid(), signal.SIGKILL)
    real(fh, data)
g._write = write
from amalia_edge.cli import main
sys.exit(main(["quantize", sys.argv[1], "--out", sys.argv[2], "--gguf", "f16,f32"]))
"""


@pytest.mark.slow
def test_sigkill_mid_write_then_rerun_completes(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, str(tiny_checkpoint), str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    left = _files(out)
    assert not any(name.endswith(".gguf") and not name.startswith(".") for name in left), left
    assert "manifest.json" not in left
    assert any(name.startswith(".amalia-tmp-") for name in left), left  # the kill's leftover

    rc = main(["quantize", str(tiny_checkpoint), "--out", str(out), "--gguf", "f16,f32"])
    assert rc == 0
    assert _files(out) == ["Tiny-PT-F16.gguf", "Tiny-PT-F32.gguf", "manifest.json"]


def test_source_as_repo_id_from_the_hf_cache(
    capsys: Any, tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The hub cache layout: snapshots hold symlinks into blobs/, refs/main names the commit.
    repo = tmp_path / "hf" / "hub" / "models--utter--Tiny-PT"
    snap = repo / "snapshots" / "0123abcd"
    (repo / "blobs").mkdir(parents=True)
    snap.mkdir(parents=True)
    for f in tiny_checkpoint.iterdir():
        blob = repo / "blobs" / hashlib.sha256(f.name.encode()).hexdigest()
        blob.symlink_to(f)
        (snap / f.name).symlink_to(blob)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.chdir(tmp_path)
    rc, _, err = _run(capsys, "quantize", "utter/Tiny-PT", "--out", "out", "--gguf", "f16")
    assert rc == 0, err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text("utf-8"))
    # relative to the artifacts folder (issue 12: no absolute local paths in the manifest)
    assert manifest["source"]["path"] == "../hf/hub/models--utter--Tiny-PT/snapshots/0123abcd"
    assert _files(tmp_path / "out") == ["Tiny-PT-F16.gguf", "manifest.json"]
    rc, _, err = _run(capsys, "quantize", "utter/Nope", "--out", "out2", "--gguf", "f16")
    assert rc != 0 and "Hugging Face cache" in err and not (tmp_path / "out2").exists()


def test_not_enough_space_is_refused_before_writing(
    capsys: Any, tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from collections import namedtuple

    from amalia_edge.convert import pipeline

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(pipeline.shutil, "disk_usage", lambda p: usage(1 << 30, 1 << 30, 5 << 20))
    line = _assert_clean_failure(
        capsys,
        tiny_checkpoint,
        tmp_path / "out",
        "--gguf",
        "f16,q8_0",
        expect="GiB free",
        out_may_exist=True,
    )
    assert "--out" in line
