"""Chat messages, the model's own chat template, and what to do when a chat outgrows the context.

The template is the GGUF's ``tokenizer.chat_template`` (copied there from the checkpoint's
``tokenizer_config.json`` by ``amalia-edge quantize``), rendered the way llama-cpp-python's
``Jinja2ChatFormatter`` and Hugging Face ``apply_chat_template`` do: an immutable sandboxed
Jinja environment with ``trim_blocks``/``lstrip_blocks``, the ``loopcontrols`` extension,
``tojson`` without ASCII escaping, and ``messages``, ``bos_token``, ``eos_token``,
``add_generation_prompt``, ``raise_exception`` and ``strftime_now`` in scope. A model without a
template gets ChatML, which EuroLLM and AMÁLIA use.

BOS: the rendered prompt is tokenized with special tokens parsed, and BOS is added when the
GGUF asks for it (``tokenizer.ggml.add_bos_token``) unless the template already wrote the BOS
text, as llama.cpp's server and CLI do (llama-cpp-python's chat handler instead never adds
one, relying on templates that write ``bos_token``; Llama/EuroLLM-style models expect BOS).

Context policy (:func:`fit_messages`): keep the system prompt and the newest turns; drop the
oldest user/assistant turns until the rendered prompt plus room for the reply fits. If even
the system prompt plus the last message does not fit, raise ContextOverflowError saying by
how much.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Literal

from amalia_edge.errors import AmaliaEdgeError, ContextOverflowError

Role = Literal["system", "user", "assistant"]

# The default system prompt: European Portuguese, and says so, because models trained on
# mostly Brazilian Portuguese drift to pt-BR spelling and "você" without it.
DEFAULT_SYSTEM_PROMPT = (
    "És um assistente prestável, rigoroso e conciso. Responde sempre em português europeu "
    "(de Portugal), com a ortografia e o vocabulário usados em Portugal, a menos que te peçam "
    "outra língua."
)

# ChatML: the format EuroLLM-9B-Instruct and AMÁLIA are trained on (their tokenizer_config).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class Message:
    role: Role
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


class ChatTemplateError(AmaliaEdgeError):
    """The model's chat template does not render for these messages."""


