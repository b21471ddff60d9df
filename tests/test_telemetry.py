"""Telemetry samplers on fake sysfs trees modelled on real boards, and the monitor."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from amalia_edge.telemetry import (
    FallbackSampler,
    Monitor,
    Snapshot,
    default_monitor,
    energy_joules,
    power_stats,
)
from amalia_edge.telemetry.base import Reading, Sampler, SourceStatus
from amalia_edge.telemetry.ina3221 import (
    MODULE_SUM_LABEL,
    INA3221Sampler,
    discover_rails,
    module_total,
)
from amalia_edge.telemetry.rapl import RaplSampler, counter_delta
from amalia_edge.telemetry.system import SystemSampler
from amalia_edge.telemetry.tegrastats import TegrastatsSampler, parse_line
from tests.plugins.telemetry import TELEMETRY_FIXTURES

ORIN_RAILS = {"VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"}
# What a real AGX Orin on L4T 36.4 prints (tests/fixtures/telemetry/README.md, SOURCES).
ORIN_RAILS_R36 = {"VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"}
# module_rails_sum: the three rails of the first monitor, on every release and source.
ORIN_SUMMED = ORIN_RAILS_R36


def _deny(monkeypatch: pytest.MonkeyPatch, match: str) -> None:
    """Make reads of paths containing ``match`` raise PermissionError (root ignores chmod)."""
    real_read_text = Path.read_text

    def read_text(self: Path, *a: object, **k: object) -> str:
        if match in str(self):
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *a, **k)  # type: ignore[arg-type]

    # Path.read_text is how every sampler reads sysfs, so this covers them all.
    monkeypatch.setattr(Path, "read_text", read_text)


# -- INA3221 -----------------------------------------------------------------------------------
@pytest.mark.parametrize("tree", ["agx_orin_jp5", "agx_orin_jp6"])
def test_ina3221_orin_rails_and_module_sum(fake_sysfs, tree):
    root = fake_sysfs(tree)
    s = INA3221Sampler(root)
    st = s.open()
    assert st.available, st
    r = s.read()
    # NC channels, the summation channel (JP6: in7 "sum of shunt voltages", curr4) and the
    # tmp451 chip are skipped
    assert set(r.rails) == ORIN_RAILS
    assert r.rails["VDDQ_VDD2_1V8AO"] == pytest.approx(4992 * 102 / 1e6)
    # no whole-board rail on the AGX Orin dev kit: the total is the named module sum of the
    # first monitor's three rails (VDDQ reported, not added)
    assert r.power_label == MODULE_SUM_LABEL
    assert r.power_w == pytest.approx(sum(r.rails[n] for n in ORIN_SUMMED))
    assert r.power_w != pytest.approx(sum(r.rails.values()))


def test_ina3221_input_rail_is_the_total_where_present(fake_sysfs):
    root = fake_sysfs("agx_orin_jp5")
    hw = next(root.glob("sys/bus/i2c/devices/1-0041/hwmon/hwmon*"))
    (hw / "in1_label").write_text("VDD_IN\n")
    (hw / "in1_input").write_text("19000\n")
    (hw / "curr1_input").write_text("700\n")
    s = INA3221Sampler(root)
    assert s.open().available
    r = s.read()
    assert r.power_label == "VDD_IN"
    assert r.power_w == pytest.approx(19.0 * 0.7)


def test_ina3221_reads_fresh_values_each_tick(fake_sysfs):
    root = fake_sysfs("agx_orin_jp6")
    s = INA3221Sampler(root)
    s.open()
    hw = next(root.glob("sys/bus/i2c/devices/1-0040/hwmon/hwmon*"))
    (hw / "curr1_input").write_text("2000\n")
    assert s.read().rails["VDD_GPU_SOC"] == pytest.approx(4984 * 2000 / 1e6)


def test_one_total_for_sysfs_and_tegrastats_on_jetpack6(fake_sysfs):
    """The same instant read both ways gives the same total: the JP6 sysfs currents are set so
    V x I reproduces the rails of the real L4T 36.4 tegrastats line; sysfs also has
    VDDQ_VDD2_1V8AO, which that line lacks, and the total leaves it out in both."""
    sysfs = INA3221Sampler(fake_sysfs("agx_orin_jp6"))
    assert sysfs.open().available
    from_sysfs = sysfs.read()
    from_tegrastats = parse_line(_lines("jp6")[0])
    assert "VDDQ_VDD2_1V8AO" in from_sysfs.rails and "VDDQ_VDD2_1V8AO" not in from_tegrastats.rails
    assert from_sysfs.power_label == from_tegrastats.power_label == MODULE_SUM_LABEL
    assert from_sysfs.power_w == pytest.approx(from_tegrastats.power_w, abs=0.01)
    assert from_tegrastats.power_w == pytest.approx(1.995 + 0.0 + 2.524)


def test_module_total_definition():
    assert module_total({}) == (None, None)
    assert module_total({"VDD_IN": 5.0, "VDD_CPU_GPU_CV": 2.0}) == (5.0, "VDD_IN")
    w, label = module_total({"VDD_GPU_SOC": 1.0, "VIN_SYS_5V0": 2.0, "VDDQ_VDD2_1V8AO": 0.5})
    assert (w, label) == (pytest.approx(3.0), MODULE_SUM_LABEL)


def test_ina3221_absent_and_permission_denied(tmp_path, fake_sysfs, monkeypatch):
    st = INA3221Sampler(tmp_path).open()
    assert not st.available and "no INA3221" in st.reason
    root = fake_sysfs("agx_orin_jp5")
    _deny(monkeypatch, "curr1_input")
    st = INA3221Sampler(root).open()
    assert not st.available
    assert "Permission denied" in st.reason and "curr1_input" in st.reason


def test_discover_rails_has_no_duplicates(fake_sysfs):
    rails, why = discover_rails(fake_sysfs("agx_orin_jp5"))
    assert why == "" and len(rails) == len({r.name for r in rails}) == 4
    # the summation current is curr4_input (kernel Documentation/hwmon/ina3221.rst): not a rail
    rails6, _ = discover_rails(fake_sysfs("agx_orin_jp6"))
    assert all("curr4" not in str(r.current_path) for r in rails6)


# -- tegrastats --------------------------------------------------------------------------------
def _lines(name: str) -> list[str]:
    return (TELEMETRY_FIXTURES / f"tegrastats_{name}.txt").read_text().splitlines()


def test_tegrastats_jp5_line():
    idle, busy = (parse_line(x) for x in _lines("jp5"))
    assert set(idle.rails) == ORIN_RAILS  # NC rails dropped
    assert idle.rails["VDD_GPU_SOC"] == pytest.approx(2.397)
    assert idle.power_label == MODULE_SUM_LABEL
    assert idle.power_w == pytest.approx(2.397 + 0.799 + 3.726)  # VDDQ 0.503 not added
    assert idle.mem_used == 2448 * 1024 * 1024
    assert idle.gpu_load == 0.0
    assert "CV0" not in idle.temps and "GPU" not in idle.temps  # -256C = no sensor
    assert idle.temps["CPU"] == pytest.approx(47.062)
    assert idle.cpu_percent == pytest.approx(8 / 8)  # 8 online cores, "off" ones ignored
    assert busy.gpu_load == 97.0 and busy.gpu_freq == 1_300_000_000
    assert busy.rails["VDD_GPU_SOC"] == pytest.approx(14.770)  # instant, not the average


def test_tegrastats_jp6_line_from_a_real_agx_orin():
    """Real L4T 36.4 AGX Orin 32GB lines, run without sudo (fixture README, SOURCES)."""
    first, second = (parse_line(x) for x in _lines("jp6"))
    assert set(first.rails) == ORIN_RAILS_R36  # no VDDQ_VDD2_1V8AO, no NC on R36.4
    assert first.rails == pytest.approx(
        {"VDD_GPU_SOC": 1.995, "VDD_CPU_CV": 0.0, "VIN_SYS_5V0": 2.524}
    )
    assert first.power_label == MODULE_SUM_LABEL and first.power_w == pytest.approx(4.519)
    assert first.temps["cpu"] == pytest.approx(43.343) and first.temps["tj"] == pytest.approx(
        43.343
    )
    assert first.mem_used == 1313 * 1024 * 1024
    assert first.cpu_percent == 0.0  # 8 online cores at 0%, the 4 "off" ones ignored
    # bare "GR3D_FREQ 0%": tegrastats could not read the GPU (not root), so the load is
    # unknown, not 0
    assert first.gpu_load is None and first.gpu_freq is None
    assert second.temps["cpu"] == pytest.approx(42.875)


def test_gr3d_with_frequencies_is_a_real_load():
    r = parse_line("RAM 1/2MB CPU [1%@729] GR3D_FREQ 14%@[407,407] VDD_GPU_SOC 3150mW/2971mW")
    assert r.gpu_load == 14.0 and r.gpu_freq == 407_000_000
    idle = parse_line("RAM 1/2MB CPU [1%@729] GR3D_FREQ 0%@[0,0] VDD_GPU_SOC 3150mW/2971mW")
    assert idle.gpu_load == 0.0


def test_tegrastats_jp7_line_from_a_real_agx_orin():
    """Real L4T 39.2 (JetPack 7.2) AGX Orin 64GB devkit line, run as root (fixture README)."""
    (line,) = _lines("jp7")
    r = parse_line(line)
    # the same three rails as on JetPack 6, now instant/average/peak: the instant one counts
    assert r.rails == pytest.approx({"VDD_GPU_SOC": 5.139, "VDD_CPU_CV": 3.268, "VIN_SYS_5V0": 5.5})
    assert r.power_label == MODULE_SUM_LABEL and r.power_w == pytest.approx(13.907)
    # temperatures print "now/peak" (cpu@52.968C/52.968C); this board prints no tj@
    assert r.temps == pytest.approx({"cpu": 52.968, "soc2": 48.406, "soc0": 49.531, "gpu": 47.625})
    assert r.gpu_load == 12.0 and r.gpu_freq == 1_300_000_000  # GR3D_FREQ 12%@[1300,1300]
    assert r.mem_used == 20642 * 1024 * 1024  # no SWAP field on this line
    assert r.cpu_percent == pytest.approx(191 / 12)  # 12 cores online (MAXN), none "off"
    # "off" engines (NVENC0 off, PVA0_FREQ off) and APE 174 are neither rails nor temps
    assert not {"NVENC0", "PVA0_FREQ", "APE", "EMC_FREQ"} & (set(r.rails) | set(r.temps))


def test_tegrastats_jp7_takes_the_instant_value_not_the_peak():
    """The JetPack 7 layout with values that differ (hand-written, not a board's line): the
    first number of a rail is the instant one and a temperature's first is the current one."""
    r = parse_line(
        "RAM 1803/7486MB (lfb 8x4MB) CPU [64%@729,0%@729] GR3D_FREQ 12%@[306] "
        "cpu@47.562C/48C tj@48C/48.125C VDD_IN 4093mW/4463mW/4832mW "
        "VDD_CPU_GPU_CV 802mW/1019mW/1236mW VDD_SOC 1243mW/1340mW/1437mW"
    )
    assert r.temps == pytest.approx({"cpu": 47.562, "tj": 48.0})
    assert r.rails == pytest.approx({"VDD_IN": 4.093, "VDD_CPU_GPU_CV": 0.802, "VDD_SOC": 1.243})
    assert r.power_label == "VDD_IN" and r.power_w == pytest.approx(4.093)


def test_tegrastats_old_unitless_rails_and_no_ram_as_rail():
    r = parse_line(
        "RAM 1766/3964MB (lfb 197x4MB) SWAP 0/2048MB (cached 0MB) CPU [24%@1224,15%@1224] "
        "EMC_FREQ 0% GR3D_FREQ 0% PLL@21C CPU@25C POM_5V_IN 2545/2547 POM_5V_GPU 0/0"
    )
    assert set(r.rails) == {"POM_5V_IN", "POM_5V_GPU"}
    assert r.power_label == "POM_5V_IN" and r.power_w == pytest.approx(2.545)


def test_tegrastats_line_without_power_reports_none():
    r = parse_line("RAM 264/28409MB (lfb 7004x4MB) CPU [0%@1817,0%@1817] GR3D_FREQ 0%@1109")
    assert r.power_w is None and r.rails == {}


def test_tegrastats_sampler_runs_binary(fake_tegrastats):
    s = TegrastatsSampler(binary=fake_tegrastats("jp5"), interval=0.02)
    st = s.open()
    try:
        assert st.available, st
        assert "--interval 20" in st.reason
        deadline = time.monotonic() + 3
        seen: set[float] = set()
        while time.monotonic() < deadline and len(seen) < 2:
            seen.add(round(s.read().power_w or 0, 3))
            time.sleep(0.01)
        assert len(seen) == 2  # both recorded lines came through
    finally:
        s.close()
    assert s._proc is None


def test_tegrastats_sampler_failures(tmp_path, fake_tegrastats):
    st = TegrastatsSampler(binary=fake_tegrastats("x", fail="tegrastats: need root")).open()
    assert not st.available and "need root" in st.reason
    assert not TegrastatsSampler(root=tmp_path).open().available
    exe = tmp_path / "tegrastats"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o644)
    st = TegrastatsSampler(binary=exe).open()
    assert not st.available and "not executable" in st.reason


