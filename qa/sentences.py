"""Sentences and paragraphs of a text, as exact character offsets (blingfire's boundaries)."""
from __future__ import annotations

import re

from qa.records import Document

_PARAGRAPH_BREAK = re.compile(r"\n[ \t\f\v]*\n\s*")


def sentence_spans(document: Document) -> list[tuple[int, int, int]]:
    """(start, end, region) of every sentence, stripped of surrounding white space."""
    text = document.text
    bounds = list(document.page_starts) or [0]
    bounds.append(len(text))
    spans: list[tuple[int, int, int]] = []
    for region in range(len(bounds) - 1):
        for para_start, para_end in paragraphs(text, bounds[region], bounds[region + 1]):
            paragraph = text[para_start:para_end]
            offsets = sentence_offsets(paragraph)
            for s, e in offsets or [(0, len(paragraph))]:
                s, e = _strip(paragraph, s, min(e, len(paragraph)))
                if e > s:
                    spans.append((para_start + s, para_start + e, region))
    return spans


def sentence_offsets(paragraph: str) -> list[tuple[int, int]]:
    """blingfire's sentence boundaries as (start, end) character offsets. Its Python wrapper
    (`text_to_sentences_and_offsets`) maps UTF-8 offsets back to characters in a loop over every byte, which was
    most of the time spent chunking a large file; this calls the same native function and maps them with numpy."""
    from ctypes import byref, c_char_p, c_int, c_int32, create_string_buffer

    import blingfire
    import numpy as np

    data = paragraph.encode("utf-8", "surrogatepass")
    size = 2 * len(data) + 16
    out, starts, ends = create_string_buffer(size), (c_int32 * size)(), (c_int32 * size)()
    length = blingfire.blingfire.TextToSentencesWithOffsets(c_char_p(data), c_int(len(data)), byref(out),
                                                             byref(starts), byref(ends), c_int(size))
    if length <= 0 or length > size:
        return []
    count = out.value.count(b"\n") + 1
    begin = np.frombuffer(starts, dtype=np.int32, count=count).astype(np.int64)
    end = np.frombuffer(ends, dtype=np.int32, count=count).astype(np.int64) + 1  # blingfire's ends are inclusive
    if len(data) != len(paragraph):  # not ASCII: characters before each byte offset
        before = np.zeros(len(data) + 1, dtype=np.int64)
        np.cumsum((np.frombuffer(data, dtype=np.uint8) & 0xC0) != 0x80, out=before[1:])
        begin, end = before[np.minimum(begin, len(data))], before[np.minimum(end, len(data))]
    return list(zip(begin.tolist(), end.tolist()))


def paragraphs(text: str, begin: int, end: int) -> list[tuple[int, int]]:
    result, position = [], begin
    for match in _PARAGRAPH_BREAK.finditer(text, begin, end):
        result.append(_strip(text, position, match.start()))
        position = match.end()
    result.append(_strip(text, position, end))
    return [(s, e) for s, e in result if e > s]


def _strip(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end
