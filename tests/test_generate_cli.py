"""``amalia-edge generate``: streamed text, --json record, --explain table, and bad input as
one-line errors with a non-zero exit."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from amalia_edge.cli import main
from amalia_edge.device import DeviceInfo

HAVE_LLAMA = importlib.util.find_spec("llama_cpp") is not None
needs_llama = pytest.mark.skipif(not HAVE_LLAMA, reason="llama-cpp-python is not installed")


def _err(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    code = main(argv)
    out, err = capsys.readouterr()
    assert code != 0, out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("amalia-edge: error: "), err
    return lines[0]


def test_nonexistent_path(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    line = _err(capsys, ["generate", str(tmp_path / "nope.gguf"), "Olá"])
    assert "does not exist" in line


def test_not_a_gguf(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    p = tmp_path / "x.gguf"
    p.write_text("hello")
    assert "is not a GGUF file" in _err(capsys, ["generate", str(p), "Olá"])
    assert "without manifest.json" in _err(capsys, ["generate", str(tmp_path), "Olá"])


def test_truncated_gguf(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_gguf: dict[str, Path]
) -> None:
    data = tiny_gguf["Q8_0"].read_bytes()
    p = tmp_path / "cut.gguf"
    p.write_bytes(data[: len(data) // 2])
    line = _err(capsys, ["generate", str(p), "Olá"])
    assert "is truncated" in line and "download it again" in line


def test_unsupported_architecture(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    p = tmp_path / "bert.gguf"
    w = gguf.GGUFWriter(p, "bert")
    w.add_tensor("x", np.zeros(4, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    line = _err(capsys, ["generate", str(p), "Olá"])
    assert "architecture 'bert'" in line and "llama" in line


def test_ctx_larger_than_models(
    capsys: pytest.CaptureFixture[str], tiny_gguf: dict[str, Path]
) -> None:
    line = _err(capsys, ["generate", str(tiny_gguf["F16"]), "Olá", "--ctx", "100000"])
    assert "context 100000 is larger than the model's 2048 tokens" in line and "--ctx" in line


def test_unknown_backend(capsys: pytest.CaptureFixture[str], tiny_gguf: dict[str, Path]) -> None:
    line = _err(capsys, ["generate", str(tiny_gguf["F16"]), "Olá", "--backend", "vllm"])
    assert "unknown backend 'vllm'" in line and "llama.cpp" in line


def test_backend_not_installed_says_how(
    capsys: pytest.CaptureFixture[str], tiny_gguf: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # as on a machine without it
    line = _err(capsys, ["generate", str(tiny_gguf["F16"]), "Olá", "--backend", "llama.cpp"])
    assert "llama-cpp-python is not installed" in line and "pip install" in line


def _small_device(avail: int) -> DeviceInfo:
    return DeviceInfo(is_jetson=False, arch="x86_64", mem_total=avail, mem_available=avail)


@needs_llama
def test_model_cannot_fit_says_how_much_and_which_quant(
    capsys: pytest.CaptureFixture[str], tiny_gguf: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from amalia_edge.runtime import model as model_mod
    from amalia_edge.runtime.artifacts import inspect_gguf
    from amalia_edge.runtime.backends.llamacpp import LlamaCppBackend

    art = inspect_gguf(tiny_gguf["F16"])
    need = LlamaCppBackend().memory_estimate(art, 512).total
    avail = need - 1_000_000  # F16 misses by 1 MB; Q8_0 would save ~1.8 MB
    monkeypatch.setattr(model_mod, "_probe_device", lambda: _small_device(avail))
    line = _err(capsys, ["generate", str(tiny_gguf["F16"]), "Olá", "--ctx", "512"])
    assert f"F16 needs {need / (1 << 30):.2f} GiB" in line
    assert "Q8_0" in line and "would fit" in line


@needs_llama
def test_generate_streams_and_json_record(
    capsys: pytest.CaptureFixture[str], tiny_gguf: dict[str, Path]
) -> None:
    base = ["generate", str(tiny_gguf["F16"]), "Olá, como estás?", "--temperature", "0",
            "--max-tokens", "12", "--threads", "1", "--ctx", "512"]  # fmt: skip
    assert main(base) == 0
    streamed = capsys.readouterr().out
    assert main([*base, "--json"]) == 0
    rec: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert streamed == rec["text"] + "\n"
    assert rec["backend"] == "llama.cpp" and rec["quant"] == "F16" and rec["n_ctx"] == 512
    assert 1 <= rec["completion_tokens"] <= 12 and rec["prompt_tokens"] > 10
    assert rec["finish_reason"] in ("length", "stop")
    for key in ("ttft_s", "prompt_s", "decode_tokens_per_s", "total_s", "load_s"):
        assert rec[key] is not None and rec[key] >= 0
    assert rec["sampling"]["temperature"] == 0.0


@needs_llama
def test_speed_line_on_stderr_unless_quiet(
    capsys: pytest.CaptureFixture[str], tiny_gguf: dict[str, Path]
) -> None:
    base = ["generate", str(tiny_gguf["F16"]), "Olá", "--temperature", "0",
            "--max-tokens", "6", "--threads", "1", "--ctx", "256"]  # fmt: skip
    assert main(base) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.fullmatch(
        r"\d+\.\d tok/s, \d+ tokens, TTFT \d+ ms \(prompt \d+ tokens at \d+ tok/s\)", err[0]
    ), err
    for quiet in ([*base, "-q"], ["-q", *base]):
        assert main(quiet) == 0
        assert capsys.readouterr().err == ""


@needs_llama
def test_explain_prints_selection_table(
    capsys: pytest.CaptureFixture[str], tiny_artifacts: Path
) -> None:
    argv = ["generate", str(tiny_artifacts), "Olá", "--temperature", "0", "--max-tokens", "2",
            "--threads", "1", "--ctx", "256", "--explain"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    header, *rows = out.splitlines()
    assert header.split()[:5] == ["status", "backend", "artifact", "memory", "tok/s"]
    assert sum(r.startswith("chosen") for r in rows) == 1
    assert "bytes read per token" in out
    assert main([*argv, "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["selection"]["chosen"]["status"] == "chosen"
    assert len(rec["selection"]["candidates"]) >= 4


@needs_llama
def test_raw_prompt_from_stdin_matches_library(
    capsys: pytest.CaptureFixture[str], tiny_gguf: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    from amalia_edge.runtime import LoadOptions, SamplingParams, load_model

    monkeypatch.setattr(sys, "stdin", io.StringIO("A cidade de Lisboa"))
    argv = ["generate", str(tiny_gguf["F16"]), "-", "--raw", "--temperature", "0",
            "--max-tokens", "10", "--threads", "1", "--ctx", "256", "--json"]  # fmt: skip
    assert main(argv) == 0
    rec = json.loads(capsys.readouterr().out)
    with load_model(tiny_gguf["F16"], n_ctx=256, options=LoadOptions(n_threads=1)) as m:
        fin = m.generate(
            "A cidade de Lisboa", sampling=SamplingParams.greedy_params(), max_tokens=10
        )
    assert rec["text"] == fin.text and rec["completion_tokens"] == fin.completion_tokens
