"""TensorRT engine cache: profiles, keys, staleness, estimates, and the build decision.

TensorRT and CUDA cannot run here: the pure parts are tested directly, ``ensure_engine``'s
decisions with TensorRT and the GPU query replaced by fakes at their one import point, and
the backend's probe against the real absence of TensorRT on this machine.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from amalia_edge.artifacts.onnx import GraphInfo
from amalia_edge.convert import tensorrt as trt_mod
from amalia_edge.convert.tensorrt import (
    EngineKey,
    EngineMeta,
    EngineProfile,
    EngineProfileError,
    GpuIdentity,
    check_fits,
    estimate_memory,
    expected_build_seconds,
    find_engine,
    is_oom,
    oom_error,
    profile_for,
    stale_reasons,
)
from amalia_edge.runtime import cuda

INFO = GraphInfo("fp16", "float16", 2, 2, 64, 1536, 2048)
ORIN = GpuIdentity("Orin", "8.7")


def key(**kw: Any) -> EngineKey:
    base: dict[str, Any] = dict(
        gpu_name="Orin",
        compute_capability="8.7",
        tensorrt_version="10.3.0",
        onnx_sha256="a" * 64,
        precision="fp16",
        profile=EngineProfile(2048, 512),
    )
    base.update(kw)
    return EngineKey(**base)


def write_engine(cache: Path, k: EngineKey, *, seconds: float = 100.0, size: int = 10) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    engine = cache / f"{k.digest()}.engine"
    engine.write_bytes(b"x" * size)
    meta = EngineMeta(k, engine.name, size, "0" * 64, "model-fp16.onnx", 1000, seconds, time.time())
    (cache / f"{k.digest()}.json").write_text(json.dumps(meta.to_dict()))
    return engine


def test_profile_shapes_cover_prefill_and_decode() -> None:
    shapes = EngineProfile(2048, 512).shapes(INFO)
    assert shapes["input_ids"] == ((1, 1), (1, 1), (1, 512))
    assert shapes["attention_mask"] == ((1, 1), (1, 1024), (1, 2048))
    assert shapes["past_key_values.0.key"] == ((1, 2, 0, 64), (1, 2, 1023, 64), (1, 2, 2047, 64))
    assert set(shapes) == {"input_ids", "position_ids", "attention_mask", *INFO.past_names()}


def test_profile_for_clamps_the_prefill_chunk_and_refuses_past_the_trained_context() -> None:
    assert profile_for(256, INFO) == EngineProfile(256, 256)
    assert profile_for(4096 // 2, INFO, 128) == EngineProfile(2048, 128)
    with pytest.raises(EngineProfileError, match="max_position_embeddings"):
        profile_for(4096, INFO)


def test_context_longer_than_the_profile_names_the_limit_and_the_rebuild() -> None:
    with pytest.raises(EngineProfileError) as exc:
        check_fits(EngineProfile(1024, 256), 3000)
    msg = str(exc.value)
    assert "at most 1024" in msg and "--ctx 3000" in msg and "build-engine" in msg


def test_key_digest_changes_with_every_field() -> None:
    k = key()
    assert k.digest() == key().digest()
    variants = [
        key(gpu_name="NVIDIA GeForce RTX 4090"),
        key(compute_capability="8.9"),
        key(tensorrt_version="10.4.0"),
        key(onnx_sha256="b" * 64),
        key(precision="int8"),
        key(profile=EngineProfile(4096, 512)),
    ]
    assert len({v.digest() for v in variants} | {k.digest()}) == 7
    assert EngineKey.from_dict(json.loads(json.dumps(k.to_dict()))) == k


@pytest.mark.parametrize(
    ("have", "fragment"),
    [
        (key(gpu_name="NVIDIA A100", compute_capability="8.0"), "built for GPU 'NVIDIA A100'"),
        (key(tensorrt_version="10.0.1"), "TensorRT 10.0.1, this machine has 10.3.0"),
        (key(onnx_sha256="c" * 64), "different ONNX file"),
        (key(profile=EngineProfile(1024, 512)), "allows 1024 tokens of context, 2048 requested"),
        (key(recipe=0), "older amalia-edge recipe"),
    ],
)
def test_stale_reasons_say_why(have: EngineKey, fragment: str) -> None:
    reasons = stale_reasons(have, key())
    assert len(reasons) == 1 and fragment in reasons[0]


def test_a_larger_profile_is_not_stale() -> None:
    assert stale_reasons(key(profile=EngineProfile(4096, 512)), key()) == []


def test_find_engine_prefers_the_smallest_covering_engine_and_lists_stale_ones(
    tmp_path: Path,
) -> None:
    cache = tmp_path / "engines"
    write_engine(cache, key(profile=EngineProfile(8192 // 2, 512)))
    best = write_engine(cache, key())
    write_engine(cache, key(tensorrt_version="10.0.1"))
    write_engine(cache, key(precision="int8"))  # another precision: neither usable nor stale
    (cache / "garbage.json").write_text("{not json")
    found = find_engine(cache, key())
    assert found.path == best
    stale = dict(found.stale)
    assert any("TensorRT 10.0.1" in r for rs in stale.values() for r in rs)
    assert any("unreadable metadata" in r for r in stale["garbage.json"])


def test_truncated_engine_file_is_stale(tmp_path: Path) -> None:
    cache = tmp_path / "engines"
    engine = write_engine(cache, key(), size=100)
    engine.write_bytes(b"x" * 10)  # a killed copy
    found = find_engine(cache, key())
    assert found.path is None
    assert "10 bytes, metadata says 100" in found.describe_stale()


def test_memory_estimate_counts_weights_both_kv_buffers_and_logits() -> None:
    est = estimate_memory(1_000_000, INFO, EngineProfile(2048, 512))
    kv_per_token = 2 * 2 * 2 * 64 * 2  # k+v, layers, kv heads, head_dim, fp16
    assert est.kv_cache == 2 * kv_per_token * 2048
    assert est.activations == 512 * 1536 * 4 + 250_000
    assert est.total == est.weights + est.kv_cache + est.activations


def test_expected_build_time_comes_from_earlier_builds_only(tmp_path: Path) -> None:
    cache = tmp_path / "engines"
    assert expected_build_seconds(cache, 5000, ORIN) is None
    write_engine(cache, key(), seconds=100.0)  # 1000 ONNX bytes in 100 s
    assert expected_build_seconds(cache, 5000, ORIN) == pytest.approx(500.0)
    assert expected_build_seconds(cache, 5000, GpuIdentity("Thor", "11.0")) is None


def test_out_of_memory_is_recognised_and_suggests_a_smaller_profile() -> None:
    assert is_oom(
        ["[defaultAllocator.cpp::allocate::20] Error Code 1: Cuda Runtime (out of memory)"]
    )
    assert not is_oom(["[W] Weights of type INT64 cast down to INT32"])
    err = oom_error(EngineProfile(4096, 512), "fp16")
    assert "--ctx 2048" in str(err) and "INT4" in str(err) and "out of GPU memory" in str(err)


def test_gpu_slug_is_file_name_safe() -> None:
    assert GpuIdentity("NVIDIA GeForce RTX 4090", "8.9").slug == "NVIDIA-GeForce-RTX-4090-sm8-9"


def test_tensorrt_missing_gives_the_jetpack_install_hint() -> None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("TensorRT is installed here")
    from amalia_edge.errors import BackendUnavailableError

    with pytest.raises(BackendUnavailableError, match="JetPack"):
        trt_mod.import_tensorrt()


# --- ensure_engine's decisions, with TensorRT and the GPU query faked at their import points


@pytest.fixture
def onnx_artifacts(tiny_checkpoint: Path, tmp_path: Path) -> Path:
    pytest.importorskip("onnx")
    from amalia_edge.artifacts.manifest import Manifest
    from amalia_edge.checkpoint.reader import open_checkpoint
    from amalia_edge.convert.onnx import export_onnx

    entry = export_onnx(open_checkpoint(tiny_checkpoint), tmp_path, "fp16")
    Manifest(artifacts=[entry]).write(tmp_path)
    return tmp_path


@pytest.fixture
def fake_trt(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    builds: list[Any] = []
    for mod in (trt_mod, cuda):  # the builder and the backend both ask
        monkeypatch.setattr(mod, "import_tensorrt", lambda: SimpleNamespace(__version__="10.3.0"))
        monkeypatch.setattr(mod, "current_gpu", lambda device=0: ORIN)

    def fake_build(
        onnx_path: Path, sha: str, info: GraphInfo, profile: EngineProfile, cache: Path, **kw: Any
    ) -> tuple[EngineMeta, Path]:
        k = EngineKey(ORIN.name, ORIN.compute_capability, "10.3.0", sha, info.precision, profile)
        builds.append(k)
        path = write_engine(cache, k)
        return EngineMeta.from_dict(json.loads(path.with_suffix(".json").read_text())), path

    monkeypatch.setattr(trt_mod, "build_engine", fake_build)
    return builds


def test_first_use_builds_then_reuses(onnx_artifacts: Path, fake_trt: list[Any]) -> None:
    meta, path = trt_mod.ensure_engine(onnx_artifacts, "fp16", 1024)
    assert len(fake_trt) == 1 and meta.key.profile == EngineProfile(1024, 512)
    _, path2 = trt_mod.ensure_engine(onnx_artifacts, "fp16", 512)  # covered: no build
    assert len(fake_trt) == 1 and path2 == path
    trt_mod.ensure_engine(onnx_artifacts, "fp16", 512, force=True)
    assert len(fake_trt) == 2


def test_engine_for_another_gpu_or_tensorrt_is_rebuilt_with_the_reason(
    onnx_artifacts: Path, fake_trt: list[Any]
) -> None:
    from amalia_edge.artifacts.manifest import sha256_file
    from amalia_edge.convert.tensorrt import engine_dir

    sha = sha256_file(onnx_artifacts / "model-fp16.onnx")
    cache = engine_dir(onnx_artifacts)
    write_engine(
        cache,
        key(
            onnx_sha256=sha,
            gpu_name="NVIDIA A100",
            compute_capability="8.0",
            profile=EngineProfile(1024, 512),
        ),
    )
    write_engine(
        cache, key(onnx_sha256=sha, tensorrt_version="8.6.2", profile=EngineProfile(1024, 512))
    )
    said: list[str] = []
    meta, _ = trt_mod.ensure_engine(onnx_artifacts, "fp16", 1024, report=said.append)
    assert len(fake_trt) == 1 and meta.key.gpu_name == "Orin"
    text = "\n".join(said)
    assert "NVIDIA A100" in text and "TensorRT 8.6.2" in text and "rebuilding" in text


def test_onnx_that_does_not_match_the_manifest_is_refused(
    onnx_artifacts: Path, fake_trt: list[Any]
) -> None:
    from amalia_edge.errors import ArtifactError

    graph = onnx_artifacts / "model-fp16.onnx"
    graph.write_bytes(graph.read_bytes() + b"\0")
    with pytest.raises(ArtifactError, match="does not match the manifest"):
        trt_mod.ensure_engine(onnx_artifacts, "fp16", 1024)
    assert fake_trt == []


def test_truncated_external_data_is_refused(onnx_artifacts: Path, fake_trt: list[Any]) -> None:
    from amalia_edge.errors import ArtifactError

    data = onnx_artifacts / "model-fp16.onnx.data"
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(ArtifactError, match="incomplete"):
        trt_mod.ensure_engine(onnx_artifacts, "fp16", 1024)


def test_missing_precision_says_how_to_export_it(onnx_artifacts: Path, fake_trt: list[Any]) -> None:
    from amalia_edge.errors import ArtifactError

    with pytest.raises(ArtifactError, match="--onnx int8"):
        trt_mod.ensure_engine(onnx_artifacts, "int8", 1024)


# --- the native TensorRT backend's edges


def _onnx_artifact(art_dir: Path) -> Any:
    from amalia_edge.runtime.artifacts import resolve_model

    return next(a for a in resolve_model(art_dir).artifacts if a.kind == "onnx")


def test_backend_is_skipped_with_the_reason_when_tensorrt_is_missing() -> None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("TensorRT is installed here")
    from amalia_edge.runtime.backends.tensorrt import TensorRTBackend

    orin: Any = SimpleNamespace(has_cuda=True, cuda_cc="8.7")
    av = TensorRTBackend().probe(orin)
    assert not av.ok and "TensorRT is not installed" in av.reason
    assert av.install_hint is not None and "JetPack" in av.install_hint


def test_backend_accepts_only_what_tensorrt_parses(onnx_artifacts: Path) -> None:
    from dataclasses import replace

    from amalia_edge.runtime.backends.tensorrt import TensorRTBackend

    art = _onnx_artifact(onnx_artifacts)
    be = TensorRTBackend()
    assert be.accepts(art)
    assert not be.accepts(replace(art, quant="int4"))
    assert not be.accepts(replace(art, kind="gguf"))


def test_backend_memory_estimate_uses_the_external_data_size(onnx_artifacts: Path) -> None:
    from amalia_edge.runtime.backends.tensorrt import TensorRTBackend

    art = _onnx_artifact(onnx_artifacts)
    est = TensorRTBackend().memory_estimate(art, 1024)
    data = (onnx_artifacts / "model-fp16.onnx.data").stat().st_size
    assert est.weights == data + art.size
    from amalia_edge.artifacts.onnx import read_graph_info

    g = read_graph_info(art.path)
    assert est.kv_cache == 2 * 2 * g.num_layers * g.num_kv_heads * g.head_dim * 2 * 1024


def test_cached_engine_too_small_without_building_names_the_limit(
    onnx_artifacts: Path, fake_trt: list[Any]
) -> None:
    from amalia_edge.artifacts.manifest import sha256_file
    from amalia_edge.convert.tensorrt import engine_dir
    from amalia_edge.runtime.backend import LoadOptions
    from amalia_edge.runtime.backends.tensorrt import TensorRTBackend

    sha = sha256_file(onnx_artifacts / "model-fp16.onnx")
    write_engine(engine_dir(onnx_artifacts), key(onnx_sha256=sha, profile=EngineProfile(1024, 512)))
    with pytest.raises(EngineProfileError, match=r"at most 1024.*build-engine .* --ctx 2000"):
        TensorRTBackend().load(
            _onnx_artifact(onnx_artifacts), 2000, LoadOptions(extra={"build_engine": False})
        )
    assert fake_trt == []


# --- build_engine's flow against a fake TensorRT builder (the API surface it calls)


class FakeBuilderWorld:
    """Records what build_engine asked of TensorRT; ``outcome`` picks success/oom/parse."""

    def __init__(self, outcome: str) -> None:
        self.outcome = outcome
        self.shapes: dict[str, Any] = {}
        self.flags: list[Any] = []
        self.network_flags: int | None = None
        self.timing_in: bytes | None = None

    def module(self) -> Any:
        world = self

        class ILogger:
            Severity = SimpleNamespace(INTERNAL_ERROR=0, ERROR=1, WARNING=2, INFO=3, VERBOSE=4)

            def __init__(self) -> None:
                pass

        class IProgressMonitor:
            def __init__(self) -> None:
                pass

        class Parser:
            def __init__(self, network: Any, logger: Any) -> None:
                self.num_errors = 1 if world.outcome == "parse" else 0

            def parse_from_file(self, path: str) -> bool:
                assert Path(path).exists()
                return world.outcome != "parse"

            def get_error(self, i: int) -> str:
                return "DequantizeLinear: unsupported attribute block_size"

        class Config:
            progress_monitor = None

            def set_flag(self, flag: Any) -> None:
                world.flags.append(flag)

            def set_memory_pool_limit(self, pool: Any, n: int) -> None:
                pass

            def add_optimization_profile(self, p: Any) -> None:
                pass

            def create_timing_cache(self, blob: bytes) -> Any:
                world.timing_in = blob
                return SimpleNamespace(serialize=lambda: b"timing-v1")

            def set_timing_cache(self, cache: Any, ignore_mismatch: bool) -> None:
                self.cache = cache

            def get_timing_cache(self) -> Any:
                return self.cache

        class Profile:
            def set_shape(self, name: str, mn: Any, op: Any, mx: Any) -> None:
                world.shapes[name] = (mn, op, mx)

        class Builder:
            def __init__(self, logger: Any) -> None:
                self.logger = logger

            def create_network(self, flags: int) -> Any:
                world.network_flags = flags
                return object()

            def create_builder_config(self) -> Config:
                return Config()

            def create_optimization_profile(self) -> Profile:
                return Profile()

            def build_serialized_network(self, network: Any, config: Any) -> Any:
                if world.outcome == "oom":
                    self.logger.log(
                        ILogger.Severity.ERROR,
                        "Error Code 2: OutOfMemory (Requested size was 9 GiB)",
                    )
                    return None
                return b"ENGINE"

        return SimpleNamespace(
            __version__="10.3.0",
            ILogger=ILogger,
            IProgressMonitor=IProgressMonitor,
            Builder=Builder,
            OnnxParser=Parser,
            NetworkDefinitionCreationFlag=SimpleNamespace(STRONGLY_TYPED=5),
            BuilderFlag=SimpleNamespace(FP16="FP16"),
            MemoryPoolType=SimpleNamespace(WORKSPACE="WORKSPACE"),
        )


def _build(onnx_artifacts: Path, world: FakeBuilderWorld, monkeypatch: pytest.MonkeyPatch) -> Any:
    from amalia_edge.artifacts.onnx import read_graph_info

    monkeypatch.setattr(trt_mod, "import_tensorrt", world.module)
    graph = onnx_artifacts / "model-fp16.onnx"
    info = read_graph_info(graph)
    said: list[str] = []
    out = trt_mod.build_engine(
        graph,
        "f" * 64,
        info,
        EngineProfile(256, 64),
        onnx_artifacts / "engines",
        gpu=ORIN,
        report=said.append,
    )
    return out, said


def test_build_engine_writes_engine_sidecar_and_timing_cache(
    onnx_artifacts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = FakeBuilderWorld("ok")
    (meta, path), said = _build(onnx_artifacts, world, monkeypatch)
    assert path.read_bytes() == b"ENGINE" and meta.engine_size == 6
    assert world.network_flags == 1 << 5  # STRONGLY_TYPED for an fp16 graph
    assert world.flags == []  # no FP16 flag needed when strongly typed
    assert world.shapes["input_ids"] == ((1, 1), (1, 1), (1, 64))
    side = json.loads(path.with_suffix(".json").read_text())
    assert EngineMeta.from_dict(side).key.profile == EngineProfile(256, 64)
    timing = list((onnx_artifacts / "engines").glob("timing-*.cache"))
    assert len(timing) == 1 and timing[0].read_bytes() == b"timing-v1"
    assert "time unknown (first build on this GPU)" in said[0]
    # the second build reads the timing cache and now has an expected time
    world2 = FakeBuilderWorld("ok")
    _, said2 = _build(onnx_artifacts, world2, monkeypatch)
    assert world2.timing_in == b"timing-v1"
    assert "expected ~" in said2[0]


def test_build_out_of_memory_says_so_and_suggests_smaller(
    onnx_artifacts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from amalia_edge.convert.tensorrt import EngineOutOfMemoryError

    with pytest.raises(EngineOutOfMemoryError, match=r"out of GPU memory.*--ctx 128"):
        _build(onnx_artifacts, FakeBuilderWorld("oom"), monkeypatch)
    assert not list((onnx_artifacts / "engines").glob("*.engine"))


def test_parser_errors_are_reported_with_the_int4_hint(
    onnx_artifacts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from amalia_edge.convert.tensorrt import EngineBuildError

    with pytest.raises(EngineBuildError, match=r"block_size.*--precision fp16"):
        _build(onnx_artifacts, FakeBuilderWorld("parse"), monkeypatch)


def test_build_engine_command_fails_in_one_line_without_tensorrt(
    onnx_artifacts: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("TensorRT is installed here")
    from amalia_edge.cli import main

    assert main(["build-engine", str(onnx_artifacts), "--ctx", "1024"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("amalia-edge: error: TensorRT is not installed")


def test_build_engine_command_prints_the_engine_path(
    onnx_artifacts: Path, fake_trt: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from amalia_edge.cli import main

    assert main(["build-engine", str(onnx_artifacts), "--ctx", "1024", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert Path(out["engine"]).exists() and out["key"]["profile"]["n_ctx"] == 1024
