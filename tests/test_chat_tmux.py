"""End to end: ``amalia-edge chat`` in a real terminal (tmux), typed into, read off the screen.

Runs the real command on a real GGUF in a detached tmux session, types a prompt with
``send-keys``, reads the streamed reply with ``capture-pane`` and checks it against the
history file the app wrote, then quits with Ctrl+Q.
"""

from __future__ import annotations

import importlib.util
import itertools
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
            shlex.quote(str(tiny_gguf["F16"])),
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


def _assistant_records(history: Path) -> list[dict[str, object]]:
    out = []
    for path in history.glob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line still being written
            if rec.get("type") == "message" and rec["role"] == "assistant":
                out.append(rec)
    return out


def test_twelve_turns_past_the_context_every_reply_readable(
    tmp_path: Path, tiny_gguf: dict[str, Path], tmux_session: str
) -> None:
    """A conversation that outgrows a small context (old turns dropped) in a real terminal:
    after each reply every word of it is on screen, or reachable with PageUp."""
    history = tmp_path / "history"
    n_ctx = 256
    command = " ".join(
        [
            f"AMALIA_EDGE_HISTORY_DIR={shlex.quote(str(history))}",
            f"PYTHONPATH={shlex.quote(str(REPO))}",
            "TERM=xterm-256color",
            shlex.quote(sys.executable),
            "-m amalia_edge chat",
            shlex.quote(str(tiny_gguf["F16"])),
            f"--ctx {n_ctx} --temperature 0 --max-tokens 48 --threads 1",
            f"; echo EXITED $? > {shlex.quote(str(tmp_path / 'exit'))}; sleep 30",
        ]
    )
    _tmux(
        "new-session", "-d", "-s", tmux_session, "-x", "100", "-y", "30", "-c", str(REPO), command
    )

    def screen() -> str:
        return _tmux("capture-pane", "-p", "-t", tmux_session)

    _wait(lambda: "Escreve uma mensagem" in screen() and "pronto" in screen(), 60, "load", screen)
    for turn in range(1, 13):
        question = f"Pergunta {turn}: conta-me mais sobre Lisboa e o Tejo."
        _tmux("send-keys", "-t", tmux_session, "-l", question)
        _tmux("send-keys", "-t", tmux_session, "Enter")
        _wait(lambda t=turn: len(_assistant_records(history)) >= t, 60, f"reply {turn}", screen)
        reply = str(_assistant_records(history)[-1]["content"])
        time.sleep(0.6)  # the last UI update after the reply was saved
        words = set(re.findall(r"\w{3,}", reply))
        screens: list[str] = []
        missing = words
        for _ in range(12):  # the reply's end is on screen; PageUp reaches its start
            screens.append(screen())
            seen = "\n".join(screens)
            missing = {w for w in words if w not in seen}
            if not missing:
                break
            _tmux("send-keys", "-t", tmux_session, "PageUp")
            time.sleep(0.3)
        assert not missing, f"turn {turn}: {sorted(missing)} never on screen:\n" + screens[0]
    records = _assistant_records(history)
    prompts = [int(r["stats"]["prompt_tokens"]) for r in records]  # type: ignore[index]
    # The chat outgrew the context: at some turn the prompt shrank (old turns dropped).
    assert any(b < a for a, b in itertools.pairwise(prompts)), prompts
    used = [p + int(r["stats"]["completion_tokens"]) for p, r in zip(prompts, records, strict=True)]  # type: ignore[index]
    assert max(used) <= n_ctx, used
    _tmux("send-keys", "-t", tmux_session, "C-q")
    _wait(lambda: (tmp_path / "exit").exists(), 20, "the app to quit", screen)
    assert (tmp_path / "exit").read_text().split() == ["EXITED", "0"]
