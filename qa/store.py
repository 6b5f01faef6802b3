"""Store stage, reading side: the on-disk index (manifest, chunk table, vectors, BM25, texts); see writer.py."""
from __future__ import annotations

import functools
import json
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qa.errors import IndexCorruptError, IndexMismatchError, IndexMissingError
from qa.records import Chunk

# 2: reader versions per file, the BM25 tokenizer and title context always recorded, sentence vectors required.
FORMAT_VERSION = 2
# Dense search: exact below this many chunks, HNSW above (recall@10 against exact and latency: `qa bench`).
# M 48: on SciFact-based synthetic vectors at 1M (experiments/hnsw_params.py) it raised recall from 0.981 (M 32) to
# 0.995 for +0.8 ms a search and half again the build time. efSearch grows with the size: 256 keeps retrieve()
# under 5 ms at 100k (3.8 ms against 5.2 ms at 512), 512 keeps recall@10 at 1M at 0.988.
EXACT_SEARCH_LIMIT = 50_000
HNSW_M = 48
HNSW_EF_CONSTRUCTION = 64
HNSW_EF_SEARCH = ((250_000, 256), (None, 512))  # (up to this many chunks, efSearch)
MANIFEST = "manifest.json"
# Files of one generation; the manifest names the generation it belongs to, so uncommitted files are garbage.
GENERATION_FILE = re.compile(r"^(chunks|terms|vectors|sentences|bm25|dense)\.(\d+)(\.jsonl|\.txt|\.npy|\.faiss)?$")


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
                          "page_starts": list(f.page_starts), "extractor": f.extractor, "notes": list(f.notes)}
                      for s, f in sorted(self.files.items())},
        }

    @staticmethod
    def from_json(data: dict) -> Manifest:
        files = {s: FileEntry(f["sha256"], f["bytes"], f["chunks"], f["text_sha256"], tuple(f.get("page_starts", ())),
                              f.get("extractor", ""), tuple(f.get("notes", ())))
                 for s, f in data["files"].items()}
        return Manifest(data["generation"], data["model"], dict(data["settings"]), files, data["chunk_count"],
                        data.get("updated", 0.0), dict(data["bm25"]))


@dataclass
class IndexData:
    """A loaded index: chunks and vectors share row numbers; the FAISS and BM25 indexes are built over them."""

    path: Path
    manifest: Manifest
    chunks: list[Chunk]
    vectors: np.ndarray
    dense: object  # faiss.Index
    bm25: object  # bm25s.BM25
    # One row per sentence of every chunk, in chunk order (float16), and each chunk's (start, stop) in them.
    sentence_vectors: np.ndarray
    sentence_rows: np.ndarray

    def chunk_sentence_vectors(self, row: int) -> np.ndarray:
        start, stop = self.sentence_rows[row]
        return self.sentence_vectors[start:stop]

    @functools.cached_property
    def source_rows(self) -> dict[str, list[int]]:
        """Each document's chunk rows, found once: citing a passage's context must not scan every chunk."""
        rows: dict[str, list[int]] = {}
        for row, chunk in enumerate(self.chunks):
            rows.setdefault(chunk.source, []).append(row)
        return rows

    def document_text(self, source: str) -> str:
        entry = self.manifest.files[source]
        return (self.path / "docs" / f"{entry.text_sha256}.txt").read_text(encoding="utf-8", errors="surrogatepass")


def _bm25s():
    import bm25s

    # bm25s sets its own logger to DEBUG on import; put it back under the application's logging settings.
    logging.getLogger("bm25s").setLevel(logging.NOTSET)
    return bm25s


@functools.lru_cache(maxsize=4)
def _stemmer(language: str):  # -> Stemmer.Stemmer | None; built once, not for every question
    if not language:
        return None
    import Stemmer

    return Stemmer.Stemmer(language)


def bm25_tokenize(texts: list[str], params: dict[str, object]) -> list[list[str]]:
    """Lower-cased word tokens, stemmed and without stop words as the index's BM25 settings say (the manifest's
    "bm25"); the same for chunks and questions."""
    stopwords = str(params.get("stopwords", "")) or None
    return _bm25s().tokenize(texts, stopwords=stopwords, stemmer=_stemmer(str(params.get("stemmer", ""))),
                             return_ids=False, show_progress=False)


