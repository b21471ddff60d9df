"""The HTTP side: an OpenAI-compatible API, /health, /metrics and the chat page (Starlette).

Routes: ``GET /v1/models``, ``POST /v1/chat/completions``, ``POST /v1/completions`` (stream
and not), ``GET /health``, ``GET /metrics``, ``GET /`` (the chat page, ``/static/*``).
Errors are OpenAI error objects ``{"error": {"message", "type", "param", "code"}}`` with
the status: 400 bad request, 401 missing or wrong key, 404 unknown model or route, 413 body
too large, 429 queue full (``Retry-After``), 503 while the model loads or the server stops.

Each reply carries an ``amalia`` object next to ``usage`` (in the last chunk when
streaming): time to first token, decode tokens/s, average watts and joules per token over
the request (``null`` where no power source is readable).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
import uuid
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route

from amalia_edge.errors import AmaliaEdgeError, ContextOverflowError
from amalia_edge.runtime.chat import Message
from amalia_edge.runtime.events import Event, Finished, PromptProcessed, TokenEvent
from amalia_edge.runtime.sampling import SamplingParams
from amalia_edge.serve.engine import Engine, GenRequest, NotReadyError, QueueFullError, ServeError
from amalia_edge.serve.metrics import Metrics
from amalia_edge.serve.schemas import REFUSED, ChatCompletionRequest, CompletionRequest

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY = 1024 * 1024  # 1 MiB of JSON: a long chat; larger is refused (413)


@dataclass
class ServerState:
    """What the routes share. ``engine`` is None while the model loads (503)."""

    engine: Engine | None = None
    api_key: str | None = None
    max_body: int = DEFAULT_MAX_BODY
    max_prompt_tokens: int | None = None  # None: the context (per slot) minus one
    load_error: str | None = None
    monitor: Any = None
    metrics: Metrics = field(init=False)
    started: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        self.metrics = Metrics(lambda: self.engine, self.monitor)


class HTTPError(ServeError):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str,
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code)
        self.status = status
        self.type = type


def error_response(exc: ServeError) -> JSONResponse:
    headers = {}
    if isinstance(exc, QueueFullError):
        headers["Retry-After"] = str(exc.retry_after)
    if exc.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    body = {
        "error": {"message": exc.problem, "type": exc.type, "param": exc.param, "code": exc.code}
    }
    return JSONResponse(body, status_code=exc.status, headers=headers)


def _check_auth(state: ServerState, request: Request) -> None:
    if state.api_key is None:
        return
    auth = request.headers.get("authorization", "")
    given = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
    # Constant time: the comparison does not reveal how many leading characters matched.
    if not hmac.compare_digest(given.encode(), state.api_key.encode()):
        raise HTTPError(
            401,
            "missing or wrong API key: send 'Authorization: Bearer <key>'",
            type="invalid_request_error",
            code="invalid_api_key",
        )


async def _read_json(state: ServerState, request: Request) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    too_big = HTTPError(
        413,
        f"the request body is larger than {state.max_body} bytes",
        type="invalid_request_error",
        code="request_too_large",
    )
    if declared is not None and declared.isdigit() and int(declared) > state.max_body:
        raise too_big
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > state.max_body:
            raise too_big
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise HTTPError(
            400, "the request body is not valid JSON", type="invalid_request_error"
        ) from None
    if not isinstance(data, dict):
        raise HTTPError(400, "the request body must be a JSON object", type="invalid_request_error")
    return data


def _engine(state: ServerState) -> Engine:
    if state.engine is None:
        if state.load_error:
            raise NotReadyError(
                f"the model failed to load: {state.load_error}", code="model_load_failed"
            )
        raise NotReadyError("the model is still loading; try again in a few seconds")
    return state.engine


def _unsupported(name: str, message: str) -> HTTPError:
    return HTTPError(
        400, message, type="invalid_request_error", param=name, code="unsupported_parameter"
    )


def _refuse_unsupported(data: dict[str, Any]) -> None:
    for name, why in REFUSED.items():
        value = data.get(name)
        if name == "response_format" and isinstance(value, dict) and value.get("type") == "text":
            continue
        if name == "modalities" and value == ["text"]:
            continue
        if value not in (None, False, [], {}, 0, ""):
            raise _unsupported(name, f"'{name}': {why} by this server")
    n = data.get("n")
    if isinstance(n, int) and n > 1:
        raise _unsupported("n", "'n' > 1 is not supported: send one request per reply")
    best_of = data.get("best_of")
    if isinstance(best_of, int) and best_of > 1:
        raise _unsupported("best_of", "'best_of' > 1 is not supported")


def _validation_error(exc: ValidationError) -> HTTPError:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()))
    return HTTPError(400, f"'{loc}': {err.get('msg')}", type="invalid_request_error", param=loc)


def _check_model(engine: Engine, model: str | None) -> None:
    if model is not None and model != engine.info.model:
        raise HTTPError(
            404,
            f"the model '{model}' does not exist; this server serves '{engine.info.model}'",
            type="invalid_request_error",
            param="model",
            code="model_not_found",
        )


def _sampling(body: Any) -> SamplingParams:
    kw: dict[str, Any] = {}
    for name in ("temperature", "top_p", "seed", "top_k", "min_p", "repeat_penalty", "ignore_eos"):
        v = getattr(body, name)
        if v is not None:
            kw[name] = v
    try:
        return SamplingParams(**kw)
    except AmaliaEdgeError as exc:
        raise HTTPError(400, str(exc), type="invalid_request_error") from None


def _stops(body: Any) -> tuple[str, ...]:
    stop = body.stop
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > 4:
        raise HTTPError(
            400, "'stop': at most 4 sequences", type="invalid_request_error", param="stop"
        )
    return tuple(s for s in stops if s)


def _text_content(i: int, m: Any) -> str:
    if m.content is None:
        return ""
    if isinstance(m.content, str):
        return m.content
    parts = []
    for part in m.content:
        if part.get("type") == "text" and isinstance(part.get("text"), str):
            parts.append(part["text"])
        else:
            raise HTTPError(
                400,
                f"messages[{i}]: content of type '{part.get('type')}' is not supported "
                "(this model reads text only)",
                type="invalid_request_error",
                param=f"messages.{i}.content",
                code="unsupported_content",
            )
    return "".join(parts)


def _messages(body: ChatCompletionRequest) -> list[Message]:
    out: list[Message] = []
    for i, m in enumerate(body.messages):
        if m.role in ("tool", "function"):
            raise HTTPError(
                400,
                f"messages[{i}]: role '{m.role}' is not supported (no tools)",
                type="invalid_request_error",
                param=f"messages.{i}.role",
                code="unsupported_parameter",
            )
        role = "system" if m.role == "developer" else m.role
        out.append(Message(role, _text_content(i, m)))  # type: ignore[arg-type]
    return out


@dataclass
class _Job:
    """A submitted request seen from the event loop: its events arrive in ``queue``."""

    gen: GenRequest
    queue: asyncio.Queue[Event]
    t_received: float
    token_times: list[float] = field(default_factory=list)
    prompt_evaluated: int | None = None  # prompt tokens evaluated (the rest came from the cache)


# How often the event loop collects the engine's events while replies are running.
POLL_S = 0.001
# Polling ticks in a row that find no event before the loop goes back to being woken. Two
# served 4 clients of the 180M model with 2 threads at 148-151 tokens/s where polling every
# POLL_S throughout gave 137-141 (serve_load, Dec 2026, two interleaved rounds); one looked
# worse on the demo model, within its run-to-run swing.
EMPTY_TICKS = 2


class _Relay:
    """Events from the engine thread to the event loop, without a wake-up per token.

    ``call_soon_threadsafe`` for every event makes the decode thread wake the sleeping loop
    thread (a write to the loop's self-pipe and a cross-core wake-up) once per token, a
    visible share of the demo model's decode time on the 2-core test machine at ~2,000
    tokens/s (a development measurement; the kept numbers are serve_load's). So while events
    keep coming, the loop itself collects them every :data:`POLL_S` (a timer on its own core;
    several tokens that arrived together go out in one write) and the engine thread only
    appends to a deque. :data:`EMPTY_TICKS` ticks in a row that find nothing end the polling:
    the next event wakes the loop at once, which polls again. A model whose step takes longer
    than a few ``POLL_S`` is then served by one wake-up and two empty ticks per step instead
    of a tick every ``POLL_S``, each of which probably takes a core from llama.cpp's threads
    for a moment when they run on every core. Every event is delivered, in order, at most
    ``POLL_S`` after the engine produced it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # A weak reference: _relays maps loops to relays weakly, and a relay holding its loop
        # would keep every finished loop (one per test) alive.
        self._loop = weakref.ref(loop)
        self.items: deque[tuple[asyncio.Queue[Event], Event]] = deque()
        self.active = 0  # jobs registered whose Finished has not been delivered yet
        self.polling = False
        self.wake_pending = False
        self.empty = 0  # polling ticks in a row that found nothing
        self.wakes = 0  # wake-ups by the engine thread (tests)
        self.ticks = 0  # polling ticks (tests)

    # engine thread ---------------------------------------------------------------------------
    def put(self, q: asyncio.Queue[Event], ev: Event) -> None:
        self.items.append((q, ev))
        # The loop reads ``items`` after it sets ``polling`` to False, so an event appended
        # while ``polling`` was still True is drained then; one appended later sees False and
        # wakes it.
        if not self.polling and not self.wake_pending:
            self.wake_pending = True
            loop = self._loop()
            # None or RuntimeError: the loop is gone or closed, nobody is listening any more.
            if loop is not None:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._wake)

    # event loop ------------------------------------------------------------------------------
    def register(self) -> None:
        self.active += 1
        self._poll()

    def unregister(self) -> None:
        """A job that was never submitted (refused): it will get no Finished."""
        self.active -= 1

    def _poll(self) -> None:
        if not self.polling and self.active > 0:
            self.polling = True
            self.empty = 0
            asyncio.get_running_loop().call_later(POLL_S, self._tick)

    def _wake(self) -> None:
        self.wakes += 1
        self.wake_pending = False
        self._drain()
        self._poll()

    def _tick(self) -> None:
        self.ticks += 1
        self.empty = 0 if self._drain() else self.empty + 1
        if self.empty < EMPTY_TICKS and self.active > 0:
            asyncio.get_running_loop().call_later(POLL_S, self._tick)
        else:
            self.polling = False
            self._drain()

    def _drain(self) -> int:
        items = self.items
        n = 0
        while items:
            q, ev = items.popleft()
            q.put_nowait(ev)
            n += 1
            if isinstance(ev, Finished):
                self.active -= 1
        return n


_relays: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Relay] = weakref.WeakKeyDictionary()


