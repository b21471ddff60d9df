"""The NVML source against the real ``pynvml`` binding, with only the C library faked.

No GPU here, so the NVIDIA driver's ``libnvidia-ml.so.1`` is replaced by :class:`FakeLibNvml`:
an object with the C entry points pynvml looks up by name (``nvmlDeviceGetPowerUsage``,
``nvmlDeviceGetCount_v2``, ...) that fill pynvml's own ctypes out-parameters and return NVML
status codes. Everything above it is the real nvidia-ml-py: its wrappers build the ctypes
arguments, ``_nvmlCheckReturn`` turns codes into its ``NVMLError_*`` classes, a C function the
"driver" lacks becomes ``NVMLError_FunctionNotFound`` through ``_nvmlGetFunctionPointer``.
The values of the fake GPUs are illustrative; the codes are what the NVML API reference
documents (e.g. the energy counter is "for Volta or newer": a Pascal board answers
NVML_ERROR_NOT_SUPPORTED).

One test uses no fake at all: on this machine (no NVIDIA driver) pynvml's ``nvmlInit`` fails
to load ``libnvidia-ml.so.1`` and raises ``NVMLError_LibraryNotFound``; the source must say so.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

pynvml = pytest.importorskip("pynvml")

from amalia_edge.telemetry import (  # noqa: E402 - after the importorskip
    Monitor,
    Snapshot,
    counter_series,
    energy_joules,
    power_series,
)
from amalia_edge.telemetry.nvml import (  # noqa: E402
    COUNTER_LABEL,
    POWER_LABEL,
    THROTTLE_REASONS,
    NvmlSampler,
    nvml_facts,
    throttle_names,
)

OK = pynvml.NVML_SUCCESS
NOT_SUPPORTED = pynvml.NVML_ERROR_NOT_SUPPORTED


@dataclass
class FakeGpu:
    """What one GPU answers. ``codes``: C function name -> NVML status to return instead."""

    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = "GPU-5b1f0c2e-0000-0000-0000-000000000000"
    cc: tuple[int, int] = (9, 0)
    power_mw: int = 112_000
    watts_for_counter: float = 112.0  # the energy counter advances at this rate
    limit_mw: int = 700_000
    util: tuple[int, int] = (87, 41)
    mem: tuple[int, int] = (85_520_809_984, 3_221_225_472)  # total, used
    sm_mhz: int = 1980
    mem_mhz: int = 2619
    temp_c: int = 43
    reasons: int = 0x004  # sw power cap
    codes: dict[str, int] = field(default_factory=dict)
    t0: float = field(default_factory=time.perf_counter)
    energy0_mj: int = 8_000_000_000

    def energy_mj(self) -> int:
        return int(self.energy0_mj + self.watts_for_counter * (time.perf_counter() - self.t0) * 1e3)


class FakeLibNvml:
    """Stands in for ``libnvidia-ml.so.1`` under the real pynvml (C names and signatures).

    ``missing``: C functions this "driver" does not export (an older driver).
    """

    def __init__(self, gpus: list[FakeGpu], missing: tuple[str, ...] = ()) -> None:
        self.gpus = gpus
        self.missing = set(missing)
        self.structs = [pynvml.struct_c_nvmlDevice_t() for _ in gpus]
        self.calls: list[str] = []
        self.inits = 0
        self.shutdowns = 0
        self._fns: dict[str, Callable[..., int]] = self._functions()

    def __getattr__(self, name: str) -> Callable[..., int]:
        fns = self.__dict__.get("_fns", {})
        if name in self.__dict__.get("missing", ()) or name not in fns:
            raise AttributeError(name)  # pynvml: NVMLError_FunctionNotFound

        def call(*args: Any) -> int:
            self.calls.append(name)
            return fns[name](*args)

        return call

    def _gpu(self, handle: Any) -> FakeGpu:
        addr = ctypes.addressof(handle.contents)
        (i,) = [k for k, s in enumerate(self.structs) if ctypes.addressof(s) == addr]
        return self.gpus[i]

    def _functions(self) -> dict[str, Callable[..., int]]:
        def out(ref: Any) -> Any:  # the ctypes object behind a byref() argument
            return ref._obj

        def per_gpu(c_name: str, fill: Callable[[FakeGpu, tuple[Any, ...]], None]) -> Any:
            def fn(handle: Any, *args: Any) -> int:
                gpu = self._gpu(handle)
                code = gpu.codes.get(c_name, OK)
                if code == OK:
                    fill(gpu, args)
                return code

            return fn

        def init(_flags: Any) -> int:
            self.inits += 1
            return OK

        def shutdown() -> int:
            self.shutdowns += 1
            return OK

        def count(ref: Any) -> int:
            out(ref).value = len(self.gpus)
            return OK

        def handle_by_index(index: Any, ref: Any) -> int:
            i = index.value
            if not 0 <= i < len(self.gpus):
                return int(pynvml.NVML_ERROR_INVALID_ARGUMENT)
            out(ref).contents = self.structs[i]
            return OK

        def string(value: str) -> Callable[..., int]:
            def fn(buf: Any, _size: Any) -> int:
                buf.value = value.encode()
                return OK

            return fn

        def cuda_version(ref: Any) -> int:
            out(ref).value = 12080
            return OK

        def set_value(attr: str, scale: Callable[[FakeGpu], Any]) -> Any:
            return lambda g, a: setattr(out(a[-1]), attr, scale(g))

        def set_string(g: FakeGpu, a: tuple[Any, ...], value: Callable[[FakeGpu], str]) -> None:
            a[0].value = value(g).encode()

        def util(g: FakeGpu, a: tuple[Any, ...]) -> None:
            out(a[0]).gpu, out(a[0]).memory = g.util

        def mem(g: FakeGpu, a: tuple[Any, ...]) -> None:
            m = out(a[0])
            m.total, m.used = g.mem
            m.free = g.mem[0] - g.mem[1]

        def clock(g: FakeGpu, a: tuple[Any, ...]) -> None:
            kind = a[0].value
            out(a[1]).value = g.sm_mhz if kind == pynvml.NVML_CLOCK_SM else g.mem_mhz

        def temp_v(g: FakeGpu, a: tuple[Any, ...]) -> None:
            s = out(a[0])
            assert s.version == pynvml.nvmlTemperature_v1
            assert s.sensorType == pynvml.NVML_TEMPERATURE_GPU
            s.temperature = g.temp_c

        def cc(g: FakeGpu, a: tuple[Any, ...]) -> None:
            out(a[0]).value, out(a[1]).value = g.cc

        return {
            "nvmlInitWithFlags": init,
            "nvmlShutdown": shutdown,
            "nvmlDeviceGetCount_v2": count,
            "nvmlDeviceGetHandleByIndex_v2": handle_by_index,
            "nvmlSystemGetDriverVersion": string("570.124.06"),
            "nvmlSystemGetNVMLVersion": string("12.570.124.06"),
            "nvmlSystemGetCudaDriverVersion": cuda_version,
            "nvmlDeviceGetName": per_gpu(
                "nvmlDeviceGetName", lambda g, a: set_string(g, a, lambda x: x.name)
            ),
            "nvmlDeviceGetUUID": per_gpu(
                "nvmlDeviceGetUUID", lambda g, a: set_string(g, a, lambda x: x.uuid)
            ),
            "nvmlDeviceGetCudaComputeCapability": per_gpu("nvmlDeviceGetCudaComputeCapability", cc),
            "nvmlDeviceGetEnforcedPowerLimit": per_gpu(
                "nvmlDeviceGetEnforcedPowerLimit", set_value("value", lambda g: g.limit_mw)
            ),
            "nvmlDeviceGetPowerUsage": per_gpu(
                "nvmlDeviceGetPowerUsage", set_value("value", lambda g: g.power_mw)
            ),
            "nvmlDeviceGetTotalEnergyConsumption": per_gpu(
                "nvmlDeviceGetTotalEnergyConsumption", set_value("value", FakeGpu.energy_mj)
            ),
            "nvmlDeviceGetUtilizationRates": per_gpu("nvmlDeviceGetUtilizationRates", util),
            "nvmlDeviceGetMemoryInfo": per_gpu("nvmlDeviceGetMemoryInfo", mem),
            "nvmlDeviceGetClockInfo": per_gpu("nvmlDeviceGetClockInfo", clock),
            "nvmlDeviceGetTemperatureV": per_gpu("nvmlDeviceGetTemperatureV", temp_v),
            "nvmlDeviceGetTemperature": per_gpu(
                "nvmlDeviceGetTemperature", set_value("value", lambda g: g.temp_c)
            ),
            "nvmlDeviceGetCurrentClocksEventReasons": per_gpu(
                "nvmlDeviceGetCurrentClocksEventReasons", set_value("value", lambda g: g.reasons)
            ),
            "nvmlDeviceGetCurrentClocksThrottleReasons": per_gpu(
                "nvmlDeviceGetCurrentClocksThrottleReasons",
                set_value("value", lambda g: g.reasons),
            ),
        }


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., FakeLibNvml]]:
    """Install a :class:`FakeLibNvml` as pynvml's loaded library; pynvml itself is real."""

    def install(gpus: list[FakeGpu] | None = None, missing: tuple[str, ...] = ()) -> FakeLibNvml:
        lib = FakeLibNvml(gpus if gpus is not None else [FakeGpu()], missing)
        monkeypatch.setattr(pynvml, "nvmlLib", lib)  # _LoadNvmlLibrary then loads nothing
        monkeypatch.setattr(pynvml, "_nvmlGetFunctionPointer_cache", {})
        return lib

    yield install


