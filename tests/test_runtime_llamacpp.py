"""The llama.cpp backend for real: tiny GGUF models converted by amalia-edge, real llama.cpp.

Equivalence is checked against llama-cpp-python called directly on the same file.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")

from amalia_edge.errors import BackendError, ContextOverflowError
from amalia_edge.runtime import (
    LoadOptions,
    Message,
    Model,
    SamplingParams,
    load_model,
)
from amalia_edge.runtime.backends.llamacpp import BASE_OVERHEAD, LlamaCppBackend
from amalia_edge.runtime.events import Finished, PromptProcessed, Started, TokenEvent

GREEDY = SamplingParams.greedy_params()
OPTS = LoadOptions(n_threads=1)
PROMPT = "A cidade de Lisboa"


@pytest.fixture(scope="module")
def f16(tiny_gguf: dict[str, Path]) -> Path:
    return tiny_gguf["F16"]


@pytest.fixture(scope="module")
def model(f16: Path) -> Any:
    m = load_model(f16, n_ctx=512, options=OPTS)
    yield m
    m.close()


@pytest.fixture(scope="module")
def direct(f16: Path) -> Any:
    import llama_cpp

    llm = llama_cpp.Llama(
        str(f16), n_ctx=512, n_threads=1, n_threads_batch=1, n_gpu_layers=0, verbose=False
    )
    yield llm
    llm.close()


def _direct_greedy(llm: Any, ids: list[int], n: int) -> list[int]:
    import llama_cpp

    out: list[int] = []
    for tok in llm.generate(ids, top_k=40, top_p=0.95, min_p=0.05, temp=0.0, reset=True):
        if llama_cpp.llama_vocab_is_eog(llm._model.vocab, tok) or len(out) == n:
            break
        out.append(tok)
    return out


def test_events_in_order_with_consistent_timings(model: Model) -> None:
    events = list(model.stream(PROMPT, sampling=GREEDY, max_tokens=24))
    started, pp, fin = events[0], events[1], events[-1]
    assert isinstance(started, Started) and isinstance(pp, PromptProcessed)
    assert isinstance(fin, Finished) and fin.reason in ("length", "stop")
    tokens = [e for e in events[2:-1] if isinstance(e, TokenEvent)]
    assert tokens and len(tokens) == len(events) - 3
    assert [t.index for t in tokens] == list(range(len(tokens)))
    assert started.backend == "llama.cpp" and started.artifact == "gguf:F16"
    assert started.prompt_tokens == fin.prompt_tokens == pp.n_tokens > 0
    times = [started.t, pp.t, *(t.t for t in tokens), fin.t_end]
    assert times == sorted(times)
    assert fin.t_start == started.t and fin.t_first_token == tokens[0].t
    assert 0 < pp.seconds <= pp.t - started.t
    assert fin.prompt_seconds == pp.seconds
    assert fin.completion_tokens == len(tokens) == len(fin.token_ids)
    assert "".join(t.text for t in tokens) == fin.text
    assert fin.decode_tps > 0 and fin.ttft is not None and fin.ttft > 0


def test_greedy_identical_to_llama_cpp_python(model: Model, direct: Any) -> None:
    fin = model.generate(PROMPT, sampling=GREEDY, max_tokens=32)
    ids = direct.tokenize(PROMPT.encode(), add_bos=True, special=True)
    assert list(fin.token_ids[: len(fin.token_ids)]) == _direct_greedy(direct, ids, 32)
    ref = direct.create_completion(PROMPT, max_tokens=32, temperature=0.0)
    assert fin.text == ref["choices"][0]["text"]


def test_chat_template_applied_exactly(model: Model, direct: Any, tiny_checkpoint: Path) -> None:
    import json

    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = json.loads((tiny_checkpoint / "tokenizer_config.json").read_text())["chat_template"]
    assert model.session.chat_template == template  # carried into the GGUF unchanged
    msgs = [Message("system", "És útil."), Message("user", "Olá, tudo bem?")]
    fmt = Jinja2ChatFormatter(template, eos_token="</s>", bos_token="<s>")
    as_dicts: Any = [m.to_dict() for m in msgs]
    expected = fmt(messages=as_dicts).prompt
    assert model.session.apply_chat_template(msgs) == expected
    fin = model.generate(msgs, sampling=GREEDY, max_tokens=16)
    # BOS: added when the model asks for it and the template did not write it (as llama.cpp's
    # own server and CLI do); create_completion tokenizes the same way.
    ref = direct.create_completion(expected, temperature=0.0, max_tokens=16)
    assert fin.text == ref["choices"][0]["text"]
    assert fin.prompt_tokens == len(direct.tokenize(expected.encode(), special=True))


def test_default_system_prompt_is_sent(model: Model) -> None:
    fitted = model.fit_chat([Message("user", "Olá")])
    assert fitted.messages[0].role == "system" and "português europeu" in fitted.prompt


def test_stop_string_and_cancel(model: Model) -> None:
    endless = SamplingParams(temperature=0.0, ignore_eos=True)
    full = model.generate(PROMPT, sampling=endless, max_tokens=32)
    if len(full.text) < 8:
        pytest.skip("the tiny model stopped too early to place a stop string")
    stop = full.text[4:7]
    cut = model.generate(PROMPT, sampling=endless, max_tokens=32, stop=[stop])
    assert cut.reason == "stop_string"
    assert cut.text == full.text[: full.text.find(stop)]
    cancel = threading.Event()
    got = []
    for ev in model.stream(PROMPT, sampling=endless, max_tokens=32, cancel=cancel):
        got.append(ev)
        if isinstance(ev, TokenEvent) and ev.index == 2:
            cancel.set()
    fin = got[-1]
    # the token sampled after the cancel is the last one
    assert isinstance(fin, Finished) and fin.reason == "cancelled" and fin.completion_tokens == 4


def test_seeded_sampling_is_reproducible(model: Model) -> None:
    sp = SamplingParams(temperature=0.9, seed=1234)
    a = model.generate(PROMPT, sampling=sp, max_tokens=16)
    b = model.generate(PROMPT, sampling=sp, max_tokens=16)
    assert a.token_ids == b.token_ids


def test_kv_prefix_is_reused_across_turns(model: Model) -> None:
    msgs = [Message("user", "Conta-me algo sobre o Porto.")]
    first = model.generate(msgs, sampling=GREEDY, max_tokens=8)
    msgs += [Message("assistant", first.text), Message("user", "E sobre Braga?")]
    events = list(model.stream_chat(msgs, sampling=GREEDY, max_tokens=4))
    started, pp = events[0], events[1]
    assert isinstance(started, Started) and isinstance(pp, PromptProcessed)
    assert pp.n_tokens < started.prompt_tokens  # the shared prefix was not evaluated again


def test_context_overflow_policy(f16: Path) -> None:
    with load_model(f16, n_ctx=96, options=OPTS) as small:
        msgs: list[Message] = []
        for i in range(12):
            msgs += [Message("user", f"Pergunta número {i} sobre Lisboa e o Tejo."),
                     Message("assistant", f"Resposta número {i}, curta.")]  # fmt: skip
        msgs.append(Message("user", "E agora?"))
        fin = small.generate(msgs, sampling=GREEDY, max_tokens=8, system="Sê breve.")
        assert fin.reason in ("length", "stop")
        assert small.last_fit is not None and small.last_fit.dropped > 0
        assert small.last_fit.messages[0] == Message("system", "Sê breve.")
        assert small.last_fit.messages[-1] == msgs[-1]
        assert fin.prompt_tokens + 8 <= 96
        with pytest.raises(ContextOverflowError, match="the last message needs"):
            small.generate([Message("user", "palavra " * 200)], max_tokens=8)
        with pytest.raises(ContextOverflowError, match=r"the prompt has .* context holds 96"):
            small.generate("palavra " * 200, max_tokens=8)
        # generation that runs into the end of the context ends cleanly
        endless = SamplingParams(temperature=0.0, ignore_eos=True)
        fin = small.generate("Lisboa " * 30, sampling=endless, max_tokens=500)
        assert fin.reason == "context_full" and fin.error is None
        assert fin.prompt_tokens + fin.completion_tokens == 96


def test_forced_load_failure_falls_back(
    tiny_artifacts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_load = LlamaCppBackend.load
    failed: list[str] = []

    def flaky_load(self: LlamaCppBackend, artifact: Any, n_ctx: int, options: Any = None) -> Any:
        if not failed:
            failed.append(artifact.quant)
            raise BackendError(f"forced failure loading {artifact.quant}")
        return real_load(self, artifact, n_ctx, options)

    monkeypatch.setattr(LlamaCppBackend, "load", flaky_load)
    with load_model(tiny_artifacts, n_ctx=256, options=OPTS) as m:
        assert m.artifact.quant != failed[0]
        by = {c.artifact.quant: c for c in m.selection.candidates}
        assert by[failed[0]].status == "failed"
        assert f"load failed: forced failure loading {failed[0]}" in by[failed[0]].reasons
        assert by[m.artifact.quant].status == "chosen"
        assert any(r.startswith("fallback:") for r in by[m.artifact.quant].reasons)
        assert m.generate("Olá", sampling=GREEDY, max_tokens=4).completion_tokens >= 1


def test_probe_reports_build_and_jetson_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from amalia_edge.device import DeviceInfo

    avail = LlamaCppBackend().probe(None)
    assert avail.ok and "gpu_offload" in avail.details
    jetson = DeviceInfo(is_jetson=True, arch="aarch64", cuda_cc="8.7")
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # as if not installed
    missing = LlamaCppBackend().probe(jetson)
    assert not missing.ok and missing.reason == "llama-cpp-python is not installed"
    assert missing.install_hint is not None
    assert 'CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=87"' in missing.install_hint


def test_ignore_eos_generates_exactly_max_tokens(model: Model) -> None:
    sp = SamplingParams(temperature=0.0, ignore_eos=True)
    fin = model.generate(PROMPT, sampling=sp, max_tokens=40)
    assert fin.reason == "length" and fin.completion_tokens == 40


def test_autotune_measures_for_real_then_uses_cache(
    tiny_artifacts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    monkeypatch.setenv("AMALIA_EDGE_CACHE_DIR", str(tmp_path))
    with load_model(tiny_artifacts, n_ctx=256, autotune=True, options=OPTS) as m:
        chosen = m.selection.chosen
        assert chosen is not None and chosen.measured_tps is not None and chosen.measured_tps > 0
        assert "fastest measured" in chosen.reasons
        measured = [c for c in m.selection.candidates if c.measured_tps is not None]
        assert len(measured) == 3 and chosen.measured_tps == max(
            c.measured_tps or 0.0 for c in measured
        )
    cache = json.loads((tmp_path / "autotune.json").read_text())
    (entry,) = cache.values()
    assert len(entry["tokens_per_s"]) == 3 and entry["tokens"] == 32
    with load_model(tiny_artifacts, n_ctx=256, autotune=True, options=OPTS) as again:
        assert again.artifact.quant == m.artifact.quant
        assert again.selection.chosen is not None
        assert any(r.startswith("autotune cache (") for r in again.selection.chosen.reasons)


@pytest.mark.parametrize(("n_ctx", "kv_type"), [(512, "f16"), (1024, "q8_0")])
def test_memory_estimate_matches_llama_cpp_buffers(
    f16: Path, capfd: pytest.CaptureFixture[str], n_ctx: int, kv_type: str
) -> None:
    """Our estimate vs the buffer sizes llama.cpp logs when it loads the same model."""
    import re

    from amalia_edge.runtime.artifacts import inspect_gguf

    art = inspect_gguf(f16)
    opts = LoadOptions(n_threads=1, kv_cache_type=kv_type, verbose=True)
    est = LlamaCppBackend().memory_estimate(art, n_ctx, opts)
    capfd.readouterr()
    LlamaCppBackend().load(art, n_ctx, opts).close()
    log = capfd.readouterr().err

    def mib(pattern: str) -> float:
        m = re.search(pattern + r"\s*=\s*([\d.]+) MiB", log)
        assert m, pattern
        return float(m.group(1)) * (1 << 20)

    weights = mib(r"CPU(?:_Mapped)? model buffer size")
    kv = mib(r"CPU KV buffer size")
    compute = mib(r"CPU compute buffer size")
    assert est.weights == pytest.approx(weights, rel=0.01)
    assert est.kv_cache == pytest.approx(kv, rel=0.01)
    # the compute-graph part of the overhead is an upper bound, not wildly above
    graph = est.overhead - BASE_OVERHEAD
    assert compute <= graph <= 3 * compute


def test_gpu_offload_parameters_when_llama_cpp_has_cuda(
    f16: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a CUDA build every layer is offloaded and flash attention is on; --cpu turns it
    off. (A CPU build is told it has GPU offload here; llama.cpp then ignores the layers.)"""
    import llama_cpp

    from amalia_edge.runtime.artifacts import inspect_gguf
    from amalia_edge.runtime.backends import llamacpp

    monkeypatch.setattr(llama_cpp, "llama_supports_gpu_offload", lambda: True)
    backend = LlamaCppBackend()
    art = inspect_gguf(f16)
    assert backend.probe(None).reason.endswith("GPU offload")
    on_gpu = backend.memory_estimate(art, 512, OPTS)
    on_cpu = backend.memory_estimate(art, 512, LoadOptions(n_threads=1, gpu=False))
    assert on_gpu.overhead - llamacpp.CUDA_CONTEXT_OVERHEAD < on_cpu.overhead  # flash attn
    with backend.load(art, 512, OPTS) as session:
        assert isinstance(session, llamacpp.LlamaCppSession)
        assert session.params["n_gpu_layers"] == -1 and session.params["flash_attn"] is True
        fin = list(session.stream(PROMPT, sampling=GREEDY, max_tokens=4))[-1]
        assert isinstance(fin, Finished) and fin.completion_tokens >= 1
    with backend.load(art, 512, LoadOptions(n_threads=1, gpu=False)) as session:
        assert isinstance(session, llamacpp.LlamaCppSession)
        assert session.params["n_gpu_layers"] == 0 and session.params["flash_attn"] is False


