"""Export a Llama-family checkpoint to an ONNX decoder graph with a KV cache, without PyTorch.

The graph is written node by node with ``onnx.helper`` from :class:`ModelConfig` and the
checkpoint's tensors; nothing is traced. One graph serves prefill and decode:

inputs
    ``input_ids`` int64 ``[batch, seq]``, ``position_ids`` int64 ``[batch, seq]``,
    ``attention_mask`` int64 ``[batch, past + seq]`` (1 = attend, 0 = padding),
    ``past_key_values.{i}.key`` / ``.value`` ``[batch, kv_heads, past, head_dim]`` (the
    activation dtype; ``past`` may be 0 on the first step)
outputs
    ``logits`` float32 ``[batch, seq, vocab]``,
    ``present.{i}.key`` / ``.value`` ``[batch, kv_heads, past + seq, head_dim]``

Batch, sequence and past lengths are dynamic. Only standard ONNX operators are used (RMSNorm
is decomposed into ReduceMean/Sqrt/Div, RoPE into Cos/Sin/Slice/Concat, GQA into a 5-D
broadcast MatMul so the KV heads are never copied). Norms, RoPE angles and softmax run in
float32 even in the FP16 graph, because FP16 ``x*x`` overflows on Llama's large residual
activations and softmax loses the tail in FP16.

Precisions (:data:`PRECISIONS`): ``fp32``, ``fp16``, and weight-only ``int8`` (per output
channel) and ``int4`` (blocks of 32 along the input dimension) with FP16 activations, both as
standard ``DequantizeLinear`` feeding ``MatMul``. Which runtime accepts which opset is in the
table's source comments.

All weights go to one external-data file beside the ``.onnx`` so models over 2 GB work
(protobuf's limit). Tensors are streamed into it one at a time, in row chunks, so peak memory
is about the largest single checkpoint tensor plus one chunk, never the model. Both files are
written atomically and hashed while written; :func:`export_onnx` returns the manifest entry.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from amalia_edge.artifacts.atomic import atomic_open
from amalia_edge.artifacts.onnx import GraphInfo
from amalia_edge.errors import ConversionError
from amalia_edge.rope import rope_inv_freq

if TYPE_CHECKING:  # pragma: no cover
    import onnx

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrecisionSpec:
    name: str
    act: str  # activation / KV-cache numpy dtype name: "float32" | "float16"
    weights: str  # "float" | "int8" | "int4"
    opset: int
    ir_version: int
    block_size: int = 0  # int4 only
    note: str = ""


# One row per precision. Sources:
# - opset 17: the opset HF optimum exports Llama with, and well inside the range TensorRT 10's
#   ONNX parser documents (onnx-tensorrt docs/operators.md: "TensorRT 10.x supports operators
#   in the inclusive range of opset 9 to ..."; the upper bound is >= 20 for every 10.x); ORT
#   runs opsets up to 21+ (onnxruntime docs, "Compatibility").
# - int8: DequantizeLinear-19 allows a float16 x_scale (onnx Operators.md, DequantizeLinear
#   changelog v19), so the weight dequantizes straight to FP16; TensorRT's DequantizeLinear
#   row lists INT8 with "x_zero_point must be zero" (we emit no zero point).
# - int4: the int4 element type and the `block_size` attribute are DequantizeLinear-21
#   (onnx 1.16 release notes: "blocked quantization, int4/uint4"); IR version 10 carries
#   int4. ONNX Runtime runs it (verified here, CPU). TensorRT 10.0's release notes add INT4
#   (weight-only, blocked) quantization to the parser, but this opset-21 graph was NOT run
#   through JetPack 6's TensorRT 10.3 (no device): automatic selection keeps int4 on ONNX
#   Runtime; `amalia-edge build-engine --precision int4` tries it explicitly.
# IR versions: onnx/helper.py VERSION_TABLE (opset 17 -> IR 8, 19 -> IR 9, 21 -> IR 10).
PRECISIONS: dict[str, PrecisionSpec] = {
    p.name: p
    for p in (
        PrecisionSpec("fp32", "float32", "float", 17, 8, note="ORT CPU/CUDA, TensorRT 10.3"),
        PrecisionSpec("fp16", "float16", "float", 17, 8, note="ORT CUDA/TRT EP, TensorRT 10.3"),
        PrecisionSpec(
            "int8", "float16", "int8", 19, 9, note="weight-only; ORT, TensorRT 10.3 (opset 19)"
        ),
        PrecisionSpec(
            "int4",
            "float16",
            "int4",
            21,
            10,
            block_size=32,
            note="weight-only, block 32; ORT (TensorRT 10.3: unverified)",
        ),
    )
}

# Target bytes per streamed chunk while writing one tensor.
_CHUNK_BYTES = 64 << 20
# External-data offsets are page aligned so ONNX Runtime can memory-map each initializer
# (onnxruntime/core/framework/tensorprotoutils.cc maps only offsets aligned to the
# allocation granularity).
_ALIGN = 4096
# Norm weights, RoPE tables and other small tensors stay float32 whatever the precision.
_FLOAT32 = "float32"


def onnx_file_names(precision: str) -> tuple[str, str]:
    """The graph and external-data file names for ``precision`` in an artifacts directory."""
    return f"model-{precision}.onnx", f"model-{precision}.onnx.data"


def precision_spec(precision: str) -> PrecisionSpec:
    try:
        return PRECISIONS[precision.lower()]
    except KeyError:
        raise ConversionError(
            f"unknown ONNX precision {precision!r}",
            fix=f"use one of {', '.join(PRECISIONS)}",
        ) from None


# --------------------------------------------------------------------------------------
# Weight encodings, chunk by chunk
# --------------------------------------------------------------------------------------


def _widen(chunk: np.ndarray) -> np.ndarray:
    """A checkpoint chunk (BF16 held as uint16, F16, F32) as float32."""
    if chunk.dtype == np.uint16:  # BF16: the top half of a float32
        return (chunk.astype(np.uint32) << 16).view(np.float32)
    return np.asarray(chunk, dtype=np.float32)


def quantize_int8_columns(w_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-column int8 of ``w_t[in, out]``: ``(q int8, scale[out] float32)``."""
    amax = np.abs(w_t).max(axis=0)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(w_t / scale), -127, 127).astype(np.int8)
    return q, scale


