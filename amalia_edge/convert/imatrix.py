"""European-Portuguese importance matrix, computed the way ``llama-imatrix`` defines it.

What llama.cpp's quantizer consumes (``tools/imatrix/imatrix.cpp``, ``IMatrixCollector``): for
every weight matrix ``W[out, in]`` it multiplies activations with, the per-input-column sum of
squared activations ``in_sum2[j] = Σ_tokens x[t, j]²`` plus ``counts`` = the number of tokens
that went through it. llama-quantize divides the two and weighs each column's rounding error
by the result, so columns that carry large activations on pt-PT text are kept more precise.

This module reproduces llama-imatrix's procedure on the independent numpy reference forward
pass (:class:`amalia_edge.reference.ReferenceModel`):

* the calibration text is tokenized once with the checkpoint's own tokenizer (BOS first when
  the tokenizer adds one), cut into consecutive chunks of ``ctx`` tokens, and the first token
  of every chunk is replaced by BOS (``compute_imatrix``); at least ``2 * ctx`` tokens are
  required, as llama-imatrix requires;
* every ``blk.*`` matmul is collected (q/k/v/o, gate/up/down); ``output.weight`` is not, as
  llama-imatrix skips it without ``--process-output``; the embedding is a row lookup, not a
  matmul, so it never has an entry;
* the file is llama.cpp's GGUF imatrix format: ``general.type = "imatrix"``,
  ``imatrix.datasets`` (string array), ``imatrix.chunk_count``, ``imatrix.chunk_size`` (u32),
  and per tensor ``<gguf name>.in_sum2`` (F32, ggml shape ``[in, 1]``), ``<gguf name>.counts``
  (F32 ``[1, 1]``) and ``<gguf name>.in_sum`` (Σ x, which current llama-imatrix also writes).
  Two extra keys (``amalia_edge.source_fingerprint``, ``amalia_edge.calibration_sha256``) let
  :func:`ensure_imatrix` reuse a file made from the same checkpoint and text.

Reads and memory: :func:`collect` runs the chunks through
:meth:`ReferenceModel.hidden_states_many`, whose outer loop is the layers, so each layer's
weights are read from the checkpoint once for a whole group of chunks (for a 9B BF16 checkpoint
and ~30 chunks that is one ~18 GB pass instead of ~30). One layer is held at a time, in float32
(~0.9 GB for hidden 4096, intermediate ~12k). The group's residual streams stay resident
between layers: per chunk ``ctx × hidden × 4`` bytes, twice while a layer replaces them, plus
its RoPE tables (``2 × ctx × head_dim × 4``); for ctx 512 and hidden 4096 that is ~17 MB per
chunk. Groups are sized so this stays under ``max_group_bytes`` (default
:data:`DEFAULT_GROUP_BYTES`, 1 GiB, i.e. ~60 such chunks per read of the weights); a larger
calibration text is processed in several groups, reading the weights once per group. The
per-chunk temporaries inside a layer (ctx × intermediate activations, heads × ctx² attention
scores) exist for one chunk at a time whatever the group size, and each weight keeps one
float64 accumulator per input column (KBs). The output head is never run (it is not
collected), which also skips the 128k-row vocabulary projection.

The statistics do not depend on the grouping: the hook still sees each chunk's activations
separately, and for every weight they arrive in chunk order, as in a chunk-by-chunk run.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from amalia_edge.errors import ImatrixError
from amalia_edge.safeio import read_regular_bytes

if TYPE_CHECKING:
    from amalia_edge.checkpoint import Checkpoint
    from amalia_edge.convert.quantize import Imatrix

log = logging.getLogger(__name__)

#: The shipped original pt-PT calibration text (news, dialogue, technical, everyday registers).
DEFAULT_CALIBRATION = Path(__file__).resolve().parent.parent / "data" / "calibration_pt.txt"
#: llama-imatrix's default context (``params.n_ctx = 512`` in its main()).
DEFAULT_CTX = 512
#: Budget for the residual streams kept resident across layers by :func:`collect` (bytes).
DEFAULT_GROUP_BYTES = 1 << 30
#: The file :func:`ensure_imatrix` writes into an artifacts directory.
IMATRIX_FILE = "imatrix-pt.gguf"

# GGUF keys: imatrix.cpp LLM_KV_IMATRIX_* and the general.type it sets.
KV_TYPE = "general.type"
KV_DATASETS = "imatrix.datasets"
KV_CHUNK_COUNT = "imatrix.chunk_count"
KV_CHUNK_SIZE = "imatrix.chunk_size"
# Ours, for reuse decisions (llama.cpp ignores unknown keys).
KV_FINGERPRINT = "amalia_edge.source_fingerprint"
KV_CALIBRATION_SHA = "amalia_edge.calibration_sha256"

ProgressFn = Callable[[int, int], None]

_OTHER_MODEL_FIX = "it was made for another model: use --imatrix auto to compute one for this model"


@dataclass
class ImatrixStats:
    """Collected sums, keyed by GGUF tensor name (float64 accumulators)."""

    in_sum2: dict[str, np.ndarray[Any, Any]]
    in_sum: dict[str, np.ndarray[Any, Any]]
    counts: dict[str, int]
    chunk_count: int
    chunk_size: int


def _open(ckpt: Checkpoint | str | os.PathLike[str] | None) -> Checkpoint:
    from amalia_edge.checkpoint import Checkpoint, open_checkpoint

    if isinstance(ckpt, Checkpoint):
        return ckpt
    return open_checkpoint(None if ckpt is None else Path(ckpt))


def read_calibration(path: str | os.PathLike[str] | None = None) -> tuple[str, bytes]:
    """Text and raw bytes of a calibration file (default: the shipped pt-PT text).

    Raises :class:`ImatrixError` for a missing, empty or non-UTF-8 file.
    """
    p = Path(path) if path is not None else DEFAULT_CALIBRATION
    if p.is_dir():
        raise ImatrixError(
            f"calibration text {p} is a directory",
            fix="pass --calibration FILE (one UTF-8 text file), or --imatrix none",
        )
    if not p.exists():
        raise ImatrixError(
            f"calibration text {p} does not exist",
            fix="pass --calibration FILE with European-Portuguese text, or --imatrix none",
        )
    try:
        raw = read_regular_bytes(p, ImatrixError, limit=1 << 30)
    except OSError as exc:
        raise ImatrixError(
            f"cannot read calibration text {p}: {exc.strerror}", fix="check its permissions"
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ImatrixError(
            f"calibration text {p} is not UTF-8 (invalid byte at offset {exc.start})",
            fix="convert it with `iconv -f LATIN1 -t UTF-8` (or re-save it as UTF-8)",
        ) from None
    if not text.strip():
        raise ImatrixError(
            f"calibration text {p} is empty",
            fix="pass --calibration FILE with a few thousand words of pt-PT text",
        )
    return text, raw


def tokenize(ckpt: Checkpoint, text: str) -> list[int]:
    """Token ids of ``text`` with the checkpoint's own tokenizer, BOS first if it adds one.

    SentencePiece (``tokenizer.model``) is preferred: it is a core dependency and is what
    llama.cpp's ``llama`` vocabulary reproduces. A BPE-only checkpoint (``tokenizer.json``)
    needs the ``tokenizers`` package. Special-token text is not parsed, as in llama-imatrix.
    """
    spm_path = ckpt.path / "tokenizer.model"
    json_path = ckpt.path / "tokenizer.json"
    ids: list[int]
    if spm_path.is_file():
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(spm_path))
        ids = list(sp.encode(text))
    elif json_path.is_file():
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise ImatrixError(
                f"{ckpt.path} has only tokenizer.json and the `tokenizers` package is missing",
                fix="pip install tokenizers (or pass --imatrix FILE made by llama-imatrix)",
            ) from None
        ids = list(Tokenizer.from_file(str(json_path)).encode(text, add_special_tokens=False).ids)
    else:
        raise ImatrixError(
            f"{ckpt.path} has no tokenizer.model or tokenizer.json",
            fix="use a complete Hugging Face checkpoint directory",
        )
    bos = ckpt.vocab.bos_id
    if ckpt.vocab.add_bos is not False and bos is not None:
        ids = [bos, *ids]
    return ids


def default_ctx(ckpt: Checkpoint) -> int:
    """llama-imatrix's 512, capped at the model's trained context (the demo model has 256)."""
    return int(min(DEFAULT_CTX, ckpt.config.max_position_embeddings or DEFAULT_CTX))


def make_chunks(
    tokens: list[int], ctx: int, bos: int | None, *, source: str = ""
) -> list[list[int]]:
    """Consecutive ``ctx``-token chunks, each starting with BOS (when the vocabulary has one).

    Raises :class:`ImatrixError` with the number of tokens needed when there are fewer than
    ``2 * ctx`` (llama-imatrix: "you need at least 2*n_ctx tokens").
    """
    if ctx < 16:
        # imatrix.cpp ignores matmuls over fewer than 16 rows; a smaller ctx collects nothing.
        raise ImatrixError(f"imatrix context {ctx} is too small", fix="use a context of 16 or more")
    need = 2 * ctx
    if len(tokens) < need:
        raise ImatrixError(
            f"calibration text{' ' + source if source else ''} is too short: {len(tokens)} tokens, "
            f"need at least {need} for a context of {ctx}",
            fix=f"add about {need - len(tokens)} more tokens of pt-PT text, or use a smaller ctx",
        )
    chunks = []
    for i in range(len(tokens) // ctx):
        chunk = list(tokens[i * ctx : (i + 1) * ctx])
        if bos is not None:
            chunk[0] = bos
        chunks.append(chunk)
    return chunks


def group_size(ckpt: Checkpoint, ctx: int, max_group_bytes: int = DEFAULT_GROUP_BYTES) -> int:
    """How many ``ctx``-token chunks :func:`collect` runs per read of the weights (at least 1).

    Per chunk: its residual stream ``ctx × hidden`` float32 twice (old and new while a layer
    runs) plus its RoPE cos/sin tables ``ctx × head_dim`` float32 each.
    """
    c = ckpt.config
    per_chunk = 4 * ctx * (2 * c.hidden_size + 2 * c.head_dim)
    return max(1, int(max_group_bytes) // max(1, per_chunk))


def collect(
    ckpt: Checkpoint,
    chunks: list[list[int]],
    progress: ProgressFn | None = None,
    *,
    max_group_bytes: int = DEFAULT_GROUP_BYTES,
) -> ImatrixStats:
    """Run the reference forward pass over ``chunks`` and accumulate llama.cpp's statistics.

    Chunks go through :meth:`ReferenceModel.hidden_states_many` in groups of
    :func:`group_size` (``max_group_bytes`` bounds the resident activations, see the module
    docstring), so each layer's weights are read once per group, normally once in all. The
    sums equal those of running the chunks one at a time: each chunk is still an independent
    causal sequence and every weight's activations are accumulated in chunk order.
    ``progress(done, total)`` counts chunks: ``done`` is the work finished so far in
    chunk-equivalents (layer passes of one chunk / number of layers), ``total`` the chunk count.
    """
    from amalia_edge.convert.tensor_names import gguf_name, spec_for
    from amalia_edge.reference import ReferenceModel

    spec = spec_for(ckpt.config.architecture)
    ref = ReferenceModel(ckpt)
    n_layers = int(ckpt.config.num_hidden_layers)
    names: dict[str, str | None] = {}
    sum2: dict[str, np.ndarray[Any, Any]] = {}
    sum1: dict[str, np.ndarray[Any, Any]] = {}
    counts: dict[str, int] = {}
    # Layer passes finished (one per chunk per layer, seen at each layer's last matmul), for
    # progress: with layers as the outer loop no chunk completes before the last layer.
    passes = [0, 0]  # [layer passes, last reported done]

    def on_matmul(hf_name: str, x: np.ndarray[Any, Any]) -> None:
        if hf_name not in names:
            g = gguf_name(spec, hf_name)
            names[hf_name] = g if g is not None and g.startswith("blk.") else None
        g = names[hf_name]
        if g is None:
            return
        x64 = x.astype(np.float64, copy=False)
        if g not in sum2:
            sum2[g] = np.zeros(x.shape[1], dtype=np.float64)
            sum1[g] = np.zeros(x.shape[1], dtype=np.float64)
            counts[g] = 0
        sum2[g] += np.einsum("ti,ti->i", x64, x64)
        sum1[g] += x64.sum(axis=0)
        counts[g] += x.shape[0]
        if progress is not None and hf_name.endswith(".mlp.down_proj.weight"):
            passes[0] += 1
            done = passes[0] // max(1, n_layers)
            if done != passes[1]:
                passes[1] = done
                progress(done, len(chunks))

    ctx = len(chunks[0]) if chunks else 0
    step = group_size(ckpt, max(1, ctx), max_group_bytes)
    for start in range(0, len(chunks), step):
        group = chunks[start : start + step]
        # hidden_states_many: every blk matmul runs, layer by layer for the whole group; the
        # unused output head is skipped.
        ref.hidden_states_many(group, on_matmul=on_matmul)
        log.debug("imatrix: chunks %d-%d/%d", start + 1, start + len(group), len(chunks))
    for g, s in sum2.items():
        if not np.all(np.isfinite(s)):
            raise ImatrixError(
                f"non-finite activations in {g} while computing the importance matrix",
                fix="check the checkpoint's weights (NaN/Inf) or use --imatrix none",
            )
    return ImatrixStats(sum2, sum1, counts, len(chunks), ctx)


def write_imatrix(
    path: str | os.PathLike[str],
    stats: ImatrixStats,
    datasets: list[str],
    extra: dict[str, str] | None = None,
) -> Path:
    """Write ``stats`` as a llama.cpp GGUF imatrix, atomically (temp file + rename)."""
    import gguf

    from amalia_edge.artifacts.atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        w = gguf.GGUFWriter(tmp, arch="imatrix")
        # llama-imatrix writes no general.architecture; GGUFWriter adds one by default.
        for kv in w.kv_data:
            kv.pop(gguf.Keys.General.ARCHITECTURE, None)
        w.add_string(KV_TYPE, "imatrix")
        w.add_array(KV_DATASETS, list(datasets))
        w.add_uint32(KV_CHUNK_COUNT, int(stats.chunk_count))
        w.add_uint32(KV_CHUNK_SIZE, int(stats.chunk_size))
        for k, v in (extra or {}).items():
            w.add_string(k, v)
        for name in sorted(stats.in_sum2):  # imatrix.cpp: deterministic name order
            w.add_tensor(f"{name}.in_sum2", stats.in_sum2[name].astype(np.float32).reshape(1, -1))
            w.add_tensor(
                f"{name}.counts", np.array([[float(stats.counts[name])]], dtype=np.float32)
            )
            w.add_tensor(f"{name}.in_sum", stats.in_sum[name].astype(np.float32).reshape(1, -1))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return path


def _kv_str(reader: Any, key: str) -> str | None:
    f = reader.fields.get(key)
    if f is None:
        return None
    try:
        return str(f.contents())
    except (ValueError, IndexError, UnicodeDecodeError):
        return None


def load_imatrix(path: str | os.PathLike[str]) -> Imatrix:
    """Read a GGUF imatrix (ours or llama-imatrix's) into mean squared activations per column.

    Delegates to :func:`amalia_edge.convert.quantize.load_imatrix`, which normalizes exactly as
    llama-quantize does; raises :class:`ImatrixError` for anything unreadable.
    """
    from amalia_edge.convert.quantize import load_imatrix as _load

    return _load(path)


def validate_imatrix(
    imatrix: Imatrix | str | os.PathLike[str], ckpt: Checkpoint | str | os.PathLike[str] | None
) -> None:
    """Refuse an importance matrix made for another model.

    Every entry must name a 2-D weight of ``ckpt`` (by its GGUF name) and hold one value per
    input column of it. Raises :class:`ImatrixError` naming the first mismatch (in sorted name
    order), or when the matrix covers none of the model's tensors.
    """
    from amalia_edge.convert.tensor_names import gguf_name, spec_for

    imx = imatrix if not isinstance(imatrix, (str, os.PathLike)) else load_imatrix(imatrix)
    model = _open(ckpt)
    spec = spec_for(model.config.architecture)
    in_features: dict[str, int] = {}
    for hf, info in model.tensor_infos.items():
        g = gguf_name(spec, hf)
        if g is not None and len(info.shape) == 2:
            in_features[g] = int(info.shape[1])
    for name in sorted(imx.data):
        if name not in in_features:
            raise ImatrixError(
                f"importance matrix {imx.path.name} has tensor {name}, which model "
                f"{model.path.name} does not have",
                fix=_OTHER_MODEL_FIX,
            )
        n = int(imx.data[name].size)
        if n != in_features[name]:
            raise ImatrixError(
                f"importance matrix {imx.path.name}: {name} has {n} values but the model's tensor "
                f"has {in_features[name]} input columns",
                fix=_OTHER_MODEL_FIX,
            )
    if not imx.data:
        raise ImatrixError(f"importance matrix {imx.path.name} is empty", fix="make it again")


def ensure_imatrix(
    ckpt: Checkpoint | str | os.PathLike[str] | None,
    out_dir: str | os.PathLike[str],
    calibration: str | os.PathLike[str] | None = None,
    ctx: int | None = None,
    progress: ProgressFn | None = None,
    *,
    force: bool = False,
    expect_sha256: str | None = None,
) -> Path:
    """Path of ``<out_dir>/imatrix-pt.gguf`` for ``ckpt`` and ``calibration``, made if needed.

    ``calibration`` defaults to the shipped pt-PT text (:data:`DEFAULT_CALIBRATION`), ``ctx``
    to :func:`default_ctx`. An existing file is reused when its checkpoint fingerprint,
    calibration sha256 and chunk size all match; otherwise it is recomputed and replaced
    atomically. Raises :class:`ImatrixError` for unusable calibration text.

    ``force`` recomputes it regardless. Matching metadata alone is not enough to reuse it:
    the file must also load and fit the model, and when ``expect_sha256`` is given (the
    sha256 the previous manifest recorded for it) its bytes must still have that hash, so a
    damaged file is recomputed instead of silently weighting every later quantization.
    """
    model = _open(ckpt)
    text, raw = read_calibration(calibration)
    cal_sha = hashlib.sha256(raw).hexdigest()
    fingerprint = model.fingerprint()
    n_ctx = int(ctx) if ctx is not None else default_ctx(model)
    out = Path(out_dir) / IMATRIX_FILE
    if out.is_file() and not force:
        try:
            import gguf

            r = gguf.GGUFReader(out)
            same = (
                _kv_str(r, KV_FINGERPRINT) == fingerprint
                and _kv_str(r, KV_CALIBRATION_SHA) == cal_sha
                and _kv_str(r, KV_CHUNK_SIZE) == str(n_ctx)
            )
            if same and expect_sha256 is not None:
                from amalia_edge.artifacts.manifest import sha256_file

                same = sha256_file(out) == expect_sha256
            if same:
                imx = load_imatrix(out)
                validate_imatrix(imx, model)
                same = all(bool(np.all(np.isfinite(v))) for v in imx.data.values())
        except (ValueError, OSError, IndexError, ImatrixError):
            same = False
        if not same:
            log.warning("%s is stale or damaged; computing it again", out)
        if same:
            log.info("reusing importance matrix %s", out)
            return out
    cal_name = Path(calibration).name if calibration is not None else DEFAULT_CALIBRATION.name
    tokens = tokenize(model, text)
    chunks = make_chunks(tokens, n_ctx, model.vocab.bos_id, source=cal_name)
    log.info(
        "imatrix: %d tokens, %d chunks of %d from %s", len(tokens), len(chunks), n_ctx, cal_name
    )
    stats = collect(model, chunks, progress)
    return write_imatrix(
        out, stats, [cal_name], {KV_FINGERPRINT: fingerprint, KV_CALIBRATION_SHA: cal_sha}
    )


__all__ = [
    "DEFAULT_CALIBRATION",
    "DEFAULT_CTX",
    "DEFAULT_GROUP_BYTES",
    "IMATRIX_FILE",
    "ImatrixStats",
    "collect",
    "default_ctx",
    "ensure_imatrix",
    "group_size",
    "load_imatrix",
    "make_chunks",
    "read_calibration",
    "tokenize",
    "validate_imatrix",
    "write_imatrix",
]
