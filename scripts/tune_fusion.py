"""Compare fusion variants on SciFact's *train* split: convex (default), min-max convex, and RRF.

Usage: .venv/bin/python scripts/tune_fusion.py [DATASET_DIR]
One JSON line per setting, the best last. Uses the index `qa eval` caches; the other weights stay at their defaults.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qa.config import Settings  # noqa: E402
from qa.evaluation import CACHE_DIR, load_beir, prepare, score  # noqa: E402

TRIALS = [("convex", 0.8)] + [("minmax", a) for a in (0.5, 0.6, 0.7, 0.8)] + [("rrf", a) for a in (0.5, 0.6, 0.7)]


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "eval" / "scifact"
    base = Settings()
    dataset = load_beir(folder, "train")
    retriever, _ = prepare(folder, dataset, base, None, CACHE_DIR)
    lines = []
    for fusion, alpha in TRIALS:
        retriever.searcher.settings = retriever.settings.with_(sentence_cache_chunks=200_000, fusion=fusion,
                                                               alpha=alpha)
        m = score(retriever, dataset, "hybrid", base.min_relevance)
        lines.append({"fusion": fusion, "alpha": alpha, "ndcg@10": m["ndcg@10"], "recall@100": m["recall@100"]})
        print(json.dumps(lines[-1]), flush=True)
    print("best on train:", json.dumps(max(lines, key=lambda r: r["ndcg@10"])))


if __name__ == "__main__":
    main()
