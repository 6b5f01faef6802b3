"""Store stage, writing side: a new generation's files streamed to disk as rows arrive, then committed atomically."""
from __future__ import annotations

import json
import os
import shutil
import struct
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from qa.errors import IndexLockedError, QAError
from qa.records import Chunk
from qa.index.dense import DenseIndex
from qa.index.keyword import bm25_from_terms, bm25_tokenize
from qa.index.files import flush, flush_folder, write_atomic
from qa.index.rows import chunk_line
from qa.index.store import GENERATION_FILE, MANIFEST, IndexData, Manifest, read_manifest

# A fixed-size .npy header, written last: rows are appended before their count is known.
_HEADER_BYTES = 128
_COPY_ROWS = 65_536  # rows copied from the old generation per block: memory stays flat however large it is


@dataclass(frozen=True)
class Mark:
    """How far each of a generation's files had got; `rollback` returns them there (a file that failed midway)."""

    rows: int
    sentence_rows: int
    chunk_bytes: int
    term_bytes: int


def _tokenizer(bm25: dict[str, object]) -> tuple[object, object]:
    return bm25.get("stemmer"), bm25.get("stopwords")


class _RowFile:
    """An .npy file of fixed-width rows appended block by block."""

    def __init__(self, path: Path, dtype: type) -> None:
        self.path, self.dtype = path, np.dtype(dtype)
        self.handle = open(path, "wb")
        self.handle.write(b"\0" * _HEADER_BYTES)
        self.rows, self.dim = 0, 0

    def append(self, rows: np.ndarray) -> None:
        if not len(rows):
            return
        if self.dim and rows.shape[1] != self.dim:
            raise ValueError(f"rows of width {rows.shape[1]} added to {self.path.name} of width {self.dim}")
        self.dim = rows.shape[1]
        self.handle.write(np.ascontiguousarray(rows, dtype=self.dtype).tobytes())
        self.rows += len(rows)

    def truncate(self, rows: int) -> None:
        self.handle.flush()
        self.handle.truncate(_HEADER_BYTES + rows * self.dim * self.dtype.itemsize)
        self.handle.seek(0, os.SEEK_END)
        self.rows = rows

    def close(self, dim: int) -> None:
        header = repr({"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                       "shape": (self.rows, self.dim or dim)})
        body = header.ljust(_HEADER_BYTES - 11) + "\n"
        self.handle.seek(0)
        self.handle.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body.encode("latin1"))
        flush(self.handle)
        self.handle.close()


class GenerationWriter:
    """The files of one new generation, filled as rows arrive: the reading thread adds chunk rows and their BM25
    terms, the embedding thread the same rows' vectors in the same order. Nothing is visible until `commit`."""

    def __init__(self, path: Path, bm25: dict[str, object]) -> None:
        self.path = path
        self.bm25 = bm25  # the tokenizer the new generation's terms are made with
        self.gen = next_generation(path)
        self.rows = self.sentence_rows = 0
        self.first_rows: dict[str, int] = {}  # each file's first row (a file's rows are consecutive)
        self._opened = False

    def _open(self) -> None:
        if not self._opened:
            self.path.mkdir(parents=True, exist_ok=True)
            self._chunks = open(self.path / f"chunks.{self.gen}.jsonl", "wb")
            self._terms = open(self.path / f"terms.{self.gen}.txt", "w", encoding="utf-8")
            self._vectors = _RowFile(self.path / f"vectors.{self.gen}.npy", np.float32)
            # float16 halves the largest file; a sentence's cosine moves by about 1e-3, far below any score gap.
            self._sentences = _RowFile(self.path / f"sentences.{self.gen}.npy", np.float16)
            # Each row's (line bytes, sentences): opening the index finds any row without reading the others.
            self._table = _RowFile(self.path / f"rows.{self.gen}.npy", np.int64)
            self._opened = True

    def mark(self) -> Mark:
        if not self._opened:  # opened by the first rows: a run that changes nothing writes no file
            return Mark(0, 0, 0, 0)
        return Mark(self.rows, self.sentence_rows, self._chunks.tell(), self._terms.tell())

    def add_rows(self, chunks: list[Chunk]) -> None:
        """Chunk rows and their BM25 terms (tokenised here, while the model embeds earlier rows)."""
        self._open()
        lines = [chunk_line(c).encode("utf-8") for c in chunks]
        self._chunks.write(b"".join(lines))
        self._table.append(np.array([(len(line), len(c.sentences)) for line, c in zip(lines, chunks)],
                                    dtype=np.int64).reshape(-1, 2))
        for row, c in enumerate(chunks, self.rows):
            self.first_rows.setdefault(c.source, row)
        self._terms.write("".join(" ".join(t) + "\n" for t in bm25_tokenize([c.index_text for c in chunks],
                                                                             self.bm25)))
        self.rows += len(chunks)
        self.sentence_rows += sum(len(c.sentences) for c in chunks)

    def rollback(self, mark: Mark) -> None:
        """Forget the rows added since `mark` (the reading side; the embedding side calls `truncate_vectors`)."""
        if not self._opened:
            return
        for handle, size in ((self._chunks, mark.chunk_bytes), (self._terms, mark.term_bytes)):
            handle.flush()
            handle.truncate(size)
            handle.seek(size)
        self._table.truncate(mark.rows)
        self.first_rows = {s: r for s, r in self.first_rows.items() if r < mark.rows}
        self.rows, self.sentence_rows = mark.rows, mark.sentence_rows

    def add_vectors(self, vectors: np.ndarray, sentence_vectors: np.ndarray) -> None:
        self._vectors.append(vectors)
        self._sentences.append(sentence_vectors)

    def truncate_vectors(self, mark: Mark) -> None:
        self._vectors.truncate(mark.rows)
        self._sentences.truncate(mark.sentence_rows)

    @property
    def vector_rows(self) -> int:
        return self._vectors.rows if self._opened else 0

    def copy_rows(self, old: IndexData, keep: np.ndarray) -> None:
        """Append the old generation's rows where `keep` is true, their lines and vectors copied, not recomputed."""
        self._open()
        gen = old.manifest.generation
        terms_file = old.path / f"terms.{gen}.txt"
        with open(old.path / f"chunks.{gen}.jsonl", "rb") as lines:
            self._chunks.writelines(line for line, wanted in zip(lines, keep) if wanted)
        if _tokenizer(old.manifest.bm25) == _tokenizer(self.bm25):
            with open(terms_file, encoding="utf-8") as lines:
                self._terms.writelines(line for line, wanted in zip(lines, keep) if wanted)
        else:  # the tokenizer changed: the kept chunks are tokenized again (nothing is embedded)
            kept = [old.chunks[row].index_text for row in np.flatnonzero(keep)]
            self._terms.writelines(" ".join(t) + "\n" for t in bm25_tokenize(kept, self.bm25))
        counts = np.diff(old.sentence_rows, axis=1)[:, 0]
        line_bytes = np.diff(old.chunks.ends, prepend=0)
        new_rows = self.rows + np.cumsum(keep) - 1
        for source, (first, count) in old.ranges.items():
            if count and keep[first]:
                self.first_rows[source] = int(new_rows[first])
        for begin in range(0, len(keep), _COPY_ROWS):
            block = keep[begin : begin + _COPY_ROWS]
            self._vectors.append(np.asarray(old.vectors[begin : begin + _COPY_ROWS][block]))
            self._table.append(np.stack([line_bytes[begin : begin + _COPY_ROWS], counts[begin : begin + _COPY_ROWS]],
                                        axis=1)[block])
        sentence_keep = np.repeat(keep, counts)
        for begin in range(0, len(sentence_keep), _COPY_ROWS):
            block = sentence_keep[begin : begin + _COPY_ROWS]
            self._sentences.append(np.asarray(old.sentence_vectors[begin : begin + _COPY_ROWS][block]))
        self.rows += int(keep.sum())
        self.sentence_rows += int(sentence_keep.sum())

    def commit(self, manifest: Manifest) -> None:
        """Close the row files, build BM25 (and HNSW when large), then switch to this generation by replacing the
        manifest atomically. A crash before that leaves the previous generation in charge."""
        if manifest.generation != self.gen or not manifest.chunk_count == self.rows == self._vectors.rows:
            raise ValueError(f"generation {self.gen} has {self.rows} chunk rows and {self._vectors.rows} vector "
                             f"rows; the manifest says {manifest.chunk_count}")
        missing = [s for s, f in manifest.files.items() if f.chunks and s not in self.first_rows]
        if missing:
            raise ValueError(f"no rows were written for {', '.join(missing[:3])}")
        manifest = replace(manifest, files={s: replace(f, row=self.first_rows.get(s, -1) if f.chunks else -1)
                                            for s, f in manifest.files.items()})
        for handle in (self._chunks, self._terms):
            flush(handle)
            handle.close()
        dim = int(manifest.model.get("dim", 0))
        self._vectors.close(dim)
        self._sentences.close(dim)
        self._table.close(2)
        self._opened = False
        path, gen = self.path, self.gen
        if DenseIndex.approximate(self.rows):  # built once here, not at every start: minutes at a million
            # Before BM25, and freed before it is built: the two largest structures are never in memory together.
            dense = DenseIndex.build(path / f"vectors.{gen}.npy")
            dense.save(path / f"dense.{gen}.faiss.tmp")
            del dense
            os.replace(path / f"dense.{gen}.faiss.tmp", path / f"dense.{gen}.faiss")
        bm25_dir = path / f"bm25.{gen}"
        shutil.rmtree(bm25_dir, ignore_errors=True)
        bm25_from_terms(path / f"terms.{gen}.txt", manifest.bm25).save(str(bm25_dir))
        for file in bm25_dir.iterdir():
            flush_folder(file)
        flush_folder(path)
        os.sync()  # every file above and the document texts, flushed once before the manifest names them
        write_atomic(path / MANIFEST, json.dumps(manifest.to_json(), indent=1, ensure_ascii=False).encode())
        collect_garbage(path, manifest)

    def discard(self) -> None:
        """Close and delete this generation's files (nothing changed, or the run failed)."""
        if self._opened:
            for handle in (self._chunks, self._terms, self._vectors.handle, self._sentences.handle,
                           self._table.handle):
                handle.close()
            for name in (f"chunks.{self.gen}.jsonl", f"terms.{self.gen}.txt", f"vectors.{self.gen}.npy",
                         f"sentences.{self.gen}.npy", f"rows.{self.gen}.npy"):
                (self.path / name).unlink(missing_ok=True)
            self._opened = False


def next_generation(path: Path) -> int:
    """A generation number no file in the folder uses yet, committed or left over from a crash."""
    used = [int(m.group(2)) for e in path.iterdir() if (m := GENERATION_FILE.match(e.name))] if path.is_dir() else []
    try:
        manifest = read_manifest(path)
    except QAError:  # a damaged or foreign manifest is being replaced by a rebuild
        manifest = None
    return max([0, *used, manifest.generation if manifest else 0]) + 1


def collect_garbage(path: Path, manifest: Manifest) -> None:
    """Delete files of other generations, half-written temporaries and texts no file refers to."""
    keep_texts = {f"{f.text_sha256}.txt" for f in manifest.files.values()}
    for entry in path.iterdir():
        match = GENERATION_FILE.match(entry.name)
        if (match and int(match.group(2)) != manifest.generation) or entry.name.endswith(".tmp"):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink(missing_ok=True)
    docs = path / "docs"
    if docs.is_dir():
        for entry in docs.iterdir():
            if entry.name not in keep_texts:
                entry.unlink(missing_ok=True)


def lock(path: Path, timeout: float = 0.0):  # -> filelock.FileLock, entered
    """An exclusive lock on the index folder for writers; readers never need it."""
    from filelock import FileLock, Timeout

    path.mkdir(parents=True, exist_ok=True)
    handle = FileLock(str(path / ".lock"), timeout=timeout)
    try:
        handle.acquire()
    except Timeout:
        raise IndexLockedError(f"another `qa index` is writing to {path}: wait for it to finish, "
                               "or pass --wait SECONDS") from None
    return handle
