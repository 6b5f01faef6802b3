"""What a question asks for and what a line of a document is: question kinds, questions, headings, table rows."""
from __future__ import annotations

import re

KINDS = ("count", "amount", "date", "person", "place", "other")
_KIND_PATTERNS = (
    ("date", r"\bwhen\b|\b(?:what|which|in what)\s+(?:year|date|day|month|century|decade|era|period|season)s?\b"
             r"|\bhow long ago\b"),
    ("count", r"\bhow\s+(?:many|often)\b|\b(?:what|which)\s+number\b"),
    ("amount", r"\bhow\s+(?:much|long|old|far|big|large|tall|high|fast|heavy|deep|wide)\b"
               r"|\b(?:what|which)\s+(?:percentage|percent|proportion|share|amount|size|rate|price|cost|value)\b"),
    ("person", r"\bwho(?:m|se)?\b|\b(?:what|which)\s+(?:person|man|woman|author|president|king|queen|leader)\b"),
    ("place", r"\bwhere\b|\b(?:what|which)\s+(?:country|city|state|place|region|town|continent|area|location)\b"),
)
_KIND = [(kind, re.compile(pattern, re.IGNORECASE)) for kind, pattern in _KIND_PATTERNS]
_DIGIT = re.compile(r"\d")
_LETTER = re.compile(r"[^\W\d_]")
_SENTENCE_END = tuple(".!?。！？…\"”’')»")
# A list item: a bullet, or a number or letter with a point or parenthesis, then a space.
LIST_ITEM = re.compile(r"\s*(?:[-*+\u2022\u2023\u25aa\u2013]|\d{1,3}[.)]|[a-z][.)])\s")
# A line break before a list item: kept where a quote is shown on one line (other breaks are a PDF's wrapping).
ITEM_BREAK = re.compile(r"\n(?=" + LIST_ITEM.pattern + ")")


def item_lines(text: str) -> list[str]:
    """The text's list items each on a line of their own, its other white space squashed."""
    return [" ".join(part.split()) for part in ITEM_BREAK.split(text) if part.strip()]


def question_kind(question: str) -> str:
    """What the question asks for: a number, a date, a person, a place or anything else."""
    for kind, pattern in _KIND:
        if pattern.search(question):
            return kind
    return "other"


def is_heading(text: str, words: int | None = None) -> bool:
    """A short line with no closing punctuation: a title or section heading rather than a sentence. `words`:
    its word count, when the caller has it already."""
    count = len(text.split()) if words is None else words
    return ("\n" not in text and count <= 10 and not text.rstrip().endswith(_SENTENCE_END)
            and not _labelled_row(text))


def _labelled_row(text: str) -> bool:
    """A table row that pairs a label with a figure ("Net Cash Income\t72,270\t73,600"): data, not a heading.
    A row of labels only ("Name\tAge", "Q1 2020\tQ2 2020") or of figures only ("2006\t2007") heads its table."""
    cells = text.split("\t")
    worded = [_LETTER.search(c) is not None for c in cells]
    return any(worded) and any(not w and _DIGIT.search(c) for c, w in zip(cells, worded))


_ASKING = re.compile(r"^\W*(?:who|whom|whose|what|which|when|where|why|how|is|are|was|were|do|does|did|can|could|"
                     r"should|would|will|has|have|had)\b|\?\W*$|_{3}", re.IGNORECASE)


def is_question(text: str) -> bool:
    """A question ("How much ...?") rather than a statement to find evidence for (a search, a claim to check):
    the two are ranked with their own weights."""
    return bool(_ASKING.search(text))
