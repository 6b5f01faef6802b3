"""The on-disk index, reading side: layout, manifest, chunk table, vectors, sentence vectors, texts (writer.py writes)."""
from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qa.errors import IndexCorruptError, IndexMismatchError, IndexMissingError
from qa.index.dense import DenseIndex, dot_rows
from qa.index.keyword import KeywordIndex
from qa.index.rows import ChunkTable, first_holding, parse_rows
from qa.records import Chunk

# 2: reader versions per file, the BM25 tokenizer and title context always recorded, sentence vectors required.
# 3: a row table (rows.N.npy) and each file's first row, so that opening an index reads no chunk row. Format 2 is
# still read (its chunk file parsed once at opening, as before) and written again as 3 by the next `qa index`.
FORMAT_VERSION = 3
READABLE_FORMATS = (2, 3)
MANIFEST = "manifest.json"
# Files of one generation; the manifest names the generation it belongs to, so uncommitted files are garbage.
GENERATION_FILE = re.compile(r"^(chunks|terms|vectors|sentences|rows|bm25|dense)\.(\d+)(\.jsonl|\.txt|\.npy|\.faiss)?$")


@dataclass(frozen=True)
class FileEntry:
    """One indexed file: the hash of its bytes, where its extracted text is kept, which reader extracted it (a
    file whose reader has changed since is extracted again) and what it left out."""

    sha256: str
    bytes: int
    chunks: int
    text_sha256: str
    page_starts: tuple[int, ...] = ()
    extractor: str = ""
    notes: tuple[str, ...] = ()
    row: int = -1  # its first chunk row in the generation (its rows are consecutive); -1 before it is written


@dataclass(frozen=True)
class Manifest:
    generation: int
    model: dict[str, object]
    settings: dict[str, object]
    files: dict[str, FileEntry]
    chunk_count: int
    updated: float
    bm25: dict[str, object] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION  # as read; always written as FORMAT_VERSION

    def to_json(self) -> dict[str, object]:
        return {
            "format_version": FORMAT_VERSION,
            "generation": self.generation,
            "model": self.model,
            "settings": self.settings,
            "bm25": self.bm25,
            "chunk_count": self.chunk_count,
            "updated": self.updated,
            "files": {s: {"sha256": f.sha256, "bytes": f.bytes, "chunks": f.chunks, "text_sha256": f.text_sha256,
                          "page_starts": list(f.page_starts), "extractor": f.extractor, "notes": list(f.notes), "row": f.row}
                      for s, f in sorted(self.files.items())},
        }

    @staticmethod
    def from_json(data: dict) -> Manifest:
        files = {s: FileEntry(f["sha256"], f["bytes"], f["chunks"], f["text_sha256"], tuple(f.get("page_starts", ())),
                              f.get("extractor", ""), tuple(f.get("notes", ())), f.get("row", -1))
                 for s, f in data["files"].items()}
        return Manifest(data["generation"], data["model"], dict(data["settings"]), files, data["chunk_count"],
                        data.get("updated", 0.0), dict(data["bm25"]), data["format_version"])


