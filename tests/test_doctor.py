"""`amalia-edge doctor` and the doctor checks (Jetson ones on fake trees, real libraries here)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from amalia_edge.cli import main
from amalia_edge.device import probe
from amalia_edge.device.checks import (
    PROBE_ONNX,
    LlamaBuild,
    OrtSession,
    Probes,
    check_llama,
    check_onnxruntime,
    check_tensorrt,
    run_checks,
)

REPO = Path(__file__).resolve().parent.parent
GiB = 1 << 30


def _fake_packages(
    tmp_path: Path,
    *,
    llama_cuda: bool,
    ort_cuda: bool,
    trt: bool,
    onnx: bool = True,
    cuda_python: str | None = "bindings",
) -> Callable[[str], Path | None]:
    """Package directories laid out like installed llama_cpp / onnxruntime / tensorrt / onnx /
    cuda-python (``cuda/bindings/`` since 12.6, ``cuda/cudart*.so`` before). The new layout as
    seen on a real cuda-bindings 13.3.1 install (an H200 machine, 2026-12-04): ``cuda`` is a
    namespace package (no ``__init__``) holding ``bindings/``, ``core/``, ``pathfinder/``, and
    ``from cuda.bindings import runtime`` works while ``from cuda import cudart`` does not."""
    pkgs: dict[str, Path] = {}
    llama = tmp_path / "site" / "llama_cpp" / "lib"
    llama.mkdir(parents=True, exist_ok=True)
    (llama / "libllama.so").touch()
    if llama_cuda:
        (llama / "libggml-cuda.so").touch()
    pkgs["llama_cpp"] = llama.parent
    capi = tmp_path / "site" / "onnxruntime" / "capi"
    capi.mkdir(parents=True, exist_ok=True)
    (capi / "libonnxruntime_providers_shared.so").touch()
    if ort_cuda:
        (capi / "libonnxruntime_providers_cuda.so").touch()
        (capi / "libonnxruntime_providers_tensorrt.so").touch()
    pkgs["onnxruntime"] = capi.parent
    if trt:
        (tmp_path / "site" / "tensorrt").mkdir(exist_ok=True)
        pkgs["tensorrt"] = tmp_path / "site" / "tensorrt"
    if onnx:
        (tmp_path / "site" / "onnx").mkdir(exist_ok=True)
        pkgs["onnx"] = tmp_path / "site" / "onnx"
    if cuda_python is not None:
        cuda = tmp_path / "site" / "cuda"
        cuda.mkdir(exist_ok=True)
        if cuda_python == "bindings":
            (cuda / "bindings").mkdir(exist_ok=True)
        else:
            (cuda / "cudart.cpython-310-aarch64-linux-gnu.so").touch()
        pkgs["cuda"] = cuda
    return pkgs.get


def _by_name(checks):
    return {c.name: c for c in checks}


def test_quick_checks_on_a_well_set_up_agx_orin(fake_device, tmp_path):
    info = probe(fake_device("agx-orin-64gb-jp6").fsroot())
    probes = Probes(find_package=_fake_packages(tmp_path, llama_cuda=True, ort_cuda=True, trt=True))
    checks = run_checks(info, probes=probes)
    assert [c.status for c in checks] == ["ok"] * 7, checks
    cpu_only = Probes(
        find_package=_fake_packages(tmp_path / "cpu", llama_cuda=True, ort_cuda=False, trt=True)
    )
    ort = _by_name(run_checks(info, probes=cpu_only))["ONNX Runtime GPU providers"]
    assert ort.status == "fail" and (
        "onnxruntime-gpu==1.23.0 --index-url https://pypi.jetson-ai-lab.io/jp6/cu126"
    ) in (ort.fix or "")
    assert [c.name for c in checks][-2:] == ["power mode", "jetson_clocks"]


def test_quick_checks_catch_cpu_builds_and_missing_tensorrt(fake_device, tmp_path):
    info = probe(fake_device("agx-orin-32gb-jp5").fsroot())
    probes = Probes(
        find_package=_fake_packages(tmp_path, llama_cuda=False, ort_cuda=False, trt=False)
    )
    c = _by_name(run_checks(info, probes=probes))
    assert c["llama.cpp CUDA build"].status == "fail"
    assert "-DCMAKE_CUDA_ARCHITECTURES=87" in (c["llama.cpp CUDA build"].fix or "")
    # No onnxruntime-gpu wheel exists for JetPack 5 in the kit's Python: a warning with why.
    assert c["ONNX Runtime GPU providers"].status == "warn"
    assert "1.16.3" in (c["ONNX Runtime GPU providers"].fix or "")
    # JetPack 5's TensorRT bindings are Python 3.8 only: not a failure of this install, and
    # the fix names the upgrade (amalia_edge/device/jetson_stack.py).
    assert c["TensorRT backend"].status == "warn"
    assert "JetPack 6.1" in (c["TensorRT backend"].fix or "")
    assert (
        c["power mode"].status == "warn"
        and c["power mode"].fix == "sudo amalia-edge power --set MAXN"
    )
    assert c["jetson_clocks"].fix == "sudo amalia-edge power --clocks on"
    # every warn/fail carries its fix
    assert all(x.fix for x in c.values() if x.status in ("warn", "fail"))


def test_nano_without_swap_and_low_memory(fake_device, tmp_path):
    dev = fake_device("orin-nano-8gb-jp6")
    probes = Probes(find_package=_fake_packages(tmp_path, llama_cuda=True, ort_cuda=True, trt=True))
    # As flashed, a Nano has zram swap (nvzramconfig: half the memory), so swap is ok...
    c = _by_name(run_checks(probe(dev.fsroot()), probes=probes, min_free=8 * GiB))
    assert c["swap"].status == "ok" and c["swap"].detail == "3.7 GiB"
    # ...and with zram disabled (a common tip) there is none: warn, with the fix.
    meminfo = dev.root / "proc/meminfo"
    meminfo.write_text(
        meminfo.read_text()
        .replace("SwapTotal:       3899790 kB", "SwapTotal:       0 kB")
        .replace("SwapFree:        3899790 kB", "SwapFree:        0 kB")
    )
    info = probe(dev.fsroot())
    c = _by_name(run_checks(info, probes=probes, min_free=8 * GiB))
    assert c["swap"].status == "warn" and "mkswap" in (c["swap"].fix or "")
    assert c["free unified memory"].status == "warn"
    assert "5.6 of 7.4 GiB" in c["free unified memory"].detail
    assert c["power mode"].status == "ok"  # 15W is the Nano's fastest mode on JetPack 6.1


def _deep_probes(tmp_path, llama=None, ort=None, trt="10.3.0", cudart="cuda.bindings.runtime"):
    return Probes(
        find_package=_fake_packages(tmp_path, llama_cuda=True, ort_cuda=True, trt=True),
        llama_build=lambda: llama,
        ort_session=lambda: ort,
        tensorrt_version=lambda: trt,
        cudart=lambda: cudart,
    )


SYSINFO_87 = "CUDA : ARCHS = 870 | USE_GRAPHS = 1 | PEER_MAX_BATCH_SIZE = 128 | CPU : NEON = 1 |"


@pytest.mark.parametrize(
    ("build", "status", "needle"),
    [
        (LlamaBuild(True, SYSINFO_87), "ok", "CUDA archs 870"),
        (LlamaBuild(True, SYSINFO_87.replace("870", "800,860")), "fail", "not 870"),
        (LlamaBuild(False, "CPU : NEON = 1 |"), "fail", "run on the CPU"),
        (LlamaBuild(True, "CPU : NEON = 1 |"), "warn", "not reported"),
        (None, "fail", "does not import"),
    ],
)
def test_deep_llama_check(fake_device, tmp_path, build, status, needle):
    info = probe(fake_device("agx-orin-64gb-jp6").fsroot())
    check = check_llama(info, True, _deep_probes(tmp_path, llama=build))
    assert check.status == status and needle in check.detail
    if status == "fail":
        assert "CMAKE_CUDA_ARCHITECTURES=87" in (check.fix or "")


def test_deep_onnxruntime_check_reads_initialized_providers(fake_device, tmp_path):
    info = probe(fake_device("agx-orin-64gb-jp6").fsroot())
    compiled = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
    cases = [
        (OrtSession("1.23.0", compiled, compiled), "ok"),
        (OrtSession("1.23.0", compiled, compiled[1:]), "warn"),  # TensorRT EP failed to load
        (OrtSession("1.23.0", compiled, ("CPUExecutionProvider",)), "fail"),  # silent CPU fallback
        (OrtSession("1.23.0", compiled, (), "RuntimeError: boom"), "fail"),
    ]
    for sess, status in cases:
        check = check_onnxruntime(info, True, _deep_probes(tmp_path, ort=sess))
        assert check.status == status, (sess, check)
    assert check_tensorrt(info, True, _deep_probes(tmp_path)).detail == (
        "TensorRT 10.3.0, CUDA runtime from cuda.bindings.runtime"
    )
    assert check_tensorrt(info, True, _deep_probes(tmp_path, trt=None)).status == "fail"


@pytest.mark.parametrize(
    ("board", "cuda_python"),
    [("agx-orin-64gb-jp6", "12.6.2.post1"), ("agx-orin-32gb-jp60", "12.2.1")],
)
def test_tensorrt_check_fails_without_cuda_python(fake_device, tmp_path, board, cuda_python):
    """import_cudart() is the TensorRT backend's other real dependency: tensorrt alone is not ok."""
    info = probe(fake_device(board).fsroot())
    quick = Probes(
        find_package=_fake_packages(
            tmp_path, llama_cuda=True, ort_cuda=True, trt=True, cuda_python=None
        )
    )
    check = check_tensorrt(info, False, quick)
    assert check.status == "fail" and "cuda-python" in check.detail
    assert f"pip install cuda-python=={cuda_python}" in (check.fix or "")
    old_layout = Probes(
        find_package=_fake_packages(
            tmp_path / "old", llama_cuda=True, ort_cuda=True, trt=True, cuda_python="cudart"
        )
    )
    assert check_tensorrt(info, False, old_layout).status == "ok"
    deep = check_tensorrt(info, True, _deep_probes(tmp_path, cudart=None))
    assert deep.status == "fail" and "does not import" in deep.detail


