"""After the chat outgrows the context, the next reply still gets room for ``max_tokens``
(real llama.cpp session, the runtime's own template and tokenizer)."""

from __future__ import annotations

from pathlib import Path

import pytest

from amalia_edge.runtime import LoadOptions, Message, load_model
from amalia_edge.runtime.model import REPLY_RESERVE_SHARE
from tests.plugins.models import HAVE_LLAMA_CPP

pytestmark = pytest.mark.skipif(not HAVE_LLAMA_CPP, reason="llama-cpp-python is not installed")


def test_dropping_turns_leaves_room_for_a_whole_reply(tiny_gguf: dict[str, Path]) -> None:
    n_ctx, max_tokens = 256, 120
    assert max_tokens > n_ctx * REPLY_RESERVE_SHARE  # more than the reserve while it fits
    turns: list[Message] = []
    for i in range(12):
        turns += [
            Message("user", f"Pergunta {i}: fala-me de Lisboa e do rio Tejo."),
            Message("assistant", "Lisboa fica junto ao Tejo, com colinas e elétricos. " * 4),
        ]
    turns.append(Message("user", "E depois?"))
    with load_model(tiny_gguf["F16"], n_ctx=n_ctx, options=LoadOptions(n_threads=1)) as m:
        short = m.fit_chat(turns[-3:], max_tokens=max_tokens, system="Sê breve.")
        assert short.dropped == 0  # fits whole: nothing dropped, nothing changes
        fitted = m.fit_chat(turns, max_tokens=max_tokens, system="Sê breve.")
        assert fitted.dropped > 0
        assert n_ctx - fitted.prompt_tokens >= max_tokens, "room for a whole reply"
        assert fitted.messages[-1].content == "E depois?"
        assert fitted.messages[0].content == "Sê breve."