def _library_loads() -> bool:
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


# -- the real binding, no fake -------------------------------------------------------------------
def test_real_pynvml_without_a_driver_is_unavailable_with_the_reason() -> None:
    """Here no NVIDIA driver exists: pynvml's nvmlInit raises NVMLError_LibraryNotFound."""
    assert pynvml.nvmlLib is None  # nothing faked
    s = NvmlSampler()
    st = s.open()
    s.close()
    if _library_loads():  # pragma: no cover - a machine with the NVIDIA driver
        assert st.available or "NVML" in st.reason
        return
    assert not st.available
    assert st.reason == (
        "NVML: NVML Shared Library Not Found "
        "(libnvidia-ml.so.1 not found: no NVIDIA driver on this machine)"
    )
    facts = nvml_facts()
    assert facts == {"available": False, "reason": st.reason}


def test_without_nvidia_ml_py_the_reason_is_the_install_line(monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    st = NvmlSampler().open()
    assert not st.available and "pip install 'amalia-edge[nvml]'" in st.reason


def test_throttle_table_matches_the_binding() -> None:
    """Our bit table is the binding's nvmlClocksEventReason* constants, bit for bit."""
    names = {
        "gpu_idle": "GpuIdle",
        "applications_clocks_setting": "ApplicationsClocksSetting",
        "sw_power_cap": "SwPowerCap",
        "hw_slowdown": "HwSlowdown",
        "sync_boost": "SyncBoost",
        "sw_thermal_slowdown": "SwThermalSlowdown",
        "hw_thermal_slowdown": "HwThermalSlowdown",
        "hw_power_brake_slowdown": "HwPowerBrakeSlowdown",
        "display_clock_setting": "DisplayClockSetting",
    }
    for bit, name in THROTTLE_REASONS:
        assert getattr(pynvml, "nvmlClocksEventReason" + names[name]) == bit
        assert getattr(pynvml, "nvmlClocksThrottleReason" + names[name]) == bit
    mask = pynvml.nvmlClocksEventReasonSwPowerCap | pynvml.nvmlClocksEventReasonHwThermalSlowdown
    assert throttle_names(mask) == ("sw_power_cap", "hw_thermal_slowdown")
    assert throttle_names(0) == ()
    assert throttle_names(0x400 | 0x1) == ("gpu_idle", "bit0x400")


# -- a data-centre GPU with every field ----------------------------------------------------------
def test_h100_every_field(fake_nvml) -> None:
    lib = fake_nvml()
    s = NvmlSampler()
    st = s.open()
    assert st.available, st
    assert "GPU 0 NVIDIA H100 80GB HBM3" in st.reason and "energy counter" in st.reason
    (gpu,) = s.gpus
    assert gpu.cuda_cc == "9.0" and gpu.power_limit_w == 700.0
    assert gpu.uuid == FakeGpu().uuid and gpu.memory_total == 85_520_809_984
    assert all(f.available for f in gpu.fields.values())
    time.sleep(0.02)
    r = s.read()
    assert r.rails == {"nvml_gpu0": 112.0} and r.power_w == 112.0
    assert r.power_label == COUNTER_LABEL
    assert r.energy_j is not None and 0 < r.energy_j < 112.0  # since open, not since boot
    assert r.temps == {"nvml_gpu0": 43.0}
    assert r.gpu_load == 87.0 and r.gpu_freq == 1_980_000_000
    (g,) = s.last
    assert (g.mem_used, g.mem_total, g.mem_util) == (3_221_225_472, 85_520_809_984, 41.0)
    assert g.mem_clock_hz == 2_619_000_000 and g.throttle == ("sw_power_cap",)
    # Discovery happened once: a read calls only the eight field functions.
    before = len(lib.calls)
    s.read()
    assert len(lib.calls) - before == 8
    assert "nvmlDeviceGetHandleByIndex_v2" not in lib.calls[before:]
    facts = s.facts()
    assert facts["driver"] == "570.124.06" and facts["cuda_driver"] == "12.8"
    assert facts["energy_counter"] is True
    assert facts["gpus"][0]["now"]["power_w"] == 112.0
    s.close()
    assert lib.inits == 1 and lib.shutdowns == 1


def test_nvml_facts_reads_once_and_closes(fake_nvml) -> None:
    lib = fake_nvml()
    facts = nvml_facts()
    assert facts["available"] is True and facts["gpus"][0]["name"] == "NVIDIA H100 80GB HBM3"
    assert facts["gpus"][0]["fields"]["energy"] == {"available": True, "reason": ""}
    assert lib.inits == lib.shutdowns == 1


# -- what NVML refuses: unavailable with the reason, never 0 -------------------------------------
def test_pascal_without_energy_counter_falls_back_to_power(fake_nvml) -> None:
    gpu = FakeGpu(name="Tesla P100-PCIE-16GB", cc=(6, 0))
    gpu.codes["nvmlDeviceGetTotalEnergyConsumption"] = NOT_SUPPORTED
    fake_nvml([gpu])
    s = NvmlSampler()
    st = s.open()
    assert st.available
    assert "energy (Not Supported (not supported by this GPU or driver))" in st.reason
    r = s.read()
    assert r.power_w == 112.0 and r.energy_j is None and r.power_label == POWER_LABEL
    assert s.gpus[0].fields["energy"].reason.startswith("Not Supported")


def test_no_power_reading_means_no_total_not_zero(fake_nvml) -> None:
    gpu = FakeGpu(name="NVIDIA GeForce GTX 1050")
    gpu.codes["nvmlDeviceGetPowerUsage"] = NOT_SUPPORTED
    gpu.codes["nvmlDeviceGetTotalEnergyConsumption"] = NOT_SUPPORTED
    fake_nvml([gpu])
    s = NvmlSampler()
    assert s.open().available  # load, clocks and temperature still come from it
    r = s.read()
    assert r.power_w is None and r.rails == {} and r.power_label is None
    assert r.gpu_load == 87.0
    mon = Monitor([s], interval=0.01)
    mon.start()
    samples = mon.stop()
    assert all(x.power_w is None for x in samples)
    assert energy_joules(samples) is None


def test_older_driver_uses_the_older_calls(fake_nvml) -> None:
    lib = fake_nvml(missing=("nvmlDeviceGetTemperatureV", "nvmlDeviceGetCurrentClocksEventReasons"))
    s = NvmlSampler()
    assert s.open().available
    assert all(f.available for f in s.gpus[0].fields.values())
    r = s.read()
    assert r.temps == {"nvml_gpu0": 43.0} and s.last[0].throttle == ("sw_power_cap",)
    assert "nvmlDeviceGetTemperature" in lib.calls
    assert "nvmlDeviceGetCurrentClocksThrottleReasons" in lib.calls


def test_a_field_that_starts_failing_is_dropped_with_its_reason(fake_nvml) -> None:
    gpu = FakeGpu()
    fake_nvml([gpu])
    s = NvmlSampler()
    s.open()
    gpu.codes["nvmlDeviceGetClockInfo"] = pynvml.NVML_ERROR_NO_PERMISSION
    r = s.read()
    assert r.gpu_freq is None and r.power_w == 112.0
    assert s.gpus[0].fields["sm_clock"].reason == (
        "stopped: Insufficient Permissions (needs more privileges)"
    )
    assert "sm_clock" not in s.gpus[0].calls


def test_a_lost_gpu_drops_the_source_in_the_monitor(fake_nvml) -> None:
    gpu = FakeGpu()
    fake_nvml([gpu])
    mon = Monitor([NvmlSampler()], interval=0.005)
    (st,) = mon.start()
    assert st.available
    gpu.codes["nvmlDeviceGetPowerUsage"] = pynvml.NVML_ERROR_GPU_IS_LOST
    time.sleep(0.05)
    mon.stop()
    (st,) = mon.sources
    assert not st.available and st.reason == "NVML GPU 0: GPU is lost"


def test_jetson_root_is_left_to_its_own_sources(fake_nvml, tmp_path) -> None:
    lib = fake_nvml()
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "nv_tegra_release").write_text("# R36 (release), REVISION: 4.3\n")
    st = NvmlSampler(tmp_path).open()
    assert not st.available and "INA3221" in st.reason
    assert lib.inits == 0


