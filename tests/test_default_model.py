"""The bundled demo model as the default MODEL: ``default_model_path()``, ``resolve_model(None)``,
``load_model(None)`` and ``amalia-edge generate PROMPT`` without a MODEL.

The demo's artifacts are made once per module in a temporary user cache (``XDG_CACHE_HOME``,
which platformdirs honours on Linux) with the real quantize pipeline, then reused.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from amalia_edge.checkpoint import DEMO_DIR, open_checkpoint
from amalia_edge.cli import main
from amalia_edge.errors import AmaliaEdgeError, OutputError
from amalia_edge.runtime import artifacts as runtime_artifacts
from amalia_edge.runtime import default_model_path, load_model, plan, resolve_model
from amalia_edge.runtime.sampling import SamplingParams

HAVE_LLAMA = importlib.util.find_spec("llama_cpp") is not None
needs_llama = pytest.mark.skipif(not HAVE_LLAMA, reason="llama-cpp-python is not installed")
PREPARING = "preparing the bundled demo model"

# The bundled demo checkpoint's trained context (config.json's max_position_embeddings).
DEMO_CTX = json.loads((DEMO_DIR / "config.json").read_text(encoding="utf-8"))[
    "max_position_embeddings"
]


@dataclass
class FirstRun:
    home: Path
    path: Path
    stderr: str


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FirstRun]:
    """A private user cache for this module; the demo's artifacts made once, stderr kept."""
    home = tmp_path_factory.mktemp("xdg-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(home))
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            path = default_model_path()
        yield FirstRun(home, path, err.getvalue())


@pytest.fixture
def cache_home(first_run: FirstRun) -> Path:
    return first_run.home


@pytest.fixture
def no_quantize(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the conversion pipeline runs (the cached directory must be reused)."""
    import amalia_edge.convert.pipeline as pipeline

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("quantize() ran although the demo artifacts were ready")

    monkeypatch.setattr(pipeline, "quantize", boom)


def _expected_dir(home: Path) -> Path:
    fp = open_checkpoint(None, tokenizer=False).fingerprint()
    return home / "amalia-edge" / f"demo-{fp[:12]}"


@pytest.mark.slow
def test_first_use_converts_into_the_user_cache(first_run: FirstRun) -> None:
    path, err = first_run.path, first_run.stderr
    assert path == _expected_dir(first_run.home)
    assert err.count(PREPARING) == 1 and "first run only" in err
    manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    quants = {a["quant"] for a in manifest["artifacts"] if a["kind"] == "gguf"}
    assert quants == set(runtime_artifacts.demo_gguf_types())
    assert manifest["source"]["fingerprint"].startswith(path.name.removeprefix("demo-"))
    for a in manifest["artifacts"]:
        assert (path / a["file"]).stat().st_size == a["size"]


def test_later_runs_reuse_without_converting(
    cache_home: Path, no_quantize: None, capsys: pytest.CaptureFixture[str]
) -> None:
    path = default_model_path()
    assert path == _expected_dir(cache_home)
    assert capsys.readouterr().err == ""


def test_a_damaged_cache_is_repaired(cache_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _expected_dir(cache_home)
    victim = next(path.glob("*-Q8_0.gguf"))
    victim.unlink()
    assert not runtime_artifacts._demo_ready(path, runtime_artifacts.demo_gguf_types())
    assert default_model_path() == path
    assert PREPARING in capsys.readouterr().err
    assert victim.is_file()
    assert runtime_artifacts._demo_ready(path, runtime_artifacts.demo_gguf_types())


def test_truncated_file_is_not_ready(cache_home: Path, tmp_path: Path) -> None:
    copy = tmp_path / "demo"
    shutil.copytree(_expected_dir(cache_home), copy)
    types = runtime_artifacts.demo_gguf_types()
    assert runtime_artifacts._demo_ready(copy, types)
    f = next(copy.glob("*-F16.gguf"))
    f.write_bytes(f.read_bytes()[:1000])
    assert not runtime_artifacts._demo_ready(copy, types)
    (copy / "manifest.json").write_text("{not json", encoding="utf-8")
    assert not runtime_artifacts._demo_ready(copy, types)
    # A manifest without one of the wanted types (made before llama.cpp was installed).
    assert not runtime_artifacts._demo_ready(_expected_dir(cache_home), (*types, "Q6_K"))


def test_types_without_llama_cpp(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llama_cpp" else real(name, *a),
    )
    assert runtime_artifacts.demo_gguf_types() == ("F16", "Q8_0")


def test_unwritable_cache_is_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    with pytest.raises(OutputError) as info:
        default_model_path()
    msg = str(info.value)
    assert "\n" not in msg and "demo model" in msg and "XDG_CACHE_HOME" in msg


def test_resolve_model_none_is_the_demo(cache_home: Path, no_quantize: None) -> None:
    source = resolve_model(None)
    assert source.kind == "directory" and source.path == _expected_dir(cache_home)
    assert source.name == "demo"
    assert {a.quant for a in source.usable()} == set(runtime_artifacts.demo_gguf_types())


def test_plan_none_caps_context_at_the_models(cache_home: Path, no_quantize: None) -> None:
    source, sel, _ = plan(None, n_ctx=None)
    trained = {a.shape.n_ctx_train for a in source.usable() if a.shape}
    assert trained == {DEMO_CTX}  # the demo checkpoint's max_position_embeddings
    assert sel.n_ctx == DEMO_CTX
    _, sel, _ = plan(None, n_ctx=128)
    assert sel.n_ctx == 128
    with pytest.raises(AmaliaEdgeError, match="too small"):
        plan(None, n_ctx=8)


@needs_llama
def test_load_model_none_generates(cache_home: Path, no_quantize: None) -> None:
    with load_model(None, n_ctx=None) as model:
        assert model.name == "demo" and model.n_ctx == DEMO_CTX
        fin = model.generate("O rapaz", sampling=SamplingParams(temperature=0.0), max_tokens=4)
    assert fin.completion_tokens == 4 and fin.text


@needs_llama
def test_generate_cli_without_model(
    cache_home: Path, no_quantize: None, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["generate", "Olá", "--json", "--max-tokens", "3", "--temperature", "0", "--seed", "1"]
    assert main(argv) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["model"] == "demo" and rec["n_ctx"] == DEMO_CTX and rec["completion_tokens"] == 3
    assert Path(rec["artifact"]).parent == _expected_dir(cache_home)


@needs_llama
def test_generate_cli_stdin_prompt_without_model(
    cache_home: Path,
    no_quantize: None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    monkeypatch.setattr(sys, "stdin", io.StringIO("O rapaz entrou"))
    assert (
        main(["generate", "-", "--raw", "--json", "--max-tokens", "2", "--temperature", "0"]) == 0
    )
    rec = json.loads(capsys.readouterr().out)
    assert rec["model"] == "demo" and rec["prompt_tokens"] > 0


def test_generate_cli_lone_model_reports_missing_prompt(
    tmp_path: Path, no_quantize: None, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "manifest.json").write_text("{}", encoding="utf-8")
    for model in (str(tmp_path / "x.gguf"), str(tmp_path)):
        assert main(["generate", model]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("amalia-edge: error: no PROMPT given") and "\n" not in err
        assert f"amalia-edge generate {model}" in err


def test_generate_help_documents_the_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    out = capsys.readouterr().out
    assert "[MODEL] PROMPT" in out and "bundled demo model" in out


def test_looks_like_model() -> None:
    from amalia_edge.commands.generate import looks_like_model

    assert looks_like_model("model.GGUF")
    assert not looks_like_model("Olá, como estás?")
    assert not looks_like_model("linha um\nlinha dois.gguf")
    assert not looks_like_model("x" * 5000)


def test_concurrent_first_runs_convert_once(
    first_run: FirstRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two callers at once (the TUI's worker and a `generate`, say): one converts, the other
    waits on the lock and then reuses the result."""
    import threading

    import amalia_edge.convert.pipeline as pipeline

    home = tmp_path / "cache"
    shutil.copytree(first_run.home / "amalia-edge", home / "amalia-edge")
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    path = _expected_dir(home)
    next(path.glob("*-Q8_0.gguf")).unlink()  # needs a (short) repair, not a full conversion
    calls: list[int] = []
    real = pipeline.quantize

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline, "quantize", counting)
    results: list[Path] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(default_model_path())
        except BaseException as exc:  # surfaced below, in the test's thread
            errors.append(exc)

    with contextlib.redirect_stderr(io.StringIO()):
        threads = [threading.Thread(target=worker) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    assert not errors, errors
    assert results == [path, path]
    assert len(calls) == 1
    assert runtime_artifacts._demo_ready(path, runtime_artifacts.demo_gguf_types())


def test_doctor_model_uses_the_same_default_context(
    cache_home: Path, no_quantize: None, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["doctor", str(_expected_dir(cache_home)), "--json"])
    sel = json.loads(capsys.readouterr().out)["selection"]
    assert sel["n_ctx"] == DEMO_CTX
    assert not any("larger than the model's" in " ".join(c["reasons"]) for c in sel["candidates"])
