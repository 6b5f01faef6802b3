"""Word (DOCX) to text: the body in document order with tables in place, text boxes, content controls, headers,
footers, footnotes and endnotes, read straight from the package's XML."""
from __future__ import annotations

import io
import posixpath
import zipfile

from qa.errors import UnreadableFileError
from qa.formats.text import check_text, normalise

VERSION = "ooxml-2"  # 2: cells stacking lines that pair up are read as rows
_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_MC = "{http://schemas.openxmlformats.org/markup-compatibility/2006}"
_REL = "{http://schemas.openxmlformats.org/package/2006/relationships}"
_OFFICE_DOCUMENT = "/officeDocument"
# Parts read after the body, in this order; headers first because they usually name the document.
_PARTS = ("header", "footnotes", "endnotes", "footer")
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_SKIP = {_W + "delText", _W + "instrText", _W + "delInstrText", _W + "del", _MC + "Fallback", _W + "rPr", _W + "pPr",
         _W + "moveFrom"}
# Footnote bodies that only separate notes from the text.
_SEPARATORS = {"separator", "continuationSeparator", "continuationNotice"}
# Longer lines in a cell are prose, not a column of labels or figures.
_STACKED_WORDS = 12


def read_docx(data: bytes) -> str:
    """The document's text, one paragraph or table row per paragraph; raises UnreadableFileError with the reason."""
    if data.startswith(_OLE_MAGIC):
        if "EncryptedPackage".encode("utf-16-le") in data:
            raise UnreadableFileError("password-protected Word document: open it in Word with its password, remove "
                                      "the password and save it, then index again")
        raise UnreadableFileError("a Word 97-2003 (.doc) file named .docx: open it and save it as .docx, then "
                                  "index again")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as package:
            main = _main_part(package)
            parts = _related_parts(package, main)
            body = _part_blocks(package, main)
            extra = {kind: [] for kind in _PARTS}
            for kind, name in parts:
                for block in _part_blocks(package, name):
                    if block not in extra[kind]:  # first/even/default headers often say the same
                        extra[kind].append(block)
    except zipfile.BadZipFile:
        raise UnreadableFileError("damaged DOCX: the file is cut short or is not a complete Word package (was it "
                                  "fully downloaded?); open it in Word, which may repair it, and save it again") from None
    except (KeyError, ValueError, OSError, RuntimeError, EOFError, zipfile.LargeZipFile) as exc:
        raise UnreadableFileError(f"damaged DOCX ({type(exc).__name__}): open it in Word and save it again") from None
    blocks = extra["header"] + body + extra["footnotes"] + extra["endnotes"] + extra["footer"]
    return check_text(normalise("\n\n".join(blocks)), "the Word document")


