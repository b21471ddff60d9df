"""The TUI's shape: no import cycle (type-only imports count), one owner of the chat state."""

from __future__ import annotations

import ast
from pathlib import Path

import amalia_edge.tui as tui

ROOT = Path(tui.__file__).parent


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT.parent.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports() -> dict[str, set[str]]:
    mods = {_module(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            graph[name] |= {t for t in targets if t in mods and t != name}
    return graph


def test_no_import_cycle_in_the_tui() -> None:
    graph = _imports()
    assert graph["amalia_edge.tui.app"]  # the walk sees the package's imports
    visiting: list[str] = []
    done: set[str] = set()

    def visit(m: str) -> None:
        if m in done:
            return
        assert m not in visiting, " -> ".join([*visiting[visiting.index(m) :], m])
        visiting.append(m)
        for dep in sorted(graph[m]):
            visit(dep)
        visiting.pop()
        done.add(m)

    for m in sorted(graph):
        visit(m)


def test_only_the_app_changes_the_conversation() -> None:
    """The chat screen reads the conversation; appending and truncating are the app's."""
    source = (ROOT / "screens" / "chat.py").read_text(encoding="utf-8")
    for call in (".append(ChatMessage", "conversation.append(", "conversation.truncate("):
        assert call not in source, call
    assert "tui.app" not in source
