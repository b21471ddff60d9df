"""``benchmarks/gpu_check.py`` and ``jetson/check_generation.py`` on this CPU-only machine.

The GPU half of gpu_check cannot run here; what runs is its CPU path for real: doctor,
NVML (the real binding, no driver: "no NVIDIA GPU"), llama.cpp, ONNX Runtime, selection,
``amalia-edge generate``, check_generation and the bench against llama-cpp-python called
directly, each in the child processes the script uses on a GPU machine.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gpu_check() -> ModuleType:
    return _load(REPO / "benchmarks" / "gpu_check.py", "gpu_check")


def _run_check_generation(model: Path) -> tuple[subprocess.CompletedProcess[str], dict]:
    # A child process: a native crash in llama.cpp must not take the test session down.
    proc = subprocess.run(
        [sys.executable, str(REPO / "jetson" / "check_generation.py"), str(model)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        check=False,
    )
    assert proc.stdout.startswith("{"), proc.stderr
    return proc, json.loads(proc.stdout)


@pytest.mark.slow
def test_check_generation_runs_the_demo_model_at_its_own_context(demo_artifacts) -> None:
    """It asked for 512 tokens; the demo model holds fewer: the context comes from the model."""
    pytest.importorskip("llama_cpp")
    from amalia_edge.runtime.artifacts import resolve_model

    f16 = next(demo_artifacts.glob("*-F16.gguf"))
    trained = resolve_model(f16).usable()[0].shape.n_ctx_train
    proc, record = _run_check_generation(f16)
    assert record["n_ctx"] == min(2048, trained)
    assert record["backend"] == "llama.cpp" and record["completion_tokens"] > 0
    # the CPU build here: it generated, and refuses because that was not on the GPU
    assert proc.returncode == 1 and "on the CPU" in proc.stderr
    assert "larger than the model" not in proc.stderr


def test_check_generation_bad_model_is_one_line(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "jetson" / "check_generation.py"), str(tmp_path / "x.gguf")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("check_generation: error: ") and proc.stderr.count("\n") == 1


def test_a_crashing_child_is_a_result(gpu_check) -> None:
    r = gpu_check.run_child(
        [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"],
        timeout=60,
    )
    assert r["crashed"] and r["signal"] == "SIGSEGV" and r["returncode"] == -11
    r = gpu_check.run_child([sys.executable, "-c", "import time; time.sleep(5)"], timeout=0.5)
    assert r["returncode"] is None and r["timeout"] == 0.5


def test_a_cut_short_run_still_reports(gpu_check, tmp_path) -> None:
    report = gpu_check.Report(tmp_path, [])
    report.run("doctor", lambda: {"gpus": []})

    def boom() -> dict:
        raise RuntimeError("no such file")

    report.run("model", boom)
    report.steps["bench F16"] = {"status": "running"}  # killed here
    report.save()
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    assert data["steps"]["doctor"]["status"] == "ok"
    assert data["steps"]["model"] == {
        "status": "fail",
        "error": "RuntimeError: no such file",
        "seconds": data["steps"]["model"]["seconds"],
    }
    md = (tmp_path / "gpu_check.md").read_text()
    assert "unfinished" in md and "| bench F16 | running |" in md

    def interrupted() -> dict:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        report.run("generate", interrupted)
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    assert data["steps"]["generate"]["status"] == "interrupted"


def test_passed_needs_gpu_offload_where_there_is_a_gpu(gpu_check) -> None:
    steps = {
        "llama_build": {"status": "ok", "gpu_offload": False},
        "selection": {"status": "ok", "per_quant": {"F16": {"gpu_offload": False}}},
        "check_generation": {"status": "expected"},
        "nvml": {"status": "unavailable"},
    }
    assert gpu_check.passed({"steps": steps}, gpu=False)
    assert not gpu_check.passed({"steps": steps}, gpu=True)
    steps["llama_build"]["gpu_offload"] = True
    steps["selection"]["per_quant"]["F16"]["gpu_offload"] = True
    assert gpu_check.passed({"steps": steps}, gpu=True)
    steps["bench F16"] = {"status": "fail"}
    assert not gpu_check.passed({"steps": steps}, gpu=True)


@pytest.mark.slow
def test_gpu_check_cpu_path_end_to_end(gpu_check, tiny_gguf, tmp_path) -> None:
    """The whole script on the tiny F16 model: every step real, 'no NVIDIA GPU' reported."""
    pytest.importorskip("llama_cpp")
    pytest.importorskip("pynvml")
    out = tmp_path / "report"
    argv = [str(tiny_gguf["F16"]), "--out", str(out), "--pp", "16", "--tg", "8"]
    code = gpu_check.main([*argv, "--reps", "1", "--threads", "1", "--quants", "F16"])
    data = json.loads((out / "gpu_check.json").read_text())
    steps = data["steps"]
    assert code == 0, {k: v.get("status") for k, v in steps.items()}
    assert data["gpu"] is False and data["exit_status"] == 0
    assert steps["nvml"]["status"] == "unavailable" and "NVML" in steps["nvml"]["reason"]
    assert steps["llama_build"]["gpu_offload"] is False
    assert "CPUExecutionProvider" in steps["onnxruntime"]["initialized"]
    assert steps["selection"]["per_quant"]["F16"]["backend"] == "llama.cpp"
    assert steps["generate"]["per_quant"]["F16"]["passed"]
    assert steps["check_generation"]["status"] == "expected"
    bench = steps["bench F16"]
    assert bench["status"] == "ok" and bench["blocks_done"] == 4
    assert set(bench["ours"]) == {"pp16", "tg8"} == set(bench["direct"])
    assert bench["params"]["n_threads"] == 1 and bench["params"]["n_gpu_layers"] == 0
    for test in ("pp16", "tg8"):
        pooled = bench["pooled"][test]
        assert len(pooled["ours_samples_ts"]) == len(pooled["direct_samples_ts"]) == 2
        assert pooled["ratio"] == pytest.approx(pooled["ours_avg_ts"] / pooled["direct_avg_ts"])
    assert bench["ours"]["tg8"]["itl_p50_ms"] is not None
    md = (out / "gpu_check.md").read_text()
    assert "no NVIDIA GPU" in md and "| F16 | tg8 |" in md


@pytest.mark.slow
def test_gpu_crash_probe_runs_every_probe_and_reports(demo_artifacts, tmp_path) -> None:
    """On this CPU every llama.cpp probe loads and generates (a crash here would be a bug in the
    probe code); the NVML ones fail cleanly without a driver; the report names each probe."""
    pytest.importorskip("llama_cpp")
    gguf = next(demo_artifacts.glob("*-Q8_0.gguf"))
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "gpu_crash_probe.py"),
            str(gguf),
            *("--out", str(tmp_path), "--timeout", "120"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    report = json.loads((tmp_path / "gpu_crash_probe.json").read_text())
    status = {name: r["status"] for name, r in report["probes"].items()}
    assert len(status) == 12, status
    assert not any(s.startswith("crashed") for s in status.values()), status
    for name, s in status.items():
        if "NVML" not in name:
            assert s == "ok", (name, report["probes"][name])
    assert proc.returncode == (0 if all(s == "ok" for s in status.values()) else 1)
    assert "| amalia-edge generate (CLI) | ok |" in (tmp_path / "gpu_crash_probe.md").read_text()
