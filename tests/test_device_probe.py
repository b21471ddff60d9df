"""Device probe on fake trees modelled on real boards (tests/fixtures/boards/)."""

from __future__ import annotations

import json

import pytest

from amalia_edge.device import BOARDS, BOARDS_BY_ID, lookup_board, probe
from amalia_edge.device.boards import fastest_mode_name, module_ids_from_compatible
from amalia_edge.device.detect import main as detect_main
from amalia_edge.device.fsroot import CommandRunner, FsRoot
from amalia_edge.device.jetson_stack import stack_for
from amalia_edge.device.l4t import L4T_TO_JETPACK, parse_l4t_version, parse_nv_tegra_release
from amalia_edge.device.probe import parse_cpuinfo, parse_meminfo

GiB = 1 << 30

JETSONS = {
    # name: (module, board name, L4T, JetPack, bandwidth GB/s, mode, clocks, cores, swap?)
    "agx-orin-64gb-jp6": (
        "p3701-0005",
        "Jetson AGX Orin 64GB",
        "36.4.3",
        "6.2",
        204.8,
        "MAXN",
        True,
        12,
        True,
    ),
    "agx-orin-32gb-jp5": (
        "p3701-0004",
        "Jetson AGX Orin 32GB",
        "35.4.1",
        "5.1.2",
        204.8,
        "MODE_30W",
        False,
        8,
        True,
    ),
    "agx-orin-32gb-jp60": (
        "p3701-0000",
        "Jetson AGX Orin 32GB (developer kit module)",
        "36.3.0",
        "6.0",
        204.8,
        "MODE_30W",
        False,
        8,  # MODE_30W takes cores 8-11 offline (the real 32GB line: "...,off,off,off,off]")
        True,
    ),
    "agx-orin-64gb-jp72": (
        "p3701-0005",
        "Jetson AGX Orin 64GB",
        "39.2.0",
        "7.2",
        204.8,
        "MAXN",
        True,
        12,
        True,
    ),
    "orin-nano-8gb-jp6": (
        "p3767-0005",
        "Jetson Orin Nano 8GB (developer kit module)",
        "36.4.0",
        "6.1",
        68.0,
        "15W",
        False,
        6,
        True,  # zram from nvzramconfig, on by default (fixture README, SOURCES)
    ),
}


@pytest.mark.parametrize("name", sorted(JETSONS))
def test_jetson_boards(fake_device, name):
    module, board, l4t, jetpack, bw, mode, clocks, cores, swap = JETSONS[name]
    dev = fake_device(name)
    info = probe(dev.fsroot())
    assert info.is_jetson and info.arch == "aarch64"
    assert info.module_id == module and info.board is not None and info.board.name == board
    assert info.l4t_release == l4t and info.jetpack == jetpack
    assert info.jetpack_major == int(jetpack[0])
    assert info.cuda_cc == "8.7" and info.soc == "tegra234"
    assert info.memory_bandwidth == pytest.approx(bw * 1e9)
    assert info.memory_bandwidth_source == "board table"
    assert info.power_mode == mode and info.jetson_clocks is clocks
    assert info.cores == cores and info.cpu_model == "ARM Cortex-A78AE"
    assert {"neon", "dotprod", "fp16"} <= set(info.simd)
    assert (info.swap_total or 0) > 0 if swap else info.swap_total == 0
    # unified memory: the GPU's memory is the system's
    assert len(info.gpus) == 1 and info.gpus[0].unified
    assert info.gpu_memory_available == info.mem_available
    assert dev.calls() == ["nvpmodel -q"]
    assert info.notes == []


def test_agx_orin_64_memory_and_modes(fake_device):
    info = probe(fake_device("agx-orin-64gb-jp6").fsroot())
    assert info.mem_total == 64335836 * 1024  # kB in /proc/meminfo are KiB
    assert info.mem_available == 60112744 * 1024
    assert info.power is not None
    assert [m.name for m in info.power.modes] == ["MAXN", "MODE_15W", "MODE_30W", "MODE_50W"]
    assert info.power.is_fastest is True
    assert info.board is not None and info.board.memory_bytes == 64 * GiB


