"""The hybrid weight `alpha` chosen on two genres at once: SciFact *train* claims and half of SQuAD's articles.

Usage: .venv/bin/python experiments/fusion_joint.py [--alphas 0.4,0.5,0.6,0.7,0.8,0.9] [--cache DIR]

For each alpha, through the product's own `ask` (fusion, the answer model's re-scoring, highlights):
  scifact_train  nDCG@10 of SciFact's train claims (809) over its corpus
  squad_tune     share of the questions of SQuAD half's even-numbered articles (sorted by title) whose answer is in
                 the top passage
The chosen alpha maximises the mean of those two. Reported where it was not chosen: SciFact *test* nDCG@10 and
SQuAD's odd-numbered articles (answer in the top passage, and inside its highlight), at the chosen alpha and at the
shipped one. The answer model itself was fitted on all of SQuAD half (experiments/answers.py): only alpha is held
out here. Needs `experiments/answers.py gather` first (its SQuAD index is reused).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from experiments.answers import _span_label, squad_corpus  # noqa: E402
from qa.api import Retriever  # noqa: E402
from qa.config import Settings  # noqa: E402
from qa.evaluation import CACHE_DIR, load_beir, prepare, score  # noqa: E402

SCIFACT = ROOT.parent / "shared" / "eval" / "scifact"


def squad_figures(retriever: Retriever, questions: list[dict]) -> dict[str, float]:
    top = inside = 0
    for q in questions:
        hits = retriever.searcher.ask(q["question"], k=5, refuse=False).hits
        if hits:  # the label answers.py fits on: the answer inside the span, in the right file
            chunk = hits[0].chunk
            top += _span_label(q, chunk.source, (chunk.start, chunk.end), "")
            inside += _span_label(q, chunk.source, hits[0].highlight, "")
    return {"top_passage": round(top / len(questions), 4), "highlight": round(inside / len(questions), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--alphas", default="0.4,0.5,0.6,0.7,0.8,0.9")
    parser.add_argument("--cache", type=Path, default=ROOT / ".qa-cache" / "answers")
    args = parser.parse_args()
    if not SCIFACT.is_dir() or not (ROOT.parent / "shared" / "squad").is_dir():
        raise SystemExit("../shared/eval/scifact and ../shared/squad are needed")
    shipped = Settings().alpha
    questions = squad_corpus(args.cache / "squad" / "corpus")
    titles = sorted({q["group"] for q in questions})
    tune = [q for q in questions if titles.index(q["group"]) % 2 == 0]
    held = [q for q in questions if titles.index(q["group"]) % 2 == 1]
    index = args.cache / "squad" / "index"
    if not index.is_dir():
        raise SystemExit(f"no SQuAD index in {index}: run experiments/answers.py gather first")
    train, test = load_beir(SCIFACT, "train"), load_beir(SCIFACT, "test")

    def retrievers(alpha: float, split) -> tuple[Retriever, Retriever]:  # SciFact's and SQuAD's, at this alpha
        settings = Settings().with_(alpha=alpha)
        return (prepare(SCIFACT, split, settings, None, CACHE_DIR)[0],
                Retriever(index, settings=settings.with_(index_dir=index, min_confidence=-1.0)))

    rows = []
    for alpha in (float(a) for a in args.alphas.split(",")):
        scifact, squad = retrievers(alpha, train)
        row = {"alpha": alpha, "scifact_train": score(scifact, train, "hybrid", -1.0)["ndcg@10"],
               "squad_tune": squad_figures(squad, tune)["top_passage"]}
        row["mean"] = round(statistics.fmean([row["scifact_train"], row["squad_tune"]]), 4)
        print(json.dumps(row), flush=True)
        rows.append(row)
    chosen = max(rows, key=lambda r: (r["mean"], r["alpha"] == shipped))["alpha"]
    for alpha in sorted({chosen, shipped}):
        scifact, squad = retrievers(alpha, test)
        print(json.dumps({"alpha": alpha, "chosen": alpha == chosen, "shipped": alpha == shipped,
                          "scifact_test_ndcg@10": score(scifact, test, "hybrid", -1.0)["ndcg@10"],
                          "squad_held_out": squad_figures(squad, held), "squad_held_out_questions": len(held)}),
              flush=True)


if __name__ == "__main__":
    main()
