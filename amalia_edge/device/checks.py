"""Doctor checks: does this machine run amalia-edge the way it should? Each failure has its fix.

The failures these catch are the ones Jetson users hit most: llama.cpp or ONNX Runtime built
without CUDA (the model silently runs on the CPU), llama.cpp built for the wrong CUDA
architecture, TensorRT's Python bindings invisible from a virtual environment, no swap
(builds killed), too little free unified memory, and a board not in its fastest power mode
with clocks locked (numbers far below published ones).

Two depths:

* quick (default, no heavy imports, milliseconds): looks for the installed packages and for
  their CUDA libraries on disk: llama-cpp-python >= 0.3 installs the ggml backends as shared
  libraries in ``llama_cpp/lib/`` (``libggml-cpu.so`` always, ``libggml-cuda.so`` only in a
  CUDA build), onnxruntime-gpu ships ``onnxruntime/capi/libonnxruntime_providers_cuda.so``
  (and ``..._tensorrt.so``) where the CPU wheel has only ``..._shared.so``;
* deep (``deep=True``): loads llama.cpp and asks it (``llama_supports_gpu_offload()``, the
  CUDA ``ARCHS`` in ``llama_print_system_info()``), creates a one-node ONNX Runtime session
  and reads the providers it really initialized (``session.get_providers()``, not
  ``get_available_providers()``, which lists what was compiled in even when CUDA fails to
  load), and imports TensorRT and cuda-python's CUDA runtime.

A check fails when a backend's real dependency is missing, not only its headline package:
the ONNX backends need ``onnx`` as well as onnxruntime, the TensorRT backend needs
cuda-python as well as ``tensorrt``.

The library probes are injectable (:class:`Probes`) so tests can stand in for CUDA builds.
"""

from __future__ import annotations

import binascii
import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from amalia_edge.device.jetson_stack import JetsonStack, stack_for
from amalia_edge.device.l4t import parse_l4t_version
from amalia_edge.device.probe import DeviceInfo

Status = Literal["ok", "warn", "fail", "skip"]
GiB = 1 << 30

# Memory the default model needs: AMÁLIA-9B / EuroLLM-9B (9.152e9 params) at Q4_K_M (4.8944
# bits/weight in amalia_edge.artifacts.quant_types) is 9.152e9 * 4.8944 / 8 = 5.6 GB = 5.2 GiB
# of weights; the rest of the 6 GiB is a short-context KV cache and runtime buffers.
DEFAULT_MIN_FREE = 6 * GiB

# One Relu node on a float[1] input, opset 13, IR 8: the smallest model that makes every
# execution provider initialize. Made with onnx.helper (make_node("Relu", ["x"], ["y"]) in
# graph "amalia_edge_probe", producer "amalia-edge"); tests rebuild it and compare bytes.
# binascii, not base64: a builtin module, where base64 costs an import at every start.
PROBE_ONNX = binascii.a2b_base64(
    "CAgSC2FtYWxpYS1lZGdlOkMKDAoBeBIBeSIEUmVsdRIRYW1hbGlhX2VkZ2VfcHJvYmVaDwoBeBIKCggIARIECgIIAWIP"
    "CgF5EgoKCAgBEgQKAggBQgQKABAN"
)

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")

SETUP_FIX = "run jetson/setup.sh (it builds llama-cpp-python with CUDA for this board)"
LLAMA_CUDA_FIX = (
    'rebuild with CUDA: CUDACXX=/usr/local/cuda/bin/nvcc CMAKE_ARGS="-DGGML_CUDA=on '
    '-DCMAKE_CUDA_ARCHITECTURES={arch}" FORCE_CMAKE=1 pip install --force-reinstall '
    "--no-cache-dir --no-binary llama-cpp-python llama-cpp-python (or run jetson/setup.sh)"
)


@dataclass(frozen=True)
class Check:
    """One line of the doctor report. ``fix`` is set whenever ``status`` is warn or fail."""

    name: str
    status: Status
    detail: str
    fix: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


@dataclass(frozen=True)
class LlamaBuild:
    gpu_offload: bool
    system_info: str
    version: str | None = None


@dataclass(frozen=True)
class OrtSession:
    version: str
    available: tuple[str, ...]  # compiled-in providers
    initialized: tuple[str, ...]  # providers the probe session really got
    error: str | None = None