def test_two_gpus_sum_and_a_partial_total_is_refused(fake_nvml) -> None:
    a, b = FakeGpu(power_mw=300_000), FakeGpu(name="NVIDIA H100 PCIe", power_mw=50_000)
    fake_nvml([a, b])
    s = NvmlSampler()
    s.open()
    r = s.read()
    assert r.rails == {"nvml_gpu0": 300.0, "nvml_gpu1": 50.0} and r.power_w == 350.0
    s.close()
    b.codes["nvmlDeviceGetPowerUsage"] = NOT_SUPPORTED
    s = NvmlSampler()
    s.open()
    r = s.read()
    assert r.power_w is None and r.rails == {"nvml_gpu0": 300.0}
    only = NvmlSampler(indices=[0])
    only.open()
    assert only.read().power_w == 300.0


def test_missing_index_is_reported(fake_nvml) -> None:
    fake_nvml()
    st = NvmlSampler(indices=[3]).open()
    assert not st.available and st.reason == "GPU 3: no such index (NVML lists 1)"


def test_no_gpus(fake_nvml) -> None:
    fake_nvml([])
    st = NvmlSampler().open()
    assert not st.available and "no NVIDIA GPU" in st.reason


# -- energy: the counter, not the smoothed power -------------------------------------------------
def test_counter_series_is_exact_between_samples() -> None:
    snaps = [
        Snapshot(t=0.0, power_w=100.0, energy_j=0.0),
        Snapshot(t=1.0, power_w=100.0, energy_j=250.0),
        Snapshot(t=3.0, power_w=100.0, energy_j=450.0),
    ]
    assert counter_series(snaps) == [(0.0, 250.0), (1.0, 250.0), (1.0, 100.0), (3.0, 100.0)]
    assert energy_joules(snaps) == pytest.approx(450.0)  # not 300 from the power readings
    assert energy_joules(snaps, 0.5, 2.0) == pytest.approx(125.0 + 100.0)
    # a counter that went backwards (driver reload) or is missing anywhere: the power readings
    broken = [*snaps, Snapshot(t=4.0, power_w=100.0, energy_j=10.0)]
    assert counter_series(broken) is None and energy_joules(broken) == pytest.approx(400.0)
    mixed = [*snaps, Snapshot(t=4.0, power_w=100.0)]
    assert power_series(mixed) == [(0.0, 100.0), (1.0, 100.0), (3.0, 100.0), (4.0, 100.0)]


