"""``amalia-edge quantize`` as a library call: checkpoint → GGUF files (+ ONNX) + manifest.

:func:`quantize` opens and validates the checkpoint, checks every option and the output
directory before writing anything, then:

1. writes the types the GGUF writer makes directly (F32/F16/BF16/Q8_0) from the checkpoint;
2. writes one high-precision GGUF (the checkpoint's own precision: BF16, F16 or F32; a
   requested file is reused, else a temporary one) and runs llama.cpp's quantizer on it for
   every other type;
3. exports ONNX precisions when asked (:mod:`amalia_edge.convert.onnx`);
4. writes ``manifest.json`` last, atomically.

Every file is written beside its target under a temporary name and renamed when complete; a
killed run leaves only temporaries, which the next run deletes. A re-run reuses each artifact
whose manifest entry matches the source fingerprint, tool versions and importance matrix and
whose file still has the recorded sha256; ``force=True`` rebuilds everything.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from amalia_edge import __version__
from amalia_edge.artifacts import quant_types
from amalia_edge.artifacts.atomic import TMP_PREFIX, os_error_message, remove_stale_temporaries
from amalia_edge.artifacts.manifest import (
    MANIFEST_NAME,
    ArtifactEntry,
    Manifest,
    load_manifest,
    remember_verified,
    sha256_file,
)
from amalia_edge.artifacts.quant_types import QuantType
from amalia_edge.errors import (
    ArtifactError,
    BackendUnavailableError,
    ConversionError,
    ImatrixError,
    OutputError,
    QuantTypeError,
)
from amalia_edge.progress import Progress

if TYPE_CHECKING:
    from amalia_edge.checkpoint import Checkpoint

log = logging.getLogger(__name__)


@dataclass
class QuantizeResult:
    """What :func:`run_quantize` did: the manifest, and which artifacts were built or reused."""

    out_dir: Path
    manifest: Manifest
    built: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)


def safe_name(name: str) -> str:
    """A model name as a file-name stem (llama.cpp style: ``EuroLLM-9B-Instruct``)."""
    stem = re.sub(r"[^\w.\-]+", "-", name.strip()).strip("-.")
    return stem or "model"


def gguf_file_name(model_name: str, quant: str) -> str:
    """``<Name>-<QUANT>.gguf``, llama.cpp's naming habit (e.g. ``Tiny-PT-Q4_K_M.gguf``)."""
    return f"{safe_name(model_name)}-{quant.upper()}.gguf"


def tool_versions() -> dict[str, str | None]:
    """Versions recorded in the manifest (no heavy imports)."""
    from importlib import metadata

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {
        "amalia_edge": __version__,
        "gguf": version("gguf"),
        "llama_cpp_python": version("llama_cpp_python"),
        "onnx": version("onnx"),
    }


def _parse_types(gguf_types: str | Sequence[str] | None) -> list[QuantType]:
    if isinstance(gguf_types, str) and gguf_types.strip().lower() == "none":
        return []  # ONNX only
    if gguf_types is None or isinstance(gguf_types, str):
        types = quant_types.parse_list(gguf_types)
    else:
        types = quant_types.parse_list(",".join(gguf_types)) if gguf_types else []
    for qt in types:
        if qt.moe_only:
            raise QuantTypeError(
                f"{qt.name} is only for mixture-of-experts models",
                fix="pick a dense type such as Q4_K_M",
            )
    return types


def _check_out(out: Path) -> None:
    """Refuse an ``--out`` that exists but is not a directory (before anything is written)."""
    probe = out
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise OutputError(
            f"--out {out}: {probe} is a file, not a directory",
            fix="choose a directory for --out (it is created if missing)",
        )