def test_fallback_to_tegrastats_when_sysfs_unreadable(tmp_path, fake_tegrastats):
    fb = FallbackSampler(
        "jetson_power",
        INA3221Sampler(tmp_path),
        TegrastatsSampler(binary=fake_tegrastats("jp5"), interval=0.02),
    )
    try:
        st = fb.open()
        assert st.available and "tegrastats" in st.reason and "ina3221 unavailable" in st.reason
        assert set(fb.read().rails) == ORIN_RAILS
    finally:
        fb.close()


# -- RAPL --------------------------------------------------------------------------------------
class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_rapl_power_and_wraparound(fake_sysfs):
    root = fake_sysfs("x86_rapl")
    pc = root / "sys/class/powercap"
    max_range = 262143328850
    # package-0 wraps: 1 J before the top of the range -> 4 J after it restarts = 5 J in 0.5 s
    (pc / "intel-rapl:0/energy_uj").write_text(f"{max_range - 1_000_000}\n")
    clock = _Clock()
    s = RaplSampler(root, clock=clock)
    st = s.open()
    assert st.available, st
    assert "package-0/core" in st.reason and "intel-rapl/" not in st.reason
    (pc / "intel-rapl:0/energy_uj").write_text("4000000\n")
    (pc / "intel-rapl:0:0/energy_uj").write_text(f"{45678901 + 2_000_000}\n")
    (pc / "intel-rapl:0:2/energy_uj").write_text(f"{9876543 + 500_000}\n")
    (pc / "intel-rapl:1/energy_uj").write_text(f"{300000000 + 7_000_000}\n")
    clock.t += 0.5
    r = s.read()
    assert r.rails["package-0"] == pytest.approx(10.0)
    assert r.rails["package-0/core"] == pytest.approx(4.0)
    assert r.rails["package-0/dram"] == pytest.approx(1.0)  # a subzone, as real kernels put it
    assert r.rails["package-0/uncore"] == pytest.approx(0.0)
    assert r.rails["psys"] == pytest.approx(14.0)  # the platform: packages included
    assert r.power_label == "rapl_package_sum"
    # package-0 only: its subzones are inside it, and psys would count it twice
    assert r.power_w == pytest.approx(10.0)


