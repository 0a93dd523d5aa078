"""The prompts a benchmark sends: the MedAlpaca paper's and lm-eval's medqa_4options (light).

MedAlpaca (kbressem/medAlpaca eval/): the repository's template
with the instruction "Answer the multiple choice question correctly and
truthfully." and as input the question, a newline, then one "X: option" line per
option; the answer is generated after "### Response:".

lm-eval (lm-evaluation-harness, task medqa_4options): "Question: {q}\\nA. {a}\\n
...D. {d}\\nAnswer:" and the continuations " A" .. " D" (the harness joins
context and continuation with its target delimiter, a space); acc_norm divides a
choice's log-likelihood by the choice's length in characters (the letter: 1).

A task of the medical suite (bench/tasks.py) brings its own lm-eval prompt (MedMCQA's
"Choices:" line, PubMedQA's abstract and yes/no/maybe continuations, MMLU's description);
without one, the medqa_4options prompt above is used.

Either can be wrapped in the model's own chat template (`apply_chat_template`),
rendered the way core.prompts renders chat prompts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bench.questions import Question
from medalpaca_desktop.core.chat_protocol import ChatMessage
from medalpaca_desktop.core.prompts import ModelPromptInfo, medalpaca_template, render_prompt

if TYPE_CHECKING:
    from bench.tasks import TaskSpec

INSTRUCTION = "Answer the multiple choice question correctly and truthfully."
LMEVAL_DELIMITER = " "  # lm-eval's target_delimiter for multiple_choice tasks
LMEVAL_STOP = ["\n\n", "Question:"]  # generate mode with the lm-eval prompt: one answer, then stop


@dataclass
class BenchPrompt:
    """What one question sends to the model."""

    text: str  # the whole prompt (generate) or the context (loglikelihood)
    template: str  # "medalpaca", "lm-eval", or "chat" when wrapped in a chat template
    add_special: bool = True  # add the model's BOS when tokenizing (False: the text already holds it)
    stop: list[str] = field(default_factory=list)
    continuations: dict[str, str] = field(default_factory=dict)  # letter -> continuation text (loglikelihood)
    choices: dict[str, str] = field(default_factory=dict)  # letter -> the choice whose length normalises acc_norm
    chat_fallback: str | None = None  # the model has no chat template: which format stood in


def medalpaca_input(q: Question) -> str:
    """The paper's input: the question, a newline, one "X: option text" line per option."""
    return q.question + "\n" + "\n".join(f"{letter}: {text}" for letter, text in q.options.items())


def lmeval_text(q: Question) -> str:
    """lm-eval medqa_4options' doc_to_text, for any number of options."""
    options = "".join(f"{letter}. {text}\n" for letter, text in q.options.items())
    return f"Question: {q.question}\n{options}Answer:"


def build_prompt(q: Question, mode: str, style: str, chat: ModelPromptInfo | None = None,
                 task: TaskSpec | None = None) -> BenchPrompt:
    """The prompt for one question; `chat` (the loaded model's template facts) wraps it in a chat template;
    `task` (a suite task) brings its own lm-eval prompt and continuations."""
    if style == "medalpaca":
        tpl = medalpaca_template()
        body = task.medalpaca_input(q) if task is not None else medalpaca_input(q)
        if chat is None:
            prompt = BenchPrompt(tpl.prompt(INSTRUCTION, body), "medalpaca", stop=[tpl.answer_cut])
        else:
            prompt = _chat(f"{INSTRUCTION}\n\n{body}", chat)
        delimiter = ""  # the answer follows "### Response:\n" (or the chat template's assistant header)
    elif style == "lm-eval":
        text = task.lmeval_text(q) if task is not None else lmeval_text(q)
        if chat is None:
            prompt = BenchPrompt(text, "lm-eval", stop=list(LMEVAL_STOP))
        else:
            prompt = _chat(text, chat)
        delimiter = LMEVAL_DELIMITER
    else:
        raise ValueError(f"unknown prompt style {style!r}")
    if mode == "loglikelihood":
        if task is not None:
            prompt.choices = task.choice_texts(q)
            prompt.continuations = task.continuations(q, delimiter)
        else:
            prompt.choices = {letter: letter for letter in q.options}
            prompt.continuations = {letter: delimiter + letter for letter in q.options}
        if not prompt.add_special and chat is not None and chat.bos_token and prompt.text.startswith(chat.bos_token):
            # The scorers add the tokenizer's own BOS, as lm-eval does: keep it from appearing twice.
            prompt.text = prompt.text[len(chat.bos_token):]
    return prompt


def _chat(user_text: str, chat: ModelPromptInfo) -> BenchPrompt:
    rendered = render_prompt("chat", chat, [ChatMessage("user", user_text)])
    return BenchPrompt(rendered.text, "chat", add_special=rendered.add_special, stop=list(rendered.stop),
                       chat_fallback=rendered.fallback)
