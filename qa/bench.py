"""Benchmark (`qa bench`): ingest against stock torch encoding, query latency by size, incremental, start-up."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from qa.api import shared_embedder
from qa.backends import explain_backend, machine
from qa.citations import cite
from qa.config import PROJECT_DIR, Settings
from qa.evaluation import Dataset, load_beir, p50_p95, write_corpus
from qa.index.sync import index_paths
from qa.records import Chunk
from qa.retrieval import Searcher, clean_question
from qa.index.dense import DenseIndex
from qa.index.keyword import KeywordIndex, bm25_tokenize
from qa.index.store import IndexData, read_index

Progress = Callable[[str], None]
DEFAULT_DATA = PROJECT_DIR.parent / "shared" / "eval" / "scifact"


class _Tiled(Sequence):
    """The base chunks repeated to `size` rows: the large synthetic indexes reuse real texts."""

    def __init__(self, base: list[Chunk], size: int) -> None:
        self.base, self.size = base, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, row):  # type: ignore[override]
        if isinstance(row, slice):
            return [self[i] for i in range(*row.indices(self.size))]
        return self.base[row % len(self.base)]


def _machine() -> dict[str, object]:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {**machine(), "memory_gib": round(memory, 1), "python": platform.python_version()}


def backend_choice(settings: Settings) -> dict[str, object]:
    """The backend a new index gets here and why; with "auto", every backend's measured timings."""
    return explain_backend(settings).to_dict()


def _files(dataset: Dataset, folder: Path, count: int) -> Path:
    write_corpus(Dataset(dict(list(dataset.corpus.items())[:count]), {}, {}), folder)
    return folder


