"""Tune pseudo-relevance feedback on SciFact *train* (test is only for reporting).

Usage: .venv/bin/python scripts/tune_feedback.py [DATASET_DIR]
Prints one JSON line per setting (feedback weight x depth) and the best last; reuses the index `qa eval` caches.
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

GRID = {"feedback_weight": [0.0, 0.25, 0.5, 1.0], "feedback_depth": [2, 3, 5, 10]}


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "eval" / "scifact"
    base = Settings()
    dataset = load_beir(folder, "train")
    retriever, _ = prepare(folder, dataset, base, None, CACHE_DIR)
    lines = []
    for values in itertools.product(*GRID.values()):
        changes = dict(zip(GRID, values))
        if changes["feedback_weight"] == 0 and changes["feedback_depth"] != GRID["feedback_depth"][0]:
            continue  # off is off, whatever the depth
        retriever.searcher.settings = retriever.settings.with_(**changes)
        metrics = score(retriever, dataset, "hybrid", base.min_relevance, rerank=base.k + base.rerank_extra)
        lines.append({**changes, "ndcg@10": metrics["ndcg@10"], "recall@100": metrics["recall@100"]})
        print(json.dumps(lines[-1]), flush=True)
    print("best on train:", json.dumps(max(lines, key=lambda r: r["ndcg@10"])))


if __name__ == "__main__":
    main()