def _tojson(
    x: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _raise_exception(message: str) -> None:
    raise ChatTemplateError(f"the model's chat template refused the messages: {message}")


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


# Bounds on an untrusted template (it comes from the checkpoint or the GGUF). Real chat
# templates are a few kB and loop over the messages; these only stop a hostile one.
MAX_TEMPLATE_CHARS = 1 << 20
MAX_RANGE_ITEMS = 1_000_000  # all range() items of one render together
MAX_RENDER_CHARS = 16 << 20  # longest string a * or ** may build, and the longest prompt
_budget = threading.local()


def _bounded_range(*args: int) -> range:
    r = range(*args)
    left = getattr(_budget, "range_items", MAX_RANGE_ITEMS) - len(r)
    if left < 0:
        raise ChatTemplateError(
            "the model's chat template loops too long (over "
            f"{MAX_RANGE_ITEMS:,} range() items in one render)",
            fix="use the model's original chat template, or --raw",
        )
    _budget.range_items = left
    return r


def _environment() -> Any:
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Bounded(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**"})

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            if operator == "**" and isinstance(right, (int, float)) and abs(right) > 128:
                raise ChatTemplateError(
                    "the model's chat template raises a number to a huge power",
                    fix="use the model's original chat template, or --raw",
                )
            if operator == "*":
                seq, n = (left, right) if isinstance(right, int) else (right, left)
                if (
                    isinstance(seq, (str, list, tuple))
                    and isinstance(n, int)
                    and len(seq) * n > MAX_RENDER_CHARS
                ):
                    raise ChatTemplateError(
                        "the model's chat template builds a string too long to render",
                        fix="use the model's original chat template, or --raw",
                    )
            return super().call_binop(context, operator, left, right)

    env = Bounded(
        loader=jinja2.BaseLoader(),
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[jinja2.ext.loopcontrols],
    )
    env.globals["range"] = _bounded_range
    return env


@lru_cache(maxsize=8)
def _compiled(template: str) -> Any:
    import jinja2

    if len(template) > MAX_TEMPLATE_CHARS:
        raise ChatTemplateError(
            f"the model's chat template is {len(template):,} characters long",
            fix="re-convert the model with its original chat template",
        )
    env = _environment()
    env.filters["tojson"] = _tojson
    try:
        return env.from_string(template)
    except (jinja2.TemplateError, RecursionError, MemoryError) as exc:
        raise ChatTemplateError(
            f"the model's chat template does not parse ({type(exc).__name__}: {exc})"[:300],
            fix="re-convert the model, or report the checkpoint's tokenizer_config.json",
        ) from None


def render_chat_template(
    template: str | None,
    messages: Sequence[Message],
    *,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
) -> str:
    """The prompt text for ``messages`` (ChatML when ``template`` is None or empty)."""
    import jinja2

    tmpl = _compiled(template or CHATML_TEMPLATE)
    _budget.range_items = MAX_RANGE_ITEMS
    try:
        return str(
            tmpl.render(
                messages=[m.to_dict() for m in messages],
                bos_token=bos_token,
                eos_token=eos_token,
                add_generation_prompt=add_generation_prompt,
                raise_exception=_raise_exception,
                strftime_now=_strftime_now,
            )
        )
    except ChatTemplateError:
        raise
    except jinja2.TemplateError as exc:
        raise ChatTemplateError(
            f"the model's chat template failed to render ({exc})",
            fix="check the roles (system/user/assistant, alternating) or re-convert the model",
        ) from None
    except Exception as exc:  # {{ 1/0 }}, a bad index, a filter given the wrong type, ...
        # The message is left out: it can quote the conversation being rendered.
        raise ChatTemplateError(
            f"the model's chat template failed to render ({type(exc).__name__})",
            fix="re-convert the model with its original chat template, or use --raw",
        ) from None


def check_chat_template(template: str) -> None:
    """Raise :class:`ChatTemplateError` unless ``template`` parses (and is not too long).

    Run before a backend loads the model: llama-cpp-python compiles the GGUF's template in
    ``Llama()`` and would raise its own exception from deep inside the load. Rendering is
    not tried here: many templates rightly refuse some role orders.
    """
    _compiled(template)


def with_system_prompt(messages: Sequence[Message], system: str | None) -> list[Message]:
    """Prepend ``system`` (default: :data:`DEFAULT_SYSTEM_PROMPT`) unless one is there.

    ``system=""`` means no system prompt.
    """
    msgs = list(messages)
    if msgs and msgs[0].role == "system":
        return msgs
    text = DEFAULT_SYSTEM_PROMPT if system is None else system
    return [Message("system", text), *msgs] if text else msgs


@dataclass(frozen=True)
class FittedChat:
    messages: list[Message]
    prompt: str
    prompt_tokens: int
    dropped: int  # messages left out (oldest first)


def fit_messages(
    messages: Sequence[Message],
    render: Callable[[Sequence[Message]], str],
    count_tokens: Callable[[str], int],
    n_ctx: int,
    reserve: int,
) -> FittedChat:
    """Drop the oldest turns (never the system prompt, never the last message) until
    ``tokens(prompt) + reserve <= n_ctx``.

    ``reserve`` is room kept for the reply. Raises ContextOverflowError when the system prompt
    plus the last message alone do not fit.
    """
    if not messages:
        raise AmaliaEdgeError("no messages to send", fix="give at least one user message")
    msgs = list(messages)
    system = [msgs[0]] if msgs[0].role == "system" else []
    turns = msgs[len(system) :]
    budget = n_ctx - reserve
    dropped = 0
    while True:
        candidate = system + turns
        prompt = render(candidate)
        n = count_tokens(prompt)
        if n <= budget:
            return FittedChat(candidate, prompt, n, dropped)
        if len(turns) <= 1:
            raise ContextOverflowError(
                f"the last message needs {n} prompt tokens (with the system prompt) plus "
                f"{reserve} for the reply, but the context holds {n_ctx}",
                fix="shorten the message or system prompt, lower --max-tokens, or raise --ctx",
            )
        # Drop the oldest turn; if that leaves an assistant message first, drop it too so the
        # conversation still starts with the user (templates such as Llama 2 insist).
        turns = turns[1:]
        dropped += 1
        while len(turns) > 1 and turns[0].role == "assistant":
            turns = turns[1:]
            dropped += 1
