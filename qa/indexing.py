"""Index stage: bring an index folder in line with the given files, embedding only what is new or changed."""
from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from qa.chunking import Chunker
from qa.config import Settings
from qa.embedding import Embedder, load_embedder
from qa.errors import EmptyCorpusError, UnreadableFileError
from qa.loaders import SUPPORTED_EXTENSIONS, SourceFile, discover, load
from qa.records import Chunk, FileFailure, IndexReport
from qa.store import (FileEntry, Manifest, check_compatible, lock, next_generation, read_index, read_manifest,
                      save_text, write_index)

# progress(stage, done, total): stage is "read" (files) or "embed" (chunks).
IndexProgress = Callable[[str, int, int], None]


def model_info(settings: Settings, embedder: Embedder | None = None) -> dict[str, object]:
    info: dict[str, object] = {"name": settings.model_name, "backend": "torch"}
    if embedder is not None:
        info = {"name": embedder.name, "backend": embedder.backend}
    return info


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
    try:
        old = None if rebuild else read_manifest(path)
        if old is not None:
            check_compatible(old, model_info(settings, embedder), settings.chunk_settings(), path)
        old_data = read_index(path) if old is not None else None
        old_rows: dict[str, list[int]] = {}
        if old_data is not None:
            for row, chunk in enumerate(old_data.chunks):
                old_rows.setdefault(chunk.source, []).append(row)

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
        embed_began = time.perf_counter()
        vectors_new = np.zeros((0, 0), dtype=np.float32)
        if new_chunks:
            embedder = embedder or load_embedder(settings.model_path, settings.model_name)
            if old is not None:
                check_compatible(old, model_info(settings, embedder), settings.chunk_settings(), path)
            vectors_new = embedder.encode([c.index_text for c in new_chunks],
                                          (lambda d, t: progress("embed", d, t)) if progress else None)
        embed_seconds = time.perf_counter() - embed_began

        chunks_out: list[Chunk] = []
        parts: list[np.ndarray] = []
        offset = 0
        for source in sorted(entries):
            if source in fresh:
                count = len(fresh[source])
                chunks_out.extend(fresh[source])
                parts.append(vectors_new[offset : offset + count])
                offset += count
            else:
                rows = old_rows[source]
                chunks_out.extend(old_data.chunks[r] for r in rows)
                parts.append(old_data.vectors[rows])
        vectors = np.concatenate(parts).astype(np.float32, copy=False)
        manifest = Manifest(
            generation=next_generation(path),
            model={**model_info(settings, embedder), "dim": int(vectors.shape[1])},
            settings=settings.chunk_settings(),
            bm25=settings.bm25_settings(),
            files=entries,
            chunk_count=len(chunks_out),
            updated=time.time(),
        )
        write_index(path, manifest, chunks_out, vectors)
        return IndexReport(str(path), tuple(added), tuple(changed), tuple(removed), tuple(unchanged), tuple(failed),
                           tuple(skipped), len(new_chunks), len(chunks_out), time.perf_counter() - began,
                           {"embed_seconds": embed_seconds})
    finally:
        held.release()


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
