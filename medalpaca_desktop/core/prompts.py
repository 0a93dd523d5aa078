"""Prompt formats: the MedAlpaca template, a model's own chat template, raw text.

Chat templates are where desktop apps most often go wrong (gibberish, answers
that never end), so the model's template is rendered the way transformers and
llama-cpp-python render it: a sandboxed, immutable Jinja environment with
trim_blocks/lstrip_blocks, `raise_exception`, `strftime_now`, a `tojson` that
keeps non-ASCII text, and the `bos_token`/`eos_token` variables. A rendered
chat template already holds the special tokens the model expects, so it is
tokenized without adding BOS again (`add_special=False`).

Qt-free and torch-free; jinja2 is imported only when a template is rendered.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

from medalpaca_desktop.core.chat_protocol import ChatMessage

#: The model's template failed to render or is missing: which one is used instead.
CHATML_FALLBACK = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class PromptError(ValueError):
    """A prompt that cannot be built (bad template, empty conversation); one line for a person."""


# ------------------------------------------------------------------ MedAlpaca


@dataclass(frozen=True)
class MedAlpacaTemplate:
    """The paper repository's prompt_templates/medalpaca.json."""

    primer: str
    instruction: str
    input: str
    output: str
    answer_cut: str

    def prompt(self, instruction: str, input: str = "", output: str = "",  # noqa: A002 - medAlpaca's field name
               primer: str | None = None) -> str:
        """One exchange exactly as medAlpaca's DataHandler.generate_prompt writes it."""
        return (f"{self.primer if primer is None else primer}"
                f"{self.instruction}{instruction}{self.input}{input}{self.output}{output}")

    def cut_answer(self, text: str) -> str:
        """The answer ends where the model starts a new instruction on its own."""
        return text.split(self.answer_cut, 1)[0].rstrip()


@lru_cache(maxsize=1)
def medalpaca_template() -> MedAlpacaTemplate:
    from resources import read_text

    data = json.loads(read_text("prompt_templates", "medalpaca.json"))
    return MedAlpacaTemplate(data["primer"], data["instruction"], data["input"], data["output"],
                             data.get("answer_cut", "### Instruction:"))


def render_medalpaca(messages: Sequence[ChatMessage], system: str | None = None) -> str:
    """A conversation in the MedAlpaca format: one Instruction/Input/Response block per turn.

    The system prompt (or a leading system message) replaces the primer; earlier
    answers follow their "### Response:" so the model sees the history.
    """
    tpl = medalpaca_template()
    primer, turns = _split_system(messages, system)
    text = tpl.primer if primer is None else primer
    pending_user: str | None = None
    for msg in turns:
        if msg.role == "user":
            if pending_user is not None:  # two user messages in a row: one instruction
                pending_user += "\n\n" + msg.content
            else:
                pending_user = msg.content
        elif msg.role == "assistant":
            text += tpl.prompt(pending_user or "", output=msg.content, primer="")
            pending_user = None
    return text + tpl.prompt(pending_user or "", primer="")


# ------------------------------------------------------------------ chat templates


def _raise_exception(message: str) -> None:
    raise PromptError(f"the chat template refused the conversation: {message}")


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


#: Largest string or list a template may build with `*`, and largest exponent of `**`: a
#: template that asks for more is refused instead of exhausting memory or the CPU.
MAX_REPEAT_ITEMS = 1_000_000
MAX_EXPONENT = 1_000

#: What a person reads when a template reaches for Python internals (a sandbox escape).
ESCAPE_REFUSED = ("the model's chat template tries to reach Python internals ({what}) and was refused; "
                  "use the MedAlpaca or raw template, or a copy of the model from a source you trust")