def _find(name: str) -> Path | None:
    """The installed package's directory, without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _llama_build() -> LlamaBuild | None:
    try:
        from amalia_edge.runtime.native import import_llama_cpp

        llama_cpp = import_llama_cpp()
    except ImportError:
        return None
    info = llama_cpp.llama_print_system_info()
    text = info.decode("utf-8", "replace") if isinstance(info, bytes) else str(info)
    return LlamaBuild(
        bool(llama_cpp.llama_supports_gpu_offload()), text, getattr(llama_cpp, "__version__", None)
    )


def _ort_session() -> OrtSession | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    available = tuple(ort.get_available_providers())
    wanted = [p for p in (*GPU_PROVIDERS, "CPUExecutionProvider") if p in available]
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # the fallback warning is what we report ourselves
    try:
        sess = ort.InferenceSession(PROBE_ONNX, sess_options=opts, providers=wanted)
    except Exception as exc:  # any provider failure surfaces here; report it, never crash
        return OrtSession(ort.__version__, available, (), f"{type(exc).__name__}: {exc}")
    return OrtSession(ort.__version__, available, tuple(sess.get_providers()))


def _nvml_facts() -> dict[str, Any]:
    # Imported only on a machine with an NVIDIA dGPU (the check's caller makes sure).
    from amalia_edge.telemetry.nvml import nvml_facts

    return nvml_facts()


def _tensorrt_version() -> str | None:
    try:
        import tensorrt
    except ImportError:
        return None
    return str(getattr(tensorrt, "__version__", "unknown"))


def _cudart() -> str | None:
    """Import the CUDA runtime bindings the TensorRT backend uses (as ``import_cudart`` does:
    ``cuda.bindings.runtime`` since cuda-python 12.6, ``cuda.cudart`` before); the layout
    found, or ``None``."""
    try:
        from cuda.bindings import runtime  # noqa: F401
    except ImportError:
        try:
            from cuda import cudart  # noqa: F401
        except ImportError:
            return None
        return "cuda.cudart"
    return "cuda.bindings.runtime"


def _has_cudart_files(pkg: Path) -> bool:
    """cuda-python's runtime bindings on disk under the ``cuda`` package directory."""
    return (pkg / "bindings").is_dir() or any(pkg.glob("cudart*"))


@dataclass
class Probes:
    """Where checks get their facts; tests replace these."""

    find_package: Callable[[str], Path | None] = _find
    llama_build: Callable[[], LlamaBuild | None] = _llama_build
    ort_session: Callable[[], OrtSession | None] = _ort_session
    tensorrt_version: Callable[[], str | None] = _tensorrt_version
    nvml_facts: Callable[[], dict[str, Any]] = _nvml_facts
    cudart: Callable[[], str | None] = _cudart


def _arch(info: DeviceInfo) -> str:
    return (info.cuda_cc or "8.7").replace(".", "")


def check_llama(info: DeviceInfo, deep: bool, probes: Probes) -> Check:
    name = "llama.cpp CUDA build"
    needs_gpu = info.has_cuda
    pkg = probes.find_package("llama_cpp")
    if pkg is None:
        fix = SETUP_FIX if info.is_jetson else "pip install 'amalia-edge[llama]'"
        return Check(name, "fail", "llama-cpp-python is not installed", fix)
    fix = LLAMA_CUDA_FIX.format(arch=_arch(info))
    if not deep:
        libs = (
            sorted(p.name for p in (pkg / "lib").glob("libggml-cuda*"))
            if (pkg / "lib").is_dir()
            else []
        )
        if libs:
            return Check(
                name, "ok", f"CUDA library present ({libs[0]}); --deep verifies the architecture"
            )
        if not needs_gpu:
            return Check(name, "ok", "CPU build (no NVIDIA GPU on this machine)")
        return Check(
            name, "fail", f"no libggml-cuda in {pkg / 'lib'}: llama.cpp will run on the CPU", fix
        )
    build = probes.llama_build()
    if build is None:
        return Check(name, "fail", "llama_cpp is installed but does not import", fix)
    if not build.gpu_offload:
        if not needs_gpu:
            return Check(name, "ok", "CPU build (no NVIDIA GPU on this machine)")
        return Check(name, "fail", "built without GPU offload: the model would run on the CPU", fix)
    m = re.search(r"CUDA\s*:\s*ARCHS\s*=\s*([0-9, ]+)", build.system_info)
    if m is None:
        return Check(
            name,
            "warn",
            "GPU offload on, but the CUDA architectures are not reported",
            None if not info.is_jetson else fix,
        )
    archs = [a.strip() for a in m.group(1).split(",") if a.strip()]
    want = _arch(info) + "0"  # __CUDA_ARCH_LIST__ uses 870 for sm_87
    if info.cuda_cc and want not in archs:
        return Check(
            name,
            "fail",
            f"built for CUDA archs {','.join(archs)}, not {want} (this GPU is {info.cuda_cc}): "
            "kernels are JIT-compiled or missing",
            fix,
        )
    return Check(name, "ok", f"GPU offload, CUDA archs {','.join(archs)}")


