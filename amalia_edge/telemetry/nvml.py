"""NVIDIA GPUs through NVML (``pynvml`` from the ``nvidia-ml-py`` package, extra ``nvml``).

Per GPU index, read each tick: board power (``nvmlDeviceGetPowerUsage``, mW), the total
energy counter (``nvmlDeviceGetTotalEnergyConsumption``, mJ since the driver loaded; Volta
and newer), GPU and memory-controller utilisation, memory used/total, SM and memory clocks,
GPU temperature and the current clock event ("throttle") reasons. Once, at open: name, UUID,
CUDA compute capability, enforced power limit, driver / CUDA driver / NVML versions.

Discovery happens once in :meth:`NvmlSampler.open`: every field is called once per GPU and
kept only if it answers. A field NVML refuses (``NVML_ERROR_NOT_SUPPORTED`` on a GeForce or an
older GPU, ``NVML_ERROR_NO_PERMISSION``, a driver too old for the function) is *unavailable
with the reason*, never read as 0; a field that starts failing later is dropped the same way.
``NVML_ERROR_GPU_IS_LOST`` (the GPU fell off the bus) raises ``OSError`` so the monitor drops
the whole source with that reason.

Why the energy counter: "on Ampere (except GA100) or newer GPUs, [nvmlDeviceGetPowerUsage]
returns power averaged over 1 sec interval" (NVML API reference, nvmlDeviceGetPowerUsage;
e.g. the H100/H200), far too smooth to integrate over a 0.3 s decode run. The counter ("for
Volta or newer", mJ) is exact between two reads, so the snapshots carry it as
:attr:`~amalia_edge.telemetry.base.Reading.energy_j` and
:func:`amalia_edge.telemetry.power_series` turns it into the power signal every consumer
integrates (``bench``'s W and J/token, ``energy_joules``); the label says which was used.

Jetson: NVML there is partial (no board power; JetPack's libnvidia-ml reports "N/A"), and the
board's INA3221 rails / tegrastats are the real sources, so on a Jetson (found under ``root``)
this source is unavailable and says so.

The source sums every GPU NVML lists (llama.cpp splits layers over all visible GPUs by
default); ``rails`` has each GPU's board power as ``nvml_gpu<index>``.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from amalia_edge.telemetry.base import Reading, Sampler, SourceStatus

log = logging.getLogger(__name__)

# What the total sums: the GPUs' board power, integrated from NVML's energy counter when every
# GPU has one (then J/token is counter-exact), else from the power readings.
POWER_LABEL = "nvml_gpu_sum"
COUNTER_LABEL = "nvml_gpu_sum_energy_counter"
INSTALL_HINT = "pip install 'amalia-edge[nvml]' (nvidia-ml-py)"

# Jetson markers, relative to the probed root (the same files amalia_edge.device.probe reads).
JETSON_MARKERS = ("etc/nv_tegra_release",)
DT_COMPATIBLE = "proc/device-tree/compatible"

# Clock event ("throttle") reason bits, NVML API reference nvmlClocksEventReasons (pynvml
# names nvmlClocksEventReason*; before driver 535 the same bits were nvmlClocksThrottleReason*).
THROTTLE_REASONS: tuple[tuple[int, str], ...] = (
    (0x001, "gpu_idle"),
    (0x002, "applications_clocks_setting"),
    (0x004, "sw_power_cap"),
    (0x008, "hw_slowdown"),
    (0x010, "sync_boost"),
    (0x020, "sw_thermal_slowdown"),
    (0x040, "hw_thermal_slowdown"),
    (0x080, "hw_power_brake_slowdown"),
    (0x100, "display_clock_setting"),
)

# The fields read each tick, in report order (names are this module's, not NVML's): the
# pynvml functions that give each, newest API first, and the pynvml constants passed after
# the device handle. An older driver answers NVML_ERROR_FUNCTION_NOT_FOUND to the new call,
# and the next one is tried. Units: NVML API reference (mW, mJ, %, bytes, MHz, degrees C).
CALLS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "power": (("nvmlDeviceGetPowerUsage", ()),),  # mW
    "energy": (("nvmlDeviceGetTotalEnergyConsumption", ()),),  # mJ, Volta and newer
    "utilization": (("nvmlDeviceGetUtilizationRates", ()),),  # .gpu, .memory in %
    "memory": (("nvmlDeviceGetMemoryInfo", ()),),  # .total, .free, .used in bytes
    "sm_clock": (("nvmlDeviceGetClockInfo", ("NVML_CLOCK_SM",)),),  # MHz
    "mem_clock": (("nvmlDeviceGetClockInfo", ("NVML_CLOCK_MEM",)),),  # MHz
    "temperature": (
        ("nvmlDeviceGetTemperatureV", ("NVML_TEMPERATURE_GPU",)),  # the current API
        ("nvmlDeviceGetTemperature", ("NVML_TEMPERATURE_GPU",)),  # deprecated: removed in CUDA 14
    ),
    "throttle": (
        ("nvmlDeviceGetCurrentClocksEventReasons", ()),  # the current name
        ("nvmlDeviceGetCurrentClocksThrottleReasons", ()),  # the same bits, older drivers
    ),
}
FIELDS = tuple(CALLS)


def throttle_names(mask: int) -> tuple[str, ...]:
    """The named reasons set in an NVML clock-event bitmask (unknown bits as ``bit0x...``)."""
    names = [name for bit, name in THROTTLE_REASONS if mask & bit]
    known = 0
    for bit, _ in THROTTLE_REASONS:
        known |= bit
    rest = mask & ~known
    b = 1
    while rest:
        if rest & b:
            names.append(f"bit{b:#x}")
            rest &= ~b
        b <<= 1
    return tuple(names)


def describe_error(nvml: Any, exc: BaseException) -> str:
    """A person's reason for an NVML error (str(NVMLError) plus what it usually means)."""
    text = str(exc)
    value = getattr(exc, "value", None)
    hints = {
        getattr(nvml, "NVML_ERROR_NOT_SUPPORTED", -1): "not supported by this GPU or driver",
        getattr(nvml, "NVML_ERROR_NO_PERMISSION", -1): "needs more privileges",
        getattr(nvml, "NVML_ERROR_FUNCTION_NOT_FOUND", -1): "driver too old for this call",
        getattr(nvml, "NVML_ERROR_LIBRARY_NOT_FOUND", -1): "libnvidia-ml.so.1 not found: "
        "no NVIDIA driver on this machine",
        getattr(nvml, "NVML_ERROR_DRIVER_NOT_LOADED", -1): "the NVIDIA kernel driver is not loaded",
    }
    hint = hints.get(value) if value is not None else None
    return f"{text} ({hint})" if hint else text


