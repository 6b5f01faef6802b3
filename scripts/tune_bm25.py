"""Sweep BM25's k1 and b on SciFact's *train* split, the hybrid pipeline otherwise at its defaults.

Usage: .venv/bin/python scripts/tune_bm25.py [DATASET_DIR]
Each setting rebuilds only the BM25 index from the stored chunks (nothing is re-embedded). One JSON line per
setting, the best last; the cached index is left with the defaults' BM25 at the end.
"""
from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qa.api import Retriever, build_index  # noqa: E402
from qa.config import Settings  # noqa: E402
from qa.evaluation import CACHE_DIR, load_beir, prepare, score  # noqa: E402

GRID = {"bm25_k1": [0.9, 1.2, 1.5], "bm25_b": [0.5, 0.75, 0.9]}


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "eval" / "scifact"
    base = Settings()
    dataset = load_beir(folder, "train")
    retriever, _ = prepare(folder, dataset, base, None, CACHE_DIR)
    cache = retriever.searcher._sentence_cache  # same chunks in every setting: their sentence vectors carry over
    lines = []
    for values in [*itertools.product(*GRID.values()), (base.bm25_k1, base.bm25_b)]:
        settings = retriever.settings.with_(sentence_cache_chunks=200_000, **dict(zip(GRID, values)))
        build_index([settings.corpus_dir], settings=settings)
        retriever = Retriever(settings.index_dir, settings=settings)
        retriever.searcher._sentence_cache = cache
        m = score(retriever, dataset, "hybrid", base.min_relevance)
        lines.append({**dict(zip(GRID, values)), "ndcg@10": m["ndcg@10"], "recall@100": m["recall@100"]})
        print(json.dumps(lines[-1]), flush=True)
    print("best on train:", json.dumps(max(lines[:-1], key=lambda r: r["ndcg@10"])))


if __name__ == "__main__":
    main()