def check_onnxruntime(info: DeviceInfo, deep: bool, probes: Probes) -> Check:
    name = "ONNX Runtime GPU providers"
    pkg = probes.find_package("onnxruntime")
    # The wheel and its index depend on the L4T release: the same table setup.sh reads.
    stack = _stack(info)
    jetson_fix = "run jetson/setup.sh (installs the onnxruntime-gpu build for this L4T release)"
    if stack is not None and stack.ort_version and stack.ort_index:
        jetson_fix += (
            ", or: pip uninstall -y onnxruntime && pip install "
            f"onnxruntime-gpu=={stack.ort_version} --index-url {stack.ort_index}"
        )
    elif stack is not None and stack.ort_version and stack.ort_wheel_url:
        # No index carries this build: pip needs the file under its wheel name to read its tags.
        jetson_fix += (
            f", or: download {stack.ort_wheel_url} as {stack.ort_wheel_file}, then "
            f"pip uninstall -y onnxruntime && pip install ./{stack.ort_wheel_file}"
        )
    elif stack is not None:
        jetson_fix = f"onnxruntime-gpu: {stack.ort_note}"
    fix = jetson_fix if info.is_jetson else "pip install onnxruntime-gpu (matching your CUDA)"
    # Where no onnxruntime-gpu wheel fits the release (JetPack 5 and 7), a missing GPU build is
    # the platform's limit, not a broken install: warn, with the reason.
    no_gpu: Status = (
        "warn" if info.is_jetson and stack is not None and stack.ort_version is None else "fail"
    )
    if pkg is None:
        if not info.is_jetson:
            return Check(name, "skip", "onnxruntime is not installed (optional: amalia-edge[onnx])")
        return Check(name, no_gpu, "onnxruntime is not installed", fix)
    if probes.find_package("onnx") is None:
        # Both ONNX backends read the graph's metadata with onnx before any session exists.
        return Check(
            name,
            "fail",
            "onnxruntime is installed but onnx is not: the ONNX backends cannot load a model",
            "pip install onnx (jetson/setup.sh installs it)",
        )
    if not deep:
        libs = sorted(
            p.name
            for p in (pkg / "capi").glob("libonnxruntime_providers_*.so")
            if "shared" not in p.name
        )
        if libs:
            return Check(name, "ok", f"{', '.join(libs)} present; --deep verifies they initialize")
        if info.has_cuda:
            return Check(name, no_gpu, "CPU-only onnxruntime", fix)
        return Check(name, "ok", "CPU-only onnxruntime (no NVIDIA GPU on this machine)")
    sess = probes.ort_session()
    if sess is None:
        return Check(name, "fail", "onnxruntime is installed but does not import", fix)
    if sess.error:
        return Check(name, "fail", f"a session could not be created: {sess.error}", fix)
    gpu = [p for p in sess.initialized if p in GPU_PROVIDERS]
    missing = [p for p in GPU_PROVIDERS if p in sess.available and p not in sess.initialized]
    if gpu and not missing:
        return Check(
            name, "ok", f"initialized: {', '.join(sess.initialized)} (onnxruntime {sess.version})"
        )
    if gpu:
        return Check(
            name,
            "warn",
            f"initialized {', '.join(gpu)}, but {', '.join(missing)} failed to initialize",
            "check that TensorRT's libraries (libnvinfer) match onnxruntime's build",
        )
    if not info.has_cuda:
        return Check(name, "ok", f"CPU only (no NVIDIA GPU): {', '.join(sess.initialized)}")
    detail = (
        f"compiled with {', '.join(missing)} but only {', '.join(sess.initialized)} initialized "
        "(CUDA/cuDNN libraries not found?)"
        if missing
        else f"CPU-only build: {', '.join(sess.initialized)}"
    )
    return Check(name, "fail", detail, fix)


