"""The real-documents folder (../shared/realdocs) indexed as a user would: what fails, and what the text holds."""
from __future__ import annotations

import re

import pytest

from conftest import ROOT

DOCS = ROOT.parent / "shared" / "realdocs" / "docs"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not DOCS.is_dir(), reason="../shared/realdocs is not here")]

# The six files nobody can read, and the reason each must be given.
UNREADABLE = {
    "pdfjs__empty_protected.pdf": "encrypted PDF that opens without a password, but its pages hold no text",
    "poi__bug53475-password-is-pass.docx": "password-protected Word document",
    "poi__truncated62886.docx": "damaged DOCX: the file is cut short",
    "sample__imagemagick-images.pdf": "PDF has no text layer",
    "sample__libreoffice-writer-password.pdf": "password-protected PDF",
    "sample__unreadablemetadata.pdf": "broken PDF",
}


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, settings):
    from qa.api import Retriever, build_index

    index = tmp_path_factory.mktemp("realdocs-index")
    report = build_index([DOCS], settings=settings.with_(index_dir=index))
    return report, Retriever(index, settings=settings.with_(index_dir=index))


def test_only_the_unreadable_files_fail_each_with_its_reason(indexed):
    report, _ = indexed
    reasons = {f.source: f.reason for f in report.failed}
    assert set(reasons) == set(UNREADABLE)
    for source, reason in reasons.items():
        assert reason.startswith(UNREADABLE[source]), (source, reason)
        assert reason.isprintable() and len(reason) < 250
    assert len(report.added) == len(list(DOCS.iterdir())) - len(UNREADABLE)
    notes = {f.source: f.reason for f in report.notes}
    # Its pages 2-22 map no letters: OCR reads what they show (tests/test_ocr.py makes such pages).
    assert notes["pdfjs__TAMReview.pdf"] == "pages 2-22: garbled text layer (the fonts map no letters); read by OCR"


def test_chunks_hold_no_ligatures_glyph_names_or_running_heads(indexed):
    _, retriever = indexed
    text = "\n".join(c.text for c in retriever.data.chunks)
    assert not re.search("[\ufb00-\ufb06]", text)
    assert not re.search(r"(?:/g\d+){3}", text)
    assert not re.search("[\x00-\x08\x0e-\x1f\ufffe]", text)
    for furniture in ("PASS PAGES", "r9jm.qxd", "<http://free-culture.org/get-it>"):
        assert furniture not in text
    lines = [line.strip() for line in text.split("\n")]
    assert not [line for line in lines if re.fullmatch(r"\d+ FREE CULTURE|FREE CULTURE \d+", line)]
    assert not [line for line in lines if re.fullmatch(r"\d+ \d\.\d\. TOPOLOGISCHE MANNIGFALTIGKEITEN", line)]
    assert "Spi- derMonkey" not in text and "SpiderMonkey" in text
    # The TAM review's OCR'd pages: a journal's name printed upside down in the margin, read as "sjnods |".
    tam = retriever.data.document_text("pdfjs__TAMReview.pdf")
    assert "Fishbein and Ajzen (1975)" in tam and "sjnods" not in tam and "synolds" not in tam
    # A drawing set's title block, lines of their own mid-page on 22 of its 25 sheets (3 sheets run it into a
    # longer line, which stays); the sheets' own callouts stay.
    drawings = retriever.data.document_text("pdfjs__Brotli-Prototype-FileA.pdf")
    lines = {line.strip() for line in drawings.split("\n")}
    assert not {"SHEET NO.", "SHEET TITLE", "VERSION 0.01", "REVISION"} & lines
    assert drawings.count("SHEET NO.") <= 3 and "ROOF RIDGE" in lines


def test_docx_text_is_complete_and_not_repeated(indexed):
    _, retriever = indexed
    data = retriever.data
    nested = data.document_text("poi__60329.docx")  # a protocol laid out in nested tables
    assert "A5346" in nested and "Study Design, Objectives and Endpoints" in nested
    assert "Allison, Timothy B." in data.document_text("poi__60316.docx")  # a résumé in text boxes
    assert "simple header" in data.document_text("poi__headerFooter.docx")
    merged = data.document_text("poi__bug65649.docx")  # merged cells: 1.1 M characters when repeated
    assert len(merged) < 400_000
    assert data.manifest.files["poi__bug65649.docx"].chunks < 2500


def test_news_pages_keep_the_article_without_the_menus(indexed):
    _, retriever = indexed
    bbc = retriever.data.document_text("readability__bbc-1.html")
    assert "common sense gun safety laws" in bbc
    assert len(bbc) < 7000  # the page's visible text is 12,000 characters, mostly menus and other stories
    nytimes = retriever.data.document_text("readability__nytimes-1.html")
    assert "improve access for aid groups" in nytimes and len(nytimes) < 7000


def test_pdf_answers_cite_the_page_they_are_printed_on(indexed):
    _, retriever = indexed
    for question, source, page, phrase in [
        ("How many Japanese come together twice a year to exchange and sell doujinshi?", "pdfjs__freeculture.pdf",
         40, "More than 450,000 Japanese"),
        ("Who is the original author of PDF.js?", "pdfjs__pdfjs_wikipedia.pdf", 1, "Andreas Gal"),
        ("Who proposed the Theory of Reasoned Action?", "pdfjs__TAMReview.pdf", 4, "Fishbein and Ajzen (1975)"),
    ]:
        top = retriever.retrieve(question, k=5)[0]
        assert top.source == source and phrase in " ".join(top.text.split()) and top.page == page


def test_a_case_study_is_found_with_its_own_table(indexed):
    # Eddie's name and opening sentence used to end the chunk before his table, whose "Net Cash Income" row
    # answers; a section now starts a chunk of its own once the chunk before it is 70% full.
    _, retriever = indexed
    top = retriever.ask("What is Eddie's net cash income in 2007 after the Budget?").passages[0]
    assert top.source == "poi__IllustrativeCases.docx" and "73,600" in top.text and "Eddie is single" in top.text


def test_two_short_sentences_make_one_highlight(indexed):
    # "Patrick is single, employed as a waiter ... He will gain €825 from the Budget.": the second answers, the
    # first names him; 20 words together, so both are highlighted (issue #13).
    _, retriever = indexed
    top = retriever.ask("How much will Patrick, the waiter, gain from the Budget?").passages[0]
    assert top.source == "poi__IllustrativeCases.docx"
    assert "He will gain €825 from the Budget" in top.highlighted_text and "waiter" in top.highlighted_text


def test_a_photo_caption_and_a_list_answer(indexed):
    # The New York Times photo's caption says what Sudan agreed to (trafilatura drops captions); the Rust book
    # announces its ownership rules with a colon and lists them: the list is the answer, not the announcement.
    _, retriever = indexed
    sudan = retriever.ask("What will Sudan do in exchange for the lifting of US trade sanctions?").passages[0]
    assert sudan.source == "readability__nytimes-1.html" and "improve access for aid groups" in sudan.highlighted_text
    rules = retriever.ask("What are the rules of ownership in Rust?").passages[0]
    assert rules.source == "rustbook__ch04-01-what-is-ownership.md"
    assert "Each value in Rust has an _owner_" in rules.highlighted_text
    assert "When the owner goes out of scope" in rules.highlighted_text
