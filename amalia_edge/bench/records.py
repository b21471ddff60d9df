"""One flat benchmark record, with llama-bench's field names where they mean the same thing.

A record is one test (``pp512``, ``tg128``, ``pp512+tg128``) on one backend × quant type,
measured over ``repetitions`` timed runs after the warm-up (which is excluded). Fields
shared with llama-bench (tools/llama-bench/llama-bench.cpp, ``test`` struct and its JSON /
CSV printers) keep its names and units so existing tooling reads our output:
``model_filename model_type model_size model_n_params n_batch n_threads type_k type_v
n_gpu_layers flash_attn use_mmap n_prompt n_gen test_time avg_ns stddev_ns avg_ts stddev_ts
samples_ns samples_ts build_commit cpu_info gpu_info backends``.

``avg_ts`` is tokens per second of the timed span: for ``pp`` the prompt tokens over the
prefill time, for ``tg`` the ``n_gen`` decode steps over the time from the first generated
token to the last, for ``pp+tg`` (llama-bench ``-pg``) all of them over the whole request.
Everything else is ours (latency percentiles, power and energy, roofline, environment).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class BenchRecord:
    # -- what ran -----------------------------------------------------------------------------
    test: str  # "pp512" | "tg128" | "pp512+tg128"
    backend: str
    quant: str | None
    model_filename: str
    model_type: str = ""  # e.g. "llama 9B Q4_K_M" (llama-bench style)
    model_size: int | None = None  # bytes of weights
    model_n_params: int | None = None
    n_prompt: int = 0
    n_gen: int = 0
    n_batch: int | None = None
    n_threads: int | None = None
    n_gpu_layers: int | None = None
    type_k: str | None = None
    type_v: str | None = None
    flash_attn: bool | None = None
    use_mmap: bool | None = None
    n_ctx: int | None = None
    repetitions: int = 0
    warmup: int = 0
    # -- llama-bench timings (ns, tokens/s) ----------------------------------------------------
    test_time: str = ""  # ISO 8601 UTC, when the test started
    avg_ns: float | None = None
    stddev_ns: float | None = None
    avg_ts: float | None = None
    stddev_ts: float | None = None
    samples_ns: list[float] = field(default_factory=list)
    samples_ts: list[float] = field(default_factory=list)
    # -- latency (ms), from the event stream ---------------------------------------------------
    ttft_ms: float | None = None  # mean over repetitions
    itl_p50_ms: float | None = None  # inter-token latency, all timed tokens pooled
    itl_p90_ms: float | None = None
    itl_p99_ms: float | None = None
    e2e_ms: float | None = None  # mean request time, Started -> Finished
    # -- power and energy ---------------------------------------------------------------------
    power_label: str | None = None  # what power_avg_w sums (module_rails_sum, VDD_IN, ...)
    power_avg_w: float | None = None  # over the timed spans (energy / time)
    power_peak_w: float | None = None
    rails_avg_w: dict[str, float] = field(default_factory=dict)
    rails_peak_w: dict[str, float] = field(default_factory=dict)
    energy_j: float | None = None  # per repetition, over the timed span
    joules_per_token: float | None = None
    tokens_per_joule: float | None = None
    telemetry_samples: int = 0
    telemetry_interval_s: float | None = None
    telemetry_sources: list[str] = field(default_factory=list)
    peak_rss: int | None = None  # bytes
    # Over the test (first timed span to last, ± one sampling interval): throttling shows
    # as high temperatures and a GPU clock below the mode's maximum.
    temps_max_c: dict[str, float] = field(default_factory=dict)
    gpu_load_avg: float | None = None  # percent
    gpu_freq_min: int | None = None  # Hz
    cpu_percent_avg: float | None = None
    # -- roofline -----------------------------------------------------------------------------
    bytes_per_token: int | None = None  # weights (+ KV) read per decoded token
    achieved_bandwidth: float | None = None  # bytes/s = bytes_per_token * decode tokens/s
    memory_bandwidth: float | None = None  # bytes/s, board table or measured
    memory_bandwidth_source: str | None = None
    roofline_fraction: float | None = None
    # -- environment --------------------------------------------------------------------------
    board: str | None = None
    l4t: str | None = None
    jetpack: str | None = None
    power_mode: str | None = None
    jetson_clocks: bool | None = None
    cpu_info: str | None = None
    gpu_info: str | None = None
    backends: str = ""  # llama-bench: compute backends of the build ("CPU", "CUDA")
    backend_version: str | None = None
    library_versions: dict[str, str] = field(default_factory=dict)
    amalia_edge_version: str = ""
    git_commit: str | None = None
    build_commit: str | None = None  # llama-bench name; our git commit (short)
    device_fingerprint: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(BenchRecord))
