"""Issue 12, points 3, 4, 6, 8 and 9: damaged or hostile input files are one-line errors,
never a traceback, a hang, or silent acceptance."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from amalia_edge.artifacts.manifest import load_manifest
from amalia_edge.checkpoint import open_checkpoint
from amalia_edge.errors import AmaliaEdgeError, ArtifactError, CheckpointError
from tests import factory

REPO = Path(__file__).resolve().parents[1]
DEEP = b"[" * 100_000 + b"]" * 100_000


def _one_line(exc: BaseException) -> None:
    assert isinstance(exc, AmaliaEdgeError) and "\n" not in str(exc)


@pytest.fixture
def ckpt(tmp_path: Path, tiny_checkpoint: Path) -> Path:
    return Path(shutil.copytree(tiny_checkpoint, tmp_path / "ckpt"))


def _expect(ckpt: Path, match: str) -> None:
    with pytest.raises(CheckpointError, match=match) as info:
        open_checkpoint(ckpt)
    _one_line(info.value)


# -- safetensors and config.json -------------------------------------------------------------


def test_safetensors_dtype_that_is_a_list(ckpt: Path) -> None:
    header = {"w": {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}}
    (ckpt / "model.safetensors").write_bytes(factory.raw_safetensors(header, b"\0" * 4))
    _expect(ckpt, "unknown dtype")


def test_safetensors_header_nested_100k_deep(ckpt: Path) -> None:
    (ckpt / "model.safetensors").write_bytes(len(DEEP).to_bytes(8, "little") + DEEP)
    _expect(ckpt, "nested too deeply")


def test_config_nested_100k_deep(ckpt: Path) -> None:
    (ckpt / "config.json").write_bytes(DEEP)
    _expect(ckpt, "nested too deeply")


def _config(ckpt: Path, **fields: object) -> None:
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg.update(fields)
    (ckpt / "config.json").write_text(json.dumps(cfg))  # json writes NaN / Infinity tokens


def test_huge_max_position_embeddings(ckpt: Path) -> None:
    _config(ckpt, max_position_embeddings=2**40)
    _expect(ckpt, "max_position_embeddings is 1099511627776")


@pytest.mark.parametrize(
    ("field", "value"),
    [("rope_theta", float("nan")), ("rms_norm_eps", float("inf")), ("rope_theta", 1e300)],
)
def test_non_finite_hyper_parameters(ckpt: Path, field: str, value: float) -> None:
    _config(ckpt, **{field: value})
    _expect(ckpt, f"{field} must be a positive finite number")


# -- tokenizer files ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tokenizer_config.json", "added_tokens.json"])
def test_tokenizer_side_file_that_is_a_list(ckpt: Path, name: str) -> None:
    (ckpt / name).write_text("[1, 2, 3]")
    _expect(ckpt, "not a JSON object")


def _decoder(ckpt: Path, decoder: object) -> None:
    path = ckpt / "tokenizer_config.json"
    tc = json.loads(path.read_text())
    tc["added_tokens_decoder"] = decoder
    path.write_text(json.dumps(tc))


def test_added_tokens_decoder_non_integer_key(ckpt: Path) -> None:
    _decoder(ckpt, {"abc": {"content": "<x>", "special": True}})
    _expect(ckpt, "is not a token id")


def test_added_tokens_decoder_negative_key(ckpt: Path) -> None:
    _decoder(ckpt, {"-1": {"content": "<x>", "special": True}})
    _expect(ckpt, "is not a token id")


def test_added_tokens_decoder_without_content(ckpt: Path) -> None:
    _decoder(ckpt, {"5": {"special": True}})
    _expect(ckpt, "has no text")


def test_negative_id_in_added_tokens_json_never_overwrites_the_last_token(ckpt: Path) -> None:
    before = open_checkpoint(ckpt).vocab.tokens
    (ckpt / "added_tokens.json").write_text(json.dumps({"<evil>": -1}))
    after = open_checkpoint(ckpt).vocab.tokens
    assert after[-1] == before[-1] and b"<evil>" not in after


# -- FIFOs never hang --------------------------------------------------------------------------

_OPEN_SCRIPT = """
import sys
from amalia_edge.errors import AmaliaEdgeError
kind, path = sys.argv[1], sys.argv[2]
try:
    if kind == "checkpoint":
        from amalia_edge.checkpoint import open_checkpoint
        open_checkpoint(path)
    else:
        from amalia_edge.runtime.artifacts import resolve_model
        resolve_model(path)
except AmaliaEdgeError as exc:
    print("ERROR", exc)
