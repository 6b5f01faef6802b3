"""Load stage: find files under the given paths and turn each into a Document (txt, md, html, pdf, docx)."""
from __future__ import annotations

import codecs
import contextlib
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from qa.errors import InputPathError, UnreadableFileError
from qa.formats import html, pdf, word
from qa.formats.text import check_text, normalise
from qa.records import Document, FileFailure

TEXT_EXTENSIONS = (".txt", ".md", ".markdown")
HTML_EXTENSIONS = (".html", ".htm")
SUPPORTED_EXTENSIONS = TEXT_EXTENSIONS + HTML_EXTENSIONS + (".pdf", ".docx")

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_BOMS = ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"),
         (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))
# Text files larger than this are read, decoded and chunked block by block (`stream_text`), never held whole.
STREAM_BYTES = 16 * 2**20
_READ_BYTES = 2**20
_DETECT_BYTES = 2**20  # the encoding is chosen from this much of the start of a streamed file
BLOCK_CHARS = 2**20


@dataclass(frozen=True)
class SourceFile:
    """A file found under an indexed root; `source` is its path relative to that root, with '/'."""

    path: Path
    source: str


def discover(paths: list[Path]) -> tuple[list[SourceFile], list[FileFailure]]:
    """Walk the given files and folders; unsupported files come back as skipped, with the reason."""
    found: dict[str, SourceFile] = {}
    skipped: list[FileFailure] = []
    for root in paths:
        if not root.exists():
            raise InputPathError(f"{root} does not exist: give an existing file or folder to index")
        if root.is_file():
            candidates = [(root, root.name)]
        else:
            candidates = [(p, p.relative_to(root).as_posix()) for p in _walk(root, skipped)]
        for path, source in candidates:
            if path.suffix.lower() not in SUPPORTED_EXTENSIONS:
                skipped.append(FileFailure(source, f"unsupported file type '{path.suffix or '(none)'}'"))
            else:
                found.setdefault(source, SourceFile(path, source))
    return sorted(found.values(), key=lambda f: f.source), skipped


def _walk(root: Path, skipped: list[FileFailure]) -> Iterator[Path]:
    # Follows symlinked folders but remembers each real folder, so a symlink loop is visited once.
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            stat = folder.stat()
        except OSError as exc:
            skipped.append(FileFailure(folder.relative_to(root).as_posix(), f"cannot open folder: {exc.strerror}"))
            continue
        if (stat.st_dev, stat.st_ino) in seen:
            continue
        seen.add((stat.st_dev, stat.st_ino))
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            skipped.append(FileFailure(folder.relative_to(root).as_posix() or ".", f"cannot list folder: {exc}"))
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue  # hidden files and folders (.git, .DS_Store, editor swap files)
            path = Path(entry.path)
            try:
                if entry.is_dir():
                    stack.append(path)
                elif entry.is_file():
                    yield path
                elif entry.is_symlink():
                    skipped.append(FileFailure(path.relative_to(root).as_posix(), "broken link: its target is gone"))
            except OSError:
                skipped.append(FileFailure(path.relative_to(root).as_posix(), "broken link"))


# What each format's reader is: an index re-extracts the files whose reader changed since they were indexed.
TEXT_VERSION = "text-2"


