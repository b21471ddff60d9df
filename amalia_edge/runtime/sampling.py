"""Sampling parameters, shared by every backend.

Defaults follow llama.cpp's ``common_params_sampling`` (common/common.h): temperature 0.8,
top-k 40, top-p 0.95, min-p 0.05, repeat penalty 1.0 (off). ``temperature == 0`` is greedy
decoding (argmax), which is deterministic and what the equivalence tests use.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from amalia_edge.errors import AmaliaEdgeError


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.8
    top_k: int = 40  # 0 = off
    top_p: float = 0.95  # 1.0 = off
    min_p: float = 0.05  # 0.0 = off
    repeat_penalty: float = 1.0  # 1.0 = off
    repeat_last_n: int = 64  # tokens the repeat penalty looks back over
    seed: int | None = None  # None = a random seed per request
    # Keep generating past end-of-generation tokens (benchmarks: a fixed token count, like
    # llama-bench's tgN); those tokens then appear as TokenEvents with their (usually empty) text.
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        problems = []
        if self.temperature < 0:
            problems.append(f"temperature {self.temperature} < 0")
        if self.top_k < 0:
            problems.append(f"top_k {self.top_k} < 0")
        if not 0.0 < self.top_p <= 1.0:
            problems.append(f"top_p {self.top_p} not in (0, 1]")
        if not 0.0 <= self.min_p <= 1.0:
            problems.append(f"min_p {self.min_p} not in [0, 1]")
        if self.repeat_penalty <= 0:
            problems.append(f"repeat_penalty {self.repeat_penalty} <= 0")
        if problems:
            raise AmaliaEdgeError(
                "invalid sampling parameters: " + "; ".join(problems),
                fix="use temperature >= 0, top_k >= 0, 0 < top_p <= 1, 0 <= min_p <= 1, "
                "repeat_penalty > 0",
            )

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @classmethod
    def greedy_params(cls) -> SamplingParams:
        return cls(temperature=0.0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
