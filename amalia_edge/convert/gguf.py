"""Write a Hugging Face checkpoint as GGUF (F32, F16, BF16 or Q8_0), streamed tensor by tensor.

The file is what llama.cpp's ``convert_hf_to_gguf.py`` writes for the same checkpoint
(``LlamaModel``): the same ``general.*``, ``llama.*`` and ``tokenizer.ggml.*`` keys, the same
tensor names (:mod:`amalia_edge.convert.tensor_names`), Q/K rows permuted back to the order
llama.cpp's rope expects, 1-D tensors and ``*_norm.weight`` in F32, Q8_0 falling back to F16
for rows that are not a multiple of 32, and ``rope_freqs.weight`` for llama3 rope scaling.

Memory: gguf-py's ``GGUFWriter`` lays out the header, key/values and tensor infos (it only
needs shapes and sizes), then tensor data is read, converted and written in row blocks of
about :data:`CHUNK_BYTES`, so peak memory is a few chunks, not the model, and not even one
whole tensor (except Q/K, which are permuted whole; they are hidden × hidden at most).

The file appears under its final name only when complete (:mod:`amalia_edge.artifacts.atomic`).
"""

from __future__ import annotations

import logging
import math
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from amalia_edge.artifacts.atomic import atomic_open
from amalia_edge.convert import tensor_names
from amalia_edge.errors import CheckpointError, ConversionError, QuantTypeError

if TYPE_CHECKING:
    from amalia_edge.checkpoint import Checkpoint

log = logging.getLogger(__name__)

# Rows are converted in blocks of about this many float32 bytes (bounded memory, big writes).
CHUNK_BYTES = 64 << 20

# The out types this writer produces directly; the rest come from llama.cpp's quantizer.
# Values: (gguf.LlamaFileType name, gguf.GGMLQuantizationType name of the 2-D weights).
# Source: convert_hf_to_gguf.py --outtype choices and ModelBase.prepare_tensors.
OUT_TYPES: dict[str, tuple[str, str]] = {
    "F32": ("ALL_F32", "F32"),
    "F16": ("MOSTLY_F16", "F16"),
    "BF16": ("MOSTLY_BF16", "BF16"),
    "Q8_0": ("MOSTLY_Q8_0", "Q8_0"),
}

# Keys we write that llama.cpp's convert_hf_to_gguf.py (llama-cpp-python 0.3.36) does not, on
# purpose; everything else equals its output (tests/test_parity_converter.py). key -> reason.
INTENTIONAL_ADDITIONS: dict[str, str] = {
    "tokenizer.ggml.eot_token_id": "generation_config.json's chat stop token (<|im_end|> for "
    "ChatML models) when it differs from eos: llama.cpp ends a turn at EOT tokens, so chat "
    "stops there instead of running on",
    "tokenizer.ggml.add_space_prefix": "only for a tokenizer.json-only Llama tokenizer that "
    "does not prepend '▁' (and whose tokenizer_config.json does not say add_prefix_space): "
    "llama.cpp would otherwise assume true and add a space before the first word",
}

ProgressFn = Callable[[int, int, str], None]  # (tensors done, tensor count, current GGUF name)


@dataclass(frozen=True)
class GGUFResult:
    """What :func:`write_gguf` wrote."""

    path: Path
    out_type: str
    size: int
    params: int
    tensors: int


@dataclass
class _Planned:
    gguf_name: str
    shape: tuple[int, ...]  # numpy (row-major) order, as in the checkpoint
    qtype: Any  # gguf.GGMLQuantizationType
    nbytes: int
    hf_name: str | None  # None for generated tensors (rope_freqs)
    permute_heads: int | None = None  # Q/K: heads to un-permute over
    data: np.ndarray[Any, Any] | None = None  # generated tensors only


def _tensor_nbytes(shape: tuple[int, ...], qtype: Any) -> int:
    import gguf

    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    n = math.prod(shape)
    return n // block * type_size


