"""``serve()``: load a model behind the OpenAI-compatible API and run uvicorn until SIGTERM.

The socket is open before the model has loaded: ``/health`` and the API answer 503 until it
is ready. On SIGTERM or SIGINT uvicorn stops accepting connections and waits up to
``shutdown_timeout`` seconds for replies in flight to finish; then the engine is closed and
``serve`` returns 0.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
import threading
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from amalia_edge.errors import AmaliaEdgeError

if TYPE_CHECKING:
    from amalia_edge.runtime.backend import LoadOptions
    from amalia_edge.serve.engine import Engine

log = logging.getLogger(__name__)

API_KEY_ENV = "AMALIA_EDGE_API_KEY"


class ServeConfigError(AmaliaEdgeError):
    """A server option that would be unsafe or cannot work."""


@dataclass
class ServeConfig:
    model: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    parallel: int | None = None  # None: from the model, context and free memory
    n_ctx: int | None = None  # per slot; None: 2048 capped at the model's training context
    backend: str | None = None
    quant: str | None = None
    api_key: str | None = None
    insecure_no_auth: bool = False
    cors: list[str] = field(default_factory=list)
    max_body: int = 1024 * 1024
    max_prompt_tokens: int | None = None
    max_queue: int = 16
    shutdown_timeout: float = 30.0
    name: str | None = None  # the model id clients send; None: the model's name
    options: LoadOptions | None = None
    telemetry: bool = True


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_config(cfg: ServeConfig) -> ServeConfig:
    """Refuse unsafe or impossible settings; fill the API key from the environment."""
    if cfg.api_key is None and os.environ.get(API_KEY_ENV):
        cfg.api_key = os.environ[API_KEY_ENV]
    if cfg.api_key is not None and len(cfg.api_key) < 8:
        raise ServeConfigError(
            "the API key is shorter than 8 characters",
            fix="use a long random key, e.g. `openssl rand -hex 24`",
        )
    if not is_loopback(cfg.host) and cfg.api_key is None and not cfg.insecure_no_auth:
        raise ServeConfigError(
            f"--host {cfg.host} would let anyone on the network use the model without a key",
            fix=f"set --api-key (or {API_KEY_ENV}), or pass --insecure-no-auth if the network "
            "is trusted",
        )
    if not 0 < cfg.port < 65536:
        raise ServeConfigError(f"--port {cfg.port} is not a TCP port", fix="use 1-65535")
    if cfg.parallel is not None and cfg.parallel < 1:
        raise ServeConfigError(f"--parallel {cfg.parallel} < 1", fix="use 1 or more")
    if cfg.max_queue < 0:
        raise ServeConfigError("--max-queue must be >= 0", fix="use 0 or more")
    return cfg


@dataclass
class Loaded:
    engine: Engine
    banner: list[str]


def load_engine(cfg: ServeConfig) -> Loaded:
    """Select the model like ``generate`` does; llama.cpp gets the batching engine."""
    from amalia_edge.runtime import LoadOptions
    from amalia_edge.runtime.model import load_model, plan

    options = cfg.options or LoadOptions()
    source, sel, device = plan(
        cfg.model, backend=cfg.backend, quant=cfg.quant, n_ctx=cfg.n_ctx, options=options
    )
    cand = sel.chosen
    if cand is None:
        raise sel.error()
    name = cfg.name or source.name
    banner = [f"model {name}: {cand.backend} {cand.artifact.quant} ({cand.artifact.path})"]
    if cand.backend == "llama.cpp":
        from amalia_edge.runtime import registry
        from amalia_edge.runtime.backends.llamacpp import gpu_offload
        from amalia_edge.serve.batch import LlamaBatchEngine, choose_parallel

        backend = registry.get("llama.cpp")
        est = backend.memory_estimate(cand.artifact, sel.n_ctx, options)
        gpu = gpu_offload(options)
        if cfg.parallel is None:
            free = device.mem_available if device is not None else None
            choice = choose_parallel(
                cand.artifact, sel.n_ctx, free, other_bytes=est.weights + est.overhead
            )
            parallel, why = choice.n, "; ".join(choice.reasons)
        else:
            parallel, why = cfg.parallel, "--parallel"
        engine: Engine = LlamaBatchEngine(
            cand.artifact,
            n_ctx=sel.n_ctx,
            parallel=parallel,
            options=options,
            gpu=gpu,
            max_queue=cfg.max_queue,
            name=name,
        )
        banner.append(
            f"continuous batching: {parallel} slot(s) × {engine.info.n_ctx} tokens ({why})"
        )
    else:
        from amalia_edge.serve.engine import SerialEngine

        if cfg.parallel not in (None, 1):
            log.warning(
                "--parallel %s: the %s backend serves one request at a time",
                cfg.parallel,
                cand.backend,
            )
        model = load_model(
            source,
            backend=cand.backend,
            quant=cand.artifact.quant,
            n_ctx=sel.n_ctx,
            device=device,
            options=options,
        )
        engine = SerialEngine(model, max_queue=cfg.max_queue, name=name)
        banner.append(
            f"one request at a time ({model.backend_name} has no batched decode); "
            f"context {model.n_ctx} tokens"
        )
    banner.append(f"queue: {cfg.max_queue} waiting request(s), then 429")
    return Loaded(engine, banner)


def _server_class() -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, but a SIGTERM/SIGINT that ended a clean shutdown is not raised
        again afterwards (uvicorn re-raises it, so the process would die of the signal and
        systemd would log a failure): ``serve`` returns 0 instead."""

        def capture_signals(self) -> Any:
            import contextlib

            outer = super().capture_signals

            @contextlib.contextmanager
            def captured() -> Any:
                with outer():
                    yield
                    self._captured_signals.clear()

            return captured()

    return Server


