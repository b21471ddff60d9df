"""Power mode and clocks with fake nvpmodel / jetson_clocks that record their calls."""

from __future__ import annotations

import io
import json

import pytest

from amalia_edge.cli import main
from amalia_edge.device.power import (
    parse_nvpmodel_conf,
    parse_nvpmodel_query,
    power_status,
    set_clocks,
    set_mode,
)
from amalia_edge.errors import DeviceError


def test_status_on_agx_orin_32gb_jp5(fake_device):
    dev = fake_device("agx-orin-32gb-jp5")
    st = power_status(dev.fsroot())
    assert (st.mode, st.mode_id, st.default_id) == ("MODE_30W", 2, 2)
    assert [m.name for m in st.modes] == ["MAXN", "MODE_15W", "MODE_30W", "MODE_40W"]
    assert st.fastest == "MAXN" and st.jetson_clocks is False and st.is_fastest is False
    assert dev.calls() == ["nvpmodel -q"]


def test_status_on_the_agx_orin_32gb_devkit(fake_device):
    """p3701-0000 on JetPack 6.0: nvpmodel.conf modes as jetson_stats' emulator lists them."""
    dev = fake_device("agx-orin-32gb-jp60")
    st = power_status(dev.fsroot())
    assert [m.name for m in st.modes] == ["MAXN", "MODE_15W", "MODE_30W", "MODE_50W"]
    assert (st.mode, st.default_id, st.fastest) == ("MODE_30W", 2, "MAXN")
    st, _ = set_mode("50W", dev.fsroot(), euid=0)
    assert st.mode == "MODE_50W" and "nvpmodel -m 3" in dev.calls()


def test_set_mode_by_name_runs_nvpmodel(fake_device):
    dev = fake_device("agx-orin-32gb-jp5")
    st, reboot = set_mode("maxn", dev.fsroot(), euid=0)
    assert "nvpmodel -m 0" in dev.calls()
    assert st.mode == "MAXN" and st.mode_id == 0 and reboot is False
    assert (dev.root / "var/lib/nvpmodel/status").read_text().startswith("pmode:0000")


def test_set_mode_answers_no_to_the_reboot_prompt(fake_device, monkeypatch):
    dev = fake_device("agx-orin-32gb-jp5")
    monkeypatch.setenv("FAKE_NVPMODEL_REBOOT", "1")
    st, reboot = set_mode("40W", dev.fsroot(), euid=0)
    assert reboot is True and st.mode == "MODE_40W"
    assert "answer=NO" in dev.calls()  # never reboots the board behind the user's back


def test_set_mode_needs_root_and_changes_nothing(fake_device):
    dev = fake_device("agx-orin-32gb-jp5")
    with pytest.raises(DeviceError, match=r"needs root.*sudo amalia-edge power --set MAXN"):
        set_mode("MAXN", dev.fsroot(), euid=1000)
    assert not any(c.startswith("nvpmodel -m") for c in dev.calls())


def test_unknown_mode_lists_the_modes(fake_device):
    dev = fake_device("agx-orin-64gb-jp6")
    with pytest.raises(DeviceError, match=r"unknown power mode 'TURBO'.*0=MAXN, 1=MODE_15W"):
        set_mode("TURBO", dev.fsroot(), euid=0)


def test_clocks_on_then_off_restores_the_files(fake_device):
    dev = fake_device("agx-orin-32gb-jp5")
    policy = dev.root / "sys/devices/system/cpu/cpufreq/policy0/scaling_min_freq"
    before = policy.read_text()
    st = set_clocks(True, dev.fsroot(), euid=0)
    assert st.jetson_clocks is True and policy.read_text() == "2188800\n"
    calls = [c for c in dev.calls() if c.startswith("jetson_clocks")]
    assert calls[0].startswith("jetson_clocks --store ") and calls[1] == "jetson_clocks"
    st = set_clocks(False, dev.fsroot(), euid=0)
    assert st.jetson_clocks is False and policy.read_text() == before
    assert dev.calls()[-2].startswith("jetson_clocks --restore ")


