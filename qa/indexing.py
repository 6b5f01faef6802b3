"""Index stage: bring an index folder in line with the given files, embedding only what is new or changed."""
from __future__ import annotations

import hashlib
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from qa.chunking import Chunker
from qa.config import Settings
from qa.embedding import Embedder, load_embedder, resolve_backend
from qa.errors import EmptyCorpusError, UnreadableFileError
from qa.loaders import SUPPORTED_EXTENSIONS, SourceFile, discover, load
from qa.records import Chunk, FileFailure, IndexReport
from qa.store import (FileEntry, Manifest, check_compatible, lock, next_generation, read_index, read_manifest,
                      save_text, write_index)

# progress(stage, done, total): stage is "read" (files) or "embed" (chunks).
IndexProgress = Callable[[str, int, int], None]


def model_info(settings: Settings, embedder: Embedder | None = None, recorded: Manifest | None = None
               ) -> dict[str, object]:
    """What the manifest records about the model; with no embedder, the backend `settings` resolve to."""
    if embedder is not None:
        return {"name": embedder.name, "backend": embedder.backend}
    backend = resolve_backend(settings.backend, settings.model_path,
                              str(recorded.model.get("backend")) if recorded else None)
    return {"name": settings.model_name, "backend": backend}


def _sentence_spans(chunk: Chunk) -> list[tuple[int, int]]:
    """The chunk's sentences in the coordinates of the text the model sees (its context comes first)."""
    shift = (len(chunk.context) + 1 if chunk.context else 0) - chunk.start
    return [(begin + shift, end + shift) for begin, end in chunk.sentences]


def index_paths(paths: list[Path], settings: Settings, *, embedder: Embedder | None = None,
                progress: IndexProgress | None = None, rebuild: bool = False, wait: float = 0.0) -> IndexReport:
    """Index `paths` (files or folders) into `settings.index_dir`. The index then holds exactly these files."""
    began = time.perf_counter()
    path = settings.index_dir
    files, skipped = discover(paths)
    if not files:
        raise EmptyCorpusError(f"no documents to index in {', '.join(map(str, paths))}: add "
                               f"{', '.join(SUPPORTED_EXTENSIONS)} files")
    held = lock(path, wait)
    embedding: _Embedding | None = None
    try:
        old = None if rebuild else read_manifest(path)
        wanted = model_info(settings, embedder, old)
        if old is not None:
            check_compatible(old, wanted, settings.chunk_settings(), path)
        old_data = read_index(path, searchable=False) if old is not None else None
        if old_data is not None and old_data.sentence_vectors is None:
            # Made before sentence vectors were kept: embed everything once more, as a rebuild would.
            old, old_data, wanted = None, None, model_info(settings, embedder)
        old_rows: dict[str, list[int]] = {}
        if old_data is not None:
            for row, chunk in enumerate(old_data.chunks):
                old_rows.setdefault(chunk.source, []).append(row)

        def load_model() -> Embedder:
            loaded = embedder or load_embedder(settings.model_path, settings.model_name, str(wanted["backend"]),
                                               settings.cache_dir)
            if old is not None:
                check_compatible(old, model_info(settings, loaded), settings.chunk_settings(), path)
            return loaded

        embedding = _Embedding(load_model, (lambda d, t: progress("embed", d, t)) if progress else None)
        chunker = Chunker(settings.model_path, settings.chunk_tokens, settings.overlap_tokens, settings.title_context)
        entries: dict[str, FileEntry] = {}
        fresh: dict[str, list[Chunk]] = {}
        added, changed, unchanged, failed = [], [], [], []
        for number, file in enumerate(files, 1):
            if progress:
                progress("read", number, len(files))
            previous = old.files.get(file.source) if old else None
            try:
                data = _read_bytes(file, settings.max_file_bytes)
                sha = hashlib.sha256(data).hexdigest()
                if previous is not None and previous.sha256 == sha:
                    entries[file.source] = previous
                    unchanged.append(file.source)
                    continue
                document = load(file.path, file.source, data)
                chunks = chunker.chunk(document)
                if not chunks:
                    raise UnreadableFileError("no sentences found in the file")
            except UnreadableFileError as exc:
                reason = str(exc)
                if previous is not None:  # losing nothing: the last good version stays searchable
                    entries[file.source] = previous
                    reason += " (the previously indexed version is kept)"
                failed.append(FileFailure(file.source, reason))
                continue
            text_sha = save_text(path, document.text)
            entries[file.source] = FileEntry(sha, len(data), len(chunks), text_sha, document.page_starts)
            fresh[file.source] = chunks
            embedding.add(chunks)  # embedded in the background while the next files are read
            (changed if previous is not None else added).append(file.source)
        removed = sorted(set(old.files) - set(entries)) if old else []

        bm25_changed = old is not None and old.bm25 != settings.bm25_settings()
        if old is not None and not (added or changed or removed or bm25_changed):
            return IndexReport(str(path), unchanged=tuple(unchanged), failed=tuple(failed), skipped=tuple(skipped),
                               total_chunks=old.chunk_count, seconds=time.perf_counter() - began)
        if not entries:
            raise EmptyCorpusError(f"none of the files in {', '.join(map(str, paths))} could be read: "
                                   "see the reasons above; the existing index is unchanged")

        new_chunks = [c for chunks in fresh.values() for c in chunks]
        vectors_new, sentences_new = embedding.finish()
        embedder = embedding.embedder

        chunks_out: list[Chunk] = []
        parts: list[np.ndarray] = []
        sentence_parts: list[np.ndarray] = []
        offset = sentence_offset = 0
        for source in sorted(entries):
            if source in fresh:
                count = len(fresh[source])
                sentences = sum(len(c.sentences) for c in fresh[source])
                chunks_out.extend(fresh[source])
                parts.append(vectors_new[offset : offset + count])
                sentence_parts.append(sentences_new[sentence_offset : sentence_offset + sentences])
                offset += count
                sentence_offset += sentences
            else:
                rows = old_rows[source]
                chunks_out.extend(old_data.chunks[r] for r in rows)
                parts.append(old_data.vectors[rows])
                spans = old_data.sentence_rows[rows]  # one gather per file, not one slice per chunk
                sentence_parts.append(old_data.sentence_vectors[np.concatenate(
                    [np.arange(a, b) for a, b in spans]) if len(spans) else []])
        vectors = np.concatenate(parts).astype(np.float32, copy=False)
        manifest = Manifest(
            generation=next_generation(path),
            model={**(model_info(settings, embedder) if embedder else wanted), "dim": int(vectors.shape[1])},
            settings=settings.chunk_settings(),
            bm25=settings.bm25_settings(),
            files=entries,
            chunk_count=len(chunks_out),
            updated=time.time(),
        )
        write_index(path, manifest, chunks_out, vectors, np.concatenate(sentence_parts))
        return IndexReport(str(path), tuple(added), tuple(changed), tuple(removed), tuple(unchanged), tuple(failed),
                           tuple(skipped), len(new_chunks), len(chunks_out), time.perf_counter() - began,
                           {"embed_seconds": embedding.seconds})
    finally:
        if embedding is not None:
            embedding.close()
        held.release()


