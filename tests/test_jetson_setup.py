"""jetson/setup.sh --dry-run against fake L4T trees, shellcheck, and one source of versions."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
JETSON = REPO / "jetson"
BOARDS = REPO / "tests" / "fixtures" / "boards"
FAKE_BIN = REPO / "tests" / "fixtures" / "bin"


def versions() -> dict[str, str]:
    out = {}
    for line in (JETSON / "versions.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def setup_sh(
    tmp_path: Path, board: str, *args: str, cuda: bool = True, path_prepend: Path | None = None
) -> subprocess.CompletedProcess[str]:
    cuda_home = tmp_path / "cuda"
    (cuda_home / "bin").mkdir(parents=True, exist_ok=True)
    if cuda:
        nvcc = cuda_home / "bin" / "nvcc"
        nvcc.write_text("#!/bin/sh\necho 'Cuda compilation tools, release 12.6'\n")
        nvcc.chmod(0o755)
    env = {
        **os.environ,
        "AMALIA_EDGE_ROOT": str(BOARDS / board),
        "AMALIA_EDGE_BIN_PATH": str(FAKE_BIN),
        "AMALIA_FAKE_LOG": str(tmp_path / "calls.log"),
        "CUDA_HOME": str(cuda_home),
        "HOME": str(tmp_path),
    }
    if path_prepend is not None:
        env["PATH"] = f"{path_prepend}{os.pathsep}{env['PATH']}"
    return subprocess.run(
        ["bash", str(JETSON / "setup.sh"), "--venv", str(tmp_path / "venv"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_dry_run_plan_for_jetpack6(tmp_path):
    v = versions()
    r = setup_sh(tmp_path, "agx-orin-64gb-jp6", "--dry-run")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "board:   Jetson AGX Orin 64GB" in out
    assert "L4T:     36.4.3   JetPack: 6.2" in out
    assert f"python3 -m venv --system-site-packages {tmp_path / 'venv'}" in out
    build = next(line for line in out.splitlines() if "FORCE_CMAKE=1" in line)
    assert f"CUDACXX={tmp_path}/cuda/bin/nvcc" in build
    assert (
        f"CMAKE_ARGS=-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES={v['CUDA_ARCHITECTURES']}" in build
    )
    assert f"llama-cpp-python=={v['LLAMA_CPP_PYTHON_VERSION']}" in build and "--no-binary" in build
    assert (
        "--index-url https://pypi.jetson-ai-lab.io/jp6/cu126 --extra-index-url "
        "https://pypi.org/simple onnxruntime-gpu==1.23.0"
    ) in out
    assert "pip uninstall -y onnxruntime" in out  # the CPU wheel would shadow the GPU one
    assert "pip install cuda-python==12.6.2.post1" in out  # import_cudart() needs it
    assert f"install -e {REPO}[tui,plots] onnx=={v['ONNX_VERSION']}" in out
    assert "amalia-edge doctor --deep" in out and "check_generation.py" in out
    assert "swapfile" not in out  # 61 GiB + 30 GiB swap: no swap needed
    assert not (tmp_path / "venv").exists()  # dry run changed nothing
    assert (tmp_path / "calls.log").exists() is True  # probing ran nvpmodel -q, nothing else
    assert (tmp_path / "calls.log").read_text().splitlines() == ["nvpmodel -q"]


def test_dry_run_plan_for_jetpack5(tmp_path):
    r = setup_sh(tmp_path, "agx-orin-32gb-jp5", "--dry-run")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "L4T:     35.4.1   JetPack: 5.1.2" in out
    assert "python3.10 -m venv --system-site-packages" in out
    assert "TensorRT backend unavailable" in out and "Python 3.8" in out
    # No cp310 onnxruntime-gpu exists for L4T 35: skipped by default, and the dry run says so.
    assert "onnxruntime-gpu: skipped (skipped on JetPack 5" in out
    assert "1.16.3" in out and "--onnx-index" in out
    assert "warning: no onnxruntime-gpu will be installed" in r.stderr
    assert "onnxruntime-gpu==" not in out and "cuda-python==" not in out


# The four JetPack families a board can be on, each a fake tree of a real board's files
# (tests/fixtures/boards/README.md). What setup.sh must print, from
# amalia_edge/device/jetson_stack.py (sources cited there).
FOUR_JETPACKS = {
    "agx-orin-32gb-jp5": {
        "l4t": "L4T:     35.4.1   JetPack: 5.1.2",
        "ort": None,
        "cuda_python": None,
        "python": "python3.10",
    },
    "agx-orin-32gb-jp60": {
        "l4t": "L4T:     36.3.0   JetPack: 6.0",
        # no index lists a JetPack 6.0 build now: NVIDIA's Jetson Zoo wheel file
        "ort": ("1.17.0", "the wheel file https://nvidia.box.com/shared/static/"),
        "cuda_python": "12.2.1",
        "python": "python3",
    },
    "agx-orin-64gb-jp6": {
        "l4t": "L4T:     36.4.3   JetPack: 6.2",
        "ort": ("1.23.0", "https://pypi.jetson-ai-lab.io/jp6/cu126"),
        "cuda_python": "12.6.2.post1",
        "python": "python3",
    },
    "agx-orin-64gb-jp72": {
        "l4t": "L4T:     39.2.0   JetPack: 7.2",
        "ort": None,
        "cuda_python": "13.0.3",
        "python": "python3",
    },
}


@pytest.mark.parametrize("board", sorted(FOUR_JETPACKS))
def test_dry_run_force_prints_the_exact_plan_for_each_jetpack(board, tmp_path):
    """`setup.sh --dry-run --force` on this machine, pointed at each fake board."""
    want = FOUR_JETPACKS[board]
    v = versions()
    r = setup_sh(tmp_path, board, "--dry-run", "--force")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    print(out)  # the plan, for whoever runs this with -s
    assert want["l4t"] in out
    assert f"llama-cpp-python=={v['LLAMA_CPP_PYTHON_VERSION']}" in out
    assert f"{want['python']} -m venv --system-site-packages" in out
    assert f"onnx=={v['ONNX_VERSION']}" in out
    if want["ort"] is None:
        assert "onnxruntime-gpu  not installed:" in out
        assert "warning: no onnxruntime-gpu" in r.stderr
        assert "install --index-url" not in out
    else:
        version, source = want["ort"]
        assert f"onnxruntime-gpu=={version}  from {source}" in out
        if source.startswith("the wheel file"):
            wheel = f"onnxruntime_gpu-{version}-cp310-cp310-linux_aarch64.whl"
            assert "curl -fL --retry 3 -o" in out and f"{wheel}.part" in out
            assert f"pip install {tmp_path}/.cache/amalia-edge/wheels/{wheel} numpy<2" in out
            assert "install --index-url" not in out
        else:
            assert f"--index-url {source} --extra-index-url https://pypi.org/simple" in out
            assert f"onnxruntime-gpu=={version}" in out
    if want["cuda_python"] is None:
        assert "cuda-python: skipped" in out
    else:
        assert f"pip install cuda-python=={want['cuda_python']}" in out


def test_onnx_index_override_replaces_the_jetpack60_wheel_file(tmp_path, monkeypatch):
    """--onnx-index with ONNXRUNTIME_GPU_VERSION wins over the table's wheel file."""
    monkeypatch.setenv("ONNXRUNTIME_GPU_VERSION", "1.17.1")
    r = setup_sh(
        tmp_path, "agx-orin-32gb-jp60", "--dry-run", "--onnx-index", "https://x.example/simple"
    )
    assert r.returncode == 0, r.stderr
    assert "onnxruntime-gpu==1.17.1  from https://x.example/simple" in r.stdout
    assert "--index-url https://x.example/simple" in r.stdout
    assert "nvidia.box.com" not in r.stdout and "curl" not in r.stdout


