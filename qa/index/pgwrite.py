"""Writing to the PostgreSQL store: the schema made once, a document's rows replaced inside a transaction."""
from __future__ import annotations

import re
import time
from collections import Counter

import numpy as np

from qa.config import Settings
from qa.index.keyword import bm25_tokenize
from qa.index.postgres import meta_rows, schema_sql, vector_text
from qa.index.store import FileEntry
from qa.records import Chunk

COPY_CHUNKS = ("COPY {name}.chunks (row, source, seq, chunk_id, start_at, end_at, text, page, line, sentences, "
               "context, page_label, length, embedding, sentence_vectors) FROM STDIN")
MAX_TERM = 1000  # a B-tree key holds about 2,700 bytes; a longer "word" is cut (it is junk anyway)
# PostgreSQL text holds neither NUL nor lone surrogates: each becomes U+FFFD, one character for one, so that
# every offset into the document stays exact.
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> str:
    return UNSTORABLE.sub("\ufffd", text)


def create_schema(conn, name: str, model: dict[str, object], settings: Settings) -> None:
    with conn.transaction():
        # One worker makes the schema; one that comes second finds it made.
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"docqa-schema:{name}",))
        for statement in schema_sql(name, int(model["dim"])):
            conn.execute(statement)
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO {name}.meta VALUES (%s, %s::jsonb) ON CONFLICT DO NOTHING",
                            meta_rows(model, settings.chunk_settings(), settings.bm25_settings()))


def claim(conn, key: str) -> bool:
    """A session lock on a file's name: one worker indexes it, the others skip it (qa/index/pgsync.py)."""
    return bool(conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (key,)).fetchone()[0])


def release(conn, key: str) -> None:
    conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (key,))


def previous_version(conn, name: str, source: str) -> tuple[str, str] | None:
    if conn.execute("SELECT to_regclass(%s)", (f"{name}.documents",)).fetchone()[0] is None:
        return None
    found = conn.execute(f"SELECT sha256, extractor FROM {name}.documents WHERE source = %s", (source,)).fetchone()
    return tuple(found) if found else None


def lock_totals(conn, name: str) -> None:
    # Writers take turns at the totals row first: their term counts then never lock in opposite orders.
    conn.execute(f"SELECT 1 FROM {name}.totals FOR UPDATE")


def replace_rows(conn, name: str, source: str, entry: FileEntry | None, chunks: list[Chunk],
                 vectors: np.ndarray | None, sentences: np.ndarray | None, text: str = "",
                 settings: Settings | None = None) -> None:
    """Inside a transaction: the document's old rows out (and their BM25 counts), the new ones in."""
    old = conn.execute(f"SELECT row, length FROM {name}.chunks WHERE source = %s", (source,)).fetchall()
    old_rows, old_count, old_length = [r for r, _ in old], len(old), sum(n for _, n in old)
    df: Counter[str] = Counter()
    for term, chunks_with_it in conn.execute(f"SELECT term, count(*) FROM {name}.postings WHERE row = ANY(%s) "
                                             "GROUP BY term", (old_rows,)):
        df[term] -= chunks_with_it
    conn.execute(f"DELETE FROM {name}.postings WHERE row = ANY(%s)", (old_rows,))
    conn.execute(f"DELETE FROM {name}.documents WHERE source = %s", (source,))
    length = 0
    if entry is not None and settings is not None:
        conn.execute(f"INSERT INTO {name}.documents VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                     (source, entry.sha256, entry.bytes, entry.chunks, entry.text_sha256, text,
                      list(entry.page_starts), entry.extractor, list(entry.notes)))
        tokens = bm25_tokenize([c.index_text for c in chunks], settings.bm25_settings())
        # Row keys taken first: the chunk rows and their postings are then both written by COPY.
        rows = [r for (r,) in conn.execute(f"SELECT nextval(pg_get_serial_sequence('{name}.chunks', 'row')) "
                                           "FROM generate_series(1, %s)", (len(chunks),))]
        counts = [len(c.sentences) for c in chunks]
        ends = np.cumsum(counts)
        half = np.asarray(sentences, dtype=np.float16)
        with conn.cursor().copy(COPY_CHUNKS.format(name=name)) as copy:
            for seq, (chunk, terms) in enumerate(zip(chunks, tokens)):
                length += len(terms)
                copy.write_row((rows[seq], source, seq, chunk.id, chunk.start, chunk.end, chunk.text, chunk.page,
                                chunk.line, [x for span in chunk.sentences for x in span], chunk.context,
                                chunk.page_label, len(terms), vector_text(vectors[seq]),
                                half[ends[seq] - counts[seq] : ends[seq]].tobytes()))
        total_chunks, total_length = conn.execute(f"SELECT chunks, length FROM {name}.totals").fetchone()
        average = (total_length or sum(map(len, tokens))) / max(total_chunks or len(tokens), 1)
        k1, b = float(settings.bm25_k1), float(settings.bm25_b)
        with conn.cursor().copy(f"COPY {name}.postings (row, term, tf, length, impact, source) FROM STDIN") as copy:
            for row, terms in zip(rows, tokens):
                norm = k1 * (1 - b + b * len(terms) / max(average, 1e-9))
                for term, tf in Counter(t[:MAX_TERM] for t in terms).items():
                    copy.write_row((row, term, tf, len(terms), tf / (tf + norm), source))
                    df[term] += 1
    changed = sorted(t for t, n in df.items() if n)
    if changed:  # one statement, in term order: two writers never wait on each other's terms crosswise
        conn.execute(f"""INSERT INTO {name}.terms SELECT * FROM unnest(%s::text[], %s::bigint[]) ORDER BY 1
                         ON CONFLICT (term) DO UPDATE SET df = terms.df + excluded.df""",
                     (changed, [df[t] for t in changed]))
    conn.execute(f"UPDATE {name}.totals SET chunks = chunks - %s + %s, length = length - %s + %s, "
                 "version = version + 1, updated = %s", (old_count, len(chunks), old_length, length, time.time()))
