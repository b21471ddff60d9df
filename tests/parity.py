"""The independent references the parity tests compare against, and how to reach them.

* llama.cpp's ``convert_hf_to_gguf.py`` as shipped in the llama-cpp-python sdist we run,
  extracted by ``make llama-convert`` into ``.cache/llama-convert/`` (``AMALIA_LLAMA_CONVERT``
  overrides the script's path). It needs torch and transformers (``pip install -e .[parity]``).
* transformers' ``AutoTokenizer`` (tokenization and chat templates).

A missing reference skips the test with the command that installs it, except under CI
(``CI=true``), where it fails: CI must run every parity comparison.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import factory

DEFAULT_CONVERT = factory.REPO / ".cache" / "llama-convert" / "convert_hf_to_gguf.py"
EVAL_TEXT = factory.CORPUS_DIR / "pt_pt_eval.txt"


def convert_script() -> Path:
    return Path(os.environ.get("AMALIA_LLAMA_CONVERT") or DEFAULT_CONVERT)


def _missing(what: str, fix: str) -> None:
    msg = f"{what} is missing ({fix})"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI must run the parity tests: {msg}", pytrace=False)
    pytest.skip(msg)


def require_transformers() -> None:
    for mod in ("torch", "transformers"):
        if importlib.util.find_spec(mod) is None:
            _missing(f"python package {mod!r}", "pip install -e '.[parity]'")


def require_converter() -> Path:
    require_transformers()
    script = convert_script()
    if not script.is_file():
        _missing(f"llama.cpp's converter at {script}", "run `make llama-convert`")
    return script


# Runs upstream's main() once per job in one interpreter: torch and transformers are imported
# once for all checkpoints (about 4 s each time otherwise).
_DRIVER = """
import json, sys, traceback
script, jobs = sys.argv[1], json.loads(sys.argv[2])
sys.path.insert(0, str(__import__("pathlib").Path(script).parent))
sys.argv = [script]
import convert_hf_to_gguf as convert
errors = {}
for src, outtype, dst in jobs:
    sys.argv = [script, src, "--outtype", outtype, "--outfile", dst]
    try:
        convert.main()
    except BaseException as exc:  # SystemExit too: record it, go on with the next job
        errors[dst] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
print("PARITY-ERRORS " + json.dumps(errors))
"""


def upstream_convert(jobs: list[tuple[Path, str, Path]]) -> dict[Path, str]:
    """Convert each ``(checkpoint dir, outtype, out file)`` with llama.cpp's converter, all in
    one process. Returns ``{out file: error}`` for the jobs it refused (the others exist)."""
    script = require_converter()
    payload = json.dumps([[str(s), t, str(d)] for s, t, d in jobs])
    proc = subprocess.run(
        [sys.executable, "-c", _DRIVER, str(script), payload],
        capture_output=True,
        text=True,
        timeout=900,
    )
    marker = [ln for ln in proc.stdout.splitlines() if ln.startswith("PARITY-ERRORS ")]
    assert proc.returncode == 0 and marker, proc.stderr[-3000:]
    return {Path(k): v for k, v in json.loads(marker[-1].split(" ", 1)[1]).items()}


def eval_lines(n: int = 200) -> list[str]:
    """The first ``n`` non-empty lines of the shared pt-PT evaluation text."""
    out: list[str] = []
    with open(EVAL_TEXT, encoding="utf-8") as fh:
        for line in fh:
            line = line.rstrip("\n")
            if line.strip():
                out.append(line)
            if len(out) == n:
                break
    return out


# transformers runs in a child process: importing torch into the pytest process that also runs
# llama.cpp crashed a later llama.cpp generation test (segfault in decode) on this machine.
_HF_DRIVER = """
import json, sys
from transformers import AutoTokenizer
req = json.loads(sys.stdin.read())
out = {}
for d in req["dirs"]:
    tok = AutoTokenizer.from_pretrained(d)
    rendered = tok.apply_chat_template(req["messages"], add_generation_prompt=True, tokenize=False)
    legacy = AutoTokenizer.from_pretrained(d, legacy=True)
    out[d] = {
        "encode": [list(tok.encode(t, add_special_tokens=True)) for t in req["lines"]],
        "bos": tok.bos_token_id,
        "bos_token": tok.bos_token or "",
        "eos_token": tok.eos_token or "",
        "rendered": rendered,
        "chat_ids": list(tok.encode(rendered, add_special_tokens=False)),
        "legacy_chat_ids": list(legacy.encode(rendered, add_special_tokens=False)),
    }
print(json.dumps(out))
"""


def hf_reference(
    dirs: list[Path], lines: list[str], messages: list[dict[str, str]]
) -> dict[Path, dict[str, object]]:
    """What transformers' AutoTokenizer makes of each checkpoint (one child process): the ids
    of every line (special tokens added), the rendered chat prompt and its ids (also with
    ``legacy=True``), the BOS id and BOS/EOS texts."""
    require_transformers()
    payload = json.dumps({"dirs": [str(d) for d in dirs], "lines": lines, "messages": messages})
    proc = subprocess.run(
        [sys.executable, "-c", _HF_DRIVER],
        input=payload,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {Path(k): v for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}


_SCALAR = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}


@dataclass
class GGUFSections:
    """A GGUF file split into what the parity tests compare, byte for byte."""

    kv: dict[str, bytes]  # key -> value type + value bytes, in file order
    tensors: dict[str, tuple[int, tuple[int, ...], bytes]]  # name -> (type, dims, data)


def read_sections(path: Path) -> GGUFSections:
    """Parse a little-endian GGUF v3 file (gguf-py's GGUFReader takes ~10 s on a 128k vocab;
    this takes well under one)."""
    import gguf

    buf = path.read_bytes()
    pos = 0

    def take(fmt: str) -> Any:
        nonlocal pos
        (value,) = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return value

    def string() -> bytes:
        nonlocal pos
        n = take("Q")
        pos += n
        return buf[pos - n : pos]

    def skip_value(vtype: int) -> None:
        nonlocal pos
        if vtype == 8:
            string()
        elif vtype == 9:
            etype, count = take("I"), take("Q")
            if etype in _SCALAR:
                pos += struct.calcsize("<" + _SCALAR[etype]) * count
            else:
                for _ in range(count):
                    skip_value(etype)
        else:
            pos += struct.calcsize("<" + _SCALAR[vtype])

    assert buf[:4] == b"GGUF" and struct.unpack_from("<I", buf, 4)[0] == 3, path
    pos = 8
    n_tensors, n_kv = take("Q"), take("Q")
    kv: dict[str, bytes] = {}
    alignment = 32
    for _ in range(n_kv):
        key = string().decode("utf-8")
        start = pos
        vtype = take("I")
        skip_value(vtype)
        kv[key] = buf[start:pos]
        if key == "general.alignment":
            alignment = struct.unpack_from("<I", buf, start + 4)[0]
    infos = []
    for _ in range(n_tensors):
        name = string().decode("utf-8")
        dims = tuple(take("Q") for _ in range(take("I")))
        infos.append((name, dims, take("I"), take("Q")))
    base = pos + (-pos) % alignment
    tensors = {}
    for name, dims, ttype, offset in infos:
        block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ttype)]
        nbytes = math.prod(dims) // block * size
        tensors[name] = (ttype, dims, buf[base + offset : base + offset + nbytes])
    return GGUFSections(kv, tensors)