"""


def _run_with_timeout(kind: str, path: Path) -> str:
    out = subprocess.run(
        [sys.executable, "-c", _OPEN_SCRIPT, kind, str(path)],
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, "PYTHONPATH": _child_path()},
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_named_model_safetensors(ckpt: Path) -> None:
    (ckpt / "model.safetensors").unlink()
    os.mkfifo(ckpt / "model.safetensors")
    assert "named pipe" in _run_with_timeout("checkpoint", ckpt)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_gguf(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "m.gguf")
    assert "named pipe" in _run_with_timeout("model", tmp_path / "m.gguf")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_manifest(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "manifest.json")
    assert "named pipe" in _run_with_timeout("model", tmp_path)


# -- GGUF header -------------------------------------------------------------------------------


def _gguf(path: Path, **kv: object) -> Path:
    import gguf

    w = gguf.GGUFWriter(path, arch="llama")
    for key, value in kv.items():
        name = key.replace("__", ".")
        if isinstance(value, str):
            w.add_string(name, value)
        elif isinstance(value, float):
            w.add_float32(name, value)
        elif isinstance(value, list):
            w.add_array(name, value)
        else:
            w.add_uint32(name, int(value))  # type: ignore[call-overload]
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("alignment", [float("inf"), [32, 64], 0, 48])
def test_gguf_with_a_bad_alignment(tmp_path: Path, alignment: object) -> None:
    from amalia_edge.runtime.gguf_header import read_gguf_header

    path = _gguf(tmp_path / "a.gguf", general__alignment=alignment)
    with pytest.raises(ArtifactError, match="alignment") as info:
        read_gguf_header(path)
    _one_line(info.value)


# -- chat templates ----------------------------------------------------------------------------


def test_template_raising_a_python_error_is_a_template_error() -> None:
    from amalia_edge.runtime.chat import ChatTemplateError, Message, render_chat_template

    with pytest.raises(ChatTemplateError, match="ZeroDivisionError") as info:
        render_chat_template("{{ 1/0 }}", [Message("user", "olá")])
    _one_line(info.value)


def test_runaway_template_is_stopped_quickly() -> None:
    from amalia_edge.runtime.chat import ChatTemplateError, Message, render_chat_template

    t0 = time.monotonic()
    tmpl = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    with pytest.raises(ChatTemplateError, match="loops too long"):
        render_chat_template(tmpl, [Message("user", "olá")])
    with pytest.raises(ChatTemplateError, match="too long"):
        render_chat_template("{{ 'x' * 10**10 }}", [Message("user", "olá")])
    assert time.monotonic() - t0 < 30  # a generous bound: the unbounded loop is 10^10 steps


def test_template_syntax_error_is_refused_before_any_backend_loads(tmp_path: Path) -> None:
    from amalia_edge.runtime.artifacts import resolve_model

    path = _gguf(tmp_path / "t.gguf", tokenizer__chat_template="{% for x in %}")
    with pytest.raises(ArtifactError, match="chat template does not parse") as info:
        resolve_model(path)
    _one_line(info.value)


# -- manifest ----------------------------------------------------------------------------------


def _manifest(directory: Path, doc: object) -> None:
    directory.mkdir(exist_ok=True)
    (directory / "manifest.json").write_text(json.dumps(doc))


@pytest.mark.parametrize(
    "content",
    [DEEP, b"\xff\xfe{}", b'{"schema": "one"}', b'{"artifacts": [1]}'],
    ids=["deep", "latin1", "schema-str", "entry-int"],
)
def test_damaged_manifest(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "manifest.json").write_bytes(content)
    with pytest.raises(ArtifactError) as info:
        load_manifest(tmp_path)
    _one_line(info.value)


@pytest.mark.parametrize("file", ["/etc/passwd", "../../x.gguf", "a/../../x.gguf", "a\\..\\x"])
def test_manifest_file_outside_its_folder_is_refused(tmp_path: Path, file: str) -> None:
    entry = {"kind": "gguf", "quant": "F16", "file": file, "size": 1, "sha256": "0" * 64}
    _manifest(tmp_path / "art", {"schema": 1, "artifacts": [entry]})
    with pytest.raises(ArtifactError, match=r"folder|relative"):
        load_manifest(tmp_path / "art")


def test_changed_gguf_is_refused_with_the_fix(tmp_path: Path, tiny_artifacts: Path) -> None:
    from amalia_edge.runtime.artifacts import resolve_model

    art = Path(shutil.copytree(tiny_artifacts, tmp_path / "art"))
    manifest = load_manifest(art)
    entry = next(a for a in manifest.artifacts if a.quant == "Q8_0")
    path = art / entry.file
    assert resolve_model(art).usable()  # intact: usable (and hashed once, then remembered)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # same size, different bytes (a bit flip in the weights)
    path.write_bytes(bytes(data))
    (q8,) = [a for a in resolve_model(art).artifacts if a.quant == "Q8_0"]
    assert q8.problem is not None and "changed after it was built" in q8.problem
    assert "quantize" in q8.problem


# -- Hugging Face cache ids --------------------------------------------------------------------


def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ckpt: Path) -> Path:
    cache = tmp_path / "hub"
    repo = cache / "models--org--name"
    (repo / "snapshots").mkdir(parents=True)
    shutil.copytree(ckpt, repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return repo


def test_cache_revision_cannot_escape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ckpt: Path
) -> None:
    _cache(tmp_path, monkeypatch, ckpt)
    # Outside the cache, but a real checkpoint: a traversal would open it.
    shutil.copytree(ckpt, tmp_path / "outside")
    assert open_checkpoint("org/name").config is not None
    with pytest.raises(CheckpointError, match="not a branch, tag or commit"):
        open_checkpoint("org/name@../../../outside")


def test_cache_ref_file_cannot_escape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ckpt: Path
) -> None:
    repo = _cache(tmp_path, monkeypatch, ckpt)
    shutil.copytree(ckpt, tmp_path / "outside")
    (repo / "refs" / "evil").write_text("../../../outside")
    with pytest.raises(CheckpointError, match="does not hold a commit hash"):
        open_checkpoint("org/name@evil")


def _child_path() -> str:
    """The child runs the code this test runs: the caller's PYTHONPATH, then the repo."""
    repo = str(Path(__file__).resolve().parents[1])
    return os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), repo) if p)
