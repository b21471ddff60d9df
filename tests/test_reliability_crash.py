"""Issue 12, "make the class impossible": an unexpected exception anywhere in a command (or
inside the chat app) is one line on stderr plus a saved report without user text, exit 1;
``--json`` errors are JSON on stdout too."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from amalia_edge import cli
from amalia_edge.errors import CRASH_DIR_ENV, ArtifactError

SECRET = "segredo-da-conversa-7731"


def _with_run(monkeypatch: pytest.MonkeyPatch, run: object, command: str = "doctor") -> None:
    import importlib

    monkeypatch.setattr(importlib.import_module(f"amalia_edge.commands.{command}"), "run", run)


def _boom(args: argparse.Namespace) -> int:
    data = {"prompt": SECRET}
    return int(data["missing-" + SECRET])  # KeyError whose message holds user text


def test_unexpected_exception_is_one_line_and_a_report_without_user_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(CRASH_DIR_ENV, str(tmp_path))
    _with_run(monkeypatch, _boom)
    assert cli.main(["doctor"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and "Traceback" not in err and SECRET not in err
    assert "internal error (KeyError)" in err
    (report,) = tmp_path.glob("crash-*.txt")
    assert str(report) in err
    text = report.read_text(encoding="utf-8")
    assert SECRET not in text
    assert "exception: builtins.KeyError" in text and "in _boom" in text
    assert "command: doctor" in text


def test_json_flag_gets_a_json_error_on_stdout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(CRASH_DIR_ENV, str(tmp_path))

    def fail(args: argparse.Namespace) -> int:
        raise ArtifactError("x.gguf is broken", fix="rebuild it")

    _with_run(monkeypatch, fail)
    assert cli.main(["doctor", "--json"]) == 2
    out, err = capsys.readouterr()
    rec = json.loads(out)
    assert rec["error"]["problem"] == "x.gguf is broken" and rec["error"]["fix"] == "rebuild it"
    assert err.startswith("amalia-edge: error: x.gguf is broken")

    _with_run(monkeypatch, _boom)
    assert cli.main(["doctor", "--json"]) == 1
    out, _ = capsys.readouterr()
    assert json.loads(out)["error"]["type"] == "KeyError" and SECRET not in out


def test_crash_inside_the_textual_app_becomes_the_same_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from textual.app import App

    from amalia_edge.commands.chat import run_app

    class Broken(App[None]):
        def on_mount(self) -> None:
            history = [SECRET]
            raise ValueError(history[0])

    monkeypatch.setenv(CRASH_DIR_ENV, str(tmp_path))

    def run(args: argparse.Namespace) -> int:
        run_app(Broken(), headless=True)
        return 0

    _with_run(monkeypatch, run, "chat")
    assert cli.main(["chat"]) == 1
    out, err = capsys.readouterr()
    assert SECRET not in out + err and "Traceback" not in out + err
    assert "internal error (ValueError)" in err
    (report,) = tmp_path.glob("crash-*.txt")
    text = report.read_text(encoding="utf-8")
    assert SECRET not in text and "in on_mount" in text