@dataclass
class IndexData:
    """An open index: chunks and vectors share row numbers; the FAISS and BM25 indexes are built over them. The
    chunk rows, vectors and sentence vectors stay on disk (mapped) and are read row by row."""

    path: Path
    manifest: Manifest
    chunks: Sequence[Chunk]  # a ChunkTable on disk; a list where a benchmark assembles one in memory
    vectors: np.ndarray
    dense: DenseIndex | None  # None where only the rows are needed (an indexer copying them)
    bm25: KeywordIndex | None
    # One row per sentence of every chunk, in chunk order (float16), and each chunk's (start, stop) in them.
    sentence_vectors: np.ndarray
    sentence_rows: np.ndarray
    # Each document's rows, consecutive: (first row, number of rows).
    ranges: dict[str, tuple[int, int]] = field(default_factory=dict)
    _keyword_memo: tuple[tuple[str, ...] | None, np.ndarray] = field(
        default=(None, np.zeros(0, dtype=np.float32)), repr=False)

    @property
    def beside_keywords(self) -> str:  # qa/index/protocol.py
        return "nearest" if self.dense is not None and self.dense.approximate_search else ""

    def chunk_sentence_vectors(self, row: int) -> np.ndarray:
        start, stop = self.sentence_rows[row]
        return self.sentence_vectors[start:stop]

    def source_rows(self, source: str) -> range:
        first, count = self.ranges.get(source, (0, 0))
        return range(first, first + count)

    def chunk_at(self, source: str, offset: int) -> Chunk | None:
        """The first chunk of `source` that holds the character at `offset` (chunks overlap)."""
        return first_holding(self.chunks, self.source_rows(source), offset)

    def document_text(self, source: str) -> str:
        entry = self.manifest.files[source]
        return (self.path / "docs" / f"{entry.text_sha256}.txt").read_text(encoding="utf-8", errors="surrogatepass")

    # The reading seam (qa/index/protocol.py): the folder index answers from memory and mapped files.
    @property
    def size(self) -> int:
        return len(self.chunks)

    def reading(self) -> contextlib.nullcontext:
        return contextlib.nullcontext()  # a loaded generation never changes

    def chunks_at(self, rows: list[int]) -> list[Chunk]:
        return [self.chunks[r] for r in rows]

    def nearest(self, query: np.ndarray, k: int) -> list[int]:
        _, ids = self.dense.search(query[None, :], min(k, self.size))
        return [int(i) for i in ids[0] if i >= 0]

    def cosines(self, rows: list[int], query: np.ndarray) -> np.ndarray:
        return dot_rows(np.asarray(self.vectors[np.asarray(rows, dtype=np.int64)], dtype=np.float32), query)

    def _bm25(self, terms: list[str]) -> np.ndarray:
        # One question asks for its top rows and then for some rows' scores: computed once for both.
        key, memo = tuple(terms), self._keyword_memo  # read once: other threads may replace it meanwhile
        if memo[0] != key:
            memo = self._keyword_memo = (key, self.bm25.scores(terms, len(self.chunks)))
        return memo[1]

    def keyword_top(self, terms: list[str], k: int) -> tuple[list[int], np.ndarray]:
        scores = self._bm25(terms)
        if not len(scores):
            return [], np.zeros(0, dtype=np.float32)
        top = _top_rows(scores, min(k, len(scores)))
        return [int(r) for r in top], scores[top]

    def keyword_scores(self, terms: list[str], rows: list[int]) -> np.ndarray:
        return self._bm25(terms)[np.asarray(rows, dtype=np.int64)]

    def idf(self, terms: list[str]) -> dict[str, float]:
        return self.bm25.idf(terms)

    def sentence_vectors_of(self, rows: list[int]) -> list[np.ndarray]:
        return [self.chunk_sentence_vectors(r) for r in rows]

    def first_rows(self, sources: list[str]) -> dict[str, int]:
        return {s: self.ranges[s][0] for s in sources if self.ranges.get(s, (0, 0))[1]}

    def document_chunks(self, source: str) -> list[Chunk]:
        return self.chunks_at(list(self.source_rows(source)))

    def documents_by_size(self) -> Iterator[tuple[str, list[Chunk]]]:
        for source, (_, count) in sorted(self.ranges.items(), key=lambda item: (-item[1][1], item[0])):
            if count:
                yield source, self.document_chunks(source)


def read_manifest(path: Path) -> Manifest | None:
    file = path / MANIFEST
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise IndexCorruptError(f"{file} is unreadable ({exc}): rebuild with `qa index --rebuild --index {path}`") from None
    if data.get("format_version") not in READABLE_FORMATS:
        raise IndexMismatchError(f"the index at {path} has format {data.get('format_version')}, this qa reads "
                                 f"{FORMAT_VERSION}: rebuild it with `qa index --rebuild --index {path}`")
    return Manifest.from_json(data)


def check_compatible(manifest: Manifest, model: dict[str, object], settings: dict[str, object], path: object,
                     flag: str = "--index") -> None:
    """Refuse an index whose vectors or chunks were made differently: mixing them would give wrong answers."""
    for label, stored_all, wanted in (("model", manifest.model, model), ("chunk settings", manifest.settings, settings)):
        stored = {key: stored_all.get(key) for key in wanted}
        if stored != wanted or set(stored_all) - set(wanted) - {"dim", "backend_reason"}:
            raise IndexMismatchError(f"the index at {path} was built with {label} {json.dumps(stored)}, not "
                                     f"{json.dumps(wanted)}: rebuild it with `qa index --rebuild {flag} {path}`")


