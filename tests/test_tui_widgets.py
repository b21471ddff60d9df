"""The streaming reply body: grows cheaply, re-lays out the screen only now and then."""

from __future__ import annotations

import asyncio

import pytest
from textual.app import App, ComposeResult
from textual.containers import Vertical

from amalia_edge.tui.widgets import messages
from amalia_edge.tui.widgets.messages import StreamingBody


class BodyApp(App[None]):
    CSS = "Vertical { width: 22; height: auto; }"  # 22 columns: a short line wraps soon

    def compose(self) -> ComposeResult:
        with Vertical():
            yield StreamingBody()


def test_streaming_body_asks_for_layout_only_when_it_grows_and_not_too_often(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def run() -> None:
        app = BodyApp()
        async with app.run_test(size=(40, 20)) as pilot:
            body = app.query_one(StreamingBody)
            await pilot.pause()
            assert body.size.height == 1  # the first line is there before any text
            # Within LAYOUT_INTERVAL of the mount even a new line only repaints.
            assert body.append("uma linha que não cabe em vinte colunas") is False
            monkeypatch.setattr(messages, "LAYOUT_INTERVAL", 0.0)
            assert body.append(" e mais") is True  # now it may: the text wraps to 3 lines
            await pilot.pause()
            assert body.size.height == 3
            assert body.append("!") is False  # same number of lines: a repaint suffices
            assert body.text == "uma linha que não cabe em vinte colunas e mais!"

    asyncio.run(run())
