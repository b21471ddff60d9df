"""Choose a backend × artifact for this device, and say why.

Candidates are every registered backend paired with every artifact of a kind it runs. A
candidate is **rejected** (with its reason) when the backend cannot run here (its probe's
reason and install hint), the artifact is broken or missing, ``--quant``/``--backend`` asked
for something else, the requested context exceeds the model's, or it does not fit in memory:
weights + KV cache for the context + runtime overhead (the backend's
:meth:`~amalia_edge.runtime.backend.Backend.memory_estimate`) against available memory
(unified memory on a Jetson; free VRAM for a discrete GPU backend; RAM for CPU).

The rest are **ranked**: first by quality tier (measured mean KL divergence vs the
unquantized model from the manifest's quality data when present, else bits per weight as a
proxy), then by estimated decode speed = memory bandwidth / bytes read per token (decode is
memory-bound: every weight is read once per token). The estimate assumes the backend reaches
the device's bandwidth; ``--autotune`` replaces it by a measurement, cached per device
fingerprint + artifact sha256.

Everything is returned as data (:class:`Selection`); the CLI prints :meth:`Selection.rows`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from amalia_edge.errors import (
    AmaliaEdgeError,
    ArtifactError,
    BackendError,
    BackendUnavailableError,
    ContextOverflowError,
    SelectionError,
)
from amalia_edge.runtime import registry
from amalia_edge.runtime.artifacts import Artifact, ModelSource
from amalia_edge.runtime.backend import Availability, Backend, LoadOptions, MemoryEstimate

if TYPE_CHECKING:
    from amalia_edge.device import DeviceInfo

log = logging.getLogger(__name__)

GiB = 1 << 30

# Memory bandwidth assumed when the device probe has none (not a Jetson in the board table,
# no measurement): 25 GB/s. Dual-channel DDR4-3200 peaks at 51.2 GB/s (3200 MT/s × 8 B × 2
# channels, JEDEC JESD79-4); we assume about half is reached by a decode loop (conservative,
# not measured). It only orders candidates; it never rejects one.
DEFAULT_BANDWIDTH = 25e9

# Quality policy. A candidate is in the first tier when its measured mean KL divergence vs the
# unquantized model is at most MAX_KLD nats, or, without measurements, when it has at least
# MIN_BPW bits per weight. 0.1 nats: llama.cpp's perplexity README lists 4-bit k-quants of
# Llama-3-8B around or below it and 3-bit and smaller types above; 4.5 bpw: the smallest
# 4-bit types (Q4_0 = 4.5, IQ4_XS 4.46 rounds in). Policy choices, not measurements.
MAX_KLD = 0.10
MIN_BPW = 4.4

# Keys under an artifact's manifest "quality" record that hold mean KLD vs the reference.
KLD_KEYS = ("kld_mean", "mean_kld", "kld")


def _gib(n: float | int | None) -> str:
    return "?" if n is None else f"{n / GiB:.2f} GiB"


@dataclass
class Candidate:
    """One backend × artifact pair and what selection decided about it."""

    backend: str
    artifact: Artifact
    status: str = "ok"  # chosen | ok | rejected | failed
    reasons: list[str] = field(default_factory=list)
    memory: MemoryEstimate | None = None
    memory_available: int | None = None
    est_tps: float | None = None
    measured_tps: float | None = None
    quality_cost: float | None = None  # mean KLD (nats) when measured
    quality_source: str | None = None  # "kld" | "bpw" | None
    tier: int = 0
    install_hint: str | None = None
    kind: str = ""  # why rejected: backend | artifact | quant | backend_filter | ctx | memory

    @property
    def viable(self) -> bool:
        return self.status in ("chosen", "ok")

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "artifact": self.artifact.label,
            "file": str(self.artifact.path),
            "quant": self.artifact.quant,
            "status": self.status,
            "reasons": list(self.reasons),
            "memory": self.memory.to_dict() if self.memory else None,
            "memory_available": self.memory_available,
            "est_tokens_per_s": self.est_tps,
            "measured_tokens_per_s": self.measured_tps,
            "quality_cost_kld": self.quality_cost,
            "quality_tier": self.tier,
            "install_hint": self.install_hint,
        }


@dataclass
class BackendStatus:
    name: str
    ok: bool
    reason: str
    install_hint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Selection:
    """The decision: ranked candidates (viable first), each with its reasons."""

    candidates: list[Candidate]
    backends: list[BackendStatus]
    n_ctx: int
    bandwidth: float
    bandwidth_source: str
    notes: list[str] = field(default_factory=list)
    requested_backend: str | None = None
    requested_quant: str | None = None

    @property
    def chosen(self) -> Candidate | None:
        for c in self.candidates:
            if c.status == "chosen":
                return c
        return None

    def viable(self) -> list[Candidate]:
        return [c for c in self.candidates if c.viable]

    def mark_chosen(self, cand: Candidate) -> None:
        for c in self.candidates:
            if c.status == "chosen":
                c.status = "ok"
        cand.status = "chosen"

    def mark_failed(self, cand: Candidate, why: str) -> None:
        cand.status = "failed"
        cand.reasons.append(f"load failed: {why}")
        nxt = next((c for c in self.candidates if c.status == "ok"), None)
        if nxt is not None:
            self.mark_chosen(nxt)
            nxt.reasons.append(f"fallback: {cand.backend} {cand.artifact.quant} failed to load")

    def to_dict(self) -> dict[str, Any]:
        chosen = self.chosen
        return {
            "chosen": chosen.to_dict() if chosen else None,
            "candidates": [c.to_dict() for c in self.candidates],
            "backends": [b.to_dict() for b in self.backends],
            "n_ctx": self.n_ctx,
            "bandwidth": self.bandwidth,
            "bandwidth_source": self.bandwidth_source,
            "notes": list(self.notes),
        }

    def rows(self) -> list[dict[str, str]]:
        """One printable row per candidate (the ``--explain`` / ``doctor`` table)."""
        out = []
        for c in self.candidates:
            mem = c.memory.total if c.memory else None
            tps = c.measured_tps if c.measured_tps is not None else c.est_tps
            out.append(
                {
                    "status": c.status,
                    "backend": c.backend,
                    "artifact": f"{c.artifact.kind} {c.artifact.quant}",
                    "memory": f"{_gib(mem)} / {_gib(c.memory_available)}" if mem else "-",
                    "tok/s": "-" if tps is None else f"{tps:.1f}" + ("" if c.measured_tps else "*"),
                    "why": "; ".join(c.reasons),
                }
            )
        return out

    def format_table(self) -> str:
        rows = self.rows()
        cols: list[str] = ["status", "backend", "artifact", "memory", "tok/s", "why"]
        widths = {k: max([len(k)] + [len(r[k]) for r in rows]) for k in cols[:-1]}
        lines = ["  ".join(k.ljust(widths.get(k, 0)) for k in cols)]
        for r in rows:
            lines.append("  ".join(r[k].ljust(widths.get(k, 0)) for k in cols).rstrip())
        lines.append(
            f"(* estimated: {self.bandwidth / 1e9:.0f} GB/s {self.bandwidth_source} memory "
            f"bandwidth / bytes read per token; context {self.n_ctx})"
        )
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def error(self) -> AmaliaEdgeError:
        """The most useful one-line error when no candidate is viable."""
        cands = self.candidates
        if not cands:
            known = ", ".join(sorted({b.name for b in self.backends})) or "none"
            return SelectionError(
                "no backend runs any artifact of this model", fix=f"known backends: {known}"
            )
        by_kind: dict[str, list[Candidate]] = {}
        for c in cands:
            by_kind.setdefault(c.kind or "failed", []).append(c)
        rest = [c for c in cands if c.kind != "backend_filter" and c.kind != "quant"]
        if not rest and "quant" in by_kind:
            have = sorted({c.artifact.quant for c in by_kind["quant"]})
            return ArtifactError(
                f"this model has no {self.requested_quant} artifact",
                fix=f"choose --quant from {', '.join(have)}",
            )
        if not rest and "backend_filter" in by_kind:
            formats = sorted({c.artifact.kind for c in cands})
            return BackendError(
                f"backend {self.requested_backend!r} runs none of this model's artifacts "
                f"({', '.join(formats)})",
                fix="choose another --backend, or convert the model to a format it runs",
            )
        for c in rest:
            if c.kind == "backend" and self.requested_backend:
                return BackendUnavailableError(
                    f"backend {c.backend} cannot run here: {c.reasons[-1]}",
                    fix=f"install it: {c.install_hint}" if c.install_hint else None,
                )
        if "ctx" in by_kind:
            c = by_kind["ctx"][0]
            return ContextOverflowError(c.reasons[-1], fix="lower --ctx")
        if "memory" in by_kind:
            c = min(by_kind["memory"], key=lambda x: x.memory.total if x.memory else 0)
            return SelectionError(c.reasons[-1], fix=self._fit_hint(c))
        if "backend" in by_kind:
            c = by_kind["backend"][0]
            return BackendUnavailableError(
                f"no backend can run this model here: {c.backend}: {c.reasons[-1]}",
                fix=f"install it: {c.install_hint}" if c.install_hint else None,
            )
        if "failed" in by_kind:
            c = by_kind["failed"][-1]
            return BackendError(
                f"every candidate failed to load; last: {c.backend} {c.artifact.quant}: "
                f"{c.reasons[-1]}",
                fix="run with -vv to see the backend's log",
            )
        c = rest[0] if rest else cands[0]
        return ArtifactError(
            f"no usable artifact: {c.artifact.label}: {c.reasons[-1]}",
            fix="re-run `amalia-edge quantize` to rebuild the artifacts",
        )

    def _fit_hint(self, c: Candidate) -> str:
        """Which quant type would fit, from llama.cpp's bits-per-weight table."""
        from amalia_edge.artifacts.quant_types import QUANT_TYPES

        if c.memory is None or c.memory_available is None or not c.artifact.params:
            return "free memory or use a smaller quant type (or a smaller --ctx)"
        rest = c.memory.total - c.memory.weights
        fitting = [
            q
            for q in sorted(QUANT_TYPES.values(), key=lambda q: -q.bpw)
            # k-quants and legacy types: they need no importance matrix and run everywhere
            if q.name.startswith("Q")
            and not q.needs_imatrix
            and not q.moe_only
            and c.artifact.params * q.bpw / 8 + rest <= c.memory_available
        ]
        if not fitting:
            return (
                f"not even the smallest quant type fits in {_gib(c.memory_available)}: "
                "free memory, lower --ctx, or use a smaller model"
            )
        q = fitting[0]
        need = c.artifact.params * q.bpw / 8 + rest
        return (
            f"{q.name} ({q.bpw:.2f} bpw, about {_gib(need)}) would fit: "
            f"`amalia-edge quantize` it and pass --quant {q.name}, or lower --ctx"
        )


