"""The folder index and PostgreSQL side by side, in one run: ingest, SciFact quality, retrieve() latency by size.

    .venv/bin/python experiments/store_compare.py [--files 1000] [--sizes 10000,100000] [--skip-eval]
        [--skip-ingest] [--base INDEX_DIR] [--reuse-database]

Starts its own PostgreSQL (the bundled one, `qa postgres`) in a temporary folder unless QA_STORE names one.
Every figure is printed as one JSON object per line, each naming the store; the machine comes first.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qa import pgserver  # noqa: E402
from qa.api import shared_embedder  # noqa: E402
from qa.bench import DEFAULT_DATA, _files, _machine, _synthetic, synthetic_vectors  # noqa: E402
from qa.citations import cite  # noqa: E402
from qa.config import Settings  # noqa: E402
from qa.evaluation import evaluate, load_beir, p50_p95  # noqa: E402
from qa.errors import IndexMissingError  # noqa: E402
from qa.index.keyword import bm25_tokenize  # noqa: E402
from qa.index.pgsync import GRAPH_ROWS, index_into_postgres  # noqa: E402
from qa.index.postgres import (PostgresIndex, StoreAddress, connect, graph_sql, meta_rows, schema_sql,  # noqa: E402
                               vector_text)
from qa.index.store import read_index  # noqa: E402
from qa.index.sync import index_paths  # noqa: E402
from qa.retrieval import Searcher  # noqa: E402


def say(**fields) -> None:
    print(json.dumps(fields), flush=True)


def ingest(dataset, work: Path, settings: Settings, url: str, files: int) -> None:
    """The same files, the same loaded model, into a new folder index and a new database index, twice each,
    alternating (the machine's noise falls on both)."""
    corpus = _files(dataset, work / "corpus", files)
    embedder = shared_embedder(settings)
    embedder.encode(["warm up"] * 8)
    for attempt in range(2):
        folder = settings.with_(index_dir=work / f"ingest-{attempt}")
        report = index_paths([corpus], folder, embedder=embedder, rebuild=True)
        say(section="ingest", store="folder", attempt=attempt, chunks=report.total_chunks,
            seconds=round(report.seconds, 2), chunks_per_s=round(report.total_chunks / report.seconds, 1))
        database = settings.with_(store=f"{url}#ingest{attempt}")
        report = index_into_postgres([corpus], database, embedder=embedder, rebuild=True)
        say(section="ingest", store="postgresql", attempt=attempt, chunks=report.total_chunks,
            seconds=round(report.seconds, 2), chunks_per_s=round(report.total_chunks / report.seconds, 1))


def fill(url: str, name: str, base, vectors: np.ndarray) -> PostgresIndex:
    """A database index holding the same rows as `_synthetic(base, len(vectors))`: the base chunks repeated (each
    repetition its own documents), the given vectors, the base chunks' sentence vectors."""
    address = StoreAddress(url, name)
    conn = connect(address)
    conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
    dim = vectors.shape[1]
    for statement in schema_sql(name, dim):
        conn.execute(statement)
    with conn.cursor() as cur:
        cur.executemany(f"INSERT INTO {name}.meta VALUES (%s, %s::jsonb)",
                        meta_rows(base.manifest.model, base.manifest.settings, base.manifest.bm25))
    chunks = list(base.chunks)  # read once: the folder index parses a row each time it is asked for one
    n, size = len(chunks), len(vectors)
    tokens = bm25_tokenize([c.index_text for c in chunks], base.manifest.bm25)
    tf = [Counter(t) for t in tokens]
    half = np.asarray(base.sentence_vectors, dtype=np.float16)
    copies = (size + n - 1) // n
    with conn.transaction():
        with conn.cursor().copy(f"COPY {name}.documents FROM STDIN") as copy:
            for c in range(copies):
                for source, entry in base.manifest.files.items():
                    copy.write_row((f"{c}/{source}", entry.sha256, entry.bytes, entry.chunks, entry.text_sha256,
                                    base.document_text(source), list(entry.page_starts), entry.extractor, []))
        with conn.cursor().copy(f"COPY {name}.chunks (row, source, seq, chunk_id, start_at, end_at, text, page, "
                                "line, sentences, context, page_label, length, embedding, sentence_vectors) "
                                "FROM STDIN") as copy:
            for i in range(size):
                chunk = chunks[i % n]
                a, b = base.sentence_rows[i % n]
                copy.write_row((i + 1, f"{i // n}/{chunk.source}", i, f"{i // n}-{chunk.id}", chunk.start,
                                chunk.end, chunk.text, chunk.page, chunk.line, [x for s in chunk.sentences for x in s],
                                chunk.context, chunk.page_label, len(tokens[i % n]), vector_text(vectors[i]),
                                half[a:b].tobytes()))
        average = sum(map(len, tokens)) / n
        k1, b = float(base.manifest.bm25["k1"]), float(base.manifest.bm25["b"])
        with conn.cursor().copy(f"COPY {name}.postings (row, term, tf, length, impact, source) FROM STDIN") as copy:
            for i in range(size):
                source = f"{i // n}/{chunks[i % n].source}"
                norm = k1 * (1 - b + b * len(tokens[i % n]) / average)
                for term, count in tf[i % n].items():
                    copy.write_row((i + 1, term, count, len(tokens[i % n]), count / (count + norm), source))
        conn.execute(f"INSERT INTO {name}.terms SELECT term, count(*) FROM {name}.postings GROUP BY 1")
        conn.execute(f"UPDATE {name}.totals SET chunks = (SELECT count(*) FROM {name}.chunks), length = "
                     f"(SELECT sum(length) FROM {name}.chunks), version = 1")
    if size > GRAPH_ROWS:  # as `qa index` does: exact search below
        conn.execute("SET maintenance_work_mem = '4GB'")
        conn.execute(graph_sql(name))
    conn.execute(f"VACUUM ANALYZE {name}.chunks")
    conn.execute(f"VACUUM ANALYZE {name}.postings")
    conn.close()
    return PostgresIndex(address)


def latency(base, settings: Settings, url: str, questions: list[str], sizes: list[int], reuse: bool) -> None:
    """retrieve() (search and citation) p50/p95 on the same rows in each store. Each store is measured alone: at a
    million chunks the in-memory folder index holds about 8 GB, which beside the database pushed its files out of
    the kernel's cache (66 ms p50 on PostgreSQL, session 10, against 29-32 ms alone)."""
    embedder = shared_embedder(settings, str(base.manifest.model.get("backend")))
    for size in sizes:
        began = time.perf_counter()
        database = _filled(url, f"size{size}", base, size, reuse)
        database_build = time.perf_counter() - began
        times, tops = {}, {}
        times["postgresql"], tops["postgresql"] = _timed(Searcher(database, settings, embedder), questions)
        database.close()
        began = time.perf_counter()
        folder = _synthetic(base, size)
        folder_build = time.perf_counter() - began
        times["folder"], tops["folder"] = _timed(Searcher(folder, settings, embedder), questions)
        del folder
        for store, values in times.items():
            p50, p95 = p50_p95(values)
            say(section="retrieve", store=store, chunks=size, vectors="real" if size <= len(base.chunks) else
                "synthetic beyond the first %d" % len(base.chunks), p50_ms=round(p50, 2), p95_ms=round(p95, 2),
                build_s=round(folder_build if store == "folder" else database_build, 1))
        same = sum(a == b for a, b in zip(tops["folder"], tops["postgresql"]))
        say(section="retrieve", chunks=size, same_top_passage=f"{same}/{len(questions)}")


def _filled(url: str, name: str, base, size: int, reuse: bool) -> PostgresIndex:
    """The database index of `size` rows: filled now, or with `reuse` the one an earlier run left in QA_STORE's
    database when it holds that many rows (filling a million takes about 25 minutes)."""
    if reuse:
        with contextlib.suppress(IndexMissingError):  # not filled yet
            database = PostgresIndex(StoreAddress(url, name))
            if database.size == size:
                return database
            database.close()
    return fill(url, name, base, synthetic_vectors(base.vectors, size))


def _timed(searcher: Searcher, questions: list[str]) -> tuple[list[float], list[list[tuple[str, int]]]]:
    """Each question's time to its cited passages (ms), after ten to warm up, and its top passage."""
    for q in questions[:10]:
        searcher.ask(q)
    times, tops = [], []
    for q in questions:
        began = time.perf_counter()
        hits = searcher.ask(q).hits
        [cite(h) for h in hits]
        times.append((time.perf_counter() - began) * 1000)
        tops.append([(h.chunk.source.split("/")[-1], h.chunk.start) for h in hits[:1]])
    return times, tops


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--skip-eval", action="store_true")
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--base", help="the folder index whose rows the sizes repeat (default: SciFact's, indexed "
                        "now, or the one --skip-eval's absence just built)")
    parser.add_argument("--reuse-database", action="store_true",
                        help="with QA_STORE: keep a size's rows an earlier run filled in that database")
    args = parser.parse_args()
    data = Path(args.data)
    if not (data / "corpus.jsonl").is_file():
        print(f"skipped: {data} is absent", file=sys.stderr)
        return
    say(section="machine", **_machine())
    work = Path(tempfile.mkdtemp(prefix="qa-stores-"))
    work.chmod(0o755)
    server = None
    url = os.environ.get("QA_STORE", "").partition("#")[0]
    if not url:
        server = pgserver.start(work / "pg")
        url = server.url
    settings = Settings().with_(store="")
    try:
        dataset = load_beir(data, "test")
        if not args.skip_ingest:
            ingest(dataset, work, settings, url, args.files)
        if not args.skip_eval:
            for store in ("", url):
                result = evaluate(data, settings.with_(store=store), cache=work / "eval")
                say(section="scifact", store="postgresql" if store else "folder",
                    **{k: result[k] for k in ("ndcg@10", "recall@100", "query_ms_p50", "query_ms_p95", "chunks")})
        sizes = [int(s) for s in args.sizes.split(",") if s]
        if sizes:
            base_dir = Path(args.base) if args.base else None
            if base_dir is None and not args.skip_eval:
                base_dir = next((work / "eval").glob("scifact-*/index"), None)
            if base_dir is None:
                base_dir = work / "base"
                index_paths([_files(dataset, work / "base-corpus", 5183)], settings.with_(index_dir=base_dir))
            latency(read_index(base_dir), settings, url, list(dataset.queries.values()), sizes,
                    args.reuse_database and bool(os.environ.get("QA_STORE")))
    finally:
        if server is not None:
            pgserver.stop(server)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
