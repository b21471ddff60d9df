#!/usr/bin/env python3
"""``amalia-edge serve`` under load: what the server costs, and what batching buys.

For each model (the bundled demo model at F16; with ``--random`` also a random-weight 180M
model built by ``tests/factory.py`` whose decode is bandwidth-bound like a real model's, in
the ``--random-quants`` types) and each thread layout (``--layouts``), in one run:

1. in-process: ``load_model(...).generate`` decode tokens/s (the baseline: no server), in a
   process of its own (see :class:`Direct` for why);
2. our server, one client streaming ``/v1/completions``: decode tokens/s seen by the client,
   and its ratio to (1) (target >= 0.97);
3. our server, 4 concurrent clients (``--parallel 4``): aggregate decode tokens/s and its
   ratio to (2) (target >= 2.5x), p50/p99 TTFT;
4. the same two loads against llama-cpp-python's own server (``python -m llama_cpp.server``,
   which runs one request at a time), when ``llama-cpp-python[server]`` is installed;
5. start-up: process start to the first ``/health`` 200 (to ``/v1/models`` for llama_cpp.server);
6. the batch engine alone (no HTTP) in a process of its own, 1 and 4 requests: where a loss
   is.

Thread layouts: ``2`` (llama.cpp on both cores; the client and the server's event loop
compete with it), ``1`` (one llama.cpp thread, nothing pinned), ``1p`` (one llama.cpp
thread pinned to CPU 0 -- the server's engine thread, the in-process baseline and engine --
and the clients and the server's event loop pinned to CPU 1: as on an appliance whose
clients are other machines). llama_cpp.server is not pinned (its clients are).

``--ceiling`` measures instead what llama.cpp itself gives: llama-cpp-python's low-level
``llama_decode`` with one token of 1 vs 4 sequences per call, per quant type and thread
count (``benchmarks/results/serve_ceiling.json``). No server can batch better than that.

Decode tokens/s is (tokens - 1) / (time of the last streamed token - time of the first), as
the client sees it; aggregate over 4 clients is the sum of their (tokens - 1) over the span
from the first client's first token to the last client's last token. Generation is greedy
with ``ignore_eos`` (ours) so every reply has exactly ``--tokens`` tokens; llama_cpp.server
has no ``ignore_eos``, so its replies are counted as they come (the JSON says how many).
Everything is loaded at once and each repetition runs every measurement in turn, so load
from other jobs on a shared machine hits all of them alike; medians over ``--reps``.
Results: a Markdown table on stdout and ``benchmarks/results/serve_load.json``.

Usage::

    python3 benchmarks/serve_load.py [--random] [--layouts 1p,1,2] [--tokens 128] [--reps 3]
    python3 benchmarks/serve_load.py --ceiling --random
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# A completion chunk whose "text" is not empty (ours: `"text": "…"`; llama_cpp.server the same).
HAS_TEXT = re.compile(rb'^data: \{.*"text": ?"[^"]')

PROMPT = "Era uma vez uma cidade à beira-mar, onde os pescadores"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


ENGINE_THREAD = "amalia-engine"  # amalia_edge.serve.engine.THREAD_NAME (the OS thread's name)
# --pin: llama.cpp (one thread) on DECODE_CPU, everything else (the client, the server's event
# loop) on OTHER_CPU: as on an appliance whose clients are other machines.
DECODE_CPU, OTHER_CPU = 0, 1


def pin_threads(pid: int | str, name: str, cpu: int, others: int | None) -> bool:
    """Pin ``pid``'s OS thread called ``name`` to ``cpu`` (and its other threads to
    ``others``); True when that thread was found."""
    found = False
    task = Path(f"/proc/{pid}/task")
    for tid in os.listdir(task):
        try:
            comm = (task / tid / "comm").read_text().strip()
        except OSError:
            continue
        if comm == name:
            os.sched_setaffinity(int(tid), {cpu})
            found = True
        elif others is not None:
            os.sched_setaffinity(int(tid), {others})
    return found


def thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) of ``pid``'s threads: the engine's, and all the others
    (the event loop and whatever uvicorn runs) together."""
    tck = os.sysconf("SC_CLK_TCK")
    out = {"engine": 0.0, "other": 0.0}
    task = Path(f"/proc/{pid}/task")
    for tid in os.listdir(task):
        try:
            comm = (task / tid / "comm").read_text().strip()
            fields = (task / tid / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        key = "engine" if comm == ENGINE_THREAD else "other"
        out[key] += (int(fields[11]) + int(fields[12])) / tck
    return out


class on_cpu:
    """Run the calling thread on ``cpu`` (None: leave it) for the ``with`` block."""

    def __init__(self, cpu: int | None) -> None:
        self.cpu = cpu

    def __enter__(self) -> None:
        if self.cpu is not None:
            self.saved = os.sched_getaffinity(0)
            os.sched_setaffinity(0, {self.cpu})

    def __exit__(self, *exc: object) -> None:
        if self.cpu is not None:
            os.sched_setaffinity(0, self.saved)


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 300) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return time.perf_counter() - t0
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{url} not ready in {timeout} s")