class _Embedding:
    """Embeds chunks in a thread while the caller reads and chunks the next files: the model's work (native
    code, which releases the GIL) overlaps with parsing instead of waiting for all of it."""

    BATCH = 256

    def __init__(self, load: Callable[[], Embedder], progress: Callable[[int, int], None] | None) -> None:
        self._load, self._progress = load, progress
        self._queue: queue.Queue[list[Chunk] | None] = queue.Queue(maxsize=4)  # bounds what waits in memory
        self._thread: threading.Thread | None = None
        self._parts: list[tuple[np.ndarray, np.ndarray]] = []
        self._error: BaseException | None = None
        self.embedder: Embedder | None = None
        self.seconds = 0.0
        self.queued = self.done = 0

    def add(self, chunks: list[Chunk]) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="qa-embed", daemon=True)
            self._thread.start()
        self.queued += len(chunks)
        self._queue.put(chunks)

    def _run(self) -> None:
        batch: list[Chunk] = []
        while True:
            item = self._queue.get()
            if self._error is not None:
                if item is None:
                    return
                continue  # drain, so that the reader never blocks on a full queue
            batch.extend(item or [])
            if batch and (item is None or len(batch) >= self.BATCH):
                try:
                    began = time.perf_counter()
                    self.embedder = self.embedder or self._load()
                    vectors, sentences = self.embedder.encode_spans([c.index_text for c in batch],
                                                                    [_sentence_spans(c) for c in batch])
                    # Kept as stored (float16): a large file's sentence vectors would otherwise take twice the memory.
                    self._parts.append((vectors, sentences.astype(np.float16)))
                    self.seconds += time.perf_counter() - began
                    self.done += len(batch)
                    if self._progress:
                        self._progress(self.done, self.queued)
                except BaseException as exc:  # noqa: BLE001 (re-raised in the caller's thread by finish)
                    self._error = exc
                batch = []
            if item is None:
                return

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """Every chunk's vector and sentence vectors, in the order added."""
        self.close()
        if self._error is not None:
            raise self._error
        if not self._parts:
            return np.zeros((0, 0), dtype=np.float32), np.zeros((0, 0), dtype=np.float32)
        return np.concatenate([v for v, _ in self._parts]), np.concatenate([s for _, s in self._parts])

    def close(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


def _read_bytes(file: SourceFile, limit: int) -> bytes:
    try:
        size = file.path.stat().st_size
        if size > limit:
            raise UnreadableFileError(f"too large ({size / 2**20:.0f} MiB > {limit / 2**20:.0f} MiB): split it "
                                      "or raise QA_MAX_FILE_MB")
        with open(file.path, "rb") as handle:
            return handle.read(limit + 1)
    except PermissionError:
        raise UnreadableFileError("no permission to read it: fix its permissions (chmod +r)") from None
    except FileNotFoundError:
        raise UnreadableFileError("it disappeared while indexing") from None
    except IsADirectoryError:
        raise UnreadableFileError("is a folder") from None
    except OSError as exc:
        raise UnreadableFileError(f"cannot read it: {exc.strerror}") from None