def test_clocks_off_without_saved_settings_says_what_to_do(fake_device):
    dev = fake_device("agx-orin-64gb-jp6")
    with pytest.raises(DeviceError, match=r"no saved clock settings.*reboot"):
        set_clocks(False, dev.fsroot(), euid=0)
    with pytest.raises(DeviceError, match="needs root"):
        set_clocks(True, dev.fsroot(), euid=1000)
    assert not any(c.startswith("jetson_clocks") for c in dev.calls())


def test_parsers():
    conf = parse_nvpmodel_conf(
        "< POWER_MODEL ID=0 NAME=MAXN >\n< POWER_MODEL ID=1 NAME=MODE_15W >\n"
        "< PM_CONFIG DEFAULT=1 >\n"
    )
    assert [(m.id, m.name) for m in conf.modes] == [(0, "MAXN"), (1, "MODE_15W")]
    assert conf.default_id == 1
    assert parse_nvpmodel_query("NV Fan Mode:quiet\nNV Power Mode: MODE_30W\n2\n") == (
        "MODE_30W",
        2,
    )
    assert parse_nvpmodel_query("garbage") == (None, None)


# --- CLI --------------------------------------------------------------------------------


def test_cli_shows_status_as_json(fake_device, capsys):
    fake_device("agx-orin-64gb-jp6")
    assert main(["power", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mode"] == "MAXN" and out["jetson_clocks"] is True and out["is_fastest"] is True


def test_cli_text_lists_modes_and_warns(fake_device, capsys):
    fake_device("agx-orin-32gb-jp5")
    assert main(["power"]) == 0
    out = capsys.readouterr().out
    assert "MODE_30W (id 2)" in out and "0  MAXN           fastest" in out
    assert "sudo amalia-edge power --set MAXN --clocks on" in out


def test_cli_refuses_to_change_without_confirmation(fake_device, capsys, monkeypatch):
    dev = fake_device("agx-orin-32gb-jp5")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal
    assert main(["power", "--set", "MAXN"]) == 2
    assert "pass --yes" in capsys.readouterr().err
    assert not any(c.startswith("nvpmodel -m") for c in dev.calls())


def test_cli_asks_and_respects_no(fake_device, capsys, monkeypatch):
    dev = fake_device("agx-orin-32gb-jp5")
    monkeypatch.setattr("sys.stdin.isatty", lambda: True, raising=False)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert main(["power", "--set", "MAXN"]) == 1
    assert not any(c.startswith("nvpmodel -m") for c in dev.calls())


def test_cli_set_and_clocks_with_yes(fake_device, capsys):
    dev = fake_device("agx-orin-32gb-jp5")
    assert main(["power", "--set", "MAXN", "--clocks", "on", "--yes", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mode"] == "MAXN" and out["jetson_clocks"] is True and out["is_fastest"] is True
    assert "nvpmodel -m 0" in dev.calls() and "jetson_clocks" in dev.calls()


def test_cli_on_a_machine_without_nvpmodel(fake_device, capsys):
    fake_device("x86-plain")
    assert main(["power", "--set", "MAXN", "--yes"]) == 2
    assert "not a Jetson" in capsys.readouterr().err


def test_cli_non_root_is_told_to_use_sudo_before_being_asked(fake_device, capsys, monkeypatch):
    dev = fake_device("agx-orin-32gb-jp5")
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    monkeypatch.setattr("builtins.input", lambda prompt: pytest.fail("asked although not root"))
    assert main(["power", "--clocks", "on"]) == 2
    assert "sudo amalia-edge power --clocks on" in capsys.readouterr().err
    assert not any(c.startswith("jetson_clocks") for c in dev.calls())


def test_offline_cluster_does_not_hide_locked_clocks(fake_device):
    dev = fake_device("agx-orin-64gb-jp6")
    offline = dev.root / "sys/devices/system/cpu/cpufreq/policy8"
    (offline / "affected_cpus").write_text("\n")
    (offline / "scaling_min_freq").write_text("115200\n")  # untouched by jetson_clocks
    assert power_status(dev.fsroot()).jetson_clocks is True
    (offline / "affected_cpus").write_text("8 9 10 11\n")
    assert power_status(dev.fsroot()).jetson_clocks is False
