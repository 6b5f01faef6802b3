"""Index stage: bring an index folder in line with the given files, embedding only what is new or changed."""
from __future__ import annotations

import hashlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from qa.chunking import Chunker, reader_version, same_chunker
from qa.config import Settings
from qa.backends import explain_backend, load_embedder, resolve_backend
from qa.embedding import Embedder
from qa.errors import EmptyCorpusError, UnreadableFileError
from qa.loaders import (SUPPORTED_EXTENSIONS, SourceFile, discover, file_sha256, load, reading,
                        stream_text, streams)
from qa.records import Chunk, FileFailure, IndexReport
from qa.index.store import FORMAT_VERSION, FileEntry, Manifest, check_compatible, read_index, read_manifest
from qa.index.files import TextFile, save_text
from qa.index.writer import GenerationWriter, Mark, lock

# progress(stage, done, total): stage is "read" (files) or "embed" (chunks).
IndexProgress = Callable[[str, int, int], None]


def model_info(settings: Settings, embedder: Embedder | None = None, recorded: Manifest | None = None
               ) -> dict[str, object]:
    """What the manifest records about the model; with no embedder, the backend `settings` resolve to."""
    if embedder is not None:
        return {"name": embedder.name, "backend": embedder.backend}
    backend = resolve_backend(settings, str(recorded.model.get("backend")) if recorded else None)
    return {"name": settings.model_name, "backend": backend}


def index_paths(paths: list[Path], settings: Settings, *, embedder: Embedder | None = None,
                progress: IndexProgress | None = None, rebuild: bool = False, wait: float = 0.0,
                backend_reason: str = "") -> IndexReport:
    """Index `paths` (files or folders) into `settings.index_dir`. The index then holds exactly these files."""
    began = time.perf_counter()
    path = settings.index_dir
    files, skipped = discover(paths)
    if not files:
        raise EmptyCorpusError(f"no documents to index in {', '.join(map(str, paths))}: add "
                               f"{', '.join(SUPPORTED_EXTENSIONS)} files")
    held = lock(path, wait)
    embedding: _Embedding | None = None
    writer: GenerationWriter | None = None
    try:
        old = None if rebuild else read_manifest(path)
        wanted = model_info(settings, embedder, old)
        # Why this backend, kept while the index keeps it: the measured choice outlives the runs that reuse it.
        same = old is not None and old.model.get("backend") == wanted["backend"]
        why = (str(old.model.get("backend_reason", "")) if same else "") or backend_reason
        if not why and embedder is None:  # asked with the index's backend: a kept one is explained as kept
            why = explain_backend(settings, str(old.model.get("backend")) if old else None).reason
        if old is not None:
            check_compatible(old, wanted, settings.chunk_settings(), path)
        old_data = read_index(path, searchable=False) if old is not None else None

        def load_model() -> Embedder:
            loaded = embedder or load_embedder(settings.model_path, settings.model_name, str(wanted["backend"]),
                                               settings.cache_dir)
            if old is not None:
                check_compatible(old, model_info(settings, loaded), settings.chunk_settings(), path)
            return loaded

        # New rows go straight to the new generation's files: chunk rows from this thread, vectors from the
        # embedding thread. Memory holds a block of text and a few batches, not the corpus.
        writer = GenerationWriter(path, settings.bm25_settings())
        embedding = _Embedding(load_model, writer, (lambda d, t: progress("embed", d, t)) if progress else None)
        chunker = Chunker.for_settings(settings)
        entries: dict[str, FileEntry] = {}
        reused: set[str] = set()  # re-extracted by a newer reader to the very same chunks: old rows kept

        def old_ids(source: str) -> list[str]:
            return [c.id for c in old_data.document_chunks(source)] if old_data is not None else []

        added, changed, unchanged, failed, notes = [], [], [], [], []
        new_chunks = 0
        for number, file in enumerate(files, 1):
            if progress:
                progress("read", number, len(files))
            previous = old.files.get(file.source) if old else None
            mark = writer.mark()
            try:
                entry = _index_file(file, previous, settings.max_file_bytes, chunker, writer, embedding, reused,
                                    old_ids)
            except UnreadableFileError as exc:
                writer.rollback(mark)  # a file that failed midway leaves none of its rows behind
                embedding.truncate(mark)
                reason = str(exc)
                if previous is not None:  # losing nothing: the last good version stays searchable
                    entries[file.source] = previous
                    reason += " (the previously indexed version is kept)"
                failed.append(FileFailure(file.source, reason))
                continue
            entries[file.source] = entry or previous
            if entry is None or file.source in reused:
                unchanged.append(file.source)
            else:
                notes += [FileFailure(file.source, note) for note in entry.notes]
                new_chunks += entry.chunks
                (changed if previous is not None else added).append(file.source)
        removed = sorted(set(old.files) - set(entries)) if old else []

        bm25_changed = old is not None and old.bm25 != settings.bm25_settings()
        # An older format is written again as the current one, its rows copied: nothing is embedded.
        upgrade = old is not None and old.format_version != FORMAT_VERSION
        if old is not None and not (added or changed or removed or bm25_changed or reused or upgrade):
            return IndexReport(str(path), unchanged=tuple(unchanged), failed=tuple(failed), skipped=tuple(skipped),
                               total_chunks=old.chunk_count, seconds=time.perf_counter() - began,
                               backend=str(wanted["backend"]), backend_reason=why)
        if not entries:
            raise EmptyCorpusError(f"none of the files in {', '.join(map(str, paths))} could be read: "
                                   "see the reasons above; the existing index is unchanged")
        embedding.finish()
        if old_data is not None:  # the rows of files that did not change, copied after the new ones
            kept = {s for s, e in entries.items() if e is old.files.get(s)} | reused
            keep = np.zeros(len(old_data.chunks), dtype=bool)
            for source in kept:
                rows = old_data.source_rows(source)
                keep[rows.start : rows.stop] = True
            writer.copy_rows(old_data, keep)
        embedder = embedding.embedder
        dim = embedder.dim if embedder else int(old.model.get("dim", 0)) if old else 0
        manifest = Manifest(
            generation=writer.gen,
            model={**(model_info(settings, embedder) if embedder else wanted), "dim": dim,
                   **({"backend_reason": why} if why else {})},
            settings=settings.chunk_settings(),
            bm25=settings.bm25_settings(),
            files=entries,
            chunk_count=writer.rows,
            updated=time.time(),
        )
        writer.commit(manifest)
        writer = None
        return IndexReport(str(path), tuple(added), tuple(changed), tuple(removed), tuple(unchanged), tuple(failed),
                           tuple(skipped), tuple(notes), new_chunks, manifest.chunk_count,
                           time.perf_counter() - began, {"embed_seconds": embedding.seconds},
                           str(manifest.model["backend"]), why)
    finally:
        if embedding is not None:
            embedding.close()
        if writer is not None:
            writer.discard()
        held.release()


