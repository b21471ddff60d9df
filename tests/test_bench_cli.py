"""``amalia-edge bench`` command line: bad input, output files, Ctrl-C (scripted model)."""

from __future__ import annotations

import json
from typing import Any

import pytest

import amalia_edge.bench.runner as runner_mod
from amalia_edge.cli import main
from amalia_edge.errors import BenchError
from tests.test_bench import ScriptedModel


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Route the runner's model loading to a ScriptedModel; returns the load calls."""
    calls: list[tuple[Any, ...]] = []

    def loader(self: Any) -> Any:
        def load(path: Any, backend: Any = None, quant: Any = None, n_ctx: int = 0) -> Any:
            calls.append((path, backend, quant))
            return ScriptedModel(itl=0.001)

        return load

    monkeypatch.setattr(runner_mod.Runner, "_loader", loader)
    return calls


BASE = [
    "bench",
    "m.gguf",
    "-p",
    "8",
    "-n",
    "4",
    "-r",
    "2",
    "--interval",
    "0.01",
    "--no-bandwidth-test",
]


def test_bench_markdown_to_stdout(scripted, capsys):
    assert main([*BASE, "-pg", "8,2"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0].startswith("| model |")
    assert "| pp8 |" in out and "| tg4 |" in out and "| pp8+tg2 |" in out
    assert "tg4 1/2" in err  # progress on stderr, not stdout
    assert scripted == [("m.gguf", None, None)]


@pytest.mark.slow
def test_bench_matrix_json_file_and_plot(scripted, tmp_path, capsys):
    out = tmp_path / "sub" / "r.json"
    png = tmp_path / "r.png"
    rc = main(
        [
            *BASE,
            "--backend",
            "a,b",
            "--quant",
            "Q4_K_M,Q8_0",
            "-o",
            "json",
            "--out",
            str(out),
            "--plot",
            str(png),
        ]
    )
    assert rc == 0
    assert capsys.readouterr().out == ""
    data = json.loads(out.read_text())
    assert len(data) == 8  # 2 backends × 2 quants × 2 tests
    assert {(c[1], c[2]) for c in scripted} == {
        ("a", "Q4_K_M"),
        ("a", "Q8_0"),
        ("b", "Q4_K_M"),
        ("b", "Q8_0"),
    }
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tests", "pp12x"], "unknown test 'pp12x'"),
        (["-p", "-5"], "negative token count -5"),
        (["-r", "0"], "repetitions must be >= 1"),
        (["--interval", "0"], "--interval must be > 0"),
        (["-pg", "8"], "-pg takes two numbers"),
        (["-t", "0"], "threads must be >= 1"),
    ],
)
def test_bench_bad_input_is_one_clear_line(scripted, capsys, args, message):
    assert main([*BASE, *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert err.count("\n") == 1
    assert scripted == []  # rejected before anything was loaded


def test_bench_unwritable_output_fails_before_running(scripted, tmp_path, capsys, monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main([*BASE, "--out", str(afile / "r.md")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert main([*BASE, "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err

    # permission denied (root ignores chmod, so make the probe file creation fail)
    import amalia_edge.commands.bench as cmd

    def denied(*a: Any, **k: Any) -> Any:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cmd.tempfile, "mkstemp", denied)
    assert main([*BASE, "--plot", str(tmp_path / "p.png")]) == 2
    err = capsys.readouterr().err
    assert "cannot write --plot" in err and "Permission denied" in err
    assert scripted == []


def test_bench_model_that_cannot_load_reports_once(capsys, tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf at all")
    rc = main([*BASE[:1], str(bad), *BASE[2:], "-r", "5"])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.count("amalia-edge: error:") == 1 and "Traceback" not in err


def test_bench_ctrl_c_prints_completed_results(monkeypatch, capsys):
    model = ScriptedModel(itl=0.001)
    model.interrupt_on_call = 4  # pp8: warm-up + 2 timed complete; tg4 interrupted

    monkeypatch.setattr(runner_mod.Runner, "_loader", lambda self: lambda *a, **k: model)
    assert main(BASE) == 130
    out, err = capsys.readouterr()
    assert "| pp8 |" in out and "| tg4 |" not in out
    assert "interrupted" in err


def test_bench_without_model_uses_the_demo(scripted, capsys, monkeypatch):
    import amalia_edge.runtime as runtime

    monkeypatch.setattr(runtime, "default_model_path", lambda **_: "/cache/demo-artifacts")
    assert main(["bench", *BASE[2:]]) == 0
    assert scripted == [("/cache/demo-artifacts", None, None)]
    assert "benchmarking the demo model" in capsys.readouterr().err


def test_library_without_model_says_how():
    from amalia_edge.bench.runner import BenchConfig, run_bench

    with pytest.raises(BenchError, match="no MODEL given"):
        run_bench(BenchConfig(model=None, measure_bandwidth=False))
