"""BM25's tokens on SciFact *train*: English stemming and stop-word removal, each on or off.

Usage: .venv/bin/python scripts/tune_tokens.py [DATASET_DIR]
Each variant re-tokenises the stored chunks (their text and title context) and the questions, and rebuilds only
the keyword index; the vectors are the ones `qa eval` caches (.qa-cache/eval). Prints one JSON line per variant
with the default hybrid pipeline's train metrics, and the keyword-only ones.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qa import retrieval  # noqa: E402
from qa.config import Settings  # noqa: E402
from qa.evaluation import CACHE_DIR, load_beir, prepare, score  # noqa: E402
from qa.store import _bm25s, _stemmer  # noqa: E402


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "eval" / "scifact"
    base = Settings()
    dataset = load_beir(folder, "train")
    retriever, _ = prepare(folder, dataset, base, None, CACHE_DIR)
    searcher = retriever.searcher
    texts = [c.index_text for c in searcher.data.chunks]
    bm25s = _bm25s()
    for stem in (True, False):
        for stop in (True, False):
            def tokenize(batch: list[str], stem=stem, stop=stop) -> list[list[str]]:
                return bm25s.tokenize(batch, stopwords="en" if stop else None, stemmer=_stemmer() if stem else None,
                                      return_ids=False, show_progress=False)
            index = bm25s.BM25(k1=base.bm25_k1, b=base.bm25_b)
            index.index(tokenize(texts), show_progress=False)
            # A new searcher over the new keyword index: it takes its vocabulary and idf from it.
            retriever.searcher = retrieval.Searcher(dataclasses.replace(searcher.data, bm25=index), searcher.settings,
                                                    searcher.embedder)
            retrieval.bm25_tokenize = tokenize
            line = {"stemming": stem, "stop_words_removed": stop}
            for mode in ("hybrid", "keyword"):
                m = score(retriever, dataset, mode, base.min_relevance)
                line[f"{mode} ndcg@10"] = m["ndcg@10"]
                line[f"{mode} recall@100"] = m["recall@100"]
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
