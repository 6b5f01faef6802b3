"""The byline, abbreviation and definition rules: answers a sentence model trained on encyclopaedia questions misses."""
from __future__ import annotations

import re

_AUTHOR_QUESTION = re.compile(r"\bwho\b.*\b(?:wrote|write|writes|written|authored|signed|sent)\b|\bauthors?\b|"
                              r"\bwriters?\b|\bwritten by\b", re.IGNORECASE)
_NAME = r"(?:[A-Z][a-zà-ÿ'’-]+|[A-Z]\.)"
_PERSON = rf"{_NAME}(?:[ \t]+{_NAME}){{1,3}}"
_MARKS = r"[ \t∗*+#$†‡\d]*"
_BY = re.compile(rf"\b(?:[Bb]y|[Ff]rom|[Aa]uthors?(?:\(s\))?:?|[Ww]ritten by)\s+(?:(?:Dr|Prof|Mr|Mrs|Ms)\.?\s+)?"
                 rf"{_PERSON}")
_NAME_LINE = re.compile(rf"^[ \t]*{_PERSON}{_MARKS}(?:(?:,|\band\b){_MARKS}\s*{_PERSON}{_MARKS})*,?[ \t]*$",
                        re.MULTILINE)
BYLINE_ZONE = 1000  # characters from a document's start where its author is named
RULE_CONFIDENCE = 0.75  # what the byline and abbreviation rules claim: not a measured probability (docs/evaluation.md)


def asks_author(question: str) -> bool:
    """"Who wrote this?", "Who is the author?": answered by the document's byline, which no sentence model
    trained on encyclopaedia questions learns."""
    return bool(_AUTHOR_QUESTION.search(question))


def byline(text: str, start: int) -> tuple[int, int] | None:
    """The span of an author's byline in a sentence at `start` near its document's start, after the title line:
    the line for "A message from Chiu Hui-Li", "By Jane Doe" or "Original author(s) Andreas Gal", and for a line
    of names ("Mohammad Chuttur", "Andreas Gal, Brendan Eich")."""
    if start >= BYLINE_ZONE:
        return None
    found = _BY.search(text)
    if found and (start > 0 or "\n" in text[: found.start()]):  # not in the title line
        # Its line: a "sentence" of a PDF's first page or an infobox runs over many.
        first = text.rfind("\n", 0, found.start()) + 1
        last = text.find("\n", found.end())
        return start + first, start + (len(text) if last < 0 else last)
    for line in _NAME_LINE.finditer(text):
        if start + line.start() > 0:
            begin = start + line.start() + len(line.group()) - len(line.group().lstrip())
            return begin, start + line.start() + len(line.group().rstrip().rstrip(","))
    return None


_EXPANSION_QUESTION = re.compile(
    r"\bwhat\s+(?:does|do|did|is|are)\s+(?:the\s+)?(?:acronym\s+|abbreviation\s+)?[\"'“‘`]?"
    r"([A-Za-z][\w.&-]{1,15})[\"'”’`]?\s+(?:stand\s+for|short\s+for|mean)\b", re.IGNORECASE)


def expanded(question: str) -> str | None:
    """The abbreviation a question like "What does TAITRA stand for?" asks about."""
    found = _EXPANSION_QUESTION.search(question)
    return found.group(1) if found else None


def expansion(text: str, start: int, short: str) -> tuple[int, int] | None:
    """The span of the sentence at `start` if it spells `short` out: "... Council (TAITRA)" or "mpsc stands for".
    A rule, like the byline's."""
    s = re.escape(short)
    if re.search(rf"\w[\w\s,.&'’-]*\(\s*{s}\s*\)|\b{s}\W{{0,2}}\s+(?:stands|is short)\s+for\b", text, re.IGNORECASE):
        return start, start + len(text)
    return None


_DEFINITION_QUESTION = re.compile(
    r"^\W*(?:what|who|was|wer)\s+(?:is|are|was|were|ist|sind|war)\s+(?:(?:a|an|the|ein|eine|der|die|das)\s+)?"
    r"([^?!.,;:]{2,60}?)\s*\??\s*$", re.IGNORECASE)
_DEFINITION_WORDS = 6  # "What is the OMB number of the 2010 Form 1040?" asks for a number, not a definition
_ARTICLE = r"(?:(?:a|an|the|ein|eine|einen|der|die|das)\s+)?"
_DEFINES = r"(?:is|are|was|were|ist|sind|war|refers\s+to|means|bezeichnet)\b"


def defined(question: str) -> str | None:
    """The term a question like "What is a topological space?" or "Was ist ein topologischer Raum?" asks to
    have defined (a few words, without its article)."""
    found = _DEFINITION_QUESTION.search(question)
    term = found.group(1).strip() if found else ""
    return term if term and len(term.split()) <= _DEFINITION_WORDS else None


def definition(text: str, start: int, term: str) -> tuple[int, int] | None:
    """The span of the sentence at `start`, from the line where it defines `term`: a line that opens with the term
    (an article before it, a parenthesis after it allowed) followed by "is", "are", "refers to", "means" (or German
    "ist", "sind"). A line, not only the sentence's start: in a PDF a definition's headings ("1.1 Topological
    spaces", "Definition 1") run into its sentence."""
    name = r"\s+".join(re.escape(word) for word in term.split())
    found = re.search(rf"^[^\w\n]*{_ARTICLE}{name}\s*(?:\([^)]*\)\s*)?,?\s+{_DEFINES}", text,
                      re.IGNORECASE | re.MULTILINE)
    return (start + found.start(), start + len(text)) if found else None
