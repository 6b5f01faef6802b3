"""Gather what the answer model learns from, fit it with grouped cross-validation, and report before and after.

Usage:
  .venv/bin/python experiments/answers.py gather [--cache DIR]   index the corpora (kept) and save each question's
                                                                  candidate sentences with their features and labels
  .venv/bin/python experiments/answers.py fit [--write]           fit on the training data, report held-out figures,
                                                                  and (--write) ship qa/data/answer_model.json
  .venv/bin/python experiments/answers.py speed                   the answer model's time per question (after
                                                                  gather): first sight of the chunks, and again

Data (read from ../shared, never copied):
  squad      SQuAD v1.1 dev half: 24 articles indexed as 24 files; its 4,785 questions (answerable). Fitted and
             reported with 4-fold cross-validation grouped by article: no figure comes from an article it saw.
  scifact    SciFact's corpus (5,183 abstracts): train claims (fitting) and test claims (reported only).
  wiki_sci   SciFact claims asked of the SQuAD files: unanswerable (train claims fit, test claims reported).
  sci_wiki   SQuAD questions asked of SciFact: unanswerable (folds by article, as squad).
  seed       the default article: tests/data/seed_questions.json, answerable and off-topic; SciFact test claims
             asked of it (unrelated). Reported only.
  realdocs   ../shared/realdocs: 16 answerable and 2 unanswerable questions. Reported only.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qa.answering import confidence_features, sentence_features  # noqa: E402
from qa.api import Retriever, build_index  # noqa: E402
from qa.config import Settings  # noqa: E402
from qa.evaluation import document_sources, load_beir, prepare  # noqa: E402
from qa.retrieval import clean_question  # noqa: E402

SHARED = ROOT.parent / "shared"
HEAD = 8  # what `qa ask` re-scores: k (5) + rerank_extra (3)
REST = 40  # chunks kept after the head, in fused order, for SciFact's nDCG@10


def _squash(text: str) -> str:
    return " ".join(text.split()).lower()


def squad_corpus(folder: Path) -> list[dict]:
    """Write each article as one file (title line, then its paragraphs) and return its questions with the answer
    spans in the file's text."""
    data = json.loads((SHARED / "squad" / "dev-half.json").read_text(encoding="utf-8"))["data"]
    folder.mkdir(parents=True, exist_ok=True)
    questions = []
    for article in data:
        title = article["title"].replace("_", " ")
        parts, at = [title], len(title) + 2
        for paragraph in article["paragraphs"]:
            context = paragraph["context"]
            for qa in paragraph["qas"]:
                spans = sorted({(at + a["answer_start"], at + a["answer_start"] + len(a["text"])) for a in qa["answers"]})
                questions.append({"question": qa["question"], "source": f"{article['title']}.txt", "spans": spans,
                                  "group": article["title"], "answers": [a["text"] for a in qa["answers"]]})
            parts.append(context)
            at += len(context) + 2
        path = folder / f"{article['title']}.txt"
        text = "\n\n".join(parts)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
    return questions


def _folder_retriever(corpus: Path, index: Path) -> Retriever:
    settings = Settings().with_(index_dir=index, corpus_dir=corpus, min_confidence=-1.0)
    build_index([corpus], settings=settings)
    return Retriever(index, settings=settings)


def collect(retriever: Retriever, questions: list[dict], out: Path, label_of,
            ids: dict[str, str] | None = None) -> None:
    """Each question's head chunks and their sentences: features, labels, and what ranking needs."""
    searcher = retriever.searcher
    data = searcher.data
    stored: dict[str, str] = {}
    X, sent_q, sent_c, sent_label = [], [], [], []
    Q = len(questions)
    fused = np.full((Q, HEAD), -9.0, dtype=np.float32)
    chunk_label = np.zeros((Q, HEAD), dtype=np.int8)
    conf = np.zeros((Q, 6), dtype=np.float32)
    head_sources, rest_sources = [], []
    for qi, q in enumerate(questions):
        g = searcher.gather(clean_question(q["question"], 2000), "hybrid", 5, HEAD)
        ev = g.evidence
        features = sentence_features(ev)
        at = 0
        for c, chunk in enumerate(ev.chunks):
            if chunk.source not in stored:
                stored[chunk.source] = data.document_text(chunk.source)
            doc = stored[chunk.source]
            fused[qi, c] = ev.fused[c]
            labels = [label_of(q, chunk.source, span, doc) for span in chunk.sentences]
            chunk_label[qi, c] = label_of(q, chunk.source, (chunk.start, chunk.end), doc)
            for i, lab in enumerate(labels):
                X.append(features[at + i])
                sent_q.append(qi)
                sent_c.append(c)
                sent_label.append(lab)
            at += len(chunk.sentences)
        conf[qi] = confidence_features(ev, 0.0)
        name = (lambda source: ids[source]) if ids else (lambda source: source)
        head_sources.append([name(c.source) for c in ev.chunks])
        rest_sources.append([name(data.chunks[r].source) for r, _, _ in g.rest[:REST]])
        if qi % 500 == 0:
            print(f"  {out.name}: {qi}/{Q}", file=sys.stderr, flush=True)
    np.savez_compressed(out, X=np.asarray(X, dtype=np.float32), sent_q=np.asarray(sent_q, dtype=np.int32),
                        sent_c=np.asarray(sent_c, dtype=np.int16), sent_label=np.asarray(sent_label, dtype=np.int8),
                        fused=fused, chunk_label=chunk_label, conf=conf)
    meta = {"questions": questions, "head_sources": head_sources, "rest_sources": rest_sources}
    out.with_suffix(".json").write_text(json.dumps(meta), encoding="utf-8")


