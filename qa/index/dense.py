"""Dense search over an index's vectors (FAISS): exact inner product, or an HNSW graph for large indexes."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from qa.errors import IndexCorruptError

# Dense search: exact below this many chunks, HNSW above (recall@10 against exact and latency: `qa bench`).
# M 48: on SciFact-based synthetic vectors at 1M (experiments/hnsw_params.py) it raised recall from 0.981 (M 32) to
# 0.995 for +0.8 ms a search and half again the build time. efSearch grows with the size: 256 keeps retrieve()
# under 5 ms at 100k (3.8 ms against 5.2 ms at 512), 512 keeps recall@10 at 1M at 0.988.
EXACT_SEARCH_LIMIT = 50_000
HNSW_M = 48
HNSW_EF_CONSTRUCTION = 64
HNSW_EF_SEARCH = ((250_000, 256), (None, 512))  # (up to this many chunks, efSearch)


class DenseIndex:
    """The rows nearest a query vector; retrieval never sees FAISS itself. Inner product on normalised vectors is
    the cosine."""

    def __init__(self, index) -> None:  # index: faiss.Index
        self.index = index
        self._rows: np.ndarray | None = None  # the exact index's vectors, seen by numpy without a copy

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    @property
    def approximate_search(self) -> bool:
        import faiss

        return isinstance(self.index, faiss.IndexHNSWFlat)

    @staticmethod
    def approximate(rows: int) -> bool:
        return approximate(rows)

    @classmethod
    def build(cls, vectors: np.ndarray | Path, exact_limit: int | None = None) -> DenseIndex:
        return cls(build_dense(vectors, exact_limit))

    @classmethod
    def load(cls, file: Path, vectors: np.ndarray) -> DenseIndex:
        return cls(_load_dense(file, vectors))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows) of the `k` nearest rows of each query, best first; rows of -1 where fewer exist."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if len(queries) == 1 and 0 < k < self.size and not self.approximate_search:
            return self._exact_one(queries[0], k)
        return self.index.search(queries, k)

    def _exact_one(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """One question against an exact index: one matrix-vector product and a partial sort. FAISS's flat
        search takes 2-3x longer for a single query (0.96 against 0.40 ms at 10,000 rows, 4.64 against 1.63 at
        50,000; 2 cores, experiments/openvino_probe.py)."""
        if self._rows is None:
            import faiss

            flat = faiss.downcast_index(self.index)
            self._rows = faiss.rev_swig_ptr(flat.get_xb(), self.size * flat.d).reshape(self.size, flat.d)
        scores = dot_rows(self._rows, query)
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return scores[top][None, :], top.astype(np.int64)[None, :]

    def save(self, file: Path) -> None:
        import faiss

        faiss.write_index(self.index, str(file))


def _load_dense(dense_file: Path, vectors: np.ndarray):  # -> faiss.Index
    import faiss

    path = dense_file.parent
    if not dense_file.is_file():
        return build_dense(vectors, exact_limit=len(vectors))
    # An approximate index, built when the index was written (see build_dense).
    # Its vectors mapped, not read (1.5 GB at a million chunks, of which a search touches a few); its links are read.
    _read_ahead(dense_file, dense_file.stat().st_size - vectors.nbytes)
    dense = faiss.read_index(str(dense_file), faiss.IO_FLAG_MMAP_IFC)
    if dense.ntotal != len(vectors):
        raise IndexCorruptError(f"the index at {path} is inconsistent: rebuild with `qa index --rebuild --index {path}`")
    faiss.ParameterSpace().set_index_parameter(dense, "efSearch", ef_search(dense.ntotal))
    return dense


def dot_rows(rows: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """`rows @ vector` in numpy's own loops on the calling thread. BLAS hands a product of this size to its
    worker threads, which then spin for a while on the cores the question's embedding needs: `retrieve()` over
    15,880 chunks (int8 capped to AVX2) went from 10.5-11.0 to 7.3-7.8 ms p50 (p95 19 to 11-12) with this for the exact
    search and the cosines, as with BLAS on one thread (experiments/README.md, session 14)."""
    return np.einsum("ij,j->i", rows, vector)


def _read_ahead(file: Path, size: int) -> None:
    """The file's first `size` bytes (an HNSW file's links; its vectors follow them) into the page cache, in one
    sequential pass: FAISS maps the file and reads the links page fault by page fault, 5.0 s for the 0.4 GB of a
    million chunks with the page cache dropped, against 0.7 s after this read (0.02 s more when they are cached;
    experiments/README.md, session 14)."""
    block = memoryview(bytearray(8 << 20))
    with open(file, "rb", buffering=0) as handle:
        while size > 0:
            got = handle.readinto(block[: min(len(block), size)])
            if not got:
                return
            size -= got


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
