"""Quality report: llama-perplexity-style PPL / KLD / same-top on the real demo model."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from amalia_edge.checkpoint import DEMO_DIR
from amalia_edge.errors import ArtifactError, BenchError

pytest.importorskip("llama_cpp")

from amalia_edge import quality as q

DEMO = Path(os.environ.get("AMALIA_EDGE_TEST_DEMO", DEMO_DIR))
CTX, CHUNKS, THREADS = 128, 6, 1


@pytest.fixture(scope="module")
def eval_file(tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path) -> Path:
    """A slice of the held-out novels: enough for CHUNKS chunks of CTX tokens."""
    text = (corpus_dir / "pt_pt_eval.txt").read_text(encoding="utf-8")[:12_000]
    p = tmp_path_factory.mktemp("eval") / "eval.txt"
    p.write_text(text, encoding="utf-8")
    return p


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from amalia_edge.convert.pipeline import run_quantize

    out = tmp_path_factory.mktemp("artifacts")
    run_quantize(
        source=str(DEMO),
        out=out,
        gguf_types="f32,q8_0,q4_k_m,q2_k",
        imatrix="none",
        threads=THREADS,
        progress=False,
    )
    return out


@pytest.fixture(scope="module")
def report(artifacts: Path, eval_file: Path) -> q.QualityReport:
    return q.measure_quality(artifacts, eval_file, ctx=CTX, chunks=CHUNKS, threads=THREADS)


@pytest.mark.slow
def test_f32_against_itself_is_zero(artifacts: Path, eval_file: Path) -> None:
    ref = next(artifacts.glob("*F32*.gguf"))
    rep = q.compare_models(ref, [("copy", ref)], eval_file, ctx=CTX, chunks=2, threads=THREADS)
    base, copy = rep.rows
    assert copy.kld_mean < 1e-6 and copy.kld_p99 < 1e-5
    assert copy.same_top_pct == 100.0
    assert copy.ppl == base.ppl and copy.delta_ppl == 0.0
    assert base.tokens == 2 * (CTX - 1 - CTX // 2)  # second half of each chunk, as llama.cpp


@pytest.mark.slow
def test_kld_grows_as_bits_fall(report: q.QualityReport) -> None:
    rows = {r.quant.upper(): r for r in report.rows}
    assert report.reference == "F32" and rows["F32"].kld_mean == 0.0
    assert rows["Q8_0"].kld_mean < rows["Q4_K_M"].kld_mean < rows["Q2_K"].kld_mean
    assert rows["Q8_0"].same_top_pct >= rows["Q2_K"].same_top_pct
    assert abs(rows["Q8_0"].delta_ppl) < abs(rows["Q2_K"].delta_ppl)
    for r in report.rows:
        assert r.tokens == CHUNKS * (CTX - 1 - CTX // 2)
        assert r.ppl > 1.0 and r.kld_p99 >= r.kld_mean * 0.0


def test_results_are_written_into_the_manifest(artifacts: Path, report: q.QualityReport) -> None:
    from amalia_edge.artifacts.manifest import load_manifest

    m = load_manifest(artifacts)
    for row in report.rows:
        entry = m.find("gguf", row.quant)
        assert entry is not None and entry.quality is not None
        assert entry.quality["kld_mean"] == row.kld_mean
        assert entry.quality["reference"] == "F32"
        assert entry.quality["ctx"] == CTX and entry.quality["chunks"] == CHUNKS


def test_printers(report: q.QualityReport) -> None:
    md = q.format_report(report, "md")
    assert md.splitlines()[0].startswith("| quant | bpw | PPL")
    assert "Q4_K_M" in md and f"{CHUNKS} chunks of {CTX} tokens" in md
    rows = list(csv.DictReader(io.StringIO(q.format_report(report, "csv"))))
    assert [r["quant"] for r in rows] == [r.quant for r in report.rows]
    data = json.loads(q.format_report(report, "json"))
    assert data["ctx"] == CTX and len(data["rows"]) == len(report.rows)
    with pytest.raises(BenchError, match="unknown format"):
        q.format_report(report, "xml")


def test_refuses_a_model_with_another_vocabulary(
    artifacts: Path, eval_file: Path, make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    from amalia_edge.checkpoint import open_checkpoint
    from amalia_edge.convert.gguf import write_gguf

    other = tmp_path / "other.gguf"
    write_gguf(open_checkpoint(make_checkpoint()), other, "f32")
    ref = next(artifacts.glob("*F32*.gguf"))
    with pytest.raises(ArtifactError, match="different vocabulary"):
        q.compare_models(ref, [("other", other)], eval_file, ctx=CTX, chunks=1, threads=THREADS)


def test_bad_parameters(artifacts: Path, eval_file: Path, tmp_path: Path) -> None:
    short = tmp_path / "short.txt"
    short.write_text("Era uma vez um rei.", encoding="utf-8")
    with pytest.raises(BenchError, match="too short"):
        q.measure_quality(artifacts, short, ctx=CTX, write=False)
    with pytest.raises(BenchError, match="does not exist"):
        q.measure_quality(artifacts, tmp_path / "nope.txt", write=False)
    with pytest.raises(ArtifactError, match="no GGUF of type IQ1_S"):
        q.measure_quality(artifacts, eval_file, quants=["iq1_s"], write=False)
    no_ref = tmp_path / "noref"
    shutil.copytree(artifacts, no_ref)
    man = json.loads((no_ref / "manifest.json").read_text())
    man["artifacts"] = [a for a in man["artifacts"] if a["quant"].upper() != "F32"]
    (no_ref / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ArtifactError, match="no F32, F16 or BF16"):
        q.measure_quality(no_ref, eval_file, write=False)


def test_cli(artifacts: Path, eval_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from amalia_edge.cli import main

    argv = ["quality", str(artifacts), "--eval", str(eval_file), "--ctx", "64", "--chunks", "2"]
    assert main([*argv, "--quant", "q8_0", "--format", "json", "--threads", "1", "--no-write"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["quant"] for r in data["rows"]] == ["F32", "Q8_0"] and data["ctx"] == 64
    assert main(["quality", str(artifacts), "--eval", str(eval_file), "--ctx", "7"]) == 2
    assert "--ctx must be an even number" in capsys.readouterr().err
