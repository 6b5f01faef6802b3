"""PDF to text, page by page: PDFium (pypdf where PDFium cannot open the file), scans read by OCR, running heads and
garbage dropped."""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass

from qa.errors import UnreadableFileError
from qa.formats import ocr
from qa.formats.furniture import drop_furniture
from qa.formats.hyphens import join_hyphens
from qa.formats.text import normalise

# Bumped whenever the text this module produces for the same file changes: such files are re-extracted.
VERSION = "pdfium-3"  # 3: pages without a usable text layer read by OCR; 2: a line on two pages of three is furniture
# PDFium is not thread-safe: one document at a time in this process.
PDFIUM = threading.Lock()
_GLYPH_NAMES = re.compile(r"(?:/g\d+)+|(?:/uni[0-9A-Fa-f]{4})+")
_UNMAPPED = re.compile("[\x00-\x08\x0e-\x1f\ue000-\uf8ff\ufffd]")  # control codes, private-use glyphs
_GARBLED = "garbled text layer (the fonts map no letters; OCR would read it)"
_GARBLED_READ = "garbled text layer (the fonts map no letters)"
_NO_LAYER = "no text layer (an image of the page)"
# A file whose first pages of images hold no text (a photo album, a slide deck of pictures) is not OCR'd to its
# end at a second a page; one that OCR reads once is.
OCR_GIVE_UP = 5


@dataclass(frozen=True)
class PdfText:
    """Each page's text (empty for a page that was skipped), printed page labels, and what was skipped and why."""

    pages: tuple[str, ...]
    labels: tuple[str, ...]
    notes: tuple[str, ...]


def read_pdf(data: bytes) -> PdfText:
    """The text of every page; raises UnreadableFileError when the file as a whole has no usable text."""
    with PDFIUM:
        raw, labels, encrypted = _pdfium_pages(data)
        if raw is None and b"/BrotliDecode" in data:
            # PDFium has no Brotli filter: the same file with those streams decoded by pypdf is read at PDFium's
            # speed (1 s instead of pypdf's 13 s for the 25 drawings of the Brotli sample).
            decoded = _brotli_decoded(data)
            if decoded is not None:
                raw, labels, encrypted = _pdfium_pages(decoded)
    if raw is None:
        raw, labels, encrypted = _pypdf_pages(data)
    skipped: dict[str, list[int]] = {}  # reason -> pages
    pages: list[str] = []
    for number, text in enumerate(raw, 1):
        if isinstance(text, _Ocr):
            skipped.setdefault(f"{text.why}; read by OCR" if text.text else text.why, []).append(number)
            pages.append(normalise(text.text))
        elif isinstance(text, Exception):
            skipped.setdefault(f"could not be read ({short_reason(text)})", []).append(number)
            pages.append("")
        elif _garbled(text):
            skipped.setdefault(_GARBLED, []).append(number)
            pages.append("")
        else:
            pages.append(normalise(text.replace("\x02", "\ufffe")))
    notes = [f"{_page_list(numbers)}: {reason}" + ("" if reason.endswith("OCR") else "; skipped")
             for reason, numbers in skipped.items()]
    pages = drop_furniture(pages)
    pages = join_hyphens(pages)
    _check_any_text(pages, notes, encrypted)
    # Labels are kept only where the document prints other numbers than the physical ones.
    keep_labels = any(label and label != str(n) for n, label in enumerate(labels, 1))
    return PdfText(tuple(pages), tuple(labels) if keep_labels else (), tuple(notes))


@dataclass(frozen=True)
class _Ocr:
    text: str
    why: str


def _pdfium_pages(data: bytes) -> tuple[list[str | Exception | _Ocr] | None, list[str], bool]:
    import pypdfium2 as pdfium
    import pypdfium2.raw as raw_api

    try:
        document = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        # PDFium's last error outlives the call that set it: a file that fails for another reason after a
        # password-protected one also says "password". An encryption dictionary is the real sign.
        if "password" in str(exc).lower() and b"/Encrypt" in data:
            raise UnreadableFileError("password-protected PDF: open it with its password and save a copy without "
                                      "one (or print it to PDF), then index again") from None
        return None, [], False  # pypdf opens some files PDFium rejects (e.g. Brotli-compressed streams)
    try:
        encrypted = raw_api.FPDF_GetSecurityHandlerRevision(document.raw) != -1
        pages: list[str | Exception | _Ocr] = []
        misses, found = 0, False  # pages OCR read nothing on; whether it read any
        labels: list[str] = []
        for index in range(len(document)):
            try:
                labels.append(document.get_page_label(index) or "")
            except Exception:  # noqa: BLE001 (a damaged label tree loses labels, not text)
                labels.append("")
            try:
                page = document[index]
                textpage = page.get_textpage()
                text = textpage.get_text_range()
                textpage.close()
                why = ocr_reason(page, text) if ocr.available() else None
                if not why:
                    pages.append(text)
                elif misses >= OCR_GIVE_UP and not found:
                    pages.append(_Ocr("", f"{why}; not read, as OCR found no text on the file's first "
                                          f"{OCR_GIVE_UP} such pages"))
                else:
                    read = _read_drawn(page)
                    found = found or read.readable
                    misses += not read.readable
                    pages.append(_Ocr(read.text, why) if read.readable
                                 else _Ocr("", f"{why}, and OCR read nothing legible on it"))
                page.close()
            except Exception as exc:  # noqa: BLE001 (one bad page must not lose the others)
                pages.append(exc)
        return pages, labels, encrypted
    finally:
        document.close()