def _sandbox_class() -> Any:
    """transformers' ImmutableSandboxedEnvironment, stricter in two ways.

    An unsafe attribute (`__globals__`, `_TemplateReference__context`, a list's
    `append`...) raises at once, where Jinja would hand back an Undefined that
    prints as "" and raises only when used further; and `*` / `**` are bounded.
    """
    from jinja2.exceptions import SecurityError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class RefusingSandbox(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**"})

        def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
            raise SecurityError(f"{attribute!r} of a {type(obj).__name__!r} object")

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            if operator == "*":
                for seq, times in ((left, right), (right, left)):
                    if isinstance(seq, (str, list, tuple)) and isinstance(times, int) \
                            and len(seq) * times > MAX_REPEAT_ITEMS:
                        raise SecurityError(f"a sequence repeated {times} times")
            if operator == "**" and isinstance(right, (int, float)) and abs(right) > MAX_EXPONENT:
                raise SecurityError(f"a power of {right}")
            return super().call_binop(context, operator, left, right)

    return RefusingSandbox


@lru_cache(maxsize=8)
def _compile(template: str) -> Any:
    import jinja2
    import jinja2.ext

    class _Generation(jinja2.ext.Extension):
        """transformers' `{% generation %}` tag (marks assistant text for training): passes through."""

        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            parser.stream.skip(1)
            return parser.parse_statements(("name:endgeneration",), drop_needle=True)

    env = _sandbox_class()(trim_blocks=True, lstrip_blocks=True,
                           extensions=[_Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(template)
    except (jinja2.TemplateError, RecursionError) as exc:  # RecursionError: nesting thousands deep
        raise PromptError(f"the model's chat template is not valid Jinja: {exc}") from None


def render_chat_template(template: str, messages: Sequence[ChatMessage], bos_token: str = "",
                         eos_token: str = "", add_generation_prompt: bool = True) -> str:
    """Render a Hugging Face / GGUF chat template in a sandbox (no file or attribute access)."""
    from jinja2.exceptions import SecurityError

    compiled = _compile(template)
    try:
        return compiled.render(messages=[{"role": m.role, "content": m.content} for m in messages],
                               bos_token=bos_token or "", eos_token=eos_token or "",
                               add_generation_prompt=add_generation_prompt)
    except PromptError:
        raise
    except SecurityError as exc:
        raise PromptError(ESCAPE_REFUSED.format(what=exc)) from None
    except Exception as exc:  # noqa: BLE001 - the template is the model's code (1/0, endless recursion)
        raise PromptError(f"the model's chat template failed: {type(exc).__name__}: {exc}") from None


# ------------------------------------------------------------------ one entry point


@dataclass
class RenderedPrompt:
    """The exact text a model receives, and how to tokenize and end it."""

    text: str
    template: str  # "chat", "medalpaca", "raw"
    add_special: bool  # add the model's BOS when tokenizing (False: the text already has it)
    stop: list[str] = field(default_factory=list)  # texts that end the answer for this format
    fallback: str | None = None  # set when the model has no chat template: which format stood in
    dropped_messages: int = 0  # oldest messages left out to fit the context window


@dataclass
class ModelPromptInfo:
    """What prompting needs from a loaded model (a subset of LoadedModel)."""

    chat_template: str | None = None
    bos_token: str | None = None
    eos_token: str | None = None
    knows_chatml: bool = False  # <|im_start|> is one special token of its vocabulary


def _split_system(messages: Sequence[ChatMessage], system: str | None) -> tuple[str | None, list[ChatMessage]]:
    """(system text or None, the other messages); an explicit `system` wins over a system message."""
    turns = [m for m in messages if m.role != "system"]
    if system:
        return system, turns
    sys_msgs = [m.content for m in messages if m.role == "system"]
    return (sys_msgs[0] if sys_msgs else None), turns


def fallback_name(model: ModelPromptInfo) -> str:
    """ChatML when the vocabulary has its tokens (most instruct GGUFs), else the MedAlpaca format."""
    return "chatml" if model.knows_chatml else "medalpaca"


def render_prompt(template: str, model: ModelPromptInfo, messages: Sequence[ChatMessage] = (),
                  system: str | None = None, raw_prompt: str | None = None) -> RenderedPrompt:
    """The prompt for one generate request (no context fitting; see fit_to_context)."""
    if template == "raw":
        text = raw_prompt if raw_prompt is not None else "".join(m.content for m in messages)
        return RenderedPrompt(text=text, template="raw", add_special=True)
    if not messages:
        raise PromptError("the conversation is empty: send at least one user message")
    if template == "medalpaca":
        return RenderedPrompt(text=render_medalpaca(messages, system), template="medalpaca", add_special=True,
                              stop=[medalpaca_template().answer_cut])
    if template != "chat":
        raise PromptError(f"unknown template {template!r}; expected medalpaca, chat or raw")
    sys_text, turns = _split_system(messages, system)
    convo = ([ChatMessage("system", sys_text)] if sys_text else []) + turns
    if model.chat_template:
        try:
            text = render_chat_template(model.chat_template, convo, model.bos_token or "", model.eos_token or "")
        except PromptError:
            if not sys_text or not turns or turns[0].role != "user":
                raise
            # Gemma's templates refuse a system turn; its model card puts the instructions in the first user turn
            folded = [ChatMessage("user", f"{sys_text}\n\n{turns[0].content}"), *turns[1:]]
            text = render_chat_template(model.chat_template, folded, model.bos_token or "", model.eos_token or "")
        return RenderedPrompt(text=text, template="chat", add_special=False)
    name = fallback_name(model)
    if name == "chatml":
        text = render_chat_template(CHATML_FALLBACK, convo)
        return RenderedPrompt(text=text, template="chat", add_special=True, stop=["<|im_end|>"], fallback="chatml")
    rendered = render_prompt("medalpaca", model, messages, system)
    rendered.template, rendered.fallback = "chat", "medalpaca"
    return rendered


def fit_to_context(render: Callable[[list[ChatMessage]], RenderedPrompt], messages: Sequence[ChatMessage],
                   count_tokens: Callable[[RenderedPrompt], int], budget: int) -> tuple[RenderedPrompt, int]:
    """Drop the oldest turns (never a system message or the last message) until the prompt fits.

    Returns (prompt, its token count); PromptError when even the last message
    alone is too long. The caller tells the user how many messages were dropped.
    """
    kept = list(messages)
    dropped = 0
    while True:
        prompt = render(kept)
        n = count_tokens(prompt)
        if n <= budget:
            prompt.dropped_messages = dropped
            return prompt, n
        droppable = [i for i, m in enumerate(kept[:-1]) if m.role != "system"]
        if not droppable:
            raise PromptError(f"the message is too long for the context window: {n} tokens, "
                              f"room for {budget}. Shorten it, or load the model with a larger context (n_ctx).")
        # Drop a whole exchange (user + its answer) so roles keep alternating.
        first = droppable[0]
        end = first + 1
        if kept[first].role == "user" and end < len(kept) - 1 and kept[end].role == "assistant":
            end += 1
        dropped += end - first
        del kept[first:end]
