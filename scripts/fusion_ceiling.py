"""How far can the signals we have go? A linear fusion of ten per-chunk signals, learned on SciFact *train*.

Usage: .venv/bin/python scripts/fusion_ceiling.py [DATASET_DIR]

For every train question it takes the default pipeline's candidates (dense top 100 plus BM25 top 100) and
computes, per chunk:
  cos   the chunk's cosine (the default pipeline's dense signal)
  kw    the chunk's BM25 score over the best chunk's (the default keyword signal)
  dkw   its document's BM25 score (BM25 over whole documents) over the best document's
  dcos  cosine with the mean of its document's chunk vectors
  scos  its best sentence's cosine (the default re-scoring signal; sentence vectors pooled at indexing)
  cov   idf-weighted share of the question's terms the chunk contains
  win2  best mean cosine of two adjacent sentences
  top2  mean cosine of its two best sentences
  big   share of the question's word pairs (stemmed, stop words out) found in the chunk
  first 1 for a document's first chunk
A score is a weighted sum (cos has weight 1), a document's score its best chunk's, and the weights are found by
coordinate ascent on nDCG@10. Prints the default fusion applied to every candidate, the in-sample fit, and the
5-fold cross-validated fit (weights learned on 4/5 of train, scored on the other 1/5), which is what a learned
fusion would really gain. Then the weights fitted on all of train, scored once on test, for the record.
Uses the index `qa eval` caches (.qa-cache/eval); about a minute once that exists.
"""
from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qa.config import Settings  # noqa: E402
from qa.evaluation import CACHE_DIR, load_beir, prepare  # noqa: E402
from qa.store import _bm25s, bm25_tokenize  # noqa: E402

NAMES = ["cos", "kw", "dkw", "dcos", "scos", "cov", "win2", "top2", "big", "first"]
# The default pipeline, 0.7 x (0.7 cos + 0.3 kw) + 0.3 x scos, applied to every candidate.
DEFAULT = np.array([0.49, 0.21, 0, 0, 0.3, 0, 0, 0, 0, 0])
DISCOUNT = 1 / np.log2(np.arange(2, 12))


def features(folder: Path, split: str) -> list[tuple[np.ndarray, np.ndarray, int, np.ndarray, float]]:
    """Per question: the signal matrix, each candidate's document number, the number of documents, the
    documents' grades and the ideal DCG@10."""
    base = Settings()
    dataset = load_beir(folder, split)
    retriever, _ = prepare(folder, dataset, base, None, CACHE_DIR)
    searcher, data = retriever.searcher, retriever.searcher.data
    chunks = data.chunks
    doc_of = searcher._documents()  # each row's document as a number, the sources in order of first row
    sources = list(dict.fromkeys(c.source for c in chunks))
    names = [source[: -len(".txt")] for source in sources]
    vectors = np.asarray(data.vectors, dtype=np.float32)
    means = np.zeros((len(sources), vectors.shape[1]), np.float32)
    np.add.at(means, doc_of, vectors)
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    doc_bm25 = _bm25s().BM25(k1=base.bm25_k1, b=base.bm25_b)
    doc_bm25.index(bm25_tokenize([(retriever.settings.corpus_dir / n).read_text(encoding="utf-8")
                                  for n in sources]), show_progress=False)
    tokens = bm25_tokenize([c.index_text for c in chunks])
    chunk_terms = [{searcher._vocab[t] for t in toks if t in searcher._vocab} for toks in tokens]
    chunk_pairs = [set(zip(toks, toks[1:])) for toks in tokens]
    out = []
    for qid, judged in dataset.qrels.items():
        question = dataset.queries[qid]
        terms = bm25_tokenize([question])[0]
        term_ids = [searcher._vocab[t] for t in terms if t in searcher._vocab]
        keyword = searcher._bm25_scores(term_ids)
        query = searcher.embedder.encode([question])[0]
        rows = np.sort(searcher._candidates(query, base.candidates, keyword if keyword.max() > 0 else None))
        doc_ids = [doc_bm25.vocab_dict[t] for t in terms if t in doc_bm25.vocab_dict]
        doc_kw = np.asarray(doc_bm25.get_scores_from_ids(doc_ids), np.float32) if doc_ids else np.zeros(len(names))
        sentences = [np.asarray(data.chunk_sentence_vectors(int(r)), np.float32) @ query for r in rows]
        wanted, pairs = set(term_ids), set(zip(terms, terms[1:]))
        total = float(sum(searcher._idf[t] for t in wanted)) or 1.0
        signals = np.stack([
            vectors[rows] @ query,
            keyword[rows] / keyword.max() if keyword.max() > 0 else np.zeros(len(rows)),
            doc_kw[doc_of[rows]] / doc_kw.max() if doc_kw.max() > 0 else np.zeros(len(rows)),
            means[doc_of[rows]] @ query,
            [s.max() for s in sentences],
            [sum(searcher._idf[t] for t in chunk_terms[r] & wanted) / total for r in rows],
            [max(((s[i] + s[i + 1]) / 2 for i in range(len(s) - 1)), default=s.max()) for s in sentences],
            [np.sort(s)[-2:].mean() for s in sentences],
            [len(pairs & chunk_pairs[r]) / len(pairs) if pairs else 0.0 for r in rows],
            [float(r == 0 or doc_of[r - 1] != doc_of[r]) for r in rows],
        ], axis=1)
        local = {d: i for i, d in enumerate(dict.fromkeys(doc_of[rows]))}
        grades = np.array([judged.get(names[d], 0) for d in local], float)
        ideal = sorted((g for g in judged.values() if g > 0), reverse=True)[:10]
        out.append((signals, np.array([local[d] for d in doc_of[rows]]), len(local), grades,
                    sum(g / math.log2(i + 2) for i, g in enumerate(ideal))))
    return out


