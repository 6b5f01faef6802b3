"""Index stage for PostgreSQL: each changed file's rows replaced in one transaction, files claimed by one worker."""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qa.backends import explain_backend, load_embedder, resolve_backend
from qa.chunking import Chunker, reader_version
from qa.config import Settings
from qa.embedding import Embedder
from qa.errors import EmptyCorpusError, IndexMismatchError, UnreadableFileError
from qa.index.pgwrite import (claim, create_schema, lock_totals, previous_version, release, replace_rows,
                              storable)
from qa.index.postgres import StoreAddress, connect, graph_sql, read_meta, writing
from qa.index.store import FileEntry, Manifest, check_compatible
from qa.index.sync import IndexProgress, _read_bytes, _size
from qa.loaders import SUPPORTED_EXTENSIONS, SourceFile, discover, load
from qa.records import Chunk, Document, FileFailure, IndexReport

_BATCH = 256
# The HNSW graph is built in one go at the end of the first `qa index` that leaves more than this many chunks,
# not row by row as they are inserted: kept up to date on every insert, it held a first ingest to 77-83 chunks/s;
# built at the end, 101-103 (folder 106-122). Questions need it early: with an exact scan instead, a question over
# 10,000 chunks took 46 ms p50, against 19 (experiments/store_compare.py, all).
GRAPH_ROWS = 1_000


@dataclass
class _Run:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: list[FileFailure] = field(default_factory=list)
    notes: list[FileFailure] = field(default_factory=list)
    claimed_elsewhere: list[str] = field(default_factory=list)
    embedded: int = 0
    embed_seconds: float = 0.0


def index_into_postgres(paths: list[Path], settings: Settings, *, embedder: Embedder | None = None,
                        progress: IndexProgress | None = None, rebuild: bool = False,
                        backend_reason: str = "") -> IndexReport:
    """Bring the index in the database in line with `paths`. Several processes may run this on the same files at
    once: each file is claimed by one of them (an advisory lock), and the others leave it alone."""
    began = time.perf_counter()
    address = StoreAddress.parse(settings.store)
    files, skipped = discover(paths)
    if not files:
        raise EmptyCorpusError(f"no documents to index in {', '.join(map(str, paths))}: add "
                               f"{', '.join(SUPPORTED_EXTENSIONS)} files")
    conn = connect(address)
    with contextlib.closing(conn), writing(address):
        if not rebuild:
            return _index(conn, address, files, skipped, paths, settings, embedder, progress, backend_reason, began)
        # Built beside the old index and swapped in at the end: until then the old one answers, and a failed or
        # killed rebuild leaves it as it was.
        building = StoreAddress(address.url, f"{address.name}_rebuilding")
        conn.execute(f"DROP SCHEMA IF EXISTS {building.name} CASCADE")
        report = _index(conn, building, files, skipped, paths, settings, embedder, progress, backend_reason, began)
        with conn.transaction():
            conn.execute(f"DROP SCHEMA IF EXISTS {address.name} CASCADE")
            conn.execute(f"ALTER SCHEMA {building.name} RENAME TO {address.name}")
        return dataclasses.replace(report, index_dir=str(address))


