"""End to end: ``amalia-edge chat`` in a real terminal (tmux), typed into, read off the screen.

Runs the real command on a real GGUF in a detached tmux session, types a prompt with
``send-keys``, reads the streamed reply with ``capture-pane`` and checks it against the
history file the app wrote, then quits with Ctrl+Q.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.skipif(
        shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)"
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed"
    ),
    pytest.mark.slow,
]


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True).stdout


def _wait(
    predicate: Callable[[], bool], timeout: float, what: str, screen: Callable[[], str]
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; screen:\n{screen()}")


@pytest.fixture
def tmux_session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    # A private server socket, so the test never touches a person's own tmux sessions.
    monkeypatch.setenv("TMUX_TMPDIR", str(tmp_path))
    monkeypatch.delenv("TMUX", raising=False)
    try:
        yield f"amalia-chat-test-{os.getpid()}"
    finally:
        subprocess.run(["tmux", "kill-server"], capture_output=True)


def test_chat_in_tmux(tmp_path: Path, tiny_gguf: dict[str, Path], tmux_session: str) -> None:
    history = tmp_path / "history"
    command = " ".join(
        [
            f"AMALIA_EDGE_HISTORY_DIR={shlex.quote(str(history))}",
            f"PYTHONPATH={shlex.quote(str(REPO))}",
            "TERM=xterm-256color",
            shlex.quote(sys.executable),
            "-m amalia_edge chat",
            shlex.quote(str(tiny_gguf["Q8_0"])),
            "--lang en --ctx 512 --temperature 0 --max-tokens 24 --threads 1",
            f"; echo EXITED $? > {shlex.quote(str(tmp_path / 'exit'))}; sleep 30",
        ]
    )
    _tmux(
        "new-session", "-d", "-s", tmux_session, "-x", "120", "-y", "40", "-c", str(REPO), command
    )

    def screen() -> str:
        return _tmux("capture-pane", "-p", "-t", tmux_session)

    _wait(
        lambda: "Type a message" in screen() and "ready" in screen(),
        60,
        "the model to load",
        screen,
    )
    _tmux("send-keys", "-t", tmux_session, "-l", "Olá, como estás?")
    _tmux("send-keys", "-t", tmux_session, "Enter")

    def saved_reply() -> str | None:
        for path in history.glob("*.jsonl"):
            for line in path.read_text(encoding="utf-8").splitlines():
                rec = json.loads(line)
                if rec.get("type") == "message" and rec["role"] == "assistant":
                    return str(rec["content"])
        return None

    _wait(lambda: saved_reply() is not None, 60, "the reply", screen)
    reply = saved_reply()
    assert reply
    time.sleep(0.5)  # the last UI update after the reply was saved
    shown = screen()
    assert "Olá, como estás?" in shown
    assert "You" in shown and "Model" in shown
    # The reply as the terminal shows it: Markdown may restyle punctuation, but its words
    # (runs of letters and digits) appear in order on the screen.
    words = re.findall(r"\w{3,}", reply)[:5]
    flat = " ".join(shown.split())
    assert words, reply
    pos = 0
    for w in words:
        pos = flat.find(w, pos)
        assert pos >= 0, f"{w!r} of the reply {reply!r} not on screen:\n{shown}"
    assert "tok/s" in shown  # the stats panel reported the reply's speed

    _tmux("send-keys", "-t", tmux_session, "C-q")
    _wait(lambda: (tmp_path / "exit").exists(), 20, "the app to quit", screen)
    assert (tmp_path / "exit").read_text().split() == ["EXITED", "0"]