def test_rapl_psys_alone_is_the_total(fake_sysfs):
    root = fake_sysfs("x86_rapl")
    pc = root / "sys/class/powercap"
    for d in ("intel-rapl:0:0", "intel-rapl:0:1", "intel-rapl:0:2", "intel-rapl:0"):
        for f in (pc / d).iterdir():
            f.unlink()
        (pc / d).rmdir()
    clock = _Clock()
    s = RaplSampler(root, clock=clock)
    assert s.open().available
    (pc / "intel-rapl:1/energy_uj").write_text(f"{300000000 + 3_000_000}\n")
    clock.t += 1.0
    r = s.read()
    assert r.power_label == "rapl_psys" and r.power_w == pytest.approx(3.0)


def test_counter_delta():
    assert counter_delta(10, 25, 100) == 15
    assert counter_delta(90, 5, 100) == 15


def test_rapl_permission_denied_is_unavailable_not_zero(fake_sysfs, monkeypatch):
    root = fake_sysfs("x86_rapl")
    _deny(monkeypatch, "energy_uj")
    st = RaplSampler(root).open()
    assert not st.available
    assert "permission denied" in st.reason and "CVE-2020-8694" in st.reason


def test_rapl_absent(tmp_path):
    assert not RaplSampler(tmp_path).open().available


