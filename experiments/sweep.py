"""Sweep settings on a BEIR dataset's *train* split (test is for reporting only): one JSON line per combination.

Usage: .venv/bin/python experiments/sweep.py [--data DIR] [--split train] [--mode hybrid] KEY=V1,V2 [KEY=V1,V2 ...]
  e.g. experiments/sweep.py alpha=0.6,0.7,0.8 rerank_extra=3,5
       experiments/sweep.py chunk_tokens=128,160 overlap_tokens=32
       experiments/sweep.py bm25_stemmer=english, bm25_stopwords=en,     (an empty value turns it off)

Every key is a field of qa.config.Settings. Settings that shape the chunks or their vectors re-index the corpus
(each combination once, cached in .qa-cache/eval as `qa eval` does); BM25's parameters and tokenizer rebuild only
the keyword index; query-time weights reuse the index as it is. The best combination by nDCG@10 is printed last.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qa.config import Settings  # noqa: E402
from qa.evaluation import CACHE_DIR, load_beir, prepare, score  # noqa: E402


def _value(field: dataclasses.Field, text: str) -> object:
    kind = str(field.type)
    if "bool" in kind:
        return text.lower() in ("1", "true", "yes", "on")
    if "int" in kind:
        return int(text)
    if "float" in kind:
        return float(text)
    return text


def grid(pairs: list[str]) -> list[dict[str, object]]:
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    axes = []
    for pair in pairs:
        key, _, values = pair.partition("=")
        if key not in fields:
            raise SystemExit(f"unknown setting '{key}': one of {', '.join(sorted(fields))}")
        axes.append([(key, _value(fields[key], v)) for v in values.split(",")])
    return [dict(combo) for combo in itertools.product(*axes)] or [{}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("settings", nargs="*", metavar="KEY=V1,V2")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "eval" / "scifact"))
    parser.add_argument("--split", default="train")
    parser.add_argument("--mode", default="hybrid")
    args = parser.parse_args()
    folder = Path(args.data)
    dataset = load_beir(folder, args.split)
    lines = []
    for changes in grid(args.settings):
        settings = Settings().with_(**changes)
        retriever, info = prepare(folder, dataset, settings, None, CACHE_DIR)
        metrics = score(retriever, dataset, args.mode, settings.min_confidence)
        line = {**changes, **{k: metrics[k] for k in ("ndcg@10", "recall@10", "recall@100", "mrr@10")},
                "query_ms_p50": metrics["query_ms_p50"], "chunks": info["chunks"]}
        print(json.dumps(line), flush=True)
        lines.append(line)
    print(json.dumps({"best": max(lines, key=lambda line: line["ndcg@10"])}))


if __name__ == "__main__":
    main()
