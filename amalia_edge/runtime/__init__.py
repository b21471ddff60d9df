"""Runtime: pick a backend for this device with reasons, load a model, stream typed events.

```python
from amalia_edge.runtime import load_model, SamplingParams, Message
with load_model("artifacts/") as model:
    for event in model.stream_chat([Message("user", "Olá!")], sampling=SamplingParams(seed=1)):
        ...
```

See ``docs/architecture.md`` (runtime) for the contract. Importing this package imports no
inference library; backends import theirs when loaded.
"""

from __future__ import annotations

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
