"""Store stage: the on-disk index (manifest, chunk table, vectors, BM25, document texts); atomic, versioned writes."""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qa.errors import IndexCorruptError, IndexLockedError, IndexMismatchError, IndexMissingError, QAError
from qa.records import Chunk

FORMAT_VERSION = 1
# Dense search: exact below this many chunks, HNSW above (recall@10 against exact: `qa bench`; efSearch 512
# gave 0.998 at 100k and 0.949 at 1M, 256 gave 0.994 and 0.935).
EXACT_SEARCH_LIMIT = 50_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 64
HNSW_EF_SEARCH = 512
MANIFEST = "manifest.json"
# Files of one generation; the manifest names the generation it belongs to, so uncommitted files are garbage.
_GENERATION_FILE = re.compile(r"^(chunks|vectors|sentences|bm25|dense)\.(\d+)(\.jsonl|\.npy|\.faiss)?$")


@dataclass(frozen=True)
class FileEntry:
    """One indexed file: the hash of its bytes, and where its extracted text is kept."""

    sha256: str
    bytes: int
    chunks: int
    text_sha256: str
    page_starts: tuple[int, ...] = ()


@dataclass(frozen=True)
class Manifest:
    generation: int
    model: dict[str, object]
    settings: dict[str, object]
    files: dict[str, FileEntry]
    chunk_count: int
    updated: float
    bm25: dict[str, object] = field(default_factory=dict)

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
                          "page_starts": list(f.page_starts)} for s, f in sorted(self.files.items())},
        }

    @staticmethod
    def from_json(data: dict) -> Manifest:
        files = {s: FileEntry(f["sha256"], f["bytes"], f["chunks"], f["text_sha256"], tuple(f.get("page_starts", ())))
                 for s, f in data["files"].items()}
        settings = dict(data["settings"])
        # Manifests written before BM25's parameters had their own entry kept them among the chunk settings.
        bm25 = data.get("bm25") or {"k1": settings.pop("bm25_k1", 1.2), "b": settings.pop("bm25_b", 0.75)}
        return Manifest(data["generation"], data["model"], settings, files, data["chunk_count"],
                        data.get("updated", 0.0), bm25)


@dataclass
class IndexData:
    """A loaded index: chunks and vectors share row numbers; the FAISS and BM25 indexes are built over them."""

    path: Path
    manifest: Manifest
    chunks: list[Chunk]
    vectors: np.ndarray
    dense: object  # faiss.Index
    bm25: object  # bm25s.BM25
    # One row per sentence of every chunk, in chunk order (float16; None in indexes made before they were kept).
    sentence_vectors: np.ndarray | None = None
    sentence_rows: np.ndarray | None = None  # (start, stop) per chunk: its rows in sentence_vectors

    def chunk_sentence_vectors(self, row: int) -> np.ndarray | None:
        if self.sentence_vectors is None or self.sentence_rows is None:
            return None
        start, stop = self.sentence_rows[row]
        return self.sentence_vectors[start:stop]

    def document_text(self, source: str) -> str:
        entry = self.manifest.files[source]
        return (self.path / "docs" / f"{entry.text_sha256}.txt").read_text(encoding="utf-8", errors="surrogatepass")


def _bm25s():
    import bm25s

    # bm25s sets its own logger to DEBUG on import; put it back under the application's logging settings.
    logging.getLogger("bm25s").setLevel(logging.NOTSET)
    return bm25s


@functools.lru_cache(maxsize=1)
def _stemmer():  # -> Stemmer.Stemmer; built once, not for every question
    import Stemmer

    return Stemmer.Stemmer("english")


def bm25_tokenize(texts: list[str]) -> list[list[str]]:
    """Lower-cased, English-stemmed word tokens without stop words; the same for chunks and questions."""
    return _bm25s().tokenize(texts, stopwords="en", stemmer=_stemmer(), return_ids=False, show_progress=False)


def read_manifest(path: Path) -> Manifest | None:
    file = path / MANIFEST
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise IndexCorruptError(f"{file} is unreadable ({exc}): rebuild with `qa index --rebuild --index {path}`") from None
    if data.get("format_version") != FORMAT_VERSION:
        raise IndexMismatchError(f"the index at {path} has format {data.get('format_version')}, this qa reads "
                                 f"{FORMAT_VERSION}: rebuild it with `qa index --rebuild --index {path}`")
    return Manifest.from_json(data)