# -- system ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("tree", "load", "freq"),
    [("agx_orin_jp5", 52.3, 918_000_000), ("agx_orin_jp6", 61.2, 1_300_500_000)],
)
def test_system_sampler_jetson_gpu_and_thermal(fake_sysfs, tree, load, freq):
    s = SystemSampler(fake_sysfs(tree))
    st = s.open()
    assert st.available and "gpu load" in st.reason and "gpu freq" in st.reason
    r = s.read()
    assert r.gpu_load == pytest.approx(load)
    assert r.gpu_freq == freq
    assert r.temps["CPU-therm"] == pytest.approx(47.062)
    assert "CV0-therm" not in r.temps  # -256 C: no sensor behind the zone
    assert r.rss is not None and r.rss > 0
    assert r.mem_used is not None and r.mem_used > 0
    assert r.cpu_percent is not None


def test_system_sampler_elsewhere_has_no_gpu(tmp_path):
    s = SystemSampler(tmp_path)
    assert s.open().available
    r = s.read()
    assert r.gpu_load is None and r.gpu_freq is None and r.temps == {}


def test_system_sampler_unreadable_zone_is_named(fake_sysfs, monkeypatch):
    root = fake_sysfs("agx_orin_jp5")
    _deny(monkeypatch, "thermal_zone1/temp")
    st = SystemSampler(root).open()
    assert "GPU-therm: cannot read" in st.reason