def read_index(path: Path, searchable: bool = True) -> IndexData:
    """Load the committed generation. `searchable=False` skips loading BM25 and building the dense index, which
    only searching needs (an indexer reuses the chunks and vectors, nothing else)."""
    # A writer may commit a new generation and delete the old files between our reads: read again.
    for attempt in range(5):
        manifest = read_manifest(path)
        if manifest is None:
            raise IndexMissingError(f"no index at {path} yet: build it with `qa index --index {path}`")
        try:
            return _read_generation(path, manifest, searchable)
        except FileNotFoundError:
            if attempt == 4:
                raise IndexCorruptError(f"files of the index at {path} are missing: rebuild it with "
                                        f"`qa index --rebuild --index {path}`") from None
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def _read_generation(path: Path, manifest: Manifest, searchable: bool) -> IndexData:
    gen = manifest.generation
    rebuild = f"rebuild it with `qa index --rebuild --index {path}`"
    chunk_file = path / f"chunks.{gen}.jsonl"
    if manifest.format_version >= 3:
        try:
            table = np.load(path / f"rows.{gen}.npy", allow_pickle=False)
        except ValueError as exc:
            raise IndexCorruptError(f"the row table of the index at {path} is damaged ({exc}): {rebuild}") from None
        ranges = {s: (f.row, f.chunks) for s, f in manifest.files.items() if f.chunks}
        if table.ndim != 2 or table.shape[1:] != (2,) or any(f < 0 or f + n > len(table) for f, n in ranges.values()):
            raise IndexCorruptError(f"the row table of the index at {path} does not match its manifest: {rebuild}")
    else:
        try:
            table, ranges = parse_rows(chunk_file)
        except (ValueError, KeyError, TypeError) as exc:
            raise IndexCorruptError(f"chunk rows of the index at {path} are damaged ({exc}): {rebuild}") from None
    chunks = ChunkTable(chunk_file, table[:, 0])
    try:
        # Mapped when only copied (by an indexer) or when an HNSW graph holds its own copy for searching.
        mapped = not searchable or DenseIndex.approximate(manifest.chunk_count)
        vectors = np.load(path / f"vectors.{gen}.npy", allow_pickle=False, mmap_mode="r" if mapped else None)
        sentence_vectors = np.load(path / f"sentences.{gen}.npy", allow_pickle=False, mmap_mode="r")
    except ValueError as exc:
        raise IndexCorruptError(f"vectors of the index at {path} are damaged ({exc}): {rebuild}") from None
    counts = table[:, 1]
    ends = np.cumsum(counts)
    sentence_rows = np.stack([ends - counts, ends], axis=1)
    if len(sentence_vectors) != (ends[-1] if len(ends) else 0):
        raise IndexCorruptError(f"the sentence vectors of the index at {path} do not match its chunks: {rebuild}")
    if len(vectors) != len(chunks) or len(chunks) != manifest.chunk_count:
        raise IndexCorruptError(f"the index at {path} is inconsistent: {rebuild}")
    if not (path / f"bm25.{gen}").is_dir():
        raise FileNotFoundError(path / f"bm25.{gen}")
    dense = DenseIndex.load(path / f"dense.{gen}.faiss", vectors) if searchable else None
    bm25 = KeywordIndex.load(path / f"bm25.{gen}") if searchable else None
    return IndexData(path, manifest, chunks, vectors, dense, bm25, sentence_vectors, sentence_rows, ranges)


def _top_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """The rows of the k best positive scores, best first. Over a large index, only the rows at or above the k-th
    best of the blocks' maxima are ranked (at least k rows are: one per such block): a million scores take under
    a millisecond this way, against 2-4 ms for partitioning them all."""
    block = max(256, len(scores) // 1024)  # about a thousand blocks: their maxima cost little to rank
    whole = len(scores) // block * block
    if whole // block < 4 * k:  # too few blocks for their maxima to leave out many rows
        candidates = np.argpartition(-scores, k - 1)[:k]
        candidates = candidates[scores[candidates] > 0]
    else:
        maxima = scores[:whole].reshape(-1, block).max(axis=1)
        floor = max(float(np.partition(maxima, len(maxima) - k)[len(maxima) - k]), float(np.finfo(np.float32).tiny))
        candidates = np.concatenate([np.flatnonzero(scores[:whole] >= floor),
                                     whole + np.flatnonzero(scores[whole:] >= floor)])
    if len(candidates) > k:
        candidates = candidates[np.argpartition(-scores[candidates], k - 1)[:k]]
    return candidates[np.argsort(-scores[candidates], kind="stable")]
