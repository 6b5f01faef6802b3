"""PDF to text, page by page: PDFium (pypdf where PDFium cannot open the file), running heads and garbage dropped."""
from __future__ import annotations

import functools
import re
import threading
from collections import Counter
from dataclasses import dataclass

from qa.errors import UnreadableFileError
from qa.formats.text import normalise

# Bumped whenever the text this module produces for the same file changes: such files are re-extracted.
VERSION = "pdfium-1"
# PDFium is not thread-safe: one document at a time in this process.
_PDFIUM = threading.Lock()
# PDFium marks a hyphen it believes ends a line inside a word with U+FFFE (or 0x02) and joins the two lines.
_SOFT_BREAK = re.compile(r"(\w+)[\ufffe\x02](\w*)")
_HARD_BREAK = re.compile(r"(\w+)-\n(\w+)")
_WORD = re.compile(r"\w+")
_GLYPH_NAMES = re.compile(r"(?:/g\d+)+|(?:/uni[0-9A-Fa-f]{4})+")
_PAGE_NUMBER = re.compile(r"[-–—(\[]*\s*(?:page\s+)?(?:\d+|[ivxlcdm]+)(?:\s*(?:/|of)\s*\d+)?\s*[-–—)\]]*", re.I)
_DIGITS = re.compile(r"\d+")
_GARBLED = "garbled text layer (the fonts map no letters; OCR would read it)"


@dataclass(frozen=True)
class PdfText:
    """Each page's text (empty for a page that was skipped), printed page labels, and what was skipped and why."""

    pages: tuple[str, ...]
    labels: tuple[str, ...]
    notes: tuple[str, ...]


def read_pdf(data: bytes) -> PdfText:
    """The text of every page; raises UnreadableFileError when the file as a whole has no usable text."""
    with _PDFIUM:
        raw, labels, encrypted = _pdfium_pages(data)
    if raw is None:
        raw, labels, encrypted = _pypdf_pages(data)
    skipped: dict[str, list[int]] = {}  # reason -> pages
    pages: list[str] = []
    for number, text in enumerate(raw, 1):
        if isinstance(text, Exception):
            skipped.setdefault(f"could not be read ({_short(text)})", []).append(number)
            pages.append("")
        elif _garbled(text):
            skipped.setdefault(_GARBLED, []).append(number)
            pages.append("")
        else:
            pages.append(normalise(text))
    notes = [f"{_page_list(numbers)}: {reason}; skipped" for reason, numbers in skipped.items()]
    pages = _drop_furniture(pages)
    vocabulary = {w.lower() for page in pages for w in _WORD.findall(page)}
    pages = [_join_hyphens(page, vocabulary) for page in pages]
    _check_any_text(pages, notes, encrypted)
    # Labels are kept only where the document prints other numbers than the physical ones.
    keep_labels = any(label and label != str(n) for n, label in enumerate(labels, 1))
    return PdfText(tuple(pages), tuple(labels) if keep_labels else (), tuple(notes))


def _pdfium_pages(data: bytes) -> tuple[list[str | Exception] | None, list[str], bool]:
    import pypdfium2 as pdfium
    import pypdfium2.raw as raw_api

    try:
        document = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        if "password" in str(exc).lower():
            raise UnreadableFileError("password-protected PDF: open it with its password and save a copy without "
                                      "one (or print it to PDF), then index again") from None
        return None, [], False  # pypdf opens some files PDFium rejects (e.g. Brotli-compressed streams)
    try:
        encrypted = raw_api.FPDF_GetSecurityHandlerRevision(document.raw) != -1
        pages: list[str | Exception] = []
        labels: list[str] = []
        for index in range(len(document)):
            try:
                labels.append(document.get_page_label(index) or "")
            except Exception:  # noqa: BLE001 (a damaged label tree loses labels, not text)
                labels.append("")
            try:
                page = document[index]
                textpage = page.get_textpage()
                pages.append(textpage.get_text_range())
                textpage.close()
                page.close()
            except Exception as exc:  # noqa: BLE001 (one bad page must not lose the others)
                pages.append(exc)
        return pages, labels, encrypted
    finally:
        document.close()