def device_bandwidth(device: DeviceInfo | None) -> tuple[float, str]:
    """The board table's bandwidth, else the one bench measured on this device, else the
    assumed default."""
    if device is None:
        return DEFAULT_BANDWIDTH, "assumed default"
    from amalia_edge.device.bandwidth import apply_remembered

    apply_remembered(device)
    if device.memory_bandwidth:
        return float(device.memory_bandwidth), device.memory_bandwidth_source or "device"
    return DEFAULT_BANDWIDTH, "assumed default"


def _available_memory(device: DeviceInfo | None, avail: Availability) -> int | None:
    if device is None:
        return None
    if avail.details.get("gpu_offload") and not device.is_jetson:
        gpu = getattr(device, "gpu_memory_available", None)
        if gpu is not None:
            return int(gpu)
    return device.mem_available


def _quality(artifact: Artifact) -> tuple[float | None, str | None, int]:
    q: Mapping[str, Any] = artifact.quality or {}
    for key in KLD_KEYS:
        v = q.get(key)
        if isinstance(v, (int, float)):
            return float(v), "kld", 0 if v <= MAX_KLD else 1
    if artifact.bpw is not None:
        return None, "bpw", 0 if artifact.bpw >= MIN_BPW else 1
    return None, None, 0


def select(
    source: ModelSource | str | os.PathLike[str],
    device: DeviceInfo | None,
    n_ctx: int = 2048,
    *,
    backend: str | None = None,
    quant: str | None = None,
    options: LoadOptions | None = None,
    backends: Sequence[tuple[str, Backend | BackendError]] | None = None,
) -> Selection:
    """Rank every backend × artifact candidate for ``device``; nothing is loaded.

    ``source`` is a resolved :class:`ModelSource` or a MODEL path (resolved here);
    ``backends`` defaults to the registry (tests pass their own list).
    """
    if not isinstance(source, ModelSource):
        from amalia_edge.runtime.artifacts import resolve_model

        source = resolve_model(source)
    bw, bw_src = device_bandwidth(device)
    wanted = registry.canonical_name(backend) if backend else None
    pool = list(backends) if backends is not None else registry.all_backends()
    statuses: list[BackendStatus] = []
    cands: list[Candidate] = []
    notes: list[str] = []
    if device is None:
        notes.append("device not probed: memory fit not checked")
    for name, be in pool:
        if isinstance(be, BackendError):
            statuses.append(BackendStatus(name, False, str(be)))
            continue
        avail = be.probe(device)
        statuses.append(BackendStatus(name, avail.ok, avail.reason, avail.install_hint))
        if avail.ok and avail.install_hint:
            notes.append(f"{name}: {avail.reason}; faster build: {avail.install_hint}")
        for art in source.artifacts:
            if not be.accepts(art):
                continue
            c = Candidate(name, art)
            cands.append(c)
            _judge(c, be, avail, device, n_ctx, options, wanted, quant, bw)
    ok = [c for c in cands if c.status == "ok"]
    ok.sort(key=lambda c: (c.tier, -(c.est_tps or 0.0)))
    for rank, c in enumerate(ok):
        if rank == 0:
            c.reasons.append(
                "fastest estimated decode"
                + (
                    " of the good-quality tier"
                    if c.tier == 0 and len({x.tier for x in ok}) > 1
                    else ""
                )
            )
        elif c.tier > ok[0].tier:
            c.reasons.append(f"ranked lower: {c.quality_source} below the quality bar")
    rejected = [c for c in cands if c.status != "ok"]
    sel = Selection(ok + rejected, statuses, n_ctx, bw, bw_src, notes, wanted, quant)
    if ok:
        sel.mark_chosen(ok[0])
    return sel


