"""Words a PDF split over two lines, joined again where the joined word is a word."""
from __future__ import annotations

import functools
import re

# PDFium marks a hyphen it believes ends a line inside a word with U+FFFE (or 0x02) and joins the two lines.
_SOFT_BREAK = re.compile(r"(\w+)\ufffe(\w*)")
_HARD_BREAK = re.compile(r"(\w+)-\n(\w+)")
_WORD = re.compile(r"\w+")
_HYPHENATED = re.compile(r"\w+-\w+")


def join_hyphens(pages: list[str]) -> list[str]:
    """Each page with its line-end hyphens resolved against the words of the whole document and a dictionary."""
    vocabulary = set(_WORD.findall("\n".join(pages).lower()))
    hyphenated = {w.lower() for page in pages if "-" in page for w in _HYPHENATED.findall(page)}
    return [_join_hyphens(page, vocabulary, hyphenated) for page in pages]


@functools.lru_cache(maxsize=1)
def _dictionary() -> frozenset[str]:
    """English words (pyspellchecker's list, offline): is "wellknown" a word, or "well-known" two?"""
    try:
        from spellchecker import SpellChecker
    except ImportError:
        return frozenset()
    return frozenset(SpellChecker(language="en").word_frequency.dictionary)


def _is_word(word: str, vocabulary: set[str]) -> bool:
    return word.lower() in vocabulary or word.lower() in _dictionary()


def _join_hyphens(page: str, vocabulary: set[str], hyphenated: set[str]) -> str:
    """Words split across lines joined where the joined word is a word (the document's own, or a dictionary's);
    kept hyphenated where both halves are words and the joined one is not ("well-known")."""

    def soft(match: re.Match[str]) -> str:  # PDFium thinks it is a line-end hyphen
        left, right = match.group(1), match.group(2)
        if not right or _is_word(left + right, vocabulary):
            return left + right
        if f"{left}-{right}".lower() in hyphenated or (_is_word(left, vocabulary) and _is_word(right, vocabulary)):
            return f"{left}-{right}"
        return left + right

    def hard(match: re.Match[str]) -> str:  # a hyphen at the end of a line
        left, right = match.group(1), match.group(2)
        if right[0].islower() and _is_word(left + right, vocabulary):
            return left + right
        return match.group()

    if "\ufffe" in page:
        page = _SOFT_BREAK.sub(soft, page).replace("\ufffe", "-")
    return _HARD_BREAK.sub(hard, page) if "-\n" in page else page
