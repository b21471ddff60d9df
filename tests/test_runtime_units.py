"""Runtime pieces that need no inference library: GGUF header reader, MODEL resolution,
registry, event builder (stop strings, UTF-8), chat template rendering and context policy."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import gguf
import numpy as np
import pytest

from amalia_edge.errors import (
    AmaliaEdgeError,
    ArtifactError,
    BackendError,
    ContextOverflowError,
    UnsupportedArchitectureError,
)
from amalia_edge.runtime import registry
from amalia_edge.runtime.artifacts import inspect_gguf, resolve_model
from amalia_edge.runtime.backend import EventBuilder, kv_cache_bytes
from amalia_edge.runtime.chat import (
    CHATML_TEMPLATE,
    DEFAULT_SYSTEM_PROMPT,
    Message,
    fit_messages,
    render_chat_template,
    with_system_prompt,
)
from amalia_edge.runtime.events import Finished, TokenEvent
from amalia_edge.runtime.gguf_header import read_gguf_header
from amalia_edge.runtime.sampling import SamplingParams


def _write_gguf(path: Path, arch: str = "llama", n_vocab: int = 300) -> Path:
    w = gguf.GGUFWriter(path, arch)
    w.add_block_count(2)
    w.add_context_length(512)
    w.add_embedding_length(16)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_feed_forward_length(32)
    w.add_tokenizer_model("llama")
    w.add_token_list([f"t{i}".encode() for i in range(n_vocab)])
    w.add_chat_template(CHATML_TEMPLATE)
    w.add_tensor("token_embd.weight", np.zeros((n_vocab, 16), dtype=np.float32))
    w.add_tensor("output.weight", np.ones((n_vocab, 16), dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# -- GGUF header ------------------------------------------------------------------------------


def test_header_matches_gguf_reader(tmp_path: Path) -> None:
    path = _write_gguf(tmp_path / "m.gguf")
    ours = read_gguf_header(path)
    ref = gguf.GGUFReader(path)
    assert ours.architecture == "llama"
    assert ours.array_lengths["tokenizer.ggml.tokens"] == 300
    assert ours.metadata["tokenizer.chat_template"] == CHATML_TEMPLATE
    assert ours.metadata["llama.attention.head_count_kv"] == 2
    assert [t.name for t in ours.tensors] == [t.name for t in ref.tensors]
    for mine, theirs in zip(ours.tensors, ref.tensors, strict=True):
        assert mine.nbytes == int(theirs.n_bytes)
        assert ours.data_offset + mine.offset == int(theirs.data_offset)
    assert ours.data_end == path.stat().st_size


def test_inspect_shape_and_decode_bytes(tmp_path: Path) -> None:
    art = inspect_gguf(_write_gguf(tmp_path / "m.gguf"))
    assert art.kind == "gguf" and art.shape is not None
    assert (art.shape.n_layers, art.shape.n_kv_heads, art.shape.head_dim) == (2, 2, 4)
    assert art.shape.n_vocab == 300 and art.shape.n_ctx_train == 512
    assert art.weight_bytes == 300 * 16 * 4 + 300 * 16 * 2
    # untied output: decode reads the output matrix but not the embedding table
    assert art.decode_weight_bytes == 300 * 16 * 2
    assert art.chat_template == CHATML_TEMPLATE


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: p.write_bytes(b"PK\x03\x04 not a gguf"), "not a GGUF file"),
        (lambda p: p.write_bytes(b""), "not a GGUF file"),
        (lambda p: p.write_bytes(b"GGUF" + struct.pack("<I", 1)), "version 1"),
    ],
)
def test_not_gguf(tmp_path: Path, make: object, match: str) -> None:
    p = tmp_path / "x.gguf"
    make(p)  # type: ignore[operator]
    with pytest.raises(ArtifactError, match=match):
        resolve_model(p)


def test_truncated_in_data_and_in_header(tmp_path: Path) -> None:
    src = _write_gguf(tmp_path / "m.gguf")
    data = src.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[:-100])
    with pytest.raises(ArtifactError, match=r"truncated: its tensors need [\d,]+ bytes"):
        resolve_model(cut)
    cut.write_bytes(data[:200])
    with pytest.raises(ArtifactError, match="truncated"):
        resolve_model(cut)


def test_unsupported_architecture(tmp_path: Path) -> None:
    p = _write_gguf(tmp_path / "g.gguf", arch="gemma2")
    with pytest.raises(UnsupportedArchitectureError, match=r"'gemma2'.*supported.*llama"):
        resolve_model(p)


def test_resolve_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="does not exist"):
        resolve_model(tmp_path / "nope")
    (tmp_path / "d").mkdir()
    shutil.copy(_write_gguf(tmp_path / "m.gguf"), tmp_path / "d" / "m.gguf")
    with pytest.raises(ArtifactError, match=r"without manifest.json \(it holds m.gguf"):
        resolve_model(tmp_path / "d")


def test_manifest_with_missing_file_marks_problem(tmp_path: Path) -> None:
    from amalia_edge.artifacts.manifest import ArtifactEntry, Manifest, sha256_file

    _write_gguf(tmp_path / "a.gguf")
    sha = sha256_file(tmp_path / "a.gguf")  # a GGUF is checked against it (issue 12)
    entries = [
        ArtifactEntry("gguf", "F16", "a.gguf", (tmp_path / "a.gguf").stat().st_size, sha),
        ArtifactEntry("gguf", "Q8_0", "gone.gguf", 10, "cd" * 32),
        ArtifactEntry("onnx", "FP16", "onnx/model.onnx", 10, "ef" * 32),
    ]
    Manifest(model={"name": "T"}, artifacts=entries).write(tmp_path)
    src = resolve_model(tmp_path)
    assert [a.problem for a in src.artifacts] == [
        None,
        "gone.gguf is missing",
        "onnx/model.onnx is missing",
    ]
    assert src.artifacts[0].quant == "F16" and src.artifacts[0].sha256 == sha
    # the ONNX entry borrows the GGUF's shape for its KV estimate
    assert src.artifacts[2].shape == src.artifacts[0].shape
    assert src.name == "T"


# -- registry ---------------------------------------------------------------------------------


def test_registry_aliases_and_unknown() -> None:
    assert registry.canonical_name("LlamaCpp") == "llama.cpp"
    assert registry.canonical_name("trt") == "tensorrt"
    assert registry.names()[:3] == ["llama.cpp", "onnxruntime", "tensorrt"]
    with pytest.raises(BackendError, match=r"unknown backend 'vllm'.*llama\.cpp.*onnxruntime"):
        registry.canonical_name("vllm")


def test_registry_plugin_by_path_is_lazy_and_import_errors_are_reported() -> None:
    registry.register("ghost", "amalia_edge_no_such_module:Ghost")
    try:
        assert "ghost" in registry.names()
        with pytest.raises(BackendError, match="cannot be imported"):
            registry.get("ghost")
        found = dict(registry.all_backends())
        assert isinstance(found["ghost"], BackendError)
    finally:
        registry.unregister("ghost")


def test_importing_runtime_does_not_import_heavy_libraries() -> None:
    import subprocess
    import sys

    code = (
        "import sys, amalia_edge.runtime, amalia_edge.runtime.selection;"
        "import amalia_edge.runtime.backends.llamacpp;"
        "print([m for m in ('llama_cpp','onnxruntime','tensorrt','jinja2') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- event builder ----------------------------------------------------------------------------


def _run(pieces: list[bytes], stop: tuple[str, ...], eog_at: int | None = None) -> list[object]:
    eb = EventBuilder("b", "a", 64, [1, 2], stop, lambda t: pieces[t])
    evs: list[object] = [eb.started(), eb.prompt_processed(2, 0.01)]
    for i in range(len(pieces)):
        if i == eog_at:
            ev = eb.end_token(i)
            if ev:
                evs.append(ev)
            evs.append(eb.finish("stop"))
            return evs
        last = i == len(pieces) - 1
        evs.append(eb.token(i, final=last))
        if eb.stopped:
            evs.append(eb.finish("stop_string"))
            return evs
    evs.append(eb.finish("length"))
    return evs


def _check(evs: list[object]) -> Finished:
    fin = evs[-1]
    assert isinstance(fin, Finished)
    toks = [e for e in evs if isinstance(e, TokenEvent)]
    assert "".join(t.text for t in toks) == fin.text
    assert [t.index for t in toks] == list(range(len(toks)))
    assert fin.completion_tokens == len(toks)
    return fin


def test_stop_string_across_tokens() -> None:
    fin = _check(_run([b"Ol", b"\xc3\xa1 ", b"##", b"#END", b"more"], ("###END",)))
    assert fin.reason == "stop_string" and fin.text == "Olá "


def test_held_prefix_released_when_not_a_stop() -> None:
    fin = _check(_run([b"a#", b"#b", b"c"], ("###",)))
    assert fin.text == "a##bc" and fin.reason == "length"


def test_held_text_released_on_final_and_on_eog() -> None:
    assert _check(_run([b"x", b"##"], ("###",))).text == "x##"
    fin = _check(_run([b"x", b"##", b""], ("###",), eog_at=2))
    assert fin.text == "x##" and fin.reason == "stop"


def test_utf8_split_across_tokens() -> None:
    evs = _run([b"\xe2\x82", b"\xac!"], ())
    fin = _check(evs)
    assert [e.text for e in evs if isinstance(e, TokenEvent)] == ["", "€!"]
    assert fin.text == "€!"


def test_kv_cache_bytes_formula() -> None:
    # EuroLLM-9B shape: 42 layers, 8 KV heads × 128, f16 -> 2×42×4096×8×128×2 bytes = 1.3 GiB
    assert kv_cache_bytes(42, 8, 128, 4096) == 2 * 42 * 4096 * 8 * 128 * 2
    assert kv_cache_bytes(42, 8, 128, 4096, "q8_0") < kv_cache_bytes(42, 8, 128, 4096) * 0.54


def test_kv_cache_types_agree_with_ggml() -> None:
    """Element sizes come from gguf-py; the type ids we hand llama.cpp are its own enum's."""
    from amalia_edge.runtime.backend import kv_bytes_per_element
    from amalia_edge.runtime.backends.llamacpp import KV_CACHE_GGML_TYPES

    # ggml-common.h: block_q8_0 = 2 + 32 bytes per 32 values, block_q4_0 = 2 + 16
    assert kv_bytes_per_element("q8_0") == 34 / 32 and kv_bytes_per_element("q4_0") == 18 / 32
    assert kv_bytes_per_element("f16") == kv_bytes_per_element("bf16") == 2.0
    import gguf

    for name, ggml_id in KV_CACHE_GGML_TYPES.items():
        assert gguf.GGMLQuantizationType[name.upper()] == ggml_id