def _relay() -> _Relay:
    loop = asyncio.get_running_loop()
    relay = _relays.get(loop)
    if relay is None:
        relay = _relays[loop] = _Relay(loop)
    return relay


def _submit(
    engine: Engine,
    ids: list[int],
    sampling: SamplingParams,
    max_tokens: int,
    stop: tuple[str, ...],
    presence: float,
    frequency: float,
    t0: float,
) -> _Job:
    relay = _relay()
    q: asyncio.Queue[Event] = asyncio.Queue()
    put = relay.put

    def sink(ev: Event) -> None:  # engine thread -> event loop
        put(q, ev)

    gen = GenRequest(ids, sampling, max_tokens, sink, stop, presence, frequency)
    relay.register()
    try:
        engine.submit(gen)
    except BaseException:
        relay.unregister()
        raise
    return _Job(gen, q, t0)


FINISH = {"stop": "stop", "stop_string": "stop", "length": "length", "context_full": "length"}


def _amalia(state: ServerState, job: _Job, fin: Finished) -> dict[str, Any]:
    watts, joules = state.metrics.request_energy(fin.t_start, fin.t_end)
    n = fin.completion_tokens
    first = job.token_times[0] if job.token_times else None
    return {
        "ttft_s": None if first is None else round(first - job.t_received, 4),
        "decode_tokens_per_s": round(fin.decode_tps, 2),
        "prompt_tokens_evaluated": job.prompt_evaluated,
        "watts": None if watts is None else round(watts, 3),
        "joules": None if joules is None else round(joules, 4),
        "joules_per_token": None if joules is None or n == 0 else round(joules / n, 5),
    }


