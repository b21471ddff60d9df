"""Continuous batching on llama.cpp, proven against llama-cpp-python called directly.

At temperature 0 every sequence decoded in a shared batch (joining mid-flight, prompts split
over steps, a queue past the slots) must produce exactly the tokens ``Llama.generate`` gives
for it alone. The demo model is converted at F16 (the quantized types hit an AMX crash in
llama-cpp-python 0.3.36's CPU wheel on some Xeons, see serve/batch.py).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")

import itertools

from amalia_edge.runtime import LoadOptions, SamplingParams
from amalia_edge.runtime.artifacts import resolve_model
from amalia_edge.runtime.backend import kv_cache_bytes
from amalia_edge.runtime.events import Finished, PromptProcessed, Started, TokenEvent
from amalia_edge.serve.batch import LlamaBatchEngine, choose_parallel
from amalia_edge.serve.engine import GenRequest, QueueFullError

GREEDY = SamplingParams(temperature=0.0)
PROMPTS = [
    "A cidade de Lisboa",
    "O rapaz entrou na casa e",
    "Era uma vez uma menina que vivia numa aldeia perto do rio",
    "No dia seguinte",
    "Quando chegou a noite, o velho pescador",
    "As ruas do Porto",
]


@pytest.fixture(scope="module")
def f16_artifact(demo_artifacts: Path) -> Any:
    src = resolve_model(demo_artifacts)
    return next(a for a in src.usable() if a.kind == "gguf" and a.quant == "F16")


@pytest.fixture(scope="module")
def engine(f16_artifact: Any) -> Any:
    ctx = f16_artifact.shape.n_ctx_train
    eng = LlamaBatchEngine(
        f16_artifact,
        n_ctx=ctx,
        parallel=4,
        options=LoadOptions(n_threads=1, n_batch=16),  # small batches: prompts span steps
        gpu=False,
        max_queue=4,
    )
    eng.start()
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def direct(f16_artifact: Any) -> Any:
    import llama_cpp

    llm = llama_cpp.Llama(
        str(f16_artifact.path),
        n_ctx=f16_artifact.shape.n_ctx_train,
        n_threads=1,
        n_threads_batch=1,
        n_gpu_layers=0,
        verbose=False,
    )
    yield llm
    llm.close()


def direct_greedy(llm: Any, ids: list[int], n: int) -> list[int]:
    import llama_cpp

    out: list[int] = []
    for tok in llm.generate(ids, temp=0.0, reset=True):
        if llama_cpp.llama_vocab_is_eog(llm._model.vocab, tok) or len(out) == n:
            break
        out.append(tok)
    return out


class Collector:
    def __init__(self) -> None:
        self.events: list[Any] = []
        self.done = threading.Event()
        self.first_token = threading.Event()
        self.request: Any = None

    def __call__(self, ev: Any) -> None:
        self.events.append(ev)
        if isinstance(ev, TokenEvent):
            self.first_token.set()
        if isinstance(ev, Finished):
            self.done.set()

    @property
    def finished(self) -> Finished:
        assert self.done.wait(60), "no Finished within 60 s"
        fin = self.events[-1]
        assert isinstance(fin, Finished)
        return fin


def submit(eng: Any, prompt: str | list[int], n: int, **kw: Any) -> Collector:
    ids = eng.tokenize(prompt) if isinstance(prompt, str) else prompt
    c = Collector()
    c.request = GenRequest(ids, kw.pop("sampling", GREEDY), n, c, **kw)
    eng.submit(c.request)
    return c


def test_batched_sequences_equal_single_sequence_greedy(engine: Any, direct: Any) -> None:
    n = 24
    first = [submit(engine, p, n) for p in PROMPTS[:2]]
    assert first[0].first_token.wait(30)  # the others join while these decode
    rest = [submit(engine, p, n) for p in PROMPTS[2:]]  # 6 requests, 4 slots: 2 wait
    steps0 = engine.steps
    for p, c in zip(PROMPTS, first + rest, strict=True):
        fin = c.finished
        ids = engine.tokenize(p)
        assert list(fin.token_ids) == direct_greedy(direct, ids, n), p
        assert fin.prompt_tokens == len(ids)
        kinds = [type(e) for e in c.events]
        assert kinds[0] is Started and kinds[1] is PromptProcessed and kinds[-1] is Finished
        assert "".join(e.text for e in c.events if isinstance(e, TokenEvent)) == fin.text
    # Shared steps: far fewer llama_decode calls than tokens generated.
    total = sum(len(c.finished.token_ids) for c in first + rest)
    assert engine.steps - steps0 < total


def test_next_turn_reuses_the_slot_kv_prefix(engine: Any, direct: Any) -> None:
    ids = engine.tokenize(PROMPTS[4])
    fin1 = submit(engine, ids, 8).finished
    extra = engine.tokenize(" e depois")
    if extra[:1] == ids[:1]:  # drop the BOS the tokenizer adds
        extra = extra[1:]
    follow = ids + list(fin1.token_ids) + extra
    c = submit(engine, follow, 8)
    fin2 = c.finished
    pp = next(e for e in c.events if isinstance(e, PromptProcessed))
    # Only the tokens not already in the slot were evaluated (the prompt minus the
    # previous prompt and reply, give or take the last reply token, which was never fed).
    assert pp.n_tokens <= len(follow) - len(ids)
    assert fin2.prompt_tokens == len(follow)
    assert list(fin2.token_ids) == direct_greedy(direct, follow, 8)


def test_cancel_frees_the_slot_within_a_step(engine: Any) -> None:
    c = submit(engine, PROMPTS[0], 10_000, sampling=SamplingParams(temperature=0, ignore_eos=True))
    assert c.first_token.wait(30)
    c_steps = engine.steps
    c.request.cancel.set()
    fin = c.finished
    assert fin.reason == "cancelled"
    assert engine.steps - c_steps < 5
    assert engine.busy == 0


def test_queue_full_is_refused(f16_artifact: Any) -> None:
    eng = LlamaBatchEngine(
        f16_artifact,
        n_ctx=64,
        parallel=1,
        options=LoadOptions(n_threads=1),
        gpu=False,
        max_queue=1,
    )
    try:
        # Not started: nothing is taken from the queue, so capacity is slots + queue = 2.
        submit(eng, PROMPTS[0], 4)
        submit(eng, PROMPTS[1], 4)
        with pytest.raises(QueueFullError) as exc:
            submit(eng, PROMPTS[2], 4)
        assert exc.value.status == 429 and exc.value.retry_after >= 1
    finally:
        eng.close()


def test_default_parallel_from_memory(f16_artifact: Any) -> None:
    plenty = choose_parallel(f16_artifact, 2048, 64 << 30)
    assert plenty.n == 4 and "cap 4" in plenty.reasons[-1]
    sh = f16_artifact.shape
    per_slot = kv_cache_bytes(sh.n_layers, sh.n_kv_heads, sh.head_dim, 2048)
    tight = choose_parallel(f16_artifact, 2048, int(2.6 * per_slot))
    assert tight.n == 2
    assert choose_parallel(f16_artifact, 2048, 1).n == 1
    assert choose_parallel(f16_artifact, 2048, None).n == 4


def test_serial_engine_serves_onnxruntime_one_request_at_a_time(
    tiny_checkpoint: Path, tmp_path_factory: Any
) -> None:
    """ONNX Runtime has no batched decode: requests queue and run one at a time, with the
    same events and the same tokens as the runtime's own stream."""
    pytest.importorskip("onnxruntime")
    from amalia_edge.convert.pipeline import quantize
    from amalia_edge.runtime import load_model
    from amalia_edge.serve.engine import SerialEngine

    out = tmp_path_factory.mktemp("serve_onnx")
    quantize(
        tiny_checkpoint,
        out,
        ["F16"],
        imatrix="none",
        onnx_types=("fp32",),
        threads=1,
        progress=False,
    )
    model = load_model(out, backend="onnxruntime", n_ctx=128)
    ids = model.session.prompt_ids(PROMPTS[0])
    expected = model.generate(ids, sampling=GREEDY, max_tokens=8)
    eng = SerialEngine(model, max_queue=4)
    assert eng.info.backend == "onnxruntime" and eng.info.parallel == 1
    assert not eng.info.batching and not eng.supports_penalties
    eng.start()
    try:
        cs = [submit(eng, ids, 8) for _ in range(3)]
        for c in cs:
            fin = c.finished
            assert fin.token_ids == expected.token_ids and fin.text == expected.text
        # One at a time: each request started after the previous one finished.
        spans = [(c.events[0].t, c.finished.t_end) for c in cs]
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))
    finally:
        eng.close()