@dataclass(frozen=True)
class FieldStatus:
    """Whether one field can be read on one GPU; ``reason`` says why not (or what it is)."""

    available: bool
    reason: str = ""

    def to_dict(self) -> dict[str, object]:
        return {"available": self.available, "reason": self.reason}


@dataclass
class GpuSample:
    """One GPU at one moment. ``None``: not measured (the field's status says why)."""

    index: int
    power_w: float | None = None
    energy_j: float | None = None  # counter, since the sampler opened
    gpu_util: float | None = None  # percent
    mem_util: float | None = None  # percent of time the memory controller was busy
    mem_used: int | None = None  # bytes
    mem_total: int | None = None
    sm_clock_hz: int | None = None
    mem_clock_hz: int | None = None
    temp_c: float | None = None
    throttle: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, object]:
        d = dict(self.__dict__)
        d["throttle"] = None if self.throttle is None else list(self.throttle)
        return d


@dataclass
class NvmlGpu:
    """One GPU found at open: facts, and which fields answered (with the reason if not)."""

    index: int
    name: str | None = None
    uuid: str | None = None
    cuda_cc: str | None = None
    power_limit_w: float | None = None
    memory_total: int | None = None
    fields: dict[str, FieldStatus] = field(default_factory=dict)
    handle: Any = None
    calls: dict[str, Callable[[], Any]] = field(default_factory=dict, repr=False)
    energy0_mj: int | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "index": self.index,
            "name": self.name,
            "uuid": self.uuid,
            "cuda_cc": self.cuda_cc,
            "power_limit_w": self.power_limit_w,
            "memory_total": self.memory_total,
            "fields": {k: v.to_dict() for k, v in self.fields.items()},
        }

    @property
    def unavailable(self) -> dict[str, str]:
        return {k: v.reason for k, v in self.fields.items() if not v.available}