@pytest.mark.slow
def test_bench_takes_joules_from_the_counter(fake_nvml, tiny_gguf) -> None:
    """Real llama.cpp bench run; the fake GPU's counter runs at 250 W while its (1-s
    averaged) power reading says 100 W: W and J/token must follow the counter."""
    pytest.importorskip("llama_cpp")
    from amalia_edge.bench import BenchConfig, make_tests, run_bench

    gpu = FakeGpu(power_mw=100_000, watts_for_counter=250.0)
    fake_nvml([gpu])
    mon = Monitor([NvmlSampler()], interval=0.01)
    cfg = BenchConfig(
        model=str(tiny_gguf["F16"]),
        tests=make_tests([0], [8]),
        repetitions=2,
        warmup=0,
        measure_bandwidth=False,
        n_threads=1,
    )
    (rec,) = run_bench(cfg, monitor=mon).records
    assert rec.power_label == COUNTER_LABEL
    # the counter's integer mJ over ~10 ms steps: within 1 %
    assert rec.power_avg_w == pytest.approx(250.0, rel=0.01)
    seconds = sum(rec.samples_ns) / 1e9
    assert rec.joules_per_token == pytest.approx(250.0 * seconds / 16, rel=0.01)
    assert rec.rails_avg_w["nvml_gpu0"] == pytest.approx(100.0)
    assert rec.gpu_freq_min == 1_980_000_000 and rec.temps_max_c["nvml_gpu0"] == 43.0


