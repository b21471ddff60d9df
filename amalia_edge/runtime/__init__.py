"""Runtime: pick a backend for this device with reasons, load a model, stream typed events.

```python
from amalia_edge.runtime import load_model, SamplingParams, Message
with load_model("artifacts/") as model:   # load_model() / None: the bundled demo model
    for event in model.stream_chat([Message("user", "Olá!")], sampling=SamplingParams(seed=1)):
        ...
```

``default_model_path()`` is the default MODEL of every front end (generate, chat, bench): the
bundled demo model's artifacts directory in the user cache, converted on first use;
``resolve_model(None)`` and ``load_model(None)`` go through it.

See ``docs/architecture.md`` (runtime) for the contract. The names below are imported on
first use (PEP 562), so ``import amalia_edge.runtime.registry`` (``doctor``) does not pay for
selection, chat templates or the model wrapper; no inference library is imported until a
backend probes or loads.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from amalia_edge.runtime.artifacts import ModelSource, default_model_path, resolve_model
    from amalia_edge.runtime.backend import (
        Availability,
        Backend,
        BackendSession,
        LoadOptions,
        MemoryEstimate,
    )
    from amalia_edge.runtime.chat import DEFAULT_SYSTEM_PROMPT, Message
    from amalia_edge.runtime.events import Event, Finished, PromptProcessed, Started, TokenEvent
    from amalia_edge.runtime.model import DEFAULT_N_CTX, Model, default_n_ctx, load_model, plan
    from amalia_edge.runtime.sampling import SamplingParams

_EXPORTS: dict[str, str] = {
    "ModelSource": "artifacts",
    "default_model_path": "artifacts",
    "resolve_model": "artifacts",
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
    "DEFAULT_N_CTX": "model",
    "Model": "model",
    "default_n_ctx": "model",
    "load_model": "model",
    "plan": "model",
    "SamplingParams": "sampling",
}

__all__ = [
    "DEFAULT_N_CTX",
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
    "ModelSource",
    "PromptProcessed",
    "SamplingParams",
    "Started",
    "TokenEvent",
    "default_model_path",
    "default_n_ctx",
    "load_model",
    "plan",
    "resolve_model",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'amalia_edge.runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"amalia_edge.runtime.{module}"), name)
    globals()[name] = value
    return value