def _index_file(file: SourceFile, previous: FileEntry | None, limit: int, chunker: Chunker,
                writer: GenerationWriter, embedding: _Embedding, reused: set[str],
                old_ids: Callable[[str], list[str]]) -> FileEntry | None:
    """Read, chunk and queue one file; None when its bytes are those already indexed by the same reader and
    chunker. A file that a newer reader or chunker turns into the same chunks as before keeps its rows: it is
    added to `reused`."""
    size = _size(file, limit)
    reader = reader_version(file.path)
    if streams(file.path, size):
        # Too large to hold: hashed in one pass, then (if changed) decoded, chunked and saved block by block.
        if previous is not None and previous.sha256 == file_sha256(file.path) and previous.extractor == reader:
            return None
        digest, count, text = hashlib.sha256(), 0, TextFile(writer.path)
        read = [0]

        def on_bytes(data: bytes) -> None:
            digest.update(data)
            read[0] += len(data)

        try:
            for chunks in chunker.chunk_stream(file.source, _tee(stream_text(file.path, on_bytes), text.write)):
                writer.add_rows(chunks)
                embedding.add(chunks)
                count += len(chunks)
            if not count:
                raise UnreadableFileError("no sentences found in the file")
        except BaseException:
            text.discard()
            raise
        return FileEntry(digest.hexdigest(), read[0], count, text.commit(), extractor=reader)
    data = _read_bytes(file, limit)
    sha = hashlib.sha256(data).hexdigest()
    if previous is not None and previous.sha256 == sha and previous.extractor == reader:
        return None
    document = load(file.path, file.source, data)
    text_sha = save_text(writer.path, document.text)
    same_text = (previous is not None and previous.sha256 == sha and previous.text_sha256 == text_sha
                 and previous.page_starts == document.page_starts and not document.page_labels)
    if same_text and same_chunker(previous.extractor):
        reused.add(file.source)
        return FileEntry(sha, len(data), previous.chunks, text_sha, document.page_starts, reader, document.notes)
    chunks = chunker.chunk(document)
    if not chunks:
        raise UnreadableFileError("no sentences found in the file")
    entry = FileEntry(sha, len(data), len(chunks), text_sha, document.page_starts, reader, document.notes)
    if same_text and [c.id for c in chunks] == old_ids(file.source):  # the chunker changed, not these chunks
        reused.add(file.source)
        return entry
    writer.add_rows(chunks)
    embedding.add(chunks)  # embedded in the background while the next files are read
    return entry