def build_app(state: ServerState, *, cors: list[str] | None = None) -> Starlette:
    """The ASGI app over ``state`` (the engine may be set later: 503 until then)."""
    metrics = state.metrics

    def counted(endpoint: str, fn: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def handler(request: Request) -> Response:
            try:
                _check_auth(state, request)
                resp: Response = await fn(request)
            except ServeError as exc:
                resp = error_response(exc)
            except ContextOverflowError as exc:
                resp = error_response(
                    HTTPError(
                        400, str(exc), type="invalid_request_error", code="context_length_exceeded"
                    )
                )
            except AmaliaEdgeError as exc:
                resp = error_response(HTTPError(400, str(exc), type="invalid_request_error"))
            if not isinstance(resp, StreamingResponse):
                metrics.requests.labels(endpoint, str(resp.status_code)).inc()
            return resp

        return handler

    async def models(request: Request) -> Response:
        eng = _engine(state)
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {
                        "id": eng.info.model,
                        "object": "model",
                        "created": int(state.started),
                        "owned_by": "amalia-edge",
                        "meta": {
                            "backend": eng.info.backend,
                            "quant": eng.info.quant,
                            "n_ctx": eng.info.n_ctx,
                            "parallel": eng.info.parallel,
                        },
                    }
                ],
            }
        )

    async def health(request: Request) -> Response:
        eng = state.engine
        if eng is None:
            status = "error" if state.load_error else "loading"
            return JSONResponse({"status": status, "error": state.load_error}, status_code=503)
        i = eng.info
        return JSONResponse(
            {
                "status": "ok",
                "model": i.model,
                "backend": i.backend,
                "quant": i.quant,
                "artifact": i.artifact,
                "n_ctx": i.n_ctx,
                "parallel": i.parallel,
                "batching": i.batching,
                "slots_busy": eng.busy,
                "queue": eng.queued,
            }
        )

    async def metrics_route(request: Request) -> Response:
        body, ctype = metrics.render()
        return Response(body, media_type=ctype)

    def _prompt_limit(eng: Engine) -> int:
        lim = eng.info.n_ctx - 1
        return min(lim, state.max_prompt_tokens) if state.max_prompt_tokens else lim

    def _check_prompt(eng: Engine, ids: list[int]) -> None:
        lim = _prompt_limit(eng)
        if len(ids) > lim:
            raise HTTPError(
                400,
                f"the prompt has {len(ids)} tokens; this server accepts at most {lim}",
                type="invalid_request_error",
                code="context_length_exceeded",
            )

    def _max_tokens(eng: Engine, requested: int | None, n_prompt: int) -> int:
        room = eng.info.n_ctx - n_prompt
        return max(1, min(requested, room) if requested else room)

    def _penalties(eng: Engine, body: Any) -> tuple[float, float]:
        pres, freq = body.presence_penalty or 0.0, body.frequency_penalty or 0.0
        if (pres or freq) and not eng.supports_penalties:
            name = "presence_penalty" if pres else "frequency_penalty"
            raise HTTPError(
                400,
                f"'{name}' is not supported by the {eng.info.backend} backend",
                type="invalid_request_error",
                param=name,
                code="unsupported_parameter",
            )
        return pres, freq

    async def _parse(request: Request, model: Any) -> tuple[Any, Any]:
        """The engine and the validated body of an OpenAI request (errors as OpenAI objects)."""
        eng = _engine(state)
        data = await _read_json(state, request)
        _refuse_unsupported(data)
        try:
            body = model.model_validate(data)
        except ValidationError as exc:
            raise _validation_error(exc) from None
        _check_model(eng, body.model)
        return eng, body

    async def _run(
        request: Request,
        eng: Any,
        body: Any,
        ids: list[int],
        requested: int | None,
        t0: float,
        *,
        chat: bool,
    ) -> Response:
        """Check the prompt, queue the job and answer (streamed or not): one path for both."""
        _check_prompt(eng, ids)
        pres, freq = _penalties(eng, body)
        job = _submit(
            eng,
            ids,
            _sampling(body),
            _max_tokens(eng, requested, len(ids)),
            _stops(body),
            pres,
            freq,
            t0,
        )
        return await _respond(request, job, body, eng, chat=chat)

    async def chat(request: Request) -> Response:
        t0 = time.perf_counter()
        eng, body = await _parse(request, ChatCompletionRequest)
        msgs = _messages(body)
        requested = body.max_completion_tokens or body.max_tokens
        fitted = eng.fit_chat(msgs, requested or eng.info.n_ctx // 4)
        ids = eng.tokenize(fitted.prompt)
        return await _run(request, eng, body, ids, requested, t0, chat=True)

    async def completions(request: Request) -> Response:
        t0 = time.perf_counter()
        eng, body = await _parse(request, CompletionRequest)
        prompt = body.prompt
        if isinstance(prompt, list) and prompt and all(isinstance(p, int) for p in prompt):
            ids = [int(p) for p in prompt]
        elif isinstance(prompt, list):
            if len(prompt) != 1:
                raise HTTPError(
                    400,
                    "'prompt': one prompt per request (a list of one string)",
                    type="invalid_request_error",
                    param="prompt",
                )
            ids = eng.tokenize(str(prompt[0]))
        else:
            ids = eng.tokenize(prompt)
        if not ids:
            raise HTTPError(400, "'prompt' is empty", type="invalid_request_error", param="prompt")
        return await _run(request, eng, body, ids, body.max_tokens, t0, chat=False)

    async def _respond(
        request: Request, job: _Job, body: Any, eng: Engine, *, chat: bool
    ) -> Response:
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        model = eng.info.model
        endpoint = "chat" if chat else "completions"
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(
                _sse(job, rid, created, model, chat, include_usage, endpoint),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        fin = await _wait(request, job)
        if fin is None:  # the client went away
            metrics.requests.labels(endpoint, "499").inc()
            return Response(status_code=499)
        if fin.reason == "error":
            raise HTTPError(500, f"generation failed: {fin.error}", type="server_error")
        metrics.observe(fin, job.token_times, job.t_received)
        usage = _usage(fin)
        reason = FINISH.get(fin.reason, "stop")
        if chat:
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": fin.text},
                "finish_reason": reason,
                "logprobs": None,
            }
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": fin.text, "finish_reason": reason, "logprobs": None}
            obj = "text_completion"
        return JSONResponse(
            {
                "id": rid,
                "object": obj,
                "created": created,
                "model": model,
                "choices": [choice],
                "usage": usage,
                "amalia": _amalia(state, job, fin),
            }
        )

    async def _wait(request: Request, job: _Job) -> Finished | None:
        while True:
            try:
                ev = await asyncio.wait_for(job.queue.get(), timeout=0.5)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    job.gen.cancel.set()
                    return None
                continue
            if isinstance(ev, TokenEvent):
                job.token_times.append(ev.t)
            elif isinstance(ev, PromptProcessed):
                job.prompt_evaluated = ev.n_tokens
            elif isinstance(ev, Finished):
                return ev

    async def _sse(
        job: _Job,
        rid: str,
        created: int,
        model: str,
        chat: bool,
        include_usage: bool,
        endpoint: str,
    ) -> AsyncIterator[str]:
        obj = "chat.completion.chunk" if chat else "text_completion"
        status = "200"

        def chunk(delta_or_text: Any, finish: str | None = None, **extra: Any) -> str:
            if chat:
                choice = {
                    "index": 0,
                    "delta": delta_or_text,
                    "finish_reason": finish,
                    "logprobs": None,
                }
            else:
                choice = {
                    "index": 0,
                    "text": delta_or_text,
                    "finish_reason": finish,
                    "logprobs": None,
                }
            payload = {
                "id": rid,
                "object": obj,
                "created": created,
                "model": model,
                "choices": [choice],
                **extra,
            }
            return "data: " + json.dumps(payload, ensure_ascii=False) + "\n\n"

        # A token's chunk is chunk({"content": text}) / chunk(text) built once with a marker
        # in place of the text, then filled by string concatenation: the same bytes as
        # json.dumps of the whole object, without building and walking a dict per token.
        marker = "\x00amalia-text\x00"
        head, tail = chunk({"content": marker} if chat else marker).split(
            json.dumps(marker, ensure_ascii=False), 1
        )
        dumps = json.dumps
        queue = job.queue
        try:
            if chat:
                yield chunk({"role": "assistant", "content": ""})
            fin: Finished | None = None
            while fin is None:
                # Every event that is already here goes out in one write (one SSE event each).
                ev = await queue.get()
                out: list[str] = []
                while True:
                    if isinstance(ev, TokenEvent):
                        job.token_times.append(ev.t)
                        if ev.text:
                            out.append(head + dumps(ev.text, ensure_ascii=False) + tail)
                    elif isinstance(ev, PromptProcessed):
                        job.prompt_evaluated = ev.n_tokens
                    elif isinstance(ev, Finished):
                        fin = ev
                        break
                    if queue.empty():
                        break
                    ev = queue.get_nowait()
                if out:
                    yield "".join(out)
            if fin.reason == "error":
                status = "500"
                err = {
                    "error": {
                        "message": f"generation failed: {fin.error}",
                        "type": "server_error",
                        "param": None,
                        "code": None,
                    }
                }
                yield "data: " + json.dumps(err) + "\n\n"
            else:
                metrics.observe(fin, job.token_times, job.t_received)
                yield chunk(
                    {} if chat else "",
                    FINISH.get(fin.reason, "stop"),
                    amalia=_amalia(state, job, fin),
                )
                if include_usage:
                    payload = {
                        "id": rid,
                        "object": obj,
                        "created": created,
                        "model": model,
                        "choices": [],
                        "usage": _usage(fin),
                    }
                    yield "data: " + json.dumps(payload) + "\n\n"
            yield "data: [DONE]\n\n"
        except BaseException:  # client disconnected (cancelled): free the slot at once
            status = "499"
            raise
        finally:
            job.gen.cancel.set()
            metrics.requests.labels(endpoint, status).inc()

    async def not_found(request: Request, exc: Exception) -> Response:
        return error_response(
            HTTPError(
                404,
                f"no route {request.method} {request.url.path}",
                type="invalid_request_error",
                code="not_found",
            )
        )

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        return error_response(
            HTTPError(
                405,
                f"{request.method} is not allowed on {request.url.path}",
                type="invalid_request_error",
            )
        )

    async def index(request: Request) -> Response:
        html = (resources.files("amalia_edge.serve") / "static" / "index.html").read_text(
            encoding="utf-8"
        )
        return Response(
            html, media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-cache"}
        )

    from starlette.staticfiles import StaticFiles

    static_dir = str(resources.files("amalia_edge.serve") / "static")
    routes = [
        Route("/", index),
        Route("/health", health),
        Route("/metrics", counted("metrics", metrics_route) if state.api_key else metrics_route),
        Route("/v1/models", counted("models", models)),
        Route("/v1/chat/completions", counted("chat", chat), methods=["POST"]),
        Route("/v1/completions", counted("completions", completions), methods=["POST"]),
        Mount("/static", StaticFiles(directory=static_dir), name="static"),
    ]
    middleware = []
    if cors:
        from starlette.middleware import Middleware
        from starlette.middleware.cors import CORSMiddleware

        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=cors,
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=["Authorization", "Content-Type"],
            )
        )
    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={404: not_found, 405: method_not_allowed},
    )


def _usage(fin: Finished) -> dict[str, int]:
    return {
        "prompt_tokens": fin.prompt_tokens,
        "completion_tokens": fin.completion_tokens,
        "total_tokens": fin.prompt_tokens + fin.completion_tokens,
    }
