"""Build TensorRT engines from the exported ONNX decoder, on the device, and cache them.

TensorRT engines are specific to the GPU (compute capability) and the TensorRT version, and
the "hardware compatible" engine mode is unavailable on Jetson (TensorRT developer guide,
"Hardware Compatibility": supported on Ampere and later *discrete* GPUs only). So the
workstation ships ONNX and the Orin builds the engine once, here, and caches it.

Cache layout, inside the artifacts directory::

    engines/<key>.engine       serialized engine
    engines/<key>.json         EngineMeta: what it was built from and for, build time
    engines/timing-<gpu>.cache persistent timing cache (shared by all builds on this GPU)

``<key>`` is a digest of :class:`EngineKey` (GPU name, compute capability, TensorRT
version, ONNX sha256, precision, optimization profile). An engine whose recorded key does
not match what this machine needs is *stale*: it is never deserialized, the reasons are
reported, and a new engine is built.

Pure parts (profiles, keys, staleness, memory and build-time estimates) need no GPU and are
unit-tested; :func:`build_engine` uses the TensorRT 10 Python API for real.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amalia_edge.artifacts.atomic import atomic_write_bytes, atomic_write_json
from amalia_edge.artifacts.manifest import sha256_file
from amalia_edge.artifacts.onnx import GraphInfo, check_external_data, read_graph_info
from amalia_edge.errors import AmaliaEdgeError, ConversionError
from amalia_edge.runtime.cuda import (
    GpuIdentity,
    current_gpu,
    import_tensorrt,
    trt_logger,
)

log = logging.getLogger(__name__)

ENGINE_DIR = "engines"
# Bump when the way engines are built changes (flags, profile layout), so old engines go stale.
# 2: an fp32 graph is built without the FP16 flag (recipe 1 built it as FP16 but recorded fp32).
BUILD_RECIPE = 2
# The prefill chunk: prompts are fed to the engine at most this many tokens at a time.
DEFAULT_MAX_PREFILL = 512


class EngineBuildError(ConversionError):
    """A TensorRT engine could not be built (parser error, builder failure)."""


class EngineOutOfMemoryError(EngineBuildError):
    """The builder ran out of GPU memory."""


class EngineProfileError(AmaliaEdgeError):
    """A request does not fit the engine's optimization profile (context too long)."""


