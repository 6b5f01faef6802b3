"""The PostgreSQL store for real: killed writers, two ingest workers, a streaming replica, HNSW's k, many readers."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import QA, ROOT, SEED, index_into, new_store, open_store, stored_chunks
from qa.config import Settings

KILLS = int(os.environ.get("QA_CRASH_KILLS", "12"))


def _edition_corpus(folder: Path, version: int, files: int = 120) -> None:
    folder.mkdir(exist_ok=True)
    for i in range(files):
        edition = version if i % 10 == version % 10 else 0
        (folder / f"doc{i:03d}.txt").write_text(
            f"Station {i} recorded {i * 7 % 97} millimetres of rain in edition {edition}. "
            f"The keeper of station {i} is named Keeper{i}.\n\nIt lies {i * 3} kilometres from the coast.")


def _consistent(store: str, folder: Path) -> None:
    """Every document holds exactly the rows of one version of its file (the one on disk now or an earlier
    edition), and the BM25 totals match the rows."""
    reader = open_store(Settings(store=store))
    conn, name = reader.conn, reader.name
    for source, entry in reader.manifest.files.items():
        chunks = reader.document_chunks(source)
        assert len(chunks) == entry.chunks
        text = reader.document_text(source)
        assert all(text[c.start : c.end] == c.text for c in chunks)
        assert text.startswith(f"Station {int(source[3:6])} recorded")
    count, length = conn.execute(f"SELECT count(*), coalesce(sum(length), 0) FROM {name}.chunks").fetchone()
    assert (count, length) == conn.execute(f"SELECT chunks, length FROM {name}.totals").fetchone()
    bad = conn.execute(f"""SELECT count(*) FROM {name}.terms t FULL JOIN (SELECT term, count(*) n FROM
                           {name}.postings GROUP BY 1) d ON d.term = t.term
                           WHERE coalesce(t.df, 0) <> coalesce(d.n, 0)""").fetchone()[0]
    assert bad == 0, "document frequencies drifted from the rows"
    orphans = conn.execute(f"SELECT count(*) FROM {name}.postings p LEFT JOIN {name}.chunks c USING (row) "
                           "WHERE c.row IS NULL OR c.source <> p.source").fetchone()[0]
    assert orphans == 0, "postings without their chunk"
    reader.close()


@pytest.mark.slow
def test_sigkill_mid_ingest_leaves_every_file_old_or_new(tmp_path, postgres):
    corpus, store = tmp_path / "corpus", new_store(postgres)
    _edition_corpus(corpus, 0)
    cmd = [*QA, "index", str(corpus), "--store", store, "--quiet"]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    _edition_corpus(corpus, KILLS + 1)
    began = time.monotonic()
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    duration = time.monotonic() - began
    rng = random.Random(11)
    killed_runs = 0
    for run in range(1, KILLS + 1):
        _edition_corpus(corpus, run)
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, duration))
        killed_runs += proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _consistent(store, corpus)
    assert killed_runs >= KILLS // 2, "most kills landed while the indexer was running"
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    _consistent(store, corpus)
    # Finished, the index equals one built from scratch: the same chunks and the same answers.
    clean = new_store(postgres)
    subprocess.run([*QA, "index", str(corpus), "--store", clean, "--quiet"], cwd=ROOT, check=True)
    ids = lambda s: sorted(c.id for c in stored_chunks(Settings(store=s)))  # noqa: E731
    assert ids(store) == ids(clean)
    from qa.api import Retriever

    for question in ("Who is the keeper of station 3?", "How far from the coast is station 40?"):
        assert ([(p.source, p.start) for p in Retriever(store).retrieve(question, k=3)][:1]
                == [(p.source, p.start) for p in Retriever(clean).retrieve(question, k=3)][:1])


@pytest.mark.slow
def test_two_workers_share_one_ingest_each_file_once(tmp_path, postgres):
    corpus, store = tmp_path / "corpus", new_store(postgres)
    corpus.mkdir()
    for i in range(40):  # about 10 chunks each: long enough that both workers are busy at once
        (corpus / f"report{i:02d}.txt").write_text("\n\n".join(
            f"Report {i}, section {s}: the survey team measured {i * s} trees of species {s} in plot {i}. "
            f"Soil samples from plot {i} held {s * 3} grams of nitrogen per kilogram." for s in range(40)))
    cmd = [*QA, "index", str(corpus), "--store", store, "--json", "--quiet"]
    workers = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    reports = []
    for proc in workers:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        reports.append(json.loads(out))
    first, second = (set(r["added"]) for r in reports)
    assert first and second, "both workers indexed files"
    assert not first & second, "no file was embedded twice"
    assert first | second == {f"report{i:02d}.txt" for i in range(40)}
    ids = [c.id for c in stored_chunks(Settings(store=store))]
    # The one that finished last saw every row; together they embedded each chunk once.
    assert sum(r["chunks_embedded"] for r in reports) == max(r["total_chunks"] for r in reports) == len(ids)
    assert len(ids) == len(set(ids))


def test_a_streaming_replica_answers_and_refuses_writes(tmp_path, postgres, seed_corpus):
    from qa import pgserver
    from qa.api import Retriever, build_index
    from qa.errors import StoreError

    replica = pgserver.start(postgres.data_dir.parent / f"replica-{os.getpid()}", primary=postgres)
    try:
        name = new_store(postgres).partition("#")[2]
        build_index([seed_corpus], f"{postgres.url}#{name}")
        import psycopg

        with psycopg.connect(postgres.url) as primary, psycopg.connect(replica.url) as standby:
            assert standby.execute("SELECT pg_is_in_recovery()").fetchone()[0]
            lsn = primary.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
            deadline = time.monotonic() + 30
            while standby.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)).fetchone()[0] is not True:
                assert time.monotonic() < deadline, "the replica did not catch up"
                time.sleep(0.1)
        question = "How much has Taiwan invested directly in Japan?"
        on_primary = Retriever(f"{postgres.url}#{name}").ask(question)
        on_replica = Retriever(f"{replica.url}#{name}").ask(question)
        assert on_replica.answer == on_primary.answer and "9.22 billion" in on_replica.answer.text
        assert [p.to_dict() for p in on_replica.passages] == [p.to_dict() for p in on_primary.passages]
        with pytest.raises(StoreError, match="read-only replica"):
            build_index([seed_corpus], f"{replica.url}#{name}", rebuild=True)
        (tmp_path / "more").mkdir()
        (tmp_path / "more" / "extra.txt").write_text("A new file for the replica to refuse.")
        with pytest.raises(StoreError, match="read-only replica"):
            build_index([seed_corpus, tmp_path / "more"], f"{replica.url}#{name}")
    finally:
        pgserver.stop(replica)


def test_hnsw_search_never_returns_fewer_than_k(tmp_path, postgres, fake_embedder):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(520):
        (folder / f"n{i:03d}.txt").write_text("\n\n".join(f"Note {i}.{j} mentions item {i * 10 + j} and colour "
                                                          f"{(i + j) % 17}." for j in range(8)))
    settings = Settings(store=new_store(postgres), chunk_tokens=24, overlap_tokens=0, title_context=False)
    index_into([folder / "n000.txt"], settings, embedder=fake_embedder)
    small = open_store(settings)  # exact search below GRAPH_ROWS: no graph, and k rows whatever k
    assert small.conn.execute(f"SELECT to_regclass('{small.name}.chunks_embedding')").fetchone()[0] is None
    assert len(small.nearest(fake_embedder.encode(["item 3"])[0], 5)) == min(5, small.size)
    small.close()
    index_into([folder], settings, embedder=fake_embedder)  # past GRAPH_ROWS: the graph is built, in one go
    reader = open_store(settings)
    assert reader.size >= 2000
    query = fake_embedder.encode(["item 1234 colour 5"])[0]
    stored = {r: np.array(json.loads(v), dtype=np.float32)
              for r, v in reader.conn.execute(f"SELECT row, embedding::text FROM {reader.name}.chunks")}
    best = max(float(v @ query) for v in stored.values())
    with reader.reading():
        reader.conn.execute("SET LOCAL enable_seqscan = off")  # the HNSW graph, not a scan of the table
        plan = "\n".join(r[0] for r in reader.conn.execute(
            f"EXPLAIN SELECT row FROM {reader.name}.chunks ORDER BY embedding <=> %s::vector LIMIT 5",
            (str(query.tolist()),)))
        assert "chunks_embedding" in plan
        for k in (1, 5, 100, 1500):
            rows = reader.nearest(query, k)
            assert len(rows) == k == len(set(rows))
        assert abs(float(stored[reader.nearest(query, 1)[0]] @ query) - best) < 1e-5


def test_several_processes_read_one_database(seed_store):
    question = "What was the bilateral trade volume in 2020?"
    procs = [subprocess.Popen([*QA, "ask", question, "--store", seed_store, "--json"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    answers = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        answers.append(json.loads(out))
    assert answers[0] == answers[1] == answers[2] and "71.18" in answers[0]["answer"]["text"]
    assert answers[0]["passages"][0]["source"] == SEED.name


def test_rebuild_swaps_in_whole_and_a_failed_one_keeps_the_old(tmp_path, postgres, fake_embedder):
    folder, settings = tmp_path / "docs", Settings(store=new_store(postgres))
    folder.mkdir()
    (folder / "a.txt").write_text("The archive holds 812 maps of the northern coast.")
    index_into([folder], settings, embedder=fake_embedder)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.txt").write_text("")
    from qa.errors import EmptyCorpusError

    with pytest.raises(EmptyCorpusError):
        index_into([bad], settings, embedder=fake_embedder, rebuild=True)
    assert [c.text for c in stored_chunks(settings)] == ["The archive holds 812 maps of the northern coast."]
    (folder / "b.txt").write_text("A second file about lighthouses.")
    report = index_into([folder], settings.with_(chunk_tokens=64), embedder=fake_embedder, rebuild=True)
    assert sorted(report.added) == ["a.txt", "b.txt"]
    reader = open_store(settings)
    assert reader.manifest.settings["chunk_tokens"] == 64 and reader.size == 2
    leftovers = reader.conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s",
                                    (f"{reader.name}_rebuilding",)).fetchone()[0]
    assert leftovers == 0


def test_both_stores_give_the_same_answers(seed_folder, seed_store):
    """BM25 in SQL equals bm25s, pgvector's cosine equals numpy's: the same passages, highlights and scores."""
    from conftest import QUESTIONS
    from qa.api import Retriever

    folder, database = Retriever(seed_folder), Retriever(seed_store)
    questions = [c["question"] for c in QUESTIONS["answerable"]] + QUESTIONS["off_topic"]
    for question in questions:
        for mode in ("hybrid", "semantic", "keyword"):
            a, b = folder.ask(question, mode=mode, closest=True), database.ask(question, mode=mode, closest=True)
            assert [(p.source, p.start, p.end, p.highlight) for p in a.passages] == \
                [(p.source, p.start, p.end, p.highlight) for p in b.passages], (question, mode)
            assert np.allclose([p.score for p in a.passages], [p.score for p in b.passages], atol=1e-4)
            assert abs(a.confidence - b.confidence) < 1e-4 and a.answer == b.answer