def extractor(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in HTML_EXTENSIONS:
        return html.VERSION
    return {".pdf": pdf.VERSION, ".docx": word.VERSION}.get(suffix, TEXT_VERSION)


def load(path: Path, source: str, data: bytes) -> Document:
    """Turn a file's bytes into a Document; raises UnreadableFileError saying why it cannot."""
    if not data.strip():
        raise UnreadableFileError("empty file: add some text or remove it from the folder")
    suffix = path.suffix.lower()
    if suffix in HTML_EXTENSIONS:
        return Document(source, html.read_html(decode_text(data)))
    if suffix == ".pdf":
        return _pdf(source, data)
    if suffix == ".docx":
        return Document(source, word.read_docx(data))
    return Document(source, check_text(decode_text(data)))


def _pdf(source: str, data: bytes) -> Document:
    read = pdf.read_pdf(data)
    starts, offset = [], 0
    for page in read.pages:
        starts.append(offset)
        offset += len(page) + 2
    return Document(source, "\n\n".join(read.pages), tuple(starts), read.labels, read.notes)


def decode_text(data: bytes) -> str:
    """Decode bytes of unknown encoding: BOMs first, then UTF-8, then a detector for legacy encodings."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            try:
                return _not_binary(data.decode(codec))
            except UnicodeDecodeError as exc:
                raise UnreadableFileError(f"starts with a {codec} mark but is not valid {codec}: {exc.reason}") from None
    try:
        return _not_binary(data.decode("utf-8"))
    except UnicodeDecodeError:
        pass
    return _not_binary(str(_legacy_encoding(data)))


def _legacy_encoding(data: bytes):  # -> charset_normalizer.CharsetMatch
    """The detector's best guess for bytes that have no BOM and are not UTF-8 (all of them, or a file's start)."""
    if b"\x00" in data[:8192] and not _looks_utf16(data):
        raise UnreadableFileError("binary data, not text: convert it to a text format or remove it")
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        raise UnreadableFileError("binary data or an unknown text encoding: save it as UTF-8 and index again")
    return best


@contextlib.contextmanager
def reading() -> Iterator[None]:
    """Turns the ways reading a file fails into UnreadableFileError, each saying what happened."""
    try:
        yield
    except PermissionError:
        raise UnreadableFileError("no permission to read it: fix its permissions (chmod +r)") from None
    except FileNotFoundError:
        raise UnreadableFileError("it disappeared while indexing") from None
    except IsADirectoryError:
        raise UnreadableFileError("is a folder") from None
    except OSError as exc:
        raise UnreadableFileError(f"cannot read it: {exc.strerror}") from None


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read block by block (a file is indexed again only when this changes)."""
    import hashlib

    digest = hashlib.sha256()
    with reading(), open(path, "rb") as handle:
        while block := handle.read(2**20):
            digest.update(block)
    return digest.hexdigest()


def streams(path: Path, size: int) -> bool:
    return size > STREAM_BYTES and path.suffix.lower() in TEXT_EXTENSIONS


def stream_text(path: Path, on_bytes: Callable[[bytes], None], block_chars: int = BLOCK_CHARS) -> Iterator[str]:
    """A large text file's normalised text in blocks of about `block_chars` that end at a paragraph break (else a
    line break, else a space), so that a sentence is rarely cut; joined, they are the whole text. The encoding is
    chosen from the first megabyte as `decode_text` would; later bytes that do not fit it become U+FFFD rather
    than failing a file of hundreds of megabytes. Every raw byte read is passed to `on_bytes` (for hashing)."""
    with reading(), open(path, "rb") as handle:
        try:
            head = handle.read(_DETECT_BYTES)
            on_bytes(head)
            decoder = _incremental_decoder(head)
            pending, carry_cr, first = "", False, True
            data = head
            while data:
                text = decoder.decode(data)
                data = handle.read(_READ_BYTES)
                on_bytes(data)
                if not data:
                    text += decoder.decode(b"", final=True)
                if carry_cr:
                    text = "\r" + text
                # A CR at the end may be the first half of a CRLF split between two reads.
                carry_cr = bool(data) and text.endswith("\r")
                text = text[:-1] if carry_cr else text
                pending += _not_binary(text) if first else normalise(text)
                first = False
                while len(pending) >= block_chars:
                    cut = _block_end(pending, block_chars)
                    yield pending[:cut]
                    pending = pending[cut:]
            if pending:
                yield pending
        except UnicodeDecodeError as exc:
            raise UnreadableFileError(f"not valid {exc.encoding} text: save it as UTF-8 and index again") from None


def _incremental_decoder(head: bytes) -> codecs.IncrementalDecoder:
    for bom, codec in _BOMS:
        if head.startswith(bom):
            return codecs.getincrementaldecoder(codec)("strict")
    try:
        codecs.getincrementaldecoder("utf-8")("strict").decode(head, final=False)
        return codecs.getincrementaldecoder("utf-8")("replace")
    except UnicodeDecodeError:
        pass
    return codecs.getincrementaldecoder(_legacy_encoding(head).encoding)("replace")


def _block_end(text: str, limit: int) -> int:
    for separator in ("\n\n", "\n", " "):
        cut = text.rfind(separator, limit // 2, limit)
        if cut > 0:
            return cut + len(separator)
    return limit


def _not_binary(text: str) -> str:
    # Text has almost no control characters; binary data decoded by luck is full of them.
    sample = text[:65536]
    if len(_CONTROL.findall(sample)) > 0.01 * len(sample):
        raise UnreadableFileError("binary data, not text: convert it to a text format or remove it")
    return normalise(text)


def _looks_utf16(data: bytes) -> bool:
    # UTF-16 without a BOM: about half the bytes are NUL, all at even or all at odd positions.
    head = data[:4096]
    return len(head) >= 4 and (head[0::2].count(0) > 0.4 * len(head) / 2 or head[1::2].count(0) > 0.4 * len(head) / 2)