def ocr_reason(page, text: str) -> str | None:  # page: pypdfium2.PdfPage
    """Why OCR should read this page: its text layer is garbage, or it has next to no text but an image covering
    a fifth of it or more (a scanned page; a slide's title over a photo is read too, and kept only if OCR reads
    more). None for a page whose text layer stands, or an empty page: OCR costs about a second a page."""
    if _garbled(text):
        return _GARBLED_READ
    if ocr.letters(text) >= ocr.MIN_LETTERS:
        return None
    import pypdfium2.raw as raw_api

    width, height = page.get_size()
    for image in page.get_objects(filter=[raw_api.FPDF_PAGEOBJ_IMAGE], max_depth=3):
        left, bottom, right, top = image.get_bounds()
        if (right - left) * (top - bottom) >= 0.2 * width * height:
            return _NO_LAYER
    return None


def drawn_for_ocr(page):  # -> (PIL.Image.Image, pixels per PDF point); page: pypdfium2.PdfPage
    """The page drawn in grey at OCR's resolution (less for a poster), and the scale it was drawn at."""
    scale = ocr.scale_for(*page.get_size())
    return page.render(scale=scale, grayscale=True).to_pil(), scale


def _read_drawn(page) -> ocr.PageText:
    image, scale = drawn_for_ocr(page)
    return ocr.read(image, round(scale * 72))


def _brotli_decoded(data: bytes) -> bytes | None:
    import io
    import logging

    from pypdf import PdfReader, PdfWriter
    from pypdf.generic import NameObject, StreamObject

    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data), strict=False))
        for obj in writer._objects:  # noqa: SLF001 (pypdf has no public walk over every stream)
            if isinstance(obj, StreamObject) and "Brotli" in str(obj.get("/Filter", "")):
                decoded = obj.get_data()
                obj._data = decoded  # noqa: SLF001 (set_data would encode it again with the same filter)
                for key in ("/Filter", "/DecodeParms"):
                    if key in obj:
                        del obj[NameObject(key)]
        out = io.BytesIO()
        writer.write(out)
        return out.getvalue()
    except Exception:  # noqa: BLE001 (then pypdf reads it as it is)
        return None


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


def short_reason(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    # Messages of damaged files can quote raw bytes: keep the reader's words, never the file's.
    return type(exc).__name__ if not text or not text.isprintable() or len(text) > 80 else text


def _garbled(text: str) -> bool:
    """A text layer whose fonts map no real characters: control codes, private-use glyphs or /gNNN names."""
    visible = len(text) - sum(text.count(space) for space in " \n\r\t")
    if visible < 20:
        return False
    bad = len(_UNMAPPED.findall(text))
    if "/g" in text or "/uni" in text:
        bad += sum(len(m.group()) for m in _GLYPH_NAMES.finditer(text))
    return bad > 0.3 * visible


def _check_any_text(pages: list[str], notes: list[str], encrypted: bool) -> None:
    if any(ch.isalnum() for page in pages for ch in page):
        return
    pages_of = f"{len(pages)} page{'s' if len(pages) != 1 else ''}"
    if any(_GARBLED in note for note in notes):
        raise UnreadableFileError("garbled text layer: its fonts map no letters, so the text cannot be read out; "
                                  f"{ocr.INSTALL_HINT}, or run OCR on it (e.g. ocrmypdf --force-ocr), then index "
                                  "again")
    if any(_GARBLED_READ in note for note in notes):
        raise UnreadableFileError("garbled text layer, and OCR read nothing legible on its pages: check that the "
                                  "file shows text in a PDF viewer")
    if any(_NO_LAYER in note for note in notes):
        raise UnreadableFileError(f"PDF has no text layer, and OCR read no text on its {pages_of}: are they images "
                                  "of text? A scan under 150 dpi may be too coarse to read")
    if encrypted:
        raise UnreadableFileError("encrypted PDF that opens without a password, but its pages hold no text")
    if notes:
        raise UnreadableFileError(f"no page of this PDF could be read ({notes[0]}): repair or re-export it")
    if ocr.available():
        raise UnreadableFileError(f"PDF has no text on its {pages_of}: no text layer, and no image of a page for OCR "
                                  "to read (blank pages, or letters drawn as shapes?); ocrmypdf --force-ocr reads "
                                  "the latter")
    raise UnreadableFileError(f"PDF has no text layer ({pages_of} of images: a scan?): {ocr.INSTALL_HINT}, or "
                              "run OCR on it (e.g. ocrmypdf), then index again")