def serve(
    cfg: ServeConfig,
    *,
    on_ready: Callable[[Loaded], None] | None = None,
    print_fn: Callable[[str], Any] | None = None,
) -> int:
    """Run the server until SIGTERM/SIGINT; return the exit status (0 after a clean stop)."""
    import uvicorn

    from amalia_edge.serve.app import ServerState, build_app

    _Server = _server_class()

    check_config(cfg)
    say = print_fn or (lambda s: print(s, file=sys.stderr, flush=True))
    monitor = None
    if cfg.telemetry:
        from amalia_edge.telemetry import default_monitor

        monitor = default_monitor(interval=0.5, max_samples=20_000)
        for st in monitor.start():
            if not st.available and st.name != "system":
                log.info("telemetry: %s", st)
    state = ServerState(
        api_key=cfg.api_key,
        max_body=cfg.max_body,
        max_prompt_tokens=cfg.max_prompt_tokens,
        monitor=monitor,
    )

    def load() -> None:
        try:
            loaded = load_engine(cfg)
        except AmaliaEdgeError as exc:
            state.load_error = str(exc)
            say(f"amalia-edge: error: {exc}")
            return
        except Exception as exc:  # keep serving 503 with the reason rather than dying silently
            log.exception("loading the model failed")
            state.load_error = f"{type(exc).__name__}: {exc}"
            return
        loaded.engine.start()
        state.engine = loaded.engine
        for line in loaded.banner:
            say(line)
        say(
            f"ready: http://{cfg.host}:{cfg.port}/ (chat page), OpenAI API at /v1"
            + (", API key required" if cfg.api_key else "")
        )
        if on_ready is not None:
            on_ready(loaded)

    loader = threading.Thread(target=load, name="amalia-serve-load", daemon=True)

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        loader.start()
        yield
        # Shutdown: uvicorn has stopped accepting and waited for open connections.
        eng = state.engine
        if eng is not None:
            if not eng.drain(timeout=1.0):
                log.warning("stopping with requests still running; they are cancelled")
            eng.close()

    app = build_app(state, cors=cfg.cors or None)
    app.router.lifespan_context = lifespan
    config = uvicorn.Config(
        app,
        host=cfg.host,
        port=cfg.port,
        log_level="warning",
        timeout_graceful_shutdown=max(1, round(cfg.shutdown_timeout)),
        access_log=False,
        lifespan="on",
    )
    server = _Server(config)
    say(f"amalia-edge serve: listening on http://{cfg.host}:{cfg.port} (loading the model…)")
    try:
        server.run()
    finally:
        if monitor is not None:
            monitor.stop()
    if state.load_error and state.engine is None:
        return 1
    return 0 if server.started else 1