def _parse(package: zipfile.ZipFile, name: str):  # -> lxml.etree._Element
    from lxml import etree

    try:
        return etree.fromstring(package.read(name), etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError as exc:
        raise ValueError(f"{name}: {exc}") from None


def _main_part(package: zipfile.ZipFile) -> str:
    try:
        rels = _parse(package, "_rels/.rels")
    except KeyError:
        return "word/document.xml"
    for rel in rels.iter(_REL + "Relationship"):
        if rel.get("Type", "").endswith(_OFFICE_DOCUMENT):
            return rel.get("Target", "").lstrip("/")
    return "word/document.xml"


def _related_parts(package: zipfile.ZipFile, main: str) -> list[tuple[str, str]]:
    folder, name = posixpath.split(main)
    try:
        rels = _parse(package, posixpath.join(folder, "_rels", name + ".rels"))
    except KeyError:
        return []
    found = []
    for rel in rels.iter(_REL + "Relationship"):
        kind = rel.get("Type", "").rsplit("/", 1)[-1]
        if kind in _PARTS and rel.get("TargetMode") != "External":
            target = posixpath.normpath(posixpath.join(folder, rel.get("Target", "")))
            if target in package.namelist():
                found.append((kind, target))
    return sorted(found, key=lambda item: item[1])


def _part_blocks(package: zipfile.ZipFile, name: str) -> list[str]:
    root = _parse(package, name)
    out: list[str] = []
    if root.tag in (_W + "footnotes", _W + "endnotes"):
        for note in root:
            if note.get(_W + "type") not in _SEPARATORS:
                _blocks(note, out)
        return out
    body = root.find(_W + "body")
    _blocks(body if body is not None else root, out)
    return out


def _blocks(parent, out: list[str]) -> None:
    """Paragraphs and tables in document order, looking through content controls and other wrappers."""
    for child in parent:
        tag = child.tag
        if tag == _W + "p":
            _paragraph(child, out)
        elif tag == _W + "tbl":
            _table(child, out)
        elif tag in _SKIP or not isinstance(tag, str) or tag == _W + "sectPr":
            continue
        else:  # w:sdt, w:sdtContent, w:customXml, mc:AlternateContent/mc:Choice, w:txbxContent ...
            _blocks(child, out)


def _paragraph(p, out: list[str]) -> None:
    parts: list[str] = []
    boxes: list[object] = []
    _inline(p, parts, boxes)
    text = "".join(parts).strip()
    if text:
        out.append(text)
    for box in boxes:  # a text box's paragraphs follow the paragraph that anchors it
        _blocks(box, out)


def _inline(element, parts: list[str], boxes: list[object]) -> None:
    for child in element:
        tag = child.tag
        if tag == _W + "t":
            parts.append(child.text or "")
        elif tag == _W + "tab":
            parts.append("\t")
        elif tag in (_W + "br", _W + "cr"):
            parts.append("\n")
        elif tag == _W + "noBreakHyphen":
            parts.append("-")
        elif tag == _W + "txbxContent":
            boxes.append(child)
        elif tag in _SKIP or not isinstance(tag, str):
            continue
        else:  # runs, hyperlinks, insertions, fields, smart tags, inline content controls, drawings
            _inline(child, parts, boxes)


def _table(table, out: list[str]) -> None:
    """A row of one-paragraph cells becomes one line, cells separated by a tab; so does each line of a row whose
    cells stack short lines that pair up (see _stacked_rows); any other row whose cells hold more (prose, a nested
    table) gives each cell's paragraphs in order. Merged cells are in the XML once, so their text is too."""
    for row in table.iter(_W + "tr"):
        if _ancestor(row, _W + "tbl") is not table:
            continue  # a nested table's row: read where its cell is
        cells: list[list[str]] = []
        for cell in row.iter(_W + "tc"):
            if _ancestor(cell, _W + "tr") is row:
                blocks: list[str] = []
                _blocks(cell, blocks)
                cells.append(blocks)
        if all(len(blocks) <= 1 for blocks in cells):
            line = "\t".join(blocks[0] for blocks in cells if blocks)
            if line:
                out.append(line)
        else:
            stacked = _stacked_rows(cells)
            for blocks in [stacked] if stacked else cells:
                out.extend(blocks)


def _stacked_rows(cells: list[list[str]]) -> list[str] | None:
    """A table laid out as one Word row whose cells are columns of stacked lines (labels in one cell, a year's
    figures in the next: "Net Cash Income" beside "72,270"), read as the rows the reader sees: "Net Cash
    Income\t72,270\t73,600". Only when every cell that holds text has the same number (2 or more) of short lines
    with a letter or digit; a line of symbols only ("€") goes with the line after it. Otherwise None: prose beside
    prose, or columns that do not pair up, are not guessed at."""
    columns: list[list[str]] = []
    for blocks in cells:
        lines, pending = [], ""
        for line in (part.strip() for block in blocks for part in block.split("\n")):
            if "\t" in line or len(line.split()) > _STACKED_WORDS:
                return None  # a nested table's row, or prose
            if line and not any(ch.isalnum() for ch in line):
                pending = f"{pending} {line}".strip()
            elif line:
                lines.append(f"{pending} {line}".strip())
                pending = ""
        if pending:
            return None
        if lines:
            columns.append(lines)
    if len(columns) < 2 or len({len(lines) for lines in columns}) != 1 or len(columns[0]) < 2:
        return None
    return ["\t".join(row) for row in zip(*columns)]


def _ancestor(element, tag: str):
    """The nearest enclosing element with this tag (a cell's row, a row's table), or None."""
    parent = element.getparent()
    while parent is not None and parent.tag != tag:
        parent = parent.getparent()
    return parent
