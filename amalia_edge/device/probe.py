"""Probe the machine: Jetson module, L4T/JetPack, CUDA, memory, power mode; or CPU/GPU elsewhere.

``probe(root="/")`` reads only files under ``root`` (see :mod:`amalia_edge.device.fsroot`)
and runs only ``nvpmodel -q`` (Jetson) or ``nvidia-smi`` (when an NVIDIA driver is loaded),
so it takes milliseconds and needs no privileges. Anything it cannot find is ``None`` with
a line in ``notes`` saying why.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field

from amalia_edge.device.boards import (
    SOC_CUDA_CC,
    BoardSpec,
    lookup_board,
    module_ids_from_compatible,
)
from amalia_edge.device.fsroot import FsRoot, as_fsroot
from amalia_edge.device.l4t import parse_nv_tegra_release
from amalia_edge.device.power import PowerStatus, power_status

# Files read, one row each.
DT_MODEL = "/proc/device-tree/model"  # NUL-terminated, e.g. "NVIDIA Jetson AGX Orin Developer Kit"
DT_COMPATIBLE = "/proc/device-tree/compatible"  # NUL-separated list, module id + SoC
NV_TEGRA_RELEASE = "/etc/nv_tegra_release"  # L4T release line
# Inside a container /proc/device-tree is not there (/proc and /sys files cannot be
# bind-mounted): dusty-nv/jetson-containers' run.sh copies the model string to this file and
# mounts the copy; jetson/container.sh does the same, and adds the compatible string.
DT_MODEL_COPY = "/tmp/nv_jetson_model"
DT_COMPATIBLE_COPY = "/tmp/nv_jetson_compatible"
MEMINFO = "/proc/meminfo"
CPUINFO = "/proc/cpuinfo"
NVIDIA_DRIVER_VERSION = "/proc/driver/nvidia/version"  # present when the dGPU driver is loaded
NVIDIA_GPU_INFO = "/proc/driver/nvidia/gpus/*/information"  # "Model: NVIDIA GeForce ..."

# ARM CPU part numbers (/proc/cpuinfo "CPU part") → core name. Source: ARM Technical
# Reference Manuals (MIDR_EL1.PartNum) and the Linux kernel's arch/arm64/include/asm/cputype.h.
ARM_CPU_PARTS: dict[tuple[str, str], str] = {
    ("0x41", "0xd42"): "ARM Cortex-A78AE",  # Jetson Orin
    ("0x41", "0xd08"): "ARM Cortex-A72",
    ("0x41", "0xd0b"): "ARM Cortex-A76",
    ("0x41", "0xd0c"): "ARM Neoverse-N1",
    ("0x41", "0xd40"): "ARM Neoverse-V1",
    ("0x41", "0xd4f"): "ARM Neoverse-V2",
    ("0x4e", "0x004"): "NVIDIA Carmel",  # Jetson Xavier
}

# SIMD features that matter to llama.cpp / ONNX Runtime kernels: cpuinfo flag → our name.
# Flag names: Linux arch/x86/include/asm/cpufeatures.h (x86) and
# Documentation/arch/arm64/elf_hwcaps.rst (arm64).
X86_SIMD: dict[str, str] = {
    "sse4_2": "sse4.2",
    "avx": "avx",
    "avx2": "avx2",
    "fma": "fma",
    "f16c": "f16c",
    "avx512f": "avx512f",
    "avx512bw": "avx512bw",
    "avx512vl": "avx512vl",
    "avx512_vnni": "avx512vnni",
    "avx512_bf16": "avx512bf16",
    "avx_vnni": "avxvnni",
    "amx_tile": "amx",
}
ARM_SIMD: dict[str, str] = {
    "asimd": "neon",
    "asimddp": "dotprod",
    "asimdhp": "fp16",
    "i8mm": "i8mm",
    "bf16": "bf16",
    "sve": "sve",
    "sve2": "sve2",
}


@dataclass(frozen=True)
class GpuInfo:
    """A GPU. ``unified`` means it shares system memory (Jetson), so its memory is mem_total."""

    name: str
    memory_total: int | None = None
    memory_free: int | None = None
    cuda_cc: str | None = None
    driver: str | None = None
    unified: bool = False

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "memory_total": self.memory_total,
            "memory_free": self.memory_free,
            "cuda_cc": self.cuda_cc,
            "driver": self.driver,
            "unified": self.unified,
        }


@dataclass
class DeviceInfo:
    """What :func:`probe` found. Sizes in bytes, bandwidth in bytes/s."""

    is_jetson: bool
    arch: str
    board: BoardSpec | None = None
    model: str | None = None  # device-tree model string
    module_id: str | None = None
    soc: str | None = None
    l4t_release: str | None = None
    jetpack: str | None = None
    cuda_cc: str | None = None
    mem_total: int | None = None
    mem_available: int | None = None
    swap_total: int | None = None
    swap_free: int | None = None
    power_mode: str | None = None
    power_mode_id: int | None = None
    power: PowerStatus | None = None
    jetson_clocks: bool | None = None
    cpu_model: str | None = None
    cores: int | None = None
    simd: tuple[str, ...] = ()
    gpus: list[GpuInfo] = field(default_factory=list)
    memory_bandwidth: int | None = None
    memory_bandwidth_source: str | None = None  # "board table" | "measured" | None
    notes: list[str] = field(default_factory=list)

    @property
    def has_cuda(self) -> bool:
        """An NVIDIA GPU is present (the Jetson iGPU or a discrete card)."""
        return bool(self.gpus)

    @property
    def gpu_memory_available(self) -> int | None:
        """Memory a GPU backend can use: unified memory on Jetson, free VRAM elsewhere."""
        if not self.gpus:
            return None
        gpu = self.gpus[0]
        if gpu.unified:
            return self.mem_available
        return gpu.memory_free if gpu.memory_free is not None else gpu.memory_total

    @property
    def jetpack_major(self) -> int | None:
        try:
            return int(self.jetpack.split(".")[0]) if self.jetpack else None
        except ValueError:
            return None

    def set_measured_bandwidth(self, bytes_per_second: int) -> None:
        """Record a measured memory bandwidth (bench's copy test); it replaces the table value."""
        self.memory_bandwidth = int(bytes_per_second)
        self.memory_bandwidth_source = "measured"

    def fingerprint(self) -> str:
        """16 hex digits naming this hardware + software + power setting (cache key for
        autotune). Stable across reboots; changes with module, L4T, CPU, GPUs, power mode,
        clocks. Free memory is deliberately left out."""
        key = {
            "arch": self.arch,
            "jetson": self.is_jetson,
            "module": self.module_id,
            "model": self.model,
            "l4t": self.l4t_release,
            "cc": self.cuda_cc,
            "cpu": self.cpu_model,
            "cores": self.cores,
            "simd": list(self.simd),
            "mem_gib": round((self.mem_total or 0) / (1 << 30)),
            "gpus": [(g.name, g.cuda_cc, g.memory_total) for g in self.gpus],
            "power": self.power_mode,
            "clocks": self.jetson_clocks,
        }
        blob = json.dumps(key, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_dict(self) -> dict[str, object]:
        return {
            "is_jetson": self.is_jetson,
            "arch": self.arch,
            "board": self.board.to_dict() if self.board else None,
            "model": self.model,
            "module_id": self.module_id,
            "soc": self.soc,
            "l4t_release": self.l4t_release,
            "jetpack": self.jetpack,
            "cuda_cc": self.cuda_cc,
            "mem_total": self.mem_total,
            "mem_available": self.mem_available,
            "swap_total": self.swap_total,
            "swap_free": self.swap_free,
            "power_mode": self.power_mode,
            "power_mode_id": self.power_mode_id,
            "power": self.power.to_dict() if self.power else None,
            "jetson_clocks": self.jetson_clocks,
            "cpu_model": self.cpu_model,
            "cores": self.cores,
            "simd": list(self.simd),
            "gpus": [g.to_dict() for g in self.gpus],
            "memory_bandwidth": self.memory_bandwidth,
            "memory_bandwidth_source": self.memory_bandwidth_source,
            "fingerprint": self.fingerprint(),
            "notes": list(self.notes),
        }


def _dt_string(fs: FsRoot, path: str) -> str | None:
    raw = fs.read_bytes(path)
    if raw is None:
        return None
    return raw.rstrip(b"\0").decode("utf-8", errors="replace").strip()


def parse_meminfo(text: str) -> dict[str, int]:
    """``/proc/meminfo`` as bytes (values there are kB = KiB)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key.strip()] = int(parts[0]) * (1024 if len(parts) > 1 else 1)
    return out


def parse_cpuinfo(text: str) -> tuple[str | None, int, tuple[str, ...]]:
    """(model name, online logical CPUs, SIMD features) from ``/proc/cpuinfo``."""
    model: str | None = None
    cores = 0
    flags: set[str] = set()
    implementer = part = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key == "processor":
            cores += 1
        elif key in ("model name", "hardware") and model is None and value:
            model = value
        elif key in ("flags", "features"):
            flags.update(value.split())
        elif key == "cpu implementer" and implementer is None:
            implementer = value.lower()
        elif key == "cpu part" and part is None:
            part = value.lower()
    if model is None and implementer and part:
        model = ARM_CPU_PARTS.get((implementer, part), f"ARM implementer {implementer} part {part}")
    table = ARM_SIMD if "asimd" in flags or "fp" in flags else X86_SIMD
    simd = tuple(name for flag, name in table.items() if flag in flags)
    return model, cores, simd


def _machine() -> str:
    """``platform.machine()`` without importing :mod:`platform` (what it returns on POSIX)."""
    uname = getattr(os, "uname", None)
    if uname is not None:
        return str(uname().machine)
    import platform

    return platform.machine()


def _nvidia_smi(fs: FsRoot) -> list[GpuInfo]:
    result = fs.runner.run(
        [
            "nvidia-smi",
            "--query-gpu=name,memory.total,memory.free,compute_cap,driver_version",
            "--format=csv,noheader,nounits",
        ]
    )
    if result is None or not result.ok:
        return []
    gpus = []
    for line in result.stdout.strip().splitlines():
        cols = [c.strip() for c in line.split(",")]
        if len(cols) < 5:
            continue

        def mib(v: str) -> int | None:
            return int(float(v)) * (1 << 20) if v.replace(".", "", 1).isdigit() else None

        cc = cols[3] if cols[3] and cols[3][0].isdigit() else None
        gpus.append(GpuInfo(cols[0], mib(cols[1]), mib(cols[2]), cc, cols[4] or None))
    return gpus


def probe(root: str | os.PathLike[str] | FsRoot | None = "/") -> DeviceInfo:
    """Describe this machine (or the fake tree at ``root``). Never raises for missing files.

    ``root=None`` takes the root from ``AMALIA_EDGE_ROOT`` (default ``/``).
    """
    fs = as_fsroot(root)
    notes: list[str] = []
    compatible = _dt_string(fs, DT_COMPATIBLE) or _dt_string(fs, DT_COMPATIBLE_COPY) or ""
    model = _dt_string(fs, DT_MODEL) or _dt_string(fs, DT_MODEL_COPY)
    release_text = fs.read_text(NV_TEGRA_RELEASE)
    is_jetson = "nvidia,tegra" in compatible or release_text is not None
    arch = "aarch64" if is_jetson else (_machine() if fs.is_real else "unknown")

    cpuinfo = fs.read_text(CPUINFO) or ""
    cpu_model, cores, simd = parse_cpuinfo(cpuinfo)
    if not fs.is_real and not is_jetson and "flags" in cpuinfo:
        arch = "x86_64"
    if not cores:
        cores = (os.cpu_count() or 0) if fs.is_real else 0
        notes.append(f"{CPUINFO} unreadable: core count from os.cpu_count()")
    mem = parse_meminfo(fs.read_text(MEMINFO) or "")
    if not mem:
        notes.append(f"{MEMINFO} unreadable: memory unknown")

    info = DeviceInfo(
        is_jetson=is_jetson,
        arch=arch,
        model=model,
        mem_total=mem.get("MemTotal"),
        mem_available=mem.get("MemAvailable"),
        swap_total=mem.get("SwapTotal"),
        swap_free=mem.get("SwapFree"),
        cpu_model=cpu_model,
        cores=cores or None,
        simd=simd,
        notes=notes,
    )
    if is_jetson:
        _probe_jetson(fs, info, compatible, release_text)
    else:
        _probe_other(fs, info)
    return info


def _probe_jetson(fs: FsRoot, info: DeviceInfo, compatible: str, release_text: str | None) -> None:
    notes = info.notes
    ids = module_ids_from_compatible(compatible)
    board = lookup_board(compatible)
    info.board = board
    info.soc = next(
        (c.split(",", 1)[1] for c in compatible.split("\0") if c.startswith("nvidia,tegra")),
        board.soc if board else None,
    )
    if board is not None:
        info.module_id = board.module_id
        info.cuda_cc = board.cuda_cc
        info.memory_bandwidth = board.memory_bandwidth
        info.memory_bandwidth_source = "board table"
    else:
        info.module_id = ids[-1] if ids else None
        info.cuda_cc = SOC_CUDA_CC.get(info.soc or "")
        notes.append(
            f"module {info.module_id or '(no part number in device tree)'} is not in the board "
            "table: memory bandwidth unknown"
        )
    if release_text is None:
        notes.append(f"{NV_TEGRA_RELEASE} not found: L4T/JetPack release unknown")
    else:
        rel = parse_nv_tegra_release(release_text)
        if rel is None:
            notes.append(f"{NV_TEGRA_RELEASE} not in the expected format: L4T release unknown")
        else:
            info.l4t_release = rel.version
            info.jetpack = rel.jetpack
    info.gpus = [
        GpuInfo(
            name=f"{info.soc or 'Jetson'} integrated GPU",
            memory_total=info.mem_total,
            memory_free=info.mem_available,
            cuda_cc=info.cuda_cc,
            unified=True,
        )
    ]
    status = power_status(fs)
    info.power = status
    info.power_mode, info.power_mode_id = status.mode, status.mode_id
    info.jetson_clocks = status.jetson_clocks
    if board is not None and not status.modes and board.power_modes:
        status.modes = list(board.power_modes)
        status.notes.append("power modes from the board table (nvpmodel.conf unreadable)")
    notes.extend(status.notes)


def _probe_other(fs: FsRoot, info: DeviceInfo) -> None:
    if fs.exists(NVIDIA_DRIVER_VERSION):
        gpus = _nvidia_smi(fs)
        if not gpus:
            for path in fs.glob(NVIDIA_GPU_INFO):
                text = fs.read_text(path) or ""
                name = next(
                    (
                        ln.split(":", 1)[1].strip()
                        for ln in text.splitlines()
                        if ln.startswith("Model:")
                    ),
                    "NVIDIA GPU",
                )
                gpus.append(GpuInfo(name))
            if gpus:
                info.notes.append(
                    "nvidia-smi unavailable: GPU memory and compute capability unknown"
                )
        info.gpus = gpus
        if gpus:
            info.cuda_cc = gpus[0].cuda_cc
    info.notes.append("not a Jetson: memory bandwidth unknown until measured (amalia-edge bench)")
