"""The message table: complete in both languages, placeholders consistent, every key used exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from amalia_edge.errors import AmaliaEdgeError
from amalia_edge.tui.i18n import MESSAGES, Messages, placeholders
from amalia_edge.tui.keys import KEYS

TUI = Path(__file__).resolve().parents[1] / "amalia_edge" / "tui"


def test_every_row_has_both_languages_with_the_same_placeholders() -> None:
    for key, (pt, en) in MESSAGES.items():
        assert pt.strip() and en.strip(), key
        assert placeholders(pt) == placeholders(en), key


def test_every_key_the_code_uses_is_in_the_table() -> None:
    used: set[str] = set()
    for path in TUI.rglob("*.py"):
        used |= set(re.findall(r'msgs\(\s*"([a-z_.]+)"', path.read_text(encoding="utf-8")))
        used |= set(re.findall(r'\bm\(\s*"([a-z_.]+)"', path.read_text(encoding="utf-8")))
    used |= {k.label for k in KEYS}
    # Keys built at run time from data: roles and panel states.
    used |= {f"role.{r}" for r in ("user", "assistant", "system")}
    used |= {f"stats.state.{s}" for s in ("idle", "loading", "generating", "nomodel")}
    assert len(used) > 40
    assert sorted(used - MESSAGES.keys()) == []


def test_lookup_and_language_choice() -> None:
    pt, en = Messages("pt"), Messages("en")
    assert pt("key.stop") == "Parar" and en("key.stop") == "Stop"
    assert Messages()("key.settings") == "Definições"  # pt-PT is the default
    assert (
        en("note.loaded", backend="llama.cpp", quant="Q4_K_M") == "Model ready: llama.cpp · Q4_K_M"
    )
    with pytest.raises(KeyError):
        pt("no.such.key")
    with pytest.raises(AmaliaEdgeError, match="pt, en"):
        Messages("br")


def test_pt_pt_not_pt_br_wording() -> None:
    # A few words that give Brazilian Portuguese away in an interface (pt-BR -> pt-PT).
    brazilian = {
        "arquivo": "ficheiro",
        "tela": "ecrã",
        "usuário": "utilizador",
        "salvar": "guardar",
    }
    text = " ".join(pt.lower() for pt, _ in MESSAGES.values())
    for word, pt_pt in brazilian.items():
        assert not re.search(rf"\b{word}\b", text), f"use {pt_pt!r}, not {word!r}"
