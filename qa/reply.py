"""A reply as safe HTML: the answer card first, then numbered source cards; document text is never markup."""
from __future__ import annotations

import dataclasses
import html
import json
import re
import unicodedata
from urllib.parse import quote as url_quote
from dataclasses import dataclass

from qa.api import Answer, Retriever
from qa.citations import where
from qa.errors import QAError
from qa.records import Chunk, Passage
from qa.shapes import ITEM_BREAK

NOT_FOUND = "I could not find anything about this in the documents."
# A passage this far below the best one's score is left out of the reply: it only dilutes the answer.
SOURCE_GAP = 0.2
TRIM = 220  # characters of a source card's text kept each side of its highlight


@dataclass(frozen=True)
class Source:
    """One source card: a passage, or the overlapping passages of one document merged, with the best one's
    highlight."""

    number: int
    first: Passage
    start: int
    end: int
    text: str
    highlights: tuple[tuple[int, int], ...]


def sources(answer: Answer) -> list[Source]:
    """The passages worth showing, best first: close to the best one's score, overlapping ones merged."""
    if not answer.passages:
        return []
    floor = answer.passages[0].score - SOURCE_GAP
    groups: list[list[Passage]] = []
    for p in answer.passages:
        if p.score < floor and not answer.low_confidence:
            continue
        for group in groups:
            if group[0].source == p.source and any(p.start <= q.end and q.start <= p.end for q in group):
                group.append(p)
                break
        else:
            groups.append([p])
    cards = []
    for number, group in enumerate(groups, 1):
        first, start, end = group[0], min(p.start for p in group), max(p.end for p in group)
        if len(group) == 1:
            text = first.text
        else:  # the union, from the document text of the index version the passages came from
            data = answer.snapshot.data if answer.snapshot else None
            text = data.document_text(first.source)[start:end] if data else first.text
            start, end = (start, end) if data else (first.start, first.end)
        # The best passage's highlight only: the others' are weaker answers to the same question.
        spans = (first.highlight,) if start <= first.highlight[0] and first.highlight[1] <= end else ()
        cards.append(Source(number, first, start, end, text, spans))
    return cards


def marked(text: str, offset: int, spans: tuple[tuple[int, int], ...] | list[tuple[int, int]]) -> str:
    """`text` (starting at document offset `offset`) as escaped HTML with each span in <mark>."""
    out, at = [], 0
    for begin, end in spans:
        a, b = max(at, begin - offset), max(at, min(len(text), end - offset))
        out += [html.escape(text[at:a]), f"<mark>{html.escape(text[a:b])}</mark>"]
        at = b
    out.append(html.escape(text[at:]))
    return "".join(out)


def render_question(question: str) -> str:
    """The user's own message, escaped like document text: a question cannot add markup either."""
    return f'<div class="qa-question">{_html_text(question)}</div>'


def foreign(question: str) -> bool:
    """Mostly letters outside the Latin script: the embedding model reads English."""
    letters = [ch for ch in question if ch.isalpha()]
    other = sum(1 for ch in letters if not unicodedata.name(ch, "").startswith("LATIN"))
    return bool(letters) and other > len(letters) / 2


def render_turn(asked: str, searched: str, answer: Answer, retriever: Retriever, context_sentences: int = 3) -> str:
    """The reply: what was searched (when it differs), the answer card, then the source cards."""
    parts = ['<div class="qa-answer">']
    if searched != asked:
        parts.append(f'<div class="qa-note">Searched for: <i>{_html_text(searched)}</i></div>')
    if not answer.passages:
        parts.append(f'<div class="qa-none"><p>{_html_text(NOT_FOUND)}</p>')
        if foreign(asked):
            parts.append('<p class="qa-note">The model reads English: questions in other languages are often '
                         "not understood. Try asking in English.</p>")
        parts.append('<p class="qa-note">“Show the closest passages anyway” below shows what came nearest.</p>'
                     "</div>")
        return "".join(parts) + "</div>"
    cards = sources(answer)
    if answer.low_confidence:
        parts.append(f'<div class="qa-warn" role="note"><b>Low confidence ({answer.confidence:.0%}).</b> Nothing '
                     "in the documents clearly answers this; these are the closest passages.</div>")
    elif answer.answer is not None:
        quote = answer.answer
        number = next((c.number for c in cards if c.first.source == quote.source
                       and c.start <= quote.start and quote.end <= c.end), 1)
        parts.append(
            '<div class="qa-card" role="group" aria-label="Answer"><div class="qa-label">Answer</div>'
            f'<blockquote class="qa-quote"><mark>{_html_text(quote.text)}</mark></blockquote>'
            f'<div class="qa-meta"><a class="qa-chip" href="#qa-src-{number}" data-cite="{number}">[{number}]</a> '
            f'<span class="qa-source">{html.escape(quote.source)}</span> · {html.escape(where(quote))} · '
            f'{answer.confidence:.0%} confident · '
            f'{_opener(quote.source, cards[number - 1].start, cards[number - 1].end, (quote.start, quote.end))}'
            '</div></div>')
    parts.append(f'<div class="qa-sources"><div class="qa-label">Sources ({len(cards)})</div>')
    for card in cards:
        parts.append(_card(card, answer, retriever, context_sentences))
    parts.append("</div></div>")
    return "".join(parts)


