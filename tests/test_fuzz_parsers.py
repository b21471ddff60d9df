"""Property-based fuzzing of every parser of untrusted input (issue 12, "make the class
impossible").

For each parser (safetensors header, config.json, tokenizer side files, GGUF header, manifest,
history lines, chat templates, CLI numbers, quantize options) Hypothesis generates hostile
inputs, and every case must end in success or one :class:`AmaliaEdgeError` on one line:
never another exception, never a hang (each case runs under a wall-clock alarm), never a
write outside ``--out``.

The example budget is fixed and the search derandomized, so ``make test`` runs the same cases
every time in well under a minute. ``AMALIA_FUZZ_EXAMPLES=2000 python3 -m pytest
tests/test_fuzz_parsers.py`` (or ``benchmarks/fuzz_long.sh``) searches longer.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amalia_edge.errors import AmaliaEdgeError

BUDGET = int(os.environ.get("AMALIA_FUZZ_EXAMPLES", "0") or 0)
CASE_SECONDS = 20  # per example; a parser that hangs fails here instead of blocking CI


def fuzz(examples: int) -> Any:
    """Hypothesis settings: ``examples`` cases (or the on-demand budget), derandomized."""
    return settings(
        max_examples=BUDGET or examples,
        derandomize=True,
        database=None,
        deadline=None,  # timing is enforced by _alarm, which also catches true hangs
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


@contextlib.contextmanager
def _alarm(seconds: int = CASE_SECONDS) -> Iterator[None]:
    def hang(signum: int, frame: Any) -> None:
        raise TimeoutError(f"a parser ran for more than {seconds} s")

    old = signal.signal(signal.SIGALRM, hang)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def accepts(call: Callable[[], Any]) -> Any:
    """Run ``call``: its result, or None after a one-line AmaliaEdgeError. Anything else fails."""
    with _alarm():
        try:
            return call()
        except AmaliaEdgeError as exc:
            assert "\n" not in str(exc), f"a multi-line error: {exc!r}"
            assert str(exc).strip()
            return None


# -- strategies --------------------------------------------------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
json_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# Whole documents that are not JSON objects, deep nesting, bad bytes.
hostile_bytes = st.one_of(
    st.binary(max_size=64),
    st.integers(1, 200_000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 200_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.sampled_from([b"\xff\xfe{}", b"[]", b"null", b"1e999", b'"x"', b"{", b"9" * 5000]),
)


def mutated(base: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """``base`` with some keys replaced by arbitrary JSON values and some removed."""
    keys = sorted(base)

    def apply(changes: dict[str, Any], drop: list[str]) -> dict[str, Any]:
        doc = {**base, **changes}
        for k in drop:
            doc.pop(k, None)
        return doc

    return st.builds(
        apply,
        st.dictionaries(st.sampled_from(keys), json_values, max_size=3),
        st.lists(st.sampled_from(keys), max_size=2),
    )


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, allow_nan=True).encode()


# -- safetensors header --------------------------------------------------------------------------

_entry = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from(["F32", "F16", "BF16", "I8", "X9"]) | json_values,
        "shape": st.lists(st.integers(-2, 2**40), max_size=4) | json_values,
        "data_offsets": st.lists(st.integers(-2, 2**40), max_size=3) | json_values,
    }
)


@fuzz(120)
@given(
    header=st.dictionaries(st.text(max_size=6), _entry | json_values, max_size=4),
    raw=st.none() | hostile_bytes,
    data=st.binary(max_size=64),
    length=st.none() | st.integers(0, 2**64 - 1),
)
def test_safetensors_header(
    tmp_path_factory: pytest.TempPathFactory,
    header: dict[str, Any],
    raw: bytes | None,
    data: bytes,
    length: int | None,
) -> None:
    from amalia_edge.checkpoint.safetensors import read_header

    body = raw if raw is not None else _dumps(header)
    n = len(body) if length is None else length
    path = tmp_path_factory.mktemp("st") / "model.safetensors"
    path.write_bytes(struct.pack("<Q", n) + body + data)
    accepts(lambda: read_header(path))


# -- config.json ---------------------------------------------------------------------------------

VALID_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 256,
    "max_position_embeddings": 128,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "rope_scaling": None,
}


@fuzz(200)
@given(doc=mutated(VALID_CONFIG) | json_values)
def test_config(doc: Any) -> None:
    from amalia_edge.checkpoint.config import MAX_INT, parse_config

    cfg = accepts(lambda: parse_config(doc, Path("config.json")))
    if cfg is not None:  # what is accepted is usable: finite, positive, in GGUF's range
        for v in (cfg.rms_norm_eps, cfg.rope_theta):
            assert math.isfinite(v) and v > 0
        assert 0 < cfg.max_position_embeddings <= MAX_INT


@fuzz(40)
@given(raw=hostile_bytes)
def test_config_file(tmp_path_factory: pytest.TempPathFactory, raw: bytes) -> None:
    from amalia_edge.checkpoint.config import load_config

    d = tmp_path_factory.mktemp("cfg")
    (d / "config.json").write_bytes(raw)
    accepts(lambda: load_config(d))


# -- tokenizer side files ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Path:
    d = tmp_path_factory.mktemp("tok")
    for f in tiny_checkpoint.iterdir():
        if f.name != "model.safetensors" and f.is_file():
            shutil.copy(f, d / f.name)
    return d


_decoder_entry = st.fixed_dictionaries(
    {"content": st.text(max_size=6) | json_values, "special": st.booleans() | json_values}
)


@fuzz(40)
@given(
    which=st.sampled_from(["tokenizer_config.json", "added_tokens.json"]),
    decoder=st.dictionaries(
        st.integers(-5, 2000).map(str) | st.text(max_size=4),
        _decoder_entry | json_values,
        max_size=3,
    ),
    added=st.dictionaries(st.text(max_size=6), st.integers(-5, 2000) | json_values, max_size=3),
    raw=st.none() | hostile_bytes,
)
def test_tokenizer_side_files(
    tokenizer_dir: Path, which: str, decoder: Any, added: Any, raw: bytes | None
) -> None:
    from amalia_edge.checkpoint.tokenizer import load_vocab

    path = tokenizer_dir / which
    original = path.read_bytes() if path.exists() else None
    try:
        if raw is not None:
            path.write_bytes(raw)
        elif which == "added_tokens.json":
            path.write_bytes(_dumps(added))
        else:
            tc = json.loads(original or b"{}")
            tc["added_tokens_decoder"] = decoder
            path.write_bytes(_dumps(tc))
        vocab_size = 1536 + 8
        vocab = accepts(lambda: load_vocab(tokenizer_dir, vocab_size))
        if vocab is not None:
            assert len(vocab.tokens) == vocab_size
    finally:
        if original is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(original)


# -- GGUF header -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gguf_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    import gguf
    import numpy as np

    path = tmp_path_factory.mktemp("gguf") / "base.gguf"
    w = gguf.GGUFWriter(path, arch="llama")
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_string("tokenizer.chat_template", "{% for m in messages %}{{ m.content }}{% endfor %}")
    w.add_array("tokenizer.ggml.tokens", ["a", "b", "c"])
    w.add_tensor("token_embd.weight", np.zeros((4, 32), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path.read_bytes()


@fuzz(300)
@given(
    flips=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=6),
    cut=st.none() | st.integers(0, 600),
)
def test_gguf_header(
    tmp_path_factory: pytest.TempPathFactory,
    gguf_bytes: bytes,
    flips: list[tuple[int, int]],
    cut: int | None,
) -> None:
    from amalia_edge.runtime.artifacts import resolve_model

    data = bytearray(gguf_bytes)
    for pos, value in flips:
        if pos < len(data):
            data[pos] = value
    if cut is not None:
        del data[cut:]
    path = tmp_path_factory.mktemp("g") / "m.gguf"
    path.write_bytes(bytes(data))
    accepts(lambda: resolve_model(path))


_gguf_value = (
    st.integers(0, 2**32 - 1).map(lambda v: ("u32", v))
    | st.floats(width=32).map(lambda v: ("f32", v))
    | st.text(max_size=8).map(lambda v: ("str", v))
    | st.lists(st.integers(0, 2**31 - 1), max_size=3).map(lambda v: ("arr", v))
)


@fuzz(60)
@given(
    values=st.dictionaries(
        st.sampled_from(
            [
                "general.alignment",
                "llama.block_count",
                "llama.context_length",
                "llama.attention.head_count",
                "general.file_type",
                "general.architecture",
            ]
        ),
        _gguf_value,
        max_size=3,
    ),
    template=st.none() | st.lists(st.deferred(lambda: _fragments), max_size=3).map("".join),
)
def test_gguf_metadata_values(
    tmp_path_factory: pytest.TempPathFactory, values: dict[str, Any], template: str | None
) -> None:
    import gguf
    import numpy as np

    from amalia_edge.runtime.artifacts import resolve_model

    path = tmp_path_factory.mktemp("gm") / "m.gguf"
    w = gguf.GGUFWriter(path, arch="llama")
    for kv in w.kv_data:  # the fuzzed value replaces the writer's own, never duplicates it
        for key in values:
            kv.pop(key, None)
    for key, (kind, value) in values.items():
        add = {"u32": w.add_uint32, "f32": w.add_float32, "str": w.add_string}.get(kind)
        if add is not None:
            add(key, value)
        else:
            w.add_array(key, value)
    if template is not None:
        w.add_string("tokenizer.chat_template", template)
    w.add_tensor("token_embd.weight", np.zeros((4, 32), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    accepts(lambda: resolve_model(path))


# -- manifest --------------------------------------------------------------------------------------

_artifact = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["gguf", "onnx"]) | json_values,
        "quant": st.sampled_from(["F16", "Q8_0"]) | json_values,
        "file": st.sampled_from(["m.gguf", "/etc/passwd", "../x.gguf", "a/../../b", ""])
        | json_values,
        "size": st.integers(-1, 10_000) | json_values,
        "sha256": st.text(max_size=4) | json_values,
    }
)


@fuzz(150)
@given(
    doc=st.fixed_dictionaries(
        {
            "schema": st.integers(-1, 3) | json_values,
            "model": json_values,
            "artifacts": st.lists(_artifact | json_values, max_size=3) | json_values,
        }
    ),
    raw=st.none() | hostile_bytes,
)
def test_manifest(
    tmp_path_factory: pytest.TempPathFactory, gguf_bytes: bytes, doc: Any, raw: bytes | None
) -> None:
    from amalia_edge.runtime.artifacts import resolve_model

    d = tmp_path_factory.mktemp("art")
    (d / "m.gguf").write_bytes(gguf_bytes)
    (d / "manifest.json").write_bytes(raw if raw is not None else _dumps(doc))
    source = accepts(lambda: resolve_model(d))
    if source is not None:
        for art in source.artifacts:  # nothing outside the folder is ever offered
            assert d.resolve() in art.path.resolve().parents


# -- history lines ---------------------------------------------------------------------------------

_record = st.fixed_dictionaries(
    {"type": st.sampled_from(["meta", "message", "truncate", "system", "model", "x"])},
    optional={
        "role": st.sampled_from(["user", "assistant", "system"]) | json_values,
        "content": st.text(max_size=8) | json_values,
        "t": json_values,
        "created": json_values,
        "keep": json_values,
        "stats": json_values,
        "model": json_values,
        "id": json_values,
    },
)


@fuzz(200)
@given(
    records=st.lists(_record | json_values, max_size=6),
    tail=st.binary(max_size=24) | hostile_bytes,
)
def test_history_lines(
    tmp_path_factory: pytest.TempPathFactory, records: list[Any], tail: bytes
) -> None:
    import time

    from amalia_edge.tui.history import ChatMessage, HistoryStore

    d = tmp_path_factory.mktemp("hist")
    meta = {"type": "meta", "id": "c", "created": 1.7e9}
    lines = [json.dumps(r, allow_nan=True).encode() for r in [meta, *records]]
    (d / "c.jsonl").write_bytes(b"\n".join(lines) + b"\n" + tail)
    store = HistoryStore(d)
    with _alarm():
        summaries = store.list()  # never raises: unreadable files are skipped
        for s in summaries:
            time.localtime(s.updated)  # what `chat --list` prints
    conv = accepts(lambda: store.open("c"))
    if conv is not None:
        conv.to_markdown()
        n = len(conv.messages)
        conv.append(ChatMessage("user", "nova"))
        again = store.open("c")
        assert len(again.messages) == n + 1 and again.messages[-1].content == "nova"


# -- chat templates --------------------------------------------------------------------------------


_fragments = st.sampled_from(
    [
        "{{ 1/0 }}",
        "{% for i in range(100000) %}",
        "{% endfor %}",
        "{{ 'x' * 1000000000 }}",
        "{{ 10 ** 100000 }}",
        "{% if %}",
        "{{ messages[9] }}",
        "{{ messages[0]['content'] }}",
        "{{ raise_exception('no') }}",
        "{{ messages|tojson }}",
        "{% for m in messages %}{{ m.role }}{% endfor %}",
        "{{ x.y.z }}",
        "{{ ''.__class__ }}",
        "{%",
        "}}",
        "texto",
    ]
)


@fuzz(150)
@given(parts=st.lists(_fragments, max_size=5))
def test_chat_template(parts: list[str]) -> None:
    from amalia_edge.runtime.chat import Message, render_chat_template

    template = "".join(parts)
    accepts(lambda: render_chat_template(template, [Message("user", "olá")]))


# -- CLI numbers -----------------------------------------------------------------------------------

_NUMERIC = ["--batch", "--threads", "--ctx", "--max-tokens", "--temperature", "--top-p"]
_NUMERIC += ["--min-p", "--repeat-penalty", "--top-k", "--seed"]


class _Loaded(Exception):
    pass


@fuzz(150)
@given(
    option=st.sampled_from(_NUMERIC),
    value=st.sampled_from(["nan", "inf", "-inf", "-1", "0", "1e400", "0x10", "", " 3", "2**8"])
    | st.integers(-(2**70), 2**70).map(str)
    | st.floats().map(str)
    | st.text(max_size=6),
)
def test_cli_numbers(option: str, value: str) -> None:
    import amalia_edge.runtime as runtime
    from amalia_edge.cli import main

    seen: dict[str, Any] = {}

    def load_model(*a: Any, **kw: Any) -> None:
        seen.update(kw)
        raise _Loaded

    real = runtime.load_model
    runtime.load_model = load_model  # type: ignore[assignment]
    try:
        with _alarm():
            try:
                main(["generate", "m.gguf", "Olá", f"{option}={value}"])
            except SystemExit as exc:
                assert exc.code == 2  # argparse's one-line usage error
                return
            except _Loaded:
                pass
    finally:
        runtime.load_model = real  # type: ignore[assignment]
    opts = seen["options"]
    assert opts.n_batch >= 1 and (opts.n_threads is None or opts.n_threads >= 1)
    assert seen["n_ctx"] is None or seen["n_ctx"] >= 1


# -- quantize options: never a write outside --out, nothing left when refused --------------

_types = st.lists(
    st.sampled_from(["f16", "q8_0", "bogus", "IQ2_XXS", "none", "", "q4_k_m", ",", "F32"]),
    max_size=3,
).map(",".join)


@pytest.mark.slow
@fuzz(12)
@given(
    gguf=_types,
    onnx=st.lists(st.sampled_from(["fp16", "bogus", "int4", ""]), max_size=2),
    imatrix=st.sampled_from(["none", "auto", "missing.gguf", "."]),
    threads=st.none() | st.integers(-2, 4),
)
def test_quantize_options(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_checkpoint: Path,
    gguf: str,
    onnx: list[str],
    imatrix: str,
    threads: int | None,
) -> None:
    from amalia_edge.convert.pipeline import run_quantize
    from tests.factory import snapshot_tree

    root = tmp_path_factory.mktemp("q")
    out = root / "out"
    before_root = sorted(p.name for p in root.iterdir())
    before_src = snapshot_tree(tiny_checkpoint)
    imx = str(root) if imatrix == "." else imatrix
    with _alarm(120):
        try:
            run_quantize(
                tiny_checkpoint,
                out,
                gguf or None,
                imatrix=imx,
                onnx_types=onnx,
                threads=threads,
                progress=False,
                calibration=None,
            )
            refused = False
        except AmaliaEdgeError as exc:
            assert "\n" not in str(exc)
            refused = True
    assert snapshot_tree(tiny_checkpoint) == before_src  # the source is never written
    assert sorted(p.name for p in root.iterdir() if p.name != "out") == before_root
    if refused:
        assert not out.exists()  # every bad option is refused before --out is created
    else:
        assert (out / "manifest.json").is_file()
