"""The store seam: what retrieval, citations and the web chat read from an index, whichever store holds it."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Protocol

import numpy as np

from qa.index.store import Manifest
from qa.records import Chunk


class IndexReader(Protocol):
    """One open index: the folder index (IndexData) or a PostgreSQL database (PostgresIndex). Rows are ints that
    stay valid for the life of the reader (a row number in a folder generation, a chunk's key in the database)."""

    manifest: Manifest
    # What a question's search can do on a helper thread while keyword_top runs on its own: "encode" the question
    # (the keyword search runs in a database server's process), "nearest" (a FAISS graph search, which lets go of
    # the interpreter's lock; an exact search in numpy competes with BM25 for the two cores and is not), or "".
    beside_keywords: str

    @property
    def size(self) -> int: ...

    def reading(self) -> AbstractContextManager[object]:
        """Around one question's reads: every read inside sees the same version of the index."""

    def chunks_at(self, rows: list[int]) -> list[Chunk]: ...

    def nearest(self, query: np.ndarray, k: int) -> list[int]:
        """The rows of the k chunks nearest the query vector (fewer only when the index holds fewer)."""

    def cosines(self, rows: list[int], query: np.ndarray) -> np.ndarray: ...

    def keyword_top(self, terms: list[str], k: int) -> tuple[list[int], np.ndarray]:
        """The rows with the k best BM25 scores above 0 for these (tokenized) terms, best first, and the scores."""

    def keyword_scores(self, terms: list[str], rows: list[int]) -> np.ndarray: ...

    def idf(self, terms: list[str]) -> dict[str, float]: ...

    def sentence_vectors_of(self, rows: list[int]) -> list[np.ndarray]: ...

    def first_rows(self, sources: list[str]) -> dict[str, int]:
        """Each document's first chunk row."""

    def document_chunks(self, source: str) -> list[Chunk]:
        """A document's chunks in order (context and citations)."""

    def documents_by_size(self) -> Iterator[tuple[str, list[Chunk]]]:
        """Every document's chunks, the documents with most chunks first (example questions)."""

    def chunk_at(self, source: str, offset: int) -> Chunk | None: ...

    def document_text(self, source: str) -> str: ...
