"""The one decode loop: the sampler, the loop over a scripted stepper, and the contract every
backend must keep (real llama.cpp, real ONNX Runtime, TensorRT with its GPU faked).

The contract runs on a *scripted model*: a real Llama checkpoint (converted by the real
pipeline to GGUF and ONNX) whose weights make the next token a function of the current one
(attention and MLP outputs zeroed, one-hot embeddings, a ``lm_head`` transition table), so
every backend must produce the same, known token sequence, including an end-of-generation
token, and each policy (ignore_eos, stop strings, max_tokens, cancel, context full) has one
expected outcome.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from amalia_edge.errors import AmaliaEdgeError, ContextOverflowError
from amalia_edge.runtime.backend import BackendSession, EventBuilder
from amalia_edge.runtime.decode import ChunkedStepper, check_request, decode, sample_next
from amalia_edge.runtime.events import Finished, PromptProcessed, Started, TokenEvent
from amalia_edge.runtime.sampling import SamplingParams

GREEDY = SamplingParams(temperature=0.0)

# --- the sampler


def test_greedy_is_argmax_and_sampling_is_seeded() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=500).astype(np.float32)
    assert sample_next(logits, GREEDY, [], rng) == int(logits.argmax())
    top1 = SamplingParams(temperature=1.0, top_k=1)
    assert sample_next(logits, top1, [], rng) == int(logits.argmax())
    p = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=3)
    a = [sample_next(logits, p, [], np.random.default_rng(3)) for _ in range(3)]
    assert len(set(a)) == 1  # same seed, same draw
    draws = {sample_next(logits, p, [], rng) for _ in range(50)}
    assert len(draws) > 5


def test_min_p_and_top_p_cut_the_tail() -> None:
    logits = np.array([10.0, 9.5, 0.0, -1.0, -2.0], np.float32)
    rng = np.random.default_rng(0)
    p = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.1)
    assert {sample_next(logits, p, [], rng) for _ in range(200)} == {0, 1}
    p = SamplingParams(temperature=1.0, top_k=0, top_p=0.5, min_p=0.0)
    assert {sample_next(logits, p, [], rng) for _ in range(50)} == {0}


def test_repeat_penalty_demotes_recent_tokens() -> None:
    logits = np.array([2.0, 1.9, 0.0], np.float32)
    p = SamplingParams(temperature=0.0, repeat_penalty=1.5)
    assert sample_next(logits, p, [0], np.random.default_rng(0)) == 1


# --- the loop, with a scripted logits stepper and a byte tokenizer (token id = byte; 0 = EOG)


class Scripted(ChunkedStepper):
    """Logits that pick ``script[k]`` as the k-th generated token."""

    max_seq = 4

    def __init__(self, script: list[int], prompt_len: int = 2) -> None:
        self.script = script
        self.prompt_len = prompt_len
        self.calls: list[tuple[list[int], int]] = []

    def reset(self) -> None:
        self.calls.clear()

    def forward(self, ids: Any, past: int) -> np.ndarray:
        self.calls.append((list(ids), past))
        out = np.zeros(256, np.float32)
        k = past + len(ids) - self.prompt_len
        out[self.script[min(max(k, 0), len(self.script) - 1)]] = 1.0
        return out


def run(
    stepper: ChunkedStepper,
    prompt: list[int],
    *,
    n_ctx: int = 64,
    max_tokens: int = 10,
    stop: tuple[str, ...] = (),
    cancel: threading.Event | None = None,
    sampling: SamplingParams = GREEDY,
) -> list[Any]:
    check_request(prompt, max_tokens, n_ctx)
    eb = EventBuilder("test", "onnx:fp32", n_ctx, prompt, stop, lambda t: bytes([t]))
    return list(
        decode(
            stepper,
            eb,
            prompt,
            is_eog=lambda t: t == 0,
            n_ctx=n_ctx,
            sampling=sampling,
            max_tokens=max_tokens,
            cancel=cancel,
        )
    )


def test_stream_events_order_text_and_chunked_prefill() -> None:
    st = Scripted([ord("o"), ord("l"), ord("a"), 0], prompt_len=10)
    evs = run(st, list(b"ola, mundo"))  # 10 prompt tokens: chunks 4 + 4 + 2
    assert isinstance(evs[0], Started) and isinstance(evs[1], PromptProcessed)
    assert [c[1] for c in st.calls[:3]] == [0, 4, 8]
    toks = [e for e in evs if isinstance(e, TokenEvent)]
    fin = evs[-1]
    assert isinstance(fin, Finished) and fin.reason == "stop"
    assert "".join(t.text for t in toks) == fin.text == "ola"
    assert st.calls[3:] == [([ord("o")], 10), ([ord("l")], 11), ([ord("a")], 12)]


def test_stream_stops_on_stop_string_length_and_full_context() -> None:
    evs = run(Scripted([ord("a"), ord("b"), ord("c")]), [1, 2], stop=("bc",))
    assert evs[-1].reason == "stop_string" and evs[-1].text == "a"
    evs = run(Scripted([ord("z")]), [1, 2], max_tokens=3)
    assert evs[-1].reason == "length" and evs[-1].text == "zzz"
    evs = run(Scripted([ord("z")]), [1, 2], n_ctx=5)
    assert evs[-1].reason == "context_full" and evs[-1].completion_tokens == 3


def test_failed_step_still_ends_with_finished() -> None:
    class Boom(Scripted):
        def forward(self, ids: Any, past: int) -> np.ndarray:
            if past > 0:
                raise RuntimeError("device lost")
            return super().forward(ids, past)

    evs = run(Boom([ord("z")]), [1, 2])
    assert evs[-1].reason == "error" and "device lost" in (evs[-1].error or "")


def test_ignore_eos_keeps_decoding_past_end_of_generation_on_a_logits_stepper() -> None:
    """The bug this loop fixed: the ONNX Runtime / TensorRT loop stopped at EOG regardless."""
    script = [ord("a"), 0, ord("b"), ord("c"), ord("d")]
    evs = run(Scripted(script), [1, 2], max_tokens=5, sampling=SamplingParams(0.0, ignore_eos=True))
    fin = evs[-1]
    assert fin.reason == "length" and fin.completion_tokens == 5
    assert fin.token_ids == (ord("a"), 0, ord("b"), ord("c"), ord("d"))


# --- the contract, for every backend, on a scripted model


def _plain_tokens(tokens: list[bytes], n: int) -> list[int]:
    """Ids of ``n`` vocabulary entries that are plain lower-case words (their text = bytes)."""
    return [i for i, t in enumerate(tokens) if re.fullmatch(rb"[a-z]{3,6}", t)][:n]


@pytest.fixture(scope="module")
def scripted_model(
    make_checkpoint: Any, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, int]]:
    """Artifacts (F32 GGUF + fp32 ONNX) of a checkpoint that maps the current token to the next:
    anything else -> A, A -> EOS, EOS -> B, B -> C, C -> B (so the reply is A, then, past
    EOS, "BCBC...")."""
    pytest.importorskip("llama_cpp")
    pytest.importorskip("onnxruntime")
    from safetensors.numpy import load_file, save_file

    from amalia_edge.checkpoint import open_checkpoint
    from amalia_edge.convert.pipeline import quantize

    root = tmp_path_factory.mktemp("scripted")
    src = make_checkpoint.fresh(root / "ckpt")
    ckpt = open_checkpoint(src)
    a, b, c = _plain_tokens(ckpt.vocab.tokens, 3)
    eos = int(ckpt.vocab.eos_id)
    ids = {"A": a, "B": b, "C": c, "EOS": eos}
    hidden = ckpt.config.hidden_size
    (path,) = sorted(src.glob("*.safetensors"))
    tensors = load_file(str(path))
    vocab = tensors["model.embed_tokens.weight"].shape[0]
    rest = hidden - 1  # the hidden dimension every unscripted token lights up
    slots = {a: 0, b: 1, c: 2, eos: 3}
    nxt = {rest: a, 0: eos, 3: b, 1: c, 2: b}
    embed = np.zeros((vocab, hidden), np.float32)
    embed[:, rest] = 1.0
    for tok, slot in slots.items():
        embed[tok] = 0.0
        embed[tok, slot] = 1.0
    head = np.zeros((vocab, hidden), np.float32)
    for slot, tok in nxt.items():
        head[tok, slot] = 1.0
    for name, t in tensors.items():
        if name.endswith(("o_proj.weight", "down_proj.weight")):
            tensors[name] = np.zeros_like(t)  # every layer adds nothing to the residual
        elif name.endswith("norm.weight"):
            tensors[name] = np.ones_like(t)
    tensors["model.embed_tokens.weight"] = embed
    tensors["lm_head.weight"] = head
    save_file(tensors, str(path), metadata={"format": "pt"})
    out = root / "artifacts"
    quantize(src, out, ["F32"], imatrix="none", onnx_types=("fp32",), threads=2, progress=False)
    return out, ids


N_CTX = 16


@pytest.fixture(params=["llama.cpp", "onnxruntime", "tensorrt"])
def session(
    request: pytest.FixtureRequest,
    scripted_model: tuple[Path, dict[str, int]],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[BackendSession, dict[str, int]]]:
    from amalia_edge.runtime import registry
    from amalia_edge.runtime.artifacts import resolve_model
    from amalia_edge.runtime.backend import LoadOptions

    out, ids = scripted_model
    kind = "gguf" if request.param == "llama.cpp" else "onnx"
    art = next(a for a in resolve_model(out).artifacts if a.kind == kind)
    if request.param == "tensorrt":
        from tests.test_tensorrt_stepper import install_fake_tensorrt

        install_fake_tensorrt(monkeypatch)
    opts = LoadOptions(n_threads=1, gpu=False, n_batch=8)
    sess = registry.get(request.param).load(art, N_CTX, opts)
    yield sess, ids
    sess.close()


def _prompt(ids: dict[str, int], n: int = 3) -> list[int]:
    return [i for i in range(5, 100) if i not in ids.values()][:n]  # unscripted: reply is A...


def _finish(events: list[Any]) -> Finished:
    fin = events[-1]
    assert isinstance(fin, Finished) and fin.error is None
    assert "".join(e.text for e in events if isinstance(e, TokenEvent)) == fin.text
    return fin


def test_contract_stops_at_end_of_generation(session: Any) -> None:
    sess, ids = session
    fin = _finish(list(sess.stream(_prompt(ids), sampling=GREEDY, max_tokens=8)))
    assert fin.reason == "stop" and fin.token_ids == (ids["A"],)


def test_contract_ignore_eos_decodes_exactly_max_tokens(session: Any) -> None:
    sess, ids = session
    sp = SamplingParams(temperature=0.0, ignore_eos=True)
    fin = _finish(list(sess.stream(_prompt(ids), sampling=sp, max_tokens=6)))
    a, b, c, eos = ids["A"], ids["B"], ids["C"], ids["EOS"]
    assert fin.reason == "length" and fin.token_ids == (a, eos, b, c, b, c)


def test_contract_empty_prompt_and_max_tokens_below_one_are_refused(session: Any) -> None:
    sess, ids = session
    with pytest.raises(AmaliaEdgeError, match="empty"):
        sess.stream([], sampling=GREEDY, max_tokens=4)
    with pytest.raises(AmaliaEdgeError, match="max_tokens"):
        sess.stream(_prompt(ids), sampling=GREEDY, max_tokens=0)


def test_contract_max_tokens_one(session: Any) -> None:
    sess, ids = session
    sp = SamplingParams(temperature=0.0, ignore_eos=True)
    fin = _finish(list(sess.stream(_prompt(ids), sampling=sp, max_tokens=1)))
    assert fin.reason == "length" and fin.token_ids == (ids["A"],)


def test_contract_stop_string_across_token_boundaries(session: Any) -> None:
    sess, ids = session
    text_b, text_c = sess.detokenize([ids["B"]]), sess.detokenize([ids["C"]])
    stop = text_b[-1] + text_c[:2]  # ends one token, starts the next
    sp = SamplingParams(temperature=0.0, ignore_eos=True)
    events = list(sess.stream(_prompt(ids), sampling=sp, max_tokens=10, stop=[stop]))
    fin = _finish(events)
    want = sess.detokenize([ids["A"]]) + text_b[:-1]
    assert fin.reason == "stop_string" and fin.text == want
    assert fin.token_ids[-1] == ids["C"]


def test_contract_cancel(session: Any) -> None:
    sess, ids = session
    cancel = threading.Event()
    sp = SamplingParams(temperature=0.0, ignore_eos=True)
    events = []
    for ev in sess.stream(_prompt(ids), sampling=sp, max_tokens=10, cancel=cancel):
        events.append(ev)
        if isinstance(ev, TokenEvent) and ev.index == 1:
            cancel.set()
    fin = _finish(events)
    assert fin.reason == "cancelled" and fin.completion_tokens == 3


def test_contract_context_full(session: Any) -> None:
    sess, ids = session
    sp = SamplingParams(temperature=0.0, ignore_eos=True)
    fin = _finish(list(sess.stream(_prompt(ids, 4), sampling=sp, max_tokens=100)))
    assert fin.reason == "context_full" and fin.completion_tokens == N_CTX - 4
    with pytest.raises(ContextOverflowError):
        sess.stream(_prompt(ids, N_CTX), sampling=sp, max_tokens=4)
