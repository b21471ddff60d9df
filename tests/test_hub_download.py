"""Downloading a repo id that is not cached, with the real huggingface_hub client, against a
local server on 127.0.0.1 that answers the Hub's file API the way huggingface.co does
(``HF_ENDPOINT``): ``/api/models/<id>/revision/<rev>`` (repo info with the commit sha),
``/api/models/<id>/tree/<commit>`` (file listing), ``HEAD``/``GET /<id>/resolve/<commit>/<file>``
(``X-Repo-Commit``, ``ETag``, ``Content-Length``, ``Range`` → 206), and the error answers
(401 + ``X-Error-Code: GatedRepo``, 404 + ``X-Error-Code: RepoNotFound``).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from amalia_edge.checkpoint import open_checkpoint
from amalia_edge.errors import CheckpointError

pytest.importorskip("huggingface_hub", reason="huggingface_hub is not installed")

COMMIT = "c0ffee" + "0" * 34
BIG = "model.safetensors"
CHUNK = 1 << 20


class FakeHub:
    """Serves one public repo, one gated and none else; can cut the big file's downloads."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range)
        self.cuts: list[int] = []  # per GET of BIG: bytes to send before dropping (-1: all)
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                hub.handle(self, head=True)

            def do_GET(self) -> None:
                hub.handle(self, head=False)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _json(self, h: Any, body: Any, status: int = 200, **headers: str) -> None:
        data = json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            h.send_header(k.replace("_", "-"), v)
        h.end_headers()
        h.wfile.write(data)

    def handle(self, h: Any, head: bool) -> None:
        path = h.path.split("?")[0]
        self.requests.append((h.command, path, h.headers.get("Range")))
        parts = path.strip("/").split("/")
        api = parts[:2] == ["api", "models"]
        repo = "/".join(parts[2:4] if api else parts[0:2])
        if repo == "org/gated":
            msg = "Access to model org/gated is restricted. You must be authenticated."
            return self._json(h, {"error": msg}, 401, X_Error_Code="GatedRepo", X_Error_Message=msg)
        if repo != "org/tiny":
            msg = "Repository not found"
            return self._json(
                h, {"error": msg}, 404, X_Error_Code="RepoNotFound", X_Error_Message=msg
            )
        if api and parts[4:5] == ["revision"]:
            rev = "/".join(parts[5:])
            if rev not in ("main", "v1", COMMIT):
                msg = f"Invalid rev id: {rev}"
                return self._json(
                    h, {"error": msg}, 404, X_Error_Code="RevisionNotFound", X_Error_Message=msg
                )
            siblings = [{"rfilename": f} for f in self.files]
            return self._json(h, {"id": repo, "sha": COMMIT, "siblings": siblings})
        if api and parts[4:5] == ["tree"]:
            tree = [
                {
                    "type": "file",
                    "path": f,
                    "size": len(b),
                    "oid": hashlib.sha1(b).hexdigest(),
                }
                for f, b in self.files.items()
            ]
            return self._json(h, tree)
        if parts[2:3] == ["resolve"]:
            name = "/".join(parts[4:])
            data = self.files[name]
            start = 0
            rng = h.headers.get("Range")
            if rng and not head:
                start = int(rng.split("=")[1].split("-")[0])
            h.send_response(206 if start else 200)
            h.send_header("X-Repo-Commit", COMMIT)
            h.send_header("ETag", '"' + hashlib.sha256(data).hexdigest() + '"')
            h.send_header("Content-Length", str(len(data) - start))
            if start:
                h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            h.end_headers()
            if head:
                return None
            body = data[start:]
            cut = self.cuts.pop(0) if name == BIG and self.cuts else -1
            if cut >= 0:  # a dropped connection part-way through the body
                h.wfile.write(body[:cut])
                h.wfile.flush()
                h.close_connection = True
                h.connection.shutdown(2)
                return None
            h.wfile.write(body)
            return None
        return self._json(h, {"error": "not found"}, 404)


