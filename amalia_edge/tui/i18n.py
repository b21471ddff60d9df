"""The chat TUI's one message table: every string the interface shows, in pt-PT and English.

European Portuguese is the default (the people this is for read it); ``--lang en`` switches
to English. Each row is ``key: (pt-PT, English)``; placeholders use ``str.format`` names and
must be the same in both columns (``tests/test_tui_i18n.py`` checks). The comment above each
group names the screen or widget that shows it.
"""

from __future__ import annotations

import string
from typing import Final, Literal

Lang = Literal["pt", "en"]
LANGS: Final[tuple[Lang, ...]] = ("pt", "en")
DEFAULT_LANG: Final[Lang] = "pt"

MESSAGES: Final[dict[str, tuple[str, str]]] = {
    # app: title and default system prompt (sent to the model; pt-PT wording on purpose)
    "app.title": ("AMÁLIA no dispositivo", "AMÁLIA on the edge"),
    "system.default": (
        "És um assistente prestável. Respondes sempre em português europeu, "
        "de forma clara e concisa.",
        "You are a helpful assistant. Always answer in European Portuguese, clearly and concisely.",
    ),
    # key bindings: footer labels and the help screen
    "key.send": ("Enviar", "Send"),
    "key.stop": ("Parar", "Stop"),
    "key.regenerate": ("Regenerar", "Regenerate"),
    "key.edit": ("Editar última", "Edit last"),
    "key.new": ("Nova conversa", "New chat"),
    "key.help": ("Ajuda", "Help"),
    "key.settings": ("Definições", "Settings"),
    "key.history": ("Histórico", "History"),
    "key.model": ("Modelo", "Model"),
    "key.why": ("Porquê?", "Why?"),
    "key.export": ("Exportar", "Export"),
    "key.quit": ("Sair", "Quit"),
    "key.newline": ("Nova linha na mensagem", "New line in the message"),
    "key.interrupt": (
        "Parar a resposta; duas vezes seguidas sai",
        "Stop the reply; twice in a row quits",
    ),
    "key.new.short": ("Nova", "New"),
    "key.page_up": ("Recuar na conversa", "Scroll the chat up"),
    "key.page_down": ("Avançar na conversa", "Scroll the chat down"),
    "key.copy": (
        "Copiar a última resposta (também por SSH)",
        "Copy the last reply (works over SSH too)",
    ),
    "key.copy.short": ("Copiar", "Copy"),
    "key.close": ("Fechar", "Close"),
    "key.save": ("Guardar", "Save"),
    "key.cancel": ("Cancelar", "Cancel"),
    "key.open": ("Abrir", "Open"),
    # chat screen: message roles, input, placeholders
    "role.user": ("Tu", "You"),
    "role.assistant": ("Modelo", "Model"),
    "role.system": ("Sistema", "System"),
    "input.placeholder": (
        "Escreve uma mensagem e carrega em Enter…",
        "Type a message and press Enter…",
    ),
    "chat.empty": (
        "Olá! Escreve a tua pergunta em baixo. F1 mostra as teclas.",
        "Hello! Type your question below. F1 lists the keys.",
    ),
    "chat.stopped": ("(interrompido)", "(stopped)"),
    # stats panel (widgets/stats.py)
    "stats.title": ("Desempenho", "Performance"),
    "stats.backend": ("Motor", "Backend"),
    "stats.quant": ("Quant.", "Quant"),
    "stats.prompt_tps": ("Prompt", "Prompt"),
    "stats.decode_tps": ("Geração", "Decode"),
    "stats.ttft": ("1.º token", "TTFT"),
    "stats.context": ("Contexto", "Context"),
    "stats.power": ("Potência", "Power"),
    "stats.energy": ("Energia", "Energy"),
    "stats.memory": ("Memória", "Memory"),
    "stats.temp": ("Temp.", "Temp"),
    "stats.spark": ("tok/s na resposta", "tok/s over reply"),
    "stats.state": ("Estado", "State"),
    "stats.state.idle": ("pronto", "ready"),
    "stats.state.loading": ("a carregar…", "loading…"),
    "stats.state.generating": ("a gerar…", "generating…"),
    "stats.state.nomodel": ("sem modelo", "no model"),
    # notifications (app.py)
    "note.loading": ("A carregar {model}…", "Loading {model}…"),
    "note.loaded": ("Modelo pronto: {backend} · {quant}", "Model ready: {backend} · {quant}"),
    "note.load_failed": (
        "Não foi possível carregar o modelo: {error}",
        "Could not load the model: {error}",
    ),
    "note.load_failed_kept": (
        "Não foi possível carregar {model}: {error}. Continua o modelo anterior.",
        "Could not load {model}: {error}. The previous model stays.",
    ),
    "note.no_model": (
        "Nenhum modelo carregado: carrega em F4 para escolher um.",
        "No model loaded: press F4 to choose one.",
    ),
    "note.wait_loading": (
        "O modelo ainda está a carregar: espera um pouco.",
        "The model is still loading: wait a moment.",
    ),
    "note.busy": (
        "Ainda a gerar: carrega em Esc para parar primeiro.",
        "Still generating: press Esc to stop first.",
    ),
    "note.failed": ("A geração falhou: {error}", "Generation failed: {error}"),
    "note.context_full": (
        "O contexto encheu ({n_ctx} tokens): começa uma nova conversa (Ctrl+N) ou escolhe "
        "um contexto maior em F4 (este modelo aceita até {max}).",
        "The context is full ({n_ctx} tokens): start a new chat (Ctrl+N) or choose a "
        "larger context in F4 (this model takes up to {max}).",
    ),
    "note.context_full_max": (
        "O contexto encheu ({n_ctx} tokens, o máximo deste modelo): começa uma nova "
        "conversa (Ctrl+N).",
        "The context is full ({n_ctx} tokens, this model's maximum): start a new chat (Ctrl+N).",
    ),
    "note.dropped": (
        "A conversa já não cabe no contexto ({n_ctx} tokens): o modelo deixou de ver "
        "as {n} mensagens mais antigas.",
        "The chat no longer fits the context ({n_ctx} tokens): the model no longer sees "
        "the {n} oldest messages.",
    ),
    "note.stopped": ("Geração interrompida.", "Generation stopped."),
    "note.quit_again": (
        "Carrega outra vez em Ctrl+C para sair.",
        "Press Ctrl+C again to quit.",
    ),
    "note.copied": (
        "Resposta copiada ({n} caracteres).",
        "Reply copied ({n} characters).",
    ),
    "note.nothing_to_copy": ("Ainda não há resposta para copiar.", "No reply to copy yet."),
    "note.nothing_to_regenerate": (
        "Ainda não há resposta para regenerar.",
        "No reply to regenerate yet.",
    ),
    "note.nothing_to_edit": ("Ainda não há mensagem para editar.", "No message to edit yet."),
    "note.new_chat": ("Nova conversa.", "New chat."),
    "note.exported": ("Conversa exportada para {path}", "Conversation exported to {path}"),
    "note.export_empty": ("A conversa está vazia.", "The conversation is empty."),
    "note.resumed": ("Conversa retomada: {title}", "Conversation resumed: {title}"),
    "note.settings_saved": ("Definições guardadas.", "Settings saved."),
    "note.history_failed": (
        "Não foi possível guardar o histórico: {error}",
        "Could not save the history: {error}",
    ),
    # help screen (screens/help.py)
    "help.title": ("Teclas", "Keys"),
    "help.intro": (
        "A resposta aparece token a token; o painel da direita mostra a velocidade, "
        "a latência, a potência e a memória enquanto o modelo escreve.",
        "The reply appears token by token; the right-hand panel shows speed, latency, "
        "power and memory while the model writes.",
    ),
    # settings modal (screens/settings.py)
    "settings.title": ("Definições de geração", "Generation settings"),
    "settings.temperature": ("Temperatura (0–2)", "Temperature (0–2)"),
    "settings.top_p": ("Top-p (0–1]", "Top-p (0–1]"),
    "settings.max_tokens": ("Máximo de tokens", "Max tokens"),
    "settings.system": ("Instrução de sistema", "System prompt"),
    "settings.invalid": (
        "Valor inválido em «{field}»: {value}",
        "Invalid value in “{field}”: {value}",
    ),
    # history screen (screens/history.py)
    "history.title": ("Conversas guardadas", "Saved conversations"),
    "history.empty": ("Ainda não há conversas guardadas.", "No saved conversations yet."),
    "history.row": ("{title} · {n} mensagens · {when}", "{title} · {n} messages · {when}"),
    "history.untitled": ("(sem título)", "(untitled)"),
    # model switch modal (screens/model.py)
    "model.title": ("Mudar de modelo", "Switch model"),
    "model.path": (
        "Modelo (pasta de artefactos, ficheiro GGUF, vazio = demo)",
        "Model (artifacts folder, GGUF file, empty = demo)",
    ),
    "model.backend": ("Motor (vazio = automático)", "Backend (empty = automatic)"),
    "model.quant": ("Quantização (vazio = automática)", "Quant type (empty = automatic)"),
    "model.quant.auto": ("automática", "automatic"),
    "model.ctx": (
        "Contexto em tokens (vazio = automático)",
        "Context in tokens (empty = automatic)",
    ),
    # "why this backend" screen (screens/why.py)
    "why.title": ("Porquê este motor?", "Why this backend?"),
    "why.chosen": ("Escolhido", "Chosen"),
    "why.rejected": ("Rejeitados", "Rejected"),
    "why.alternatives": ("Também possíveis", "Could also run"),
    "why.fits": (
        "cabe na memória: {need} de {avail} disponíveis",
        "fits: {need} of {avail} available",
    ),
    "why.needs": (
        "precisa de {need} (memória disponível desconhecida)",
        "needs {need} (available memory unknown)",
    ),
    "why.estimated": ("cerca de {tps} tok/s (estimativa)", "about {tps} tok/s (estimate)"),
    "why.measured": ("{tps} tok/s (medido)", "{tps} tok/s (measured)"),
    "why.kld": ("KLD {kld} face ao modelo sem quantização", "KLD {kld} vs the unquantized model"),
    "why.bpw": ("{bpw} bits por peso", "{bpw} bits per weight"),
    "why.failed": ("falhou ao carregar", "failed to load"),
    "why.backend_missing": (
        "{backend}: motor indisponível neste dispositivo",
        "{backend}: not available on this device",
    ),
    "why.rejected.backend": (
        "motor indisponível neste dispositivo",
        "backend not available on this device",
    ),
    "why.rejected.artifact": ("ficheiro inutilizável", "unusable file"),
    "why.rejected.quant": (
        "não é a quantização pedida ({wanted})",
        "not the quant type asked for ({wanted})",
    ),
    "why.rejected.backend_filter": (
        "não é o motor pedido ({wanted})",
        "not the backend asked for ({wanted})",
    ),
    "why.rejected.ctx": (
        "o modelo aceita até {wanted} tokens; pedidos {n_ctx}",
        "the model takes up to {wanted} tokens; {n_ctx} asked",
    ),
    "why.rejected.memory": (
        "precisa de {need}, há {avail} disponíveis",
        "needs {need}, {avail} available",
    ),
    "why.rejected.other": ("não pode correr aqui", "cannot run here"),
    "why.none": ("Nenhum modelo carregado.", "No model loaded."),
    # markdown export (history.py)
    "export.title": ("Conversa", "Conversation"),
    "export.model": ("Modelo", "Model"),
    "export.date": ("Data", "Date"),
}


class Messages:
    """Interface strings in one language: ``msgs("note.loaded", backend=b, quant=q)``."""

    def __init__(self, lang: str = DEFAULT_LANG) -> None:
        if lang not in LANGS:
            from amalia_edge.errors import AmaliaEdgeError

            raise AmaliaEdgeError(
                f"unknown interface language {lang!r}", fix=f"use one of: {', '.join(LANGS)}"
            )
        self.lang: Lang = lang
        self._column = LANGS.index(self.lang)

    def __call__(self, key: str, /, **fields: object) -> str:
        """The text for ``key`` in this language, with ``fields`` filled in.

        An unknown key is a bug, so it raises ``KeyError`` rather than showing the key.
        """
        text = MESSAGES[key][self._column]
        return text.format(**fields) if fields else text


def placeholders(text: str) -> set[str]:
    """The ``str.format`` field names used in ``text`` (for the table's consistency test)."""
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}