def test_plain_x86(fake_device):
    dev = fake_device("x86-plain")
    info = probe(dev.fsroot())
    assert not info.is_jetson and info.arch == "x86_64"
    assert info.board is None and info.l4t_release is None and info.power_mode is None
    assert info.cpu_model == "AMD Ryzen 7 5800X 8-Core Processor" and info.cores == 16
    assert info.simd == ("sse4.2", "avx", "avx2", "fma", "f16c")
    assert info.gpus == [] and not info.has_cuda and info.cuda_cc is None
    assert info.memory_bandwidth is None
    assert any("bandwidth unknown" in n for n in info.notes)
    assert dev.calls() == []  # no nvpmodel, and nvidia-smi only when a driver is loaded


def test_x86_with_nvidia_gpu_uses_nvidia_smi(fake_device):
    dev = fake_device("x86-rtx")
    info = probe(dev.fsroot())
    assert [c.split()[0] for c in dev.calls()] == ["nvidia-smi"]
    (gpu,) = info.gpus
    assert gpu.name == "NVIDIA RTX A6000" and gpu.cuda_cc == "8.6" and not gpu.unified
    assert gpu.memory_total == 49140 << 20 and gpu.memory_free == 48567 << 20
    assert info.gpu_memory_available == gpu.memory_free
    assert "avx512f" in info.simd and "avx512vnni" in info.simd


def test_x86_gpu_without_nvidia_smi_falls_back_to_procfs(fake_device):
    info = probe(fake_device("x86-rtx", tools=False).fsroot(tools=False))
    assert [g.name for g in info.gpus] == ["NVIDIA RTX A6000"]
    assert info.gpus[0].cuda_cc is None
    assert any("nvidia-smi unavailable" in n for n in info.notes)


def test_jetson_without_nvpmodel_reads_the_status_file(fake_device):
    dev = fake_device("agx-orin-32gb-jp5", tools=False)
    info = probe(dev.fsroot(tools=False))
    assert info.power_mode == "MODE_30W" and info.power_mode_id == 2
    assert any("/var/lib/nvpmodel/status" in n for n in info.notes)


def test_unknown_module_and_missing_release(fake_device):
    dev = fake_device("agx-orin-64gb-jp6")
    (dev.root / "proc/device-tree/compatible").write_bytes(
        b"nvidia,p3999-0000+p3999-0042\0nvidia,p3999-0042\0nvidia,tegra234\0"
    )
    (dev.root / "etc/nv_tegra_release").unlink()
    info = probe(dev.fsroot())
    assert info.is_jetson  # from the device tree alone
    assert info.board is None and info.module_id == "p3999-0042"
    assert info.cuda_cc == "8.7"  # from the SoC
    assert info.memory_bandwidth is None and info.l4t_release is None
    assert any("not in the board table" in n for n in info.notes)
    assert any("nv_tegra_release not found" in n for n in info.notes)


def test_empty_root_never_raises(tmp_path):
    info = probe(FsRoot(tmp_path, CommandRunner([], system=False)))
    assert not info.is_jetson and info.mem_total is None and info.cores is None
    assert any("meminfo unreadable" in n for n in info.notes)


def test_fingerprint(fake_device):
    dev = fake_device("agx-orin-32gb-jp5")
    a = probe(dev.fsroot())
    b = probe(dev.fsroot())
    assert a.fingerprint() == b.fingerprint() and len(a.fingerprint()) == 16
    b.mem_available = 1  # free memory does not change the device
    assert a.fingerprint() == b.fingerprint()
    (dev.root / "var/lib/nvpmodel/status").write_text("pmode:0000 fmode:quiet\n")
    c = probe(dev.fsroot())
    assert c.power_mode == "MAXN" and c.fingerprint() != a.fingerprint()
    other = probe(fake_device("agx-orin-64gb-jp6").fsroot())
    assert other.fingerprint() != a.fingerprint()


