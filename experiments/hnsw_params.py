"""HNSW parameters at a million chunks: recall@10 against exact search and search time for M x efSearch.

Usage: .venv/bin/python experiments/hnsw_params.py INDEX_DIR [DATASET_DIR]
INDEX_DIR is any index with real vectors (e.g. the SciFact one `qa eval` caches in .qa-cache/eval/*/index); the
million rows are those vectors plus mixtures of two of them with noise, as in `qa bench`. Queries: the dataset's
test questions. Prints one JSON line per setting. Takes about 15 minutes on two cores.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import faiss  # noqa: E402

from qa.api import shared_embedder  # noqa: E402
from qa.bench import synthetic_vectors  # noqa: E402
from qa.config import Settings  # noqa: E402
from qa.evaluation import load_beir  # noqa: E402
from qa.index.store import read_index  # noqa: E402

SIZE = 1_000_000
SETTINGS = [(32, 64), (48, 64), (32, 128)]  # (M, efConstruction)


def main() -> None:
    base = read_index(Path(sys.argv[1]), searchable=False)
    folder = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT.parent / "shared" / "eval" / "scifact"
    real = np.asarray(base.vectors)
    vectors = synthetic_vectors(real, SIZE)
    questions = list(load_beir(folder, "test").queries.values())
    queries = shared_embedder(Settings(), str(base.manifest.model.get("backend"))).encode(questions)
    exact = faiss.IndexFlatIP(real.shape[1])
    exact.add(vectors)
    _, truth = exact.search(queries, 10)
    del exact
    for m, ef_construction in SETTINGS:
        began = time.time()
        graph = faiss.IndexHNSWFlat(real.shape[1], m, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = ef_construction
        graph.add(vectors)
        build = time.time() - began
        for ef in (512, 768, 1024):
            graph.hnsw.efSearch = ef
            latencies = []
            for query in queries[:100]:
                began = time.perf_counter()
                graph.search(query[None], 100)
                latencies.append((time.perf_counter() - began) * 1000)
            _, found = graph.search(queries, 10)
            recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, found)]))
            print(json.dumps({"M": m, "efConstruction": ef_construction, "efSearch": ef, "build_s": round(build),
                              "recall_at_10": round(recall, 4), "search_p50_ms": round(float(np.median(latencies)), 2)}),
                  flush=True)
        del graph


if __name__ == "__main__":
    main()