def llama3_rope_factors(config: Any) -> np.ndarray[Any, Any]:
    """Per-frequency llama3 rope scaling factors (the ``rope_freqs.weight`` tensor).

    Same formula as convert_hf_to_gguf.py ``LlamaModel.generate_extra_tensors``.
    """
    f32 = np.float32
    rs = config.rope_scaling or {}
    dim = config.head_dim
    # float32 throughout, as the torch original: the factors then match it to the last bit.
    # The power is taken in float64 and rounded once: torch's float32 pow is correctly rounded
    # there, numpy's is not (1 ulp off for 7 of 32 exponents at theta 500000, head_dim 64).
    exps = np.arange(0, dim, 2, dtype=f32) / f32(dim)
    powers = (np.float64(f32(config.rope_theta)) ** exps.astype(np.float64)).astype(f32)
    freqs = f32(1.0) / powers
    factor = float(rs.get("factor", 8.0))
    low = float(rs.get("low_freq_factor", 1.0))
    high = float(rs.get("high_freq_factor", 4.0))
    old_ctx = float(rs.get("original_max_position_embeddings", 8192))
    low_wavelen = old_ctx / low
    high_wavelen = old_ctx / high
    out: list[Any] = []
    for freq in freqs:
        wavelen = f32(2 * math.pi) / freq
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (f32(old_ctx) / wavelen - f32(low)) / f32(high - low)
            out.append(f32(1.0) / ((f32(1.0) - smooth) / f32(factor) + smooth))
    return np.asarray(out, dtype=np.float32)


def _choose_qtype(gguf_name: str, shape: tuple[int, ...], out_type: str) -> Any:
    """convert_hf_to_gguf.py ModelBase.prepare_tensors: norms, 1-D and non-weights stay F32;
    Q8_0 needs rows that are a multiple of its 32-wide block, else F16 (its QuantError path)."""
    import gguf

    q = gguf.GGMLQuantizationType
    if len(shape) <= 1 or gguf_name.endswith("_norm.weight") or not gguf_name.endswith(".weight"):
        return q.F32
    target = q[OUT_TYPES[out_type][1]]
    if target == q.Q8_0 and shape[-1] % gguf.GGML_QUANT_SIZES[q.Q8_0][0] != 0:
        log.warning("%s: row size %d is not a multiple of 32, writing F16", gguf_name, shape[-1])
        return q.F16
    return target


def plan(ckpt: Checkpoint, out_type: str) -> list[_Planned]:
    """Every tensor the GGUF will hold, with its name, type and size, in checkpoint order."""
    import gguf

    out_type = out_type.upper()
    if out_type not in OUT_TYPES:
        raise QuantTypeError(
            f"the GGUF writer cannot write {out_type!r} directly",
            fix=f"use one of {', '.join(OUT_TYPES)} (other types go through llama.cpp's quantizer)",
        )
    cfg = ckpt.config
    spec = tensor_names.spec_for(cfg.architecture)
    planned: list[_Planned] = []
    if spec.permute_qk and cfg.rope_scaling and cfg.rope_scaling.get("rope_type") == "llama3":
        factors = llama3_rope_factors(cfg)
        planned.append(
            _Planned(
                tensor_names.ROPE_FREQS,
                factors.shape,
                gguf.GGMLQuantizationType.F32,
                factors.nbytes,
                None,
                data=factors,
            )
        )
    # weight_names(): the validated model tensors in file and offset order (sequential reads);
    # extras the reader already warned about are left out, as it says.
    for hf_name in ckpt.weight_names():
        info = ckpt.tensor_infos[hf_name]
        name = tensor_names.gguf_name(spec, hf_name)
        if name is None:
            continue
        shape = tuple(int(d) for d in info.shape)
        qtype = _choose_qtype(name, shape, out_type)
        heads = None
        if spec.permute_qk and ".self_attn.q_proj." in hf_name:
            heads = cfg.num_attention_heads
        elif spec.permute_qk and ".self_attn.k_proj." in hf_name:
            heads = cfg.num_key_value_heads
        planned.append(_Planned(name, shape, qtype, _tensor_nbytes(shape, qtype), hf_name, heads))
    return planned