def check_compatible(manifest: Manifest, model: dict[str, object], settings: dict[str, object], path: Path) -> None:
    """Refuse an index whose vectors or chunks were made differently: mixing them would give wrong answers."""
    for label, stored_all, wanted in (("model", manifest.model, model), ("chunk settings", manifest.settings, settings)):
        stored = {key: stored_all.get(key) for key in wanted}
        if stored != wanted or set(stored_all) - set(wanted) - {"dim"}:
            raise IndexMismatchError(f"the index at {path} was built with {label} {json.dumps(stored)}, not "
                                     f"{json.dumps(wanted)}: rebuild it with `qa index --rebuild --index {path}`")


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
    chunks = []
    with open(path / f"chunks.{gen}.jsonl", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            chunks.append(Chunk(row["id"], row["source"], row["start"], row["end"], row["text"], row["page"],
                                row["line"], tuple(tuple(s) for s in row["sentences"]), row.get("context", "")))
    try:
        vectors = np.load(path / f"vectors.{gen}.npy", allow_pickle=False)
    except ValueError as exc:
        raise IndexCorruptError(f"vectors of the index at {path} are damaged ({exc}): rebuild with "
                                f"`qa index --rebuild --index {path}`") from None
    sentence_vectors, sentence_rows = None, None
    if (path / f"sentences.{gen}.npy").is_file():
        sentence_vectors = np.load(path / f"sentences.{gen}.npy", allow_pickle=False, mmap_mode="r")
        counts = np.array([len(c.sentences) for c in chunks], dtype=np.int64)
        ends = np.cumsum(counts)
        sentence_rows = np.stack([ends - counts, ends], axis=1)
        if len(sentence_vectors) != (ends[-1] if len(ends) else 0):
            sentence_vectors = None  # unusable, not fatal: the sentences get embedded when asked about
    if len(vectors) != len(chunks) or len(chunks) != manifest.chunk_count:
        raise IndexCorruptError(f"the index at {path} is inconsistent: rebuild with `qa index --rebuild --index {path}`")
    if not (path / f"bm25.{gen}").is_dir():
        raise FileNotFoundError(path / f"bm25.{gen}")
    dense = _load_dense(path, gen, vectors) if searchable else None
    bm25 = _bm25s().BM25.load(str(path / f"bm25.{gen}"), mmap=False, load_corpus=False) if searchable else None
    return IndexData(path, manifest, chunks, vectors, dense, bm25, sentence_vectors,
                     sentence_rows if sentence_vectors is not None else None)


def _load_dense(path: Path, gen: int, vectors: np.ndarray):  # -> faiss.Index
    import faiss

    dense_file = path / f"dense.{gen}.faiss"
    if not dense_file.is_file():
        return build_dense(vectors, exact_limit=len(vectors))
    # An approximate index, built when the index was written (see build_dense).
    dense = faiss.read_index(str(dense_file))
    if dense.ntotal != len(vectors):
        raise IndexCorruptError(f"the index at {path} is inconsistent: rebuild with `qa index --rebuild --index {path}`")
    faiss.ParameterSpace().set_index_parameter(dense, "efSearch", HNSW_EF_SEARCH)
    return dense


def build_dense(vectors: np.ndarray, exact_limit: int | None = None):  # -> faiss.Index
    """Exact inner-product search up to `exact_limit` vectors; beyond, an HNSW graph: exact search grows
    linearly (about 6 ms a question at 100k, 55 ms at 1M on two cores), HNSW stays under a millisecond."""
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if len(vectors) <= (EXACT_SEARCH_LIMIT if exact_limit is None else exact_limit):
        dense = faiss.IndexFlatIP(vectors.shape[1])
    else:
        dense = faiss.IndexHNSWFlat(vectors.shape[1], HNSW_M, faiss.METRIC_INNER_PRODUCT)
        dense.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        dense.hnsw.efSearch = HNSW_EF_SEARCH
    dense.add(vectors)
    return dense


def save_text(path: Path, text: str) -> str:
    """Keep a document's extracted text under its hash (for context and citations); returns the hash."""
    data = text.encode("utf-8", "surrogatepass")
    sha = hashlib.sha256(data).hexdigest()
    target = path / "docs" / f"{sha}.txt"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        # Not flushed one by one (two fsyncs per file dominated indexing many small files): write_index
        # flushes everything once before the manifest that refers to these texts is committed.
        _write_atomic(target, data, sync=False)
    return sha


def next_generation(path: Path) -> int:
    """A generation number no file in the folder uses yet, committed or left over from a crash."""
    used = [int(m.group(2)) for e in path.iterdir() if (m := _GENERATION_FILE.match(e.name))] if path.is_dir() else []
    try:
        manifest = read_manifest(path)
    except QAError:  # a damaged or foreign manifest is being replaced by a rebuild
        manifest = None
    return max([0, *used, manifest.generation if manifest else 0]) + 1


def write_index(path: Path, manifest: Manifest, chunks: list[Chunk], vectors: np.ndarray,
                sentence_vectors: np.ndarray | None = None) -> None:
    """Write a new generation next to the old one, then switch to it by replacing the manifest atomically."""
    bm25s = _bm25s()

    path.mkdir(parents=True, exist_ok=True)
    gen = manifest.generation
    with open(path / f"chunks.{gen}.jsonl", "w", encoding="utf-8") as handle:
        for c in chunks:
            handle.write(json.dumps({"id": c.id, "source": c.source, "start": c.start, "end": c.end, "page": c.page,
                                     "line": c.line, "sentences": c.sentences, "text": c.text,
                                     "context": c.context}, ensure_ascii=False))
            handle.write("\n")
        _sync(handle)
    with open(path / f"vectors.{gen}.npy", "wb") as handle:
        np.save(handle, np.ascontiguousarray(vectors, dtype=np.float32), allow_pickle=False)
        _sync(handle)
    if len(vectors) > EXACT_SEARCH_LIMIT:  # built once here, not at every start: it takes minutes at a million
        import faiss

        faiss.write_index(build_dense(vectors), str(path / f"dense.{gen}.faiss.tmp"))
        os.replace(path / f"dense.{gen}.faiss.tmp", path / f"dense.{gen}.faiss")
        _sync_path(path / f"dense.{gen}.faiss")
    if sentence_vectors is not None:
        # float16 halves the largest file; a sentence's cosine moves by about 1e-3, far below any score gap we use.
        with open(path / f"sentences.{gen}.npy", "wb") as handle:
            np.save(handle, np.ascontiguousarray(sentence_vectors, dtype=np.float16), allow_pickle=False)
            _sync(handle)
    bm25_dir = path / f"bm25.{gen}"
    shutil.rmtree(bm25_dir, ignore_errors=True)
    retriever = bm25s.BM25(k1=float(manifest.bm25["k1"]), b=float(manifest.bm25["b"]))
    retriever.index(bm25_tokenize([c.index_text for c in chunks]), show_progress=False)
    retriever.save(str(bm25_dir))
    for file in bm25_dir.iterdir():
        _sync_path(file)
    _sync_path(bm25_dir)
    _sync_path(path)
    os.sync()  # the document texts written by save_text, in one flush
    _write_atomic(path / MANIFEST, json.dumps(manifest.to_json(), indent=1, ensure_ascii=False).encode())
    collect_garbage(path, manifest)


def collect_garbage(path: Path, manifest: Manifest) -> None:
    """Delete files of other generations, half-written temporaries and texts no file refers to."""
    keep_texts = {f"{f.text_sha256}.txt" for f in manifest.files.values()}
    for entry in path.iterdir():
        match = _GENERATION_FILE.match(entry.name)
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


def _write_atomic(target: Path, data: bytes, sync: bool = True) -> None:
    temp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    with open(temp, "wb") as handle:
        handle.write(data)
        if sync:
            _sync(handle)
    os.replace(temp, target)
    if sync:
        _sync_path(target.parent)


def _sync(handle) -> None:
    handle.flush()
    os.fsync(handle.fileno())


def _sync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