def _span_label(q: dict, source: str, span: tuple[int, int], doc: str) -> int:
    """SQuAD: the answer lies inside the span of the right file."""
    return int(source == q.get("source") and any(span[0] <= a and b <= span[1] for a, b in q["spans"]))


def _substring_label(q: dict, source: str, span: tuple[int, int], doc: str) -> int:
    """Seed and real documents: the expected text is inside the span (white space and case aside)."""
    want = q.get("sentence") or q.get("answer") or q.get("expected_substring")
    if not want or (q.get("source") and source != q["source"]):
        return 0
    return int(_squash(want) in _squash(doc[span[0] : span[1]]))


def _no_label(q: dict, source: str, span: tuple[int, int], doc: str) -> int:
    return 0


def gather(cache: Path) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    squad_questions = squad_corpus(cache / "squad" / "corpus")
    squad = _folder_retriever(cache / "squad" / "corpus", cache / "squad" / "index")
    print(f"squad: {len(squad.data.chunks)} chunks", file=sys.stderr)
    collect(squad, squad_questions, cache / "squad.npz", _span_label)

    sci_folder = SHARED / "eval" / "scifact"
    train, test = load_beir(sci_folder, "train"), load_beir(sci_folder, "test")
    full = load_beir(sci_folder, "test", max_docs=None)
    scifact, _ = prepare(sci_folder, full, Settings(), None, Path("/tmp/evalcache-v2"))
    ids = document_sources(full)
    claims = [{"question": split.queries[q], "split": name, "relevant": split.qrels[q], "group": f"sci-{q}"}
              for name, split in (("train", train), ("test", test)) for q in split.qrels]
    print(f"scifact: {len(scifact.data.chunks)} chunks, {len(claims)} claims", file=sys.stderr)
    collect(scifact, claims, cache / "scifact.npz", _no_label, ids)
    collect(squad, claims, cache / "wiki_sci.npz", _no_label)
    collect(scifact, squad_questions, cache / "sci_wiki.npz", _no_label, ids)

    seed = json.loads((ROOT / "tests" / "data" / "seed_questions.json").read_text(encoding="utf-8"))
    seed_questions = [dict(q, answerable=True) for q in seed["answerable"]] + \
                     [{"question": q, "answerable": False, "kind": "off_topic"} for q in seed["off_topic"]] + \
                     [{"question": c["question"], "answerable": False, "kind": "unrelated"}
                      for c in claims if c["split"] == "test"]
    seed_retriever = _folder_retriever(SHARED / "seed", cache / "seed" / "index")
    collect(seed_retriever, seed_questions, cache / "seed.npz", _substring_label)

    real = json.loads((SHARED / "realdocs" / "questions.json").read_text(encoding="utf-8"))["questions"]
    real_retriever = _folder_retriever(SHARED / "realdocs" / "docs", cache / "realdocs" / "index")
    collect(real_retriever, [dict(q, answerable=q["source"] is not None) for q in real], cache / "realdocs.npz",
            _substring_label)


def speed(cache: Path) -> None:
    """The answer model's share of a question (Searcher.judge: features, logits, confidence), p50 over 300
    questions each on SciFact and SQuAD: with the chunks' sentence tables built for the first time, and again."""
    import time

    from qa.evaluation import p50_p95

    sci_folder = SHARED / "eval" / "scifact"
    full = load_beir(sci_folder, "test", max_docs=None)
    scifact, _ = prepare(sci_folder, full, Settings(), None, Path("/tmp/evalcache-v2"))
    squad = _folder_retriever(cache / "squad" / "corpus", cache / "squad" / "index")
    sets = {"scifact": (scifact, list(full.queries.values())[:300]),
            "squad": (squad, [q["question"] for q in squad_corpus(cache / "squad" / "corpus")][::16][:300])}
    from qa.answering import _sentences  # noqa: PLC0415 (its cache is what "first sight" empties)

    for name, (retriever, questions) in sets.items():
        gathered = [retriever.searcher.gather(clean_question(q, 2000), "hybrid", 5, HEAD) for q in questions]
        cold, warm = [], []
        for g in gathered:
            _sentences.cache_clear()
            began = time.perf_counter()
            retriever.searcher.judge(g)
            cold.append((time.perf_counter() - began) * 1000)
            began = time.perf_counter()
            retriever.searcher.judge(g)
            warm.append((time.perf_counter() - began) * 1000)
        print(f"{name}: answer model per question, first sight p50/p95 {p50_p95(cold)[0]:.2f}/{p50_p95(cold)[1]:.2f} ms, "
              f"chunks seen before {p50_p95(warm)[0]:.2f}/{p50_p95(warm)[1]:.2f} ms ({len(questions)} questions)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=("gather", "fit", "speed"))
    parser.add_argument("--cache", type=Path, default=ROOT / ".qa-cache" / "answers")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    if args.stage == "gather":
        gather(args.cache)
    elif args.stage == "speed":
        speed(args.cache)
    else:
        from experiments.answer_fit import fit  # noqa: PLC0415 (the fitting half, with its own imports)

        fit(args.cache, args.write)


if __name__ == "__main__":
    main()
