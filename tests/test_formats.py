"""Real-document defects, each on a small file made here: PDF clean-up, DOCX completeness, HTML boilerplate."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from conftest import make_docx, make_pdf
from qa.errors import UnreadableFileError
from qa.formats.text import normalise
from qa.loaders import load

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")  # installed by scripts/install-system-deps.sh


def _load(path: Path):
    return load(path, path.name, path.read_bytes())


def _unicode_pdf(path: Path, pages: list[str]) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_font("dejavu", fname=str(FONT))
    pdf.set_font("dejavu", size=11)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 6, text)
    pdf.output(str(path))


def test_normalise_folds_ligatures_but_not_superscripts():
    assert normalise("eﬃcient ﬁrst ﬂow") == "efficient first flow"
    assert normalise("a\u00a0b\r\nc\rd soft\u00adhyphen ＡＢＣ") == "a b\nc\nd softhyphen ABC"
    assert normalise("10² m³ ½ H₂O") == "10² m³ ½ H₂O"
    assert normalise("cafe\u0301") == "café"


@pytest.mark.skipif(not FONT.is_file(), reason="needs fonts-dejavu-core")
def test_pdf_ligatures_become_letters(tmp_path):
    _unicode_pdf(tmp_path / "l.pdf", ["The ﬁrst eﬃcient ﬂow of ideas."])
    text = _load(tmp_path / "l.pdf").text
    assert "first efficient flow" in text and not any("\ufb00" <= ch <= "\ufb06" for ch in text)


def test_pdf_line_end_hyphens_joined_where_the_word_is_the_documents(tmp_path):
    make_pdf(tmp_path / "h.pdf", ["SpiderMonkey is an interpreter. The tracing JIT extends Spider-\nMonkey "
                                  "with a trace recorder. An implementation detail: the imple-\nmentation "
                                  "is small. A well-\nknown compiler is fast."])
    text = _load(tmp_path / "h.pdf").text
    assert "implementation is small" in text.replace("\n", " ")
    assert "imple-" not in text
    assert "SpiderMonkey with a trace recorder" in text.replace("\n", " ")
    # "wellknown" is no word, "well" and "known" are: the hyphen stays.
    assert "well-known" in text.replace("-\n", "-")


def test_pdf_running_heads_page_numbers_and_footers_dropped(tmp_path):
    body = ["Chapter one opens with the harbour at dawn.", "The fishermen count their nets twice.",
            "Gulls follow the boats out past the breakwater.", "By noon the market smells of salt and tar.",
            "At night the lighthouse sweeps the bay."]
    pages = [f"ANNUAL HARBOUR REPORT {n + 11}\n{line}\nConfidential - do not distribute\n{n + 11}"
             for n, line in enumerate(body)]
    make_pdf(tmp_path / "r.pdf", pages)
    document = _load(tmp_path / "r.pdf")
    assert "HARBOUR REPORT" not in document.text and "Confidential" not in document.text
    for n, line in enumerate(body):
        page = document.text[document.page_starts[n]: (document.page_starts + (len(document.text) + 2,))[n + 1] - 2]
        assert page.strip() == line
    assert not any(part.strip().isdigit() for part in document.text.split("\n"))


def test_pdf_repeated_content_lines_are_kept(tmp_path):
    # A heading that carries a number but is no page number ("Definition 26") stays.
    facts = ["Open sets are closed under unions.", "A basis generates the topology.", "Compact sets are closed.",
             "Every metric space is Hausdorff.", "Connected spaces have no clopen subsets.", "Paths are maps."]
    pages = [f"{10 + n} SECTION ONE\nDefinition {3 * n + 1}\n{fact}" for n, fact in enumerate(facts)]
    make_pdf(tmp_path / "d.pdf", pages)
    text = _load(tmp_path / "d.pdf").text
    assert "SECTION ONE" not in text
    assert all(f"Definition {3 * n + 1}" in text for n in range(6))


def test_pdf_title_block_repeated_mid_page_is_dropped(tmp_path):
    # A drawing set: every sheet's title block sits between its notes; a note on half the sheets stays.
    notes = ["Roof panels are 5V metal.", "Footings rest on compacted gravel.", "Windows are double glazed.",
             "Stairs rise 7 inches a step.", "Porch posts are cedar.", "Gutters drain to the rain barrel."]
    pages = ["\n".join([f"Sheet {n} notes", note, "SHEET NO.", f"Panel {n} faces north.",
                         "ROOF RIDGE" if n % 2 else "EAVE DETAIL", f"Beam {n} is steel.", "VERSION 0.01",
                         f"Joist {n} spacing is 16 inches.", "02-15-2015", f"End of sheet {n}."])
             for n, note in enumerate(notes)]
    make_pdf(tmp_path / "s.pdf", pages)
    text = _load(tmp_path / "s.pdf").text
    assert "SHEET NO." not in text and "VERSION 0.01" not in text and "02-15-2015" not in text
    assert all(note in text for note in notes)
    assert text.count("ROOF RIDGE") == 3 and text.count("EAVE DETAIL") == 3


def test_pdf_garbled_page_is_skipped_and_reported(tmp_path):
    garbage = "".join(chr(c) for c in range(4, 30) if chr(c) not in "\t\n\r\x0b\x0c") * 6
    make_pdf(tmp_path / "g.pdf", ["A readable first page about tidal power.", garbage,
                                  "A readable third page about wave energy."])
    document = _load(tmp_path / "g.pdf")
    assert "tidal power" in document.text and "wave energy" in document.text
    assert not any(ord(ch) < 9 for ch in document.text)
    # Helvetica draws those codes as nothing: OCR finds no letters either (without OCR: tests/test_ocr.py).
    assert document.notes == ("page 2: garbled text layer (the fonts map no letters), and OCR read nothing legible "
                              "on it; skipped",)


def test_pdf_whose_every_page_is_garbled_fails_with_the_reason(tmp_path):
    garbage = "".join(chr(c) for c in range(4, 30) if chr(c) not in "\t\n\r\x0b\x0c") * 6
    make_pdf(tmp_path / "g.pdf", [garbage, garbage])
    with pytest.raises(UnreadableFileError, match="garbled text layer.*OCR"):
        _load(tmp_path / "g.pdf")


def _encrypted_pdf(tmp_path: Path, user_password: str) -> Path:
    from pypdf import PdfReader, PdfWriter

    make_pdf(tmp_path / "plain.pdf", ["The vault opens at nine."])
    writer = PdfWriter()
    for page in PdfReader(tmp_path / "plain.pdf").pages:
        writer.add_page(page)
    writer.encrypt(user_password=user_password, owner_password="owner-secret", algorithm="AES-256")
    path = tmp_path / f"aes-{bool(user_password)}.pdf"
    with open(path, "wb") as handle:
        writer.write(handle)
    return path


def test_aes_encrypted_pdf_that_opens_without_a_password_is_read(tmp_path):
    assert "The vault opens at nine." in _load(_encrypted_pdf(tmp_path, "")).text


def test_aes_pdf_with_a_password_is_reported_as_such(tmp_path):
    with pytest.raises(UnreadableFileError, match="password-protected PDF"):
        _load(_encrypted_pdf(tmp_path, "s3cret"))


def test_pdf_page_labels_kept_next_to_the_physical_page(tmp_path):
    from pypdf import PdfReader, PdfWriter
    from pypdf.constants import PageLabelStyle

    make_pdf(tmp_path / "plain.pdf", ["Preface text.", "Body text about comets.", "More about comets."])
    writer = PdfWriter(clone_from=PdfReader(tmp_path / "plain.pdf"))
    writer.set_page_label(0, 0, style=PageLabelStyle.LOWERCASE_ROMAN)
    writer.set_page_label(1, 2, style=PageLabelStyle.DECIMAL)
    writer.write(tmp_path / "labelled.pdf")
    document = _load(tmp_path / "labelled.pdf")
    assert document.page_labels == ("i", "1", "2")
    assert document.label_at(document.text.index("comets")) == "1"


def test_broken_pdf_message_has_no_raw_bytes(tmp_path):
    path = tmp_path / "b.pdf"
    path.write_bytes(b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R \xff\xfe\x00\x01 >>\nendobj\ntrailer\n<<")
    with pytest.raises(UnreadableFileError) as info:
        _load(path)
    assert str(info.value).startswith("broken PDF") and str(info.value).isprintable()


_W = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
_MC = ('xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006" '
       'xmlns:v="urn:schemas-microsoft-com:vml" '
       'xmlns:wps="http://schemas.microsoft.com/office/word/2010/wordprocessingShape"')
_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"


def _p(text: str) -> str:
    return f"<w:p><w:r><w:t xml:space=\"preserve\">{text}</w:t></w:r></w:p>"


def _cell(content: str, extra: str = "") -> str:
    return f"<w:tc><w:tcPr>{extra}</w:tcPr>{content}</w:tc>"


def _docx(path: Path, body: str, parts: dict[str, tuple[str, str]] | None = None) -> None:
    """A Word package written by hand: python-docx cannot make text boxes, content controls or footnotes."""
    parts = parts or {}
    rels = "".join(f'<Relationship Id="r{i}" Type="{_REL}/{kind}" Target="{name}"/>'
                   for i, (name, (kind, _)) in enumerate(parts.items()))
    with zipfile.ZipFile(path, "w") as package:
        package.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.'
                         'org/package/2006/content-types"><Default Extension="xml" ContentType="application/xml"/>'
                         '</Types>')
        package.writestr("_rels/.rels", f'<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.'
                         f'org/package/2006/relationships"><Relationship Id="d" Type="{_REL}/officeDocument" '
                         'Target="word/document.xml"/></Relationships>')
        package.writestr("word/_rels/document.xml.rels", '<?xml version="1.0"?><Relationships xmlns="http://schemas.'
                         f'openxmlformats.org/package/2006/relationships">{rels}</Relationships>')
        package.writestr("word/document.xml", f'<?xml version="1.0"?><w:document {_W} {_MC}><w:body>{body}'
                         "<w:sectPr/></w:body></w:document>")
        for name, (_, xml) in parts.items():
            package.writestr(f"word/{name}", xml)


def test_docx_tables_in_place_merged_cells_once_nested_tables_read(tmp_path):
    merged = _cell(_p("Total budget"), '<w:gridSpan w:val="3"/>')
    nested = f"<w:tbl><w:tr>{_cell(_p('Inner A'))}{_cell(_p('Inner B'))}</w:tr></w:tbl>"
    body = (_p("Before the table.")
            + f"<w:tbl><w:tr>{merged}</w:tr><w:tr>{_cell(_p('Cell one'))}{_cell(_p('Outer') + nested)}"
              f"{_cell(_p('Cell three'))}</w:tr></w:tbl>"
            + _p("After the table."))
    _docx(tmp_path / "t.docx", body)
    text = _load(tmp_path / "t.docx").text
    assert text.count("Total budget") == 1
    order = [text.index(s) for s in ("Before the table.", "Total budget", "Cell one", "Outer", "Inner A\tInner B",
                                     "Cell three", "After the table.")]
    assert order == sorted(order)


def test_docx_cells_stacking_lines_that_pair_up_are_read_as_rows(tmp_path):
    def stack(*lines: str) -> str:
        return _cell("".join(_p(line) for line in lines))

    # As in poi__IllustrativeCases.docx: one Word row, a column of labels and a column per year; a unit ("€")
    # heads a column. Beside it, a row of prose cells and a row whose columns do not pair up.
    figures = f"<w:tr>{stack('Gross Income', 'Net Cash Income')}{stack('€', '120,000', '72,270')}" \
              f"{stack('€', '120,000', '73,600')}</w:tr>"
    prose = f"<w:tr>{stack('Our aims.', 'Our long term plan is to grow the team over the next several years to come.')}" \
            f"{stack('Their aims.', 'Their plan is to keep the team exactly as small as it is today for now.')}</w:tr>"
    uneven = f"<w:tr>{stack('Total Gain', '(9 months of increase)')}{stack('1,650')}</w:tr>"
    _docx(tmp_path / "s.docx", f"<w:tbl>{figures}{prose}{uneven}</w:tbl>")
    lines = _load(tmp_path / "s.docx").text.splitlines()
    assert "Gross Income\t€ 120,000\t€ 120,000" in lines
    assert "Net Cash Income\t72,270\t73,600" in lines
    assert "Our aims." in lines and "Their aims." in lines  # prose stays cell after cell
    assert "Total Gain" in lines and "1,650" in lines


def test_docx_text_boxes_and_content_controls_read_once(tmp_path):
    box = "<w:txbxContent>" + _p("Text inside the box.") + "</w:txbxContent>"
    anchor = ("<w:p><w:r><w:t>Anchor paragraph.</w:t></w:r><w:r><mc:AlternateContent><mc:Choice Requires=\"wps\">"
              f"<w:drawing><wps:wsp><wps:txbx>{box}</wps:txbx></wps:wsp></w:drawing></mc:Choice><mc:Fallback>"
              f"<w:pict><v:shape><v:textbox>{box}</v:textbox></v:shape></w:pict></mc:Fallback>"
              "</mc:AlternateContent></w:r></w:p>")
    control = f"<w:sdt><w:sdtPr/><w:sdtContent>{_p('Allison, Timothy B.')}</w:sdtContent></w:sdt>"
    _docx(tmp_path / "b.docx", anchor + control)
    text = _load(tmp_path / "b.docx").text
    assert text.count("Text inside the box.") == 1
    assert text.index("Anchor paragraph.") < text.index("Text inside the box.") < text.index("Allison")


def test_docx_headers_footers_footnotes_and_endnotes(tmp_path):
    def part(root: str, inner: str) -> str:
        return f'<?xml version="1.0"?><w:{root} {_W}>{inner}</w:{root}>'

    notes = ('<w:footnote w:type="separator" w:id="-1"><w:p><w:r><w:separator/></w:r></w:p></w:footnote>'
             f'<w:footnote w:id="1">{_p("Source: the 2019 census.")}</w:footnote>')
    parts = {"header1.xml": ("header", part("hdr", _p("Quarterly bulletin"))),
             "header2.xml": ("header", part("hdr", _p("Quarterly bulletin"))),
             "footer1.xml": ("footer", part("ftr", _p("Printed on recycled paper"))),
             "footnotes.xml": ("footnotes", part("footnotes", notes)),
             "endnotes.xml": ("endnotes", part("endnotes", f'<w:endnote w:id="1">{_p("See the appendix.")}</w:endnote>'))}
    _docx(tmp_path / "h.docx", _p("Body of the bulletin."), parts)
    text = _load(tmp_path / "h.docx").text
    assert text.count("Quarterly bulletin") == 1
    for phrase in ("Body of the bulletin.", "Source: the 2019 census.", "See the appendix.",
                   "Printed on recycled paper"):
        assert phrase in text
    # Only a header and a footer: still a document, not "no text".
    _docx(tmp_path / "only.docx", "", {k: v for k, v in parts.items() if k in ("header1.xml", "footer1.xml")})
    assert "Quarterly bulletin" in _load(tmp_path / "only.docx").text


def test_docx_password_protected_and_truncated_are_reported_as_such(tmp_path):
    msoffcrypto = pytest.importorskip("msoffcrypto")
    from msoffcrypto.format.ooxml import OOXMLFile

    make_docx(tmp_path / "plain.docx", ["Secret plans for the garden."])
    encrypted = io.BytesIO()
    with open(tmp_path / "plain.docx", "rb") as plain:
        OOXMLFile(plain).encrypt("pass", encrypted)
    assert msoffcrypto is not None
    (tmp_path / "locked.docx").write_bytes(encrypted.getvalue())
    with pytest.raises(UnreadableFileError, match="password-protected Word document"):
        _load(tmp_path / "locked.docx")
    data = (tmp_path / "plain.docx").read_bytes()
    (tmp_path / "cut.docx").write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableFileError, match="damaged DOCX: the file is cut short"):
        _load(tmp_path / "cut.docx")


def test_html_keeps_the_article_and_drops_the_page_furniture(tmp_path):
    article = " ".join(f"The council voted on the new tram line for district {n}, and residents spoke for an "
                       f"hour about noise, cost and the trees on street {n}." for n in range(8))
    page = ("<html><head><title>Tram line approved</title></head><body>"
            "<div class='cookie-banner'>We use cookies. Accept all cookies to continue.</div>"
            "<nav><ul><li><a href='/'>Home</a></li><li><a href='/sport'>Sport</a></li>"
            "<li><a href='/w'>Weather</a></li></ul></nav>"
            "<div class='modal'>Log in to your account</div>"
            f"<article><h1>Tram line approved</h1><p>{article}</p><p>Work starts in May.</p></article>"
            "<aside><h3>Most read</h3><ul><li><a href='/x'>Celebrity buys island</a></li></ul></aside>"
            "<footer>SUBSCRIBE NOW for unlimited access. Copyright 2024.</footer></body></html>")
    (tmp_path / "news.html").write_text(page, encoding="utf-8")
    text = _load(tmp_path / "news.html").text
    assert text.startswith("Tram line approved") and "Work starts in May." in text and "trees on street 7" in text
    for furniture in ("cookies", "Weather", "Log in", "Celebrity buys island", "SUBSCRIBE NOW"):
        assert furniture not in text


def test_html_keeps_the_article_figure_captions_where_the_figures_stand(tmp_path):
    # trafilatura drops captions; a news photo's caption often says in one sentence what the story is about.
    story = " ".join(f"The mayor spoke about the harbour for the {n}th time, and the council listened to the "
                     f"fishermen and the ferry company before the vote on berth {n}." for n in range(8))
    teasers = "".join(f"<a href='/s{n}'><figure><img src='t{n}.jpg'/><figcaption>Another story about a cat "
                      f"number {n} that climbed a tree</figcaption></figure></a><p>Teaser paragraph {n} that links "
                      f"to another page of the site.</p>" for n in range(3))
    page = ("<html><head><title>Harbour deal</title></head><body><nav><a href='/'>Home</a></nav>"
            f"<aside>{teasers}</aside><article><h1>Harbour deal</h1>"
            "<figure><img src='harbour.jpg'/><figcaption><span class='off-screen'>Image caption</span> "
            "In exchange for a new berth, the ferry company will run a night service.</figcaption></figure>"
            f"<p>{story}</p><p>Work starts in May.</p></article></body></html>")
    (tmp_path / "news.html").write_text(page, encoding="utf-8")
    text = _load(tmp_path / "news.html").text
    caption = "In exchange for a new berth, the ferry company will run a night service."
    assert text.count(caption) == 1 and text.index(caption) < text.index("The mayor spoke about the harbour")
    assert "\n\n" + caption + "\n\n" in text  # a paragraph of its own, not run into the story
    for absent in ("Image caption", "cat number", "Teaser paragraph"):
        assert absent not in text


def test_html_without_an_article_keeps_its_visible_text(tmp_path):
    (tmp_path / "list.html").write_text("<html><head><title>Phone list</title></head><body><table><tr><td>Ann"
                                        "</td><td>555-0101</td></tr></table></body></html>", encoding="utf-8")
    text = _load(tmp_path / "list.html").text
    assert "Phone list" in text and "Ann" in text and "555-0101" in text


def test_pdf_page_image_marks_the_sentence(tmp_path):
    from qa.formats.pdfview import page_image

    pdf = tmp_path / "marked.pdf"
    make_pdf(pdf, ["A first page about nothing.", "The expedition counted 412 emperor penguins on the ice shelf."])
    data = pdf.read_bytes()

    def yellow(image) -> int:
        import numpy as np

        pixels = np.asarray(image).astype(int)
        return int(((pixels[..., 0] > 200) & (pixels[..., 1] > 180) & (pixels[..., 2] < 160)).sum())

    marked = page_image(data, 2, "The expedition counted 412 emperor penguins on the ice shelf.")
    plain = page_image(data, 2, "A sentence that is on no page at all.")
    assert marked.size == plain.size and marked.size[0] > 300
    assert yellow(marked) > 500 and yellow(plain) == 0
    with pytest.raises(UnreadableFileError, match="no page 3"):
        page_image(data, 3, "anything")
