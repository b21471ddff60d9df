"""Resolve the MODEL argument into runnable artifacts.

``MODEL`` is either an artifacts directory with a ``manifest.json`` (written by
``amalia-edge quantize``; read with :func:`amalia_edge.artifacts.manifest.load_manifest`) or a
single ``.gguf`` file. GGUF files are validated from their header only (magic, version,
architecture, that the file holds every tensor it lists; :mod:`.gguf_header`), which also
gives the shape numbers the memory estimate needs (layers, KV heads, head size, training
context) and the bytes a decode step reads.

Errors are :class:`~amalia_edge.errors.ArtifactError` with the fix in the message.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from amalia_edge.errors import ArtifactError, OutputError, UnsupportedArchitectureError
from amalia_edge.runtime.gguf_header import GGUFHeader, read_gguf_header

# GGUF ``general.architecture`` values amalia-edge runs. Source: llama.cpp src/llama-arch.cpp
# LLM_ARCH_LLAMA ("llama"); amalia_edge.checkpoint.architectures maps LlamaForCausalLM and
# MistralForCausalLM (EuroLLM, AMÁLIA, Mistral) to it.
SUPPORTED_GGUF_ARCHITECTURES: dict[str, str] = {
    "llama": "Llama 2/3, EuroLLM, AMÁLIA, Mistral (LlamaForCausalLM / MistralForCausalLM)",
}


@dataclass(frozen=True)
class ModelShape:
    """The numbers a memory or speed estimate needs, from the GGUF header or the manifest."""

    architecture: str
    n_layers: int
    n_embd: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    n_ff: int
    n_vocab: int
    n_ctx_train: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Artifact:
    """One runnable model file: a GGUF, an ONNX model directory/file or a TensorRT engine.

    ``weight_bytes`` is what the weights occupy in memory; ``decode_weight_bytes`` is what
    one decode step reads (all weights except the token-embedding rows not looked up; when
    the output layer is tied to the embeddings the table is read in full anyway).
    ``problem`` is set when the manifest lists the artifact but it cannot be used (missing
    file, bad header); selection shows it as the reason.
    """

    kind: str
    quant: str
    path: Path
    size: int
    sha256: str | None = None
    bpw: float | None = None
    params: int | None = None
    shape: ModelShape | None = None
    quality: Mapping[str, Any] | None = None
    weight_bytes: int | None = None
    decode_weight_bytes: int | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict, repr=False)
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)
    problem: str | None = None

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.quant}"

    @property
    def chat_template(self) -> str | None:
        t = self.metadata.get("tokenizer.chat_template")
        return t if isinstance(t, str) else None

    def content_id(self) -> str:
        """sha256 from the manifest, else a cheap identity (name, size, mtime) for caches."""
        if self.sha256:
            return self.sha256
        st = self.path.stat()
        return f"{self.path.name}:{st.st_size}:{st.st_mtime_ns}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "quant": self.quant,
            "path": str(self.path),
            "size": self.size,
            "sha256": self.sha256,
            "bpw": self.bpw,
            "shape": self.shape.to_dict() if self.shape else None,
            "quality": dict(self.quality) if self.quality else None,
            "problem": self.problem,
        }


@dataclass
class ModelSource:
    """What MODEL resolved to: a directory with a manifest, or a single GGUF file."""

    path: Path
    kind: str  # "directory" | "gguf"
    artifacts: list[Artifact]
    name: str
    manifest: Any = None  # amalia_edge.artifacts.manifest.Manifest for directories

    def usable(self) -> list[Artifact]:
        return [a for a in self.artifacts if a.problem is None]


def _file_type_name(header: GGUFHeader) -> str:
    """The quant label of a GGUF: ``general.file_type`` as llama.cpp names it (e.g. Q4_K_M)."""
    ftype = header.metadata.get("general.file_type")
    if isinstance(ftype, int):
        try:
            from gguf import LlamaFileType

            return LlamaFileType(ftype).name.removeprefix("MOSTLY_")
        except ValueError:
            pass
    counts: dict[str, int] = {}
    for t in header.tensors:
        counts[t.type_name] = counts.get(t.type_name, 0) + t.nbytes
    return max(counts, key=lambda k: counts[k]) if counts else "unknown"


def shape_from_header(header: GGUFHeader) -> ModelShape:
    """Model shape from ``{arch}.*`` keys (names: gguf-py ``Keys.LLM`` / ``Keys.Attention``)."""
    arch = header.architecture or "?"
    n_embd = header.arch_int("embedding_length") or 0
    n_heads = header.arch_int("attention.head_count") or 1
    n_kv = header.arch_int("attention.head_count_kv") or n_heads
    head_dim = header.arch_int("attention.key_length") or (n_embd // n_heads if n_heads else 0)
    n_vocab = header.arch_int("vocab_size") or header.array_lengths.get("tokenizer.ggml.tokens", 0)
    return ModelShape(
        architecture=arch,
        n_layers=header.arch_int("block_count") or 0,
        n_embd=n_embd,
        n_heads=n_heads,
        n_kv_heads=n_kv,
        head_dim=head_dim,
        n_ff=header.arch_int("feed_forward_length") or 0,
        n_vocab=n_vocab,
        n_ctx_train=header.arch_int("context_length") or 0,
    )


def inspect_gguf(gguf_path: str | os.PathLike[str], **overrides: Any) -> Artifact:
    """Validate a GGUF from its header and describe it; raise ArtifactError when unusable.

    ``overrides`` (manifest values: quant, sha256, quality, ...) replace what the header says.
    """
    path = Path(gguf_path)
    header = read_gguf_header(path)
    arch = header.architecture
    if arch not in SUPPORTED_GGUF_ARCHITECTURES:
        supported = ", ".join(SUPPORTED_GGUF_ARCHITECTURES)
        raise UnsupportedArchitectureError(
            f"{path} is a GGUF of architecture {arch!r}, which amalia-edge does not run",
            fix=f"use a model of a supported architecture ({supported})",
        )
    names = {t.name for t in header.tensors}
    weights = header.tensor_bytes()
    embd = sum(t.nbytes for t in header.tensors if t.name == "token_embd.weight")
    # Untied models read one embedding row per token; tied ones read the table as the output.
    decode = weights - embd if "output.weight" in names else weights
    n_params = sum(_numel(t.shape) for t in header.tensors)
    fields: dict[str, Any] = {
        "kind": "gguf",
        "quant": _file_type_name(header),
        "path": path,
        "size": header.file_size,
        "bpw": (weights * 8 / n_params) if n_params else None,
        "params": n_params,
        "shape": shape_from_header(header),
        "weight_bytes": weights,
        "decode_weight_bytes": decode,
        "metadata": {
            k: v
            for k, v in header.metadata.items()
            if k.startswith(("general.", "tokenizer.chat_template", f"{arch}."))
            or k in ("tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id")
        },
    }
    template = header.metadata.get("tokenizer.chat_template")
    if isinstance(template, str):
        from amalia_edge.runtime.chat import ChatTemplateError, check_chat_template

        try:
            check_chat_template(template)
        except ChatTemplateError as exc:
            raise ArtifactError(f"{path}: {exc.problem}", fix=exc.fix) from None
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return Artifact(**fields)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _from_manifest(directory: Path) -> ModelSource:
    from amalia_edge.artifacts.manifest import artifact_problem, load_manifest

    manifest = load_manifest(directory)
    artifacts: list[Artifact] = []
    shape: ModelShape | None = None
    for entry in manifest.artifacts:
        path = directory / entry.file
        common: dict[str, Any] = {
            "kind": entry.kind,
            "quant": entry.quant,
            "path": path,
            "size": entry.size,
            "sha256": entry.sha256,
            "bpw": entry.bpw,
            "params": entry.params,
            "quality": entry.quality,
            "extra": dict(entry.extra),
        }
        # Missing, resized or (hashed once per file state) changed since it was built.
        problem = artifact_problem(directory, entry)
        if problem is not None:
            artifacts.append(Artifact(**common, problem=problem))
            continue
        if entry.kind == "gguf":
            try:
                art = inspect_gguf(path, **common)
            except ArtifactError as exc:
                artifacts.append(Artifact(**common, problem=exc.problem))
                continue
            shape = shape or art.shape
            artifacts.append(art)
        else:
            # An ONNX graph keeps its weights in an external-data file beside it; the manifest
            # records that file's size in ``extra["data_size"]`` (convert/onnx.py).
            data = int((entry.extra or {}).get("data_size") or 0)
            artifacts.append(Artifact(**common, weight_bytes=entry.size + data))
    # ONNX / TensorRT entries carry no GGUF header: borrow the shape from a GGUF of the same
    # model, else from the manifest's model record.
    shape = shape or _shape_from_manifest_model(manifest.model)
    artifacts = [a if a.shape is not None else replace(a, shape=shape) for a in artifacts]
    name = str(manifest.model.get("name") or directory.name)
    return ModelSource(directory, "directory", artifacts, name, manifest)


def _shape_from_manifest_model(model: Mapping[str, Any]) -> ModelShape | None:
    try:
        n_heads = int(model["num_attention_heads"])
        n_embd = int(model["hidden_size"])
        return ModelShape(
            architecture=str(model.get("architecture", "?")),
            n_layers=int(model["num_hidden_layers"]),
            n_embd=n_embd,
            n_heads=n_heads,
            n_kv_heads=int(model.get("num_key_value_heads", n_heads)),
            head_dim=int(model.get("head_dim") or n_embd // n_heads),
            n_ff=int(model.get("intermediate_size", 0)),
            n_vocab=int(model.get("vocab_size", 0)),
            n_ctx_train=int(model.get("context_length", model.get("max_position_embeddings", 0))),
        )
    except (KeyError, TypeError, ValueError):
        return None


def resolve_model(model: str | os.PathLike[str] | None = None) -> ModelSource:
    """Turn MODEL (artifacts directory or .gguf file) into a :class:`ModelSource`.

    ``None`` means the bundled demo model: :func:`default_model_path` (converted into the
    user cache on first use, which takes seconds). Raises ArtifactError for a path that does
    not exist, a directory without a manifest, or a file that is not a usable GGUF.
    """
    if model is None:
        model = default_model_path()
    path = Path(model).expanduser()
    if not path.exists():
        raise ArtifactError(
            f"model {str(model)!r} does not exist",
            fix="pass an artifacts directory made by `amalia-edge quantize` or a .gguf file",
        )
    if path.is_dir():
        if not (path / "manifest.json").exists():
            ggufs = sorted(path.glob("*.gguf"))
            hint = f" (it holds {ggufs[0].name}: pass that file)" if ggufs else ""
            raise ArtifactError(
                f"{path} is a directory without manifest.json{hint}",
                fix="pass an artifacts directory made by `amalia-edge quantize` or a .gguf file",
            )
        return _from_manifest(path)
    art = inspect_gguf(path)
    name = str(art.metadata.get("general.name") or path.stem)
    return ModelSource(path, "gguf", [art], name)


# --- the bundled demo model as the default MODEL -------------------------------------------

# What the demo's cached artifacts directory holds: the same set `amalia-edge quantize`
# writes by default (amalia_edge.artifacts.quant_types.DEFAULT_TYPES), so selection has a real
# choice to explain. Q4_K_M comes from llama.cpp's quantizer and is left out when
# llama-cpp-python is not installed (F16 and Q8_0 are written by amalia-edge itself).
DEMO_GGUF_TYPES: tuple[str, ...] = ("F16", "Q8_0", "Q4_K_M")
_NEEDS_LLAMA_CPP = frozenset({"Q4_K_M"})


def demo_cache_root() -> Path:
    """``<user cache dir>/amalia-edge`` (platformdirs; honours ``XDG_CACHE_HOME`` on Linux)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("amalia-edge", appauthor=False))


