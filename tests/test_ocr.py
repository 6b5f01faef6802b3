"""PDF pages with no usable text layer, read by the real Tesseract: scans, garbled fonts, images with no text."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import make_pdf
from qa.errors import UnreadableFileError
from qa.formats import ocr
from qa.loaders import load

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf")  # installed by scripts/install-system-deps.sh
SCANNED = ["The lighthouse on Skerry Point was first lit in 1851.",
           "Its keeper rowed supplies across the sound every Tuesday."]
GARBAGE = "".join(chr(c) for c in range(4, 30) if chr(c) not in "\t\n\r\x0b\x0c") * 6


def _load(path: Path):
    return load(path, path.name, path.read_bytes())


def _scan(lines: list[str]):  # -> PIL.Image.Image: a page of text as a 200 dpi scanner would draw it
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("L", (1654, 2339), 255)
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype(str(FONT), 36)
    for row, line in enumerate(lines):
        draw.text((150, 200 + 70 * row), line, font=font, fill=0)
    return image


def _pdf_with_images(path: Path, pages: list[object], hidden_text: str = "") -> None:
    """Each page is a str (typed text) or an image drawn over the whole page, with `hidden_text` under it as an
    invisible text layer (what a PDF with broken fonts or a bad OCR layer holds)."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=11)
    for page in pages:
        pdf.add_page()
        if isinstance(page, str):
            pdf.multi_cell(0, 6, page)
            continue
        pdf.image(page, x=0, y=0, w=pdf.w, h=pdf.h)
        if hidden_text:
            with pdf.local_context(text_mode="INVISIBLE"):
                pdf.set_xy(10, 10)
                pdf.multi_cell(0, 6, hidden_text)
    pdf.output(str(path))


@pytest.fixture(autouse=True)
def _needs_ocr():
    # The project's set-up installs Tesseract's English model (scripts/install-system-deps.sh): not skipped.
    assert ocr.available(), f"OCR is not installed: {ocr.INSTALL_HINT}"


def test_scanned_page_is_read_by_ocr_between_typed_pages(tmp_path):
    _pdf_with_images(tmp_path / "s.pdf", ["A typed first page about tidal power.", _scan(SCANNED),
                                          "A typed third page about wave energy."])
    document = _load(tmp_path / "s.pdf")
    squashed = " ".join(document.text.split())
    assert "first lit in 1851" in squashed and "rowed supplies across the sound" in squashed
    assert "tidal power" in squashed and "wave energy" in squashed
    assert document.notes == ("page 2: no text layer (an image of the page); read by OCR",)
    # The OCR'd text is cited on its own page.
    at = document.text.index("1851")
    assert document.page_starts[1] <= at < document.page_starts[2]


def test_garbled_text_layer_is_replaced_by_what_the_page_shows(tmp_path):
    _pdf_with_images(tmp_path / "g.pdf", [_scan(SCANNED), "A typed page about wave energy."], hidden_text=GARBAGE)
    document = _load(tmp_path / "g.pdf")
    assert "first lit in 1851" in " ".join(document.text.split())
    assert not any(ord(ch) < 9 for ch in document.text)
    assert document.notes == ("page 1: garbled text layer (the fonts map no letters); read by OCR",)


def test_image_without_text_is_reported_not_guessed_at(tmp_path):
    import random

    from PIL import Image

    rng = random.Random(7)
    noise = Image.new("L", (800, 1100))
    noise.putdata([rng.choice((0, 255)) if rng.random() < 0.02 else 235 for _ in range(800 * 1100)])
    _pdf_with_images(tmp_path / "p.pdf", ["A typed page about wave energy.", noise])
    document = _load(tmp_path / "p.pdf")
    assert document.text.strip() == "A typed page about wave energy."
    assert document.notes == ("page 2: no text layer (an image of the page), and OCR read nothing legible on it; "
                              "skipped",)
    _pdf_with_images(tmp_path / "only.pdf", [noise])
    with pytest.raises(UnreadableFileError, match="no text layer, and OCR read no text on its 1 page"):
        _load(tmp_path / "only.pdf")


def test_short_typed_page_over_a_photo_keeps_its_own_text(tmp_path):
    # A page with a text layer of its own (20 letters or more) is never OCR'd, photo or not.
    _pdf_with_images(tmp_path / "t.pdf", [_scan(SCANNED)], hidden_text="Figure seven shows the keeper's cottage.")
    document = _load(tmp_path / "t.pdf")
    assert document.text.strip() == "Figure seven shows the keeper's cottage."
    assert document.notes == ()