def test_sampling_params_validation() -> None:
    assert SamplingParams(temperature=0).greedy
    with pytest.raises(AmaliaEdgeError, match=r"top_p 1\.5"):
        SamplingParams(top_p=1.5)


# -- chat -------------------------------------------------------------------------------------


def test_chat_template_matches_plain_jinja_render(tiny_checkpoint: Path) -> None:
    """Our render equals a direct jinja2 render of the checkpoint's own template."""
    import jinja2

    template = json.loads((tiny_checkpoint / "tokenizer_config.json").read_text())["chat_template"]
    msgs = [Message("system", "És útil."), Message("user", "Olá"), Message("assistant", "Olá!")]
    msgs.append(Message("user", "Diz «bom dia»."))
    expected = (
        jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
        .from_string(template)
        .render(messages=[m.to_dict() for m in msgs], add_generation_prompt=True)
    )
    assert render_chat_template(template, msgs) == expected
    assert expected.endswith("<|im_start|>assistant\n")


def test_default_system_prompt_is_pt_pt() -> None:
    msgs = with_system_prompt([Message("user", "Olá")], None)
    assert msgs[0] == Message("system", DEFAULT_SYSTEM_PROMPT)
    assert "português europeu" in msgs[0].content
    assert with_system_prompt([Message("user", "x")], "")[0].role == "user"
    own = [Message("system", "S"), Message("user", "x")]
    assert with_system_prompt(own, None) == own