def _judge(
    c: Candidate,
    be: Backend,
    avail: Availability,
    device: DeviceInfo | None,
    n_ctx: int,
    options: LoadOptions | None,
    wanted: str | None,
    quant: str | None,
    bw: float,
) -> None:
    art = c.artifact

    def reject(kind: str, why: str) -> None:
        c.status, c.kind = "rejected", kind
        c.reasons.append(why)

    if wanted and c.backend != wanted:
        return reject("backend_filter", f"--backend {wanted} asked")
    if quant and art.quant.upper() != quant.upper():
        return reject("quant", f"--quant {quant} asked")
    if art.problem:
        return reject("artifact", art.problem)
    if art.shape and art.shape.n_ctx_train and n_ctx > art.shape.n_ctx_train:
        return reject(
            "ctx",
            f"context {n_ctx} is larger than the model's {art.shape.n_ctx_train} tokens",
        )
    if not avail.ok:
        c.install_hint = avail.install_hint
        return reject("backend", avail.reason)
    est = be.memory_estimate(art, n_ctx, options)
    c.memory = est
    c.memory_available = _available_memory(device, avail)
    if c.memory_available is not None and est.total > c.memory_available:
        return reject(
            "memory",
            f"{art.quant} needs {_gib(est.total)} (weights {_gib(est.weights)} + KV cache "
            f"{_gib(est.kv_cache)} for {n_ctx} tokens + overhead {_gib(est.overhead)}) but "
            f"{_gib(c.memory_available)} is available",
        )
    per_token = be.decode_bytes_per_token(art, n_ctx)
    c.est_tps = bw / per_token if per_token > 0 else None
    c.quality_cost, c.quality_source, c.tier = _quality(art)
    fit = (
        f"fits: {_gib(est.total)} of {_gib(c.memory_available)}"
        if c.memory_available is not None
        else f"needs {_gib(est.total)} (available memory unknown)"
    )
    c.reasons.append(f"{avail.reason}; {fit}")
    if c.quality_source == "kld" and c.quality_cost is not None:
        c.reasons.append(f"KLD {c.quality_cost:.4f} vs unquantized")


