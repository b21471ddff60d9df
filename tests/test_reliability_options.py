"""Issue 12, point 2: every numeric option is range-checked before anything loads.

``generate MODEL 'Olá' --batch -1`` used to exit 139 (SIGSEGV in ``Llama.__del__`` after the
failed load); NaN sampling parameters produced an empty reply with exit 0; ``--threads
10000`` was accepted.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from amalia_edge.cli import main
from amalia_edge.commands import cpu_count

REPO = Path(__file__).resolve().parents[1]

BAD_GENERATE = [
    ["--batch", "-1"],
    ["--batch", "0"],
    ["--threads", "10000"],
    ["--threads", "0"],
    ["--threads", "-3"],
    ["--ctx", "0"],
    ["--ctx", "-5"],
    ["--ctx", str(1 << 40)],
    ["--max-tokens", "-1"],
    ["--max-tokens", "0"],
    ["--temperature", "nan"],
    ["--temperature", "inf"],
    ["--temperature", "-1"],
    ["--top-p", "nan"],
    ["--top-p", "1.5"],
    ["--min-p", "-0.1"],
    ["--repeat-penalty", "inf"],
    ["--repeat-penalty", "nan"],
    ["--repeat-penalty", "0"],
    ["--top-k", "-1"],
    ["--seed", "-1"],
    ["--seed", str(1 << 64)],
]


@pytest.fixture
def no_load(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    calls: list[object] = []

    def load_model(*a: object, **k: object) -> None:
        calls.append(a)
        raise AssertionError("a bad option must be refused before any model loads")

    import amalia_edge.runtime as runtime

    monkeypatch.setattr(runtime, "load_model", load_model)
    return calls


@pytest.mark.parametrize("bad", BAD_GENERATE, ids=lambda a: " ".join(a))
def test_generate_refuses_bad_numbers_before_loading(
    bad: list[str], no_load: list[object], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["generate", str(tmp_path / "m.gguf"), "Olá", *bad])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert bad[0] in err and "Traceback" not in err
    assert no_load == []


@pytest.mark.parametrize(
    "bad",
    [
        ["--ctx", "0"],
        ["--threads", "10000"],
        ["--temperature", "nan"],
        ["--top-p", "inf"],
        ["--max-tokens", "-1"],
    ],
    ids=lambda a: " ".join(a),
)
def test_chat_refuses_bad_numbers(bad: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["chat", *bad])
    assert exc.value.code == 2
    assert bad[0] in capsys.readouterr().err


def test_quantize_threads_upper_bound(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["quantize", "--out", str(tmp_path / "o"), "--threads", str(cpu_count() + 1)])
    assert "--threads" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (["--interval", "nan"], "--interval must be > 0 and finite"),
        (["-t", "10000"], "threads must be at most"),
    ],
)
def test_bench_bounds(bad: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "/nonexistent/m.gguf", "-p", "8", "-n", "4", *bad]) == 2
    assert message in capsys.readouterr().err


def test_batch_minus_one_is_a_usage_error_not_a_segfault(tmp_path: Path) -> None:
    argv = ["generate", str(tmp_path / "x.gguf"), "Olá", "--batch", "-1"]
    out = subprocess.run(
        [sys.executable, "-m", "amalia_edge", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": _child_path()},
    )
    assert out.returncode == 2, out.stderr
    assert "--batch" in out.stderr and "Traceback" not in out.stderr


def test_binary_stdin_prompt_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], no_load: list[object]
) -> None:
    class Stdin(io.StringIO):
        buffer = io.BytesIO(b"\xff\xfe\x00binary\x80")

    monkeypatch.setattr(sys, "stdin", Stdin())
    assert main(["generate", "x.gguf", "-"]) == 2
    err = capsys.readouterr().err
    assert "not UTF-8" in err and err.count("\n") == 1
    assert no_load == []


def _child_path() -> str:
    """The child runs the code this test runs: the caller's PYTHONPATH, then the repo."""
    repo = str(Path(__file__).resolve().parents[1])
    return os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), repo) if p)
