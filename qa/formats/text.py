"""Unicode clean-up shared by every format: line ends, ligatures and other compatibility characters, soft hyphens."""
from __future__ import annotations

import functools
import re
import unicodedata

from qa.errors import UnreadableFileError

# Compatibility mappings that only change how a character is drawn (ligatures, full-width forms, no-break
# spaces, math letters). Superscripts, subscripts and fractions are left alone: NFKC would turn "10²" into "102".
_FOLD_TAGS = {"<compat>", "<font>", "<noBreak>", "<wide>", "<narrow>", "<vertical>", "<small>"}
_LINE_BREAKS = {"\r\n": "\n", "\r": "\n", "\u2028": "\n", "\u2029": "\n\n", "\x0c": "\n", "\x0b": "\n",
                "\x85": "\n"}
_DROP = ("\x00", "\u00ad", "\ufeff", "\u200b")  # NUL, soft hyphen, BOM, zero-width space
# Other control characters (stray bytes of a PDF's text layer, a form feed's cousins) read as a space.
_CONTROLS = re.compile("[\x01-\x08\x0e-\x1f\x7f]")


@functools.lru_cache(maxsize=65536)
def _fold(ch: str) -> str:
    decomposition = unicodedata.decomposition(ch)
    if decomposition.split(" ", 1)[0] not in _FOLD_TAGS:
        return ch
    folded = unicodedata.normalize("NFKC", ch)
    # A folded space stays a plain space; a folded character never becomes a line break.
    return folded if "\n" not in folded else ch


def normalise(text: str) -> str:
    """One spelling for what readers see as the same text, so that a keyword search for "efficient" finds
    "efﬁcient": NFC, then ligatures and other compatibility characters folded; one kind of line end; invisible
    soft hyphens, BOMs and NULs dropped."""
    if "\r" in text or any(ch in text for ch in "\u2028\u2029\x0c\x0b\x85"):
        for old, new in _LINE_BREAKS.items():
            text = text.replace(old, new)
    for old in _DROP:
        if old in text:
            text = text.replace(old, "")
    text = _CONTROLS.sub(" ", text)
    if text.isascii():
        return text
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    table = {ord(ch): _fold(ch) for ch in set(text) if ord(ch) > 0x7F}
    return text.translate({k: v for k, v in table.items() if v != chr(k)})


def check_text(text: str, what: str = "the file") -> str:
    if not text.strip():
        raise UnreadableFileError(f"no text in {what}: add some text or remove it from the folder")
    return text