# -- doctor ----------------------------------------------------------------------------------------
def _nvml_check(fake_device: Any) -> Any:
    from amalia_edge.device import probe
    from amalia_edge.device.checks import run_checks

    info = probe(fake_device("x86-rtx").fsroot())
    assert info.gpus and not info.is_jetson
    checks = {c.name: c for c in run_checks(info)}
    return checks["NVML GPU telemetry"]


def test_doctor_reports_nvml_on_a_dgpu_machine(fake_device, fake_nvml) -> None:
    fake_nvml([FakeGpu(name="NVIDIA RTX A6000", cc=(8, 6), limit_mw=300_000, reasons=0)])
    c = _nvml_check(fake_device)
    assert c.status == "ok"
    assert c.detail == (
        "GPU 0 NVIDIA RTX A6000, 112 W of 300 W, 43 °C, SM 1980 MHz; driver 570.124.06, "
        "CUDA 12.8; J from the energy counter"
    )


def test_doctor_warns_when_the_gpu_is_slowed_or_nvml_is_missing(fake_device, fake_nvml) -> None:
    gpu = FakeGpu(reasons=pynvml.nvmlClocksEventReasonHwThermalSlowdown)
    gpu.codes["nvmlDeviceGetTotalEnergyConsumption"] = NOT_SUPPORTED
    fake_nvml([gpu])
    c = _nvml_check(fake_device)
    assert c.status == "warn" and "slowed now by hw_thermal_slowdown" in c.detail
    assert "unavailable: energy" in c.detail and "J from ∫P dt" in c.detail
    assert c.fix and "nvidia-smi" in c.fix


def test_doctor_without_the_driver_says_why(fake_device) -> None:
    """Real pynvml, no libnvidia-ml here (the fake tree only claims a GPU)."""
    if _library_loads():  # pragma: no cover
        pytest.skip("this machine has the NVIDIA driver")
    c = _nvml_check(fake_device)
    assert c.status == "warn" and "NVML Shared Library Not Found" in c.detail
    assert c.fix == "check the NVIDIA driver: `nvidia-smi` must work for this user"


def test_doctor_on_a_jetson_or_without_gpu_has_no_nvml_check(fake_device) -> None:
    from amalia_edge.device import probe
    from amalia_edge.device.checks import run_checks

    for tree in ("agx-orin-64gb-jp6", "x86-plain"):
        names = [c.name for c in run_checks(probe(fake_device(tree).fsroot()))]
        assert "NVML GPU telemetry" not in names
