"""Tune the chunk size and overlap on SciFact *train* (test is only for reporting).

Usage: .venv/bin/python scripts/tune_chunks.py [DATASET_DIR] [SIZE/OVERLAP ...]
Each setting embeds the corpus once (cached in .qa-cache/eval, as `qa eval` does) and prints one JSON line with
the default hybrid pipeline's train metrics.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qa.config import Settings  # noqa: E402
from qa.evaluation import CACHE_DIR, load_beir, prepare, score  # noqa: E402

SETTINGS = ["96/24", "128/32", "160/32", "192/48", "254/64"]


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "eval" / "scifact"
    dataset = load_beir(folder, "train")
    for pair in sys.argv[2:] or SETTINGS:
        size, overlap = map(int, pair.split("/"))
        settings = Settings().with_(chunk_tokens=size, overlap_tokens=overlap)
        retriever, info = prepare(folder, dataset, settings, None, CACHE_DIR)
        metrics = score(retriever, dataset, "hybrid", settings.min_relevance)
        print(json.dumps({"chunk_tokens": size, "overlap_tokens": overlap, "chunks": info["chunks"],
                          "ndcg@10": metrics["ndcg@10"], "recall@100": metrics["recall@100"]}), flush=True)


if __name__ == "__main__":
    main()