def _index(conn, address: StoreAddress, files: list[SourceFile], skipped: list[FileFailure], paths: list[Path],
           settings: Settings, embedder: Embedder | None, progress: IndexProgress | None, backend_reason: str,
           began: float) -> IndexReport:
    name = address.name
    meta = read_meta(conn, name)
    recorded = str(meta["model"]["backend"]) if meta else None
    backend = resolve_backend(settings, recorded) if embedder is None else embedder.backend
    wanted = {"name": embedder.name if embedder else settings.model_name, "backend": backend}
    why = (str(meta["model"].get("backend_reason", "")) if meta and recorded == backend else "") or backend_reason
    if not why and embedder is None:
        why = explain_backend(settings, recorded).reason
    if meta is not None:
        _check(meta, wanted, settings, address)
    state = {"embedder": embedder, "ready": meta is not None, "checked": False}

    def model(conn) -> Embedder:
        if state["embedder"] is None:
            state["embedder"] = load_embedder(settings.model_path, settings.model_name, backend,
                                              settings.cache_dir)
        loaded = state["embedder"]
        if not state["ready"]:  # the schema is made by the first file, when the vectors' width is known
            info = {"name": loaded.name, "backend": loaded.backend, "dim": loaded.dim,
                    **({"backend_reason": why} if why else {})}
            create_schema(conn, name, info, settings)
            state["ready"] = True
        if not state["checked"]:  # with what was loaded, and against what another worker may have just made
            _check(read_meta(conn, name), {"name": loaded.name, "backend": loaded.backend}, settings, address)
            state["checked"] = True
        return loaded

    chunker = Chunker.for_settings(settings)
    run = _Run()
    with contextlib.closing(_Writer(conn, connect(address), name, settings, model, run, progress)) as writer:
        for number, file in enumerate(files, 1):
            if progress:
                progress("read", number, len(files))
            read = _read(conn, name, file, settings, chunker, run)
            if read is not None:
                writer.add(read)
        writer.finish()
    if not (run.added or run.changed or run.unchanged or run.claimed_elsewhere):
        raise EmptyCorpusError(f"none of the files in {', '.join(map(str, paths))} could be read: see the "
                               "reasons above; the existing index is unchanged")
    gone = set(dict(conn.execute(f"SELECT source, 1 FROM {name}.documents").fetchall())) if state["ready"] else set()
    removed = sorted(gone - {f.source for f in files})
    for source in removed:  # each in its own transaction, like a changed file
        with conn.transaction():
            lock_totals(conn, name)
            replace_rows(conn, name, source, None, [], None, None)
    total = int(conn.execute(f"SELECT chunks FROM {name}.totals").fetchone()[0]) if state["ready"] else 0
    if total > GRAPH_ROWS:
        _build_graph(conn, name)
    used = state["embedder"]
    return IndexReport(str(address), tuple(run.added), tuple(run.changed), tuple(removed),
                       tuple(run.unchanged + run.claimed_elsewhere), tuple(run.failed), tuple(skipped),
                       tuple(run.notes), run.embedded, total, time.perf_counter() - began,
                       {"embed_seconds": run.embed_seconds, "claimed_elsewhere": len(run.claimed_elsewhere)},
                       used.backend if used else backend, why)


def _build_graph(conn, name: str) -> None:
    """The HNSW graph, built once over all rows (then kept up to date by PostgreSQL on every insert)."""
    import psycopg

    if conn.execute("SELECT to_regclass(%s)", (f"{name}.chunks_embedding",)).fetchone()[0] is not None:
        return
    conn.execute("SET maintenance_work_mem = '1GB'")  # the graph built in memory: pgvector warns, and slows, below
    try:
        conn.execute(graph_sql(name))
    except (psycopg.errors.DuplicateTable, psycopg.errors.UniqueViolation):
        pass  # another worker built it at the same moment


def _check(meta: dict, wanted: dict[str, object], settings: Settings, address: StoreAddress) -> None:
    check_compatible(Manifest(0, dict(meta["model"]), dict(meta["settings"]), {}, 0, 0.0, dict(meta["bm25"])),
                     wanted, settings.chunk_settings(), address, flag="--store")
    if meta["bm25"] != settings.bm25_settings():
        raise IndexMismatchError(f"the index in {address} was built with BM25 settings {json.dumps(meta['bm25'])}:"
                                 f" rebuild it with `qa index --rebuild --store {address}`")


@dataclass(frozen=True)
class _File:
    """A file read and chunked, claimed by this worker until its rows are written."""

    key: str
    previous: tuple[str, str] | None
    entry: FileEntry
    document: Document
    chunks: list[Chunk]


def _read(conn, name: str, file: SourceFile, settings: Settings, chunker: Chunker, run: _Run) -> _File | None:
    """Claim, read and chunk one file; None when another worker has it, it is unchanged, or it failed."""
    key = f"docqa-file:{name}:{file.source}"
    if not claim(conn, key):
        run.claimed_elsewhere.append(file.source)  # another worker is indexing this file now
        return None
    previous = previous_version(conn, name, file.source)
    try:
        _size(file, settings.max_file_bytes)
        data = _read_bytes(file, settings.max_file_bytes)
        sha, reader = hashlib.sha256(data).hexdigest(), reader_version(file.path)
        if previous is not None and previous == (sha, reader):
            run.unchanged.append(file.source)
            release(conn, key)
            return None
        document = load(file.path, file.source, data)
        document = dataclasses.replace(document, text=storable(document.text))
        chunks = chunker.chunk(document)
        if not chunks:
            raise UnreadableFileError("no sentences found in the file")
    except UnreadableFileError as exc:
        kept = " (the previously indexed version is kept)" if previous is not None else ""
        run.failed.append(FileFailure(file.source, f"{exc}{kept}"))
        release(conn, key)
        return None
    text_sha = hashlib.sha256(document.text.encode("utf-8")).hexdigest()
    entry = FileEntry(sha, len(data), len(chunks), text_sha, document.page_starts, reader, document.notes)
    return _File(key, previous, entry, document, chunks)