def _unpermute_rows(n_rows: int, n_head: int) -> np.ndarray[Any, Any]:
    """Row order of convert_hf_to_gguf.py ``LlamaModel.permute(w, n_head, n_head_kv)``:
    each head's rows go from HF's two halves (rotate-half) to interleaved pairs."""
    if n_rows % (2 * n_head):
        raise ConversionError(
            f"cannot split {n_rows} rows into {n_head} rope heads",
            fix="check num_attention_heads / num_key_value_heads in config.json",
        )
    idx = np.arange(n_rows).reshape(n_head, 2, n_rows // n_head // 2)
    return idx.swapaxes(1, 2).reshape(-1)


def _convert(block: np.ndarray[Any, Any], qtype: Any) -> np.ndarray[Any, Any]:
    """float32 rows → the bytes of ``qtype`` (gguf-py's quantizers, as convert_hf_to_gguf.py)."""
    import gguf

    q = gguf.GGMLQuantizationType
    if qtype == q.F32:
        return block.astype(np.float32, copy=False)
    if qtype == q.F16:
        return block.astype(np.float16)
    return np.asarray(gguf.quants.quantize(block, qtype))


# Native numpy dtype of each safetensors float type (BF16 held as its uint16 bits).
_NATIVE: dict[str, Any] = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}


def _read_rows(info: Any, start: int, stop: int) -> np.ndarray[Any, Any]:
    """Rows ``start:stop`` of a checkpoint tensor in its stored dtype, with one read."""
    native = np.dtype(_NATIVE[info.dtype])
    inner = math.prod(info.shape[1:])
    out = np.empty((stop - start, *info.shape[1:]), dtype=native)
    with open(info.file, "rb", buffering=0) as fh:
        fh.seek(info.offset + start * inner * native.itemsize)
        got = fh.readinto(out.data.cast("B"))
    if got != out.nbytes:
        raise CheckpointError(
            f"{info.file} ended inside tensor {info.name!r}",
            fix="the file changed or was truncated while converting; download it again",
        )
    return out


# Elements per slice in the BF16 -> F16 fast path: small enough that the integer passes run
# in cache (measured here: ~7 ns/element on 16M-element blocks, ~3 ns on 1M).
_F16_SLICE = 1 << 20


