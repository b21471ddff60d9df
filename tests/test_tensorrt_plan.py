"""TensorRT network/builder flags per TensorRT version and graph precision (issue 16, 4 + 11).

Facts the expectations come from:
* JetPack 6.0 (L4T 36.2-36.3) ships TensorRT 8.6.2, JetPack 6.1+ ships 10.3 (NVIDIA JetPack
  release notes; amalia_edge/device/jetson_stack.py cites them).
* TensorRT 8.x: the ONNX parser supports only full-dimensions networks, created with the
  EXPLICIT_BATCH flag (``create_network(0)`` is implicit batch); strongly typed networks
  (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``) arrived with TensorRT 9/10.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from amalia_edge.convert import tensorrt as trt_mod
from amalia_edge.convert.onnx import GraphInfo
from amalia_edge.convert.tensorrt import (
    EngineBuildError,
    EngineProfile,
    NetworkPlan,
    network_plan,
)
from tests.test_tensorrt_engine import ORIN, FakeBuilderWorld


def _info(precision: str, kv_dtype: str) -> GraphInfo:
    return GraphInfo(precision, kv_dtype, 2, 2, 8, 64, 256)


@pytest.mark.parametrize(
    ("version", "precision", "kv", "plan"),
    [
        ("10.3.0", "fp16", "float16", NetworkPlan(("STRONGLY_TYPED",), (), "fp16")),
        ("10.3.0", "int8", "float16", NetworkPlan(("STRONGLY_TYPED",), (), "int8")),
        ("10.3.0", "fp32", "float32", NetworkPlan((), (), "fp32")),
        ("8.6.2", "fp16", "float16", NetworkPlan(("EXPLICIT_BATCH",), ("FP16",), "fp16")),
        ("8.6.2", "int8", "float16", NetworkPlan(("EXPLICIT_BATCH",), ("FP16", "INT8"), "int8")),
        ("8.6.2", "fp32", "float32", NetworkPlan(("EXPLICIT_BATCH",), (), "fp32")),
    ],
)
def test_network_plan(version, precision, kv, plan):
    assert network_plan(version, _info(precision, kv)) == plan


def test_an_fp32_graph_is_never_built_with_the_fp16_flag():
    """The old builder set FP16 for every graph that was not strongly typed, so an "fp32"
    engine was really FP16 while its key said fp32."""
    for version in ("8.6.2", "10.3.0", "10.16.2"):
        plan = network_plan(version, _info("fp32", "float32"))
        assert "FP16" not in plan.builder_flags and plan.precision == "fp32"


def test_old_or_unsupported_tensorrt_is_refused_with_the_upgrade_path():
    with pytest.raises(EngineBuildError, match=r"TensorRT 8\.4\.1 is too old") as e:
        network_plan("8.4.1", _info("fp16", "float16"))
    assert "JetPack 6.1" in (e.value.fix or "")
    with pytest.raises(EngineBuildError, match="int4 export needs TensorRT 10") as e:
        network_plan("8.6.2", _info("int4", "float16"))
    assert "--precision fp16" in (e.value.fix or "")


def _trt86(world: FakeBuilderWorld) -> Any:
    """The fake TensorRT surface as 8.6 has it: EXPLICIT_BATCH, no STRONGLY_TYPED."""
    mod = world.module()
    return SimpleNamespace(
        **{
            **vars(mod),
            "__version__": "8.6.2",
            "NetworkDefinitionCreationFlag": SimpleNamespace(EXPLICIT_BATCH=0),
            "BuilderFlag": SimpleNamespace(FP16="FP16", INT8="INT8"),
        }
    )


def _build(tmp_path: Path, module: Any, info: GraphInfo, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(trt_mod, "import_tensorrt", lambda: module)
    graph = tmp_path / "model.onnx"
    graph.write_bytes(b"onnx")
    return trt_mod.build_engine(
        graph, "f" * 64, info, EngineProfile(256, 64), tmp_path / "engines", gpu=ORIN
    )


def test_build_on_tensorrt_86_uses_explicit_batch_and_the_fp16_flag(tmp_path, monkeypatch):
    world = FakeBuilderWorld("ok")
    meta, _ = _build(tmp_path, _trt86(world), _info("fp16", "float16"), monkeypatch)
    assert world.network_flags == 1 << 0  # EXPLICIT_BATCH: create_network(0) is implicit batch
    assert world.flags == ["FP16"]
    assert meta.key.tensorrt_version == "8.6.2" and meta.key.precision == "fp16"


def test_an_fp32_engine_is_built_and_recorded_as_fp32(tmp_path, monkeypatch):
    world = FakeBuilderWorld("ok")
    meta, path = _build(tmp_path, world.module(), _info("fp32", "float32"), monkeypatch)
    assert world.flags == [] and world.network_flags == 0
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["key"]["precision"] == "fp32" and meta.key.recipe == trt_mod.BUILD_RECIPE