def is_jetson(root: str | os.PathLike[str]) -> bool:
    """A Jetson's markers under ``root`` (L4T release file or a tegra device tree)."""
    if any(Path(root, m).exists() for m in JETSON_MARKERS):
        return True
    try:
        return b"nvidia,tegra" in Path(root, DT_COMPATIBLE).read_bytes()
    except OSError:
        return False


def _import_pynvml() -> ModuleType | None:
    try:
        import pynvml
    except ImportError:
        return None
    return pynvml


class NvmlSampler(Sampler):
    """Power, energy, load, memory, clocks, temperature and throttling of NVIDIA GPUs.

    ``indices``: the NVML GPU indices to read (default every GPU). ``nvml``: the module to
    use instead of ``pynvml`` (the real one is imported lazily in :meth:`open`).
    """

    name = "nvml"

    def __init__(
        self,
        root: str | os.PathLike[str] = "/",
        indices: Sequence[int] | None = None,
        nvml: ModuleType | None = None,
    ) -> None:
        self.root = root
        self.indices = None if indices is None else list(indices)
        self._nvml = nvml
        self.gpus: list[NvmlGpu] = []
        self.system: dict[str, str | None] = {}
        self._initialised = False
        self._lock = threading.Lock()
        self.last: list[GpuSample] = []

    # -- discovery ---------------------------------------------------------------------------
    def open(self) -> SourceStatus:
        if is_jetson(self.root):
            return SourceStatus(
                self.name,
                False,
                "Jetson: NVML is partial there; board power comes from INA3221 / tegrastats",
            )
        nvml = self._nvml or _import_pynvml()
        if nvml is None:
            return SourceStatus(self.name, False, f"nvidia-ml-py is not installed ({INSTALL_HINT})")
        self._nvml = nvml
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            return SourceStatus(self.name, False, f"NVML: {describe_error(nvml, exc)}")
        self._initialised = True
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except nvml.NVMLError as exc:
            self.close()
            return SourceStatus(self.name, False, f"NVML device count: {describe_error(nvml, exc)}")
        wanted = range(count) if self.indices is None else self.indices
        gpus: list[NvmlGpu] = []
        problems: list[str] = []
        for i in wanted:
            if not 0 <= i < count:
                problems.append(f"GPU {i}: no such index (NVML lists {count})")
                continue
            try:
                gpus.append(self._discover(i))
            except nvml.NVMLError as exc:
                problems.append(f"GPU {i}: {describe_error(nvml, exc)}")
        self.system = self._system_facts()
        self.gpus = gpus
        if not gpus:
            self.close()
            why = "; ".join(problems) or "no NVIDIA GPU (NVML lists 0 devices)"
            return SourceStatus(self.name, False, why)
        return SourceStatus(self.name, True, self._summary(problems))

    def _summary(self, problems: list[str]) -> str:
        parts = []
        for g in self.gpus:
            missing = g.unavailable
            txt = f"GPU {g.index} {g.name or '?'}"
            if missing:
                txt += "; unavailable: " + ", ".join(f"{k} ({v})" for k, v in missing.items())
            parts.append(txt)
        if self.counter_ok:
            parts.append("J from the energy counter")
        return "; ".join(parts + problems)

    @property
    def counter_ok(self) -> bool:
        """Every GPU read has a working energy counter (and board power to pair it with)."""
        return bool(self.gpus) and all(
            g.fields.get("energy", FieldStatus(False)).available
            and g.fields.get("power", FieldStatus(False)).available
            for g in self.gpus
        )

    def _system_facts(self) -> dict[str, str | None]:
        nvml = self._nvml
        assert nvml is not None
        out: dict[str, str | None] = {}
        for key, fn in (
            ("driver", "nvmlSystemGetDriverVersion"),
            ("nvml_version", "nvmlSystemGetNVMLVersion"),
            ("cuda_driver", "nvmlSystemGetCudaDriverVersion"),
        ):
            try:
                value = getattr(nvml, fn)()
            except nvml.NVMLError as exc:
                out[key] = None
                out[key + "_reason"] = describe_error(nvml, exc)
                continue
            if key == "cuda_driver":  # 12080 -> "12.8" (NVML: major * 1000 + minor * 10)
                value = f"{int(value) // 1000}.{int(value) % 1000 // 10}"
            out[key] = str(value)
        return out

    def _discover(self, index: int) -> NvmlGpu:
        nvml = self._nvml
        assert nvml is not None
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        gpu = NvmlGpu(index=index, handle=handle)

        def fact(fn: Callable[[], Any]) -> Any:
            try:
                return fn()
            except nvml.NVMLError as exc:
                log.info("NVML GPU %d: %s", index, describe_error(nvml, exc))
                return None

        gpu.name = fact(lambda: nvml.nvmlDeviceGetName(handle))
        gpu.uuid = fact(lambda: nvml.nvmlDeviceGetUUID(handle))
        cc = fact(lambda: nvml.nvmlDeviceGetCudaComputeCapability(handle))
        gpu.cuda_cc = f"{cc[0]}.{cc[1]}" if cc else None
        limit = fact(lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle))
        gpu.power_limit_w = None if limit is None else limit / 1000.0
        for name in FIELDS:
            self._probe_field(gpu, name)
        if gpu.fields["energy"].available:
            gpu.energy0_mj = int(gpu.calls["energy"]())
        if gpu.fields["memory"].available:
            gpu.memory_total = int(gpu.calls["memory"]().total)
        return gpu

    def _alternatives(self, handle: Any, name: str) -> list[Callable[[], Any]]:
        """The NVML calls that give ``name`` (:data:`CALLS`) that this pynvml has."""
        n = self._nvml
        assert n is not None
        out: list[Callable[[], Any]] = []
        for fn_name, const_names in CALLS[name]:
            fn = getattr(n, fn_name, None)
            consts = [getattr(n, c, None) for c in const_names]
            if fn is None or any(c is None for c in consts):
                continue  # a pynvml older than the function
            out.append(functools.partial(fn, handle, *consts))
        return out

    def _probe_field(self, gpu: NvmlGpu, name: str) -> None:
        nvml = self._nvml
        assert nvml is not None
        reason = "no NVML function for it in this nvidia-ml-py"
        version_errors = {
            getattr(nvml, "NVML_ERROR_FUNCTION_NOT_FOUND", -1),
            getattr(nvml, "NVML_ERROR_ARGUMENT_VERSION_MISMATCH", -1),
        }
        for fn in self._alternatives(gpu.handle, name):
            try:
                fn()
            except nvml.NVMLError as exc:
                reason = describe_error(nvml, exc)
                if getattr(exc, "value", None) in version_errors:
                    continue  # an older driver: try the older call
                break
            gpu.calls[name] = fn
            gpu.fields[name] = FieldStatus(True)
            return
        gpu.fields[name] = FieldStatus(False, reason)

    # -- reading -----------------------------------------------------------------------------
    def read_gpus(self) -> list[GpuSample]:
        """Every GPU's fields now. Raises ``OSError`` when a GPU is lost."""
        nvml = self._nvml
        if nvml is None or not self.gpus:
            raise OSError("NVML source not opened")
        out = []
        with self._lock:
            for gpu in self.gpus:
                out.append(self._read_gpu(nvml, gpu))
            self.last = out
        return out

    def _read_gpu(self, nvml: Any, gpu: NvmlGpu) -> GpuSample:
        s = GpuSample(index=gpu.index, mem_total=gpu.memory_total)
        lost = getattr(nvml, "NVML_ERROR_GPU_IS_LOST", -1)
        for name, fn in list(gpu.calls.items()):
            try:
                value = fn()
            except nvml.NVMLError as exc:
                why = describe_error(nvml, exc)
                if getattr(exc, "value", None) == lost:
                    raise OSError(f"NVML GPU {gpu.index}: {why}") from None
                log.warning("NVML GPU %d: %s stopped: %s", gpu.index, name, why)
                gpu.fields[name] = FieldStatus(False, f"stopped: {why}")
                del gpu.calls[name]
                continue
            if name == "power":
                s.power_w = value / 1000.0  # mW
            elif name == "energy":
                s.energy_j = (int(value) - (gpu.energy0_mj or 0)) / 1000.0  # mJ
            elif name == "utilization":
                s.gpu_util, s.mem_util = float(value.gpu), float(value.memory)
            elif name == "memory":
                s.mem_used, s.mem_total = int(value.used), int(value.total)
            elif name == "sm_clock":
                s.sm_clock_hz = int(value) * 1_000_000  # MHz
            elif name == "mem_clock":
                s.mem_clock_hz = int(value) * 1_000_000
            elif name == "temperature":
                s.temp_c = float(value)
            elif name == "throttle":
                s.throttle = throttle_names(int(value))
        return s

    def read(self) -> Reading:
        samples = self.read_gpus()
        r = Reading()
        for s in samples:
            if s.power_w is not None:
                r.rails[f"nvml_gpu{s.index}"] = s.power_w
            if s.temp_c is not None:
                r.temps[f"nvml_gpu{s.index}"] = s.temp_c
        # A total only when every GPU gave one: a partial sum under the same label would lie.
        powers = [s.power_w for s in samples]
        if all(p is not None for p in powers):
            r.power_w = sum(p for p in powers if p is not None)
            energies = [s.energy_j for s in samples]
            if all(e is not None for e in energies):
                r.energy_j = sum(e for e in energies if e is not None)
                r.power_label = COUNTER_LABEL
            else:
                r.power_label = POWER_LABEL
        utils = [s.gpu_util for s in samples if s.gpu_util is not None]
        r.gpu_load = sum(utils) / len(utils) if utils else None
        clocks = [s.sm_clock_hz for s in samples if s.sm_clock_hz is not None]
        r.gpu_freq = min(clocks) if clocks else None
        return r

    def close(self) -> None:
        if self._initialised and self._nvml is not None:
            self._initialised = False
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError as exc:  # pragma: no cover - shutdown is best effort
                log.debug("nvmlShutdown: %s", exc)

    # -- one-shot facts (doctor, gpu_check) --------------------------------------------------
    def facts(self) -> dict[str, Any]:
        """System versions, each GPU's facts and field statuses, and one reading of each."""
        samples = {s.index: s for s in self.last}
        return {
            **self.system,
            "energy_counter": self.counter_ok,
            "gpus": [
                {
                    **g.to_dict(),
                    "now": samples[g.index].to_dict() if g.index in samples else None,
                }
                for g in self.gpus
            ],
        }


def nvml_facts(
    root: str | os.PathLike[str] = "/", nvml: ModuleType | None = None
) -> dict[str, Any]:
    """Open NVML, read every GPU once, close: ``{"available", "reason", ...facts}``."""
    sampler = NvmlSampler(root, nvml=nvml)
    st = sampler.open()
    if not st.available:
        return {"available": False, "reason": st.reason}
    try:
        sampler.read_gpus()
    except OSError as exc:
        return {"available": False, "reason": str(exc)}
    finally:
        sampler.close()
    return {"available": True, "reason": st.reason, **sampler.facts()}
