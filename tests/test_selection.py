"""Selection: doesn't fit, backend missing, overrides, ranking, cached autotune, load fallback.

Backends here are small fakes registered through the real registry (the way a plugin would),
so what is tested is the real selection, error and fallback logic; the real llama.cpp
backend is exercised in test_runtime_llamacpp.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from amalia_edge.artifacts.manifest import ArtifactEntry, Manifest
from amalia_edge.device import DeviceInfo
from amalia_edge.errors import (
    ArtifactError,
    BackendError,
    BackendUnavailableError,
    ContextOverflowError,
    SelectionError,
)
from amalia_edge.runtime import registry
from amalia_edge.runtime.artifacts import Artifact, ModelShape, ModelSource, resolve_model
from amalia_edge.runtime.backend import (
    Availability,
    Backend,
    BackendSession,
    EventBuilder,
    LoadOptions,
    MemoryEstimate,
)
from amalia_edge.runtime.chat import Message
from amalia_edge.runtime.events import Event, Finished, PromptProcessed, Started, TokenEvent
from amalia_edge.runtime.model import load_model
from amalia_edge.runtime.sampling import SamplingParams
from amalia_edge.runtime.selection import DEFAULT_BANDWIDTH, autotune, select

GiB = 1 << 30
SHAPE = ModelShape("llama", 42, 4096, 32, 8, 128, 12288, 128256, 4096)  # EuroLLM-9B-like
PARAMS = 9_150_000_000


class FakeSession(BackendSession):
    """Replies with a scripted text, one character per token."""

    def __init__(self, backend: str, artifact: Artifact, n_ctx: int, reply: str) -> None:
        self.backend, self.artifact, self.n_ctx, self.reply = backend, artifact, n_ctx, reply
        self.prompts: list[str] = []

    def tokenize(self, text: str, *, add_bos: bool = True, special: bool = True) -> list[int]:
        return [ord(c) for c in text]

    def detokenize(self, token_ids: Sequence[int]) -> str:
        return "".join(map(chr, token_ids))

    chat_template = None
    bos_token = ""
    eos_token = ""

    def stream(
        self,
        prompt: str | Sequence[int],
        *,
        sampling: SamplingParams | None = None,
        max_tokens: int = 256,
        stop: Sequence[str] = (),
        cancel: threading.Event | None = None,
    ) -> Iterator[Event]:
        self.prompts.append(prompt if isinstance(prompt, str) else self.detokenize(prompt))
        ids = self.prompt_ids(prompt)
        eb = EventBuilder(
            self.backend, self.artifact.label, self.n_ctx, ids, stop, lambda t: chr(t).encode()
        )
        yield eb.started()
        yield eb.prompt_processed(len(ids), 0.001)
        for i, ch in enumerate(self.reply[:max_tokens]):
            yield eb.token(ord(ch), final=i == min(len(self.reply), max_tokens) - 1)
        yield eb.finish("length")


class FakeBackend(Backend):
    """Configurable through class attributes (subclassed per test)."""

    name: ClassVar[str] = "fake-a"
    artifact_kinds: ClassVar[tuple[str, ...]] = ("fakefmt",)
    ok: ClassVar[bool] = True
    gpu: ClassVar[bool] = True
    fail_quants: ClassVar[tuple[str, ...]] = ()
    loads: ClassVar[list[str]] = []

    def probe(self, device: DeviceInfo | None) -> Availability:
        if not self.ok:
            return Availability(
                False, f"{self.name} is not installed", install_hint=f"pip install {self.name}"
            )
        return Availability(True, f"{self.name} ready", details={"gpu_offload": self.gpu})

    def memory_estimate(
        self, artifact: Artifact, n_ctx: int, options: LoadOptions | None = None
    ) -> MemoryEstimate:
        from amalia_edge.runtime.backend import kv_cache_bytes

        assert artifact.shape is not None
        kv = kv_cache_bytes(
            artifact.shape.n_layers, artifact.shape.n_kv_heads, artifact.shape.head_dim, n_ctx
        )
        return MemoryEstimate(artifact.size, kv, 256 << 20)

    def decode_bytes_per_token(self, artifact: Artifact, n_ctx: int) -> int:
        return artifact.size

    def load(
        self, artifact: Artifact, n_ctx: int, options: LoadOptions | None = None
    ) -> BackendSession:
        type(self).loads.append(f"{self.name}:{artifact.quant}")
        if artifact.quant in self.fail_quants:
            raise BackendError(f"{self.name} ran out of memory loading {artifact.quant}")
        return FakeSession(self.name, artifact, n_ctx, reply=f"olá de {self.name}")


def _artifact(
    quant: str, gib: float, bpw: float, quality: dict[str, Any] | None = None
) -> Artifact:
    return Artifact(
        kind="fakefmt", quant=quant, path=Path(f"/x/{quant}.bin"), size=int(gib * GiB),
        sha256=quant.lower() * 4, bpw=bpw, params=PARAMS, shape=SHAPE, quality=quality,
    )  # fmt: skip


def _source(*arts: Artifact) -> ModelSource:
    return ModelSource(Path("/x"), "directory", list(arts), "fake")


def _device(avail_gib: float | None, bandwidth: float | None = 204.8e9) -> DeviceInfo:
    return DeviceInfo(
        is_jetson=True, arch="aarch64", module_id="p3701-0005", l4t_release="36.4.3",
        cuda_cc="8.7", mem_total=64 * GiB,
        mem_available=None if avail_gib is None else int(avail_gib * GiB),
        memory_bandwidth=None if bandwidth is None else int(bandwidth),
        memory_bandwidth_source="board table",
    )  # fmt: skip


ARTS = (
    _artifact("F16", 17.0, 16.0),
    _artifact("Q8_0", 9.1, 8.5),
    _artifact("Q4_K_M", 5.4, 4.9),
    _artifact("Q2_K", 3.2, 2.9),
)


def _only(*classes: type[Backend]) -> list[tuple[str, Backend | BackendError]]:
    return [(c.name, c()) for c in classes]


def test_ranks_by_estimated_speed_within_quality_tier() -> None:
    sel = select(_source(*ARTS), _device(50), 4096, backends=_only(FakeBackend))
    assert sel.chosen is not None and sel.chosen.artifact.quant == "Q4_K_M"
    order = [c.artifact.quant for c in sel.viable()]
    # Q2_K is fastest but below 4.4 bpw: ranked after every good-quality candidate
    assert order == ["Q4_K_M", "Q8_0", "F16", "Q2_K"]
    q4 = sel.chosen
    assert q4.est_tps == pytest.approx(204.8e9 / (5.4 * GiB))
    assert any("below the quality bar" in r for r in sel.viable()[-1].reasons)


def test_measured_kld_overrides_bpw_proxy() -> None:
    arts = (
        _artifact("Q8_0", 9.1, 8.5, {"kld_mean": 0.002}),
        _artifact("Q4_K_M", 5.4, 4.9, {"kld_mean": 0.25}),  # measured too lossy for this model
    )
    sel = select(_source(*arts), _device(50), 2048, backends=_only(FakeBackend))
    assert sel.chosen is not None and sel.chosen.artifact.quant == "Q8_0"
    assert "KLD 0.0020" in " ".join(sel.chosen.reasons)


def test_doesnt_fit_rejects_with_numbers_and_next_fits() -> None:
    sel = select(_source(*ARTS), _device(8.0), 4096, backends=_only(FakeBackend))
    by = {c.artifact.quant: c for c in sel.candidates}
    assert by["F16"].status == "rejected" and by["Q8_0"].status == "rejected"
    assert (
        "Q8_0 needs 10.01 GiB (weights 9.10 GiB + KV cache 0.66 GiB for 4096 tokens"
        in by["Q8_0"].reasons[0]
    )
    assert "8.00 GiB is available" in by["Q8_0"].reasons[0]
    assert sel.chosen is not None and sel.chosen.artifact.quant == "Q4_K_M"


def test_nothing_fits_says_how_much_and_which_quant_would() -> None:
    sel = select(_source(*ARTS[:2]), _device(6.0), 4096, backends=_only(FakeBackend))
    assert sel.chosen is None
    err = sel.error()
    assert isinstance(err, SelectionError)
    msg = str(err)
    assert "Q8_0 needs 10.01 GiB" in msg and "6.00 GiB is available" in msg
    # 6 GiB - KV 0.66 - 0.25 overhead leaves ~5.1 GiB for 9.15e9 params: at most ~4.8 bpw
    assert "would fit" in msg and "--quant Q4_K_S" in msg
    assert "\n" not in msg


def test_backend_missing_falls_to_other_backend_with_reason() -> None:
    class Missing(FakeBackend):
        name = "fake-missing"
        ok = False

    sel = select(_source(*ARTS), _device(50), 2048, backends=_only(Missing, FakeBackend))
    assert sel.chosen is not None and sel.chosen.backend == "fake-a"
    missing = [c for c in sel.candidates if c.backend == "fake-missing"]
    assert missing and all(c.status == "rejected" for c in missing)
    assert missing[0].reasons == ["fake-missing is not installed"]
    assert missing[0].install_hint == "pip install fake-missing"


def test_requested_backend_missing_is_one_line_with_install_hint() -> None:
    class Missing(FakeBackend):
        name = "fake-missing"
        ok = False

    registry.register("fake-missing", Missing)
    try:
        sel = select(_source(*ARTS), _device(50), 2048, backend="fake-missing",
                     backends=_only(Missing, FakeBackend))  # fmt: skip
        err = sel.error()
        assert isinstance(err, BackendUnavailableError)
        assert str(err) == (
            "backend fake-missing cannot run here: fake-missing is not installed: "
            "install it: pip install fake-missing"
        )
    finally:
        registry.unregister("fake-missing")


def test_overrides_backend_and_quant() -> None:
    class Other(FakeBackend):
        name = "fake-b"

    registry.register("fake-b", Other)
    try:
        both = _only(FakeBackend, Other)
        sel = select(_source(*ARTS), _device(50), 2048, quant="q8_0", backends=both)
        assert sel.chosen is not None and sel.chosen.artifact.quant == "Q8_0"
        assert {c.artifact.quant for c in sel.viable()} == {"Q8_0"}
        assert any(r == "--quant q8_0 asked" for c in sel.candidates for r in c.reasons)
        sel = select(_source(*ARTS), _device(50), 2048, backend="FAKE-B", backends=both)
        assert {c.backend for c in sel.viable()} == {"fake-b"}
        sel = select(_source(*ARTS), _device(50), 2048, quant="IQ1_S", backends=both)
        err = sel.error()
        assert isinstance(err, ArtifactError)
        assert "no IQ1_S artifact" in str(err) and "F16, Q2_K, Q4_K_M, Q8_0" in str(err)
    finally:
        registry.unregister("fake-b")


def test_ctx_larger_than_models() -> None:
    sel = select(_source(ARTS[2]), _device(50), 8192, backends=_only(FakeBackend))
    err = sel.error()
    assert isinstance(err, ContextOverflowError)
    assert "context 8192 is larger than the model's 4096 tokens" in str(err)


def test_unknown_bandwidth_uses_documented_default() -> None:
    sel = select(_source(ARTS[2]), _device(50, bandwidth=None), 2048, backends=_only(FakeBackend))
    assert sel.bandwidth == DEFAULT_BANDWIDTH and sel.bandwidth_source == "assumed default"
    assert "assumed default" in sel.format_table()


def test_cached_autotune(tmp_path: Path) -> None:
    calls: list[str] = []
    # Q8_0 "measures" faster than Q4_K_M although the estimate says otherwise
    speeds = {"Q4_K_M": 20.0, "Q8_0": 31.0, "F16": 11.0}

    def measure(c: Any) -> float:
        calls.append(c.artifact.quant)
        return speeds[c.artifact.quant]

    cache = tmp_path / "autotune.json"
    dev = _device(50)
    sel = autotune(select(_source(*ARTS[:3]), dev, 2048, backends=_only(FakeBackend)), dev,
                   path=cache, measure=measure)  # fmt: skip
    assert sorted(calls) == ["F16", "Q4_K_M", "Q8_0"]
    assert sel.chosen is not None and sel.chosen.artifact.quant == "Q8_0"
    assert sel.chosen.measured_tps == 31.0 and "fastest measured" in sel.chosen.reasons
    assert cache.is_file()
    calls.clear()
    sel2 = autotune(select(_source(*ARTS[:3]), dev, 2048, backends=_only(FakeBackend)), dev,
                    path=cache, measure=measure)  # fmt: skip
    assert calls == []  # served from the cache
    assert sel2.chosen is not None and sel2.chosen.artifact.quant == "Q8_0"
    assert any(r.startswith("autotune cache (") for r in sel2.chosen.reasons)
    # another power mode is another fingerprint: measured again
    other = _device(50)
    other.power_mode = "15W"
    autotune(select(_source(*ARTS[:3]), other, 2048, backends=_only(FakeBackend)), other,
             path=cache, measure=measure)  # fmt: skip
    assert sorted(calls) == ["F16", "Q4_K_M", "Q8_0"]


@pytest.fixture
def fake_dir(tmp_path: Path) -> Path:
    entries = []
    for quant, size in (("Q8_0", 9000), ("Q4_K_M", 5000)):
        (tmp_path / f"{quant}.bin").write_bytes(b"\0" * size)
        entries.append(ArtifactEntry("fakefmt", quant, f"{quant}.bin", size, quant * 8, bpw=8.0))
    model = {"name": "Fake", "num_attention_heads": 4, "hidden_size": 64, "num_hidden_layers": 2,
             "num_key_value_heads": 2, "vocab_size": 100, "context_length": 1024}  # fmt: skip
    Manifest(model=model, artifacts=entries).write(tmp_path)
    return tmp_path


def test_load_failure_falls_back_to_next_candidate(fake_dir: Path) -> None:
    class Flaky(FakeBackend):
        name = "fake-flaky"
        fail_quants = ("Q4_K_M",)
        loads: ClassVar[list[str]] = []

    registry.register("fake-flaky", Flaky)
    try:
        with load_model(fake_dir, n_ctx=512, device=_device(50)) as model:
            assert Flaky.loads == ["fake-flaky:Q4_K_M", "fake-flaky:Q8_0"]
            assert model.artifact.quant == "Q8_0"
            by = {c.artifact.quant: c for c in model.selection.candidates}
            assert by["Q4_K_M"].status == "failed"
            assert (
                "load failed: fake-flaky ran out of memory loading Q4_K_M" in by["Q4_K_M"].reasons
            )
            assert by["Q8_0"].status == "chosen"
            assert "fallback: fake-flaky Q4_K_M failed to load" in by["Q8_0"].reasons
            events = list(model.stream_chat([Message("user", "Olá")], max_tokens=64))
    finally:
        registry.unregister("fake-flaky")
    assert isinstance(events[0], Started) and isinstance(events[1], PromptProcessed)
    assert isinstance(events[-1], Finished) and events[-1].text == "olá de fake-flaky"
    assert all(isinstance(e, TokenEvent) for e in events[2:-1])


def test_every_load_failing_is_one_error(fake_dir: Path) -> None:
    class Broken(FakeBackend):
        name = "fake-broken"
        fail_quants = ("Q4_K_M", "Q8_0")

    registry.register("fake-broken", Broken)
    try:
        with pytest.raises(BackendError, match="every candidate failed to load; last: fake-broken"):
            load_model(fake_dir, n_ctx=512, device=_device(50))
    finally:
        registry.unregister("fake-broken")


def test_stream_chat_uses_template_and_system_prompt(fake_dir: Path) -> None:
    registry.register("fake-a", FakeBackend)
    try:
        with load_model(resolve_model(fake_dir), n_ctx=512, device=_device(50)) as model:
            model.generate([Message("user", "Olá")], system="Sê breve.")
            session = model.session
            assert isinstance(session, FakeSession)
            assert session.prompts[-1] == (
                "<|im_start|>system\nSê breve.<|im_end|>\n<|im_start|>user\nOlá<|im_end|>\n"
                "<|im_start|>assistant\n"
            )
    finally:
        registry.unregister("fake-a")


def test_gpu_backend_on_discrete_gpu_is_checked_against_free_vram() -> None:
    from amalia_edge.device import GpuInfo

    gpu = GpuInfo("RTX 4060", memory_total=8 * GiB, memory_free=7 * GiB)
    dev = DeviceInfo(
        is_jetson=False, arch="x86_64", mem_total=128 * GiB, mem_available=100 * GiB, gpus=[gpu]
    )

    class Cpu(FakeBackend):
        name = "fake-cpu"
        gpu = False

    gpu_sel = select(_source(*ARTS[1:3]), dev, 2048, backends=_only(FakeBackend))
    by = {c.artifact.quant: c for c in gpu_sel.candidates}
    assert by["Q8_0"].status == "rejected" and "7.00 GiB is available" in by["Q8_0"].reasons[0]
    assert by["Q4_K_M"].status == "chosen" and by["Q4_K_M"].memory_available == 7 * GiB
    cpu_sel = select(_source(*ARTS[1:3]), dev, 2048, backends=_only(Cpu))
    assert all(c.viable and c.memory_available == 100 * GiB for c in cpu_sel.candidates)