def stream_once(port: int, body: dict[str, Any]) -> dict[str, Any]:
    """One streamed completion: send time, each token chunk's arrival, usage."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t_send = time.perf_counter()
    conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    times: list[float] = []
    usage = None
    readline, stamp = resp.readline, time.perf_counter
    while True:
        line = readline()
        if not line:
            break
        # The client shares the 2 cores with the server: it parses only the usage chunk and
        # finds a token chunk (non-empty "text") by its bytes; json.loads of every chunk cost
        # the server's decode 1660 -> 1467 tokens/s on the demo model in one comparison.
        if HAS_TEXT.search(line):
            times.append(stamp())
        elif line.startswith(b"data: {") and b'"usage"' in line:
            obj = json.loads(line[6:])
            if obj.get("usage"):
                usage = obj["usage"]
    conn.close()
    n = usage["completion_tokens"] if usage else len(times)
    return {"t_send": t_send, "times": times, "n": n}


def decode_tps(r: dict[str, Any]) -> float:
    t = r["times"]
    return (r["n"] - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else 0.0


def concurrent(
    port: int, body: dict[str, Any], clients: int, cpu: int | None = None
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{} for _ in range(clients)]
    barrier = threading.Barrier(clients)

    def run(i: int) -> None:
        with on_cpu(cpu):
            barrier.wait()
            out[i] = stream_once(port, body)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def aggregate_tps(rs: list[dict[str, Any]]) -> float:
    if not all(r["times"] for r in rs):
        raise RuntimeError("a client got no tokens")
    first = min(r["times"][0] for r in rs if r["times"])
    last = max(r["times"][-1] for r in rs if r["times"])
    return sum(r["n"] - 1 for r in rs) / (last - first)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))
    return xs[k]


class Server:
    """A server subprocess; ``startup_s`` is process start to the first 200 on ``ready``."""

    def __init__(self, name: str, cmd: list[str], ready: str, port: int) -> None:
        extra = os.environ.get("PYTHONPATH")
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO)] + ([extra] if extra else [])),
        }
        self.port = port
        self.log = open(Path(tempfile.gettempdir()) / f"serve_load_{name}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.startup_s = wait_http(f"http://127.0.0.1:{port}{ready}", self.proc)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)
        self.log.close()


def summarize(
    startup: float, single: list[dict[str, Any]], multi: list[list[dict[str, Any]]]
) -> dict[str, Any]:
    ttfts = [r["times"][0] - r["t_send"] for rs in multi for r in rs if r["times"]]
    return {
        "startup_s": startup,
        "one_client_tps": statistics.median(decode_tps(r) for r in single),
        "one_client_tokens": [r["n"] for r in single],
        "n_clients_tps": statistics.median(aggregate_tps(rs) for rs in multi),
        "n_clients_tokens": [[r["n"] for r in rs] for rs in multi],
        "ttft_p50_s": pct(ttfts, 50),
        "ttft_p99_s": pct(ttfts, 99),
    }


def _direct_child(
    conn: Any, kind: str, gguf: str, n_ctx: int, threads: int, clients: int, cpu: int | None
) -> None:
    """A child process holding one in-process baseline (``kind`` "generate" or "engine") and
    answering ``(n, clients)`` requests with a tokens/s figure, ``None`` to stop."""
    try:
        sys.path.insert(0, str(REPO))
        from amalia_edge.runtime import LoadOptions, SamplingParams, load_model

        opts = LoadOptions(n_threads=threads)
        sp = SamplingParams(temperature=0.0, ignore_eos=True)
        if kind == "generate":
            model = load_model(Path(gguf), n_ctx=n_ctx, options=opts)

            def run(n: int, _c: int) -> float:
                with on_cpu(cpu):
                    return float(model.generate(PROMPT, sampling=sp, max_tokens=n).decode_tps)

            close = model.close
        else:
            from amalia_edge.runtime.artifacts import resolve_model
            from amalia_edge.runtime.backends.llamacpp import gpu_offload
            from amalia_edge.runtime.events import Finished
            from amalia_edge.serve.batch import LlamaBatchEngine
            from amalia_edge.serve.engine import GenRequest

            art = resolve_model(Path(gguf)).usable()[0]
            engine = LlamaBatchEngine(
                art, n_ctx=n_ctx, parallel=clients, options=opts, gpu=gpu_offload(opts)
            )
            engine.start()
            if cpu is not None:
                deadline = time.monotonic() + 10
                while not pin_threads(os.getpid(), ENGINE_THREAD, cpu, None):
                    if time.monotonic() > deadline:
                        raise RuntimeError("the batch engine's thread was not found to pin it")
                    time.sleep(0.01)
            ids = engine.tokenize(PROMPT)

            def run(n: int, c: int) -> float:
                """``c`` requests submitted at once: one's decode tokens/s, or the aggregate
                (sum of tokens - 1 over first token to last token, as for the HTTP clients)."""
                done = threading.Semaphore(0)
                box: list[Finished] = []

                def sink(ev: Any) -> None:
                    if isinstance(ev, Finished):
                        box.append(ev)
                        done.release()

                for _ in range(c):
                    engine.submit(GenRequest(list(ids), sp, n, sink))
                for _ in range(c):
                    done.acquire()
                if c == 1:
                    return float(box[0].decode_tps)
                first = min(f.t_first_token for f in box if f.t_first_token is not None)
                last = max(f.t_end for f in box)
                return sum(f.completion_tokens - 1 for f in box) / (last - first)

            close = engine.close
        conn.send("ready")
        while (msg := conn.recv()) is not None:
            conn.send(run(*msg))
        close()
        conn.send("closed")
    except BaseException as exc:  # reported to the parent, which raises it
        conn.send(f"{type(exc).__name__}: {exc}")


class _Child:
    """One :func:`_direct_child` process and its end of the pipe."""

    def __init__(self, kind: str, *args: Any) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.conn, theirs = ctx.Pipe()
        self.proc = ctx.Process(target=_direct_child, args=(theirs, kind, *args), daemon=True)
        self.proc.start()
        theirs.close()  # the child's end: a child that dies makes recv() fail instead of hang
        try:
            self._expect("ready")
        except RuntimeError:
            self.close()
            raise

    def _recv(self) -> Any:
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            self.proc.join(5)
            raise RuntimeError(
                f"the in-process baseline's child died (exit code {self.proc.exitcode})"
            ) from None

    def _expect(self, word: str) -> None:
        got = self._recv()
        if got != word:
            raise RuntimeError(f"the in-process baseline's child failed: {got}")

    def __call__(self, n: int, clients: int = 1) -> float:
        self.conn.send((n, clients))
        got = self._recv()
        if isinstance(got, str):
            raise RuntimeError(f"the in-process baseline's child failed: {got}")
        return float(got)

    def close(self) -> None:
        """Stop the child; one that already failed or died is only reaped."""
        try:
            if self.proc.is_alive():
                self.conn.send(None)
                self._expect("closed")
        except (OSError, RuntimeError):
            pass  # the error that matters was raised already
        finally:
            self.conn.close()
            self.proc.join(60)
            if self.proc.is_alive():
                self.proc.kill()


class Direct:
    """The in-process figures: ``Model.generate`` (the baseline) and the batch engine alone
    (no HTTP: splits the server's cost into the engine's and the HTTP path's). Both report
    ``Finished.decode_tps``, stamped as each token is produced. ``cpu``: run both on that
    core (the calling thread and the engine's thread).

    Each runs in a process of its own, as `generate` and the server do: llama.cpp's CPU
    backend runs its threads as OpenMP teams, one per calling thread, and two 2-thread teams
    alive in one process (this benchmark's main thread and the engine's) are four threads on
    two cores. Measured on the 2-core machine (Dec 2026, 180M model at Q8_0): `generate` in
    the same process as a batch engine that had run once fell from 66 to 41 tokens/s and
    stayed there, and the engine's single sequence ran at 41 where a process of its own
    gives 67; 35-41 is also what `OMP_WAIT_POLICY=passive` (threads sleep at every barrier
    instead of spinning) gives a single team, so libgomp seems to stop spinning once a
    process holds more OpenMP threads than CPUs (benchmarks/results/serve_load.md)."""

    def __init__(
        self, gguf: Path, n_ctx: int, threads: int, clients: int, cpu: int | None = None
    ) -> None:
        args = (str(gguf), n_ctx, threads, clients, cpu)
        self._gen = _Child("generate", *args)
        try:
            self._engine = _Child("engine", *args)
        except BaseException:
            self._gen.close()
            raise

    def generate(self, n: int) -> float:
        return self._gen(n)

    def engine_run(self, n: int, clients: int) -> float:
        return self._engine(n, clients)

    def close(self) -> None:
        self._engine.close()
        self._gen.close()


def raw_batch_tps(
    gguf: Path, threads: int, steps: int, reps: int, seqs: tuple[int, ...] = (1, 4)
) -> dict[int, float]:
    """The ceiling: llama-cpp-python's low-level API alone, no sampling, no Python per token
    beyond filling the batch. One context of ``max(seqs)`` sequences (non-unified KV, as the
    batch engine makes it); for each ``n`` in ``seqs``, ``steps`` calls of ``llama_decode``
    each carrying one token of ``n`` sequences (logits for every one), timed; decode tokens/s
    = n × steps / seconds, median over ``reps`` interleaved repetitions. Extra buffer types
    as the batch engine sets them."""
    from amalia_edge.runtime.native import import_llama_cpp

    L = import_llama_cpp()
    from llama_cpp import _logger

    from amalia_edge.serve.batch import _build_uses_amx, _cpu_has_amx

    _logger.set_verbose(False)
    L.llama_backend_init()
    mp = L.llama_model_default_params()
    mp.n_gpu_layers = 0
    if _cpu_has_amx() and _build_uses_amx(L):
        mp.use_extra_bufts = False
    model = L.llama_model_load_from_file(str(gguf).encode(), mp)
    cp = L.llama_context_default_params()
    n_max = max(seqs)
    cp.n_ctx = (steps + 8) * n_max
    cp.n_batch = cp.n_ubatch = 64
    cp.n_seq_max = n_max
    cp.kv_unified = False
    cp.n_threads = cp.n_threads_batch = threads
    cp.no_perf = True
    ctx = L.llama_init_from_model(model, cp)
    mem = L.llama_get_memory(ctx)
    batch = L.llama_batch_init(64, 0, 1)

    def step(n: int, pos: int) -> None:
        for i in range(n):
            batch.token[i] = 100 + i
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = i
            batch.logits[i] = True
        batch.n_tokens = n
        if L.llama_decode(ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")

    out: dict[int, list[float]] = {n: [] for n in seqs}
    try:
        for _ in range(reps):
            for n in seqs:
                L.llama_memory_clear(mem, True)
                step(n, 0)
                step(n, 1)  # warm
                t = time.perf_counter()
                for pos in range(2, steps + 2):
                    step(n, pos)
                out[n].append(n * steps / (time.perf_counter() - t))
    finally:
        L.llama_batch_free(batch)
        L.llama_free(ctx)
        L.llama_model_free(model)
    return {n: statistics.median(v) for n, v in out.items()}


def bench_model(label: str, gguf: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Everything loaded at once, then each repetition runs every measurement in turn
    (in-process, engine, our server 1 and N clients, llama_cpp.server 1 and N clients), so
    that load from other jobs on a shared machine hits all of them alike."""
    n_ctx, n, reps, clients = args.ctx, args.tokens, args.reps, args.clients
    pin = bool(args.pin)
    decode_cpu, other_cpu = (DECODE_CPU, OTHER_CPU) if pin else (None, None)
    print(
        f"\n== {label}: {gguf} (ctx {n_ctx}, {args.threads} threads, pinned {pin})",
        file=sys.stderr,
    )
    res: dict[str, Any] = {
        "model": label,
        "gguf": str(gguf),
        "threads": args.threads,
        "pinned": pin,
        "tokens": n,
        "clients": clients,
        "n_ctx": n_ctx,
        "reps": reps,
    }
    body = {
        "prompt": PROMPT,
        "max_tokens": n,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
    }
    theirs_body = {k: v for k, v in body.items() if k not in ("ignore_eos", "stream_options")}
    port = free_port()
    ours = Server(
        "amalia",
        [
            sys.executable,
            "-m",
            "amalia_edge",
            "serve",
            str(gguf),
            "--port",
            str(port),
            "--parallel",
            str(clients),
            "--threads",
            str(args.threads),
            "--ctx",
            str(n_ctx),
        ],
        "/health",
        port,
    )
    if pin and not pin_threads(ours.proc.pid, ENGINE_THREAD, DECODE_CPU, OTHER_CPU):
        ours.close()
        raise RuntimeError("the server's engine thread was not found to pin it")
    theirs: Server | None = None
    try:
        import llama_cpp.server  # noqa: F401

        port = free_port()
        theirs = Server(
            "llama_cpp",
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(gguf),
                "--port",
                str(port),
                "--n_threads",
                str(args.threads),
                "--n_threads_batch",
                str(args.threads),
                "--n_ctx",
                str(n_ctx),
                # by default a new request interrupts the one streaming (the other clients would
                # get nothing): queue them instead, one at a time
                "--interrupt_requests",
                "False",
            ],
            "/v1/models",
            port,
        )
    except ImportError:
        pass
    direct: Direct | None = None
    # the server's CPU per generated token, by thread, averaged over the repetitions
    cpu_us = {"1": {"engine": 0.0, "other": 0.0}, "n": {"engine": 0.0, "other": 0.0}}
    gen: list[float] = []
    eng: list[float] = []
    engn: list[float] = []
    o1: list[dict[str, Any]] = []
    on: list[list[dict[str, Any]]] = []
    t1: list[dict[str, Any]] = []
    tn: list[list[dict[str, Any]]] = []
    try:
        direct = Direct(gguf, n_ctx, args.threads, clients, decode_cpu)
        direct.generate(8), direct.engine_run(8, 1)  # warm-up
        with on_cpu(other_cpu):
            stream_once(ours.port, {**body, "max_tokens": 8})
            if theirs:
                stream_once(theirs.port, {**theirs_body, "max_tokens": 8})
        for i in range(reps):
            print(f"  repetition {i + 1}/{reps}", file=sys.stderr, flush=True)
            gen.append(direct.generate(n))
            eng.append(direct.engine_run(n, 1))
            engn.append(direct.engine_run(n, clients))
            c0 = thread_cpu_s(ours.proc.pid)
            with on_cpu(other_cpu):
                o1.append(stream_once(ours.port, body))
            c1 = thread_cpu_s(ours.proc.pid)
            on.append(concurrent(ours.port, body, clients, other_cpu))
            c2 = thread_cpu_s(ours.proc.pid)
            for key, a, b, k in (
                ("1", c0, c1, o1[-1]["n"]),
                ("n", c1, c2, sum(r["n"] for r in on[-1])),
            ):
                for part in ("engine", "other"):
                    cpu_us[key][part] += (b[part] - a[part]) * 1e6 / k / reps
            if theirs:
                with on_cpu(other_cpu):
                    t1.append(stream_once(theirs.port, theirs_body))
                tn.append(concurrent(theirs.port, theirs_body, clients, other_cpu))
    finally:
        try:
            if direct is not None:
                direct.close()
        finally:
            ours.close()
            if theirs:
                theirs.close()
    res["loadavg_1m"] = os.getloadavg()[0]  # other jobs on a shared machine
    res["in_process_tps"] = statistics.median(gen)
    res["engine_tps"] = statistics.median(eng)
    res["engine_n_tps"] = statistics.median(engn)
    res["amalia"] = summarize(ours.startup_s, o1, on)
    # /proc clock ticks are 10 ms: over a few hundred tokens, about ±10 us per token
    res["amalia"]["cpu_us_per_token"] = {
        "one_client": cpu_us["1"],
        "n_clients": cpu_us["n"],
    }
    res["llama_cpp_server"] = summarize(theirs.startup_s, t1, tn) if theirs else None
    print(json.dumps(res), file=sys.stderr, flush=True)
    return res


def random_model(tmp: Path, threads: int, quants: list[str]) -> dict[str, Path]:
    """A random-weight Llama whose decode is bandwidth-bound like a real one: 12 layers of
    EuroLLM-1.7B's width class (hidden 1024, FFN 4096, 16 heads / 4 KV heads), 180M
    parameters (360 MB read per token at F16). The vocabulary stays the test tokenizer's 1536
    pieces: padded to 128k (``BENCH_0_6B``) almost every sampled token would be an unused
    ``[PAD]`` piece with no text, and a client could not time tokens it never sees."""
    from dataclasses import replace

    from amalia_edge.convert.pipeline import quantize
    from tests.factory import BENCH_0_6B, build_checkpoint

    spec = replace(BENCH_0_6B, extra_vocab=0, num_hidden_layers=12, shards=1)
    ckpt = build_checkpoint(tmp / "ckpt", spec)
    quantize(ckpt, tmp / "art", quants, imatrix="none", threads=threads, progress=False)
    return {q: next((tmp / "art").glob(f"*-{q}.gguf")) for q in quants}


def table(results: list[dict[str, Any]]) -> str:
    rows = [
        "| model | threads, pinned | server | start-up s | 1 client tok/s | ÷ in-process | "
        f"{results[0]['clients']} clients tok/s | ÷ 1 client | TTFT p50 / p99 s |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        m = f"{r['model']} | {r['threads']}, {'pinned' if r.get('pinned') else 'not pinned'}"
        base = r["in_process_tps"]
        rows.append(f"| {m} | in-process `generate` | – | {base:.1f} | 1.00 | – | – | – |")
        eng, engn = r["engine_tps"], r.get("engine_n_tps")
        rows.append(
            f"| {m} | batch engine alone (no HTTP) | – | {eng:.1f} | {eng / base:.3f} | "
            + (f"{engn:.1f} | {engn / eng:.2f}× | – |" if engn else "– | – | – |")
        )
        for key, name in (
            ("amalia", "amalia-edge serve"),
            ("llama_cpp_server", "llama_cpp.server"),
        ):
            s = r.get(key)
            if not s:
                rows.append(f"| {m} | {name} | not installed | | | | | |")
                continue
            rows.append(
                f"| {m} | {name} | {s['startup_s']:.2f} | {s['one_client_tps']:.1f} | "
                f"{s['one_client_tps'] / base:.3f} | {s['n_clients_tps']:.1f} | "
                f"{s['n_clients_tps'] / s['one_client_tps']:.2f}× | "
                f"{s['ttft_p50_s']:.3f} / {s['ttft_p99_s']:.3f} |"
            )
    return "\n".join(rows)


def ceiling_table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| model | quant | threads | raw 1 seq tok/s | raw 4 seqs tok/s | ÷ 1 seq |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        out.append(
            f"| {r['model']} | {r['quant']} | {r['threads']} | {r['one_seq_tps']:.1f} | "
            f"{r['n_seqs_tps']:.1f} | {r['n_seqs_tps'] / r['one_seq_tps']:.2f}× |"
        )
    return "\n".join(out)


def ceiling(models: dict[str, dict[str, Path]], args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for label, by_quant in models.items():
        steps = args.ceiling_steps if label == "demo" else args.ceiling_steps // 4
        for quant, gguf in by_quant.items():
            for threads in args.ceiling_threads:
                print(f"  ceiling {label} {quant} {threads} threads", file=sys.stderr, flush=True)
                tps = raw_batch_tps(gguf, threads, steps, args.reps, (1, args.clients))
                rows.append(
                    {
                        "model": label,
                        "quant": quant,
                        "threads": threads,
                        "steps": steps,
                        "one_seq_tps": tps[1],
                        "n_seqs_tps": tps[args.clients],
                        "reps": args.reps,
                        "loadavg_1m": os.getloadavg()[0],  # other jobs on a shared machine
                    }
                )
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", help="a .gguf (default: the demo model at F16)")
    ap.add_argument(
        "--random", action="store_true", help="also a random-weight 180M model of realistic speed"
    )
    ap.add_argument("--only-random", action="store_true", help="only the random model")
    ap.add_argument(
        "--random-quants",
        default="F16,Q8_0,Q4_0,Q4_K_M",
        help="comma list of quant types of the random model to serve (default "
        "F16,Q8_0,Q4_0,Q4_K_M: on an x86 CPU llama.cpp batches Q4_0 best, Q4_K_M worst, see "
        "--ceiling)",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--pin",
        action="store_true",
        help=f"(with --threads 1) llama.cpp's thread (server, baseline and engine) on CPU "
        f"{DECODE_CPU}, the clients and the server's event loop on CPU {OTHER_CPU}",
    )
    ap.add_argument(
        "--layouts",
        default="1p,1,2",
        help="comma list of thread layouts to run in turn: N (N threads) or 1p (1 thread, "
        "pinned as --pin); default 1p,1,2; '' for --threads/--pin alone",
    )
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--random-tokens", type=int, default=48)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument(
        "--ceiling",
        action="store_true",
        help="instead: raw llama_decode of 1 vs --clients sequences per call, per quant type "
        "(demo F16/Q8_0/Q4_K_M; random model F16/Q8_0/Q4_0/Q4_K_M) and thread count",
    )
    ap.add_argument(
        "--ceiling-threads", type=lambda v: [int(x) for x in v.split(",")], default=[1, 2]
    )
    ap.add_argument("--ceiling-steps", type=int, default=192)
    ap.add_argument("--json", type=Path, default=None, help="default: benchmarks/results/")
    args = ap.parse_args()
    if args.ceiling:
        from amalia_edge.runtime import default_model_path

        demo_dir = default_model_path()
        with tempfile.TemporaryDirectory() as tmp:
            models: dict[str, dict[str, Path]] = {}
            if not args.only_random:
                models["demo"] = {
                    q: next(demo_dir.glob(f"*-{q}.gguf")) for q in ("F16", "Q8_0", "Q4_K_M")
                }
            if args.random or args.only_random:
                models["random 180M"] = random_model(
                    Path(tmp), 2, ["F16", "Q8_0", "Q4_0", "Q4_K_M"]
                )
            rows = ceiling(models, args)
        print(ceiling_table(rows))
        out = args.json or REPO / "benchmarks" / "results" / "serve_ceiling.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
        return 0
    # Each layout: (threads, pinned). --layouts 1p,1,2 runs them all in one invocation.
    layouts = [(args.threads, bool(args.pin))]
    if args.layouts:
        layouts = [(int(x.rstrip("p")), x.endswith("p")) for x in args.layouts.split(",")]
    for threads, pin in layouts:
        if pin and threads != 1:
            ap.error("pinning needs 1 thread (llama.cpp on one core, the rest on the other)")
        if pin and len(os.sched_getaffinity(0)) < 2:
            ap.error("pinning needs 2 CPUs")
    results = []
    if not args.only_random:
        if args.model:
            gguf = Path(args.model)
        else:
            from amalia_edge.runtime import default_model_path

            gguf = next(default_model_path().glob("*F16.gguf"))
        label = "demo F16" if not args.model else gguf.stem
        for threads, pin in layouts:
            a = argparse.Namespace(**{**vars(args), "threads": threads, "pin": pin})
            results.append(bench_model(label, gguf, a))
    if args.random or args.only_random:
        with tempfile.TemporaryDirectory() as tmp:
            quants = [q.strip() for q in args.random_quants.split(",") if q.strip()]
            ggufs = random_model(Path(tmp), 2, quants)
            for q, gguf in ggufs.items():
                for threads, pin in layouts:
                    a = argparse.Namespace(
                        **{
                            **vars(args),
                            "tokens": args.random_tokens,
                            "threads": threads,
                            "pin": pin,
                        }
                    )
                    results.append(bench_model(f"random 180M {q}", gguf, a))
    print(table(results))
    out = args.json or REPO / "benchmarks" / "results" / "serve_load.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