# Candidate scales per int4 block, as (fraction of |max|, divisor): plain round-to-nearest
# (|max| / 7) first, then slightly smaller scales that clip the largest value but round the
# rest more finely, and |max| / 8 (uses -8). The block keeps the candidate with the least
# squared error. Searching the scale instead of taking |max| / 7 is what llama.cpp's
# quantizers do (ggml-quants.c, make_qx_quants); on Gaussian weights these six candidates cut
# the mean squared error by ~20 % (measured: 0.0094 -> 0.0076 on N(0, 1), block 32).
INT4_SCALE_CANDIDATES: tuple[tuple[float, float], ...] = (
    (1.0, 7.0),
    (0.95, 7.0),
    (0.9, 7.0),
    (0.85, 7.0),
    (0.8, 7.0),
    (1.0, 8.0),
)


def quantize_int4_blocks(w_t: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int4 of ``w_t[in, out]`` in blocks of ``block`` rows along ``in``.

    Returns ``(q int8 in [-8, 7] shaped [in, out], scale float32 [in // block, out])``;
    dequantized value = ``q * scale[row // block]`` (DequantizeLinear-21, axis 0). Each
    block's scale is the :data:`INT4_SCALE_CANDIDATES` entry with the least squared error.
    """
    k, n = w_t.shape
    blocks = w_t.reshape(k // block, block, n)
    amax = np.abs(blocks).max(axis=1)
    best_q: np.ndarray | None = None
    best_s: np.ndarray = np.empty(0, np.float32)
    best_err: np.ndarray = np.empty(0, np.float32)
    for frac, div in INT4_SCALE_CANDIDATES:
        scale = np.where(amax > 0, amax * frac / div, 1.0).astype(np.float32)
        q = np.clip(np.rint(blocks / scale[:, None, :]), -8, 7)
        err = ((q * scale[:, None, :] - blocks) ** 2).sum(axis=1)
        if best_q is None:
            best_q, best_s, best_err = q, scale, err
            continue
        better = err < best_err
        best_q = np.where(better[:, None, :], q, best_q)
        best_s = np.where(better, scale, best_s)
        best_err = np.where(better, err, best_err)
    assert best_q is not None
    return best_q.astype(np.int8).reshape(k, n), best_s.astype(np.float32)


def pack_int4(q: np.ndarray) -> bytes:
    """Pack int4 values (int8 in [-8, 7]) two per byte, first element in the low nibble.

    Source: onnx docs/Operators.md "4 bit integer types" (element 2i in bits 0-3 of byte i).
    """
    flat = (q.reshape(-1).astype(np.int16) & 0x0F).astype(np.uint8)
    if flat.size % 2:
        flat = np.concatenate([flat, np.zeros(1, np.uint8)])
    return (flat[0::2] | (flat[1::2] << 4)).tobytes()


def unpack_int4(data: bytes, count: int) -> np.ndarray:
    """Inverse of :func:`pack_int4`: ``count`` signed int4 values as int8."""
    b = np.frombuffer(data, dtype=np.uint8)
    out = np.empty(b.size * 2, dtype=np.int8)
    out[0::2] = (b & 0x0F).astype(np.int8)
    out[1::2] = (b >> 4).astype(np.int8)
    out = np.where(out > 7, out - 16, out).astype(np.int8)
    return out[:count]


# --------------------------------------------------------------------------------------
# External data, streamed
# --------------------------------------------------------------------------------------


class _ExternalData:
    """Appends tensors to one open external-data file and returns their TensorProtos."""

    def __init__(self, fh: IO[bytes], location: str) -> None:
        self.fh = fh
        self.location = location
        self.offset = 0
        self.sha = hashlib.sha256()

    def _write(self, data: bytes) -> None:
        self.fh.write(data)
        self.sha.update(data)
        self.offset += len(data)

    def add(
        self, name: str, onnx_dtype: int, dims: tuple[int, ...], chunks: Iterator[bytes]
    ) -> onnx.TensorProto:
        from onnx import TensorProto

        pad = (-self.offset) % _ALIGN
        if pad:
            self._write(b"\0" * pad)
        start = self.offset
        for chunk in chunks:
            self._write(chunk)
        t = TensorProto()
        t.name = name
        t.data_type = onnx_dtype
        t.dims.extend(dims)
        t.data_location = TensorProto.EXTERNAL
        for key, value in (
            ("location", self.location),
            ("offset", str(start)),
            ("length", str(self.offset - start)),
        ):
            entry = t.external_data.add()
            entry.key = key
            entry.value = value
        return t


# --------------------------------------------------------------------------------------
# Graph construction
# --------------------------------------------------------------------------------------


@dataclass
class _Graph:
    """Node list + initializers with unique names; every op returns its output name."""

    opset: int
    nodes: list[Any] = field(default_factory=list)
    inits: list[Any] = field(default_factory=list)
    counter: int = 0

    def op(self, op_type: str, inputs: list[str], name: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        self.counter += 1
        out = name or f"/{op_type.lower()}_{self.counter}"
        self.nodes.append(
            helper.make_node(op_type, inputs, [out], name=f"n{self.counter}_{op_type}", **attrs)
        )
        return out

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def reduce_mean_last(self, x: str) -> str:
        # ReduceMean took `axes` as an attribute until opset 18 and as an input since.
        if self.opset >= 18:
            return self.op("ReduceMean", [x, "c_axes_last"], keepdims=1)
        return self.op("ReduceMean", [x], axes=[-1], keepdims=1)


@dataclass
class _Weights:
    """Streams checkpoint tensors into external data in the precision's encoding."""

    ckpt: Any
    spec: PrecisionSpec
    ext: _ExternalData
    g: _Graph
    progress: Callable[[str], None] | None = None

    def _source(self, hf_name: str) -> np.ndarray:
        if self.progress is not None:
            self.progress(hf_name)
        return self.ckpt.read(hf_name)

    def _scale(self, name: str, scale: np.ndarray) -> str:
        """Quantization scales go to external data too (an INT4 9B model has ~0.3 GB)."""
        from onnx import TensorProto

        dt = TensorProto.FLOAT16 if scale.dtype == np.float16 else TensorProto.FLOAT
        self.g.inits.append(self.ext.add(name, dt, tuple(scale.shape), iter([scale.tobytes()])))
        return name

    def _rows(self, row_bytes: int) -> int:
        return max(1, _CHUNK_BYTES // max(1, row_bytes))

    def vector(self, hf_name: str) -> str:
        """A 1-D float32 tensor (norm weights, biases), stored as-is."""
        from onnx import TensorProto

        a = _widen(self._source(hf_name))
        self.g.inits.append(
            self.ext.add(hf_name, TensorProto.FLOAT, tuple(a.shape), iter([a.tobytes()]))
        )
        return hf_name

    def table(self, hf_name: str) -> str:
        """The embedding table ``[vocab, hidden]`` in the activation dtype (Gather source).

        Read in row blocks when the checkpoint offers it, so the table is never whole in
        memory (it is the largest tensor of a 128k-vocabulary model).
        """
        from onnx import TensorProto

        if self.progress is not None:
            self.progress(hf_name)
        shape = tuple(self.ckpt.tensor_infos[hf_name].shape)
        act = np.dtype(self.spec.act)
        step = max(1, _CHUNK_BYTES // max(1, shape[1] * 4))
        reader = getattr(self.ckpt, "read_row_block", None)
        whole = None if reader is not None else self.ckpt.read(hf_name)

        def chunks() -> Iterator[bytes]:
            for r in range(0, shape[0], step):
                stop = min(r + step, shape[0])
                if reader is not None:
                    block = reader(hf_name, r, stop)
                else:
                    assert whole is not None
                    block = whole[r:stop]
                yield _widen(block).astype(act).tobytes()

        onnx_dt = TensorProto.FLOAT16 if act == np.float16 else TensorProto.FLOAT
        self.g.inits.append(self.ext.add(hf_name, onnx_dt, shape, chunks()))
        return hf_name

    def matmul_weight(self, hf_name: str, *, int8_override: bool = False) -> str:
        """``W[out, in]`` from the checkpoint as a MatMul B operand ``[in, out]``.

        Returns the name of a tensor in the activation dtype: the initializer itself for float
        precisions, else the output of a DequantizeLinear on the quantized initializer.
        """
        from onnx import TensorProto

        src = self._source(hf_name)
        n_out, n_in = src.shape
        act = np.dtype(self.spec.act)
        kind = "int8" if int8_override and self.spec.weights == "int4" else self.spec.weights
        if kind == "int4" and n_in % self.spec.block_size:
            kind = "int8"  # an input dimension that is not a whole number of blocks
        # Rows of W^T (input features) per chunk; a whole number of int4 blocks.
        step = self._rows(n_out * 4)
        if kind == "int4":
            bs = self.spec.block_size
            step = max(bs, step // bs * bs)

        def transposed() -> Iterator[np.ndarray]:
            for r in range(0, n_in, step):
                yield np.ascontiguousarray(_widen(src[:, r : r + step]).T)

        qname = hf_name + ("" if kind == "float" else f".{kind}")
        if any(t.name == qname for t in self.g.inits):
            qname += ".transposed"  # tied output head: the table of the same name is a Gather
        if kind == "float":
            onnx_dt = TensorProto.FLOAT16 if act == np.float16 else TensorProto.FLOAT
            self.g.inits.append(
                self.ext.add(
                    qname, onnx_dt, (n_in, n_out), (c.astype(act).tobytes() for c in transposed())
                )
            )
            return qname

        if kind == "int8":
            # Per-output-channel scale needs the whole column first: one pass over W's rows.
            amax = np.abs(_widen(src)).max(axis=1) if src.nbytes <= _CHUNK_BYTES else None
            if amax is None:
                amax = np.concatenate(
                    [np.abs(_widen(src[r : r + 4096])).max(axis=1) for r in range(0, n_out, 4096)]
                )
            scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)

            def q8() -> Iterator[bytes]:
                for c in transposed():
                    yield np.clip(np.rint(c / scale), -127, 127).astype(np.int8).tobytes()

            self.g.inits.append(self.ext.add(qname, TensorProto.INT8, (n_in, n_out), q8()))
            sname = self._scale(qname + ".scale", scale.astype(act))
            return self.g.op("DequantizeLinear", [qname, sname], axis=1)

        # int4, blocks along the input dimension (axis 0 of W^T)
        bs = self.spec.block_size
        scales: list[np.ndarray] = []

        def q4() -> Iterator[bytes]:
            for c in transposed():
                q, s = quantize_int4_blocks(c, bs)
                scales.append(s)
                yield pack_int4(q)

        self.g.inits.append(self.ext.add(qname, TensorProto.INT4, (n_in, n_out), q4()))
        scale_all = np.concatenate(scales, axis=0).astype(act)
        sname = self._scale(qname + ".scale", scale_all)
        return self.g.op("DequantizeLinear", [qname, sname], axis=0, block_size=bs)


def _io_dims(config: Any) -> dict[str, list[Any]]:
    kv = ["batch", config.num_key_value_heads, "past_sequence", config.head_dim]
    kv_out = ["batch", config.num_key_value_heads, "total_sequence", config.head_dim]
    return {"kv": kv, "kv_out": kv_out}


def build_model(
    ckpt: Any,
    spec: PrecisionSpec,
    ext: _ExternalData,
    progress: Callable[[str], None] | None = None,
) -> onnx.ModelProto:
    """Build the decoder graph, streaming weights into ``ext``; returns the (small) model."""
    from onnx import TensorProto, helper

    cfg = ckpt.config
    n_layers = int(cfg.num_hidden_layers)
    n_heads = int(cfg.num_attention_heads)
    n_kv = int(cfg.num_key_value_heads)
    d = int(cfg.head_dim)
    n_rep = n_heads // n_kv
    if n_heads % n_kv:
        raise ConversionError(
            f"num_attention_heads {n_heads} is not a multiple of num_key_value_heads {n_kv}",
            fix="this checkpoint's config.json is inconsistent",
        )
    act = np.dtype(spec.act)
    act_onnx = TensorProto.FLOAT16 if act == np.float16 else TensorProto.FLOAT
    fp16 = act == np.float16
    g = _Graph(spec.opset)
    w = _Weights(ckpt, spec, ext, g, progress)
    names = set(ckpt.tensor_infos)

    # Small constants (inline initializers).
    g.const("c_axes_last", np.array([-1], np.int64))
    g.const("c_axis0", np.array([0], np.int64))
    g.const("c_axis1", np.array([1], np.int64))
    g.const("c_axis2", np.array([2], np.int64))
    g.const("c_axes12", np.array([1, 2], np.int64))
    g.const("c_zero", np.array(0, np.int64))
    g.const("c_one", np.array(1, np.int64))
    g.const("c_eps", np.array(cfg.rms_norm_eps, np.float32))
    g.const("c_neg", np.array(np.finfo(np.float32).min, np.float32))
    g.const("c_scale", np.array(1.0 / math.sqrt(d), act))
    g.const("c_half0", np.array([0], np.int64))
    g.const("c_half1", np.array([d // 2], np.int64))
    g.const("c_full", np.array([d], np.int64))
    g.const("c_axis_last", np.array([3], np.int64))
    g.const("c_q5", np.array([0, n_kv, n_rep, -1, d], np.int64))
    g.const("c_qkv4", np.array([0, 0, -1, d], np.int64))
    g.const("c_heads4", np.array([0, n_heads, -1, d], np.int64))
    g.const("c_hidden3", np.array([0, 0, n_heads * d], np.int64))
    inv_freq, attn_factor = rope_inv_freq(cfg)
    g.const("c_inv_freq", inv_freq.reshape(1, 1, -1))

    def cast(x: str, to: int) -> str:
        return g.op("Cast", [x], to=to)

    def rms_norm(x: str, weight: str) -> str:
        xf = cast(x, TensorProto.FLOAT) if fp16 else x
        var = g.reduce_mean_last(g.op("Mul", [xf, xf]))
        y = g.op("Div", [xf, g.op("Sqrt", [g.op("Add", [var, "c_eps"])])])
        y = g.op("Mul", [y, weight])
        return cast(y, act_onnx) if fp16 else y

    def linear(x: str, hf_prefix: str, **kw: Any) -> str:
        y = g.op("MatMul", [x, w.matmul_weight(hf_prefix + ".weight", **kw)])
        if hf_prefix + ".bias" in names:
            bias = w.vector(hf_prefix + ".bias")
            y = g.op("Add", [y, cast(bias, act_onnx) if fp16 else bias])
        return y

    # --- shapes, mask, RoPE tables (shared by all layers) ---
    seq = g.op("Shape", ["input_ids"], start=1, end=2)  # [1]
    past = g.op("Shape", ["past_key_values.0.key"], start=2, end=3)  # [1]
    total = g.op("Add", [seq, past])
    past_s = g.op("Squeeze", [past, "c_axis0"])
    total_s = g.op("Squeeze", [total, "c_axis0"])
    q_pos = g.op("Range", [past_s, total_s, "c_one"])  # absolute positions of the queries
    k_pos = g.op("Range", ["c_zero", total_s, "c_one"])
    causal = g.op(
        "LessOrEqual",
        [g.op("Unsqueeze", [k_pos, "c_axis0"]), g.op("Unsqueeze", [q_pos, "c_axis1"])],
    )  # [S, T]
    pad_ok = g.op(
        "Unsqueeze", [cast("attention_mask", TensorProto.BOOL), "c_axes12"]
    )  # [B, 1, 1, T]
    mask = g.op("And", [causal, pad_ok])  # [B, 1, S, T]
    mask5 = g.op("Unsqueeze", [mask, "c_axis1"])  # [B, 1, 1, S, T]

    pos_f = g.op("Unsqueeze", [cast("position_ids", TensorProto.FLOAT), "c_axes_last"])
    freqs = g.op("Mul", [pos_f, "c_inv_freq"])  # [B, S, D/2]
    emb = g.op("Concat", [freqs, freqs], axis=-1)
    cos = g.op("Cos", [emb])
    sin = g.op("Sin", [emb])
    if attn_factor != 1.0:
        g.const("c_attn_factor", np.array(attn_factor, np.float32))
        cos = g.op("Mul", [cos, "c_attn_factor"])
        sin = g.op("Mul", [sin, "c_attn_factor"])
    cos = g.op("Unsqueeze", [cast(cos, act_onnx) if fp16 else cos, "c_axis1"])  # [B,1,S,D]
    sin = g.op("Unsqueeze", [cast(sin, act_onnx) if fp16 else sin, "c_axis1"])

    def rope(x: str) -> str:
        x1 = g.op("Slice", [x, "c_half0", "c_half1", "c_axis_last"])
        x2 = g.op("Slice", [x, "c_half1", "c_full", "c_axis_last"])
        rot = g.op("Concat", [g.op("Neg", [x2]), x1], axis=-1)
        return g.op("Add", [g.op("Mul", [x, cos]), g.op("Mul", [rot, sin])])

    def heads(x: str) -> str:  # [B, S, H*D] -> [B, H, S, D]
        return g.op("Transpose", [g.op("Reshape", [x, "c_qkv4"])], perm=[0, 2, 1, 3])

    h = g.op("Gather", [w.table("model.embed_tokens.weight"), "input_ids"])
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
        helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "sequence"]),
        helper.make_tensor_value_info(
            "attention_mask", TensorProto.INT64, ["batch", "total_sequence"]
        ),
    ]
    outputs = []
    dims = _io_dims(cfg)
    for i in range(n_layers):
        p = f"model.layers.{i}"
        past_k, past_v = f"past_key_values.{i}.key", f"past_key_values.{i}.value"
        inputs += [helper.make_tensor_value_info(n, act_onnx, dims["kv"]) for n in (past_k, past_v)]
        x = rms_norm(h, w.vector(f"{p}.input_layernorm.weight"))
        q = rope(heads(linear(x, f"{p}.self_attn.q_proj")))  # [B, H, S, D]
        k = rope(heads(linear(x, f"{p}.self_attn.k_proj")))  # [B, KV, S, D]
        v = heads(linear(x, f"{p}.self_attn.v_proj"))
        k_all = g.op("Concat", [past_k, k], name=f"present.{i}.key", axis=2)
        v_all = g.op("Concat", [past_v, v], name=f"present.{i}.value", axis=2)
        outputs += [
            helper.make_tensor_value_info(n, act_onnx, dims["kv_out"])
            for n in (f"present.{i}.key", f"present.{i}.value")
        ]
        # GQA without copying K/V: queries of one KV group share a broadcast MatMul.
        q5 = g.op("Reshape", [g.op("Mul", [q, "c_scale"]), "c_q5"])  # [B, KV, R, S, D]
        k5 = g.op("Unsqueeze", [k_all, "c_axis2"])  # [B, KV, 1, T, D]
        v5 = g.op("Unsqueeze", [v_all, "c_axis2"])
        scores = g.op("MatMul", [q5, g.op("Transpose", [k5], perm=[0, 1, 2, 4, 3])])
        if fp16:
            scores = cast(scores, TensorProto.FLOAT)
        scores = g.op("Where", [mask5, scores, "c_neg"])
        probs = g.op("Softmax", [scores], axis=-1)
        if fp16:
            probs = cast(probs, act_onnx)
        ctx = g.op("MatMul", [probs, v5])  # [B, KV, R, S, D]
        ctx = g.op("Reshape", [ctx, "c_heads4"])  # [B, H, S, D]
        ctx = g.op("Reshape", [g.op("Transpose", [ctx], perm=[0, 2, 1, 3]), "c_hidden3"])
        h = g.op("Add", [h, linear(ctx, f"{p}.self_attn.o_proj")])
        x = rms_norm(h, w.vector(f"{p}.post_attention_layernorm.weight"))
        gate = linear(x, f"{p}.mlp.gate_proj")
        up = linear(x, f"{p}.mlp.up_proj")
        act_out = g.op("Mul", [g.op("Mul", [gate, g.op("Sigmoid", [gate])]), up])
        h = g.op("Add", [h, linear(act_out, f"{p}.mlp.down_proj")])

    x = rms_norm(h, w.vector("model.norm.weight"))
    head = "lm_head.weight" if "lm_head.weight" in names else "model.embed_tokens.weight"
    # The output projection stays int8 in the int4 graph: it is the most sensitive matrix
    # (llama.cpp's Q4_K_M keeps it at Q6_K for the same reason).
    logits = g.op("MatMul", [x, w.matmul_weight(head, int8_override=True)])
    if fp16:
        logits = cast(logits, TensorProto.FLOAT)
    g.nodes.append(helper.make_node("Identity", [logits], ["logits"], name="logits_out"))
    outputs.insert(
        0,
        helper.make_tensor_value_info(
            "logits", TensorProto.FLOAT, ["batch", "sequence", cfg.vocab_size]
        ),
    )
    graph = helper.make_graph(g.nodes, "amalia_edge_decoder", inputs, outputs, g.inits)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", spec.opset)],
        producer_name="amalia-edge",
    )
    model.ir_version = spec.ir_version
    info = GraphInfo(
        spec.name, spec.act, n_layers, n_kv, d, cfg.vocab_size, cfg.max_position_embeddings
    )
    meta = {**info.to_props(), "amalia.architecture": str(cfg.architecture)}
    helper.set_model_props(model, meta)
    return model


# --------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` wrote: paths, sizes, hashes (the manifest entry's facts)."""

    precision: str
    path: Path
    data_path: Path
    size: int
    data_size: int
    sha256: str
    data_sha256: str
    opset: int
    params: int


def write_onnx(
    ckpt: Any,
    out_dir: str | os.PathLike[str],
    precision: str,
    progress: Callable[[str], None] | None = None,
) -> OnnxExport:
    """Export ``ckpt`` at ``precision`` into ``out_dir`` (atomically); return what was written."""
    spec = precision_spec(precision)
    try:
        import onnx
    except ImportError:
        raise ConversionError(
            "the onnx package is not installed", fix="pip install 'amalia-edge[onnx]'"
        ) from None
    out = Path(out_dir)
    graph_name, data_name = onnx_file_names(spec.name)
    graph_path, data_path = out / graph_name, out / data_name
    with atomic_open(data_path, "wb") as fh:
        ext = _ExternalData(fh, data_name)
        model = build_model(ckpt, spec, ext, progress)
        data_size, data_sha = ext.offset, ext.sha.hexdigest()
    blob = model.SerializeToString()
    with atomic_open(graph_path, "wb") as fh:
        fh.write(blob)
    del onnx
    params = getattr(ckpt, "param_count", None)
    if not isinstance(params, int):
        params = sum(math.prod(t.shape) for t in ckpt.tensor_infos.values())
    log.info("wrote %s (%d bytes) + %s (%d bytes)", graph_path, len(blob), data_path, data_size)
    return OnnxExport(
        precision=spec.name,
        path=graph_path,
        data_path=data_path,
        size=len(blob),
        data_size=data_size,
        sha256=hashlib.sha256(blob).hexdigest(),
        data_sha256=data_sha,
        opset=spec.opset,
        params=params,
    )


def export_onnx(
    ckpt: Any,
    out_dir: str | os.PathLike[str],
    precision: str,
    progress: Callable[[str], None] | None = None,
) -> Any:
    """Export ``ckpt`` to ``out_dir/model-<precision>.onnx`` (+ ``.onnx.data``).

    Returns the manifest entry (``kind="onnx"``, ``quant=precision``, file, size, sha256 of
    the graph file; the external-data file's name, size and sha256 ride along in
    ``extra``). The caller (``convert.pipeline.quantize``) adds it to the manifest, which is
    written last.
    """
    res = write_onnx(ckpt, out_dir, precision, progress)
    return manifest_entry(ckpt, res)


def manifest_entry(ckpt: Any, res: OnnxExport) -> Any:
    """Build the artifacts-manifest entry for an export (schema: artifacts/manifest.py)."""
    from amalia_edge.artifacts import manifest as mf

    spec = PRECISIONS[res.precision]
    total = res.size + res.data_size
    return mf.ArtifactEntry(
        kind="onnx",
        quant=res.precision,
        file=res.path.name,
        size=res.size,
        sha256=res.sha256,
        bpw=round(total * 8 / res.params, 3) if res.params else None,
        params=res.params,
        source_fingerprint=ckpt.fingerprint(),
        extra={
            "data_file": res.data_path.name,
            "data_size": res.data_size,
            "data_sha256": res.data_sha256,
            "opset": res.opset,
            "activations": spec.act,
            "runs_on": spec.note,
        },
    )
