"""Every GGUF file type llama.cpp can produce, as data.

One row per llama.cpp ``llama_ftype`` that ``llama-quantize`` accepts by name. The columns:

``name``
    the name ``llama-quantize`` takes (``tools/quantize/quantize.cpp::QUANT_OPTIONS``), also the
    suffix of the output file ``<Name>-<NAME>.gguf``;
``ftype``
    the ``llama_ftype`` value from ``include/llama.h`` (stored in ``general.file_type``);
``bpw``
    nominal bits per weight of the whole file: for the mixes (``*_K_*``, ``IQ*``) the figure
    llama.cpp measured on Llama-3.1-8B (``tools/quantize/README.md``), for single-type files the
    block size of the ggml type (``ggml/src/ggml-common.h``: bytes per block × 8 / weights
    per block). Real files differ a little (embeddings, norms, small models);
``needs_imatrix``
    llama.cpp refuses to write the file without an importance matrix
    (``src/llama-quant.cpp::tensor_requires_imatrix`` and the tensor-type choices that lead there);
    ``tests/test_quantize.py`` checks this column against the real quantizer;
``writer``
    ``"amalia"`` when :func:`amalia_edge.convert.gguf.write_gguf` writes the type directly from
    the checkpoint (the same types ``convert_hf_to_gguf.py --outtype`` offers), ``"llama.cpp"``
    when it comes from llama.cpp's quantizer run on the high-precision file;
``moe_only``
    the type only makes sense for mixture-of-experts models;
``description``
    one line for ``--help`` and error messages.

Sources: llama.cpp as vendored in llama-cpp-python 0.3.36 (``include/llama.h``,
``tools/quantize/quantize.cpp``, ``tools/quantize/README.md``, ``src/llama-quant.cpp``).
``LLAMA_FTYPE_MOSTLY_NVFP4`` (39) is left out: ``llama-quantize`` does not offer it (it only
comes from converting NVFP4 checkpoints).
"""

from __future__ import annotations

from dataclasses import dataclass

from amalia_edge.errors import QuantTypeError


@dataclass(frozen=True)
class QuantType:
    name: str
    ftype: int
    bpw: float
    needs_imatrix: bool
    writer: str
    description: str
    moe_only: bool = False

    @property
    def is_float(self) -> bool:
        """F32/F16/BF16: no quantization at all."""
        return self.name in ("F32", "F16", "BF16")