def test_a_version_without_an_index_on_jetpack60_is_an_error(tmp_path, monkeypatch):
    """JetPack 6.0's onnxruntime-gpu is a wheel file no index serves: a version alone cannot be
    installed, and silently skipping it (with the table's text as the reason) misled (review)."""
    monkeypatch.setenv("ONNXRUNTIME_GPU_VERSION", "1.17.1")
    r = setup_sh(tmp_path, "agx-orin-32gb-jp60", "--dry-run")
    assert r.returncode == 1
    assert "ONNXRUNTIME_GPU_VERSION=1.17.1 needs --onnx-index" in r.stderr
    assert "setup.sh: fix: pass --onnx-index URL as well" in r.stderr
    assert "Traceback" not in r.stderr


def _tree_with_release(tmp_path: Path, line: str) -> Path:
    tree = tmp_path / "tree"
    shutil.copytree(BOARDS / "agx-orin-64gb-jp6", tree)
    (tree / "etc" / "nv_tegra_release").write_text(line + "\n")
    return tree


def _run_on(tree: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "AMALIA_EDGE_ROOT": str(tree),
        "AMALIA_EDGE_BIN_PATH": str(FAKE_BIN),
        "AMALIA_FAKE_LOG": str(tmp_path / "log"),
        "HOME": str(tmp_path),
    }
    return subprocess.run(
        ["bash", str(JETSON / "setup.sh"), "--venv", str(tmp_path / "venv"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_an_unknown_newer_l4t_is_planned_by_rule(tmp_path):
    """36.6.0 is newer than the table: JetPack 6.x, the L4T 36.4+ row, and a note saying so."""
    tree = _tree_with_release(
        tmp_path, "# R36 (release), REVISION: 6.0, GCID: 1, BOARD: generic, EABI: aarch64"
    )
    r = _run_on(tree, tmp_path, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "L4T:     36.6.0   JetPack: 6.x" in r.stdout
    assert "not in the L4T table" in r.stdout
    assert "onnxruntime-gpu==1.23.0" in r.stdout


def test_r38_is_thor_only(tmp_path):
    tree = _tree_with_release(
        tmp_path, "# R38 (release), REVISION: 2.0, GCID: 1, BOARD: generic, EABI: aarch64"
    )
    r = _run_on(tree, tmp_path, "--dry-run")
    assert r.returncode == 1
    assert "runs only on Jetson Thor" in r.stderr and "fix:" in r.stderr


def test_dry_run_offers_swap_on_a_small_board(tmp_path):
    # A many-core machine, so the job count is bound by memory + swap, not by the cores.
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "nproc").write_text("#!/bin/sh\necho 64\n")
    (fake_bin / "nproc").chmod(0o755)
    r = setup_sh(tmp_path, "orin-nano-8gb-jp6", "--dry-run", path_prepend=fake_bin)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "memory 7 GiB + swap 3 GiB" in out  # the zram a flashed Nano has
    assert re.search(r"\+ (sudo )?fallocate -l 16G /swapfile", out)
    assert re.search(r"\+ (sudo )?swapon /swapfile", out)
    # the job count counts the swap file added above: (7 + 3 + 16) / 2 = 13, not (7 + 3) / 2
    assert "CMAKE_BUILD_PARALLEL_LEVEL=13 " in out


def test_dry_run_warns_when_nvcc_is_missing(tmp_path):
    r = setup_sh(tmp_path, "agx-orin-64gb-jp6", "--dry-run", cuda=False)
    assert r.returncode == 0
    assert "would stop:" in r.stdout and "nvcc not found" in r.stdout


def test_refuses_a_non_jetson_host(tmp_path):
    r = setup_sh(tmp_path, "x86-plain", "--dry-run")
    assert r.returncode == 1
    assert "error: this is not a Jetson" in r.stderr
    assert "fix:" in r.stderr and "--force" in r.stderr and "pip install -e '.[all]'" in r.stderr


def test_force_builds_on_a_workstation(tmp_path):
    r = setup_sh(tmp_path, "x86-plain", "--dry-run", "--force")
    assert r.returncode == 0, r.stderr
    assert "not a Jetson: continuing because of --force" in r.stdout
    assert "-DGGML_CUDA=on" in r.stdout


def test_refuses_an_unsupported_l4t(tmp_path):
    tree = tmp_path / "old-l4t"
    shutil.copytree(BOARDS / "agx-orin-64gb-jp6", tree)
    (tree / "etc" / "nv_tegra_release").write_text(
        "# R32 (release), REVISION: 7.4, GCID: 33514132, BOARD: t210ref, EABI: aarch64\n"
    )
    env = {
        **os.environ,
        "AMALIA_EDGE_ROOT": str(tree),
        "AMALIA_EDGE_BIN_PATH": str(FAKE_BIN),
        "AMALIA_FAKE_LOG": str(tmp_path / "log"),
    }
    r = subprocess.run(
        ["bash", str(JETSON / "setup.sh"), "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 1
    assert "unsupported L4T release '32.7.4' (JetPack '4.x')" in r.stderr and "fix:" in r.stderr


def test_force_on_an_unsupported_l4t_plans_with_the_l4t_36_4_row(tmp_path):
    tree = _tree_with_release(
        tmp_path, "# R32 (release), REVISION: 7.4, GCID: 1, BOARD: t210ref, EABI: aarch64"
    )
    r = _run_on(tree, tmp_path, "--dry-run", "--force")
    assert r.returncode == 0, r.stderr
    assert "L4T:     32.7.4   JetPack: 4.x" in r.stdout
    assert "plan for JetPack 6.1 / 6.2.x (L4T 36.4-36.5)" in r.stdout
    assert "onnxruntime-gpu==1.23.0  from https://pypi.jetson-ai-lab.io/jp6/cu126" in r.stdout


def test_unknown_option_says_what_to_do(tmp_path):
    r = setup_sh(tmp_path, "agx-orin-64gb-jp6", "--bogus")
    assert r.returncode == 1 and "unknown option: --bogus" in r.stderr and "--help" in r.stderr


def test_reruns_reuse_the_venv(tmp_path):
    py = tmp_path / "venv" / "bin" / "python"
    py.parent.mkdir(parents=True)
    py.write_text("#!/bin/sh\nexit 1\n")
    py.chmod(0o755)
    r = setup_sh(tmp_path, "agx-orin-64gb-jp6", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "exists; reused" in r.stdout and "-m venv" not in r.stdout


def test_container_uses_the_same_pinned_versions():
    v = versions()
    dockerfile = (JETSON / "Dockerfile").read_text()
    container = (JETSON / "container.sh").read_text()
    setup = (JETSON / "setup.sh").read_text()
    pinned = [
        v[k]
        for k in (
            "L4T_JETPACK_IMAGE",
            "LLAMA_CPP_PYTHON_VERSION",
            "ONNX_VERSION",
        )
    ]
    for value in pinned:  # no file repeats a pinned value: versions.env is the one source
        assert value not in dockerfile and value not in container and value not in setup
    assert 'source "$SCRIPT_DIR/versions.env"' in setup
    assert 'source "$SCRIPT_DIR/versions.env"' in container
    assert "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}" in dockerfile
    assert "jetson/setup.sh --container" in dockerfile  # same steps as on the board
    r = subprocess.run(
        ["bash", str(JETSON / "container.sh"), "build", "--dry-run"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"--build-arg BASE_IMAGE={v['L4T_JETPACK_IMAGE']}" in r.stdout
    r = subprocess.run(
        ["bash", str(JETSON / "container.sh"), "run", "--dry-run", "chat", "/models/m"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--runtime nvidia" in r.stdout and r.stdout.rstrip().endswith("chat /models/m")


def test_container_run_gives_the_probe_the_board(tmp_path):
    """container.sh run mounts /etc/nv_tegra_release and copies of the device-tree model and
    compatible strings (jetson-containers' run.sh does the same for the model), and the probe
    inside, with no /proc/device-tree, still finds the board from them."""
    board = BOARDS / "agx-orin-64gb-jp6"
    env = {**os.environ, "AMALIA_EDGE_ROOT": str(board), "TMPDIR": str(tmp_path)}
    r = subprocess.run(
        ["bash", str(JETSON / "container.sh"), "run", "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    run_line = r.stdout.strip().splitlines()[-1]
    assert f"-v {board}/etc/nv_tegra_release:/etc/nv_tegra_release:ro" in run_line
    copies = tmp_path / "amalia-edge-dt"
    assert f"-v {copies}/nv_jetson_model:/tmp/nv_jetson_model:ro" in run_line
    assert f"-v {copies}/nv_jetson_compatible:/tmp/nv_jetson_compatible:ro" in run_line
    assert f"cp {board}/proc/device-tree/model {copies}/nv_jetson_model" in r.stdout
    # What the container sees: no /proc/device-tree, the mounted files in their places.
    inside = tmp_path / "container"
    (inside / "etc").mkdir(parents=True)
    (inside / "tmp").mkdir()
    shutil.copy(board / "etc/nv_tegra_release", inside / "etc/nv_tegra_release")
    for name in ("model", "compatible"):
        shutil.copy(board / "proc/device-tree" / name, inside / "tmp" / f"nv_jetson_{name}")
    shutil.copytree(board / "proc", inside / "proc", ignore=shutil.ignore_patterns("device-tree"))
    from amalia_edge.device import probe

    info = probe(inside)
    assert info.is_jetson and info.module_id == "p3701-0005"
    assert info.model == "NVIDIA Jetson AGX Orin Developer Kit" and info.l4t_release == "36.4.3"


def test_versions_env_is_plain_key_value():
    for line in (JETSON / "versions.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert re.fullmatch(r"[A-Z0-9_]+=[^\s$`\"']+", line), line


SHELL_SCRIPTS = [
    *sorted(JETSON.glob("*.sh")),
    *sorted(p for p in FAKE_BIN.iterdir() if p.is_file()),
]


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_shellcheck(script):
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (apt-get install -y shellcheck)")
    r = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


@pytest.mark.slow
def test_selftest_writes_one_report_on_a_fake_board(fake_device, tmp_path):
    import json as _json

    dev = fake_device("agx-orin-32gb-jp5")
    out = tmp_path / "report.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run(
        [
            sys.executable,
            str(JETSON / "selftest.py"),
            str(tmp_path),
            "--no-bench",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=REPO,
    )
    assert r.stdout.strip() == str(out), r.stderr
    report = _json.loads(out.read_text())
    assert report["board"] == "Jetson AGX Orin 32GB"
    assert report["doctor"]["result"]["device"]["module_id"] == "p3701-0004"
    assert report["power"]["result"]["mode"] == "MODE_30W"
    assert "sudo amalia-edge power --set MAXN --clocks on" in report["power_warning"]
    assert "nvpmodel -q" in dev.calls() and not any("-m" in c for c in dev.calls())


def test_selftest_refuses_a_workstation(fake_device, tmp_path):
    fake_device("x86-plain")
    r = subprocess.run(
        [sys.executable, str(JETSON / "selftest.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert r.returncode == 2 and "not a Jetson" in r.stderr


def _python(version: str) -> str | None:
    found = shutil.which(f"python{version}")
    candidates = [found] if found else []
    candidates += sorted(
        str(p) for p in Path.home().glob(f".pyenv/versions/{version}.*/bin/python")
    )
    for exe in candidates:
        r = subprocess.run([exe, "--version"], capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.startswith(f"Python {version}"):
            return exe
    return None


@pytest.mark.parametrize("version", ["3.8", "3.10"])
def test_detect_runs_on_the_jetpack_system_pythons(version, tmp_path):
    """setup.sh runs detection with the system Python: 3.8 on JetPack 5, 3.10 on JetPack 6."""
    exe = _python(version)
    if exe is None:
        pytest.skip(f"no Python {version} interpreter here")
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "AMALIA_EDGE_BIN_PATH": str(FAKE_BIN),
        "AMALIA_EDGE_ROOT": str(BOARDS / "agx-orin-32gb-jp5"),
        "AMALIA_FAKE_LOG": str(tmp_path / "l"),
    }
    r = subprocess.run(
        [exe, "-m", "amalia_edge.device.detect", str(BOARDS / "agx-orin-32gb-jp5")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "DETECTED_JETPACK='5.1.2'" in r.stdout or "DETECTED_JETPACK=5.1.2" in r.stdout


def _load_check_generation():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "check_generation", JETSON / "check_generation.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_check_generation_fails_when_the_reply_ran_on_the_cpu(tiny_artifacts, capsys):
    """Real llama.cpp (a CPU build here): setup.sh's last step must refuse it."""
    pytest.importorskip("llama_cpp")
    check = _load_check_generation()
    assert check.main([str(tiny_artifacts)]) == 1
    captured = capsys.readouterr()
    record = json.loads(captured.out)
    assert record["backend"] == "llama.cpp" and record["gpu"] is False
    assert record["completion_tokens"] > 0
    assert "on the CPU" in captured.err and "jetson/setup.sh" in captured.err


@pytest.mark.slow
def test_check_generation_accepts_gpu_offload(tiny_artifacts, capsys, monkeypatch):
    """Same generation, with the backend's probe reporting a CUDA build (as on the Orin)."""
    pytest.importorskip("llama_cpp")
    from dataclasses import replace

    from amalia_edge.runtime import registry

    backend = registry.get("llama.cpp")
    real_probe = backend.probe

    def cuda_probe(device):
        avail = real_probe(device)
        return replace(avail, details={**avail.details, "gpu_offload": True})

    monkeypatch.setattr(backend, "probe", cuda_probe)
    check = _load_check_generation()
    assert check.main([str(tiny_artifacts)]) == 0
    assert json.loads(capsys.readouterr().out)["gpu"] is True
