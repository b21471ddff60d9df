"""`amalia-edge chat MODEL` with a MODEL that cannot be a model: one line, before the app opens."""

from __future__ import annotations

from pathlib import Path

import pytest

from amalia_edge.cli import main


@pytest.mark.parametrize("kind", ["missing", "not-a-gguf"])
def test_bad_model_is_a_one_line_error_before_the_app(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import amalia_edge.tui.app as app_mod

    def no_app(*_a: object, **_k: object) -> None:
        raise AssertionError("the app must not open for a bad MODEL")

    monkeypatch.setattr(app_mod.ChatApp, "run", no_app)
    model = tmp_path / "model.gguf"
    if kind == "not-a-gguf":
        model.write_text("not a model")
    assert main(["chat", str(model)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("amalia-edge: error: ")
    assert "Traceback" not in err[0]


def _no_app(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    import logging

    import amalia_edge.tui.app as app_mod

    ran: list[bool] = []

    def run(*_a: object, **_k: object) -> None:
        logging.getLogger("amalia_edge.tui").warning("the app ran")
        ran.append(True)

    monkeypatch.setattr(app_mod.ChatApp, "run", run)
    return ran


def test_list_with_no_saved_chat_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMALIA_EDGE_HISTORY_DIR", str(tmp_path / "hist"))
    assert main(["chat", "--list"]) == 0
    out, err = capsys.readouterr()
    assert out == ""  # stdout stays a clean (empty) table for scripts
    assert err.strip() == f"no saved conversations in {tmp_path / 'hist'}"


def test_resume_unknown_id_points_to_the_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ran = _no_app(monkeypatch)
    monkeypatch.setenv("AMALIA_EDGE_HISTORY_DIR", str(tmp_path))
    assert main(["chat", "--resume", "nope"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("amalia-edge: error: no saved conversation 'nope'")
    assert "amalia-edge chat --list" in err[0] and "F3" not in err[0]
    assert ran == []


def test_chat_log_stays_inside_the_chosen_history_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran = _no_app(monkeypatch)
    hist = tmp_path / "dir" / "hist"
    monkeypatch.setenv("AMALIA_EDGE_HISTORY_DIR", str(hist))
    assert main(["chat"]) == 0 and ran == [True]
    assert "the app ran" in (hist / "chat.log").read_text(encoding="utf-8")
    assert sorted(p.name for p in (tmp_path / "dir").iterdir()) == ["hist"]
