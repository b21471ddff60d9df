"""Benchmarks: tokens/s, latency percentiles, watts and joules per token, roofline.

```python
from amalia_edge.bench import BenchConfig, make_tests, run_bench, render
res = run_bench(BenchConfig(model="artifacts", tests=make_tests([512], [128]), repetitions=5,
                            backends=["llama.cpp"], quants=["Q4_K_M", "Q8_0"]))
print(render(res.records, "md"))       # md | csv | json | jsonl
```

Modules: :mod:`.runner` (tests × repetitions over backends × quant types), :mod:`.records`
(one flat record, llama-bench field names), :mod:`.printers`, :mod:`.plots` (PNG, lazy
matplotlib), :mod:`.bandwidth` (roofline bandwidth), :mod:`.env` (versions, git commit).
"""

from __future__ import annotations

from amalia_edge.bench.printers import FORMATS, render
from amalia_edge.bench.records import BenchRecord
from amalia_edge.bench.runner import BenchConfig, BenchResult, TestSpec, make_tests, run_bench

__all__ = [
    "FORMATS",
    "BenchConfig",
    "BenchRecord",
    "BenchResult",
    "TestSpec",
    "make_tests",
    "render",
    "run_bench",
]