def _stack(info: DeviceInfo) -> JetsonStack | None:
    rel = parse_l4t_version(info.l4t_release) if info.l4t_release else None
    return stack_for(rel)[0] if rel is not None else None


def check_tensorrt(info: DeviceInfo, deep: bool, probes: Probes) -> Check:
    """The TensorRT backend's two real dependencies: TensorRT's Python bindings and the CUDA
    runtime bindings from cuda-python (``import_cudart``). Either missing is a failure."""
    name = "TensorRT backend"
    fix = (
        "JetPack ships them in the system Python (python3-libnvinfer): create the virtual "
        "environment with --system-site-packages (jetson/setup.sh does) or "
        "`sudo apt install python3-libnvinfer`"
    )
    stack = _stack(info) if info.is_jetson else None
    has_trt = probes.find_package("tensorrt") is not None
    if stack is not None and not stack.tensorrt_ok and not has_trt:
        return Check(name, "warn", f"unavailable on {stack.name}", stack.tensorrt_note)
    if not has_trt:
        if not info.is_jetson:
            return Check(name, "skip", "tensorrt is not installed (optional off the Jetson)")
        return Check(name, "fail", "tensorrt is not importable", fix)
    cp_version = stack.cuda_python if stack is not None else None
    cp_fix = "pip install " + (f"cuda-python=={cp_version}" if cp_version else "cuda-python")
    cp_fix += " (jetson/setup.sh installs it): the TensorRT backend's CUDA runtime bindings"
    if not deep:
        cuda_pkg = probes.find_package("cuda")
        if cuda_pkg is None or not _has_cudart_files(cuda_pkg):
            return Check(
                name, "fail", "tensorrt found, but cuda-python (CUDA runtime) is missing", cp_fix
            )
        return Check(name, "ok", "tensorrt and cuda-python found; --deep imports them")
    version = probes.tensorrt_version()
    if version is None:
        return Check(name, "fail", "tensorrt is installed but does not import", fix)
    cudart = probes.cudart()
    if cudart is None:
        return Check(
            name, "fail", f"TensorRT {version}, but cuda-python's runtime does not import", cp_fix
        )
    return Check(name, "ok", f"TensorRT {version}, CUDA runtime from {cudart}")


def check_swap(info: DeviceInfo) -> Check:
    name = "swap"
    if info.swap_total is None:
        return Check(name, "skip", "swap unknown (/proc/meminfo unreadable)")
    if info.swap_total == 0:
        if not info.is_jetson:
            return Check(name, "ok", "none")
        return Check(
            name,
            "warn",
            "no swap: compiling llama.cpp or building TensorRT engines can be killed for memory",
            "add a swap file: sudo fallocate -l 16G /swapfile && sudo chmod 600 /swapfile && "
            "sudo mkswap /swapfile && sudo swapon /swapfile (and add it to /etc/fstab)",
        )
    return Check(name, "ok", f"{info.swap_total / GiB:.1f} GiB")


def check_memory(info: DeviceInfo, min_free: int) -> Check:
    name = "free unified memory" if info.is_jetson else "free memory"
    if info.mem_available is None or info.mem_total is None:
        return Check(name, "skip", "memory unknown (/proc/meminfo unreadable)")
    detail = f"{info.mem_available / GiB:.1f} of {info.mem_total / GiB:.1f} GiB available"
    if info.mem_available >= min_free:
        return Check(name, "ok", detail)
    fix = (
        f"free memory (need {min_free / GiB:.1f} GiB): close other programs"
        + (
            "; on the desktop image, `sudo systemctl set-default multi-user.target` and reboot "
            "frees about 1 GB"
            if info.is_jetson
            else ""
        )
        + "; or use a smaller quant type"
    )
    return Check(name, "warn", detail, fix)


