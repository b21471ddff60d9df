"""The TUI's seam to the runtime: MODEL resolution and the "why this backend" lines."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from amalia_edge.errors import ArtifactError
from amalia_edge.runtime.artifacts import Artifact
from amalia_edge.runtime.chat import Message
from amalia_edge.runtime.sampling import SamplingParams
from amalia_edge.runtime.selection import BackendStatus, Candidate, Selection
from amalia_edge.tui import model as model_mod
from amalia_edge.tui.history import ChatMessage
from amalia_edge.tui.settings import ChatSettings, ModelSpec


def _artifact(kind: str, quant: str) -> Artifact:
    return Artifact(kind=kind, quant=quant, path=Path(f"/m/{quant}.{kind}"), size=1)


def test_explain_selection_in_portuguese_with_usable_ones_apart() -> None:
    from amalia_edge.runtime.backend import MemoryEstimate
    from amalia_edge.tui.i18n import Messages

    est = MemoryEstimate(weights=5 << 30, kv_cache=1 << 29, overhead=1 << 29)
    chosen = Candidate("llama.cpp", _artifact("gguf", "Q4_K_M"), "chosen", ["fits"], est, 60 << 30)
    chosen.est_tps = 21.04
    other = Candidate("llama.cpp", _artifact("gguf", "F16"), "ok", ["slower"], est, 60 << 30)
    failed = Candidate("onnxruntime", _artifact("onnx", "int4"), "failed", ["load failed: boom"])
    big = Candidate("llama.cpp", _artifact("gguf", "BF16"), "rejected", ["too big"], est, 4 << 30)
    big.kind = "memory"
    sel = Selection(
        candidates=[chosen, other, failed, big],
        backends=[
            BackendStatus("llama.cpp", True, "installed"),
            BackendStatus("tensorrt", False, "no TensorRT", install_hint="run jetson/setup.sh"),
        ],
        n_ctx=2048,
        bandwidth=204.8e9,
        bandwidth_source="board table",
    )
    why = model_mod.explain_selection(sel, Messages("pt"))
    assert why.chosen == [
        "llama.cpp · gguf Q4_K_M\n    cabe na memória: 6.00 GiB de 60.00 GiB disponíveis"
        "\n    cerca de 21.0 tok/s (estimativa)"
    ]
    assert why.alternatives == [
        "llama.cpp · gguf F16\n    cabe na memória: 6.00 GiB de 60.00 GiB disponíveis"
    ]
    assert why.rejected == [
        "onnxruntime · onnx int4\n    falhou ao carregar",
        "llama.cpp · gguf BF16\n    precisa de 6.00 GiB, há 4.00 GiB disponíveis",
        "tensorrt: motor indisponível neste dispositivo",
    ]
    english = model_mod.explain_selection(sel, Messages("en"))
    assert english.rejected[-1] == "tensorrt: not available on this device"
    assert model_mod.explain_selection(None, Messages("pt")) == model_mod.Explanation()


def test_no_model_means_the_runtime_demo_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The TUI has no demo cache of its own: it asks the runtime, as every command does, and
    # without progress bars (they would draw over the app).
    from amalia_edge.runtime import artifacts

    calls: list[bool] = []

    def fake(*, progress: bool = False) -> Path:
        calls.append(progress)
        return tmp_path / "demo-0123"

    monkeypatch.setattr(artifacts, "default_model_path", fake)
    assert model_mod.resolve_model("x.gguf") == "x.gguf" and calls == []
    assert model_mod.resolve_model(None) == tmp_path / "demo-0123"
    assert calls == [False]


def test_default_threads_leave_a_core_for_the_interface(monkeypatch: pytest.MonkeyPatch) -> None:
    import psutil

    for physical, want in ((12, 11), (2, 1), (1, 1), (None, max(1, (os.cpu_count() or 1) - 1))):
        monkeypatch.setattr(psutil, "cpu_count", lambda logical=True, n=physical: n)
        assert model_mod.default_threads() == want


def test_load_failure_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="does not exist") as info:
        model_mod.load(ModelSpec(str(tmp_path / "missing.gguf")))
    assert "\n" not in str(info.value)


def test_request_is_system_then_history_in_runtime_types() -> None:
    settings = ChatSettings(system="És útil.", temperature=0.2, top_p=0.9)
    msgs = model_mod.request_messages(
        settings, [ChatMessage("user", "Olá"), ChatMessage("assistant", "Olá!")]
    )
    assert msgs == [
        Message(role="system", content="És útil."),
        Message(role="user", content="Olá"),
        Message(role="assistant", content="Olá!"),
    ]
    params = model_mod.sampling_params(settings)
    assert isinstance(params, SamplingParams) and (params.temperature, params.top_p) == (0.2, 0.9)
