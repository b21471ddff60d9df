"""Start-up stays light: ``amalia-edge --help`` and ``doctor`` import no heavy library.

Structural, not timed (timings are in ``benchmarks/startup.py``): each command runs in a
fresh interpreter under ``python -X importtime``, whose stderr names every module the process
imported, and the test asserts which ones must not be among them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Heavy third-party packages (top-level names) no start-up path may import: inference
# libraries, the TUI, plotting, array/model-file libraries, and the ones doctor replaced
# with /proc reads (psutil) or does without (platformdirs: only the demo model's cache).
HEAVY = frozenset(
    {
        "llama_cpp",
        "onnxruntime",
        "onnx",
        "tensorrt",
        "textual",
        "rich",
        "matplotlib",
        "numpy",
        "gguf",
        "sentencepiece",
        "tokenizers",
        "psutil",
        "platformdirs",
        "jinja2",
        "torch",
    }
)
# amalia-edge's own modules that only loading or converting a model needs.
HEAVY_OWN = (
    "amalia_edge.runtime.backend",
    "amalia_edge.runtime.selection",
    "amalia_edge.runtime.model",
    "amalia_edge.runtime.backends",
    "amalia_edge.checkpoint",
    "amalia_edge.convert",
    "amalia_edge.telemetry",
    "amalia_edge.tui",
    "amalia_edge.bench",
)


# Runs ARGS as `python ARGS` would, then writes every module in sys.modules at exit to the
# file named by AMALIA_TEST_MODULES. sys.modules, not `-X importtime`: importtime does not
# report modules loaded by importlib.import_module, which the CLI and the registry use.
DRIVER = """
import atexit, os, runpy, sys
def _dump():
    with open(os.environ["AMALIA_TEST_MODULES"], "w") as fh:
        fh.write("\\n".join(sorted(sys.modules)))
atexit.register(_dump)
args = sys.argv[1:]
if args[0] == "-c":
    sys.argv = ["-c", *args[2:]]
    exec(compile(args[1], "<string>", "exec"), {"__name__": "__main__"})
else:
    sys.argv = [args[1], *args[2:]]
    runpy.run_module(args[1], run_name="__main__", alter_sys=True)
"""


def imported(*args: str, tmp: Path) -> tuple[set[str], str, int]:
    """(modules in sys.modules at exit, stdout, exit status) of ``python ARGS``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    dump = tmp / "modules.txt"
    env["AMALIA_TEST_MODULES"] = str(dump)
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert dump.is_file(), proc.stderr
    return set(dump.read_text().split()), proc.stdout, proc.returncode


def heavy_in(mods: set[str]) -> list[str]:
    return sorted(m for m in mods if m.split(".")[0] in HEAVY or m.startswith(HEAVY_OWN))


def test_the_probe_sees_imports(tmp_path: Path) -> None:
    """The mechanism itself: a module a command imports shows up (else every test passes)."""
    code = "import importlib; importlib.import_module('email.message')"
    mods, _, status = imported("-c", code, tmp=tmp_path)
    assert status == 0 and {"email", "email.message"} <= mods
    mods, _, _ = imported("-c", "import amalia_edge.runtime.model", tmp=tmp_path)
    assert "amalia_edge.runtime.selection" in heavy_in(mods)


def test_help_imports_no_command_module(tmp_path: Path) -> None:
    mods, out, code = imported("-m", "amalia_edge", "--help", tmp=tmp_path)
    assert code == 0 and "doctor" in out
    assert heavy_in(mods) == []
    assert not any(m.startswith(("amalia_edge.commands", "amalia_edge.device")) for m in mods)


@pytest.mark.parametrize("argv", [["doctor"], ["doctor", "--json"]])
def test_doctor_imports_nothing_heavy(argv: list[str], tmp_path: Path) -> None:
    mods, out, code = imported("-m", "amalia_edge", *argv, tmp=tmp_path)
    assert code in (0, 1), out  # 1: a check failed on this machine, still a full report
    assert heavy_in(mods) == []
    assert {"amalia_edge.commands.doctor", "amalia_edge.runtime.registry"} <= mods
    if "--json" in argv:
        report = json.loads(out)
        assert {"device", "checks", "backends"} <= set(report)
        assert [b["name"] for b in report["backends"]][:3] == [
            "llama.cpp",
            "onnxruntime",
            "tensorrt",
        ]
    else:
        assert out.startswith("Device\n") and "\nBackends\n" in out


@pytest.mark.parametrize("command", ["generate", "chat", "bench", "quantize"])
def test_subcommand_help_imports_no_inference_library(command: str, tmp_path: Path) -> None:
    mods, out, code = imported("-m", "amalia_edge", command, "--help", tmp=tmp_path)
    assert code == 0 and "usage: amalia-edge " + command in out
    assert [m for m in heavy_in(mods) if m.split(".")[0] in HEAVY - {"platformdirs"}] == []
