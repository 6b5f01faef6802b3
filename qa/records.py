"""Typed records passed between the stages: Document, Chunk, Hit, Passage and the indexing report."""
from __future__ import annotations

import bisect
import functools
import re
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Document:
    """Extracted text of one file. `page_starts[i]` is the offset where page i+1 begins (PDF only);
    `page_labels[i]` the number printed on it, where the PDF labels its pages; `notes` what was left out and why
    (a garbled or unreadable page)."""

    source: str
    text: str
    page_starts: tuple[int, ...] = ()
    page_labels: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def page_at(self, offset: int) -> int | None:
        if not self.page_starts:
            return None
        return max(1, bisect.bisect_right(self.page_starts, offset))

    def label_at(self, offset: int) -> str | None:
        page = self.page_at(offset)
        if not page or len(self.page_labels) < page:
            return None
        return self.page_labels[page - 1] or None

    def line_at(self, offset: int) -> int:
        """1-based line of `offset`, counted from the start of its page (PDF) or of the document."""
        page = self.page_at(offset)
        begin = self.page_starts[page - 1] if page else 0
        return bisect.bisect_left(self._newlines, offset) - bisect.bisect_left(self._newlines, begin) + 1

    @functools.cached_property
    def _newlines(self) -> list[int]:
        # Found once: counting from the start for every chunk is quadratic in a long document.
        return [m.start() for m in re.finditer("\n", self.text)]


@dataclass(frozen=True)
class Chunk:
    """A span of a document: `document.text[start:end] == text`. `sentences` are absolute spans. `context` is the
    document's title, the heading of the section the chunk starts in and the abbreviations it uses spelled out
    ("PC: probability of causation"), those the chunk does not contain, one per line: embedded and keyword-indexed
    with the text, never shown as part of it."""

    id: str
    source: str
    start: int
    end: int
    text: str
    page: int | None
    line: int
    sentences: tuple[tuple[int, int], ...]
    context: str = ""
    page_label: str | None = None

    @property
    def index_text(self) -> str:
        return f"{self.context}\n{self.text}" if self.context else self.text

    @property
    def index_sentences(self) -> list[tuple[int, int]]:
        """The sentences' spans within `index_text` (the context comes first), where the model sees them."""
        shift = (len(self.context) + 1 if self.context else 0) - self.start
        return [(begin + shift, end + shift) for begin, end in self.sentences]

    @property
    def sentence_texts(self) -> list[str]:
        return [self.text[s - self.start : e - self.start] for s, e in self.sentences]


@dataclass(frozen=True)
class Hit:
    """A retrieved chunk: its fused score, the two signals it came from, and its best sentence."""

    chunk: Chunk
    score: float
    dense: float
    keyword: float
    highlight: tuple[int, int]
    highlight_score: float


@dataclass(frozen=True)
class Passage:
    """A cited passage: what the user sees. `highlight` is the best sentence's span, same coordinates."""

    source: str
    page: int | None
    line: int
    start: int
    end: int
    text: str
    score: float
    highlight: tuple[int, int]
    page_label: str | None = None  # the number printed on the page, where the PDF has its own numbering

    @property
    def highlighted_text(self) -> str:
        return self.text[self.highlight[0] - self.start : self.highlight[1] - self.start]

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["highlight"] = list(self.highlight)
        data["score"] = round(self.score, 6)
        return data


@dataclass(frozen=True)
class Quote:
    """The answer itself: the sentence the answer model picked in the best passage, quoted, with its place
    (`text == document text[start:end]`; page and line are where the sentence starts)."""

    text: str
    source: str
    start: int
    end: int
    page: int | None
    line: int
    page_label: str | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class FileFailure:
    source: str
    reason: str


@dataclass(frozen=True)
class IndexReport:
    """What one `qa index` run did, file by file."""

    index_dir: str
    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    failed: tuple[FileFailure, ...] = ()
    skipped: tuple[FileFailure, ...] = ()
    notes: tuple[FileFailure, ...] = ()  # indexed, but with something left out (a garbled PDF page)
    chunks_embedded: int = 0
    total_chunks: int = 0
    seconds: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)
    backend: str = ""  # the embedding backend and why it was used (measured, kept from the index, or set)
    backend_reason: str = ""

    @property
    def wrote(self) -> bool:
        return bool(self.added or self.changed or self.removed)

    def describe(self, max_skipped: int = 20) -> str:
        """A few lines for people: the counts, then every failure and (some) skipped files with the reason."""
        lines = [f"{len(self.added)} added, {len(self.changed)} changed, {len(self.removed)} removed, "
                 f"{len(self.unchanged)} unchanged, {len(self.failed)} failed; {self.chunks_embedded} chunks "
                 f"embedded, {self.total_chunks} in the index ({self.seconds:.1f} s)"]
        if self.backend and self.chunks_embedded:
            why = f": {self.backend_reason}" if self.backend_reason else ""
            lines.append(f"  embedded with {self.backend}{why}")
        lines += [f"  failed: {f.source}: {f.reason}" for f in self.failed]
        lines += [f"  note: {f.source}: {f.reason}" for f in self.notes]
        lines += [f"  skipped: {f.source}: {f.reason}" for f in self.skipped[:max_skipped]]
        if len(self.skipped) > max_skipped:
            lines.append(f"  ... and {len(self.skipped) - max_skipped} more skipped")
        return "\n".join(lines)
