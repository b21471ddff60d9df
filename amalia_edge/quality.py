"""What a quant type costs on European-Portuguese text: PPL, ΔPPL, KL divergence, same-top %.

The statistics are those of ``llama-perplexity --kl-divergence`` (``tools/perplexity/
perplexity.cpp``, ``kl_divergence()``), computed here through llama-cpp-python with
``logits_all=True`` so that they are comparable with llama.cpp's own numbers:

* the evaluation text is tokenized once by the reference model (BOS first when the vocabulary
  adds one) and cut into consecutive chunks of ``ctx`` tokens whose first token is replaced
  by BOS;
* only the second half of every chunk is scored: positions ``ctx/2 … ctx-2`` predict tokens
  ``ctx/2+1 … ctx-1``, so every scored token has at least ``ctx/2`` tokens of context;
* per scored token: NLL of the true next token (→ PPL = exp(mean NLL), with llama.cpp's
  standard error), KL(P_ref ‖ P_quant) over the whole vocabulary, and whether the arg-max
  tokens agree; reported as PPL, ΔPPL = PPL(Q) − PPL(ref), PPL ratio, mean and 99th
  percentile KLD, and same-top-token %.

Memory: the reference's log-probabilities for the scored positions are kept in a temporary
float32 memory-mapped file (chunks × ctx/2 × vocab × 4 bytes: 67 MB for the demo model's
4k vocabulary and 32 chunks of 256, ~4.2 GB for a 128k vocabulary at 32 chunks of 512; use
``--chunks`` to bound it), so only one model is loaded at a time.

Models whose vocabularies differ from the reference's are refused (their logits are not
comparable token by token).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from amalia_edge.errors import ArtifactError, BenchError

log = logging.getLogger(__name__)

#: The held-out pt-PT novels in a development checkout (``<repo>/../shared/corpus``).
DEV_EVAL_FILE = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "pt_pt_eval.txt"
#: llama-perplexity's default context.
DEFAULT_CTX = 512
#: Chunks scored by default: bounds time and the reference log-prob file.
DEFAULT_CHUNKS = 32
#: Reference precision, best first: the first of these in the manifest is the yardstick.
REFERENCE_ORDER = ("F32", "F16", "BF16")
FORMATS = ("md", "csv", "json")

ProgressFn = Callable[[str, int, int], None]


@dataclass
class QualityRow:
    """One model's numbers against the reference (the reference itself has KLD 0)."""

    quant: str
    file: str
    ppl: float
    ppl_err: float
    delta_ppl: float
    ppl_ratio: float
    kld_mean: float
    kld_p99: float
    kld_max: float
    same_top_pct: float
    tokens: int
    size: int | None = None
    bpw: float | None = None
    label: str = ""

    def as_quality(self, report: QualityReport) -> dict[str, Any]:
        """The ``quality`` object stored in the manifest entry."""
        d = {k: v for k, v in asdict(self).items() if k not in ("quant", "file", "size", "label")}
        d.update(report.context())
        return d


@dataclass
class QualityReport:
    reference: str
    eval_file: str
    eval_sha256: str
    ctx: int
    chunks: int
    rows: list[QualityRow] = field(default_factory=list)
    versions: dict[str, str | None] = field(default_factory=dict)

    def context(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "eval_file": self.eval_file,
            "eval_sha256": self.eval_sha256,
            "ctx": self.ctx,
            "chunks": self.chunks,
            "method": "llama-perplexity --kl-divergence (second half of each chunk scored)",
            "llama_cpp_python": self.versions.get("llama_cpp_python"),
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.context(), "rows": [asdict(r) for r in self.rows]}


# --------------------------------------------------------------------------- math