# -- autotune ---------------------------------------------------------------------------------


def cache_path() -> Path:
    """``autotune.json`` in the user cache dir (``AMALIA_EDGE_CACHE_DIR`` overrides)."""
    env = os.environ.get("AMALIA_EDGE_CACHE_DIR")
    if env:
        return Path(env) / "autotune.json"
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("amalia-edge")) / "autotune.json"


def autotune_key(device: DeviceInfo, cands: Sequence[Candidate], n_ctx: int) -> str:
    ids = sorted(f"{c.backend}@{c.artifact.content_id()}" for c in cands)
    return f"{device.fingerprint()}|ctx={n_ctx}|" + ",".join(ids)


def _read_cache(path: Path) -> dict[str, Any]:
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


AUTOTUNE_PROMPT = "Escreve um parágrafo curto sobre a cidade de Lisboa."


def autotune(
    sel: Selection,
    device: DeviceInfo,
    *,
    options: LoadOptions | None = None,
    top: int = 3,
    tokens: int = 32,
    path: Path | None = None,
    measure: Any = None,
) -> Selection:
    """Measure the ``top`` viable candidates (decode tokens/s, greedy, ``tokens`` tokens) and
    put the fastest first; reuse a cached result for the same device fingerprint, context
    and artifact hashes. ``measure(candidate) -> float`` replaces the real measurement
    (tests). The cache is one JSON file written atomically.
    """
    from datetime import datetime, timezone

    from amalia_edge.artifacts.atomic import atomic_write_json

    viable = sel.viable()[:top]
    if len(viable) < 1:
        return sel
    path = path or cache_path()
    key = autotune_key(device, viable, sel.n_ctx)
    cache = _read_cache(path)
    hit = cache.get(key)
    results: dict[str, float] = {}
    if isinstance(hit, dict) and isinstance(hit.get("tokens_per_s"), dict):
        results = {str(k): float(v) for k, v in hit["tokens_per_s"].items()}
        source = f"autotune cache ({hit.get('measured_at', '?')})"
    else:
        measure = measure or (lambda c: _measure(c, sel.n_ctx, options, tokens))
        for c in viable:
            ident = f"{c.backend}@{c.artifact.content_id()}"
            try:
                results[ident] = float(measure(c))
            except AmaliaEdgeError as exc:
                sel.mark_failed(c, str(exc))
        cache[key] = {
            "tokens_per_s": results,
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "tokens": tokens,
        }
        atomic_write_json(path, cache)
        source = "autotune: measured now"
    for c in viable:
        tps = results.get(f"{c.backend}@{c.artifact.content_id()}")
        if tps is not None and c.status != "failed":
            c.measured_tps = tps
            c.reasons.append(f"{source}: {tps:.1f} tok/s")
    measured = [c for c in viable if c.measured_tps is not None and c.status != "failed"]
    if measured:
        best = max(measured, key=lambda c: c.measured_tps or 0.0)
        others = [c for c in sel.candidates if c is not best]
        sel.candidates = [best, *others]
        sel.mark_chosen(best)
        best.reasons.append("fastest measured")
    return sel


def _measure(c: Candidate, n_ctx: int, options: LoadOptions | None, tokens: int) -> float:
    from amalia_edge.runtime.events import Finished
    from amalia_edge.runtime.sampling import SamplingParams

    session = registry.get(c.backend).load(c.artifact, n_ctx, options)
    try:
        fin: Finished | None = None
        # ignore_eos: every candidate decodes the same number of tokens
        sp = SamplingParams(temperature=0.0, ignore_eos=True)
        for ev in session.stream(AUTOTUNE_PROMPT, sampling=sp, max_tokens=tokens):
            if isinstance(ev, Finished):
                fin = ev
        if fin is None or fin.reason == "error" or fin.completion_tokens < 2:
            raise BackendError(
                f"autotune run produced {fin.completion_tokens if fin else 0} tokens",
                fix="try without --autotune",
            )
        return fin.decode_tps
    finally:
        session.close()
