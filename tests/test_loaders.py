"""Loading each format and encoding, and a clear reason for every file that cannot be loaded."""
from __future__ import annotations

import pytest

from conftest import make_docx, make_mixed_folder, make_pdf
from qa.errors import InputPathError, UnreadableFileError
from qa.loaders import decode_text, discover, load


def _load(path, source=None):
    return load(path, source or path.name, path.read_bytes())


def test_discover_walks_folders_and_lists_unsupported(tmp_path):
    make_mixed_folder(tmp_path)
    files, skipped = discover([tmp_path])
    sources = [f.source for f in files]
    assert "nested/deeper/legacy.txt" in sources and "report.pdf" in sources
    assert [s.source for s in skipped] == ["image.png"]
    assert "unsupported" in skipped[0].reason


def test_discover_missing_path(tmp_path):
    with pytest.raises(InputPathError, match="does not exist"):
        discover([tmp_path / "nope"])


def test_discover_survives_symlink_loop(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "doc.txt").write_text("hello there")
    (tmp_path / "a" / "loop").symlink_to(tmp_path / "a")
    files, _ = discover([tmp_path])
    assert [f.source for f in files] == ["a/doc.txt"]


@pytest.mark.parametrize("encoding,text", [
    ("utf-8", "Grüße aus Köln — “quoted”"),
    ("utf-16", "Grüße aus Köln, UTF-16 with a byte order mark"),
    ("cp1252", "Die Bäckerei öffnet um sechs Uhr früh und schließt am Mittag wieder."),
    ("shift_jis", "日本と台湾の貿易関係は長い歴史があります。両国は重要なパートナーです。"),
])
def test_decode_encodings(encoding, text):
    assert decode_text(text.encode(encoding)) == text


def test_decode_normalises_newlines():
    assert decode_text(b"a\r\nb\rc") == "a\nb\nc"


@pytest.mark.parametrize("data,reason", [
    (bytes(range(256)) * 20, "binary"),
    (b"\x00\x01\x02\x03" * 500, "binary"),
])
def test_binary_rejected(data, reason):
    with pytest.raises(UnreadableFileError, match=reason):
        decode_text(data)


def test_empty_and_blank_files(tmp_path):
    for name, data in (("e.txt", b""), ("w.txt", b"  \n\n\t ")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(UnreadableFileError, match="empty"):
            _load(tmp_path / name)


def test_html_visible_text_only(tmp_path):
    page = tmp_path / "p.html"
    page.write_text("<html><head><title>T1</title><script>alert('x')</script><style>.a{}</style></head>"
                    "<body><p>Hello <b>bold</b> world.</p><div>Second<br>line</div><noscript>ns</noscript></body>")
    text = _load(page).text
    assert "alert" not in text and ".a{}" not in text and "ns" not in text.split()
    assert "Hello bold world." in text and "T1" in text
    assert "Second\nline" in text


def test_pdf_pages_are_kept(tmp_path):
    make_pdf(tmp_path / "r.pdf", ["First page text.", "Second page mentions zebras."])
    doc = _load(tmp_path / "r.pdf")
    offset = doc.text.index("zebras")
    assert doc.page_at(offset) == 2 and doc.page_at(0) == 1
    assert doc.line_at(offset) == 1


def test_broken_and_encrypted_pdf(tmp_path):
    broken = tmp_path / "b.pdf"
    broken.write_bytes(b"%PDF-1.4\n1 0 obj\n<<\nendobj\n")
    with pytest.raises(UnreadableFileError, match="PDF"):
        _load(broken)
    from pypdf import PdfReader, PdfWriter

    make_pdf(tmp_path / "plain.pdf", ["Top secret text."])
    writer = PdfWriter()
    for page in PdfReader(tmp_path / "plain.pdf").pages:
        writer.add_page(page)
    writer.encrypt("s3cret")
    with open(tmp_path / "enc.pdf", "wb") as handle:
        writer.write(handle)
    with pytest.raises(UnreadableFileError, match="password-protected PDF"):
        _load(tmp_path / "enc.pdf")


def test_pdf_without_text_layer(tmp_path):
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.rect(10, 10, 50, 50, style="F")  # a drawing, no text: like a scan
    pdf.output(str(tmp_path / "scan.pdf"))
    with pytest.raises(UnreadableFileError, match="OCR"):
        _load(tmp_path / "scan.pdf")


def test_docx_paragraphs(tmp_path):
    make_docx(tmp_path / "m.docx", ["Alpha paragraph.", "Beta paragraph."])
    assert _load(tmp_path / "m.docx").text == "Alpha paragraph.\n\nBeta paragraph."
    (tmp_path / "bad.docx").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(UnreadableFileError, match="DOCX"):
        _load(tmp_path / "bad.docx")