@pytest.fixture
def hub(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeHub]:
    files = {p.name: p.read_bytes() for p in sorted(tiny_checkpoint.iterdir()) if p.is_file()}
    files["pytorch_model.bin"] = b"a pickle that must never be fetched"
    files["original/consolidated.safetensors"] = b"not needed"
    fake = FakeHub(files)
    monkeypatch.setenv("HF_ENDPOINT", fake.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for var in ("HF_HUB_CACHE", "HF_HUB_OFFLINE", "HF_TOKEN", "HF_HUB_ENABLE_HF_TRANSFER"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(time, "sleep", lambda _s: None)  # the client's 1 s between retries
    # The client writes whole chunks (10 MiB by default); 1 MiB lets a test-sized file stop
    # part-way with bytes on disk.
    monkeypatch.setattr("huggingface_hub.constants.DOWNLOAD_CHUNK_SIZE", CHUNK)
    yield fake
    fake.server.shutdown()
    # Close the listening socket too: huggingface_hub keeps the HF_ENDPOINT it saw when first
    # imported, and a later test must get "connection refused" there, not a silent backlog.
    fake.server.server_close()


def _fetched(hub: FakeHub) -> set[str]:
    """Files downloaded (GET of /resolve/)."""
    marker = "/resolve/" + COMMIT + "/"
    return {p.split(marker, 1)[1] for m, p, _ in hub.requests if m == "GET" and marker in p}


def test_downloads_only_what_conversion_needs_then_converts(hub: FakeHub, tmp_path: Path) -> None:
    from amalia_edge.convert.gguf import write_gguf

    ckpt = open_checkpoint("org/tiny")
    assert ckpt.path == tmp_path / "hf" / "hub" / "models--org--tiny" / "snapshots" / COMMIT
    assert ckpt.repo_id == "org/tiny"
    for name, data in hub.files.items():
        if name.endswith((".bin", "consolidated.safetensors")):
            assert not (ckpt.path / name).exists()
        else:
            assert (ckpt.path / name).read_bytes() == data, name
    fetched = _fetched(hub)
    assert "pytorch_model.bin" not in fetched and "original/consolidated.safetensors" not in fetched
    result = write_gguf(ckpt, tmp_path / "tiny.gguf", "F16")
    assert result.size > 0
    # cached now: a second open makes no request at all
    before = len(hub.requests)
    assert open_checkpoint("org/tiny").path == ckpt.path
    assert len(hub.requests) == before


def test_revision_pinning(hub: FakeHub) -> None:
    ckpt = open_checkpoint("org/tiny@v1")
    assert ckpt.path.name == COMMIT
    assert ("GET", "/api/models/org/tiny/revision/v1", None) in hub.requests
    with pytest.raises(CheckpointError, match="no revision 'nope'") as e:
        open_checkpoint("org/tiny@nope")
    assert "\n" not in str(e.value)


def test_interrupted_download_resumes_where_it_stopped(hub: FakeHub) -> None:
    size = len(hub.files[BIG])
    kept = size // 3 // CHUNK * CHUNK  # whole chunks the client wrote before the cut
    assert kept > 0
    hub.cuts = [size // 3]  # the connection drops a third of the way through
    ckpt = open_checkpoint("org/tiny")
    ranges = [r for m, p, r in hub.requests if m == "GET" and p.endswith(BIG)]
    assert ranges == [None, f"bytes={kept}-"]  # resumed, not restarted
    assert (ckpt.path / BIG).read_bytes() == hub.files[BIG]


def _give_up_on_big(hub: FakeHub, capsys: pytest.CaptureFixture[str], out: Path) -> int:
    """A ``quantize org/tiny`` run whose download of BIG stops a third of the way and then
    gets nothing on each of the client's 5 retries, so it gives up; returns the bytes kept."""
    from amalia_edge.cli import main

    size = len(hub.files[BIG])
    hub.cuts = [size // 3] + [0] * 5
    rc = main(["quantize", "org/tiny", "--out", str(out), "--gguf", "f16"])
    err = capsys.readouterr().err
    assert rc != 0 and "run the same command again to resume" in err, err
    assert "Traceback" not in err and not out.exists()
    kept = size // 3 // CHUNK * CHUNK  # whole chunks the client wrote before the cut
    ranges = [r for m, p, r in hub.requests if m == "GET" and p.endswith(BIG)]
    assert ranges == [None] + [f"bytes={kept}-"] * 5  # resumed within the run, then gave up
    hub.requests.clear()
    return kept


def test_a_rerun_of_quantize_resumes_the_partial_file_by_range(
    hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from amalia_edge.cli import main

    data = hub.files[BIG]
    out = tmp_path / "out"
    kept = _give_up_on_big(hub, capsys, out)
    # The failed run leaves its bytes where the next run looks for them (huggingface_hub 2.x
    # itself deletes its per-process temporary, so on its own a new run starts from zero).
    blobs = tmp_path / "hf" / "hub" / "models--org--tiny" / "blobs"
    etag = hashlib.sha256(data).hexdigest()  # the ETag FakeHub sends, as the Hub does for LFS
    assert (blobs / f"{etag}.incomplete").read_bytes() == data[:kept]
    rc = main(["quantize", "org/tiny", "--out", str(out), "--gguf", "f16"])
    err = capsys.readouterr().err
    assert rc == 0, err
    ranges = [r for m, p, r in hub.requests if m == "GET" and p.endswith(BIG)]
    assert ranges == [f"bytes={kept}-"]  # the second run asks only for the rest
    assert _fetched(hub) == {BIG}  # the small files were complete after the first run
    snap = blobs.parent / "snapshots" / COMMIT
    assert (snap / BIG).read_bytes() == data
    assert (snap / BIG).resolve() == blobs / etag
    assert not list(blobs.glob("*.incomplete"))
    assert (out / "manifest.json").is_file()


def test_the_partial_file_alone_marks_the_snapshot_unfinished(
    hub: FakeHub,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """huggingface_hub 1.x has no IncompleteSnapshotError: the partial weight file left in the
    cache is then what tells the next run that the cached snapshot is not finished."""
    from amalia_edge.checkpoint import hub as hub_module

    data = hub.files[BIG]
    kept = _give_up_on_big(hub, capsys, tmp_path / "out")

    class _Never(Exception):
        pass

    monkeypatch.setattr(hub_module, "_incomplete_error", lambda _errors: _Never)
    ckpt = open_checkpoint("org/tiny")
    ranges = [r for m, p, r in hub.requests if m == "GET" and p.endswith(BIG)]
    assert ranges == [f"bytes={kept}-"]
    assert (ckpt.path / BIG).read_bytes() == data


def test_a_stale_partial_of_another_revision_does_not_touch_the_network(
    hub: FakeHub, tmp_path: Path
) -> None:
    ckpt = open_checkpoint("org/tiny")
    (
        tmp_path / "hf" / "hub" / "models--org--tiny" / "blobs" / ("ab" * 32 + ".incomplete")
    ).write_bytes(b"left by an interrupted download of an older commit")
    hub.requests.clear()
    assert open_checkpoint("org/tiny").path == ckpt.path
    assert hub.requests == []


def test_a_partial_file_that_does_not_match_is_fetched_again(
    hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = hub.files[BIG]
    kept = _give_up_on_big(hub, capsys, tmp_path / "out")
    etag = hashlib.sha256(data).hexdigest()
    part = tmp_path / "hf" / "hub" / "models--org--tiny" / "blobs" / f"{etag}.incomplete"
    part.write_bytes(bytes(kept))  # damaged while the run was stopped
    ckpt = open_checkpoint("org/tiny")
    ranges = [r for m, p, r in hub.requests if m == "GET" and p.endswith(BIG)]
    assert ranges == [f"bytes={kept}-", None]  # resumed, failed the SHA-256, started over
    assert (ckpt.path / BIG).read_bytes() == data


@pytest.mark.parametrize(
    ("repo", "message"),
    [("org/gated", "org/gated is gated on the Hugging Face Hub"), ("org/none", "not found")],
)
def test_gated_and_missing_repos_are_one_line_errors(hub: FakeHub, repo: str, message: str) -> None:
    with pytest.raises(CheckpointError, match=message) as e:
        open_checkpoint(repo)
    assert "\n" not in str(e.value)
    assert hub.requests  # the server was asked


def test_offline_keeps_the_cache_error_and_asks_nothing(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="neither a directory nor in the Hugging Face cache"):
        open_checkpoint("org/tiny")
    assert hub.requests == []


def test_quantize_cli_downloads_then_converts(
    hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from amalia_edge.cli import main

    rc = main(["quantize", "org/tiny", "--out", str(tmp_path / "out"), "--gguf", "f16"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert (tmp_path / "out" / "manifest.json").is_file()
    rc = main(["quantize", "org/gated", "--out", str(tmp_path / "out2"), "--gguf", "f16"])
    err = capsys.readouterr().err
    assert rc != 0 and "gated" in err and "Traceback" not in err
    assert not (tmp_path / "out2").exists()