def _pypdf_pages(data: bytes) -> tuple[list[str | Exception], list[str], bool]:
    import io
    import logging

    from pypdf import PdfReader
    from pypdf.errors import DependencyError, PyPdfError

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # it logs every repaired cross-reference table
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        encrypted = reader.is_encrypted
        if encrypted and not reader.decrypt(""):
            raise UnreadableFileError("password-protected PDF: open it with its password and save a copy "
                                      "without one, then index again")
        pages = list(reader.pages)
        labels = list(reader.page_labels) if len(reader.page_labels) == len(pages) else []
    except UnreadableFileError:
        raise
    except DependencyError:
        raise UnreadableFileError("encrypted PDF that needs a decoder this installation lacks: save a copy "
                                  "without encryption (print to PDF), then index again") from None
    except (PyPdfError, ValueError, KeyError, TypeError, OSError, AttributeError, IndexError, RecursionError):
        raise UnreadableFileError("broken PDF: neither PDFium nor pypdf can read its structure; open it in a "
                                  "PDF viewer and save or print it to a new PDF, then index again") from None
    texts: list[str | Exception] = []
    for page in pages:
        try:
            texts.append(page.extract_text() or "")
        except Exception as exc:  # noqa: BLE001 (pypdf raises many kinds on a damaged page)
            texts.append(exc)
    return texts, labels, encrypted


def _page_list(numbers: list[int]) -> str:
    """"page 3", "pages 2-5, 9": consecutive pages as ranges."""
    ranges: list[list[int]] = []
    for n in numbers:
        if ranges and n == ranges[-1][1] + 1:
            ranges[-1][1] = n
        else:
            ranges.append([n, n])
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in ranges)
    return f"page{'s' if len(numbers) > 1 else ''} {text}"


