"""The answer parser against real-looking model outputs, under the paper's rule and the lenient one."""

from __future__ import annotations

import pytest

from bench.answers import RULES, parse_answer, strip_special_tokens

OPTIONS = {"A": "Aspirin", "B": "Metformin", "C": "Insulin glargine", "D": "Lisinopril"}

# (output, paper, lenient)
TABLE = [
    ("B: Metformin", "B", "B"),
    ("B", "B", "B"),
    ("B.", "B", "B"),
    ("B. Metformin lowers hepatic glucose output.", "B", "B"),
    ("b)", None, "B"),  # startswith("B") is case-sensitive in the repository
    ("b) metformin", None, "B"),
    ("(B)", "B", "B"),  # the repository strips leading non-alphanumerics first
    ("[C]", "C", "C"),
    ("**D**", "D", "D"),
    ("D - Lisinopril", "D", "D"),
    ("B Metformin", "B", "B"),
    ("The answer is B", None, "B"),
    ("The answer is B.", None, "B"),
    ("The correct answer is: C", None, "C"),
    ("The answer is (c).", None, "C"),
    ("Answer: B", "A", "B"),  # the paper's rule reads the first letter: "A"
    ("Answer - D", "A", "D"),
    ("Option B", None, "B"),
    ("option (b) is correct", None, "B"),
    ("Metformin", None, "B"),
    ("Insulin glargine is the best choice here.", None, "C"),
    ("Answer: Lisinopril", "A", "D"),
    ("I think C is the answer because the patient needs basal insulin.", None, "C"),
    ("I would go with D.", None, "D"),
    ("I think it's A", None, "A"),
    ("The answer is not A, it is C", None, "C"),
    ("", None, None),
    ("   \n\t ", None, None),
    ("</s>", None, None),
    ("<|im_end|>", None, None),
    ("<|eot_id|>", None, None),
    ("B</s>", "B", "B"),
    ("<s> C: Insulin glargine<|im_end|>", "C", "C"),
    ("\n\n  B: Metformin", "B", "B"),
    ("\n### Response:\nC", None, "C"),
    ("b: metformin", None, "B"),
    ("E.", None, None),  # a letter that is not among the options
    ("The answer is E", None, None),
    ("A patient with diabetes should start metformin.", "A", "B"),  # article, not option A (lenient)
    ("A patient with diabetes needs a drug.", "A", None),
    ("A 45-year-old man", "A", None),
    ("A: Aspirin", "A", "A"),
    ("A.", "A", "A"),
    ("a drug that lowers glucose", None, None),
    ("The answer is a drug that lowers glucose", None, None),
    ("Bacterial infection", "B", None),  # starts with B: the repository counts it
    ("B-cell lymphoma", "B", None),
    ("42", None, None),
    ("?", None, None),
]


@pytest.mark.parametrize("text, paper, lenient", TABLE)
def test_parse_table(text, paper, lenient):
    assert parse_answer(text, OPTIONS, "paper") == paper
    assert parse_answer(text, OPTIONS, "lenient") == lenient


def test_lenient_never_contradicts_an_explicit_paper_parse():
    """Where the paper rule reads a letter from a clean "X: ..." / "X." answer, lenient reads the same."""
    for text, paper, lenient in TABLE:
        if paper and text.lstrip(" \n*([").startswith(f"{paper}") and text.lstrip()[1:2] in (":", ".", ")", "*", ""):
            assert lenient == paper, text


def test_option_text_needs_a_unique_match():
    opts = {"A": "Aspirin", "B": "Aspirin and clopidogrel", "C": "Clopidogrel", "D": "Warfarin"}
    assert parse_answer("Aspirin and clopidogrel", opts, "lenient") == "B"  # the longer option contains the shorter
    assert parse_answer("aspirin", opts, "lenient") == "A"
    assert parse_answer("either warfarin or clopidogrel", opts, "lenient") is None  # two options named
    assert parse_answer("Heparin", opts, "lenient") is None


def test_five_options_and_letters_beyond_e():
    opts = {k: f"text {k}" for k in "ABCDE"}
    assert parse_answer("E: text E", opts, "paper") == "E"
    assert parse_answer("The answer is E", opts, "lenient") == "E"
    assert parse_answer("F", opts, "lenient") is None and parse_answer("F", opts, "paper") is None


def test_special_tokens_are_stripped():
    assert strip_special_tokens("<|im_start|>assistant\nB<|im_end|>").split() == ["assistant", "B"]
    assert strip_special_tokens("[INST] x [/INST] C</s>").split() == ["x", "C"]


def test_unknown_rule_is_an_error():
    assert RULES == ("paper", "lenient")
    with pytest.raises(ValueError, match="unknown scoring rule 'strict'"):
        parse_answer("B", OPTIONS, "strict")
