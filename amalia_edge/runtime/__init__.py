"""Runtime: pick a backend for this device with reasons, load a model, stream typed events.

```python
from amalia_edge.runtime import load_model, SamplingParams, Message
with load_model("artifacts/") as model:
    for event in model.stream_chat([Message("user", "Olá!")], sampling=SamplingParams(seed=1)):
        ...
```

See ``docs/architecture.md`` (runtime) for the contract. The names below are imported on
first use (PEP 562), so ``import amalia_edge.runtime.registry`` (``doctor``) does not pay for
selection, chat templates or the model wrapper; no inference library is imported until a
backend probes or loads.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from amalia_edge.runtime.backend import (
        Availability,
        Backend,
        BackendSession,
        LoadOptions,
        MemoryEstimate,
    )
    from amalia_edge.runtime.chat import DEFAULT_SYSTEM_PROMPT, Message
    from amalia_edge.runtime.events import Event, Finished, PromptProcessed, Started, TokenEvent
    from amalia_edge.runtime.model import Model, load_model, plan
    from amalia_edge.runtime.sampling import SamplingParams

_EXPORTS: dict[str, str] = {
    "Availability": "backend",
    "Backend": "backend",
    "BackendSession": "backend",
    "LoadOptions": "backend",
    "MemoryEstimate": "backend",
    "DEFAULT_SYSTEM_PROMPT": "chat",
    "Message": "chat",
    "Event": "events",
    "Finished": "events",
    "PromptProcessed": "events",
    "Started": "events",
    "TokenEvent": "events",
    "Model": "model",
    "load_model": "model",
    "plan": "model",
    "SamplingParams": "sampling",
}

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "Availability",
    "Backend",
    "BackendSession",
    "Event",
    "Finished",
    "LoadOptions",
    "MemoryEstimate",
    "Message",
    "Model",
    "PromptProcessed",
    "SamplingParams",
    "Started",
    "TokenEvent",
    "load_model",
    "plan",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'amalia_edge.runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"amalia_edge.runtime.{module}"), name)
    globals()[name] = value
    return value
