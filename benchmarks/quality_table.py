#!/usr/bin/env python3
"""Quality of each GGUF quant type on held-out pt-PT text, with and without the pt-PT imatrix.

Quantizes the model (default: the bundled demo) twice into a work directory, once with
``--imatrix none`` and once with the default pt-PT importance matrix computed from the shipped
calibration text, then measures every file against the same F32 reference on
``../shared/corpus/pt_pt_eval.txt`` (llama-perplexity --kl-divergence statistics, see
:mod:`amalia_edge.quality`) and prints one Markdown table (``--format`` for csv/json), plus a
per-type comparison of mean KLD without → with the imatrix.

    python3 benchmarks/quality_table.py [--source DIR] [--chunks 32] [--ctx N] [--threads N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TYPES = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "IQ4_XS", "Q3_K_M", "Q2_K")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", default=None, help="checkpoint (default: bundled demo model)")
    p.add_argument("--eval", default=None, help="held-out text (default: pt_pt_eval.txt)")
    p.add_argument("--ctx", type=int, default=None)
    p.add_argument("--chunks", type=int, default=32)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--types", default=",".join(TYPES))
    p.add_argument("--calibration", default=None, help="imatrix text (default: shipped pt-PT)")
    p.add_argument("--work", default=None, help="work directory (default: a temporary one)")
    p.add_argument("--format", default="md", choices=("md", "csv", "json"))
    args = p.parse_args()

    from amalia_edge.artifacts.manifest import load_manifest
    from amalia_edge.convert.pipeline import run_quantize
    from amalia_edge.quality import compare_models, format_report

    types = [t.strip().upper() for t in args.types.split(",") if t.strip()]
    with tempfile.TemporaryDirectory(prefix="amalia-quality-bench-") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        t0 = time.time()
        dirs = {"none": work / "no-imatrix", "pt-PT": work / "pt-imatrix"}
        for label, d in dirs.items():
            run_quantize(
                source=args.source,
                out=d,
                gguf_types=["F32", *types],
                imatrix="none" if label == "none" else "auto",
                calibration=None if label == "none" else args.calibration,
                threads=args.threads,
                progress=False,
            )
        t_quant = time.time() - t0
        mans = {label: load_manifest(d) for label, d in dirs.items()}
        ref_entry = mans["none"].find("gguf", "F32")
        assert ref_entry is not None
        candidates = []
        for t in types:
            for label, d in dirs.items():
                e = mans[label].find("gguf", t)
                assert e is not None, (label, t)
                candidates.append((f"{t}|{label}", d / e.file))
        report = compare_models(
            dirs["none"] / ref_entry.file,
            candidates,
            eval_file=args.eval,
            ctx=args.ctx,
            chunks=args.chunks,
            threads=args.threads,
        )
        report.reference = "F32"
        report.rows[0].quant, report.rows[0].label = "F32", "—"
        report.rows[0].bpw = ref_entry.bpw
        for row in report.rows[1:]:
            quant, label = row.quant.split("|")
            row.quant, row.label = quant, label
            entry = mans[label].find("gguf", quant)
            row.bpw = entry.bpw if entry is not None else None
        t_total = time.time() - t0

    print(format_report(report, args.format))
    if args.format == "md":
        print()
        print("| quant | mean KLD, no imatrix | mean KLD, pt-PT imatrix | with / without |")
        print("| --- | ---: | ---: | ---: |")
        by = {(r.quant, r.label): r for r in report.rows}
        for t in types:
            a, b = by[(t, "none")], by[(t, "pt-PT")]
            ratio = b.kld_mean / a.kld_mean if a.kld_mean > 0 else float("nan")
            print(f"| {t} | {a.kld_mean:.6f} | {b.kld_mean:.6f} | {ratio:.2f} |")
        print()
        n = len(types)
        print(f"Quantizing (2 × {n} types + imatrix): {t_quant:.0f} s; total {t_total:.0f} s.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
