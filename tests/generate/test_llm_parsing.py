"""Parsing LLM replies: every shape a model answers in becomes the same list of questions."""

from __future__ import annotations

import pytest

from ragtune.generate.llm.parsing import ParseError, parse_or_raise, parse_questions

TWO = ["What is X?", "How does Y work?"]
ZH = ["长城有多长？", "长城东起哪里？"]

CASES = [
    ("numbered dot", "1. What is X?\n2. How does Y work?", TWO),
    ("numbered paren + preamble", "Here are two questions:\n1) What is X?\n2) How does Y work?", TWO),
    ("parenthesised numbers", "(1) What is X?\n(2) How does Y work?", TWO),
    ("dash bullets", "- What is X?\n- How does Y work?", TWO),
    ("star bullets", "* What is X?\n* How does Y work?", TWO),
    ("unicode bullets", "• What is X?\n• How does Y work?", TWO),
    ("json array", '["What is X?", "How does Y work?"]', TWO),
    ("json object key", '{"questions": ["What is X?", "How does Y work?"]}', TWO),
    ("json objects with answers",
     '{"questions": [{"question": "What is X?", "answer": "x"}, {"question": "How does Y work?"}]}', TWO),
    ("fenced json", '```json\n{"queries": ["What is X?", "How does Y work?"]}\n```', TWO),
    ("json inside prose", 'Output: [{"q": "What is X?"}, {"q": "How does Y work?"}] Done.', TWO),
    ("markdown heading + bold", "## Questions\n\n1. **What is X?**\n2. **How does Y work?**", TWO),
    ("bold question labels", "- **Question 1:** What is X?\n- **Question 2:** How does Y work?", TWO),
    ("Q/A mixed lines", "Q1: What is X?\nA1: X is a thing.\nQ2: How does Y work?\nAnswer: it works.", TWO),
    ("Question/Answer lines", "Question: What is X?\nAnswer: X.\nQuestion: How does Y work?\nAnswer: Y.", TWO),
    ("inline answers", "Sure!\n\nQ: What is X? A: X is a thing\nQ: How does Y work? A: well", TWO),
    ("two on one line", "1. What is X? 2. How does Y work?", TWO),
    ("unmarked paragraph", "What is X? How does Y work?", TWO),
    ("think block", "<think>Maybe: What is Z?</think>\n1. What is X?\n2. How does Y work?", TWO),
    ("duplicates removed", "1. What is X?\n2. what is x\n3. How does Y work?", TWO),
    ("imperative items", "1. Explain the role of X\n2. Describe Z", ["Explain the role of X", "Describe Z"]),
    ("chinese 问题/答案", "问题：长城有多长？\n答案：很长。\n问题：长城东起哪里？", ZH),
    ("chinese 、 numbering", "1、长城有多长？\n2、长城东起哪里？", ZH),
    ("chinese 一、 numbering", "一、长城有多长？\n二、长城东起哪里？", ZH),
    ("chinese json key", '{"问题": ["长城有多长？", "长城东起哪里？"]}', ZH),
    ("garbage", "I am sorry, I cannot help with that.", []),
    ("empty", "", []),
]


@pytest.mark.parametrize("text,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_parse_formats(text: str, expected: list[str]) -> None:
    assert parse_questions(text) == expected


def test_limit_keeps_the_first() -> None:
    assert parse_questions("1. A one?\n2. B two?\n3. C three?", limit=2) == ["A one?", "B two?"]


def test_parse_or_raise_names_the_reply() -> None:
    with pytest.raises(ParseError, match="cannot help"):
        parse_or_raise("I am sorry, I cannot help with that.")
    with pytest.raises(ValueError):  # ParseError is also a ValueError
        parse_or_raise("")
