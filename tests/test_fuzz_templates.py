"""Fuzzing chat-template rendering (issue 13).

A chat template is code that ships inside the model file (GGUF metadata,
tokenizer_config.json). Rendering one, random text or random Jinja built from the
constructs real templates use, gives a prompt or a one-line PromptError, never
another exception. Sizes are bounded (small numbers, short loops) so no example
can build a huge string; the sandbox's own escapes are another test's business.
Seeds are fixed (`derandomize`) and no example database is written.
"""

from __future__ import annotations

from datetime import timedelta

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from medalpaca_desktop.core.chat_protocol import ChatMessage
from medalpaca_desktop.core.prompts import ModelPromptInfo, PromptError, render_chat_template, render_prompt

FUZZ = settings(max_examples=150, deadline=timedelta(seconds=2), derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])

MESSAGES = st.lists(st.builds(ChatMessage, st.sampled_from(["system", "user", "assistant", "tool", ""]),
                              st.text(max_size=20)), max_size=4)

ATOMS = st.sampled_from([
    "messages", "message", "message['role']", "message.content", "messages[0]", "messages[-1]['content']",
    "bos_token", "eos_token", "add_generation_prompt", "loop.index", "none", "true", "'x'", "''", "0", "1", "-1",
    "2.5", "[]", "[1, 'a']", "{}", "{'a': 1}", "range(3)", "undefined_name", "messages|length", "(1, 2)",
])
FILTERS = st.sampled_from([
    "int", "float", "string", "length", "first", "last", "join", "join(3)", "list", "sort", "max", "min", "sum",
    "tojson", "trim", "upper", "title", "truncate(-5)", "truncate(2)", "wordwrap(0)", "indent(-1)", "center(3)",
    "slice(0)", "slice(2)", "batch(0)", "batch(2)", "round(-1)", "format(1)", "replace('a', 1)", "default('d')",
    "selectattr('role')", "map(attribute='content')", "groupby('role')", "unique", "reverse", "abs", "random",
    "items", "dictsort", "attr('x')", "striptags", "urlencode", "wordcount", "filesizeformat", "pprint",
])
OPS = st.sampled_from(["+", "-", "*", "/", "//", "%", "~", "==", "<", "in", "and", "or", "**"])


def _expr(depth: int = 2) -> st.SearchStrategy[str]:
    if depth == 0:
        return ATOMS
    inner = _expr(depth - 1)
    return st.one_of(
        inner,
        st.builds(lambda a, f: f"({a})|{f}", inner, FILTERS),
        st.builds(lambda a, o, b: f"({a}) {o} ({b})", inner, OPS, inner),
        st.builds(lambda a, b: f"({a})[{b}]", inner, inner),
        st.builds(lambda a: f"not ({a})", inner),
        st.builds(lambda a: f"raise_exception({a})", inner),
    )


EXPR = _expr()


def _template(depth: int = 2) -> st.SearchStrategy[str]:
    output = st.builds(lambda e: "{{ " + e + " }}", EXPR)
    text = st.text(alphabet=st.sampled_from(list("ab \n<|>{}%#")), max_size=6)
    if depth == 0:
        return output | text
    body = st.lists(_template(depth - 1), max_size=3).map("".join)
    return st.one_of(
        output, text,
        st.builds(lambda b: "{% for message in messages %}" + b + "{% endfor %}", body),
        st.builds(lambda e, b: "{% for x in " + e + " %}" + b + "{% else %}e{% endfor %}", EXPR, body),
        st.builds(lambda e, b, c: "{% if " + e + " %}" + b + "{% else %}" + c + "{% endif %}", EXPR, body, body),
        st.builds(lambda e, b: "{% set ns = namespace(v=" + e + ") %}" + b + "{{ ns.v }}", EXPR, body),
        st.builds(lambda b: "{% macro m(x) %}" + b + "{% endmacro %}{{ m(1) }}", body),
        st.builds(lambda b: "{% generation %}" + b + "{% endgeneration %}", body),
        st.builds(lambda b: "{% for message in messages %}{% if loop.first %}{% continue %}{% endif %}" + b
                  + "{% break %}{% endfor %}", body),
    )


TEMPLATE = _template()


def _render(template: str, messages: list[ChatMessage]) -> None:
    try:
        text = render_chat_template(template, messages, "<s>", "</s>")
    except PromptError as exc:
        assert str(exc)
    else:
        assert isinstance(text, str)


@settings(FUZZ, max_examples=250)
@given(template=TEMPLATE, messages=MESSAGES)
@example(template="{{ 1/0 }}", messages=[])  # regression: ZeroDivisionError
@example(template="{{ range(3)|slice(0)|list }}", messages=[])  # regression: ZeroDivisionError inside a filter
@example(template="{{ 'x'|truncate(-5) }}", messages=[])  # regression: AssertionError inside a filter
@example(template="{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", messages=[])  # regression: RecursionError
@example(template="{{" + "(" * 5000 + "1" + ")" * 5000 + "}}", messages=[])  # regression: RecursionError (compile)
def test_random_jinja_templates(template, messages):
    _render(template, messages)


@FUZZ
@given(template=st.text(alphabet=st.sampled_from(list("{}%#-+ ab()[]'\"|.\n")), max_size=60) | st.text(max_size=40),
       messages=MESSAGES)
def test_random_text_as_template(template, messages):
    _render(template, messages)


@FUZZ
@given(template=TEMPLATE, messages=MESSAGES.filter(bool), system=st.none() | st.text(max_size=10))
def test_render_prompt_with_a_models_template(template, messages, system):
    """The one entry point the chat, trainer and benchmark use: PromptError or a prompt."""
    model = ModelPromptInfo(chat_template=template, bos_token="<s>", eos_token="</s>")
    try:
        rendered = render_prompt("chat", model, messages, system)
    except PromptError:
        return
    assert rendered.template == "chat" and rendered.add_special == (not template)  # empty: the fallback format