@contextlib.contextmanager
def locked_out(out: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the output directory for a whole run.

    A second ``quantize`` into the same ``--out`` is refused at once (it would delete the
    first one's temporary files as stale and make it fail). The lock is taken on the
    directory itself, so nothing is left behind, and is released by the kernel when the
    process dies, so a killed run never leaves the folder locked.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks, no guard
        yield
        return
    try:
        fd = os.open(out, os.O_RDONLY)
    except OSError as exc:
        raise os_error_message(exc, out / MANIFEST_NAME) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(
                f"another `amalia-edge quantize` is writing into {out}",
                fix="wait for it to finish, or choose another --out",
            ) from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _prepare_out(out: Path) -> None:
    """Create ``out`` and prove it is writable before any work; clean a killed run's temps.

    Call it while holding :func:`locked_out`: the temporaries it deletes are only stale
    when no other run owns the folder.
    """
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=TMP_PREFIX, suffix="probe", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise os_error_message(exc, out / "manifest.json") from None
    for p in remove_stale_temporaries(out):
        log.info("removed %s left by an interrupted run", p.name)


def _load_old(out: Path) -> Manifest | None:
    if not (out / MANIFEST_NAME).exists():
        return None
    try:
        return load_manifest(out)
    except ArtifactError as exc:
        log.warning("ignoring the existing manifest (%s); everything is rebuilt", exc.problem)
        return None


def _check_imatrix(path: Path, ckpt: Checkpoint, complete: bool = False) -> None:
    """Refuse an unreadable ``--imatrix FILE``, or one made for another model.

    Raises :class:`ImatrixError` naming the first mismatching tensor (llama.cpp's quantizer
    would otherwise fail midway, or weight the wrong tensors).
    ``complete``: a requested type needs an importance matrix for every layer (IQ2_XXS and
    friends: llama.cpp stops at the first tensor without one), so a matrix of a model with
    fewer layers is refused too.
    """
    from amalia_edge.convert.imatrix import validate_imatrix
    from amalia_edge.convert.quantize import load_imatrix

    if path.is_dir():
        raise ImatrixError(
            f"--imatrix {path} is a directory",
            fix="pass the imatrix GGUF file itself (e.g. DIR/imatrix-pt.gguf), auto or none",
        )
    if path.exists() and not path.is_file():
        raise ImatrixError(f"--imatrix {path} is not a regular file", fix="pass the GGUF file")
    imx = load_imatrix(path)
    validate_imatrix(imx, ckpt)
    if complete:
        from amalia_edge.convert.tensor_names import gguf_name, spec_for

        spec = spec_for(ckpt.config.architecture)
        for hf in ckpt.weight_names():
            g = gguf_name(spec, hf)
            is_matmul = bool(g) and str(g).startswith("blk.")
            if is_matmul and len(ckpt.tensor_infos[hf].shape) == 2 and g not in imx.data:
                raise ImatrixError(
                    f"importance matrix {path.name} has no entry for {g}",
                    fix="it was made for another model (fewer layers?): use --imatrix "
                    "auto to compute one for this model",
                )


def _auto_imatrix(
    module: Any,
    ckpt: Checkpoint,
    out: Path,
    calibration: str | os.PathLike[str] | None,
    progress: bool,
    force: bool = False,
    expect_sha256: str | None = None,
) -> Path:
    """Make (or reuse) the pt-PT imatrix in ``out`` with ``convert.imatrix.ensure_imatrix``.

    ``force`` recomputes it; ``expect_sha256`` (from the previous manifest) makes a file whose
    bytes changed since that run be recomputed rather than reused.
    """
    from amalia_edge.convert.quantize import load_imatrix

    bar = Progress("imatrix", enabled=progress, unit="chunks")
    path = Path(
        module.ensure_imatrix(
            ckpt,
            out,
            calibration,
            progress=lambda done, total: bar(done, total, "pt-PT text"),
            force=force,
            expect_sha256=expect_sha256,
        )
    )
    # No progress at all: ensure_imatrix found a matching file and computed nothing.
    bar.close(f"→ {path.name}" if bar.total else path.name, reused=not bar.total)
    load_imatrix(path)
    return path


def _intermediate_type(ckpt: Checkpoint) -> str:
    """Quantize from the checkpoint's own precision, so nothing is rounded twice."""
    dtype = str(getattr(ckpt, "dtype", "F16")).upper()
    return dtype if dtype in ("BF16", "F16", "F32") else "F16"


def _tensor_bpw(path: Path, params: int) -> float | None:
    """Bits per weight as llama.cpp reports it: tensor bytes × 8 / parameters."""
    import gguf

    if params <= 0:
        return None
    try:
        reader = gguf.GGUFReader(path)
        nbytes = sum(int(t.n_bytes) for t in reader.tensors)
    except (ValueError, KeyError):
        # A ggml type newer than this gguf-py (Q1_0, Q2_0 in gguf 0.19): whole file instead.
        nbytes = path.stat().st_size
    return round(nbytes * 8 / params, 4)


# Room left on the output disk beyond the files themselves (manifest, file-system overhead).
_SPACE_MARGIN = 64 << 20


def _check_space(
    ckpt: Checkpoint,
    out: Path,
    writer_types: list[QuantType],
    llama_types: list[QuantType],
    intermediate: str | None,
    params: int,
) -> None:
    """Refuse before writing anything when the files to build cannot fit on the disk.

    Sizes: exact tensor bytes for the writer's types (and a temporary intermediate), the
    table's nominal bits per weight for llama.cpp's types. Replaced files count in full:
    each new file exists beside the old one until its rename.
    """
    from amalia_edge.convert import gguf as gguf_writer

    need = sum(sum(t.nbytes for t in gguf_writer.plan(ckpt, q.name)) for q in writer_types)
    need += sum(int(params * q.bpw / 8) for q in llama_types)
    if intermediate is not None:
        need += sum(t.nbytes for t in gguf_writer.plan(ckpt, intermediate))
    if not need:
        return
    free = shutil.disk_usage(out).free
    if need + _SPACE_MARGIN > free:
        gib = 1 << 30
        raise OutputError(
            f"{out} has {free / gib:.1f} GiB free but these files need about "
            f"{(need + _SPACE_MARGIN) / gib:.1f} GiB",
            fix="free some space, choose another --out, or ask for fewer --gguf types",
        )


def _reusable(
    entry: ArtifactEntry | None,
    out: Path,
    file: str,
    fingerprint: str,
    versions: dict[str, str | None],
    imatrix_sha: str | None,
) -> bool:
    if entry is None or entry.file != file or entry.source_fingerprint != fingerprint:
        return False
    if any(entry.versions.get(k) != v for k, v in versions.items()):
        return False
    if (entry.extra.get("imatrix") or {}).get("sha256") != imatrix_sha:
        return False
    return entry.verify(out, check_hash=True)


def run_quantize(
    source: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] = "artifacts",
    gguf_types: str | Sequence[str] | None = None,
    imatrix: str | os.PathLike[str] | None = "auto",
    calibration: str | os.PathLike[str] | None = None,
    onnx_types: Sequence[str] = (),
    threads: int | None = None,
    force: bool = False,
    progress: bool = True,
) -> QuantizeResult:
    """Do the work of :func:`quantize` and say what was built and what was reused."""
    from amalia_edge.checkpoint import open_checkpoint
    from amalia_edge.convert import gguf as gguf_writer

    # Every check that needs no writing comes first: a bad option leaves OUT untouched.
    _check_out(Path(out).expanduser())
    types = _parse_types(gguf_types)
    onnx_list = [p.strip().lower() for p in onnx_types if p.strip()]
    if onnx_list:
        try:
            from amalia_edge.convert.onnx import precision_spec
        except ModuleNotFoundError as exc:
            raise ConversionError(
                f"ONNX export is not available ({exc.name} is missing)",
                fix="pip install 'amalia-edge[onnx]', or drop --onnx",
            ) from None
        for precision in onnx_list:
            precision_spec(precision)
    ckpt = open_checkpoint(None if source is None else str(source))
    if threads is not None and threads < 0:
        raise ConversionError(
            f"--threads must be 0 (every core) or more, got {threads}", fix="omit it"
        )
    params = sum(math.prod(t.shape) for t in gguf_writer.plan(ckpt, "F32"))
    llama_types = [t for t in types if t.writer == "llama.cpp"]
    have_llama = importlib.util.find_spec("llama_cpp") is not None
    mode = "none" if imatrix is None else str(imatrix)
    imx_path: Path | None = None
    imx_module: Any | None = None
    if mode.lower() == "auto":
        if llama_types and have_llama:
            from amalia_edge.convert import imatrix as imx_module
    elif mode.lower() != "none":
        imx_path = Path(mode).expanduser()
        _check_imatrix(imx_path, ckpt, complete=any(t.needs_imatrix for t in llama_types))
    if llama_types and not have_llama:
        raise BackendUnavailableError(
            "llama-cpp-python is not installed, so llama.cpp's quantizer is unavailable for "
            + ", ".join(t.name for t in llama_types),
            fix="pip install 'amalia-edge[llama]', or only ask for f32,f16,bf16,q8_0",
        )
    missing = [
        t.name for t in llama_types if t.needs_imatrix and imx_path is None and imx_module is None
    ]
    if missing:
        raise QuantTypeError(
            f"{', '.join(missing)} need{'s' if len(missing) == 1 else ''} an importance matrix",
            fix="pass --imatrix FILE (a llama-imatrix GGUF) or --imatrix auto, or drop "
            + ", ".join(missing),
        )

    if imx_module is not None:
        # Read the calibration text now: a bad --calibration must fail before OUT exists.
        check_calibration = getattr(imx_module, "read_calibration", None)
        if check_calibration is not None:
            check_calibration(calibration)

    out_dir = Path(out).expanduser()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_error_message(exc, out_dir / MANIFEST_NAME) from None
    with locked_out(out_dir):
        return _build(
            ckpt,
            out_dir,
            types,
            onnx_list,
            params,
            imx_path,
            imx_module,
            calibration,
            threads,
            force,
            progress,
        )


def _build(
    ckpt: Checkpoint,
    out_dir: Path,
    types: list[QuantType],
    onnx_list: list[str],
    params: int,
    imx_path: Path | None,
    imx_module: Any | None,
    calibration: str | os.PathLike[str] | None,
    threads: int | None,
    force: bool,
    progress: bool,
) -> QuantizeResult:
    """The writing half of :func:`run_quantize`, run under the output directory's lock."""
    from amalia_edge.convert import gguf as gguf_writer
    from amalia_edge.convert.quantize import load_imatrix

    _prepare_out(out_dir)
    versions = tool_versions()
    fingerprint = ckpt.fingerprint()
    old = None if force else _load_old(out_dir)
    if imx_module is not None:
        # The sha256 the last run recorded for the auto imatrix (not for an --imatrix FILE).
        old_imx = (old.source.get("imatrix") if old is not None else None) or {}
        auto_name = getattr(imx_module, "IMATRIX_FILE", None)
        expect = None
        if isinstance(old_imx, dict) and Path(str(old_imx.get("file", ""))).name == auto_name:
            expect = old_imx.get("sha256")
        imx_path = _auto_imatrix(
            imx_module, ckpt, out_dir, calibration, progress, force=force, expect_sha256=expect
        )
    imx_sha = sha256_file(imx_path) if imx_path is not None else None

    writer_versions = {"amalia_edge": versions["amalia_edge"], "gguf": versions["gguf"]}
    llama_versions = {**writer_versions, "llama_cpp_python": versions["llama_cpp_python"]}
    result = QuantizeResult(out_dir, Manifest())
    entries: dict[str, ArtifactEntry] = {}

    def name_of(qt: QuantType) -> str:
        return gguf_file_name(ckpt.name, qt.name)

    def old_entry(kind: str, quant: str) -> ArtifactEntry | None:
        return old.find(kind, quant) if old is not None else None

    def record(qt: QuantType, path: Path, vers: dict[str, str | None], imx: bool) -> None:
        extra: dict[str, Any] = {"file_type": qt.ftype}
        if imx and imx_path is not None:
            extra["imatrix"] = {"file": imx_path.name, "sha256": imx_sha}
        digest = sha256_file(path)
        remember_verified(path, digest)  # so the first load does not hash it again
        entries[qt.name] = ArtifactEntry(
            kind="gguf",
            quant=qt.name,
            file=path.name,
            size=path.stat().st_size,
            sha256=digest,
            bpw=_tensor_bpw(path, params),
            params=params,
            source_fingerprint=fingerprint,
            versions=dict(vers),
            extra=extra,
        )
        result.built.append(qt.name)

    # What is current already (checked by hash), and what has to be built.
    todo_writer: list[QuantType] = []
    todo: list[QuantType] = []
    for qt in types:
        amalia = qt.writer == "amalia"
        entry = old_entry("gguf", qt.name)
        vers = writer_versions if amalia else llama_versions
        if _reusable(entry, out_dir, name_of(qt), fingerprint, vers, None if amalia else imx_sha):
            assert entry is not None
            entries[qt.name] = entry
            result.reused.append(qt.name)
        else:
            (todo_writer if amalia else todo).append(qt)
    mid_name = _intermediate_type(ckpt)
    need_mid = bool(todo) and mid_name not in [t.name for t in types]
    _check_space(ckpt, out_dir, todo_writer, todo, mid_name if need_mid else None, params)

    # 1. Types the GGUF writer makes directly.
    for qt in todo_writer:
        bar = Progress(qt.name, enabled=progress)
        res = gguf_writer.write_gguf(ckpt, out_dir / name_of(qt), qt.name, progress=bar)
        bar.close(f"→ {res.path.name}")
        record(qt, res.path, writer_versions, imx=False)

    # 2. Types llama.cpp's quantizer makes from one high-precision GGUF.
    if todo:
        from amalia_edge.convert.quantize import llama_quantize

        imx = load_imatrix(imx_path) if imx_path is not None else None
        temp_mid: Path | None = None
        if mid_name in entries:
            mid_path = out_dir / entries[mid_name].file
        else:
            fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=f"-{mid_name}.gguf", dir=out_dir)
            os.close(fd)
            temp_mid = mid_path = Path(tmp)
        try:
            if temp_mid is not None:
                bar = Progress(mid_name, enabled=progress)
                gguf_writer.write_gguf(ckpt, temp_mid, mid_name, progress=bar)
                bar.close("(intermediate)")
            for qt in todo:
                dst = out_dir / name_of(qt)
                bar = Progress(qt.name, enabled=progress)
                llama_quantize(mid_path, dst, qt, imatrix=imx, threads=threads, progress=bar)
                bar.close(f"→ {dst.name}")
                record(qt, dst, llama_versions, imx=True)
        finally:
            if temp_mid is not None:
                temp_mid.unlink(missing_ok=True)

    # 3. ONNX.
    for precision in onnx_list:
        entry = old_entry("onnx", precision)
        if entry is not None and _reusable_onnx(entry, out_dir, fingerprint, versions):
            entries[f"onnx:{precision}"] = entry
            result.reused.append(f"onnx:{precision}")
            continue
        from amalia_edge.convert.onnx import export_onnx

        bar = Progress(f"onnx {precision}", enabled=progress)
        onnx_entry = export_onnx(ckpt, out_dir, precision, _name_progress(bar))
        bar.close(f"→ {onnx_entry.file}")
        onnx_entry.versions = {**writer_versions, "onnx": versions["onnx"]}
        entries[f"onnx:{precision}"] = onnx_entry
        result.built.append(f"onnx:{precision}")

    # 4. The manifest, last: this run's entries plus still-valid ones from earlier runs.
    manifest = Manifest(
        model={
            "name": ckpt.name,
            "architecture": ckpt.config.architecture,
            "gguf_architecture": ckpt.config.gguf_arch,
            "params": params,
            "size_label": ckpt.size_label,
            "license": ckpt.license,
            "vocab_size": ckpt.config.vocab_size,
            "context_length": ckpt.config.max_position_embeddings,
            "dtype": _intermediate_type(ckpt),
        },
        # Paths relative to the artifacts folder: the same build in two folders is identical.
        source={"path": _relative(ckpt.path, out_dir), "fingerprint": fingerprint},
        versions=versions,
    )
    if imx_path is not None:
        manifest.source["imatrix"] = {"file": _relative(imx_path, out_dir), "sha256": imx_sha}
    if old is not None:
        for entry in old.artifacts:
            if entry.source_fingerprint == fingerprint and entry.verify(out_dir, check_hash=False):
                manifest.upsert(entry)
    for entry in entries.values():
        manifest.upsert(entry)
    manifest.write(out_dir)
    result.manifest = manifest
    return result


