"""Prompt formats: the MedAlpaca template, chat templates rendered like the libraries, context fitting."""

from __future__ import annotations

import json

import pytest

from medalpaca_desktop.core.chat_protocol import ChatMessage
from medalpaca_desktop.core.prompts import (
    ModelPromptInfo,
    PromptError,
    fit_to_context,
    medalpaca_template,
    render_chat_template,
    render_medalpaca,
    render_prompt,
)
from resources import read_text

SMOLLM_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)
BLOCKS_TEMPLATE = """{% for m in messages %}
  {% if m.role == 'user' %}
    <u>{{ m.content | tojson }}</u>
  {% endif %}
{% endfor %}{{ strftime_now('%Y') | length }}"""


def msgs(*pairs: tuple[str, str]) -> list[ChatMessage]:
    return [ChatMessage(r, c) for r, c in pairs]


def test_medalpaca_single_turn_is_the_papers_format():
    data = json.loads(read_text("prompt_templates", "medalpaca.json"))
    text = render_medalpaca(msgs(("user", "What causes gout?")))
    assert text == (data["primer"] + "\n\n### Instruction:\nWhat causes gout?\n\n### Input:\n\n\n### Response:\n")
    assert medalpaca_template().prompt("What causes gout?") == text


def test_medalpaca_system_replaces_primer_and_history_is_kept():
    text = render_medalpaca(msgs(("user", "Q1"), ("assistant", "A1"), ("user", "Q2")), system="Be brief.")
    assert text.startswith("Be brief.\n\n### Instruction:\nQ1")
    assert "### Response:\nA1\n\n### Instruction:\nQ2" in text
    assert text.endswith("### Response:\n")
    assert medalpaca_template().cut_answer("Uric acid.\n\n### Instruction:\nmore") == "Uric acid."


@pytest.mark.parametrize("template", [SMOLLM_TEMPLATE, LLAMA2_TEMPLATE, BLOCKS_TEMPLATE])
@pytest.mark.parametrize("conversation", [
    [("user", "Hi there")],
    [("system", "You are terse."), ("user", "Hi"), ("assistant", "Hello."), ("user", "Fever in a child: é?")],
])
def test_chat_template_renders_like_llama_cpp_python(template, conversation):
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    messages = msgs(*conversation)
    ours = render_chat_template(template, messages, bos_token="<s>", eos_token="</s>")
    theirs = Jinja2ChatFormatter(template=template, eos_token="</s>", bos_token="<s>")(
        messages=[{"role": m.role, "content": m.content} for m in messages]).prompt
    assert ours == theirs


def test_chat_template_raise_exception_becomes_prompt_error():
    with pytest.raises(PromptError, match="alternate"):
        render_chat_template(LLAMA2_TEMPLATE, msgs(("user", "a"), ("user", "b")))


#: Gemma's chat template in shape: no system role, user/model turns.
GEMMA_LIKE_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' "
    "else message['role']) + '\n' + message['content'] + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)


def test_a_template_without_a_system_role_gets_the_system_text_in_the_first_user_turn():
    gemma = ModelPromptInfo(chat_template=GEMMA_LIKE_TEMPLATE, bos_token="<bos>", eos_token="<eos>")
    p = render_prompt("chat", gemma, msgs(("user", "Dose of amoxicillin?")), system="Answer briefly.")
    assert p.text == ("<bos><start_of_turn>user\nAnswer briefly.\n\nDose of amoxicillin?<end_of_turn>\n"
                      "<start_of_turn>model\n")
    with pytest.raises(PromptError, match="alternate"):  # other refusals still reach the user
        render_prompt("chat", ModelPromptInfo(chat_template=LLAMA2_TEMPLATE), msgs(("user", "a"), ("user", "b")),
                      system="s")


def test_chat_template_is_sandboxed():
    evil = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(PromptError):
        render_chat_template(evil, msgs(("user", "x")))
    with pytest.raises(PromptError, match="not valid Jinja"):
        render_chat_template("{% for %}", msgs(("user", "x")))


def test_render_prompt_formats_and_fallbacks():
    with_template = ModelPromptInfo(chat_template=SMOLLM_TEMPLATE, bos_token="<|im_start|>", eos_token="<|im_end|>")
    p = render_prompt("chat", with_template, msgs(("user", "Hi")))
    assert p.fallback is None and p.add_special is False and p.text.endswith("<|im_start|>assistant\n")
    p = render_prompt("chat", with_template, msgs(("user", "Hi")), system="Sys")
    assert p.text.startswith("<|im_start|>system\nSys<|im_end|>\n<|im_start|>user\nHi")

    chatml = render_prompt("chat", ModelPromptInfo(knows_chatml=True), msgs(("user", "Hi")))
    assert chatml.fallback == "chatml" and chatml.text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert "<|im_end|>" in chatml.stop
    plain = render_prompt("chat", ModelPromptInfo(), msgs(("user", "Hi")))
    assert plain.fallback == "medalpaca" and "### Instruction:\nHi" in plain.text
    assert "### Instruction:" in plain.stop

    raw = render_prompt("raw", ModelPromptInfo(), raw_prompt="The heart")
    assert raw.text == "The heart" and raw.add_special
    with pytest.raises(PromptError):
        render_prompt("chat", with_template, [])


def test_fit_to_context_drops_oldest_exchanges_first():
    conversation = msgs(("system", "S"), ("user", "u1 " * 10), ("assistant", "a1 " * 10),
                        ("user", "u2 " * 10), ("assistant", "a2 " * 10), ("user", "last"))
    info = ModelPromptInfo(knows_chatml=True)

    def render(m):
        return render_prompt("chat", info, m)

    def count(p):
        return len(p.text.split())

    full, n_full = fit_to_context(render, conversation, count, budget=1000)
    assert full.dropped_messages == 0
    fitted, n = fit_to_context(render, conversation, count, budget=n_full - 15)
    assert fitted.dropped_messages == 2 and n <= n_full - 15
    assert "u1" not in fitted.text and "u2" in fitted.text and fitted.text.startswith("<|im_start|>system\nS")
    with pytest.raises(PromptError, match="too long"):
        fit_to_context(render, conversation, count, budget=2)