def bf16_bits_to_f16(bits: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """BF16 (uint16 bits) → float16, identical to ``float32(bf16).astype(float16)``.

    BF16's 7 mantissa bits fit in F16's 10, so every BF16 value whose exponent is inside
    F16's normal range converts exactly by moving bit fields (integer ops, several times
    faster than numpy's float32 → float16 cast). The rest (|x| < 2**-14, |x| >= 2**16, inf,
    NaN) go through the float cast so rounding, subnormals and overflow stay numpy's.
    """
    u16 = np.uint16  # numpy scalars: Python ints in uint16 arithmetic take a slow path
    flat = np.ascontiguousarray(bits).view(u16).reshape(-1)
    result = np.empty(flat.shape, dtype=u16)
    for i in range(0, flat.size, _F16_SLICE):
        b = flat[i : i + _F16_SLICE]
        out = result[i : i + _F16_SLICE]
        mag = b & u16(0x7FFF)
        # F16 exponent = BF16 exponent - 112 (bias 127 -> 15): subtract 112 << 7 on the BF16
        # bit pattern, then shift by 3 to line the 7 mantissa bits up with F16's 10.
        np.subtract(mag, u16(112 << 7), out=out)
        out <<= u16(3)
        out |= b & u16(0x8000)
        special = np.flatnonzero((mag < u16(113 << 7)) | (mag >= u16(143 << 7)))
        if special.size:
            wide = b[special].astype(np.uint32) << 16
            with np.errstate(over="ignore"):  # overflow to inf is the right answer
                out[special] = wide.view(np.float32).astype(np.float16).view(u16)
    return result.view(np.float16).reshape(bits.shape)


def _to_float32(native: np.ndarray[Any, Any], src_dtype: str) -> np.ndarray[Any, Any]:
    if src_dtype == "BF16":
        wide = native.astype(np.uint32)
        wide <<= 16
        return wide.view(np.float32)
    return native.astype(np.float32, copy=False)


def _to_target(native: np.ndarray[Any, Any], src_dtype: str, qtype: Any) -> np.ndarray[Any, Any]:
    """Stored checkpoint data → the bytes of ``qtype``, skipping float32 where it is exact."""
    import gguf

    q = gguf.GGMLQuantizationType
    if qtype == q.F16 and src_dtype == "BF16":
        return bf16_bits_to_f16(native)
    if qtype == q.F16 and src_dtype == "F16":
        return native
    if qtype == q.BF16 and src_dtype == "BF16":
        return native  # bit-exact copy
    return _convert(_to_float32(native, src_dtype), qtype)


def _source_blocks(ckpt: Checkpoint, t: _Planned) -> Iterator[np.ndarray[Any, Any]]:
    """Yield the tensor's converted data in row blocks, in file order."""
    if t.data is not None:
        yield _convert(t.data, t.qtype)
        return
    assert t.hf_name is not None
    info = ckpt.tensor_infos[t.hf_name]
    if t.permute_heads or len(t.shape) < 2:
        native = _read_rows(info, 0, t.shape[0])
        if t.permute_heads:
            native = native[_unpermute_rows(native.shape[0], t.permute_heads)]
        yield _to_target(native, info.dtype, t.qtype)
        return
    row_elems = math.prod(t.shape[1:])
    rows = max(1, CHUNK_BYTES // (4 * row_elems))
    for start in range(0, t.shape[0], rows):
        native = _read_rows(info, start, min(start + rows, t.shape[0]))
        yield _to_target(native, info.dtype, t.qtype)


def _write(fh: IO[bytes], data: np.ndarray[Any, Any] | bytes) -> None:
    """Every tensor byte goes through here (one place for tests to inject a full disk)."""
    if isinstance(data, np.ndarray):
        fh.write(np.ascontiguousarray(data).data.cast("B"))
    else:
        fh.write(data)


def _pad(fh: IO[bytes], alignment: int) -> None:
    n = (-fh.tell()) % alignment
    if n:
        _write(fh, b"\0" * n)


def _add_metadata(w: Any, ckpt: Checkpoint, ftype: int, params: int) -> None:
    """The key/values convert_hf_to_gguf.py writes for a llama checkpoint, in its order."""
    import gguf

    cfg = ckpt.config
    # ModelBase.prepare_metadata: general.type, then gguf.Metadata.set_gguf_meta_model.
    w.add_type(gguf.GGUFType.MODEL)
    name = getattr(ckpt, "name", None) or ckpt.path.name
    w.add_name(name)
    basename = getattr(ckpt, "basename", None)
    if basename:
        w.add_basename(basename)
    size_label = getattr(ckpt, "size_label", None) or gguf.size_label(params, params, 0, 0)
    w.add_size_label(size_label)
    license_ = getattr(ckpt, "license", None)
    if license_:
        w.add_license(",".join(license_) if isinstance(license_, list) else str(license_))
    # gguf-py's Metadata.load reads tags/pipeline_tag and languages/language the same way.
    if tags := ckpt.card_list("tags", "pipeline_tag"):
        w.add_tags(tags)
    if languages := ckpt.card_list("languages", "language"):
        w.add_languages(languages)
    # TextModel.set_gguf_parameters
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    rs = cfg.rope_scaling
    if rs:
        rope_type = str(rs.get("rope_type", rs.get("type", ""))).lower()
        if rope_type == "linear":
            w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            w.add_rope_scaling_factor(float(rs["factor"]))
        elif rope_type == "yarn":
            w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
            w.add_rope_scaling_factor(float(rs["factor"]))
            orig = rs.get("original_max_position_embeddings")
            if orig is None:
                raise ConversionError(
                    "rope_scaling yarn has no original_max_position_embeddings",
                    fix="add it to config.json's rope_scaling (llama.cpp needs it for yarn)",
                )
            w.add_rope_scaling_orig_ctx_len(int(orig))
            if (v := rs.get("extrapolation_factor")) is not None:
                w.add_rope_scaling_yarn_ext_factor(float(v))
            if (v := rs.get("attention_factor", rs.get("attn_factor"))) is not None:
                w.add_rope_scaling_yarn_attn_factor(float(v))
            if (v := rs.get("beta_fast")) is not None:
                w.add_rope_scaling_yarn_beta_fast(float(v))
            if (v := rs.get("beta_slow")) is not None:
                w.add_rope_scaling_yarn_beta_slow(float(v))
        # llama3: no keys; the rope_freqs.weight tensor carries it (generate_extra_tensors).
    w.add_rope_freq_base(float(cfg.rope_theta))
    w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    # Upstream reads config.json through transformers' AutoConfig, whose LlamaConfig always
    # fills head_dim (hidden_size // num_attention_heads when absent), so both keys are always
    # written (seen with EuroLLM-1.7B's config, which has no head_dim).
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    w.add_file_type(ftype)
    # LlamaModel.set_gguf_parameters
    w.add_vocab_size(cfg.vocab_size)
    w.add_rope_dimension_count(cfg.head_dim)
    # ModelBase.prepare_metadata
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_vocab(w, ckpt)


def _add_vocab(w: Any, ckpt: Checkpoint) -> None:
    """tokenizer.ggml.* as TextModel._set_vocab_sentencepiece / _set_vocab_gpt2 +
    gguf.SpecialVocab.add_to_gguf write them."""
    v = ckpt.vocab
    if len(v.tokens) != ckpt.config.vocab_size:
        raise ConversionError(
            f"the tokenizer has {len(v.tokens)} tokens but config.json says vocab_size "
            f"{ckpt.config.vocab_size}",
            fix="use the tokenizer files that belong to this checkpoint",
        )
    if v.add_space_prefix is not None:
        # LlamaModel.set_vocab writes it first, before the vocabulary.
        w.add_add_space_prefix(bool(v.add_space_prefix))
    w.add_tokenizer_model(v.model)
    w.add_tokenizer_pre(v.pre)
    w.add_token_list(v.tokens)
    if v.scores is not None:
        w.add_token_scores(v.scores)
    w.add_token_types(v.token_types)
    if v.merges:
        w.add_token_merges(v.merges)
    for typ, tok_id in v.special_ids.items():
        handler = getattr(w, f"add_{typ}_token_id", None)
        if handler is not None:
            handler(int(tok_id))
    # The chat turn ends at generation_config's eos (<|im_end|> for ChatML models); llama.cpp
    # stops at EOT tokens, so record it as eot when the checkpoint names no eot of its own.
    if v.chat_eos_id is not None and v.chat_eos_id != v.eos_id and "eot" not in v.special_ids:
        w.add_eot_token_id(int(v.chat_eos_id))
    for typ, value in v.add_special.items():
        handler = getattr(w, f"add_add_{typ}_token", None)
        if handler is not None:
            handler(bool(value))
    if v.chat_template:
        w.add_chat_template(v.chat_template)


def _fast_writer(arch: str) -> Any:
    """A ``gguf.GGUFWriter`` that packs long str/float/int arrays (the 128k-entry tokenizer
    tables) with one join or one numpy call instead of one ``struct.pack`` per item.

    The bytes are the same as gguf-py's (checked by ``tests/test_gguf.py``); anything else,
    or a big-endian file, goes through gguf-py's own packing.
    """
    import gguf

    vt = gguf.GGUFValueType

    class FastWriter(gguf.GGUFWriter):
        def _pack_val(
            self, val: Any, vtype: Any, add_vtype: bool, sub_type: Any | None = None
        ) -> bytes:
            if (
                vtype == vt.ARRAY
                and sub_type is None
                and self.endianess == gguf.GGUFEndian.LITTLE
                and isinstance(val, (list, tuple))
                and len(val) >= 256
            ):
                body = _pack_array(val)
                if body is not None:
                    return (struct.pack("<I", vt.ARRAY) if add_vtype else b"") + body
            return bytes(super()._pack_val(val, vtype, add_vtype, sub_type))

    def _pack_array(val: list[Any] | tuple[Any, ...]) -> bytes | None:
        head = struct.Struct("<IQ")
        if all(isinstance(v, (str, bytes, bytearray)) for v in val):
            items = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in val]
            size = struct.Struct("<Q").pack
            return head.pack(vt.STRING, len(items)) + b"".join(size(len(b)) + b for b in items)
        if all(type(v) is float for v in val):
            return head.pack(vt.FLOAT32, len(val)) + np.asarray(val, dtype="<f4").tobytes()
        if all(isinstance(v, int) and not isinstance(v, bool) for v in val):
            return head.pack(vt.INT32, len(val)) + np.asarray(val, dtype="<i4").tobytes()
        return None

    return FastWriter(None, arch)


def write_gguf(
    ckpt: Checkpoint,
    path: str | os.PathLike[str],
    out_type: str,
    *,
    progress: ProgressFn | None = None,
) -> GGUFResult:
    """Write ``ckpt`` to ``path`` as GGUF of ``out_type`` (``f32``, ``f16``, ``bf16``, ``q8_0``).

    Streams tensor by tensor in row blocks; the file appears at ``path`` only once complete
    (a failure or kill leaves no file there, only a temporary that
    :func:`amalia_edge.artifacts.atomic.remove_stale_temporaries` cleans up).
    Raises :class:`QuantTypeError` for other types, :class:`ConversionError` for a checkpoint
    that cannot be mapped, :class:`amalia_edge.errors.OutputError` for a write that fails.
    """
    import gguf
    from gguf.gguf_writer import WriterState

    out_type = out_type.upper()
    tensors = plan(ckpt, out_type)
    ftype = int(gguf.LlamaFileType[OUT_TYPES[out_type][0]])
    params = sum(math.prod(t.shape) for t in tensors)
    path = Path(path)

    writer = _fast_writer(ckpt.config.gguf_arch)
    _add_metadata(writer, ckpt, ftype, params)
    for t in tensors:
        writer.add_tensor_info(
            t.gguf_name, t.shape, np.dtype(np.float32), t.nbytes, raw_dtype=t.qtype
        )

    with atomic_open(path, "wb") as fh:
        # Hand gguf-py our temporary file instead of letting it open the final name.
        writer.fout = [fh]
        writer.path = path
        writer.state = WriterState.EMPTY
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        alignment = writer.data_alignment
        for i, t in enumerate(tensors):
            if progress is not None:
                progress(i, len(tensors), t.gguf_name)
            _pad(fh, alignment)
            written = 0
            for block in _source_blocks(ckpt, t):
                _write(fh, block)
                written += block.nbytes
            if written != t.nbytes:  # a bug, not user input: the header would lie
                raise AssertionError(f"{t.gguf_name}: wrote {written} bytes, planned {t.nbytes}")
        _pad(fh, alignment)
        writer.fout = None  # atomic_open owns and closes the file
    if progress is not None:
        progress(len(tensors), len(tensors), "")
    return GGUFResult(path, out_type, path.stat().st_size, params, len(tensors))