def _fit(msgs: list[Message], n_ctx: int, reserve: int = 4):  # type: ignore[no-untyped-def]
    return fit_messages(
        msgs,
        render=lambda m: render_chat_template(None, m),
        count_tokens=lambda text: len(text.split()),
        n_ctx=n_ctx,
        reserve=reserve,
    )


def test_context_policy_drops_oldest_turns_keeps_system() -> None:
    msgs = [Message("system", "sys " * 5)]
    for i in range(6):
        msgs += [Message("user", f"pergunta {i} " * 5), Message("assistant", f"resposta {i} " * 5)]
    msgs.append(Message("user", "última pergunta"))
    fitted = _fit(msgs, n_ctx=60)
    assert fitted.messages[0] == msgs[0] and fitted.messages[-1] == msgs[-1]
    assert fitted.dropped > 0 and fitted.prompt_tokens <= 56
    assert fitted.messages[1].role == "user"  # never starts with an orphan assistant turn
    assert fitted.messages[1:] == msgs[-(len(fitted.messages) - 1) :]


def test_context_policy_errors_when_last_message_cannot_fit() -> None:
    msgs = [Message("system", "s"), Message("user", "palavra " * 100)]
    with pytest.raises(ContextOverflowError, match=r"needs .* prompt tokens .* context holds 50"):
        _fit(msgs, n_ctx=50)


def test_public_names_resolve_lazily() -> None:
    import amalia_edge.runtime as rt

    assert sorted(rt.__all__) == sorted(rt._EXPORTS)
    for name in rt.__all__:
        assert getattr(rt, name) is not None
    with pytest.raises(AttributeError):
        _ = rt.no_such_name