def demo_gguf_types() -> tuple[str, ...]:
    """:data:`DEMO_GGUF_TYPES`, less those needing llama.cpp's quantizer when it is absent."""
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is not None:
        return DEMO_GGUF_TYPES
    return tuple(t for t in DEMO_GGUF_TYPES if t not in _NEEDS_LLAMA_CPP)


def _demo_ready(directory: Path, types: Sequence[str]) -> bool:
    """Whether ``directory`` already holds every wanted GGUF, at the size its manifest says.

    A cheap check (no hashing, no numpy): when it fails, :func:`quantize` is run, which
    itself reuses whatever is intact (by hash) and rebuilds the rest.
    """
    import json

    try:
        data = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
        have: dict[str, bool] = {}
        for entry in data["artifacts"]:
            if entry.get("kind") != "gguf":
                continue
            f = directory / entry["file"]
            have[str(entry["quant"]).upper()] = f.is_file() and f.stat().st_size == entry["size"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return all(have.get(t.upper(), False) for t in types)


def default_model_path(*, progress: bool = False) -> Path:
    """The artifacts directory of the bundled demo model: the default MODEL of every command.

    ``<user cache>/amalia-edge/demo-<checkpoint fingerprint[:12]>/``, made on first use from
    ``amalia_edge/data/demo`` with :func:`amalia_edge.convert.pipeline.quantize` (GGUF
    :func:`demo_gguf_types`, no importance matrix: the ~17 s of CPU one costs buys nothing
    worth it on a 5 M-parameter demo) and reused afterwards; a new demo checkpoint (new
    fingerprint) gets a new directory. The first call logs one line on stderr and takes a
    few seconds, so the TUI calls this from a worker thread. ``progress``: per-tensor bars.

    Raises :class:`~amalia_edge.errors.AmaliaEdgeError` subclasses (one line, with the fix)
    when the demo checkpoint is missing or the cache directory cannot be written.
    """
    import sys

    from amalia_edge.checkpoint import open_checkpoint

    ckpt = open_checkpoint(None, tokenizer=False)
    out = demo_cache_root() / f"demo-{ckpt.fingerprint()[:12]}"
    types = demo_gguf_types()
    if _demo_ready(out, types):
        return out
    try:
        with _exclusive(out.with_name(out.name + ".lock")):
            # Another process (the TUI and a `generate`, say) may have finished it meanwhile.
            if _demo_ready(out, types):
                return out
            print(
                f"amalia-edge: preparing the bundled demo model in {out} (first run only)",
                file=sys.stderr,
                flush=True,
            )
            from amalia_edge.convert.pipeline import quantize

            quantize(None, out, types, imatrix="none", progress=progress)
    except OutputError as exc:  # the cache is not writable: say where else to go
        raise OutputError(
            f"cannot prepare the bundled demo model in {out} ({exc.problem})",
            fix="set XDG_CACHE_HOME to a writable directory, or pass MODEL explicitly",
        ) from None
    return out


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an advisory lock on ``lock_path`` (POSIX ``flock``; a no-op where there is none)."""
    try:
        import fcntl
    except ImportError:  # Windows: concurrent first runs just duplicate the work
        yield
        return
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(lock_path, "a")  # noqa: SIM115 - held open for the lock's lifetime
    except OSError as exc:
        raise OutputError(
            f"cannot create {lock_path} ({exc.strerror})", fix="check the disk"
        ) from None
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