def log_softmax(logits: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Row-wise log-softmax in float64 (KLDs near 0 need the precision)."""
    x = logits.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    x -= np.log(np.exp(x).sum(axis=-1, keepdims=True))
    return x


@dataclass
class _Acc:
    """Running sums for one model, as perplexity.cpp's kl_divergence_result."""

    nll: list[float] = field(default_factory=list)
    kld: list[float] = field(default_factory=list)
    same_top: int = 0
    count: int = 0

    def add(
        self,
        lp_q: np.ndarray[Any, Any],
        lp_ref: np.ndarray[Any, Any] | None,
        targets: np.ndarray[Any, Any],
    ) -> None:
        self.nll.extend((-lp_q[np.arange(len(targets)), targets]).tolist())
        if lp_ref is not None:
            p_ref = np.exp(lp_ref)
            self.kld.extend(np.sum(p_ref * (lp_ref - lp_q), axis=-1).tolist())
            self.same_top += int(np.sum(lp_ref.argmax(-1) == lp_q.argmax(-1)))
        self.count += len(targets)


def _ppl_and_err(nll: Sequence[float]) -> tuple[float, float]:
    """PPL and its standard error as perplexity.cpp prints them (delta method)."""
    a = np.asarray(nll, dtype=np.float64)
    mean = float(a.mean())
    ppl = math.exp(mean)
    if a.size < 2:
        return ppl, float("nan")
    err = float(a.std(ddof=1) / math.sqrt(a.size))
    return ppl, ppl * err


# --------------------------------------------------------------------------- llama.cpp


def vocab_signature(path: str | os.PathLike[str]) -> tuple[int, str]:
    """(token count, sha256 of the token texts) from a GGUF's ``tokenizer.ggml.tokens``."""
    import gguf

    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, OSError, IndexError) as exc:
        raise ArtifactError(
            f"{path} is not a readable GGUF file ({exc})", fix="rebuild it"
        ) from None
    f = reader.fields.get("tokenizer.ggml.tokens")
    if f is None:
        raise ArtifactError(f"{path} has no tokenizer.ggml.tokens", fix="rebuild it")
    h = hashlib.sha256()
    for idx in f.data:
        h.update(bytes(f.parts[idx]))
        h.update(b"\0")
    return len(f.data), h.hexdigest()


class _Model:
    """A GGUF loaded with llama-cpp-python, every position's logits kept."""

    def __init__(self, path: Path, ctx: int, threads: int | None) -> None:
        try:
            from amalia_edge.runtime.native import import_llama_cpp

            llama_cpp = import_llama_cpp()
        except ImportError:
            raise BenchError(
                "llama-cpp-python is not installed, so quality cannot be measured",
                fix="pip install 'amalia-edge[llama]'",
            ) from None
        n_threads = threads or max(1, os.cpu_count() or 1)
        try:
            self.llm = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=ctx,
                n_batch=ctx,
                n_ubatch=ctx,
                logits_all=True,
                n_threads=n_threads,
                n_threads_batch=n_threads,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise ArtifactError(
                f"llama.cpp could not load {path} ({exc})",
                fix="rebuild it with amalia-edge quantize",
            ) from None
        self.n_vocab = int(self.llm.n_vocab())

    def tokenize(self, text: str) -> list[int]:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=False))

    @property
    def bos(self) -> int | None:
        b = int(self.llm.token_bos())
        return b if b >= 0 else None

    def logits(self, tokens: Sequence[int]) -> np.ndarray[Any, Any]:
        self.llm.reset()
        self.llm.eval(list(tokens))
        return np.array(self.llm.scores[: len(tokens)], dtype=np.float32)

    def close(self) -> None:
        close = getattr(self.llm, "close", None)
        if close is not None:
            close()


# --------------------------------------------------------------------------- core


def read_eval_text(path: str | os.PathLike[str] | None) -> tuple[Path, str]:
    """The evaluation text (default: the held-out corpus of a development checkout)."""
    p = Path(path) if path is not None else DEV_EVAL_FILE
    if not p.is_file():
        raise BenchError(
            f"evaluation text {p} does not exist",
            fix="pass --eval FILE with held-out pt-PT text (never the calibration text)",
        )
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise BenchError(f"evaluation text {p} is not UTF-8", fix="re-save it as UTF-8") from None
    if not text.strip():
        raise BenchError(f"evaluation text {p} is empty", fix="pass a file with pt-PT text")
    return p, text


