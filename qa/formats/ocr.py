"""Text read from a drawn page by OCR (Tesseract through tesserocr), for PDF pages that have no usable text layer."""
from __future__ import annotations

import functools
import glob
import os
import re
import threading
from dataclasses import dataclass

# Drawn at 300 dpi, Tesseract's recommended resolution; a poster-sized page is drawn smaller, so that one page
# never takes more than about 40 MB of memory.
DPI = 300
MAX_PIXELS = 40_000_000
# Below this mean word confidence (0-100) the page is noise that OCR guessed at (a photo, a pattern, boxes).
MIN_CONFIDENCE = 55
MIN_LINE_CONFIDENCE = 40
# A page with fewer letters has no text worth the name: its text layer is OCR'd, and so little OCR is not kept.
MIN_LETTERS = 20
_LETTER = re.compile(r"[^\W_]")
# Tesseract's API object is not thread-safe, and one is kept per process: loading its model takes 0.2 s.
_LOCK = threading.Lock()
_PLACES = ("/usr/share/tesseract-ocr/*/tessdata", "/usr/share/tessdata", "/usr/local/share/tessdata",
           "/opt/homebrew/share/tessdata", "/usr/local/share/tesseract-ocr/*/tessdata")


@dataclass(frozen=True)
class PageText:
    """What OCR read on one page, and how sure it is of it (Tesseract's mean word confidence, 0-100)."""

    text: str
    confidence: int

    @property
    def readable(self) -> bool:
        return self.confidence >= MIN_CONFIDENCE and letters(self.text) >= MIN_LETTERS


def letters(text: str) -> int:
    """Letters and digits in a text, in any script."""
    return len(_LETTER.findall(text))


@functools.lru_cache(maxsize=1)
def tessdata() -> str | None:
    """The folder holding Tesseract's English model (TESSDATA_PREFIX first), or None when it is not installed."""
    places = [os.environ.get("TESSDATA_PREFIX", "")] + [p for pattern in _PLACES for p in sorted(glob.glob(pattern))]
    for place in places:
        if place and os.path.isfile(os.path.join(place, "eng.traineddata")):
            return place
    return None


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """Whether this installation can OCR: the tesserocr package and Tesseract's English model are both here."""
    if tessdata() is None:
        return False
    try:
        import tesserocr  # noqa: F401
    except ImportError:
        return False
    return True


INSTALL_HINT = ("install Tesseract's English model (Debian/Ubuntu: apt install tesseract-ocr-eng; macOS: brew "
                "install tesseract) so that qa reads scans itself")


@functools.lru_cache(maxsize=1)
def _api():  # -> tesserocr.PyTessBaseAPI
    import tesserocr

    # Automatic page segmentation: columns and blocks are found and read in order.
    return tesserocr.PyTessBaseAPI(path=tessdata(), lang="eng", psm=tesserocr.PSM.AUTO)


def scale_for(width_points: float, height_points: float) -> float:
    """The drawing scale (pixels per PDF point) for a page of this size: 300 dpi, less for a poster."""
    scale = DPI / 72
    pixels = width_points * height_points * scale * scale
    if pixels > MAX_PIXELS:
        scale *= (MAX_PIXELS / pixels) ** 0.5
    return scale


def read(image, dpi: int) -> PageText:  # image: PIL.Image.Image
    """The text Tesseract reads on a drawn page, lines as the page has them, blocks apart by a blank line."""
    with _LOCK:
        api = _api()
        api.SetImage(image)
        api.SetSourceResolution(dpi)
        text = api.GetUTF8Text()  # tesserocr lets go of the GIL here: embedding goes on meanwhile
        confidence = api.MeanTextConf()
        # Asked of a page with no words, tesserocr prints "No text returned" to stderr: not asked then.
        words = [c for word, c in api.MapWordConfidences() if word.strip()] if text.strip() else []
        api.Clear()
    return PageText(_sure_lines(text, words).strip(), confidence)


def _sure_lines(text: str, confidences: list[int]) -> str:
    """The page without lines that OCR guessed at: every word under MIN_LINE_CONFIDENCE. A journal's name printed
    upside down in the margin reads "sjnods |" (words at 32 and 17, where the text's are at 95) on every page."""
    lines = text.split("\n")
    if sum(len(line.split()) for line in lines) != len(confidences):  # words do not line up: keep everything
        return text
    kept, at = [], 0
    for line in lines:
        count = len(line.split())
        if not count or max(confidences[at : at + count]) >= MIN_LINE_CONFIDENCE:
            kept.append(line)
        at += count
    return "\n".join(kept)


def word_boxes(image, dpi: int) -> list[tuple[str, tuple[int, int, int, int]]]:  # image: PIL.Image.Image
    """Each word OCR reads on a drawn page, with its box in the image's pixels: (left, top, right, bottom)."""
    import tesserocr

    level = tesserocr.RIL.WORD
    with _LOCK:
        api = _api()
        api.SetImage(image)
        api.SetSourceResolution(dpi)
        api.Recognize()
        iterator = api.GetIterator()
        words = []
        if iterator is not None and api.GetUTF8Text().strip():  # an empty page's iterator prints as it fails
            for item in tesserocr.iterate_level(iterator, level):
                word, box = item.GetUTF8Text(level), item.BoundingBox(level)
                if word and word.strip() and box:
                    words.append((word, box))
        api.Clear()
    return words