def check_power(info: DeviceInfo) -> list[Check]:
    status = info.power
    fastest = status.fastest if status else None
    out: list[Check] = []
    if info.power_mode is None:
        out.append(Check("power mode", "skip", "unknown (nvpmodel not readable)"))
    elif fastest is None or info.power_mode == fastest:
        out.append(Check("power mode", "ok", info.power_mode))
    else:
        out.append(
            Check(
                "power mode",
                "warn",
                f"{info.power_mode}, not the fastest ({fastest})",
                f"sudo amalia-edge power --set {fastest}",
            )
        )
    if info.jetson_clocks is None:
        out.append(Check("jetson_clocks", "skip", "unknown (clock files not readable)"))
    elif info.jetson_clocks:
        out.append(Check("jetson_clocks", "ok", "clocks locked at the mode's maximum"))
    else:
        out.append(
            Check(
                "jetson_clocks",
                "warn",
                "off: clocks scale with load (slower, noisier numbers)",
                "sudo amalia-edge power --clocks on",
            )
        )
    return out


# Clock event reasons that mean the GPU is slowed by heat or power right now (not idle or a
# user setting); names from amalia_edge.telemetry.nvml.THROTTLE_REASONS.
SLOWDOWN_REASONS = frozenset(
    {"hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown"}
)


def check_nvml(info: DeviceInfo, probes: Probes) -> Check:
    """GPU telemetry through NVML on a machine with an NVIDIA dGPU (watts, J/token, clocks)."""
    name = "NVML GPU telemetry"
    facts = probes.nvml_facts()
    if not facts.get("available"):
        reason = str(facts.get("reason") or "unknown")
        fix = (
            "pip install 'amalia-edge[nvml]'"
            if "not installed" in reason
            else "check the NVIDIA driver: `nvidia-smi` must work for this user"
        )
        return Check(name, "warn", f"no GPU watts or J/token: {reason}", fix)
    parts = []
    slow: list[str] = []
    for g in facts.get("gpus", []):
        now = g.get("now") or {}
        bits = [f"GPU {g['index']} {g.get('name') or '?'}"]
        if now.get("power_w") is not None:
            limit = g.get("power_limit_w")
            bits.append(f"{now['power_w']:.0f} W" + (f" of {limit:.0f} W" if limit else ""))
        if now.get("temp_c") is not None:
            bits.append(f"{now['temp_c']:.0f} °C")
        if now.get("sm_clock_hz"):
            bits.append(f"SM {now['sm_clock_hz'] / 1e6:.0f} MHz")
        missing = [k for k, v in g.get("fields", {}).items() if not v.get("available")]
        if missing:
            bits.append("unavailable: " + ", ".join(missing))
        parts.append(", ".join(bits))
        slow += [r for r in now.get("throttle") or () if r in SLOWDOWN_REASONS]
    versions = f"driver {facts.get('driver') or '?'}, CUDA {facts.get('cuda_driver') or '?'}"
    counter = "J from the energy counter" if facts.get("energy_counter") else "J from ∫P dt"
    detail = f"{'; '.join(parts)}; {versions}; {counter}"
    if slow:
        return Check(
            name,
            "warn",
            f"{detail}; slowed now by {', '.join(sorted(set(slow)))}",
            "check cooling and the power cap: `nvidia-smi -q -d PERFORMANCE,POWER`",
        )
    return Check(name, "ok", detail)


def run_checks(
    info: DeviceInfo,
    *,
    deep: bool = False,
    min_free: int = DEFAULT_MIN_FREE,
    probes: Probes | None = None,
) -> list[Check]:
    """Every check that applies to this machine, in a fixed order."""
    probes = probes or Probes()
    checks = [
        check_llama(info, deep, probes),
        check_onnxruntime(info, deep, probes),
        check_tensorrt(info, deep, probes),
        check_swap(info),
        check_memory(info, min_free),
    ]
    if info.is_jetson:
        checks += check_power(info)
    elif info.gpus:  # a discrete NVIDIA GPU: its watts come from NVML (Jetson: INA3221)
        checks.append(check_nvml(info, probes))
    return checks
