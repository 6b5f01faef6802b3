"""Tune the optional re-scoring signals on SciFact *train* (test is only for reporting).

Usage: .venv/bin/python scripts/tune_rescoring.py feedback|document [DATASET_DIR]
  feedback  pseudo-relevance feedback: Settings.feedback_weight x feedback_depth
  document  a chunk gains the mean score of its document's other candidates: Settings.document_weight
Prints one JSON line per setting and the best last; reuses the index `qa eval` caches (.qa-cache/eval).
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

GRIDS = {
    "feedback": {"feedback_weight": [0.0, 0.25, 0.5, 1.0], "feedback_depth": [2, 3, 5, 10]},
    "document": {"document_weight": [0.0, 0.05, 0.1, 0.2, 0.3]},
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in GRIDS:
        raise SystemExit(__doc__)
    grid = GRIDS[sys.argv[1]]
    folder = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT.parent / "shared" / "eval" / "scifact"
    base = Settings()
    dataset = load_beir(folder, "train")
    retriever, _ = prepare(folder, dataset, base, None, CACHE_DIR)
    lines, tried = [], set()
    for values in itertools.product(*grid.values()):
        changes = dict(zip(grid, values))
        off = {k: v for k, v in changes.items() if not k.endswith("_weight") or v} if any(
            k.endswith("_weight") and v for k, v in changes.items()) else "off"
        if str(off) in tried:
            continue  # with its weight at 0 a signal is off, whatever its other parameters
        tried.add(str(off))
        retriever.searcher.settings = retriever.settings.with_(**changes)
        metrics = score(retriever, dataset, "hybrid", base.min_relevance)
        lines.append({**changes, "ndcg@10": metrics["ndcg@10"], "recall@100": metrics["recall@100"]})
        print(json.dumps(lines[-1]), flush=True)
    print("best on train:", json.dumps(max(lines, key=lambda r: r["ndcg@10"])))


if __name__ == "__main__":
    main()