def per_question(questions, weights: np.ndarray) -> np.ndarray:
    values = []
    for signals, doc, n, grades, idcg in questions:
        best = np.full(n, -np.inf)
        np.maximum.at(best, doc, signals @ weights)  # a document scores as its best chunk
        top = np.argsort(-best, kind="stable")[:10]
        values.append(float((grades[top] * DISCOUNT[: len(top)]).sum() / idcg) if idcg else 0.0)
    return np.array(values)


def ndcg(questions, weights: np.ndarray) -> float:
    return float(per_question(questions, weights).mean())


def fit(questions) -> np.ndarray:
    weights = np.array([1, 0.4, 0, 0, 0.4, 0, 0, 0, 0, 0], float)
    best = ndcg(questions, weights)
    for step in (0.2, 0.1, 0.05, 0.02):
        improved = True
        while improved:
            improved = False
            for j in range(1, len(weights)):
                for delta in (step, -step):
                    trial = weights.copy()
                    trial[j] = max(0.0, trial[j] + delta)
                    value = ndcg(questions, trial)
                    if value > best + 1e-5:
                        best, weights, improved = value, trial, True
    return weights


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "eval" / "scifact"
    train = features(folder, "train")
    weights = fit(train)
    print(json.dumps({"train default fusion": round(ndcg(train, DEFAULT), 4),
                      "train fitted in-sample": round(ndcg(train, weights), 4),
                      "weights": dict(zip(NAMES, weights.round(3).tolist()))}), flush=True)
    order = list(range(len(train)))
    random.Random(0).shuffle(order)
    fitted = default = 0.0
    gains = []
    for fold in (order[i::5] for i in range(5)):
        held = set(fold)
        learned = fit([train[i] for i in order if i not in held])
        part = [train[i] for i in fold]
        fitted += ndcg(part, learned) * len(part)
        default += ndcg(part, DEFAULT) * len(part)
        gains.append(round(ndcg(part, learned) - ndcg(part, DEFAULT), 4))
    print(json.dumps({"train 5-fold default": round(default / len(train), 4),
                      "train 5-fold fitted": round(fitted / len(train), 4), "gain per fold": gains}), flush=True)
    test = features(folder, "test")
    gain = per_question(test, weights) - per_question(test, DEFAULT)
    print(json.dumps({"test default fusion": round(ndcg(test, DEFAULT), 4),
                      "test with weights fitted on train": round(ndcg(test, weights), 4),
                      "test gain standard error": round(float(gain.std(ddof=1) / math.sqrt(len(gain))), 4)}),
          flush=True)


if __name__ == "__main__":
    main()
