"""A PDF page drawn for the web chat's source viewer, with the answering sentence marked on it."""
from __future__ import annotations

import re

from qa.errors import UnreadableFileError
from qa.formats import ocr
from qa.formats.pdf import PDFIUM, drawn_for_ocr, ocr_reason, short_reason

_NOT_ALNUM = re.compile(r"[^\w]+")


def page_image(data: bytes, page: int, sentence: str, scale: float = 1.6):  # -> PIL.Image.Image
    """Page `page` (1-based) drawn as an image, with `sentence` marked where PDFium finds it on the page (its
    first words, fewer if the extracted text was changed: ligatures folded, hyphens joined), or, on a page whose
    text was read by OCR, where OCR finds its words. Nothing is written to disk."""
    import pypdfium2 as pdfium
    from PIL import Image, ImageDraw

    with PDFIUM:
        try:
            document = pdfium.PdfDocument(data)
        except pdfium.PdfiumError as exc:
            raise UnreadableFileError(f"cannot draw this PDF ({short_reason(exc)})") from None
        try:
            if not 1 <= page <= len(document):
                raise UnreadableFileError(f"the PDF has no page {page}")
            handle = document[page - 1]
            image = handle.render(scale=scale).to_pil().convert("RGBA")
            height = handle.get_height()
            textpage = handle.get_textpage()  # read once: searched, and judged for OCR if the search fails
            try:
                boxes = _sentence_boxes(textpage, sentence) or _read_boxes(handle, textpage, sentence)
            finally:
                textpage.close()
            handle.close()
        finally:
            document.close()
    layer = Image.new("RGBA", image.size, (0, 0, 0, 0))  # drawn apart and blended: the text stays readable
    overlay = ImageDraw.Draw(layer)
    for left, bottom, right, top in boxes:
        box = (left * scale - 2, (height - top) * scale - 2, right * scale + 2, (height - bottom) * scale + 2)
        overlay.rectangle(box, fill=(253, 224, 71, 110), outline=(180, 83, 9, 255), width=2)
    return Image.alpha_composite(image, layer).convert("RGB")


def _sentence_boxes(textpage, sentence: str) -> list[tuple[float, float, float, float]]:
    words = sentence.split()
    for size in _prefix_sizes(len(words)):
        found = textpage.search(" ".join(words[:size]), match_case=False).get_next()
        if found:
            start, count = found
            if size < len(words):  # the rest of the sentence follows: mark as many characters as it has
                count = min(len(sentence), textpage.count_chars() - start)
            return [textpage.get_rect(i) for i in range(textpage.count_rects(start, count))]
    return []


def _read_boxes(page, textpage, sentence: str) -> list[tuple[float, float, float, float]]:
    """The sentence's words on a page that has no usable text layer, as OCR reads them, in PDF points."""
    if not ocr.available() or not ocr_reason(page, textpage.get_text_range()):
        return []
    image, scale = drawn_for_ocr(page)
    words = ocr.word_boxes(image, round(scale * 72))
    keys = [_key(word) for word, _ in words]
    wanted = [key for key in map(_key, sentence.split()) if key]
    height = page.get_height()
    for size in _prefix_sizes(len(wanted)):
        for first in range(len(keys) - size + 1):
            if keys[first : first + size] == wanted[:size]:  # then as many words as the sentence has
                return [(left / scale, height - bottom / scale, right / scale, height - top / scale)
                        for _, (left, top, right, bottom) in words[first : first + len(wanted)]]
    return []


def _prefix_sizes(words: int) -> list[int]:
    """How many of a sentence's first words to look for, most first: all of them, then fewer, for a sentence
    whose extracted text differs from the page's further on."""
    return [size for size in (words, 12, 8, 5, 3) if 0 < size <= words]


def _key(word: str) -> str:
    return _NOT_ALNUM.sub("", word).lower()