def ingest(dataset: Dataset, work: Path, settings: Settings, files: int, say: Progress) -> dict[str, object]:
    """The full `qa index` pipeline against `SentenceTransformer.encode` on torch, over the same chunks."""
    corpus = _files(dataset, work / "corpus", files)
    settings = settings.with_(index_dir=work / "index")
    began = time.perf_counter()
    embedder = shared_embedder(settings)
    load_seconds = time.perf_counter() - began
    say(f"ingest: indexing {files} files with the {embedder.backend} backend")
    report = index_paths([corpus], settings, embedder=embedder, rebuild=True)
    full, embed = report.seconds, float(report.extra["embed_seconds"])
    texts = [c.index_text for c in read_index(settings.index_dir, searchable=False).chunks]

    say(f"ingest: the same {len(texts)} chunks through stock sentence-transformers on torch")
    from sentence_transformers import SentenceTransformer

    stock_model = SentenceTransformer(settings.model_path, device="cpu")
    stock_model.encode(texts[:32])  # warm-up, as the pipeline's model is warm
    began = time.perf_counter()
    stock_model.encode(texts, batch_size=32, show_progress_bar=False)
    stock = time.perf_counter() - began
    del stock_model

    say("incremental: one file of the folder changed, re-index")
    changed = sorted(corpus.glob("*.txt"))[files // 2]
    changed.write_text(changed.read_text(encoding="utf-8") + "\n\nOne more sentence, added by the benchmark.",
                       encoding="utf-8")
    began = time.perf_counter()
    again = index_paths([corpus], settings, embedder=embedder)
    incremental = time.perf_counter() - began
    return {
        "backend": embedder.backend, "files": files, "chunks": len(texts), "model_load_s": round(load_seconds, 2),
        "pipeline_s": round(full, 2), "pipeline_chunks_per_s": round(len(texts) / full, 1),
        "stock_torch_s": round(stock, 2), "stock_chunks_per_s": round(len(texts) / stock, 1),
        "ratio": round(stock / full, 2), "non_embedding_share": round(1 - embed / full, 3),
        "incremental": {"files_changed": 1, "chunks_embedded": again.chunks_embedded,
                        "seconds": round(incremental, 2), "share_of_full": round(incremental / full, 4)},
    }


def synthetic_vectors(real: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """`size` unit rows: the real ones first, then mixtures of two real vectors plus noise (the same kind of
    text, not copies: an approximate index must tell near neighbours apart)."""
    n = len(real)
    rng = np.random.default_rng(seed)
    vectors = np.empty((size, real.shape[1]), dtype=np.float32)
    vectors[: min(n, size)] = real[:size]
    for begin in range(n, size, 100_000):
        rows = min(100_000, size - begin)
        mix = 0.6 * real[rng.integers(0, n, rows)] + 0.4 * real[rng.integers(0, n, rows)]
        mix += rng.normal(0, 0.03, mix.shape).astype(np.float32)
        vectors[begin : begin + rows] = mix / np.linalg.norm(mix, axis=1, keepdims=True)
    return vectors


def _synthetic(base: IndexData, size: int) -> IndexData:
    """`size` rows (see synthetic_vectors); texts and BM25 repeat the real ones."""
    n = len(base.chunks)
    vectors = synthetic_vectors(base.vectors, size)
    tokens = bm25_tokenize([c.index_text for c in base.chunks], base.manifest.bm25)
    bm25 = KeywordIndex.from_tokens([tokens[i % n] for i in range(size)], base.manifest.bm25)
    rows = base.sentence_rows[np.arange(size) % n]
    return replace(base, chunks=_Tiled(list(base.chunks), size), vectors=vectors, dense=DenseIndex.build(vectors),
                   bm25=bm25, sentence_rows=rows, manifest=replace(base.manifest, chunk_count=size))


def query(base: IndexData, settings: Settings, questions: list[str], sizes: list[int],
          say: Progress) -> list[dict[str, object]]:
    """p50/p95 of `retrieve()` (search and citation) and the dense index's recall@10 against exact search."""
    embedder = shared_embedder(settings, str(base.manifest.model.get("backend")))
    warm = getattr(embedder, "warm", None)
    if warm is not None:  # as the web chat does before its first question (Retriever.warm)
        warm()
    out = []
    for size in sizes:
        say(f"query: building a {size:,}-chunk index")
        began = time.perf_counter()
        data = _synthetic(base, size)
        build = time.perf_counter() - began
        searcher = Searcher(data, settings, embedder)
        for q in questions[:10]:
            searcher.ask(q)
        latencies = []
        for q in questions:
            t = time.perf_counter()
            [cite(h) for h in searcher.ask(q).hits]
            latencies.append((time.perf_counter() - t) * 1000)
        p50, p95 = p50_p95(latencies)
        alone = []
        for q in questions:
            t = time.perf_counter()
            embedder.encode([clean_question(q, settings.max_question_chars)])
            alone.append((time.perf_counter() - t) * 1000)
        embed50, embed95 = p50_p95(alone)
        queries = embedder.encode(questions)
        exact = DenseIndex.build(data.vectors, exact_limit=len(data.vectors))
        _, truth = exact.search(queries, 10)
        _, found = data.dense.search(queries, 10)
        recall = float(np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found)]))
        out.append({"chunks": size, "vectors": "real" if size <= len(base.chunks) else "synthetic",
                    "dense_index": "hnsw" if DenseIndex.approximate(size) else "exact", "build_s": round(build, 1),
                    "p50_ms": round(p50, 2), "p95_ms": round(p95, 2), "question_embed_p50_ms": round(embed50, 2),
                    "question_embed_p95_ms": round(embed95, 2),
                    "recall_at_10_vs_exact": round(recall, 4)})
        say(f"query: {out[-1]}")
    return out


# Peak RSS from VmHWM: getrusage's ru_maxrss survives exec on Linux, so it would report the benchmark's own peak.
_STARTUP = """
import sys
from qa import retrieve
passages = retrieve(sys.argv[2], index=sys.argv[1])
peak = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(len(passages), peak)
"""


def startup(index: Path, question: str) -> dict[str, object]:
    """A new process: interpreter, imports, model and index loading, then one answer."""
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _STARTUP, str(index), question], capture_output=True, text=True,
                          check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    seconds = time.perf_counter() - began
    passages, rss_kib = done.stdout.split()[-2:]
    return {"seconds_to_first_answer": round(seconds, 2), "peak_rss_mib": round(int(rss_kib) / 1024, 1),
            "passages": int(passages)}


