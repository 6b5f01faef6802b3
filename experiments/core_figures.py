"""Print the core figures quoted in the README: index time, query latency and abstention on the default article.

Usage: .venv/bin/python experiments/core_figures.py [--json]
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qa.api import Retriever, build_index, shared_embedder  # noqa: E402
from qa.config import Settings  # noqa: E402
from qa.evaluation import p50_p95  # noqa: E402


def main() -> None:
    questions = json.loads((ROOT / "tests" / "data" / "seed_questions.json").read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(index_dir=Path(tmp) / "index")
        began = time.perf_counter()
        shared_embedder(settings)
        load_s = time.perf_counter() - began
        report = build_index([ROOT / "corpus"], settings=settings)
        again = build_index([ROOT / "corpus"], settings=settings)
        retriever = Retriever(settings.index_dir, settings=settings)
        answerable = questions["answerable"]
        latencies, rank1, top3, refused, highlighted = [], 0, 0, 0, 0
        for case in answerable:
            t = time.perf_counter()
            passages = retriever.retrieve(case["question"])
            latencies.append((time.perf_counter() - t) * 1000)
            refused += not passages
            rank1 += bool(passages) and case["answer"] in passages[0].text
            top3 += any(case["answer"] in p.text for p in passages[:3])
            # The answer's own words (or the whole answer) inside the rank-1 highlight, white space aside.
            want = " ".join((case.get("sentence") or case["answer"]).split())
            highlighted += bool(passages) and want in " ".join(passages[0].highlighted_text.split())
        answered = 0
        for question in questions["off_topic"]:
            t = time.perf_counter()
            answered += bool(retriever.retrieve(question))
            latencies.append((time.perf_counter() - t) * 1000)
    latencies.sort()
    figures = {
        "model_load_s": round(load_s, 2),
        "index_default_corpus_s": round(report.seconds, 2),
        "chunks": report.total_chunks,
        "reindex_unchanged_s": round(again.seconds, 3),
        "query_ms_p50": round(p50_p95(latencies)[0], 1),
        "query_ms_p95": round(p50_p95(latencies)[1], 1),
        "answerable": len(answerable),
        "answerable_rank1": rank1,
        "answerable_top3": top3,
        "answerable_rank1_highlighted": highlighted,
        "answerable_refused": refused,
        "off_topic": len(questions["off_topic"]),
        "off_topic_answered": answered,
    }
    if "--json" in sys.argv:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:24} {value}")


if __name__ == "__main__":
    main()
