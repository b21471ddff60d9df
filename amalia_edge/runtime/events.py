"""The one stream of typed events that generation yields.

Every backend's ``stream()`` yields, in this order: one :class:`Started`, one
:class:`PromptProcessed` (prefill done), zero or more :class:`TokenEvent` (one per generated
token, text already detokenized so that concatenating ``text`` gives the reply), and exactly
one :class:`Finished` last, also when generation was cancelled or failed mid-way (then
``reason`` says so). Front ends (one-shot generate, the chat TUI, benchmarks) consume this
stream; timings are derived from it, never measured a second time.

All times are ``time.perf_counter()`` seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

FinishReason = Literal["stop", "length", "stop_string", "cancelled", "context_full", "error"]


@dataclass(frozen=True)
class Started:
    backend: str
    artifact: str
    prompt_tokens: int
    n_ctx: int
    t: float


@dataclass(frozen=True)
class PromptProcessed:
    n_tokens: int  # prompt tokens evaluated (cached prefix tokens not counted)
    seconds: float
    t: float

    @property
    def tokens_per_second(self) -> float:
        return self.n_tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class TokenEvent:
    text: str  # detokenized text this token adds (may be "" while a UTF-8 char is incomplete)
    token_id: int
    index: int  # 0 for the first generated token
    t: float


@dataclass(frozen=True)
class Finished:
    reason: FinishReason
    text: str  # the whole reply
    prompt_tokens: int
    completion_tokens: int
    t_start: float  # Started.t
    t_first_token: float | None  # TokenEvent(index=0).t
    t_end: float
    prompt_seconds: float
    error: str | None = None
    token_ids: tuple[int, ...] = field(default=(), repr=False)

    @property
    def ttft(self) -> float | None:
        """Time to first token: from the request to the first generated token."""
        return None if self.t_first_token is None else self.t_first_token - self.t_start

    @property
    def decode_seconds(self) -> float:
        """Time from the first token to the last (the decode span of n-1 tokens)."""
        return 0.0 if self.t_first_token is None else self.t_end - self.t_first_token

    @property
    def decode_tps(self) -> float:
        n = self.completion_tokens - 1
        return n / self.decode_seconds if n > 0 and self.decode_seconds > 0 else 0.0

    @property
    def prompt_tps(self) -> float:
        return self.prompt_tokens / self.prompt_seconds if self.prompt_seconds > 0 else 0.0


Event = Started | PromptProcessed | TokenEvent | Finished