_ROWS: tuple[QuantType, ...] = (
    # Unquantized. ftype from llama.h; bpw: element size.
    QuantType("F32", 0, 32.0, False, "amalia", "32-bit float, reference precision"),
    QuantType(
        "F16", 1, 16.0, False, "amalia", "16-bit float, lossless for BF16/F16 sources in practice"
    ),
    QuantType("BF16", 32, 16.0, False, "amalia", "bfloat16, bit-exact copy of BF16 checkpoints"),
    # Legacy block quants (32 weights per block). bpw: ggml-common.h block_q*_* sizes.
    QuantType("Q8_0", 7, 8.5, False, "amalia", "8-bit, near-lossless (+0.0026 ppl @ Llama-3-8B)"),
    QuantType("Q5_1", 9, 6.0, False, "llama.cpp", "5-bit with min (+0.1062 ppl @ Llama-3-8B)"),
    QuantType("Q5_0", 8, 5.5, False, "llama.cpp", "5-bit (+0.1316 ppl @ Llama-3-8B)"),
    QuantType("Q4_1", 3, 5.0, False, "llama.cpp", "4-bit with min (+0.4511 ppl @ Llama-3-8B)"),
    QuantType("Q4_0", 2, 4.5, False, "llama.cpp", "4-bit (+0.4685 ppl @ Llama-3-8B)"),
    # K-quant mixes (256 weights per super-block). bpw: tools/quantize/README.md, Llama-3.1-8B.
    QuantType("Q6_K", 18, 6.5633, False, "llama.cpp", "6-bit k-quant (+0.0217 ppl @ Llama-3-8B)"),
    QuantType(
        "Q5_K_M", 17, 5.7036, False, "llama.cpp", "5-bit k-quant mix (+0.0569 ppl @ Llama-3-8B)"
    ),
    QuantType("Q5_K_S", 16, 5.5704, False, "llama.cpp", "5-bit k-quant (+0.1049 ppl @ Llama-3-8B)"),
    QuantType(
        "Q4_K_M", 15, 4.8944, False, "llama.cpp", "4-bit k-quant mix (+0.1754 ppl @ Llama-3-8B)"
    ),
    QuantType("Q4_K_S", 14, 4.6672, False, "llama.cpp", "4-bit k-quant (+0.2689 ppl @ Llama-3-8B)"),
    QuantType(
        "Q3_K_L", 13, 4.2979, False, "llama.cpp", "3-bit k-quant, large (+0.5562 ppl @ Llama-3-8B)"
    ),
    QuantType(
        "Q3_K_M", 12, 3.9960, False, "llama.cpp", "3-bit k-quant mix (+0.6569 ppl @ Llama-3-8B)"
    ),
    QuantType(
        "Q3_K_S", 11, 3.6429, False, "llama.cpp", "3-bit k-quant, small (+1.6321 ppl @ Llama-3-8B)"
    ),
    QuantType(
        "Q2_K", 10, 3.1593, False, "llama.cpp", "2-bit k-quant mix (+3.5199 ppl @ Llama-3-8B)"
    ),
    # Q2_K_S: llama-quant.cpp tensor_requires_imatrix() special-cases Q2_K inside a Q2_K_S file.
    QuantType(
        "Q2_K_S", 21, 2.9697, True, "llama.cpp", "2-bit k-quant, small (+3.1836 ppl @ Llama-3-8B)"
    ),
    # i-quants. bpw: tools/quantize/README.md, Llama-3.1-8B. needs_imatrix: tensor_requires_imatrix
    # (IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS tensors; IQ2_M, IQ3_XS pick such tensors).
    QuantType("IQ4_NL", 25, 4.6818, False, "llama.cpp", "4.5 bpw non-linear"),
    QuantType("IQ4_XS", 30, 4.4597, False, "llama.cpp", "4.25 bpw non-linear"),
    QuantType("IQ3_M", 27, 3.7628, False, "llama.cpp", "3.66 bpw i-quant mix"),
    QuantType("IQ3_S", 26, 3.6606, False, "llama.cpp", "3.44 bpw i-quant"),
    QuantType("IQ3_XS", 22, 3.4977, True, "llama.cpp", "3.3 bpw i-quant"),
    QuantType("IQ3_XXS", 23, 3.2548, True, "llama.cpp", "3.06 bpw i-quant"),
    QuantType("IQ2_M", 29, 2.9294, True, "llama.cpp", "2.7 bpw i-quant mix"),
    QuantType("IQ2_S", 28, 2.7403, True, "llama.cpp", "2.5 bpw i-quant"),
    QuantType("IQ2_XS", 20, 2.5882, True, "llama.cpp", "2.31 bpw i-quant"),
    QuantType("IQ2_XXS", 19, 2.3824, True, "llama.cpp", "2.06 bpw i-quant"),
    QuantType("IQ1_M", 31, 2.1460, True, "llama.cpp", "1.75 bpw i-quant"),
    QuantType("IQ1_S", 24, 2.0042, True, "llama.cpp", "1.56 bpw i-quant"),
    # Ternary (BitNet-style) quants. bpw: block_tq1_0 (54 B / 256) and block_tq2_0 (66 B / 256).
    QuantType(
        "TQ2_0", 37, 2.0625, False, "llama.cpp", "2.06 bpw ternary, for ternary-trained models"
    ),
    QuantType(
        "TQ1_0", 36, 1.6875, False, "llama.cpp", "1.69 bpw ternary, for ternary-trained models"
    ),
    # Newest llama.cpp only (llama.h 0.3.36): Q1_0 = 40 (block_q1_0), Q2_0 = 41 (group 64).
    QuantType(
        "Q2_0", 41, 2.25, False, "llama.cpp", "2.25 bpw (group 64), needs a recent llama.cpp"
    ),
    QuantType("Q1_0", 40, 1.125, False, "llama.cpp", "1.125 bpw, needs a recent llama.cpp"),
    # MXFP4 for the experts of MoE models (gpt-oss); llama.h: LLAMA_FTYPE_MOSTLY_MXFP4_MOE = 38.
    QuantType("MXFP4_MOE", 38, 4.25, False, "llama.cpp", "MXFP4 experts, MoE models only", True),
)

QUANT_TYPES: dict[str, QuantType] = {row.name: row for row in _ROWS}

# llama-quantize's aliases (QUANT_OPTIONS: "alias for ..."), accepted on input.
ALIASES: dict[str, str] = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}

# What `amalia-edge quantize` writes when --gguf is not given: the lossless reference, the
# near-lossless 8-bit and the usual 4-bit choice for a 9B model on a 32/64 GB Jetson.
DEFAULT_TYPES: tuple[str, ...] = ("F16", "Q8_0", "Q4_K_M")


def get(name: str) -> QuantType:
    """Look up a type by name, case-insensitively, aliases included.

    Raises :class:`QuantTypeError` listing the valid names for an unknown one.
    """
    key = name.strip().upper()
    key = ALIASES.get(key, key)
    try:
        return QUANT_TYPES[key]
    except KeyError:
        raise QuantTypeError(
            f"unknown quant type {name.strip()!r}",
            fix="use one of " + ", ".join(QUANT_TYPES),
        ) from None


def parse_list(text: str | None) -> list[QuantType]:
    """Parse a comma list like ``"f16,q8_0,Q4_K_M"`` (duplicates dropped, order kept)."""
    if text is None:
        return [QUANT_TYPES[n] for n in DEFAULT_TYPES]
    out: list[QuantType] = []
    for part in text.split(","):
        if not part.strip():
            continue
        qt = get(part)
        if qt not in out:
            out.append(qt)
    if not out:
        raise QuantTypeError("no quant type given", fix="pass e.g. --gguf f16,q8_0,q4_k_m")
    return out


def by_ftype(ftype: int) -> QuantType | None:
    """The row for a ``general.file_type`` value, or None."""
    return next((r for r in _ROWS if r.ftype == ftype), None)