def answerable_question(dataset: Dataset, files: int) -> str:
    """The first question whose judged document is among the first `files` documents: the start-up figure is the
    time to a real answer, not to "not found" (a question about a document not indexed is refused)."""
    indexed = set(list(dataset.corpus)[:files])
    for query_id, judged in dataset.qrels.items():
        if indexed.intersection(judged) and query_id in dataset.queries:
            return dataset.queries[query_id]
    return next(iter(dataset.queries.values()))


def bench(data: Path | None, settings: Settings, files: int = 1000, sizes: tuple[int, ...] = (10_000, 100_000,
          1_000_000), say: Progress = lambda _: None) -> dict[str, object]:
    folder = data or DEFAULT_DATA
    dataset = load_beir(folder, "test")
    questions = list(dataset.queries.values())
    result: dict[str, object] = {"machine": _machine(), "data": folder.name}
    say("backend: measuring the embedding backends this CPU runs (once per machine; cached)")
    result["backend_choice"] = backend_choice(settings)
    with tempfile.TemporaryDirectory(prefix="qa-bench-") as temp:
        work = Path(temp)
        result["ingest"] = ingest(dataset, work, settings, files, say)
        say("start-up: a new process answering from the built index")
        result["startup"] = startup(work / "index", answerable_question(dataset, files))
        if not sizes:
            result["query"] = []
            return result
        # The real base for the query sizes: more of the dataset, added incrementally to the same index.
        needed = max(sizes[0], 1)
        count = files
        base = read_index(work / "index", searchable=False)
        while len(base.chunks) < needed and count < len(dataset.corpus):
            count = min(len(dataset.corpus), int(count * needed / max(len(base.chunks), 1) * 1.05) + 1)
            say(f"query: embedding {count} files for {needed:,} real chunks")
            index_paths([_files(dataset, work / "corpus", count)], settings.with_(index_dir=work / "index"),
                        embedder=shared_embedder(settings))
            base = read_index(work / "index", searchable=False)
        real = min(len(base.chunks), needed)
        base = replace(base, chunks=list(base.chunks[:real]), vectors=np.asarray(base.vectors[:real]),
                       sentence_rows=base.sentence_rows[:real])  # its dense and BM25 indexes are rebuilt for each size
        result["query"] = query(base, settings, questions, list(sizes), say)
    return result


def to_text(result: dict) -> str:
    m, i, s = result["machine"], result["ingest"], result["startup"]
    c = result["backend_choice"]
    caps = "".join(f", {k}={v}" for k, v in m["caps"].items())
    lines = [f"machine: {m['cpu']} (family/model {m['family_model']}, {m['arch']}), {m['cores']} cores, "
             f"{m['memory_gib']} GiB, Python {m['python']}; ISA {' '.join(m['isa'])}{caps}",
             f"backend: {c['backend']}: {c['reason']}",
             f"ingest ({i['files']} {result['data']} files, {i['chunks']} chunks, backend {i['backend']}): "
             f"{i['pipeline_chunks_per_s']} chunks/s for the whole pipeline vs {i['stock_chunks_per_s']} for stock "
             f"torch encode = {i['ratio']}x; time not spent embedding {i['non_embedding_share']:.1%}",
             f"incremental: 1 file changed -> {i['incremental']['seconds']} s "
             f"({i['incremental']['share_of_full']:.2%} of the full {i['pipeline_s']} s build)",
             f"start-up to first answer: {s['seconds_to_first_answer']} s, peak RSS {s['peak_rss_mib']} MiB"]
    for q in result["query"]:
        lines.append(f"retrieve() at {q['chunks']:>9,} chunks ({q['vectors']}, {q['dense_index']}): "
                     f"p50 {q['p50_ms']} ms, p95 {q['p95_ms']} ms, recall@10 vs exact {q['recall_at_10_vs_exact']}; "
                     f"embedding the question alone p50 {q['question_embed_p50_ms']} ms")
    return "\n".join(lines)


def dumps(result: dict) -> str:
    return json.dumps(result)