def _card(card: Source, answer: Answer, retriever: Retriever, context_sentences: int) -> str:
    first = dataclasses.replace(card.first, start=card.start, end=card.end, text=card.text)
    low = card.highlights[0][0] - card.start if card.highlights else 0
    begin = max(0, low - TRIM)
    end = min(len(card.text), (card.highlights[-1][1] - card.start if card.highlights else 0) + TRIM)
    # Cut at white space, never inside a word.
    if begin > 0:
        space = card.text.find(" ", begin, low)
        begin = space + 1 if space >= 0 else begin
    if end < len(card.text):
        space = card.text.rfind(" ", end - TRIM // 2, end)
        end = space if space >= 0 else end
    shown = card.text[begin:end]
    trimmed = ("… " if begin else "") + _with_breaks(marked(shown, card.start + begin, card.highlights)) + \
        (" …" if end < len(card.text) else "")
    ctx = retriever.context(first, context_sentences, answer)
    around = (f'{_html_text(ctx.before)}<span class="qa-passage">'
              f'{_with_breaks(marked(card.text, card.start, card.highlights))}</span>{_html_text(ctx.after)}')
    return (f'<div class="qa-cite" id="qa-src-{card.number}" data-cite="{card.number}" '
            f'data-source="{html.escape(card.first.source)}" data-start="{card.start}" data-end="{card.end}">'
            f'<div class="qa-head"><b>[{card.number}]</b> <span class="qa-source">{html.escape(card.first.source)}'
            f'</span> · {html.escape(where(card.first))} · '
            f'{_opener(card.first.source, card.start, card.end, card.highlights[0] if card.highlights else None)}'
            f'</div><div class="qa-text">{trimmed}</div>'
            f'<details class="qa-context"><summary>Show in context</summary><div>{around}</div></details></div>')


VIEW_AROUND = 4000  # characters of the document shown each side of the passage in the source viewer


def render_source(source: str, text: str, start: int, end: int, highlight: tuple[int, int],
                  chunk: Chunk | None) -> str:
    """The source viewer: the document's stored `text` around a passage (`chunk` is where it starts), the
    passage shaded and its answering sentence marked. Only offsets inside the text."""
    if not (0 <= start <= end <= len(text) and start <= highlight[0] <= highlight[1] <= end):
        raise QAError("that passage is no longer in the document: ask the question again")
    begin = text.rfind("\n", 0, max(0, start - VIEW_AROUND)) + 1
    stop = text.find("\n", min(len(text), end + VIEW_AROUND))
    stop = len(text) if stop < 0 else stop
    place = f" · {where(chunk)}" if chunk else ""
    return (f'<div class="qa-view"><div class="qa-head"><span class="qa-source">{html.escape(source)}</span>{place}'
            f'</div><div class="qa-view-text" tabindex="0">{"… " if begin else ""}{html.escape(text[begin:start])}'
            f'<span class="qa-passage" id="qa-view-passage">{marked(text[start:end], start, [highlight])}</span>'
            f'{html.escape(text[end:stop])}{" …" if stop < len(text) else ""}</div></div>')


def _opener(source: str, start: int, end: int, highlight: tuple[int, int] | None) -> str:
    """A link that opens the source viewer at this passage. The chat's sanitizer keeps no data attributes, so
    the passage travels in the link's fragment, which the page's script reads."""
    spec = json.dumps({"source": source, "start": start, "end": end, "highlight": list(highlight or (start, start))})
    return f'<a class="qa-open" href="#qa-open={url_quote(spec, safe="")}">Open ↗</a>'


def _html_text(text: str) -> str:
    return _with_breaks(html.escape(text))


def _with_breaks(escaped: str) -> str:
    # One line only, so the reply stays a single HTML block that Markdown leaves alone; a paragraph break or a
    # list item's line shows as a line break, and another lone newline (a PDF's line wrap) as a space.
    return re.sub(r"\n", " ", ITEM_BREAK.sub("<br>", re.sub(r"\n\s*\n\s*", "<br>", escaped)))
