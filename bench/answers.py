"""Reading the chosen option out of a generated answer, by the paper's rule or a lenient one.

Both rules first drop special tokens a backend may leave in the text (``</s>``,
``<s>``, ``<|im_end|>``, ``<|eot_id|>``, ``<eos>``, ``[/INST]``...: anything shaped
``<|...|>``, ``</s>``/``<s>``/``<eos>``/``<pad>``/``<unk>`` or ``[INST]``/``[/INST]``),
as the paper's script decoded with ``skip_special_tokens=True``.

``paper`` (the headline; kbressem/medAlpaca: eval/eval_usmle.py stores the answer
after ``strip_special_chars``, and the scoring notebook eval/eval_models.ipynb @
47a979e0 counts it correct when ``answer.startswith(correct_option)``): the answer
is stripped of non-alphanumeric characters at the start, and the parse is its
first character when that is an option letter (case-sensitive, as ``startswith``
is), else None. Faithful consequences: "(B)" and "B." read B; "b)" and "The
answer is B" are unparseable; "Answer: B", "A patient..." read A; "Bacterial..."
reads B.

``lenient`` drops an echoed "### Response:" / "Assistant:" line at the start, then
tries, in order, and the first rule that finds a letter decides (a letter that is
not among the options makes the answer unparseable):

1. A leading choice: after markdown/quote marks, "(B)", "[B]", or the letter
   followed by ":", ".", ",", ")", "]", "*", " -" or the end ("B: Metformin", "B.", "b)",
   "B"); an upper-case letter followed by a space counts only when the option's
   text follows ("B Metformin"). "A patient..." is therefore not option A.
2. An explicit phrase anywhere: "answer", "option" or "choice" (optionally "the
   correct answer is", "answer:", "answer would be", "option (C)", ...), followed
   by a standalone letter.
3. A first-person pick: "I think/believe/choose/pick/select/would go with C",
   "it's C", "it is C", followed by a standalone letter.
4. The option's text: the first line (after an "Answer:" prefix) starts with, or
   contains as whole words, exactly one option's text (an option contained in a
   longer matching option yields to it); case and punctuation are ignored.

A "standalone letter" is followed by the end, punctuation, or a space; a
lower-case letter only by the end or punctuation ("the answer is a drug" is not
option A), and "A"/"I" followed by a lower-case word other than a few verbs and
conjunctions ("is", "because", ...) is read as the English word.
"""

from __future__ import annotations

import re

__all__ = ["RULES", "parse_answer", "strip_special_tokens"]

RULES: tuple[str, ...] = ("paper", "lenient")

_SPECIAL = re.compile(r"<\|[^|<>]{0,40}\|>|</?s>|<eos>|<bos>|<pad>|<unk>|<end_of_turn>|<start_of_turn>|"
                      r"\[/?INST\]|<<SYS>>|<</SYS>>", re.IGNORECASE)
_LEAD_MARKS = " \t\r\n*_#>\"'`“”‘’"
_CONNECTIVES = {"is", "was", "would", "should", "seems", "appears", "because", "since", "as", "and", "or",
                "but", "which", "with", "due", "given", "for", "in", "the"}


def strip_special_tokens(text: str) -> str:
    return _SPECIAL.sub(" ", text or "")


def parse_answer(text: str, options: dict[str, str], rule: str) -> str | None:
    """The option letter the answer picks under `rule` ("paper" or "lenient"), or None when unparseable."""
    if rule not in RULES:
        raise ValueError(f"unknown scoring rule {rule!r}; use one of {', '.join(RULES)}")
    clean = strip_special_tokens(text)
    if rule == "paper":
        return _paper(clean, options)
    return _lenient(clean, options)


def _paper(text: str, options: dict[str, str]) -> str | None:
    match = re.search(r"[A-Za-z0-9]", text)
    if not match:
        return None
    first = match.group(0)
    return first if first in options else None


_ECHO = re.compile(r"^\s*(?:#{1,4}\s*)?(?:response|assistant)\s*:?[ \t]*\n", re.IGNORECASE)


