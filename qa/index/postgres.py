"""The PostgreSQL store (pgvector): address, schema, error messages, and the reading side of the seam."""
from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import unquote

import numpy as np

from qa.config import is_database
from qa.errors import IndexMismatchError, IndexMissingError, StoreError
from qa.index.store import FileEntry, Manifest
from qa.records import Chunk

# 1: chunks with vector and float16 sentence vectors; documents; BM25 postings of our own tokens; terms; totals.
SCHEMA_VERSION = 1
DEFAULT_NAME = "docqa"
# pgvector's HNSW graph (cosine). m 16 / ef_construction 64 are pgvector's defaults; a search visits at least
# ef_search candidates and, with iterative scan, keeps going until it has k rows that pass any filter.
HNSW_EF_SEARCH = 100
# Keyword search reads at most this many postings of each question term, the highest-impact first, and scores
# the chunks they name exactly. Below this many chunks per term it is exact; above, a chunk can be missed only if
# it is outside the first thousand of every term it holds.
TERM_POSTINGS = 1000
_CHUNK_COLUMNS = "row, chunk_id, source, start_at, end_at, text, page, line, sentences, context, page_label"


@dataclass(frozen=True)
class StoreAddress:
    """`postgresql://user@host:port/db#name`: the database, and the index inside it (a schema; default docqa)."""

    url: str
    name: str

    @staticmethod
    def parse(store: str) -> StoreAddress:
        url, _, name = store.partition("#")
        name = unquote(name) or DEFAULT_NAME
        if not is_database(url):
            raise StoreError(f"unknown store '{store[:80]}': use a folder, or postgresql://user@host:port/db")
        if not name.replace("_", "").isalnum() or not name[0].isalpha() or len(name) > 48:
            raise StoreError(f"the index name '{name[:60]}' after # must be letters, digits and _ (a schema name)")
        return StoreAddress(url, name.lower())

    def __str__(self) -> str:
        return f"{self.url}#{self.name}" if self.name != DEFAULT_NAME else self.url


def connect(address: StoreAddress, autocommit: bool = True):  # -> psycopg.Connection
    try:
        import psycopg
    except ImportError:
        raise StoreError("the PostgreSQL store needs psycopg: pip install 'docqa[postgres]'") from None
    try:
        conn = psycopg.connect(address.url, autocommit=autocommit, connect_timeout=10)
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to {address.url}: {str(exc).strip().splitlines()[0]}: is the server "
                         "running, and the address right?") from None
    return conn


@contextlib.contextmanager
def writing(address: StoreAddress) -> Iterator[None]:
    """Database errors of an indexing run as messages that say what to do."""
    import psycopg

    try:
        yield
    except psycopg.errors.ReadOnlySqlTransaction:
        raise StoreError(f"{address.url} is a read-only replica: index into the primary; the replica follows "
                         "it") from None
    except psycopg.OperationalError as exc:
        raise StoreError(f"lost the connection to {address.url} ({str(exc).strip()[:200]}); files committed "
                         "so far are indexed: run `qa index` again to finish") from None