def compare_models(
    reference: str | os.PathLike[str],
    candidates: Sequence[tuple[str, str | os.PathLike[str]]],
    eval_file: str | os.PathLike[str] | None = None,
    ctx: int | None = None,
    chunks: int | None = DEFAULT_CHUNKS,
    threads: int | None = None,
    progress: ProgressFn | None = None,
) -> QualityReport:
    """Measure every ``(label, gguf path)`` in ``candidates`` against the ``reference`` GGUF.

    ``ctx`` defaults to min(512, the reference's trained context); ``chunks`` caps the number
    of chunks scored (None: all the text gives). The first row is the reference itself
    (KLD 0, same-top 100 %). Raises :class:`ArtifactError` for a candidate whose vocabulary
    differs from the reference's and :class:`BenchError` for unusable parameters or text.
    """
    ref_path = Path(reference)
    eval_path, text = read_eval_text(eval_file)
    ref_sig = vocab_signature(ref_path)
    for label, path in candidates:
        sig = vocab_signature(path)
        if sig != ref_sig:
            raise ArtifactError(
                f"{Path(path).name} ({label}) has a different vocabulary from the reference "
                f"{ref_path.name} ({sig[0]} vs {ref_sig[0]} tokens)",
                fix="compare only quantizations of the same model",
            )
    n_ctx = ctx if ctx is not None else min(DEFAULT_CTX, _train_ctx(ref_path) or DEFAULT_CTX)
    if n_ctx < 8 or n_ctx % 2:
        raise BenchError(
            f"--ctx must be an even number >= 8, got {n_ctx}", fix="use e.g. 256 or 512"
        )
    if chunks is not None and chunks < 1:
        raise BenchError(f"--chunks must be at least 1, got {chunks}", fix="use e.g. 32")

    from amalia_edge.runtime.native import import_llama_cpp

    llama_cpp = import_llama_cpp()

    ref = _Model(ref_path, n_ctx, threads)
    tokens = ref.tokenize(text)
    bos = ref.bos
    available = len(tokens) // n_ctx
    if available < 1:
        ref.close()
        raise BenchError(
            f"evaluation text {eval_path.name} is too short: {len(tokens)} tokens, need at "
            f"least {n_ctx} for a context of {n_ctx}",
            fix="pass a longer --eval file or a smaller --ctx",
        )
    n_chunks = available if chunks is None else min(chunks, available)
    first = n_ctx // 2
    n_scored = n_ctx - 1 - first
    chunk_tokens = []
    for i in range(n_chunks):
        c = list(tokens[i * n_ctx : (i + 1) * n_ctx])
        if bos is not None:
            c[0] = bos  # perplexity.cpp: BOS replaces the first token of every chunk
        chunk_tokens.append(c)
    targets = [np.asarray(tokens[i * n_ctx + first + 1 : (i + 1) * n_ctx]) for i in range(n_chunks)]

    versions = {"llama_cpp_python": getattr(llama_cpp, "__version__", None)}
    report = QualityReport(
        reference="",
        eval_file=eval_path.name,
        eval_sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        ctx=n_ctx,
        chunks=n_chunks,
        versions=versions,
    )
    with tempfile.TemporaryDirectory(prefix="amalia-quality-") as tmp:
        store = np.lib.format.open_memmap(
            Path(tmp) / "ref_logprobs.npy",
            mode="w+",
            dtype=np.float32,
            shape=(n_chunks, n_scored, ref.n_vocab),
        )
        acc = _Acc()
        try:
            for i, c in enumerate(chunk_tokens):
                lp = log_softmax(ref.logits(c)[first : n_ctx - 1])
                store[i] = lp
                acc.add(lp, lp, targets[i])
                if progress is not None:
                    progress("reference", i + 1, n_chunks)
        finally:
            ref.close()
        ref_ppl, ref_err = _ppl_and_err(acc.nll)
        report.reference = ref_path.name
        report.rows.append(_row("reference", ref_path, acc, ref_ppl, ref_err, ref_ppl))
        for label, path in candidates:
            m = _Model(Path(path), n_ctx, threads)
            acc = _Acc()
            try:
                for i, c in enumerate(chunk_tokens):
                    lp_ref = np.asarray(store[i], dtype=np.float64)
                    acc.add(log_softmax(m.logits(c)[first : n_ctx - 1]), lp_ref, targets[i])
                    if progress is not None:
                        progress(label, i + 1, n_chunks)
            finally:
                m.close()
            ppl, err = _ppl_and_err(acc.nll)
            report.rows.append(_row(label, Path(path), acc, ppl, err, ref_ppl))
        del store
    return report


def _row(label: str, path: Path, acc: _Acc, ppl: float, err: float, ref_ppl: float) -> QualityRow:
    kld = np.asarray(acc.kld if acc.kld else [0.0], dtype=np.float64)
    kld = np.maximum(kld, 0.0)  # rounding can give -1e-17 for identical distributions
    return QualityRow(
        quant=label,
        file=path.name,
        ppl=round(ppl, 4),
        ppl_err=round(err, 4),
        delta_ppl=round(ppl - ref_ppl, 4),
        ppl_ratio=round(ppl / ref_ppl, 5),
        kld_mean=float(f"{kld.mean():.6g}"),
        kld_p99=float(f"{np.percentile(kld, 99):.6g}"),
        kld_max=float(f"{kld.max():.6g}"),
        same_top_pct=round(100.0 * acc.same_top / max(1, acc.count), 3),
        tokens=acc.count,
        size=path.stat().st_size if path.is_file() else None,
    )


def _train_ctx(path: Path) -> int | None:
    import gguf

    reader = gguf.GGUFReader(path)
    for key, f in reader.fields.items():
        if key.endswith(".context_length"):
            return int(f.contents())
    return None


