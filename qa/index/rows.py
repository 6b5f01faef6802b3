"""The chunk table on disk: rows read by byte offset from a generation's chunk file, never all parsed at once."""
from __future__ import annotations

import bisect
import json
import mmap
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from qa.errors import IndexCorruptError
from qa.records import Chunk


def chunk_line(c: Chunk) -> str:
    return json.dumps({"id": c.id, "source": c.source, "start": c.start, "end": c.end, "page": c.page, "line": c.line,
                       "sentences": c.sentences, "text": c.text, "context": c.context,
                       **({"page_label": c.page_label} if c.page_label else {})}, ensure_ascii=False) + "\n"


def parse_chunk(line: str | bytes) -> Chunk:
    row = json.loads(line)
    return Chunk(row["id"], row["source"], row["start"], row["end"], row["text"], row["page"], row["line"],
                 tuple(tuple(s) for s in row["sentences"]), row.get("context", ""), row.get("page_label"))


class ChunkTable(Sequence):
    """A generation's chunks, row by row: `table[row]` parses that one line of the chunk file (mapped, so only
    the pages of rows read are in memory). At a million chunks, parsing every row took seconds and gigabytes
    before the first answer."""

    def __init__(self, file: Path, line_bytes: np.ndarray) -> None:
        self.file = file
        self.ends = np.cumsum(line_bytes, dtype=np.int64)
        with open(file, "rb") as handle:
            size = handle.seek(0, 2)
            # The map holds its own descriptor: the file stays readable after a newer generation deletes it.
            self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        expected = int(self.ends[-1]) if len(self.ends) else 0
        if size != expected:
            raise IndexCorruptError(f"{file} does not match its row table ({size} bytes, not {expected}): rebuild "
                                    f"the index with `qa index --rebuild --index {file.parent}`")

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, row):  # type: ignore[override]
        if isinstance(row, slice):
            return [self[r] for r in range(*row.indices(len(self)))]
        row = int(row)
        if row < 0:
            row += len(self)
        if not 0 <= row < len(self):
            raise IndexError(f"chunk row {row} out of range")
        start = int(self.ends[row - 1]) if row else 0
        try:
            return parse_chunk(self._map[start : int(self.ends[row])])
        except (ValueError, KeyError, TypeError) as exc:
            raise IndexCorruptError(f"row {row} of {self.file} is damaged ({exc}): rebuild the index with "
                                    f"`qa index --rebuild --index {self.file.parent}`") from None

    def __iter__(self) -> Iterator[Chunk]:
        for row in range(len(self)):
            yield self[row]


def first_holding(chunks: Sequence[Chunk], rows: range, offset: int) -> Chunk | None:
    """The first chunk of `rows` (one document's, in text order) that holds the character at `offset`: a binary
    search on their ends, so a document of 100,000 chunks in a ChunkTable parses about 17 of them."""
    at = bisect.bisect_right(rows, offset, key=lambda r: chunks[r].end)
    for row in rows[at : at + 2]:  # chunks overlap: the first whose end is past the offset, or the next
        chunk = chunks[row]
        if chunk.start <= offset < chunk.end:
            return chunk
    return None


def parse_rows(file: Path) -> tuple[np.ndarray, dict[str, tuple[int, int]]]:
    """The row table of a chunk file written before row tables were kept (index format 2), by reading it once:
    each row's (line bytes, sentences) and each document's (first row, rows)."""
    table, ranges = [], {}
    with open(file, "rb") as lines:
        for row, line in enumerate(lines):
            chunk = parse_chunk(line)
            table.append((len(line), len(chunk.sentences)))
            first, count = ranges.get(chunk.source, (row, 0))
            ranges[chunk.source] = (first, count + 1)
    return np.array(table, dtype=np.int64).reshape(-1, 2), ranges