def _short(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    # Messages of damaged files can quote raw bytes: keep the reader's words, never the file's.
    return type(exc).__name__ if not text or not text.isprintable() or len(text) > 80 else text


def _garbled(text: str) -> bool:
    """A text layer whose fonts map no real characters: control codes, private-use glyphs or /gNNN names."""
    visible = [ch for ch in text if not ch.isspace()]
    if len(visible) < 20:
        return False
    bad = sum(1 for ch in visible if ord(ch) < 32 or 0xE000 <= ord(ch) <= 0xF8FF or ch == "\ufffd")
    bad += sum(len(m.group()) for m in _GLYPH_NAMES.finditer(text))
    return bad > 0.3 * len(visible)


def _shape(line: str) -> str:
    # Any word with a digit in it is one placeholder: "14773_03_307-330_r7dy.qxd" and "…_r9jm.qxd" match.
    return " ".join("#" if any(c.isdigit() for c in word) else word for word in line.lower().split())


def _drop_furniture(pages: list[str]) -> list[str]:
    """Running heads and footers, page numbers and printer's marks, peeled off the top and bottom of each page:
    lines that carry the page's own number (at the document's usual offset), lines whose shape (numbers aside)
    stands at the edge of many pages, bare page numbers and rules; and very short lines found on most pages."""
    if sum(1 for p in pages if p.strip()) < 3:
        return pages
    most = max(3, sum(1 for p in pages if p.strip()) // 3)
    exact = Counter(line for page in pages for line in {ln.strip() for ln in page.split("\n")} if line)
    split = [[ln for ln in page.split("\n") if not (len(ln.strip()) <= 6 and exact[ln.strip()] >= most)]
             for page in pages]
    edge_shapes: Counter[str] = Counter()
    edge_lines: Counter[str] = Counter()
    offsets: list[set[int]] = []  # per page: physical page minus each number near its top or bottom
    for number, lines in enumerate(split, 1):
        content = [ln for ln in lines if ln.strip()]
        edge = content[:3] + content[-3:]
        edge_shapes.update({_shape(ln) for ln in edge})
        edge_lines.update({ln.strip() for ln in edge})
        offsets.append({number - int(n) for ln in edge for n in _DIGITS.findall(ln) if len(n) <= 4})

    def page_numbered(line: str, number: int) -> bool:
        # It carries its page's printed number: the same offset from the physical page as on nearby pages
        # (a book's offset changes from part to part, so only neighbours count).
        near = offsets[max(0, number - 11) : number - 1] + offsets[number : number + 10]
        return any(sum(number - int(n) in seen for seen in near) >= 2 for n in _DIGITS.findall(line) if len(n) <= 4)

    def furniture(line: str, number: int, outermost: bool) -> bool:
        if len(line) > 120:
            return False
        if not any(c.isalnum() for c in line) or _PAGE_NUMBER.fullmatch(line):
            return True
        if edge_shapes[_shape(line)] >= most:
            # On the edge of many pages: furniture if it is the same text each time, or its numbers are the
            # page's ("Page 17"); a numbered heading ("Definition 26") is not.
            if not any(c.isdigit() for c in line) or edge_lines[line] >= most or page_numbered(line, number):
                return True
        return outermost and page_numbered(line, number)

    result = []
    for number, lines in enumerate(split, 1):
        keep = [True] * len(lines)
        for order in (range(len(lines)), range(len(lines) - 1, -1, -1)):  # peel from the top, then the bottom
            # One line a side may go for carrying the page number: a running head, not the "Definition 26"
            # under it.
            numbered = False
            for i in order:
                line = lines[i].strip()
                if not line:
                    keep[i] = False
                    continue
                if furniture(line, number, False):
                    keep[i] = False
                elif not numbered and furniture(line, number, True):
                    keep[i], numbered = False, True
                else:
                    break
        result.append("\n".join(line for line, k in zip(lines, keep) if k).strip())
    return result


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


def _join_hyphens(page: str, vocabulary: set[str]) -> str:
    """Words split across lines joined where the joined word is a word (the document's own, or a dictionary's);
    kept hyphenated where both halves are words and the joined one is not ("well-known")."""

    def soft(match: re.Match[str]) -> str:  # PDFium thinks it is a line-end hyphen
        left, right = match.group(1), match.group(2)
        if not right or _is_word(left + right, vocabulary):
            return left + right
        if f"{left}-{right}".lower() in _hyphenated(page) or (_is_word(left, vocabulary) and _is_word(right, vocabulary)):
            return f"{left}-{right}"
        return left + right

    def hard(match: re.Match[str]) -> str:  # a hyphen at the end of a line
        left, right = match.group(1), match.group(2)
        if right[0].islower() and _is_word(left + right, vocabulary):
            return left + right
        return match.group()

    if "\ufffe" in page or "\x02" in page:
        page = _SOFT_BREAK.sub(soft, page).replace("\ufffe", "-").replace("\x02", "-")
    return _HARD_BREAK.sub(hard, page) if "-\n" in page else page


def _hyphenated(page: str) -> set[str]:
    return {m.group().lower() for m in re.finditer(r"\w+-\w+", page)}


def _check_any_text(pages: list[str], notes: list[str], encrypted: bool) -> None:
    if any(ch.isalnum() for page in pages for ch in page):
        return
    if any("garbled" in note for note in notes):
        raise UnreadableFileError("garbled text layer: its fonts map no letters, so the text cannot be read out; "
                                  "run OCR on it (e.g. ocrmypdf --force-ocr), then index again")
    if encrypted:
        raise UnreadableFileError("encrypted PDF that opens without a password, but its pages hold no text")
    if notes:
        raise UnreadableFileError(f"no page of this PDF could be read ({notes[0]}): repair or re-export it")
    raise UnreadableFileError(f"PDF has no text layer ({len(pages)} page{'s' if len(pages) != 1 else ''} of "
                              "images: a scan?): run OCR on it (e.g. ocrmypdf), then index again")