# --------------------------------------------------------------------------------------
# Optimization profiles
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineProfile:
    """One optimization profile for the decoder graph, batch 1.

    ``n_ctx`` bounds past + new tokens; ``max_seq`` bounds the tokens fed in one call (the
    prefill chunk); the ``opt`` point is the decode step (1 token) at half the context,
    because decoding dominates the time of a chat turn and TensorRT tunes kernels for opt.
    """

    n_ctx: int
    max_seq: int

    def shapes(self, info: GraphInfo) -> dict[str, tuple[tuple[int, ...], ...]]:
        """``{input name: (min, opt, max)}`` for every dynamic input of the graph."""
        kv, d = info.num_kv_heads, info.head_dim
        opt_past = max(0, self.n_ctx // 2 - 1)
        seq = ((1, 1), (1, 1), (1, self.max_seq))
        out: dict[str, tuple[tuple[int, ...], ...]] = {
            "input_ids": seq,
            "position_ids": seq,
            "attention_mask": ((1, 1), (1, opt_past + 1), (1, self.n_ctx)),
        }
        past = ((1, kv, 0, d), (1, kv, opt_past, d), (1, kv, self.n_ctx - 1, d))
        for name in info.past_names():
            out[name] = past
        return out

    def to_dict(self) -> dict[str, int]:
        return {"n_ctx": self.n_ctx, "max_seq": self.max_seq}

    def covers(self, n_ctx: int) -> bool:
        return self.n_ctx >= n_ctx


def profile_for(
    n_ctx: int, info: GraphInfo, max_prefill: int = DEFAULT_MAX_PREFILL
) -> EngineProfile:
    """The profile for a requested context; refuses one past the model's trained length."""
    if n_ctx < 2:
        raise EngineProfileError(f"context {n_ctx} is too small", fix="use --ctx 2 or more")
    if n_ctx > info.max_position_embeddings:
        raise EngineProfileError(
            f"context {n_ctx} exceeds the model's max_position_embeddings "
            f"({info.max_position_embeddings})",
            fix=f"use --ctx {info.max_position_embeddings} or less",
        )
    return EngineProfile(n_ctx=n_ctx, max_seq=max(1, min(max_prefill, n_ctx)))


def check_fits(profile: EngineProfile, needed: int, engine: str = "the TensorRT engine") -> None:
    """Raise a clear error when ``needed`` tokens exceed the engine's profile."""
    if needed > profile.n_ctx:
        raise EngineProfileError(
            f"{needed} tokens of context do not fit {engine}, which was built for at most "
            f"{profile.n_ctx}",
            fix=f"rebuild it with `amalia-edge build-engine ARTIFACTS --ctx {needed}` "
            "(or shorten the conversation)",
        )


# --------------------------------------------------------------------------------------
# Cache keys and staleness
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on; two equal keys may share one engine file."""

    gpu_name: str
    compute_capability: str
    tensorrt_version: str
    onnx_sha256: str
    precision: str
    profile: EngineProfile
    recipe: int = BUILD_RECIPE

    def digest(self) -> str:
        doc = dataclasses.asdict(self)
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:24]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["profile"] = self.profile.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EngineKey:
        return cls(
            gpu_name=str(d["gpu_name"]),
            compute_capability=str(d["compute_capability"]),
            tensorrt_version=str(d["tensorrt_version"]),
            onnx_sha256=str(d["onnx_sha256"]),
            precision=str(d["precision"]),
            profile=EngineProfile(**{k: int(v) for k, v in d["profile"].items()}),
            recipe=int(d.get("recipe", 0)),
        )


@dataclass(frozen=True)
class EngineMeta:
    """The sidecar JSON written next to every engine."""

    key: EngineKey
    engine_file: str
    engine_size: int
    engine_sha256: str
    onnx_file: str
    onnx_bytes: int  # graph + external data, for build-time estimates
    build_seconds: float
    built_at: float
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["key"] = self.key.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EngineMeta:
        return cls(
            key=EngineKey.from_dict(d["key"]),
            engine_file=str(d["engine_file"]),
            engine_size=int(d["engine_size"]),
            engine_sha256=str(d["engine_sha256"]),
            onnx_file=str(d["onnx_file"]),
            onnx_bytes=int(d["onnx_bytes"]),
            build_seconds=float(d["build_seconds"]),
            built_at=float(d["built_at"]),
            info=dict(d.get("info", {})),
        )


def stale_reasons(have: EngineKey, want: EngineKey) -> list[str]:
    """Why an engine built for ``have`` must not run where ``want`` is needed ([] = usable).

    A larger profile than needed is fine (it covers the request); everything else must match.
    """
    reasons = []
    if (have.gpu_name, have.compute_capability) != (want.gpu_name, want.compute_capability):
        reasons.append(
            f"built for GPU {have.gpu_name!r} (sm {have.compute_capability}), this is "
            f"{want.gpu_name!r} (sm {want.compute_capability})"
        )
    if have.tensorrt_version != want.tensorrt_version:
        reasons.append(
            f"built with TensorRT {have.tensorrt_version}, this machine has "
            f"{want.tensorrt_version} (engines are not portable across versions)"
        )
    if have.onnx_sha256 != want.onnx_sha256:
        reasons.append(
            f"built from a different ONNX file (sha256 {have.onnx_sha256[:12]}…, now "
            f"{want.onnx_sha256[:12]}…)"
        )
    if have.precision != want.precision:
        reasons.append(f"precision {have.precision}, wanted {want.precision}")
    if have.recipe != want.recipe:
        reasons.append(f"built by an older amalia-edge recipe ({have.recipe} < {want.recipe})")
    if not have.profile.covers(want.profile.n_ctx):
        reasons.append(
            f"its profile allows {have.profile.n_ctx} tokens of context, {want.profile.n_ctx} "
            "requested"
        )
    elif have.profile.max_seq < min(want.profile.max_seq, want.profile.n_ctx):
        reasons.append(
            f"its prefill chunk is {have.profile.max_seq} tokens, {want.profile.max_seq} requested"
        )
    return reasons


@dataclass(frozen=True)
class CacheLookup:
    """Result of looking for a usable engine: the engine (or None) and why others were not."""

    meta: EngineMeta | None
    path: Path | None
    stale: list[tuple[str, list[str]]]  # (engine file, reasons)

    def describe_stale(self) -> str:
        return "; ".join(f"{f}: {', '.join(r)}" for f, r in self.stale)


def engine_dir(artifacts: str | os.PathLike[str]) -> Path:
    return Path(artifacts) / ENGINE_DIR


def find_engine(cache: Path, want: EngineKey) -> CacheLookup:
    """Look in ``cache`` for an engine usable for ``want``; report the stale ones.

    An engine of the same precision whose sidecar is unreadable, whose file is missing or
    whose size differs from its sidecar is stale too (a killed build, a copied directory).
    """
    stale: list[tuple[str, list[str]]] = []
    best: tuple[EngineMeta, Path] | None = None
    if not cache.is_dir():
        return CacheLookup(None, None, [])
    for side in sorted(cache.glob("*.json")):
        try:
            meta = EngineMeta.from_dict(json.loads(side.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            stale.append((side.name, [f"unreadable metadata ({exc})"]))
            continue
        if meta.key.precision != want.precision:
            continue
        reasons = stale_reasons(meta.key, want)
        path = cache / meta.engine_file
        if not reasons:
            try:
                size = path.stat().st_size
            except OSError:
                reasons = ["engine file is missing"]
            else:
                if size != meta.engine_size:
                    reasons = [f"engine file is {size} bytes, metadata says {meta.engine_size}"]
        if reasons:
            stale.append((meta.engine_file, reasons))
        elif best is None or meta.key.profile.n_ctx < best[0].key.profile.n_ctx:
            best = (meta, path)  # smallest covering profile: least memory
    if best is None:
        return CacheLookup(None, None, stale)
    return CacheLookup(best[0], best[1], stale)


# --------------------------------------------------------------------------------------
# Estimates
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    kv_cache: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.activations


def estimate_memory(weight_bytes: int, info: GraphInfo, profile: EngineProfile) -> MemoryEstimate:
    """Device memory to run an engine (bytes), for backend selection.

    - weights: the ONNX weight bytes (the engine holds them in the same precision);
    - KV cache: past *and* present buffers, each sized for the whole profile, because the
      graph returns the concatenated cache in a new tensor every step;
    - activations: the float32 logits of the largest prefill chunk, plus 25 % of the
      weights for TensorRT's workspace and per-layer activations (an allowance, not a
      measurement: TensorRT reports the exact figure only after the engine is built,
      ``ICudaEngine.device_memory_size_v2``).
    """
    kv = 2 * info.kv_bytes_per_token * profile.n_ctx
    logits = profile.max_seq * info.vocab_size * 4
    return MemoryEstimate(weight_bytes, kv, logits + weight_bytes // 4)


def expected_build_seconds(cache: Path, onnx_bytes: int, gpu: GpuIdentity) -> float | None:
    """Expected build time from earlier builds on this GPU, scaled by ONNX size.

    Returns None when this GPU has no build on record (no invented guess).
    """
    rates = []
    if cache.is_dir():
        for side in cache.glob("*.json"):
            try:
                meta = EngineMeta.from_dict(json.loads(side.read_text(encoding="utf-8")))
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if meta.key.gpu_name == gpu.name and meta.onnx_bytes > 0 and meta.build_seconds > 0:
                rates.append(meta.build_seconds / meta.onnx_bytes)
    if not rates:
        return None
    rates.sort()
    return rates[len(rates) // 2] * onnx_bytes


# --------------------------------------------------------------------------------------
# The machine: TensorRT, CUDA (import only here)
# --------------------------------------------------------------------------------------


_OOM_PATTERNS = re.compile(
    r"out of memory|cudaErrorMemoryAllocation|Requested amount of GPU memory|"
    r"failed to allocate|OutOfMemory",
    re.IGNORECASE,
)


def is_oom(messages: list[str]) -> bool:
    """Whether TensorRT's log lines say the build ran out of memory."""
    return any(_OOM_PATTERNS.search(m) for m in messages)