def _tee(blocks: Iterator[str], sink: Callable[[str], None]) -> Iterator[str]:
    for block in blocks:
        sink(block)
        yield block


class _Embedding:
    """Embeds chunks in a thread while the caller reads and chunks the next files: the model's work (native
    code, which releases the GIL) overlaps with parsing instead of waiting for all of it. Vectors go to the
    writer as each batch is done, in the order the chunks were added."""

    BATCH = 256

    def __init__(self, load: Callable[[], Embedder], writer: GenerationWriter,
                 progress: Callable[[int, int], None] | None) -> None:
        self._load, self._writer, self._progress = load, writer, progress
        # Whole batches are queued, at most two ahead: the model never waits for the reader to fill one, and
        # memory holds three batches at most, whatever the size of the files.
        self._queue: queue.Queue[list[Chunk] | Mark | None] = queue.Queue(maxsize=2)
        self._pending: list[Chunk] = []
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.embedder: Embedder | None = None
        self.seconds = 0.0
        self.queued = self.done = 0

    def add(self, chunks: list[Chunk]) -> None:
        self._pending.extend(chunks)
        self.queued += len(chunks)
        while len(self._pending) >= self.BATCH:
            self._put(self._pending[: self.BATCH])
            self._pending = self._pending[self.BATCH :]

    def _put(self, item: list[Chunk] | Mark | None) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="qa-embed", daemon=True)
            self._thread.start()
        self._queue.put(item)

    def truncate(self, mark: Mark) -> None:
        """Drop the rows from `mark` on, whether still pending here, queued or already written."""
        pending_from = self.queued - len(self._pending)
        if mark.rows >= pending_from:
            self._pending = self._pending[: mark.rows - pending_from]
        else:
            self._pending = []
            self._put(mark)  # after the batches queued before it: the thread truncates what they wrote
        self.queued = mark.rows

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is not None:
                continue  # drain, so that the reader never blocks on a full queue
            if isinstance(item, Mark):
                self._writer.truncate_vectors(item)
                self.done = min(self.done, item.rows)
                continue
            try:
                began = time.perf_counter()
                self.embedder = self.embedder or self._load()
                vectors, sentences = self.embedder.encode_spans([c.index_text for c in item],
                                                                [c.index_sentences for c in item])
                self.seconds += time.perf_counter() - began
                self._writer.add_vectors(vectors, sentences)
                self.done += len(item)
                if self._progress:
                    self._progress(self.done, self.queued)
            except BaseException as exc:  # noqa: BLE001 (re-raised in the caller's thread by finish)
                self._error = exc

    def finish(self) -> None:
        """Wait until every chunk added has its vectors written."""
        if self._pending:
            self._put(self._pending)
            self._pending = []
        self.close()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


def _size(file: SourceFile, limit: int) -> int:
    with reading():
        size = file.path.stat().st_size
    if size > limit:
        raise UnreadableFileError(f"too large ({size / 2**20:.0f} MiB > {limit / 2**20:.0f} MiB): split it "
                                  "or raise QA_MAX_FILE_MB")
    return size


def _read_bytes(file: SourceFile, limit: int) -> bytes:
    with reading(), open(file.path, "rb") as handle:
        return handle.read(limit + 1)