def bm25_from_terms(terms_file: Path, params: dict[str, object]):  # -> bm25s.BM25
    """BM25 over a generation's stored terms (one line of tokens per chunk): nothing is tokenised again."""
    vocab: dict[str, int] = {}
    ids = []
    with open(terms_file, encoding="utf-8") as lines:
        for line in lines:
            # Each token becomes the vocabulary's int: millions of separate strings would take gigabytes.
            ids.append([vocab.setdefault(token, len(vocab)) for token in line.split()])
    if not vocab:
        vocab[""] = 0  # no chunk has a word bm25s keeps (say, only numbers of one digit): still a valid index
    retriever = _bm25s().BM25(k1=float(params["k1"]), b=float(params["b"]))
    retriever.index((ids, vocab), show_progress=False)
    return retriever


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
                                row["line"], tuple(tuple(s) for s in row["sentences"]), row.get("context", ""),
                                row.get("page_label")))
    try:
        # Mapped when only copied (by an indexer) or when an HNSW graph holds its own copy for searching.
        mapped = not searchable or approximate(manifest.chunk_count)
        vectors = np.load(path / f"vectors.{gen}.npy", allow_pickle=False, mmap_mode="r" if mapped else None)
    except ValueError as exc:
        raise IndexCorruptError(f"vectors of the index at {path} are damaged ({exc}): rebuild with "
                                f"`qa index --rebuild --index {path}`") from None
    try:
        sentence_vectors = np.load(path / f"sentences.{gen}.npy", allow_pickle=False, mmap_mode="r")
    except ValueError as exc:
        raise IndexCorruptError(f"sentence vectors of the index at {path} are damaged ({exc}): rebuild with "
                                f"`qa index --rebuild --index {path}`") from None
    counts = np.array([len(c.sentences) for c in chunks], dtype=np.int64)
    ends = np.cumsum(counts)
    sentence_rows = np.stack([ends - counts, ends], axis=1) if len(chunks) else np.zeros((0, 2), dtype=np.int64)
    if len(sentence_vectors) != (ends[-1] if len(ends) else 0):
        raise IndexCorruptError(f"the sentence vectors of the index at {path} do not match its chunks: rebuild "
                                f"it with `qa index --rebuild --index {path}`")
    if len(vectors) != len(chunks) or len(chunks) != manifest.chunk_count:
        raise IndexCorruptError(f"the index at {path} is inconsistent: rebuild with `qa index --rebuild --index {path}`")
    if not (path / f"bm25.{gen}").is_dir():
        raise FileNotFoundError(path / f"bm25.{gen}")
    dense = _load_dense(path, gen, vectors) if searchable else None
    bm25 = _bm25s().BM25.load(str(path / f"bm25.{gen}"), mmap=False, load_corpus=False) if searchable else None
    return IndexData(path, manifest, chunks, vectors, dense, bm25, sentence_vectors, sentence_rows)


def _load_dense(path: Path, gen: int, vectors: np.ndarray):  # -> faiss.Index
    import faiss

    dense_file = path / f"dense.{gen}.faiss"
    if not dense_file.is_file():
        return build_dense(vectors, exact_limit=len(vectors))
    # An approximate index, built when the index was written (see build_dense).
    dense = faiss.read_index(str(dense_file))
    if dense.ntotal != len(vectors):
        raise IndexCorruptError(f"the index at {path} is inconsistent: rebuild with `qa index --rebuild --index {path}`")
    faiss.ParameterSpace().set_index_parameter(dense, "efSearch", ef_search(dense.ntotal))
    return dense


def approximate(rows: int) -> bool:
    """Whether an index of this many chunks searches an HNSW graph (built and saved at write time)."""
    return rows > EXACT_SEARCH_LIMIT


def ef_search(rows: int) -> int:
    """How many graph nodes an HNSW search visits: more for larger indexes, where recall would drop."""
    return next(ef for limit, ef in HNSW_EF_SEARCH if limit is None or rows <= limit)


def build_dense(vectors: np.ndarray | Path, exact_limit: int | None = None):  # -> faiss.Index
    """Exact inner-product search up to `exact_limit` vectors; beyond, an HNSW graph: exact search grows
    linearly (about 6 ms a question at 100k, 55 ms at 1M on two cores), HNSW stays under a millisecond.
    `vectors` may be an .npy file, read block by block: the index then holds the only copy in memory."""
    import faiss

    count, dim, blocks = _row_blocks(vectors)
    if count <= (EXACT_SEARCH_LIMIT if exact_limit is None else exact_limit):
        dense = faiss.IndexFlatIP(dim)
    else:
        dense = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        dense.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        dense.hnsw.efSearch = ef_search(count)
        # Room for every vector at once: growing block by block would copy them all at each doubling.
        storage = faiss.downcast_index(dense.storage)
        storage.codes.resize(count * storage.code_size)
        storage.codes.resize(0)
    for block in blocks:
        dense.add(np.ascontiguousarray(block, dtype=np.float32))
    return dense


def _row_blocks(vectors: np.ndarray | Path, rows: int = 32_768) -> tuple[int, int, Iterator[np.ndarray]]:
    if not isinstance(vectors, Path):
        return len(vectors), vectors.shape[1], (vectors[b : b + rows] for b in range(0, len(vectors), rows))
    # Plain reads, not a memory map: every mapped page read would count in the process's RSS.
    handle = open(vectors, "rb")
    version = np.lib.format.read_magic(handle)
    (count, dim), _, dtype = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                              else np.lib.format.read_array_header_2_0)(handle)

    def blocks() -> Iterator[np.ndarray]:
        with handle:
            for begin in range(0, count, rows):
                yield np.fromfile(handle, dtype=dtype, count=min(rows, count - begin) * dim).reshape(-1, dim)

    return count, dim, blocks()