def _relative(path: Path, out_dir: Path) -> str:
    """``path`` relative to the artifacts folder (POSIX separators)."""
    try:
        return Path(os.path.relpath(path.resolve(), out_dir.resolve())).as_posix()
    except ValueError:  # pragma: no cover - another drive on Windows
        return path.name


def _name_progress(bar: Progress) -> Callable[[str], None]:
    """Adapt the bar to progress callbacks that only pass the current tensor's name."""

    def update(name: str) -> None:
        bar(0, 0, name)

    return update


def _reusable_onnx(
    entry: ArtifactEntry, out: Path, fingerprint: str, versions: dict[str, str | None]
) -> bool:
    if entry.source_fingerprint != fingerprint:
        return False
    if entry.versions.get("amalia_edge") != versions["amalia_edge"]:
        return False
    if not entry.verify(out):
        return False
    data_file = entry.extra.get("data_file")
    if data_file:
        data = out / str(data_file)
        with contextlib.suppress(OSError):
            return bool(
                data.stat().st_size == entry.extra.get("data_size")
                and sha256_file(data) == entry.extra.get("data_sha256")
            )
        return False
    return True


def quantize(
    source: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] = "artifacts",
    gguf_types: str | Sequence[str] | None = None,
    imatrix: str | os.PathLike[str] | None = "auto",
    calibration: str | os.PathLike[str] | None = None,
    onnx_types: Sequence[str] = (),
    threads: int | None = None,
    force: bool = False,
    progress: bool = True,
) -> Manifest:
    """Convert ``source`` to GGUF (and ONNX) in ``out``; return the manifest written there.

    ``source``: checkpoint directory, HF-cache repo id, or None for the bundled demo model.
    ``gguf_types``: comma list or sequence of llama.cpp type names (case-insensitive);
    None means :data:`amalia_edge.artifacts.quant_types.DEFAULT_TYPES`.
    ``imatrix``: ``"auto"`` (make one from pt-PT calibration text when a llama.cpp type is
    requested and the imatrix module is installed), ``"none"``, or a GGUF imatrix path.
    ``threads``: quantizer threads (None = every core). ``force``: rebuild even what is
    reusable. ``progress``: per-tensor progress bars on stderr.

    Raises :class:`amalia_edge.errors.AmaliaEdgeError` subclasses (one line, with the fix)
    before writing anything for bad input; a failure midway leaves completed files, no half
    file, and the previous manifest.
    """
    return run_quantize(
        source, out, gguf_types, imatrix, calibration, onnx_types, threads, force, progress
    ).manifest


__all__ = ["QuantizeResult", "gguf_file_name", "quantize", "run_quantize"]