def schema_sql(name: str, dim: int) -> list[str]:
    """The tables of one index. Chunks and documents share the document's source as their key: on Citus both are
    distributed by it and co-located (docs/postgresql.md)."""
    return [
        "CREATE EXTENSION IF NOT EXISTS vector",
        f"CREATE SCHEMA IF NOT EXISTS {name}",
        f"CREATE TABLE IF NOT EXISTS {name}.meta (key text PRIMARY KEY, value jsonb NOT NULL)",
        f"""CREATE TABLE IF NOT EXISTS {name}.documents (source text PRIMARY KEY, sha256 text NOT NULL,
            bytes bigint NOT NULL, chunks int NOT NULL, text_sha256 text NOT NULL, text text NOT NULL,
            page_starts int[] NOT NULL, extractor text NOT NULL, notes text[] NOT NULL)""",
        f"""CREATE TABLE IF NOT EXISTS {name}.chunks (row bigserial PRIMARY KEY,
            source text NOT NULL REFERENCES {name}.documents ON DELETE CASCADE, seq int NOT NULL,
            chunk_id text NOT NULL, start_at int NOT NULL, end_at int NOT NULL, text text NOT NULL, page int,
            line int NOT NULL, sentences int[] NOT NULL, context text NOT NULL, page_label text,
            length int NOT NULL, embedding vector({dim}) NOT NULL, sentence_vectors bytea NOT NULL)""",
        f"CREATE INDEX IF NOT EXISTS chunks_source ON {name}.chunks (source, seq)",
        # BM25: one row per term of each chunk (our tokenizer's terms, so the scores equal the folder index's),
        # document frequencies and totals, all kept in step with the chunks in the same transactions.
        # `impact` is the posting's BM25 term-frequency part with the average length at write time: it orders a
        # term's postings for the keyword search's first pass (TERM_POSTINGS), never scores them.
        f"""CREATE TABLE IF NOT EXISTS {name}.postings (row bigint NOT NULL, term text NOT NULL, tf int NOT NULL,
            length int NOT NULL, impact real NOT NULL, source text NOT NULL, PRIMARY KEY (row, term))""",
        f"CREATE INDEX IF NOT EXISTS postings_impact ON {name}.postings (term, impact DESC) INCLUDE (row, tf, length)",
        f"CREATE TABLE IF NOT EXISTS {name}.terms (term text PRIMARY KEY, df bigint NOT NULL)",
        f"""CREATE TABLE IF NOT EXISTS {name}.totals (one bool PRIMARY KEY DEFAULT true CHECK (one),
            chunks bigint NOT NULL, length bigint NOT NULL, version bigint NOT NULL, updated double precision)""",
        f"INSERT INTO {name}.totals VALUES (true, 0, 0, 0, 0) ON CONFLICT DO NOTHING",
    ]


def graph_sql(name: str) -> str:
    """The HNSW graph over the chunks' vectors: built once an index outgrows exact search (pgsync.GRAPH_ROWS)."""
    return f"CREATE INDEX IF NOT EXISTS chunks_embedding ON {name}.chunks USING hnsw (embedding vector_cosine_ops)"


def read_meta(conn, name: str) -> dict[str, object] | None:
    """The index's recorded model, settings and BM25 tokenizer; None when there is no index of this name."""
    exists = conn.execute("SELECT to_regclass(%s)", (f"{name}.meta",)).fetchone()[0]
    if exists is None:
        return None
    meta = {k: v for k, v in conn.execute(f"SELECT key, value FROM {name}.meta")}
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise IndexMismatchError(f"the index '{name}' in the database has schema {meta.get('schema_version')}, this "
                                 f"qa reads {SCHEMA_VERSION}: rebuild it with `qa index --rebuild --store ...`")
    return meta


def vector_text(vector: np.ndarray) -> str:
    # Nine significant digits: every float32 comes back exactly.
    return "[" + ",".join(f"{x:.9g}" for x in vector.tolist()) + "]"


