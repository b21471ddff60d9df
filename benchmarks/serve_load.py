#!/usr/bin/env python3
"""``amalia-edge serve`` under load: what the server costs, and what batching buys.

For each model (the bundled demo model; with ``--random`` also a random-weight 180M model
built by ``tests/factory.py`` whose decode is bandwidth-bound like a real model's), at F16,
same threads, in one run:

1. in-process: ``load_model(...).generate`` decode tokens/s (the baseline: no server);
2. our server, one client streaming ``/v1/completions``: decode tokens/s seen by the client,
   and its ratio to (1) (target >= 0.97);
3. our server, 4 concurrent clients (``--parallel 4``): aggregate decode tokens/s and its
   ratio to (2) (target >= 2.5x), p50/p99 TTFT;
4. the same two loads against llama-cpp-python's own server (``python -m llama_cpp.server``,
   which runs one request at a time), when ``llama-cpp-python[server]`` is installed;
5. start-up: process start to the first ``/health`` 200 (to ``/v1/models`` for llama_cpp.server).

Decode tokens/s is (tokens - 1) / (time of the last streamed token - time of the first), as
the client sees it; aggregate over 4 clients is the sum of their (tokens - 1) over the span
from the first client's first token to the last client's last token. Generation is greedy
with ``ignore_eos`` (ours) so every reply has exactly ``--tokens`` tokens; llama_cpp.server
has no ``ignore_eos``, so its replies are counted as they come (the JSON says how many).
Everything is loaded at once and each repetition runs every measurement in turn, so load
from other jobs on a shared machine hits all of them alike; medians over ``--reps``.
Also reported: the batch engine alone in this process (no HTTP), to show where a loss is.
Results: a Markdown table on stdout and ``benchmarks/results/serve_load.json``.

Usage::

    python3 benchmarks/serve_load.py [--random] [--threads 1] [--tokens 128] [--reps 3]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
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

PROMPT = "Era uma vez uma cidade à beira-mar, onde os pescadores"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    while True:
        line = resp.readline()
        if not line:
            break
        if not line.startswith(b"data: {"):
            continue
        obj = json.loads(line[6:])
        if obj.get("usage"):
            usage = obj["usage"]
        ch = obj.get("choices") or []
        if ch and ch[0].get("text"):
            times.append(time.perf_counter())
    conn.close()
    n = usage["completion_tokens"] if usage else len(times)
    return {"t_send": t_send, "times": times, "n": n}


def decode_tps(r: dict[str, Any]) -> float:
    t = r["times"]
    return (r["n"] - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else 0.0


def concurrent(port: int, body: dict[str, Any], clients: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{} for _ in range(clients)]
    barrier = threading.Barrier(clients)

    def run(i: int) -> None:
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
        env = {**os.environ, "PYTHONPATH": str(REPO)}
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


class Direct:
    """In this process: ``Model.generate`` (the baseline) and the batch engine alone (no HTTP:
    splits the server's cost into the engine's and the HTTP path's). Both report
    ``Finished.decode_tps``, stamped as each token is produced."""

    def __init__(self, gguf: Path, n_ctx: int, threads: int, clients: int) -> None:
        from amalia_edge.runtime import LoadOptions, SamplingParams, load_model
        from amalia_edge.runtime.artifacts import resolve_model
        from amalia_edge.runtime.backends.llamacpp import gpu_offload
        from amalia_edge.serve.batch import LlamaBatchEngine

        opts = LoadOptions(n_threads=threads)
        self.sp = SamplingParams(temperature=0.0, ignore_eos=True)
        self.model = load_model(gguf, n_ctx=n_ctx, options=opts)
        art = resolve_model(gguf).usable()[0]
        self.engine = LlamaBatchEngine(
            art, n_ctx=n_ctx, parallel=clients, options=opts, gpu=gpu_offload(opts)
        )
        self.engine.start()
        self.ids = self.engine.tokenize(PROMPT)

    def generate(self, n: int) -> float:
        return float(self.model.generate(PROMPT, sampling=self.sp, max_tokens=n).decode_tps)

    def engine_one(self, n: int) -> float:
        from amalia_edge.runtime.events import Finished
        from amalia_edge.serve.engine import GenRequest

        done = threading.Event()
        box: list[Finished] = []

        def sink(ev: Any) -> None:
            if isinstance(ev, Finished):
                box.append(ev)
                done.set()

        self.engine.submit(GenRequest(list(self.ids), self.sp, n, sink))
        done.wait()
        return float(box[0].decode_tps)

    def close(self) -> None:
        self.engine.close()
        self.model.close()


def bench_model(label: str, gguf: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Everything loaded at once, then each repetition runs every measurement in turn
    (in-process, engine, our server 1 and N clients, llama_cpp.server 1 and N clients), so
    that load from other jobs on a shared machine hits all of them alike."""
    n_ctx, n, reps, clients = args.ctx, args.tokens, args.reps, args.clients
    print(f"\n== {label}: {gguf} (ctx {n_ctx}, {args.threads} threads)", file=sys.stderr)
    res: dict[str, Any] = {
        "model": label,
        "gguf": str(gguf),
        "threads": args.threads,
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
    direct = Direct(gguf, n_ctx, args.threads, clients)
    gen: list[float] = []
    eng: list[float] = []
    o1: list[dict[str, Any]] = []
    on: list[list[dict[str, Any]]] = []
    t1: list[dict[str, Any]] = []
    tn: list[list[dict[str, Any]]] = []
    try:
        direct.generate(8), direct.engine_one(8)  # warm-up
        stream_once(ours.port, {**body, "max_tokens": 8})
        if theirs:
            stream_once(theirs.port, {**theirs_body, "max_tokens": 8})
        for i in range(reps):
            print(f"  repetition {i + 1}/{reps}", file=sys.stderr, flush=True)
            gen.append(direct.generate(n))
            eng.append(direct.engine_one(n))
            o1.append(stream_once(ours.port, body))
            on.append(concurrent(ours.port, body, clients))
            if theirs:
                t1.append(stream_once(theirs.port, theirs_body))
                tn.append(concurrent(theirs.port, theirs_body, clients))
    finally:
        direct.close()
        ours.close()
        if theirs:
            theirs.close()
    res["in_process_tps"] = statistics.median(gen)
    res["engine_tps"] = statistics.median(eng)
    res["amalia"] = summarize(ours.startup_s, o1, on)
    res["llama_cpp_server"] = summarize(theirs.startup_s, t1, tn) if theirs else None
    print(json.dumps(res), file=sys.stderr, flush=True)
    return res


def random_model(tmp: Path, threads: int) -> Path:
    """A random-weight Llama whose decode is bandwidth-bound like a real one: 12 layers of
    EuroLLM-1.7B's width class (hidden 1024, FFN 4096, 16 heads / 4 KV heads), 180M
    parameters, F16 (360 MB read per token). The vocabulary stays the test tokenizer's 1536
    pieces: padded to 128k (``BENCH_0_6B``) almost every sampled token would be an unused
    ``[PAD]`` piece with no text, and a client could not time tokens it never sees."""
    from dataclasses import replace

    from amalia_edge.convert.pipeline import quantize
    from tests.factory import BENCH_0_6B, build_checkpoint

    spec = replace(BENCH_0_6B, extra_vocab=0, num_hidden_layers=12, shards=1)
    ckpt = build_checkpoint(tmp / "ckpt", spec)
    quantize(ckpt, tmp / "art", ["F16"], imatrix="none", threads=threads, progress=False)
    return next((tmp / "art").glob("*F16.gguf"))


def table(results: list[dict[str, Any]]) -> str:
    rows = [
        "| model | server | start-up s | 1 client tok/s | ÷ in-process | "
        f"{results[0]['clients']} clients tok/s | ÷ 1 client | TTFT p50 / p99 s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        base = r["in_process_tps"]
        rows.append(f"| {r['model']} | in-process `generate` | – | {base:.1f} | 1.00 | – | – | – |")
        eng = r["engine_tps"]
        rows.append(
            f"| {r['model']} | batch engine alone (no HTTP) | – | {eng:.1f} | "
            f"{eng / base:.3f} | – | – | – |"
        )
        for key, name in (
            ("amalia", "amalia-edge serve"),
            ("llama_cpp_server", "llama_cpp.server"),
        ):
            s = r.get(key)
            if not s:
                rows.append(f"| {r['model']} | {name} | not installed | | | | | |")
                continue
            rows.append(
                f"| {r['model']} | {name} | {s['startup_s']:.2f} | {s['one_client_tps']:.1f} | "
                f"{s['one_client_tps'] / base:.3f} | {s['n_clients_tps']:.1f} | "
                f"{s['n_clients_tps'] / s['one_client_tps']:.2f}× | "
                f"{s['ttft_p50_s']:.3f} / {s['ttft_p99_s']:.3f} |"
            )
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", help="a .gguf (default: the demo model at F16)")
    ap.add_argument(
        "--random", action="store_true", help="also a random-weight 180M model of realistic speed"
    )
    ap.add_argument("--only-random", action="store_true", help="only the random model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--random-tokens", type=int, default=48)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument(
        "--json", type=Path, default=REPO / "benchmarks" / "results" / "serve_load.json"
    )
    args = ap.parse_args()
    results = []
    if not args.only_random:
        if args.model:
            gguf = Path(args.model)
        else:
            from amalia_edge.runtime import default_model_path

            gguf = next(default_model_path().glob("*F16.gguf"))
        results.append(bench_model("demo" if not args.model else gguf.stem, gguf, args))
    if args.random or args.only_random:
        with tempfile.TemporaryDirectory() as tmp:
            gguf = random_model(Path(tmp), args.threads)
            a = argparse.Namespace(**{**vars(args), "tokens": args.random_tokens})
            results.append(bench_model("random 180M", gguf, a))
    print(table(results))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
