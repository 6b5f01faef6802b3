"""Abbreviations a document defines ("probability of causation (PC)"), found as Schwartz and Hearst's algorithm does."""
from __future__ import annotations

import re

# "(PC)", "(PCBs)", "(CYP1A1)", "(AhR)": a short form in parentheses with at least two capitals.
_SHORT = re.compile(r"\(\s*([A-Za-z][\w-]{1,9})\s*\)")
_CAPITALS = re.compile(r"[A-Z]")
_WORD = re.compile(r"\S+")


def defined_abbreviations(text: str) -> dict[str, str]:
    """Each short form the text defines in parentheses after its long form, with that long form (the first
    definition of each): "polychlorinated biphenyls (PCBs)" gives {"PCBs": "polychlorinated biphenyls"}. A long form
    is the fewest words before the parenthesis whose letters hold the short form's in order, its first letter
    starting a word (A. Schwartz and M. Hearst, "A simple algorithm for identifying abbreviation definitions in
    biomedical text", 2003)."""
    found: dict[str, str] = {}
    for match in _SHORT.finditer(text):
        short = match.group(1)
        if short in found or len(_CAPITALS.findall(short)) < 2:
            continue
        line_start = text.rfind("\n", 0, match.start()) + 1
        words = _WORD.findall(text[max(line_start, match.start() - 200) : match.start()])
        window = words[-min(len(short) + 5, 2 * len(short)) :]
        long = _long_form(short, " ".join(window))
        if long and len(long) > len(short) and "(" not in long and ")" not in long:
            found[short] = long
    return found


def _long_form(short: str, candidate: str) -> str | None:
    """The shortest end of `candidate` that spells `short` (Schwartz and Hearst's backwards match)."""
    s, c = len(short) - 1, len(candidate) - 1
    while s >= 0:
        letter = short[s].lower()
        if not letter.isalnum():
            s -= 1
            continue
        # The short form's first letter must begin a word of the long form.
        while c >= 0 and (candidate[c].lower() != letter or (s == 0 and c > 0 and candidate[c - 1].isalnum())):
            c -= 1
        if c < 0:
            return None
        c -= 1
        s -= 1
    start = candidate.rfind(" ", 0, c + 1) + 1
    return candidate[start:].strip(" ,;:") or None
