"""What the user can change at run time: sampling settings and which model runs."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_TOKENS = 512


@dataclass(frozen=True)
class ChatSettings:
    """Sampling and prompt settings (the settings modal edits these)."""

    system: str
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = DEFAULT_MAX_TOKENS

    def validate(self) -> str | None:
        """The name of the first out-of-range field, or ``None`` when all are valid."""
        if not 0.0 <= self.temperature <= 2.0:
            return "temperature"
        if not 0.0 < self.top_p <= 1.0:
            return "top_p"
        if not 1 <= self.max_tokens <= 32768:
            return "max_tokens"
        return None


@dataclass(frozen=True)
class ModelSpec:
    """Which model to load and how; ``None`` fields mean "let the runtime choose"."""

    model: str | None = None  # artifacts dir, GGUF file, or None for the bundled demo
    backend: str | None = None
    quant: str | None = None
    n_ctx: int | None = None  # None: 2048, or the model's trained context if shorter
    threads: int | None = None  # decode threads (None: the backend's default, physical cores)

    @property
    def label(self) -> str:
        return self.model or "demo"