def test_to_dict_is_json_and_complete(fake_device):
    info = probe(fake_device("agx-orin-64gb-jp6").fsroot())
    d = json.loads(json.dumps(info.to_dict()))
    assert d["board"]["module_id"] == "p3701-0005" and d["fingerprint"] == info.fingerprint()
    assert d["power"]["fastest"] == "MAXN" and d["jetpack"] == "6.2"


def test_measured_bandwidth_replaces_unknown(fake_device):
    info = probe(fake_device("x86-plain").fsroot())
    info.set_measured_bandwidth(51_200_000_000)
    assert info.memory_bandwidth == 51_200_000_000 and info.memory_bandwidth_source == "measured"


def test_probe_reads_root_from_environment(fake_device):
    fake_device("agx-orin-64gb-jp6")  # sets AMALIA_EDGE_ROOT and AMALIA_EDGE_BIN_PATH
    assert probe(None).module_id == "p3701-0005"


def test_real_machine_probe_runs():
    info = probe("/")
    assert info.cores and info.cores > 0 and info.mem_total and info.mem_total > 0


# --- tables and parsers -------------------------------------------------------------------


def test_board_table_rows_are_sourced_and_unique():
    assert len(BOARDS_BY_ID) == len(BOARDS)
    for b in BOARDS:
        assert b.source.startswith("[") and b.memory_bandwidth > 0 and b.cuda_cc in ("8.7", "7.2")
    assert BOARDS_BY_ID["p3701-0005"].memory_bytes == 64 * GiB
    assert BOARDS_BY_ID["p3701-0004"].memory_bytes == 32 * GiB
    assert BOARDS_BY_ID["p3767-0000"].memory_bandwidth == int(102.4e9)


def test_lookup_board_prefers_module_over_carrier():
    compat = "nvidia,p3737-0000+p3701-0005\0nvidia,p3701-0005\0nvidia,tegra234"
    assert module_ids_from_compatible(compat)[:2] == ["p3737-0000", "p3701-0005"]
    board = lookup_board(compat)
    assert board is not None and board.module_id == "p3701-0005"
    assert lookup_board("raspberrypi,4-model-b\0brcm,bcm2711") is None


def test_fastest_mode():
    assert fastest_mode_name(["MAXN", "MODE_15W", "MODE_30W"]) == "MAXN"
    assert fastest_mode_name(["15W", "7W"]) == "15W"
    assert fastest_mode_name(["15W", "25W", "MAXN_SUPER", "7W"]) == "MAXN_SUPER"
    assert fastest_mode_name([]) is None


@pytest.mark.parametrize(
    ("line", "version", "jetpack"),
    [
        (
            "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64",
            "36.4.3",
            "6.2",
        ),
        ("# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic", "36.4.0", "6.1"),
        ("# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic", "36.3.0", "6.0"),
        ("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref", "35.4.1", "5.1.2"),
        ("# R36 (release), REVISION: 9.1, GCID: 1, BOARD: generic", "36.9.1", "6.x"),
    ],
)
def test_l4t_parse(line, version, jetpack):
    rel = parse_nv_tegra_release(line)
    assert rel is not None and rel.version == version and rel.jetpack == jetpack


def test_l4t_table_and_garbage():
    assert L4T_TO_JETPACK["36.4.3"] == "6.2" and L4T_TO_JETPACK["35.4.1"] == "5.1.2"
    assert parse_nv_tegra_release("not a release file") is None