def test_tensorrt_check_fails_without_tensorrt_on_jetpack6(fake_device, tmp_path):
    info = probe(fake_device("agx-orin-64gb-jp6").fsroot())
    probes = Probes(
        find_package=_fake_packages(tmp_path, llama_cuda=True, ort_cuda=True, trt=False)
    )
    check = check_tensorrt(info, False, probes)
    assert check.status == "fail" and "--system-site-packages" in (check.fix or "")


def test_onnxruntime_check_fails_without_onnx(fake_device, tmp_path):
    """Both ONNX backends read the graph with onnx: onnxruntime alone cannot load a model."""
    info = probe(fake_device("agx-orin-64gb-jp6").fsroot())
    probes = Probes(
        find_package=_fake_packages(tmp_path, llama_cuda=True, ort_cuda=True, trt=True, onnx=False)
    )
    check = check_onnxruntime(info, False, probes)
    assert check.status == "fail" and "onnx is not" in check.detail
    assert "pip install onnx" in (check.fix or "")


def test_onnxruntime_fix_follows_the_l4t_release(fake_device, tmp_path):
    probes = Probes(
        find_package=_fake_packages(tmp_path, llama_cuda=True, ort_cuda=False, trt=True)
    )
    jp60 = check_onnxruntime(probe(fake_device("agx-orin-32gb-jp60").fsroot()), False, probes)
    # JetPack 6.0's build is a wheel file (NVIDIA's Jetson Zoo), not on an index any more
    assert "download https://nvidia.box.com/shared/static/" in (jp60.fix or "")
    assert "pip install ./onnxruntime_gpu-1.17.0-cp310-cp310-linux_aarch64.whl" in (jp60.fix or "")
    jp72 = check_onnxruntime(probe(fake_device("agx-orin-64gb-jp72").fsroot()), False, probes)
    assert jp72.status == "warn" and "skipped on JetPack 7" in (jp72.fix or "")


