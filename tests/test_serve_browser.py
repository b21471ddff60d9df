"""The chat page in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

Type, stream, stop, reload and find the conversation; the Markdown renderer runs in the
browser against hostile input. The screenshot is kept as a test artifact in
``$AMALIA_TEST_ARTIFACTS`` (default: ``test-artifacts/`` in the repository, git-ignored).

The server runs a random-weight model a little larger than the test models (a few ms per
token on one thread), so that a reply with ``ignore_eos`` lasts long enough to be stopped.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
pytest.importorskip("uvicorn", reason="the serve extra is not installed")
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
if not Path(CHROMIUM).is_file():
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)

from tests.serve_server import REPO, ServerProcess  # noqa: E402

pytestmark = pytest.mark.slow

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def artifacts_dir() -> Path:
    d = Path(os.environ.get("AMALIA_TEST_ARTIFACTS", REPO / "test-artifacts"))
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="module")
def slow_model(make_checkpoint: Callable[..., Path], tmp_path_factory: Any) -> Path:
    from amalia_edge.convert.pipeline import quantize

    ckpt = make_checkpoint(
        hidden_size=512,
        intermediate_size=1536,
        num_hidden_layers=6,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=4096,
    )
    out = tmp_path_factory.mktemp("browser_model")
    quantize(ckpt, out, ["F16"], imatrix="none", threads=1, progress=False)
    return out


@pytest.fixture(scope="module")
def server(slow_model: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(slow_model, "--parallel", "2", "--ctx", "4096")
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.terminate()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


def test_chat_page_streams_stops_and_remembers(
    server: ServerProcess, browser: Any, artifacts_dir: Path
) -> None:
    ctx = browser.new_context(viewport={"width": 1100, "height": 760}, locale="pt-PT")
    ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    page = ctx.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(server.url + "/")
    assert page.locator("#send").inner_text() == "Enviar"  # pt-PT by default
    page.wait_for_function("document.getElementById('server-status').textContent === 'pronto'")

    # 1. A short reply streams in and is rendered when finished.
    page.fill("#input", "Olá! Como estás?")
    page.press("#input", "Enter")
    page.wait_for_function("!document.getElementById('stop').disabled", timeout=30_000)
    page.wait_for_function("document.getElementById('stop').disabled", timeout=60_000)
    replies = page.locator(".msg.assistant .body")
    assert replies.count() == 1 and replies.first.inner_text().strip()
    assert page.locator("#stat-ttft").inner_text().endswith(" s")
    assert float(page.locator("#stat-tps").inner_text()) > 0
    assert (
        page.locator("#stat-watts").inner_text() in ("n/d",)
        or float(page.locator("#stat-watts").inner_text()) >= 0
    )
    assert page.locator("#stat-tokens").inner_text().count("+") == 1

    # 2. A long reply (ignore_eos through the extra-parameters setting) is stopped mid-way.
    page.click("#settings summary")
    page.fill("#set-extra", json.dumps({"ignore_eos": True}))
    page.fill("#set-max-tokens", "3000")
    page.press("#set-max-tokens", "Tab")
    page.fill("#input", "Conta-me uma história muito longa.")
    page.click("#send")
    page.wait_for_function(
        "document.querySelectorAll('.msg.assistant .body')[1]?.textContent.length > 20",
        timeout=30_000,
    )
    page.click("#stop")
    page.wait_for_function("document.getElementById('stop').disabled", timeout=10_000)
    stopped = page.locator(".msg.assistant").nth(1)
    assert "(interrompido)" in stopped.inner_text()
    # The server freed the slot: the disconnect reached the engine.
    page.wait_for_timeout(300)
    assert server.wait_ready()["slots_busy"] == 0

    # 3. Copy button copies the reply's text.
    first = page.locator(".msg.assistant").first
    first.locator(".copy").click()
    page.wait_for_function("document.querySelector('.msg.assistant .copy').dataset.copied")
    clip = page.evaluate("navigator.clipboard.readText()")
    stored = page.evaluate(
        "JSON.parse(localStorage.getItem('amalia-edge.conversations'))[0].messages[1].content"
    )
    assert clip and clip == stored  # the raw reply, not its rendered HTML

    # 4. English toggle.
    page.click("#lang")
    assert page.locator("#send").inner_text() == "Send"
    page.click("#lang")

    page.screenshot(path=str(artifacts_dir / "serve_chat_page.png"), full_page=True)

    # 5. Reload: the conversation is still there (localStorage), with both turns.
    page.reload()
    page.wait_for_selector(".msg.user")
    assert page.locator(".msg.user").count() == 2
    assert page.locator("#conversations .conv").first.inner_text().startswith("Olá! Como")
    assert "(interrompido)" in page.locator(".msg.assistant").nth(1).inner_text()

    # Nothing was fetched from anywhere but this server.
    assert requests and all(u.startswith(server.url) for u in requests), requests
    ctx.close()


MARKDOWN_CASES = [
    ("**negrito** e *itálico*", "<p><strong>negrito</strong> e <em>itálico</em></p>"),
    ("`<b>`", "<p><code>&lt;b&gt;</code></p>"),
    ("<img src=x onerror=alert(1)>", "<p>&lt;img src=x onerror=alert(1)&gt;</p>"),
    (
        "[ok](https://pt.wikipedia.org/wiki/Fado)",
        '<p><a href="https://pt.wikipedia.org/wiki/Fado" '
        'rel="noopener noreferrer" target="_blank">ok</a></p>',
    ),
    ("[x](javascript:alert(1))", "<p>[x](javascript:alert(1))</p>"),
    ("- um\n- dois", "<ul>\n<li>um</li>\n<li>dois</li>\n</ul>"),
    (
        "```py\nif a < b:\n    pass\n```",
        '<pre><code class="lang-py">if a &lt; b:\n    pass</code></pre>',
    ),
    ("# Título", "<h3>Título</h3>"),
]


def test_markdown_renderer_in_the_browser(server: ServerProcess, browser: Any) -> None:
    page = browser.new_page()
    page.goto(server.url + "/")
    for src, html in MARKDOWN_CASES:
        assert page.evaluate("(s) => renderMarkdown(s)", src) == html, src
    # Rendered into the page, hostile input creates no elements and runs nothing.
    page.evaluate("""() => { window.__pwned = false; const d = document.createElement('div');
        d.innerHTML = renderMarkdown('<img src=x onerror="window.__pwned=true">');
        document.body.append(d); }""")
    page.wait_for_timeout(100)
    assert page.evaluate("window.__pwned") is False
    page.close()


def test_no_remote_urls_in_the_page() -> None:
    static = REPO / "amalia_edge" / "serve" / "static"
    for f in static.iterdir():
        text = f.read_text(encoding="utf-8")
        for bad in ("http://", "https://", "//cdn", "@import"):
            allowed = f.name == "markdown.js" and bad.startswith("http")  # link-rule regex
            assert allowed or bad not in text, (f.name, bad)


def test_chromium_is_what_playwright_drives() -> None:
    assert shutil.which("chromium") == CHROMIUM or Path(CHROMIUM).is_file()
