"""Cite stage: turn hits into Passages with exact locations, and render them as text, Markdown or JSON."""
from __future__ import annotations

import html
from dataclasses import dataclass

from qa.records import Chunk, Hit, Passage, Quote
from qa.shapes import item_lines
from qa.index.protocol import IndexReader


@dataclass(frozen=True)
class Context:
    """The passage with the sentences around it, all quoted from the document."""

    before: str
    passage: str
    after: str


def cite(hit: Hit) -> Passage:
    c = hit.chunk
    return Passage(c.source, c.page, c.line, c.start, c.end, c.text, hit.score, hit.highlight, c.page_label)


def quote(hit: Hit) -> Quote:
    """The hit's highlighted sentence as the answer, with the line it starts on (a chunk never spans pages)."""
    c = hit.chunk
    start, end = hit.highlight
    line = c.line + c.text.count("\n", 0, start - c.start)
    return Quote(c.text[start - c.start : end - c.start], c.source, start, end, c.page, line, c.page_label)


def context(data: IndexReader, passage: Passage, sentences: int = 3) -> Context:
    """Up to `sentences` sentences (from the neighbouring chunks' sentence table) each side of the passage."""
    rows = data.document_chunks(passage.source)
    spans = sorted({span for c in rows for span in c.sentences})
    before = [s for s in spans if s[1] <= passage.start][-sentences:]
    after = [s for s in spans if s[0] >= passage.end][:sentences]
    text = data.document_text(passage.source)
    return Context(
        before=text[before[0][0] : passage.start] if before else "",
        passage=text[passage.start : passage.end],
        after=text[passage.end : after[-1][1]] if after else "",
    )


def page_place(p: Passage | Quote | Chunk) -> str:
    """"page 12 (printed 10)": the physical page, and the number printed on it where that differs."""
    printed = f" (printed {p.page_label})" if p.page_label and p.page_label != str(p.page) else ""
    return f"page {p.page}{printed}"


def where(p: Passage | Quote | Chunk) -> str:
    """"page 12 (printed 10), line 4" or "line 21": where in its document a passage or quote starts."""
    return f"{page_place(p)}, line {p.line}" if p.page else f"line {p.line}"


def location(p: Passage) -> str:
    return f"{p.source}, {where(p)}, chars {p.start}-{p.end}"


def to_plain(passages: list[Passage], question: str, answer: Quote | None = None,
             confidence: float | None = None) -> str:
    """For a terminal: the answer first, then numbered citations with the answering sentence marked >> <<."""
    if not passages:
        return f"Nothing in the documents answers: {question}"
    lines = []
    if answer is not None:
        sure = f", confidence {confidence:.0%}" if confidence is not None else ""
        first, *items = item_lines(answer.text)
        lines += [f"Answer: {first}", *(f"  {item}" for item in items),
                  f"  ({answer.source}, {where(answer)}{sure})", ""]
    for n, p in enumerate(passages, 1):
        a, b = p.highlight[0] - p.start, p.highlight[1] - p.start
        body = f"{p.text[:a]}>>{p.text[a:b]}<<{p.text[b:]}"
        lines.append(f"[{n}] {location(p)}  (score {p.score:.3f})")
        lines.extend("    " + line for line in body.splitlines() if line.strip())
        lines.append("")
    return "\n".join(lines).rstrip()


def highlighted_html(p: Passage, text: str | None = None, offset: int | None = None) -> str:
    """The passage as escaped HTML with the answering sentence in <mark>: document text never becomes markup."""
    text = p.text if text is None else text
    offset = p.start if offset is None else offset
    a = max(0, p.highlight[0] - offset)
    b = max(a, p.highlight[1] - offset)
    return f"{html.escape(text[:a])}<mark>{html.escape(text[a:b])}</mark>{html.escape(text[b:])}"