def test_probe_model_is_what_the_comment_says():
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "amalia_edge_probe", [x], [y]
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 13)],
        ir_version=8,
        producer_name="amalia-edge",
    )
    onnx.checker.check_model(model)
    assert model.SerializeToString() == PROBE_ONNX


def test_deep_checks_with_the_real_onnxruntime_here():
    pytest.importorskip("onnxruntime")
    info = probe("/")
    check = check_onnxruntime(info, True, Probes())
    # This machine has the CPU wheel: the session really initializes CPU only.
    assert "CPUExecutionProvider" in check.detail
    assert check.status == ("ok" if not info.has_cuda else check.status)


def test_deep_llama_check_with_the_real_llama_cpp_here():
    pytest.importorskip("llama_cpp")
    info = probe("/")
    check = check_llama(info, True, Probes())
    if not info.has_cuda:
        assert check.status == "ok" and "CPU build" in check.detail


# --- the command ---------------------------------------------------------------------------


def test_doctor_json_on_a_fake_jetson(fake_device, capsys):
    fake_device("agx-orin-32gb-jp5")
    rc = main(["doctor", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["device"]["board"]["name"] == "Jetson AGX Orin 32GB"
    assert out["device"]["jetpack"] == "5.1.2" and out["device"]["power_mode"] == "MODE_30W"
    checks = {c["name"]: c for c in out["checks"]}
    assert checks["power mode"]["status"] == "warn"
    assert [b["name"] for b in out["backends"]] == ["llama.cpp", "onnxruntime", "tensorrt"]
    assert all(b["ok"] is None for b in out["backends"])  # not probed on the plain path
    assert rc == (1 if any(c["status"] == "fail" for c in out["checks"]) else 0)


def test_doctor_text_prints_fixes(fake_device, capsys):
    fake_device("agx-orin-32gb-jp5")
    main(["doctor"])
    out = capsys.readouterr().out
    assert "Jetson AGX Orin 32GB (p3701-0004)" in out and "35.4.1 / 5.1.2" in out
    assert "204.8 GB/s (board table)" in out
    assert "fix: sudo amalia-edge power --set MAXN" in out


def test_plain_doctor_imports_no_heavy_library(fake_device):
    fake_device("agx-orin-64gb-jp6")  # environment reaches the subprocess
    code = (
        "import sys, io, contextlib\n"
        "from amalia_edge.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['doctor', '--json'])\n"
        "heavy = {'llama_cpp', 'onnxruntime', 'tensorrt', 'onnx', 'textual', 'numpy', 'torch'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    ).stdout
    assert out.strip() == "[]"


def test_doctor_bad_model_is_one_line_error(capsys):
    assert main(["doctor", "/definitely/not/here.gguf"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("amalia-edge: error:") and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_doctor_with_model_explains_the_selection(tiny_artifacts, capsys):
    main(["doctor", str(tiny_artifacts), "--json", "--ctx", "64"])
    out = json.loads(capsys.readouterr().out)
    sel = out["selection"]
    assert sel is not None and sel["candidates"]
    assert all(isinstance(b["ok"], bool) for b in out["backends"])  # a MODEL probes backends
    if importlib.util.find_spec("llama_cpp") is not None:
        assert sel["chosen"] is not None
    main(["doctor", str(tiny_artifacts), "--n-ctx", "64"])  # the old name still works
    text = capsys.readouterr().out
    assert "Selection" in text