def test_flash_attention_default_follows_offload_then_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On where llama.cpp offloads; AMALIA_EDGE_FLASH_ATTN overrides that (a CUDA build
    without FlashAttention kernels would otherwise run attention on the CPU); an explicit
    option beats both; a bad value is an error naming the variable."""
    from amalia_edge.errors import BackendError
    from amalia_edge.runtime.backends.llamacpp import FLASH_ATTN_ENV, flash_attn_default

    monkeypatch.delenv(FLASH_ATTN_ENV, raising=False)
    assert flash_attn_default(None, True) is True
    assert flash_attn_default(LoadOptions(), False) is False
    monkeypatch.setenv(FLASH_ATTN_ENV, "off")
    assert flash_attn_default(LoadOptions(), True) is False
    assert flash_attn_default(LoadOptions(flash_attn=True), True) is True
    monkeypatch.setenv(FLASH_ATTN_ENV, "ON")
    assert flash_attn_default(None, False) is True
    monkeypatch.setenv(FLASH_ATTN_ENV, "maybe")
    with pytest.raises(BackendError, match=FLASH_ATTN_ENV):
        flash_attn_default(None, True)


def test_a_quantized_kv_cache_gets_flash_attention_everywhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One rule for the backend, its memory estimate and the server's batch engine: llama.cpp
    refuses a quantized V cache without flash attention, whatever else asked for."""
    from amalia_edge.runtime.backends.llamacpp import FLASH_ATTN_ENV, flash_attn_default

    monkeypatch.setenv(FLASH_ATTN_ENV, "off")
    assert flash_attn_default(LoadOptions(kv_cache_type="q8_0"), False) is True
    assert flash_attn_default(LoadOptions(kv_cache_type="q4_0", flash_attn=False), True) is True
    assert flash_attn_default(LoadOptions(kv_cache_type="f16"), True) is False


def test_the_batch_engine_takes_a_quantized_kv_cache_on_the_cpu(f16: Path) -> None:
    """It failed with 'could not create a context' where load_model worked (review, Dec 2026)."""
    from amalia_edge.runtime.artifacts import inspect_gguf
    from amalia_edge.serve.batch import LlamaBatchEngine

    opts = LoadOptions(n_threads=1, kv_cache_type="q8_0")
    engine = LlamaBatchEngine(inspect_gguf(f16), n_ctx=256, parallel=2, options=opts, gpu=False)
    engine.close()
