"""``amalia-edge serve`` with real clients: the official ``openai`` package, curl, raw HTTP.

The server runs as a real process on 127.0.0.1 (random port) over the bundled demo model
(F16). Replies at temperature 0 are checked against llama-cpp-python called directly on the
prompt the runtime renders (``Model.fit_chat``, the same template and system prompt as
``amalia-edge generate``). Every load here is bounded: 8 clients × 10 short requests.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
openai = pytest.importorskip("openai", reason="the openai client is not installed")
pytest.importorskip("uvicorn", reason="the serve extra is not installed")

from amalia_edge.runtime import LoadOptions, Message, load_model  # noqa: E402
from tests.serve_server import ServerProcess  # noqa: E402

pytestmark = pytest.mark.slow

KEY = "test-key-0123456789"


@pytest.fixture(scope="module")
def server(demo_artifacts: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(
        demo_artifacts,
        "--quant",
        "F16",
        "--parallel",
        "4",
        "--max-queue",
        "8",
        "--max-body",
        "65536",
    )
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.terminate()


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Any:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def model_id(server: ServerProcess) -> str:
    return str(server.wait_ready()["model"])


@pytest.fixture(scope="module")
def reference(demo_artifacts: Path, server: ServerProcess) -> Any:
    """(prompt or messages, n) -> (text, prompt_tokens, completion_tokens, finish) from
    llama-cpp-python's own greedy loop on the runtime's prompt ids."""
    import llama_cpp

    n_ctx = int(server.wait_ready()["n_ctx"])
    model = load_model(demo_artifacts, quant="F16", n_ctx=n_ctx, options=LoadOptions(n_threads=1))
    llm = model.session.llama
    lock = threading.Lock()

    def ref(prompt: str | list[Message], n: int, **penalties: float) -> tuple[str, int, int, str]:
        with lock:
            text = model.fit_chat(prompt, n).prompt if isinstance(prompt, list) else prompt
            ids = model.session.prompt_ids(text)
            out: list[int] = []
            finish = "length"
            for tok in llm.generate(ids, temp=0.0, reset=True, **penalties):
                if llama_cpp.llama_vocab_is_eog(llm._model.vocab, tok):
                    finish = "stop"
                    break
                out.append(tok)
                if len(out) == n:
                    break
            return llm.detokenize(out).decode("utf-8", "replace"), len(ids), len(out), finish

    yield ref
    model.close()


def test_health_models_and_page(server: ServerProcess, client: Any, model_id: str) -> None:
    health = server.wait_ready()
    assert health["status"] == "ok" and health["backend"] == "llama.cpp"
    assert health["quant"] == "F16" and health["parallel"] == 4 and health["batching"] is True
    models = client.models.list()
    assert [m.id for m in models.data] == [model_id]
    status, page = server.get("/")
    assert status == 200 and b"<html" in page.lower()


def test_chat_matches_llama_cpp(client: Any, model_id: str, reference: Any) -> None:
    msgs = [{"role": "user", "content": "Conta-me uma história sobre Lisboa."}]
    r = client.chat.completions.create(model=model_id, messages=msgs, max_tokens=24, temperature=0)
    text, n_prompt, n_out, finish = reference([Message("user", msgs[0]["content"])], 24)
    assert r.choices[0].message.content == text
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason == finish
    assert r.usage.prompt_tokens == n_prompt and r.usage.completion_tokens == n_out
    assert r.usage.total_tokens == n_prompt + n_out
    assert r.object == "chat.completion" and r.model == model_id


def test_chat_stream_equals_non_stream(client: Any, model_id: str) -> None:
    msgs = [
        {"role": "system", "content": "Responde em português."},
        {"role": "user", "content": "O que é o fado?"},
    ]
    full = client.chat.completions.create(
        model=model_id, messages=msgs, max_completion_tokens=20, temperature=0
    )
    chunks = list(
        client.chat.completions.create(
            model=model_id,
            messages=msgs,
            max_completion_tokens=20,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == full.choices[0].finish_reason and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == full.usage.prompt_tokens
    extra = [c.model_extra.get("amalia") for c in chunks if c.model_extra.get("amalia")]
    assert len(extra) == 1 and extra[0]["ttft_s"] > 0


def test_next_chat_turn_evaluates_only_the_new_tokens(client: Any, model_id: str) -> None:
    msgs = [{"role": "user", "content": "Fala-me do Alentejo e das suas planícies."}]
    r1 = client.chat.completions.create(model=model_id, messages=msgs, max_tokens=8, temperature=0)
    msgs += [
        {"role": "assistant", "content": r1.choices[0].message.content},
        {"role": "user", "content": "E do Algarve?"},
    ]
    r2 = client.chat.completions.create(model=model_id, messages=msgs, max_tokens=8, temperature=0)
    evaluated = r2.model_extra["amalia"]["prompt_tokens_evaluated"]
    assert r1.model_extra["amalia"]["prompt_tokens_evaluated"] <= r1.usage.prompt_tokens
    # The slot still holds the first turn: only the reply's end and the new message are new.
    assert 0 < evaluated < r2.usage.prompt_tokens - r1.usage.prompt_tokens + 8


def test_completions_stream_and_not(client: Any, model_id: str, reference: Any) -> None:
    prompt = "A cidade de Lisboa"
    text, n_prompt, n_out, finish = reference(prompt, 16)
    r = client.completions.create(model=model_id, prompt=prompt, max_tokens=16, temperature=0)
    assert r.choices[0].text == text and r.choices[0].finish_reason == finish
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (n_prompt, n_out)
    chunks = list(
        client.completions.create(
            model=model_id, prompt=prompt, max_tokens=16, temperature=0, stream=True
        )
    )
    assert "".join(c.choices[0].text for c in chunks) == text
    assert chunks[-1].choices[0].finish_reason == finish


def test_sampling_options_are_honoured(client: Any, model_id: str, reference: Any) -> None:
    kw: dict[str, Any] = {"model": model_id, "prompt": "Era uma vez", "max_tokens": 12}
    a = client.completions.create(**kw, temperature=1.0, top_p=0.9, seed=7)
    b = client.completions.create(**kw, temperature=1.0, top_p=0.9, seed=7)
    assert a.choices[0].text == b.choices[0].text  # same seed, same reply
    pen = client.completions.create(
        **kw, temperature=0, presence_penalty=1.5, frequency_penalty=1.0
    )
    # The same penalties sampler as llama-cpp-python's own (last 64 generated tokens).
    ref_text, _, ref_n, _ = reference(
        "Era uma vez", 12, presence_penalty=1.5, frequency_penalty=1.0
    )
    assert (pen.choices[0].text, pen.usage.completion_tokens) == (ref_text, ref_n)
    exact_kw = {**kw, "temperature": 0, "extra_body": {"ignore_eos": True}}
    greedy = client.completions.create(**exact_kw)
    stopped = client.completions.create(**exact_kw, stop=[greedy.choices[0].text[3:6]])
    assert stopped.choices[0].finish_reason == "stop"
    assert greedy.choices[0].text.startswith(stopped.choices[0].text)
    assert len(stopped.choices[0].text) < len(greedy.choices[0].text)
    exact = client.completions.create(**kw, temperature=0, extra_body={"ignore_eos": True})
    assert exact.usage.completion_tokens == 12 and exact.choices[0].finish_reason == "length"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_raw_sse(server: ServerProcess, model_id: str) -> None:
    body = json.dumps(
        {
            "model": model_id,
            "stream": True,
            "max_tokens": 8,
            "temperature": 0,
            "messages": [{"role": "user", "content": "Olá"}],
        }
    )
    out = subprocess.run(
        [
            "curl",
            "-sN",
            "--max-time",
            "30",
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
            "-D",
            "-",
            server.url + "/v1/chat/completions",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    head, _, stream = out.partition("\n\n")  # text mode turned CRLF into LF
    assert head.startswith("HTTP/1.1 200") and "text/event-stream" in head
    events = [e for e in stream.split("\n\n") if e.strip()]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    first = json.loads(events[0][6:])
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"]["role"] == "assistant"
    last = json.loads(events[-2][6:])
    assert last["choices"][0]["finish_reason"] in ("stop", "length")


ERRORS = [
    # (body, status, param or None, words the message must contain)
    (
        {"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]},
        400,
        "tools",
        "tool",
    ),
    ({"messages": [{"role": "user", "content": "x"}], "n": 2}, 400, "n", "n"),
    (
        {"messages": [{"role": "user", "content": "x"}], "logprobs": True},
        400,
        "logprobs",
        "logprobs",
    ),
    (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
                    ],
                }
            ]
        },
        400,
        "messages.0.content",
        "image_url",
    ),
    (
        {"messages": [{"role": "user", "content": "x"}], "temperature": 3},
        400,
        "temperature",
        "temperature",
    ),
    (
        {"messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
        400,
        "max_tokens",
        "max_tokens",
    ),
    ({"messages": []}, 400, "messages", "messages"),
    (
        {"messages": [{"role": "user", "content": "x"}], "stop": ["a", "b", "c", "d", "e"]},
        400,
        "stop",
        "stop",
    ),
    ({"messages": [{"role": "user", "content": "x"}], "model": "gpt-4o"}, 404, "model", "gpt-4o"),
    ({"messages": [{"role": "user", "content": "palavra " * 3000}]}, 400, None, "context"),
]


@pytest.mark.parametrize(("body", "status", "param", "word"), ERRORS)
def test_errors_are_openai_objects(
    server: ServerProcess, body: dict[str, Any], status: int, param: str | None, word: str
) -> None:
    code, _, raw = server.post("/v1/chat/completions", body)
    assert code == status, raw
    err = json.loads(raw)["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["param"] == param and word in err["message"]


def test_error_statuses_seen_by_the_openai_client(client: Any, model_id: str) -> None:
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(
            model=model_id, n=3, messages=[{"role": "user", "content": "x"}]
        )
    assert exc.value.body["param"] == "n"


def test_raw_http_errors(server: ServerProcess) -> None:
    code, _, raw = server.post("/v1/chat/completions", None, raw=b"{not json")
    assert code == 400 and "JSON" in json.loads(raw)["error"]["message"]
    big = json.dumps({"messages": [{"role": "user", "content": "a" * 70_000}]}).encode()
    code, _, raw = server.post("/v1/chat/completions", None, raw=big)
    assert code == 413 and json.loads(raw)["error"]["code"] == "request_too_large"
    code, raw2 = server.get("/v1/nothing")
    assert code == 404 and "error" in json.loads(raw2)
    code, raw2 = server.get("/v1/chat/completions")
    assert code == 405


def test_eight_clients_ten_requests_each(
    server: ServerProcess, model_id: str, reference: Any
) -> None:
    """Every reply complete and its own (each client has its prompt: greedy replies are
    known), none lost; /metrics counts exactly what the clients received."""
    prompts = [
        f"{w} de Portugal"
        for w in ("A cidade", "O rio", "A serra", "O mar", "A praia", "O vinho", "A casa", "O povo")
    ]
    expected = {p: reference(p, 12) for p in prompts}
    before_req = server.metric("amalia_requests_total", 'endpoint="completions",status="200"')
    before_tok = server.metric("amalia_generated_tokens_total")
    before_prompt = server.metric("amalia_prompt_tokens_total")
    results: dict[str, list[tuple[str, int, int]]] = {p: [] for p in prompts}
    errors: list[BaseException] = []

    def worker(i: int, p: str) -> None:
        c = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=60)
        try:
            for k in range(10):
                if k % 2:
                    chunks = list(
                        c.completions.create(
                            model=model_id,
                            prompt=p,
                            max_tokens=12,
                            temperature=0,
                            stream=True,
                            stream_options={"include_usage": True},
                        )
                    )
                    text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
                    u = chunks[-1].usage
                else:
                    r = c.completions.create(model=model_id, prompt=p, max_tokens=12, temperature=0)
                    text, u = r.choices[0].text, r.usage
                results[p].append((text, u.prompt_tokens, u.completion_tokens))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i, p)) for i, p in enumerate(prompts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    total_out = total_in = 0
    for p in prompts:
        text, n_in, n_out, _ = expected[p]
        assert results[p] == [(text, n_in, n_out)] * 10, p
        total_out += 10 * n_out
        total_in += 10 * n_in
    assert (
        server.metric("amalia_requests_total", 'endpoint="completions",status="200"') - before_req
        == 80
    )
    assert server.metric("amalia_generated_tokens_total") - before_tok == total_out
    assert server.metric("amalia_prompt_tokens_total") - before_prompt == total_in
    assert server.metric("amalia_time_to_first_token_seconds_count") >= 80


def _open_stream(server: ServerProcess, body: dict[str, Any]) -> socket.socket:
    data = json.dumps(body).encode()
    s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    s.sendall(
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(data)}\r\n\r\n".encode()
        + data
    )
    got = b""
    while b"data: {" not in got:
        got += s.recv(4096)
    return s


def test_disconnect_mid_stream_frees_the_slot(server: ServerProcess, model_id: str) -> None:
    body = {
        "model": model_id,
        "prompt": "Era uma vez",
        "max_tokens": 100_000,
        "stream": True,
        "temperature": 0,
        "ignore_eos": True,
    }
    s = _open_stream(server, body)
    assert server.wait_ready()["slots_busy"] == 1
    s.close()
    deadline = time.monotonic() + 10
    while server.wait_ready()["slots_busy"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.wait_ready()["slots_busy"] == 0
    assert server.metric("amalia_requests_total", 'endpoint="completions",status="499"') >= 1


# -- a second server: API key, one slot, no queue; stopped with SIGTERM mid-stream -------------


@pytest.fixture(scope="module")
def strict(demo_artifacts: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(
        demo_artifacts,
        "--quant",
        "F16",
        "--parallel",
        "1",
        "--max-queue",
        "0",
        "--shutdown-timeout",
        "20",
        "--max-prompt-tokens",
        "64",
        env={"AMALIA_EDGE_API_KEY": KEY},
    )
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.terminate()


def test_api_key_required(strict: ServerProcess) -> None:
    name = strict.wait_ready()["model"]  # /health stays open for monitoring
    bad = openai.OpenAI(base_url=strict.url + "/v1", api_key="wrong-key-xyz", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    code, _headers, raw = strict.post("/v1/completions", {"prompt": "x"})
    assert code == 401 and json.loads(raw)["error"]["code"] == "invalid_api_key"
    good = openai.OpenAI(base_url=strict.url + "/v1", api_key=KEY, max_retries=0)
    r = good.completions.create(model=name, prompt="Olá", max_tokens=3)
    assert r.usage.completion_tokens >= 1


def test_prompt_token_limit(strict: ServerProcess) -> None:
    name = strict.wait_ready()["model"]
    auth = {"Authorization": f"Bearer {KEY}"}
    code, _, raw = strict.post(
        "/v1/completions", {"model": name, "prompt": "palavra " * 200}, headers=auth
    )
    assert code == 400
    err = json.loads(raw)["error"]
    assert err["code"] == "context_length_exceeded" and "at most 64" in err["message"]


def test_queue_full_is_429_with_retry_after(strict: ServerProcess) -> None:
    name = strict.wait_ready()["model"]
    auth = {"Authorization": f"Bearer {KEY}"}
    body = {
        "model": name,
        "prompt": "Era uma vez",
        "max_tokens": 100_000,
        "stream": True,
        "ignore_eos": True,
    }
    data = json.dumps(body).encode()
    s = socket.create_connection(("127.0.0.1", strict.port), timeout=30)
    s.sendall(
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {KEY}\r\nContent-Length: {len(data)}\r\n\r\n".encode()
        + data
    )
    got = b""
    while b"data: {" not in got:
        got += s.recv(4096)
    try:
        code, headers, raw = strict.post(
            "/v1/completions", {"model": name, "prompt": "x"}, headers=auth
        )
        assert code == 429 and int(headers["retry-after"]) >= 1
        assert json.loads(raw)["error"]["type"] == "rate_limit_error"
    finally:
        s.close()


def test_sigterm_finishes_the_reply_in_flight_then_exits_0(strict: ServerProcess) -> None:
    name = strict.wait_ready()["model"]
    deadline = time.monotonic() + 10
    while strict.wait_ready()["slots_busy"] and time.monotonic() < deadline:
        time.sleep(0.05)
    client = openai.OpenAI(base_url=strict.url + "/v1", api_key=KEY, max_retries=0, timeout=60)
    n = min(400, int(strict.wait_ready()["n_ctx"]) - 16)
    stream = client.completions.create(
        model=name, prompt="Era uma vez", max_tokens=n, stream=True, extra_body={"ignore_eos": True}
    )
    it = iter(stream)
    texts = [next(it).choices[0].text]
    strict.proc.send_signal(signal.SIGTERM)
    for chunk in it:
        if chunk.choices:
            texts.append(chunk.choices[0].text)
    assert chunk.choices[0].finish_reason == "length"  # the reply was completed
    assert strict.proc.wait(30) == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", strict.port), timeout=2)