def test_without_ocr_installed_the_reasons_say_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(ocr, "available", lambda: False)
    _pdf_with_images(tmp_path / "scan.pdf", [_scan(SCANNED)])
    with pytest.raises(UnreadableFileError, match="no text layer.*a scan.*apt install tesseract-ocr-eng"):
        _load(tmp_path / "scan.pdf")
    make_pdf(tmp_path / "g.pdf", ["A readable first page about tidal power.", GARBAGE])
    document = _load(tmp_path / "g.pdf")
    assert "tidal power" in document.text
    assert document.notes == ("page 2: garbled text layer (the fonts map no letters; OCR would read it); skipped",)


def test_lines_ocr_guessed_at_are_dropped_and_the_rest_kept():
    text = "Davis took the same\n\nsjnods |\nmodel further."
    assert ocr._sure_lines(text, [96, 95, 96, 94, 32, 17, 95, 93]) == "Davis took the same\n\nmodel further."
    # One sure word keeps its line; words that do not line up with the text keep everything.
    assert ocr._sure_lines(text, [96, 95, 96, 94, 32, 60, 95, 93]) == text
    assert ocr._sure_lines(text, [96, 95]) == text


def test_a_file_of_pictures_is_not_ocrd_to_its_end(tmp_path):
    # A photo album at a second a page: after OCR_GIVE_UP pages of images with no text, the rest are not tried;
    # a file that OCR reads once is read to its end.
    from PIL import Image

    from qa.formats.pdf import OCR_GIVE_UP

    photo = Image.new("L", (400, 550), 200)
    _pdf_with_images(tmp_path / "album.pdf", ["A typed cover page about the 1987 family trip."]
                     + [photo] * (OCR_GIVE_UP + 2))
    document = _load(tmp_path / "album.pdf")
    assert document.notes == (
        f"pages 2-{OCR_GIVE_UP + 1}: no text layer (an image of the page), and OCR read nothing legible on it; skipped",
        f"pages {OCR_GIVE_UP + 2}-{OCR_GIVE_UP + 3}: no text layer (an image of the page); not read, as OCR found no "
        f"text on the file's first {OCR_GIVE_UP} such pages; skipped")
    _pdf_with_images(tmp_path / "scans.pdf", [_scan(SCANNED)] + [photo] * OCR_GIVE_UP + [_scan(SCANNED[::-1])])
    document = _load(tmp_path / "scans.pdf")
    assert document.notes == ("pages 1, 7: no text layer (an image of the page); read by OCR",
                              f"pages 2-{OCR_GIVE_UP + 1}: no text layer (an image of the page), and OCR read nothing "
                              "legible on it; skipped")


def test_reading_a_blank_scan_prints_nothing(tmp_path):
    # tesserocr prints "No text returned" on stderr (at exit) when asked for the words of a page without any.
    import subprocess
    import sys

    from PIL import Image

    _pdf_with_images(tmp_path / "blank.pdf", [Image.new("L", (17, 17), 200)])
    code = ("import sys; from pathlib import Path; from qa.loaders import load; p = Path(sys.argv[1])\n"
            "try: load(p, p.name, p.read_bytes())\nexcept Exception as e: print(type(e).__name__)")
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path / "blank.pdf")], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent.parent, timeout=120)
    assert (run.stdout, run.stderr) == ("UnreadableFileError\n", "")


def test_the_source_viewer_marks_a_sentence_that_ocr_read(tmp_path):
    # The page has no text layer for PDFium to search: the sentence is found among the words OCR reads, and boxed.
    from qa.formats.pdfview import page_image

    _pdf_with_images(tmp_path / "s.pdf", ["A typed first page about tidal power.", _scan(SCANNED)])
    data = (tmp_path / "s.pdf").read_bytes()
    document = load(tmp_path / "s.pdf", "s.pdf", data)
    sentence = next(s for s in document.text[document.page_starts[1]:].split("\n") if "1851" in s)
    marked = page_image(data, 2, sentence)
    plain = page_image(data, 2, "A sentence that is on no page at all.")
    assert marked.size == plain.size
    changed = [i for i, (a, b) in enumerate(zip(marked.convert("L").getdata(), plain.convert("L").getdata())) if a != b]
    assert changed  # boxed, and only around the first line (the scan's lines are 70 of its 2,339 pixels apart)
    rows = {i // marked.size[0] for i in changed}
    top_line = 200 * marked.size[1] / 2339
    assert min(rows) >= top_line - 20 and max(rows) <= top_line + 45 * marked.size[1] / 2339 + 20