# Releases the issue found missing, each with the JetPack its source gives
# (amalia_edge/device/l4t.py cites jetson-containers' l4t_version.py and the JetPack archive).
@pytest.mark.parametrize(
    ("l4t", "jetpack"),
    [
        ("35.6.2", "5.1.5"),
        ("35.6.4", "5.1.6"),
        ("36.4.2", "6.1.1"),
        ("36.4.7", "6.2.1"),  # jetson_stats issues #768, #797: "not supported for L4T 36.4.7"
        ("36.5.0", "6.2.2"),
        ("36.5.2", "6.2.3"),  # anduril/jetpack-nixos pull request #541
        ("38.2.1", "7.0"),  # NVIDIA's JetPack 7.0 page: "Jetson Linux 38.2/38.2.1"
        ("38.4.0", "7.1"),  # NVIDIA's JetPack 7.1 page: "Jetson Linux 38.4"
        ("39.2.0", "7.2"),
        ("39.2.1", "7.2.1"),  # OE4T/meta-tegra pull request #2339
    ],
)
def test_l4t_table_has_the_releases_boards_report(l4t, jetpack):
    assert L4T_TO_JETPACK[l4t] == jetpack
    rel = parse_l4t_version(l4t)
    assert rel is not None and rel.jetpack == jetpack and rel.in_table


@pytest.mark.parametrize(
    ("l4t", "jetpack", "stack"),
    [
        ("35.6.3", "5.x", "JetPack 5.1.x (L4T 35)"),
        ("36.6.0", "6.x", "JetPack 6.1 / 6.2.x (L4T 36.4-36.5)"),
        ("39.4.0", "7.x", "JetPack 7.2+ (L4T 39)"),
        ("40.1.0", "7.x", "JetPack 7.2+ (L4T 39)"),  # a major newer than the table
    ],
)
def test_an_unknown_l4t_is_handled_by_rule(l4t, jetpack, stack):
    rel = parse_l4t_version(l4t)
    assert rel is not None and not rel.in_table and rel.jetpack == jetpack
    row, note = stack_for(rel)
    assert row is not None and row.name == stack and l4t in note


def test_r38_is_thor_only_and_old_l4t_has_no_stack():
    rel = parse_l4t_version("38.2.0")
    assert rel is not None and rel.thor_only and rel.jetpack == "7.0"
    old = parse_l4t_version("32.7.4")
    assert old is not None and old.jetpack == "4.x" and stack_for(old)[0] is None


def test_the_32gb_devkit_module_has_the_50w_mode():
    """p3701-0000: MAXN / 15 W / 30 W / 50 W (jetson_stats' AGX Orin nvpmodel emulator,
    NVIDIA forum t/323456), not the 40 W of the 32GB production module."""
    devkit = BOARDS_BY_ID["p3701-0000"]
    assert [m.name for m in devkit.power_modes] == ["MAXN", "MODE_15W", "MODE_30W", "MODE_50W"]
    assert [m.id for m in devkit.power_modes] == [0, 1, 2, 3]


def test_meminfo_and_cpuinfo_parsers():
    mem = parse_meminfo("MemTotal:  100 kB\nHugePages_Total:  0\nbad line\n")
    assert mem == {"MemTotal": 102400, "HugePages_Total": 0}
    model, cores, simd = parse_cpuinfo(
        "processor\t: 0\nFeatures\t: fp asimd asimddp i8mm sve\nCPU implementer\t: 0x41\n"
        "CPU part\t: 0xd4f\n\nprocessor\t: 1\n"
    )
    assert (model, cores, simd) == ("ARM Neoverse-V2", 2, ("neon", "dotprod", "i8mm", "sve"))


def test_fake_root_never_uses_system_tools(tmp_path):
    fs = FsRoot(tmp_path)  # not "/": only AMALIA_EDGE_BIN_PATH would be searched
    assert fs.runner.which("sh") is None and fs.runner.run(["sh", "-c", "true"]) is None
    assert FsRoot("/").runner.which("sh") is not None


def test_detect_prints_shell_variables(fake_device, capsys):
    dev = fake_device("agx-orin-32gb-jp5")
    assert detect_main([str(dev.root)]) == 0
    out = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines())
    assert out["DETECTED_IS_JETSON"] == "1" and out["DETECTED_JETPACK_MAJOR"] == "5"
    assert (
        out["DETECTED_L4T"] == "35.4.1" and out["DETECTED_BOARD_NAME"] == "'Jetson AGX Orin 32GB'"
    )
    assert out["DETECTED_MEM_TOTAL_GIB"] == "29" and out["DETECTED_SWAP_TOTAL_GIB"] == "14"
