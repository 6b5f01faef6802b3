"""Tune on SciFact's *train* split (test is only for reporting): title context, then the query-time weights.

Usage: .venv/bin/python scripts/tune_scifact.py [DATASET_DIR]
Prints one JSON line per setting tried and the best last. Indexes are the ones `qa eval` caches (.qa-cache/eval):
each chunk setting is embedded once, and every weight setting reuses it.
"""
from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qa.config import Settings  # noqa: E402
from qa.evaluation import CACHE_DIR, load_beir, prepare, score  # noqa: E402

WEIGHTS = {"alpha": [0.5, 0.6, 0.7, 0.8], "sentence_weight": [0.3, 0.5, 0.7], "sentence_terms_weight": [0.0, 0.5]}


def run(retriever, dataset, base: Settings, **changes) -> dict:
    # A large sentence cache: every setting after the first reuses the sentence vectors of the same passages.
    retriever.searcher.settings = retriever.settings.with_(sentence_cache_chunks=200_000, **changes)
    metrics = score(retriever, dataset, "hybrid", base.min_relevance)
    line = {**changes, "ndcg@10": metrics["ndcg@10"], "recall@100": metrics["recall@100"]}
    print(json.dumps(line), flush=True)
    return line


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "eval" / "scifact"
    base = Settings()
    dataset = load_beir(folder, "train")
    best = None
    for titles in (False, True):
        settings = base.with_(title_context=titles)
        retriever, _ = prepare(folder, dataset, settings, None, CACHE_DIR)
        result = run(retriever, dataset, base, title_context=titles)
        if best is None or result["ndcg@10"] > best[0]["ndcg@10"]:
            best = (result, retriever)
    retriever = best[1]
    lines = [run(retriever, dataset, base, title_context=best[0]["title_context"], **dict(zip(WEIGHTS, values)))
             for values in itertools.product(*WEIGHTS.values())]
    print("best on train:", json.dumps(max(lines, key=lambda r: r["ndcg@10"])))


if __name__ == "__main__":
    main()