class _Writer:
    """Two threads behind the caller, who reads and chunks the next files meanwhile: one embeds several small
    files' chunks in one model call, the other writes them, on a connection of its own, one transaction for the
    files of one call (each file's rows are replaced whole in it, or not at all)."""

    def __init__(self, claims, conn, name: str, settings: Settings, model: Callable, run: _Run,
                 progress: IndexProgress | None) -> None:
        self._claims, self._conn, self._name, self._settings = claims, conn, name, settings
        self._model, self._run, self._progress = model, run, progress
        # At most two groups wait at each stage: memory holds a few batches, whatever the size of the corpus.
        self._embeds: queue.Queue[list[_File] | None] = queue.Queue(maxsize=2)
        self._writes: queue.Queue[tuple | None] = queue.Queue(maxsize=2)
        self._group: list[_File] = []
        self._threads: list[threading.Thread] = []
        self._error: BaseException | None = None
        self.queued = self.done = 0

    def add(self, file: _File) -> None:
        if self._error is not None:
            raise self._error
        self._group.append(file)
        self.queued += len(file.chunks)
        if sum(len(f.chunks) for f in self._group) >= _BATCH:
            self._put(self._group)
            self._group = []

    def _put(self, group: list[_File] | None) -> None:
        if not self._threads:
            self._threads = [threading.Thread(target=self._embed_stage, name="qa-pg-embed", daemon=True),
                             threading.Thread(target=self._write_stage, name="qa-pg-write", daemon=True)]
            for thread in self._threads:
                thread.start()
        self._embeds.put(group)

    def _embed_stage(self) -> None:
        while (group := self._embeds.get()) is not None:
            try:
                if self._error is None:
                    self._writes.put((group, *self._embed(group)))
                    continue
            except BaseException as exc:  # noqa: BLE001 (re-raised in the caller's thread)
                self._error = exc
            self._release(group)
        self._writes.put(None)

    def _write_stage(self) -> None:
        while (item := self._writes.get()) is not None:
            group, vectors, sentences = item
            try:
                if self._error is None:
                    self._write(group, vectors, sentences)
            except BaseException as exc:  # noqa: BLE001
                self._error = exc
            finally:
                self._release(group)

    def _release(self, group: list[_File]) -> None:
        for file in group:
            release(self._claims, file.key)

    def _embed(self, group: list[_File]) -> tuple[np.ndarray, np.ndarray]:
        embedder = self._model(self._conn)
        chunks = [c for f in group for c in f.chunks]
        began = time.perf_counter()
        vectors, sentences = [], []
        for at in range(0, len(chunks), _BATCH):
            part = chunks[at : at + _BATCH]
            v, s = embedder.encode_spans([c.index_text for c in part], [c.index_sentences for c in part])
            vectors.append(v)
            sentences.append(s)
            if self._progress:
                self._progress("embed", self.done + at + len(part), self.queued)
        self._run.embed_seconds += time.perf_counter() - began
        self.done += len(chunks)
        return np.concatenate(vectors), np.concatenate(sentences)

    def _write(self, group: list[_File], vectors: np.ndarray, sentences: np.ndarray) -> None:
        row = sentence = 0
        with self._conn.transaction():
            lock_totals(self._conn, self._name)
            for file in group:
                rows, spans = len(file.chunks), sum(len(c.sentences) for c in file.chunks)
                replace_rows(self._conn, self._name, file.document.source, file.entry, file.chunks,
                             vectors[row : row + rows], sentences[sentence : sentence + spans], file.document.text,
                             self._settings)
                row, sentence = row + rows, sentence + spans
        for file in group:
            self._run.embedded += len(file.chunks)
            self._run.notes += [FileFailure(file.document.source, note) for note in file.document.notes]
            (self._run.changed if file.previous is not None else self._run.added).append(file.document.source)

    def finish(self) -> None:
        """Wait until every file added is written."""
        if self._group:
            self._put(self._group)
            self._group = []
        self.close()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        if self._threads and self._threads[0].is_alive():
            self._embeds.put(None)
        for thread in self._threads:
            thread.join()
        self._conn.close()