def oom_error(profile: EngineProfile, precision: str) -> EngineOutOfMemoryError:
    smaller = max(64, profile.n_ctx // 2)
    hint = f"rebuild with a smaller profile (`--ctx {smaller}`)"
    if precision not in ("int4",):
        hint += " or a smaller precision (an INT4/INT8 ONNX export)"
    return EngineOutOfMemoryError(
        f"TensorRT ran out of GPU memory building the {precision} engine for "
        f"{profile.n_ctx} tokens of context",
        fix=hint + "; close other GPU programs first",
    )


def _make_progress(trt: Any, report: Callable[[str], None]) -> Any:
    class _Progress(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.t0 = time.perf_counter()

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            report(f"[{time.perf_counter() - self.t0:7.1f}s] {phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name: str, step: int) -> bool:
            return True  # returning False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            report(f"[{time.perf_counter() - self.t0:7.1f}s] {phase_name} done")

    return _Progress()


@dataclass(frozen=True)
class NetworkPlan:
    """How to ask TensorRT for a network and builder config: flags by member name, and the
    precision the engine really computes in (what its key records)."""

    network_flags: tuple[str, ...]  # NetworkDefinitionCreationFlag members
    builder_flags: tuple[str, ...]  # BuilderFlag members
    precision: str


UPGRADE_HINT = "flash JetPack 6.1 or newer (L4T 36.4+, TensorRT 10.3) with SDK Manager"


def _trt_version(version: str) -> tuple[int, int]:
    major, minor, *_ = [*(int(p) for p in re.findall(r"\d+", version)[:2]), 0, 0]
    return major, minor


def network_plan(trt_version: str, info: GraphInfo) -> NetworkPlan:
    """The network and builder flags for ``info``'s graph on TensorRT ``trt_version``.

    * TensorRT 10 (JetPack 6.1+): a strongly typed network for FP16 graphs, so the ONNX
      types decide every layer's precision; explicit batch is the only mode (the flag is
      deprecated) and is not passed.
    * TensorRT 8.5/8.6 (JetPack 6.0 ships 8.6.2): no strongly typed networks (added in
      TensorRT 9), and ``create_network(0)`` is an implicit-batch network, which the ONNX
      parser rejects, so EXPLICIT_BATCH is set; FP16 graphs get the FP16 builder flag, and
      INT8 Q/DQ graphs the INT8 flag (explicit quantization needs it before TensorRT 9).
      The INT4 export (opset-21 blocked DequantizeLinear) needs TensorRT 10: refused.
    * An FP32 graph is built in FP32 on every version: no FP16 flag, recorded as fp32.

    Raises :class:`EngineBuildError` for TensorRT older than 8.5 (no
    ``execute_async_v3``/named-tensor API, which the runtime uses).
    """
    major, minor = _trt_version(trt_version)
    if (major, minor) < (8, 5):
        raise EngineBuildError(
            f"TensorRT {trt_version} is too old: the TensorRT backend needs 8.5 or newer "
            "(named-tensor execution)",
            fix=UPGRADE_HINT,
        )
    fp32 = info.precision == "fp32" or info.kv_dtype == "float32"
    if major >= 10:
        if fp32:
            return NetworkPlan((), (), "fp32")
        return NetworkPlan(("STRONGLY_TYPED",), (), info.precision)
    # TensorRT 8.x / 9.x: explicit batch must be asked for.
    if fp32:
        return NetworkPlan(("EXPLICIT_BATCH",), (), "fp32")
    if info.precision == "int4":
        raise EngineBuildError(
            f"the int4 export needs TensorRT 10 (opset-21 blocked DequantizeLinear); this is "
            f"TensorRT {trt_version}",
            fix=f"build from the fp16 or int8 export (`--precision fp16`), or {UPGRADE_HINT}",
        )
    builder = ("FP16", "INT8") if info.precision == "int8" else ("FP16",)
    return NetworkPlan(("EXPLICIT_BATCH",), builder, info.precision)


def build_engine(
    onnx_path: Path,
    onnx_sha256: str,
    info: GraphInfo,
    profile: EngineProfile,
    cache: Path,
    *,
    gpu: GpuIdentity | None = None,
    workspace_bytes: int | None = None,
    report: Callable[[str], None] = log.info,
) -> tuple[EngineMeta, Path]:
    """Build, serialize and cache an engine for ``onnx_path`` (TensorRT 10, or 8.6 on JetPack
    6.0: the flags come from :func:`network_plan`). The timing cache under ``cache`` is loaded
    first and saved after, so rebuilds skip kernel timing.
    """
    trt = import_tensorrt()
    plan = network_plan(str(trt.__version__), info)
    gpu = gpu or current_gpu()
    key = EngineKey(
        gpu.name, gpu.compute_capability, trt.__version__, onnx_sha256, plan.precision, profile
    )
    onnx_bytes = onnx_path.stat().st_size + sum(
        p.stat().st_size for p in onnx_path.parent.glob(onnx_path.name + ".data")
    )
    expected = expected_build_seconds(cache, onnx_bytes, gpu)
    report(
        f"building TensorRT {trt.__version__} engine for {gpu.name} (sm {gpu.compute_capability}),"
        f" {info.precision}, context {profile.n_ctx}, prefill chunk {profile.max_seq}; expected "
        + (
            f"~{expected / 60:.1f} min (from earlier builds on this GPU)"
            if expected
            else "time unknown (first build on this GPU)"
        )
    )
    messages: list[str] = []
    logger = trt_logger(trt, messages)
    builder = trt.Builder(logger)
    flags = 0
    for flag in plan.network_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, flag))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    # parse_from_file resolves the external-data file relative to the .onnx's directory.
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(
            f"TensorRT {trt.__version__} could not parse {onnx_path.name}: "
            + " | ".join(errors[:3]),
            fix="build from the fp16 or int8 export instead (`--precision fp16`); the int4 "
            "export uses opset-21 DequantizeLinear, not verified on TensorRT 10.3",
        )
    config = builder.create_builder_config()
    for flag in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    opt = builder.create_optimization_profile()
    for name, (mn, op, mx) in profile.shapes(info).items():
        opt.set_shape(name, mn, op, mx)
    config.add_optimization_profile(opt)
    cache.mkdir(parents=True, exist_ok=True)
    timing_path = cache / f"timing-{gpu.slug}-trt{trt.__version__}.cache"
    timing_blob = timing_path.read_bytes() if timing_path.exists() else b""
    timing = config.create_timing_cache(timing_blob)
    config.set_timing_cache(timing, ignore_mismatch=False)
    if hasattr(trt, "IProgressMonitor"):
        config.progress_monitor = _make_progress(trt, report)
    t0 = time.perf_counter()
    try:
        serialized = builder.build_serialized_network(network, config)
    except MemoryError:
        raise oom_error(profile, info.precision) from None
    seconds = time.perf_counter() - t0
    if serialized is None:
        if is_oom(messages):
            raise oom_error(profile, info.precision)
        raise EngineBuildError(
            "TensorRT failed to build the engine: " + (" | ".join(messages[-3:]) or "no log"),
            fix="run with -v to see TensorRT's log",
        )
    blob = bytes(serialized)
    atomic_write_bytes(timing_path, bytes(config.get_timing_cache().serialize()))
    digest = key.digest()
    engine_path = cache / f"{digest}.engine"
    atomic_write_bytes(engine_path, blob)
    meta = EngineMeta(
        key=key,
        engine_file=engine_path.name,
        engine_size=len(blob),
        engine_sha256=hashlib.sha256(blob).hexdigest(),
        onnx_file=onnx_path.name,
        onnx_bytes=onnx_bytes,
        build_seconds=seconds,
        built_at=time.time(),
        info=dataclasses.asdict(info),
    )
    atomic_write_json(cache / f"{digest}.json", meta.to_dict())  # sidecar last: commit point
    report(f"engine built in {seconds:.0f}s: {engine_path} ({len(blob) / 1e6:.0f} MB)")
    return meta, engine_path


# --------------------------------------------------------------------------------------
# From an artifacts directory
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OnnxArtifact:
    """An ONNX graph from the manifest, its hash verified against the file on disk."""

    path: Path
    sha256: str
    info: GraphInfo


def verified_onnx(artifacts: str | os.PathLike[str], precision: str) -> OnnxArtifact:
    """Find ``precision``'s ONNX in the manifest and check the graph's sha256 against it.

    The external-data file is checked by size (hashing tens of GB on every load would take
    minutes; the graph names it, and the graph is hashed).
    """
    from amalia_edge.artifacts.manifest import load_manifest
    from amalia_edge.errors import ArtifactError

    root = Path(artifacts)
    manifest = load_manifest(root)
    entry = manifest.find("onnx", precision)
    if entry is None:
        raise ArtifactError(
            f"{root} has no {precision} ONNX export",
            fix=f"run `amalia-edge quantize --onnx {precision} --out {root}` on the workstation",
        )
    path = root / entry.file
    if not path.exists():
        raise ArtifactError(f"{path} is listed in the manifest but missing", fix="copy it again")
    actual = sha256_file(path)
    if actual != entry.sha256:
        raise ArtifactError(
            f"{path.name} does not match the manifest (sha256 {actual[:12]}…, manifest "
            f"{str(entry.sha256)[:12]}…)",
            fix="the copy is corrupt or was re-exported without updating the manifest; "
            "copy the artifacts directory again",
        )
    check_external_data(path, getattr(entry, "extra", None) or {})
    return OnnxArtifact(path, actual, read_graph_info(path))


def wanted_key(onnx_art: OnnxArtifact, profile: EngineProfile, gpu: GpuIdentity) -> EngineKey:
    """The key of an engine for ``onnx_art`` and ``profile`` on ``gpu`` with this TensorRT.

    Building (:func:`ensure_engine`) and load-only lookups (the TensorRT backend) both ask for
    this key, so a cached engine is found exactly when it was built for this setup.
    """
    return EngineKey(
        gpu.name,
        gpu.compute_capability,
        import_tensorrt().__version__,
        onnx_art.sha256,
        onnx_art.info.precision,
        profile,
    )


def ensure_engine(
    artifacts: str | os.PathLike[str],
    precision: str = "fp16",
    n_ctx: int = 2048,
    *,
    force: bool = False,
    max_prefill: int = DEFAULT_MAX_PREFILL,
    report: Callable[[str], None] = log.info,
) -> tuple[EngineMeta, Path]:
    """The engine for ``artifacts``' ``precision`` ONNX on this GPU: cached, or built now.

    Stale engines are reported (with their reasons) and replaced, never loaded.
    """
    import_tensorrt()  # a missing TensorRT is the first thing to report
    onnx_art = verified_onnx(artifacts, precision)
    profile = profile_for(n_ctx, onnx_art.info, max_prefill)
    gpu = current_gpu()
    want = wanted_key(onnx_art, profile, gpu)
    cache = engine_dir(artifacts)
    found = find_engine(cache, want)
    for engine_file, reasons in found.stale:
        report(f"not using stale engine {engine_file}: {'; '.join(reasons)}")
    if found.meta is not None and found.path is not None and not force:
        return found.meta, found.path
    if found.stale:
        report("rebuilding: " + found.describe_stale())
    return build_engine(
        onnx_art.path, onnx_art.sha256, onnx_art.info, profile, cache, gpu=gpu, report=report
    )