def measure_quality(
    artifacts: str | os.PathLike[str],
    eval_file: str | os.PathLike[str] | None = None,
    ctx: int | None = None,
    chunks: int | None = DEFAULT_CHUNKS,
    quants: Sequence[str] | None = None,
    threads: int | None = None,
    write: bool = True,
    progress: ProgressFn | None = None,
) -> QualityReport:
    """Measure every GGUF quant type in ``artifacts``' manifest against its best reference.

    The reference is the first of F32, F16, BF16 present. ``quants`` restricts the types
    measured. With ``write``, each entry's ``quality`` field (and the reference's) is set and
    the manifest is rewritten atomically. Raises :class:`ArtifactError` when there is no
    reference or a listed file is missing.
    """
    from amalia_edge.artifacts.manifest import load_manifest

    directory = Path(artifacts)
    manifest = load_manifest(directory)
    ggufs = [a for a in manifest.artifacts if a.kind == "gguf"]
    ref_entry = next((a for q in REFERENCE_ORDER for a in ggufs if a.quant.upper() == q), None)
    if ref_entry is None:
        raise ArtifactError(
            f"{directory} has no F32, F16 or BF16 GGUF to compare against",
            fix="run `amalia-edge quantize --gguf f16` (or f32, bf16) into the same --out",
        )
    wanted = {q.upper() for q in quants} if quants else None
    targets = [
        a for a in ggufs if a is not ref_entry and (wanted is None or a.quant.upper() in wanted)
    ]
    if wanted is not None:
        unknown = wanted - {a.quant.upper() for a in ggufs}
        if unknown:
            raise ArtifactError(
                f"{directory} has no GGUF of type {', '.join(sorted(unknown))}",
                fix="quantize it first or pick from: " + ", ".join(a.quant for a in ggufs),
            )
    for a in [ref_entry, *targets]:
        if not (directory / a.file).is_file():
            raise ArtifactError(
                f"{a.file} listed in the manifest is missing", fix="re-run amalia-edge quantize"
            )
    report = compare_models(
        directory / ref_entry.file,
        [(a.quant, directory / a.file) for a in targets],
        eval_file=eval_file,
        ctx=ctx,
        chunks=chunks,
        threads=threads,
        progress=progress,
    )
    report.reference = ref_entry.quant
    report.rows[0].quant = ref_entry.quant
    for row, entry in zip(report.rows, [ref_entry, *targets], strict=True):
        row.bpw = entry.bpw
        row.size = entry.size
        if entry.extra.get("imatrix"):
            row.label = "imatrix"
    if write:
        for row, entry in zip(report.rows, [ref_entry, *targets], strict=True):
            entry.quality = row.as_quality(report)
        manifest.write(directory)
    return report


# --------------------------------------------------------------------------- printers

# Columns: (header, row attribute, format). One row per column, shown in this order.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("quant", "quant", "{}"),
    ("imatrix", "label", "{}"),
    ("bpw", "bpw", "{:.2f}"),
    ("PPL", "ppl", "{:.3f}"),
    ("±", "ppl_err", "{:.3f}"),
    ("ΔPPL", "delta_ppl", "{:+.3f}"),
    ("mean KLD", "kld_mean", "{:.6f}"),
    ("p99 KLD", "kld_p99", "{:.6f}"),
    ("same top %", "same_top_pct", "{:.2f}"),
)


def _cell(row: QualityRow, attr: str, fmt: str) -> str:
    v = getattr(row, attr)
    if v is None or v == "":
        return "—" if attr != "label" else ""
    if isinstance(v, float) and math.isnan(v):
        return "—"
    return fmt.format(v)


def format_report(report: QualityReport, fmt: str = "md") -> str:
    """The report as a Markdown table, CSV, or JSON."""
    if fmt == "json":
        return json.dumps(report.to_dict(), indent=2, ensure_ascii=False)
    cols = [c for c in COLUMNS if c[1] != "label" or any(r.label for r in report.rows)]
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow([c[1] for c in cols])
        for r in report.rows:
            w.writerow(["" if getattr(r, c[1]) is None else getattr(r, c[1]) for c in cols])
        return buf.getvalue()
    if fmt != "md":
        raise BenchError(f"unknown format {fmt!r}", fix="use one of " + ", ".join(FORMATS))
    lines = [
        "| " + " | ".join(c[0] for c in cols) + " |",
        "|" + "|".join(" --- " if i == 0 else " ---: " for i in range(len(cols))) + "|",
    ]
    for r in report.rows:
        lines.append("| " + " | ".join(_cell(r, a, f) for _, a, f in cols) + " |")
    tokens = report.rows[0].tokens if report.rows else 0
    lines.append("")
    lines.append(
        f"Reference {report.reference}; {report.eval_file}, {report.chunks} chunks of "
        f"{report.ctx} tokens, {tokens} tokens scored (second half of each chunk)."
    )
    return "\n".join(lines)


__all__ = [
    "DEFAULT_CHUNKS",
    "DEFAULT_CTX",
    "FORMATS",
    "QualityReport",
    "QualityRow",
    "compare_models",
    "format_report",
    "log_softmax",
    "measure_quality",
    "read_eval_text",
    "vocab_signature",
]
