"""`qa eval`: retrieval quality on a BEIR-layout dataset, indexed through the same pipeline as `qa index`."""
from __future__ import annotations

import hashlib
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qa.api import Retriever, build_index
from qa.backends import resolve_backend
from qa.config import Settings, home
from qa.errors import InputPathError

CACHE_DIR = home() / ".qa-cache" / "eval"


@dataclass(frozen=True)
class Dataset:
    corpus: dict[str, tuple[str, str]]  # id -> (title, text)
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]  # query id -> {doc id: grade}


def load_beir(folder: Path, split: str, max_queries: int | None = None, max_docs: int | None = None) -> Dataset:
    """Read corpus.jsonl, queries.jsonl and qrels/<split>.tsv. A slice keeps every judged document of the kept
    queries, so that its figures stay meaningful."""
    for name in ("corpus.jsonl", "queries.jsonl", f"qrels/{split}.tsv"):
        if not (folder / name).is_file():
            raise InputPathError(f"{folder / name} is missing: give a folder in BEIR layout "
                                 "(corpus.jsonl, queries.jsonl, qrels/<split>.tsv)")
    qrels: dict[str, dict[str, int]] = {}
    with open(folder / f"qrels/{split}.tsv", encoding="utf-8") as handle:
        for line in handle:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 3 and parts[2].lstrip("-").isdigit():
                qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    if max_queries:
        qrels = dict(list(qrels.items())[:max_queries])
    queries = {}
    with open(folder / "queries.jsonl", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            if str(row["_id"]) in qrels:
                queries[str(row["_id"])] = row["text"]
    needed = {d for judged in qrels.values() for d in judged}
    corpus = {}
    with open(folder / "corpus.jsonl", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            doc = str(row["_id"])
            if max_docs is None or doc in needed or len(corpus) < max_docs:
                corpus[doc] = (row.get("title") or "", row.get("text") or "")
    return Dataset(corpus, queries, {q: r for q, r in qrels.items() if q in queries})


def ndcg_at(ranked: list[str], judged: dict[str, int], k: int) -> float:
    """nDCG@k with linear gain, as trec_eval and BEIR compute it."""
    dcg = sum(judged.get(doc, 0) / math.log2(i + 2) for i, doc in enumerate(ranked[:k]))
    ideal = sorted((g for g in judged.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at(ranked: list[str], judged: dict[str, int], k: int) -> float:
    relevant = {d for d, g in judged.items() if g > 0}
    return len(relevant & set(ranked[:k])) / len(relevant) if relevant else 0.0


def mrr_at(ranked: list[str], judged: dict[str, int], k: int) -> float:
    for i, doc in enumerate(ranked[:k]):
        if judged.get(doc, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def p50_p95(latencies: list[float]) -> tuple[float, float]:
    """The median and the 95th percentile (nearest rank below) of a list of timings."""
    ordered = sorted(latencies)
    return statistics.median(ordered), ordered[int(0.95 * (len(ordered) - 1))]


def write_corpus(dataset: Dataset, folder: Path) -> None:
    """One text file per document (title, blank line, text), so the corpus goes through `qa index` itself."""
    folder.mkdir(parents=True, exist_ok=True)
    for doc, (title, text) in dataset.corpus.items():
        body = f"{title}\n\n{text}" if title else text
        target = folder / f"{_safe_id(doc)}.txt"
        if not target.exists() or target.read_text(encoding="utf-8") != body:
            target.write_text(body, encoding="utf-8")


def _safe_id(doc: str) -> str:
    return doc if doc.replace("-", "").replace("_", "").isalnum() else hashlib.sha1(doc.encode()).hexdigest()


def document_sources(dataset: Dataset) -> dict[str, str]:
    """The indexed file of each document -> the document's id: ids with ":", "/" or "." get a hashed file name
    (write_corpus), and the judgments name the id."""
    return {f"{_safe_id(doc)}.txt": doc for doc in dataset.corpus}


def rank_documents(retriever: Retriever, question: str, mode: str, depth: int, rerank: int,
                   ids: dict[str, str]) -> tuple[list[str], float]:
    """Documents best first (a document's score is its best chunk's), and the question's relevance."""
    result = retriever.searcher.ask(question, k=depth, mode=mode, rerank=rerank)
    ranked: dict[str, None] = {}
    for hit in result.hits:
        ranked.setdefault(ids[hit.chunk.source])
    return list(ranked), result.confidence


def prepare(folder: Path, dataset: Dataset, settings: Settings, max_docs: int | None, cache: Path,
            progress: Callable[[str, int, int], None] | None = None) -> tuple[Retriever, dict[str, object]]:
    """Index the dataset's corpus (once: kept in `cache`, keyed by the corpus and the index settings)."""
    key = hashlib.sha1(json.dumps([str(folder.resolve()), len(dataset.corpus), max_docs, settings.chunk_settings(),
                                   settings.model_name, resolve_backend(settings)]
                                  ).encode()).hexdigest()[:12]
    work = cache / f"{folder.name}-{key}"  # kept: a second run embeds nothing
    write_corpus(dataset, work / "corpus")
    settings = settings.with_(index_dir=work / "index", corpus_dir=work / "corpus", min_confidence=-1.0)
    if settings.store:  # in the database, an index of its own named after the dataset and the settings
        settings = settings.with_(store=f"{settings.store.partition('#')[0]}#eval_{_safe_name(folder.name)}_{key}")
    began = time.perf_counter()
    report = build_index([work / "corpus"], settings=settings, progress=progress)
    info = {"chunks": report.total_chunks, "index_seconds": round(time.perf_counter() - began, 1),
            "embedded_now": report.chunks_embedded, "store": "postgresql" if settings.store else "folder"}
    return Retriever(settings=settings, build_if_missing=False), info


def _safe_name(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name.lower())[:20]


def score(retriever: Retriever, dataset: Dataset, mode: str, cutoff: float, depth: int = 300,
          rerank: int | None = None, progress: Callable[[str, int, int], None] | None = None) -> dict[str, object]:
    """The metrics over every judged query, with latency and what the abstention cut-off would refuse. `rerank`
    defaults to what `qa ask` re-scores (k + rerank_extra of the searcher's settings), not to `depth`."""
    settings = retriever.searcher.settings
    rerank = settings.k + settings.rerank_extra if rerank is None else rerank
    scores: dict[str, list[float]] = {"ndcg@10": [], "recall@10": [], "recall@100": [], "mrr@10": []}
    latencies, refused = [], 0
    ids = document_sources(dataset)
    for number, (qid, judged) in enumerate(dataset.qrels.items(), 1):
        t = time.perf_counter()
        ranked, relevance = rank_documents(retriever, dataset.queries[qid], mode, depth, rerank, ids)
        latencies.append((time.perf_counter() - t) * 1000)
        refused += relevance < cutoff  # every judged query is answerable: a refusal is an error
        scores["ndcg@10"].append(ndcg_at(ranked, judged, 10))
        scores["recall@10"].append(recall_at(ranked, judged, 10))
        scores["recall@100"].append(recall_at(ranked, judged, 100))
        scores["mrr@10"].append(mrr_at(ranked, judged, 10))
        if progress:
            progress("query", number, len(dataset.qrels))
    p50, p95 = p50_p95(latencies)
    result: dict[str, object] = {name: round(statistics.fmean(v), 4) for name, v in scores.items()}
    result.update({"refused_at_cutoff": refused if mode != "keyword" else None, "cutoff": cutoff,
                   "query_ms_p50": round(p50, 1), "query_ms_p95": round(p95, 1)})
    return result


def evaluate(folder: Path, settings: Settings, *, split: str = "test", mode: str | None = None,
             max_queries: int | None = None, max_docs: int | None = None, depth: int = 300, rerank: int | None = None,
             progress: Callable[[str, int, int], None] | None = None, cache: Path = CACHE_DIR) -> dict[str, object]:
    dataset = load_beir(folder, split, max_queries, max_docs)
    mode = mode or settings.mode
    retriever, info = prepare(folder, dataset, settings, max_docs, cache, progress)
    result = score(retriever, dataset, mode, settings.min_confidence, depth, rerank, progress)
    return {"dataset": folder.name, "split": split, "mode": mode, "queries": len(dataset.qrels),
            "documents": len(dataset.corpus), **info, **result}