class PostgresIndex:
    """An index in PostgreSQL, read through the seam (qa/index/protocol.py). One connection, used by one
    thread at a time; each question's reads share one read-only snapshot."""

    beside_keywords = "encode"  # BM25 runs in the server's process (qa/index/protocol.py)

    def __init__(self, address: StoreAddress) -> None:
        self.address, self.name = address, address.name
        self.conn = connect(address)
        self._lock = threading.RLock()
        self._depth = 0
        # What one question reads more than once (idf, totals), kept for the question's snapshot only.
        self._seen: dict[object, object] = {}
        meta = read_meta(self.conn, self.name)
        if meta is None:
            raise IndexMissingError(f"no index '{self.name}' in {address.url} yet: build it with "
                                    f"`qa index --store {address}`")
        self.version = self.current_version()
        self.manifest = self._manifest(meta)
        self.k1, self.b = float(self.manifest.bm25["k1"]), float(self.manifest.bm25["b"])

    def current_version(self) -> int:
        return int(self._rows(f"SELECT version FROM {self.name}.totals")[0][0])

    def _manifest(self, meta: dict[str, object]) -> Manifest:
        files = {row[0]: FileEntry(row[1], row[2], row[3], row[4], tuple(row[5]), row[6], tuple(row[7]))
                 for row in self.conn.execute(f"SELECT source, sha256, bytes, chunks, text_sha256, page_starts, "
                                              f"extractor, notes FROM {self.name}.documents")}
        count, updated = self.conn.execute(f"SELECT chunks, updated FROM {self.name}.totals").fetchone()
        return Manifest(self.version, dict(meta["model"]), dict(meta["settings"]), files, int(count),
                        float(updated or 0.0), dict(meta["bm25"]))

    def close(self) -> None:
        self.conn.close()

    @property
    def size(self) -> int:
        return self.manifest.chunk_count

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        import psycopg

        with self._lock:
            self._depth += 1
            try:
                if self._depth == 1:
                    if self.conn.broken or self.conn.closed:  # the server restarted: connect again
                        self.conn = connect(self.address)
                    self._seen = {}
                    self.conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                yield
            except psycopg.OperationalError as exc:
                raise StoreError(f"lost the connection to {self.address.url} ({str(exc).strip()[:200]}): is the "
                                 "database up? Ask again once it is") from None
            finally:
                self._depth -= 1
                if self._depth == 0 and not self.conn.broken:
                    with contextlib.suppress(psycopg.Error):
                        self.conn.execute("ROLLBACK")  # read only: nothing to keep

    def _rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self.reading():
            return self.conn.execute(sql, params).fetchall()

    def chunks_at(self, rows: list[int]) -> list[Chunk]:
        if not rows:
            return []
        found = {r[0]: _chunk(r) for r in self._rows(f"SELECT {_CHUNK_COLUMNS} FROM {self.name}.chunks "
                                                       "WHERE row = ANY(%s)", (list(rows),))}
        return [found[r] for r in rows]

    def nearest(self, query: np.ndarray, k: int) -> list[int]:
        with self.reading():
            # Iterative scan: an HNSW search returns k rows even where the graph's first pass finds fewer.
            self.conn.execute(f"SET LOCAL hnsw.ef_search = {max(HNSW_EF_SEARCH, min(int(k), 1000))}; "
                              "SET LOCAL hnsw.iterative_scan = strict_order")
            found = self.conn.execute(f"SELECT row, embedding <=> %s::vector AS distance FROM {self.name}.chunks "
                                      "ORDER BY distance LIMIT %s", (vector_text(query), int(k))).fetchall()
            # The search worked out their cosines already: cosines() asks the database for the other rows only.
            self._once(("cosines", query.tobytes()), dict).update((r, 1 - d) for r, d in found)
            return [r for r, _ in found]

    def cosines(self, rows: list[int], query: np.ndarray) -> np.ndarray:
        with self.reading():
            found = self._once(("cosines", query.tobytes()), dict)
            missing = [r for r in rows if r not in found]
            if missing:
                found.update(self._rows(f"SELECT row, 1 - (embedding <=> %s::vector) FROM {self.name}.chunks "
                                        "WHERE row = ANY(%s)", (vector_text(query), missing)))
            return np.array([found[r] for r in rows], dtype=np.float32)

    def _bm25(self, terms: list[str], rows: list[int] | None = None, k: int = 0) -> list[tuple]:
        """BM25 as bm25s computes it (Lucene idf; tf / (tf + k1 (1 - b + b len / avg len))), a question's repeated
        term counted each time, of the given rows; or the k best, found among the chunks that score best on each
        term's TERM_POSTINGS highest-impact postings (all of a term's postings, for a term in fewer chunks)."""
        with self.reading():
            idf = self.idf(terms)
            asked = [t for t in terms if t in idf]
            if not asked:
                return []
            totals = f"SELECT chunks, length FROM {self.name}.totals"
            chunks, length = self._once("totals", lambda: self._rows(totals)[0])
            weights = (asked, [idf[t] for t in asked])
            average = max(length / max(chunks, 1), 1e-9)
            bm25 = (f"w.idf * p.tf / (p.tf + {self.k1!r}::float8 * (1 - {self.b!r}::float8 + {self.b!r}::float8 "
                    f"* p.length / {average!r}::float8))")
            # A chunk's postings are read by the key's first column, the row, which only the key can serve; OFFSET 0
            # keeps the planner from turning it into a lookup by term (each term's postings filtered by row).
            score = f"""(SELECT sum({bm25})::float4 FROM (SELECT term, tf, length FROM {self.name}.postings
                        WHERE row = c.row OFFSET 0) p JOIN w ON w.term = p.term)"""
            weights_cte = "WITH w AS (SELECT * FROM unnest(%s::text[], %s::float8[]) AS w(term, idf))"
            if rows is not None:
                sql = f"{weights_cte} SELECT c.row, {score} FROM unnest(%s::bigint[]) AS c(row)"
                return [(r, s or 0.0) for r, s in self._rows(sql, (*weights, list(rows)))]
            # A term's postings read in impact order from the index, only as many as are kept: the planner,
            # costing a term's postings as all read, otherwise scans and sorts them all (100 ms at 10,000 chunks).
            self.conn.execute("SET LOCAL enable_bitmapscan = off")
            self.conn.execute("SET LOCAL enable_seqscan = off")
            sql = f"""{weights_cte},
                      c AS (SELECT p.row, sum({bm25}) AS partial FROM w CROSS JOIN LATERAL
                            (SELECT row, tf, length FROM {self.name}.postings WHERE term = w.term
                             ORDER BY impact DESC LIMIT {max(TERM_POSTINGS, int(k))}) p
                            GROUP BY p.row ORDER BY partial DESC LIMIT {max(3 * int(k), 300)})
                      SELECT c.row, {score} AS score FROM c ORDER BY score DESC, c.row LIMIT {int(k)}"""
            return self._rows(sql, weights)

    def keyword_top(self, terms: list[str], k: int) -> tuple[list[int], np.ndarray]:
        found = [(r, s) for r, s in self._bm25(terms, k=k) if s > 0]
        return [r for r, _ in found], np.array([s for _, s in found], dtype=np.float32)

    def keyword_scores(self, terms: list[str], rows: list[int]) -> np.ndarray:
        found = dict(self._bm25(terms, rows=rows))
        return np.array([found.get(r, 0.0) for r in rows], dtype=np.float32)

    def idf(self, terms: list[str]) -> dict[str, float]:
        return self._once(("idf", frozenset(terms)), lambda: {t: float(v) for t, v in self._rows(
            f"SELECT t.term, ln(1 + (s.chunks - t.df + 0.5) / (t.df + 0.5)) FROM {self.name}.terms t "
            f"CROSS JOIN {self.name}.totals s WHERE t.term = ANY(%s) AND t.df > 0", (list(terms),))})

    def _once(self, key: object, read):  # -> whatever `read` returns
        """`read()` once per question: inside one snapshot its answer cannot change."""
        with self.reading():
            if key not in self._seen:
                self._seen[key] = read()
            return self._seen[key]

    def sentence_vectors_of(self, rows: list[int]) -> list[np.ndarray]:
        found = dict(self._rows(f"SELECT row, sentence_vectors FROM {self.name}.chunks WHERE row = ANY(%s)",
                                (list(rows),)))
        dim = int(self.manifest.model.get("dim", 0))
        return [np.frombuffer(found[r], dtype=np.float16).reshape(-1, dim) for r in rows]

    def first_rows(self, sources: list[str]) -> dict[str, int]:
        return dict(self._rows(f"SELECT DISTINCT ON (source) source, row FROM {self.name}.chunks "
                               "WHERE source = ANY(%s) ORDER BY source, seq", (list(sources),)))

    def document_chunks(self, source: str) -> list[Chunk]:
        return [_chunk(r) for r in self._rows(f"SELECT {_CHUNK_COLUMNS} FROM {self.name}.chunks WHERE source = %s "
                                              "ORDER BY seq", (source,))]

    def documents_by_size(self) -> Iterator[tuple[str, list[Chunk]]]:
        for source in sorted(self.manifest.files, key=lambda s: (-self.manifest.files[s].chunks, s)):
            yield source, self.document_chunks(source)

    def chunk_at(self, source: str, offset: int) -> Chunk | None:
        found = self._rows(f"SELECT {_CHUNK_COLUMNS} FROM {self.name}.chunks WHERE source = %s AND start_at <= %s "
                           "AND end_at > %s ORDER BY seq LIMIT 1", (source, offset, offset))
        return _chunk(found[0]) if found else None

    def document_text(self, source: str) -> str:
        found = self._rows(f"SELECT text FROM {self.name}.documents WHERE source = %s", (source,))
        if not found:
            raise KeyError(source)
        return found[0][0]


def _chunk(r: tuple) -> Chunk:
    spans = r[8]
    return Chunk(r[1], r[2], r[3], r[4], r[5], r[6], r[7], tuple(zip(spans[::2], spans[1::2])), r[9], r[10])


def meta_rows(model: dict[str, object], settings: dict[str, object], bm25: dict[str, object]) -> list[tuple]:
    return [("schema_version", json.dumps(SCHEMA_VERSION)), ("model", json.dumps(model)),
            ("settings", json.dumps(settings)), ("bm25", json.dumps(bm25))]
