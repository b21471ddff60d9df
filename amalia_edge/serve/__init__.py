"""``amalia-edge serve``: an OpenAI-compatible server with continuous batching and a chat page.

```python
from amalia_edge.serve import ServeConfig, serve
serve(ServeConfig(model="artifacts/", host="127.0.0.1", port=8080))   # blocks until SIGTERM
```

* :mod:`.engine` — the request queue and the one-at-a-time engine (any backend);
* :mod:`.batch` — continuous batching on llama.cpp (one ``llama_decode`` per step);
* :mod:`.app` — the Starlette app: ``/v1/*``, ``/health``, ``/metrics``, ``/``;
* :mod:`.server` — configuration, safety checks, model loading, uvicorn and SIGTERM.

Starlette, uvicorn and prometheus-client come with the ``serve`` extra
(``pip install 'amalia-edge[serve]'``) and are imported only when a server starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from amalia_edge.serve.server import ServeConfig, serve

__all__ = ["ServeConfig", "serve"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from amalia_edge.serve import server

        return getattr(server, name)
    raise AttributeError(f"module 'amalia_edge.serve' has no attribute {name!r}")
