"""Server safety checks and the 503 of a server whose model is still loading (no model needed)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("uvicorn", reason="the serve extra is not installed")

from amalia_edge.cli import main
from amalia_edge.serve.server import ServeConfig, ServeConfigError, check_config
from tests.serve_server import free_port


def test_loopback_needs_no_key() -> None:
    for host in ("127.0.0.1", "localhost", "::1"):
        assert check_config(ServeConfig(host=host)).api_key is None


def test_other_addresses_need_a_key_or_an_explicit_opt_out(monkeypatch: Any) -> None:
    monkeypatch.delenv("AMALIA_EDGE_API_KEY", raising=False)
    with pytest.raises(ServeConfigError, match="--api-key"):
        check_config(ServeConfig(host="0.0.0.0"))
    assert check_config(ServeConfig(host="0.0.0.0", api_key="k" * 16)).api_key == "k" * 16
    assert check_config(ServeConfig(host="0.0.0.0", insecure_no_auth=True)).api_key is None
    monkeypatch.setenv("AMALIA_EDGE_API_KEY", "from-the-environment")
    assert check_config(ServeConfig(host="192.168.1.5")).api_key == "from-the-environment"
    with pytest.raises(ServeConfigError, match="shorter"):
        check_config(ServeConfig(api_key="short"))


def test_cli_refuses_in_one_line(capsys: Any, monkeypatch: Any) -> None:
    monkeypatch.delenv("AMALIA_EDGE_API_KEY", raising=False)
    assert main(["serve", "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--api-key" in err and "Traceback" not in err


@contextlib.contextmanager
def _app_server(cors: list[str] | None = None) -> Iterator[str]:
    """The app with no model (still loading), served by uvicorn on 127.0.0.1 in a thread."""
    import uvicorn

    from amalia_edge.serve.app import ServerState, build_app

    port = free_port()
    app = build_app(ServerState(), cors=cors)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        t.join(10)


@pytest.fixture()
def loading_server() -> Iterator[str]:
    with _app_server() as url:
        yield url


def test_503_while_the_model_loads(loading_server: str) -> None:
    for path, data in (
        ("/health", None),
        ("/v1/models", None),
        ("/v1/chat/completions", b'{"messages":[{"role":"user","content":"x"}]}'),
    ):
        req = urllib.request.Request(
            loading_server + path, data=data, headers={"Content-Type": "application/json"}
        )
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(req, timeout=10)
        assert exc.value.code == 503, path
        body = json.loads(exc.value.read())
        if path == "/health":
            assert body["status"] == "loading"
        else:
            assert body["error"]["code"] == "model_loading"


def test_systemd_unit_runs_unprivileged_and_restarts() -> None:
    import configparser
    import shutil
    import subprocess

    from tests.serve_server import REPO

    unit = REPO / "jetson" / "amalia-edge-serve.service"
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read(unit, encoding="utf-8")
    svc = cp["Service"]
    assert svc["User"] not in ("", "root") and svc["Restart"] == "on-failure"
    assert "amalia-edge serve" in svc["ExecStart"] and svc["NoNewPrivileges"] == "yes"
    assert cp["Install"]["WantedBy"] == "multi-user.target"
    if shutil.which("systemd-analyze"):
        out = subprocess.run(
            ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
        )
        # The only complaint allowed here: the venv of the board does not exist on this machine.
        problems = [
            ln
            for ln in (out.stdout + out.stderr).splitlines()
            if ln.strip() and "is not executable" not in ln
        ]
        assert not problems, problems


def _preflight(url: str, origin: str) -> dict[str, str]:
    req = urllib.request.Request(
        url + "/v1/chat/completions",
        method="OPTIONS",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return {k.lower(): v for k, v in r.headers.items()}
    except urllib.error.HTTPError as e:
        return {k.lower(): v for k, v in e.headers.items()}


def test_cors_is_off_by_default(loading_server: str) -> None:
    assert "access-control-allow-origin" not in _preflight(loading_server, "http://evil.test")


def test_cors_only_for_the_given_origin() -> None:
    with _app_server(["http://laptop.lan:3000"]) as url:
        ok = _preflight(url, "http://laptop.lan:3000")
        assert ok["access-control-allow-origin"] == "http://laptop.lan:3000"
        assert "access-control-allow-origin" not in _preflight(url, "http://evil.test")
