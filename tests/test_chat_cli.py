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