def _lenient(text: str, options: dict[str, str]) -> str | None:
    body = _ECHO.sub("", text).strip().lstrip(_LEAD_MARKS)
    if not body:
        return None
    for rule in (_leading_choice, _phrase_choice, _first_person_choice):
        letter = rule(body, options)
        if letter is not None:
            return letter if letter in options else None
    return _option_text(body, options)


def _standalone(text: str, end: int, letter: str) -> bool:
    """Is the letter ending at `end` a choice, not the start of a word or the article "a"?"""
    rest = text[end:]
    if not rest or rest[0] in ".:;,)]!?*":
        return True
    if rest[0] == "-":
        return len(rest) == 1 or rest[1].isspace()
    if not rest[0].isspace() or letter.islower():
        return False
    word = re.match(r"\s+([A-Za-z']+)", rest)
    article = word is not None and letter in ("A", "I") and word.group(1)[0].islower() \
        and word.group(1).lower() not in _CONNECTIVES
    return not article


def _leading_choice(body: str, options: dict[str, str]) -> str | None:
    bracket = re.match(r"[(\[]\s*([A-Za-z])\s*[)\]]", body)
    if bracket:
        return bracket.group(1).upper()
    match = re.match(r"([A-Za-z])(?=\s*[:.,)\]*]|\s*$|\s+[-–—]\s)", body)
    if match:
        return match.group(1).upper()
    spaced = re.match(r"([A-Z])\s+(.+)", body, flags=re.DOTALL)
    if spaced and spaced.group(1) in options \
            and _fold(spaced.group(2)).startswith(_fold(options[spaced.group(1)])):
        return spaced.group(1)
    return None


_PHRASE = re.compile(r"\b(?:answers?|options?|choices?)\b", re.IGNORECASE)
_FIRST_PERSON = re.compile(
    r"\b(?:I\s+(?:think|believe|guess|choose|chose|pick|picked|select|selected|go\s+with|"
    r"would\s+(?:choose|pick|select|say|go\s+with)|'d\s+(?:choose|pick|select|say|go\s+with))|"
    r"it'?s|it\s+is)\b", re.IGNORECASE)
_FILLER = {"is", "was", "would", "should", "will", "be", "probably", "likely", "most", "definitely", "clearly",
           "therefore", "then", "here", "option", "choice", "letter", "answer", "the", "correct", "it's", "its",
           "it", "that", ":", "=", "-", "–", "—"}
_TOKEN = re.compile(r"[(\[]\s*[A-Za-z]\s*[)\]]|[A-Za-z][A-Za-z']*|[:=\-–—]|\S")


def _letter_after(body: str, start: int) -> str | None:
    """The choice letter right after a keyword, skipping filler words ("is", "option", ":", ...)."""
    for count, token in enumerate(_TOKEN.finditer(body, start)):
        word = token.group(0)
        if word.lower() in _FILLER and count < 8:
            continue
        if word[0] in "([":
            return word.strip("()[] \t").upper()
        if len(word) == 1 and word.isalpha() and _standalone(body, token.end(), word):
            return word.upper()
        return None
    return None


def _scan(pattern: re.Pattern[str], body: str) -> str | None:
    for match in pattern.finditer(body):
        letter = _letter_after(body, match.end())
        if letter is not None:
            return letter
    return None


def _phrase_choice(body: str, options: dict[str, str]) -> str | None:
    return _scan(_PHRASE, body)


def _first_person_choice(body: str, options: dict[str, str]) -> str | None:
    return _scan(_FIRST_PERSON, body)


def _fold(text: str) -> str:
    return " ".join(re.sub(r"[^\w]+", " ", text.casefold()).split())


def _option_text(body: str, options: dict[str, str]) -> str | None:
    first = next((line for line in body.splitlines() if line.strip()), "")
    first = re.sub(r"^\s*(?:the\s+)?(?:correct\s+)?answer\s*(?:is|:)?\s*", "", first, flags=re.IGNORECASE)
    line = f" {_fold(first)} "
    if not line.strip():
        return None
    folded = {letter: _fold(text) for letter, text in options.items()}
    starts = [k for k, v in folded.items() if v and line.strip().startswith(v)]
    hits = starts or [k for k, v in folded.items() if v and f" {v} " in line]
    hits = [k for k in hits if not any(k != o and folded[k] in folded[o] for o in hits)]
    return hits[0] if len(hits) == 1 else None