# -- monitor -----------------------------------------------------------------------------------
class _Flaky(Sampler):
    name = "flaky"

    def __init__(self) -> None:
        self.n = 0

    def open(self) -> SourceStatus:
        return SourceStatus(self.name, True)

    def read(self) -> Reading:
        self.n += 1
        if self.n > 2:
            raise PermissionError(13, "Permission denied", "/sys/fake")
        return Reading(rails={"X": 1.0}, power_w=1.0, power_label="x")


def test_monitor_start_latest_stop(known_power):
    mon = Monitor([known_power], interval=0.01)
    statuses = mon.start()
    assert statuses == [SourceStatus("known_power", True, "test source")]
    assert isinstance(mon.latest(), Snapshot)
    time.sleep(0.15)
    t_stop = time.perf_counter()
    samples = mon.stop()
    assert len(samples) >= 5
    ts = [s.t for s in samples]
    assert ts == sorted(ts)
    assert samples[-1].t >= t_stop - 0.01
    assert not any(t.name == "amalia-telemetry" for t in threading.enumerate())
    assert samples[0].power_label == "known_sum"


def test_monitor_drops_failing_source_with_reason():
    mon = Monitor([_Flaky()], interval=0.005)
    mon.start()
    time.sleep(0.06)
    samples = mon.stop()
    assert samples[0].power_w == 1.0
    assert samples[-1].power_w is None  # unavailable afterwards: None, never 0
    (st,) = mon.sources
    assert not st.available and "Permission denied" in st.reason and "/sys/fake" in st.reason


def test_monitor_context_manager_and_restart_guard(known_power):
    with Monitor([known_power], interval=0.01) as mon, pytest.raises(RuntimeError):
        mon.start()
    assert mon.latest() is not None


def test_energy_integral_matches_known_power(known_power):
    mon = Monitor([known_power], interval=0.005)
    mon.start()
    time.sleep(0.2)
    samples = mon.stop()
    t0, t1 = samples[2].t + 0.001, samples[-3].t - 0.001
    e = energy_joules(samples, t0, t1)
    assert e == pytest.approx(known_power.exact_energy(t0, t1), rel=1e-3)
    st = power_stats(samples, t0, t1)
    assert st["total"]["peak"] >= st["total"]["avg"] > 0
    assert set(st) == {"total", "VDD_GPU_SOC", "VDD_CPU_CV"}


def test_energy_exact_on_synthetic_samples():
    s = [
        Snapshot(t=0.0, power_w=10.0),
        Snapshot(t=1.0, power_w=20.0),
        Snapshot(t=3.0, power_w=20.0),
    ]
    assert energy_joules(s) == pytest.approx(15 + 40)
    assert energy_joules(s, 0.5, 2.0) == pytest.approx((15 + 20) / 2 * 0.5 + 20)
    assert energy_joules([Snapshot(t=0.0), Snapshot(t=1.0)]) is None  # no power: None, not 0


def test_default_monitor_on_fake_orin(fake_sysfs):
    root = fake_sysfs("agx_orin_jp6")
    mon = default_monitor(root=root, interval=0.02)
    statuses = {s.name: s for s in mon.start()}
    time.sleep(0.05)
    samples = mon.stop()
    assert statuses["jetson_power"].available
    assert not statuses["rapl"].available and statuses["rapl"].reason
    snap = samples[-1]
    assert snap.power_label == MODULE_SUM_LABEL and set(snap.rails) == ORIN_RAILS
    assert snap.gpu_freq == 1_300_500_000 and snap.rss


def test_default_monitor_here_reports_reasons():
    mon = default_monitor(interval=0.05)
    statuses = mon.start()
    mon.stop()
    for st in statuses:
        assert st.available or st.reason, st


def test_monitor_memory_is_bounded(known_power):
    mon = Monitor([known_power], interval=0.001, max_samples=20)
    mon.start()
    time.sleep(0.1)
    samples = mon.stop()
    assert 0 < len(samples) <= 20
    assert [s.t for s in samples] == sorted(s.t for s in samples)
