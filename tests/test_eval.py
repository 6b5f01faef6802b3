"""Retrieval metrics against hand-computed values, and `qa eval` end to end on a small SciFact slice."""
from __future__ import annotations

import json
import math
import subprocess

import pytest

from conftest import QA, ROOT
from qa.evaluation import load_beir, mrr_at, ndcg_at, recall_at

SCIFACT = ROOT.parent / "shared" / "eval" / "scifact"


def test_ndcg_by_hand():
    judged = {"a": 1, "b": 1}
    assert ndcg_at(["a", "b", "c"], judged, 10) == pytest.approx(1.0)
    # relevant at ranks 2 and 3: (1/log2(3) + 1/log2(4)) / (1 + 1/log2(3))
    expected = (1 / math.log2(3) + 0.5) / (1 + 1 / math.log2(3))
    assert ndcg_at(["x", "a", "b"], judged, 10) == pytest.approx(expected)
    assert ndcg_at(["x", "y"], judged, 10) == 0.0
    assert ndcg_at(["x", "a"], judged, 1) == 0.0
    graded = {"a": 2, "b": 1}  # linear gain: (1 + 2/log2(3)) / (2 + 1/log2(3))
    assert ndcg_at(["b", "a"], graded, 10) == pytest.approx((1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3)))


def test_recall_and_mrr_by_hand():
    judged = {"a": 1, "b": 1, "c": 0}
    assert recall_at(["a", "x", "c"], judged, 10) == 0.5
    assert recall_at(["x", "y", "b", "a"], judged, 3) == 0.5
    assert mrr_at(["x", "c", "b"], judged, 10) == pytest.approx(1 / 3)
    assert mrr_at(["x", "y"], judged, 10) == 0.0
    assert mrr_at(["x", "a"], judged, 1) == 0.0


def test_load_beir_slice_keeps_judged_documents(tmp_path):
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text("\n".join(json.dumps({"_id": str(i), "title": f"T{i}", "text": f"doc {i}"})
                                                     for i in range(20)))
    (tmp_path / "queries.jsonl").write_text("\n".join(json.dumps({"_id": f"q{i}", "text": f"query {i}"})
                                                      for i in range(3)))
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq0\t17\t1\nq1\t3\t1\nq2\t9\t1\n")
    data = load_beir(tmp_path, "test", max_queries=2, max_docs=5)
    assert list(data.qrels) == ["q0", "q1"] and set(data.queries) == {"q0", "q1"}
    assert {"17", "3"} <= set(data.corpus) and len(data.corpus) == 6


@pytest.mark.slow
def test_qa_eval_end_to_end_on_a_scifact_slice(tmp_path):
    if not (SCIFACT / "corpus.jsonl").is_file():
        pytest.skip(f"SciFact is not at {SCIFACT}")
    from qa.config import Settings
    from qa.evaluation import evaluate

    result = evaluate(SCIFACT, Settings(), max_queries=12, max_docs=60, cache=tmp_path)
    assert result["queries"] == 12 and result["documents"] >= 60
    for key in ("ndcg@10", "recall@10", "recall@100", "mrr@10"):
        assert 0.0 <= result[key] <= 1.0
    # A sane pipeline finds most judged abstracts among ~70: far above chance (about 10/70 for recall@10).
    assert result["recall@100"] >= 0.9 and result["ndcg@10"] >= 0.6
    again = evaluate(SCIFACT, Settings(), max_queries=12, max_docs=60, cache=tmp_path, mode="keyword")
    assert again["embedded_now"] == 0  # the same slice is not embedded twice
    out = subprocess.run([*QA, "eval", str(SCIFACT), "--max-queries", "12", "--max-docs", "60", "--json",
                          "--mode", "keyword", "--cache", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["ndcg@10"] == again["ndcg@10"]


def test_eval_scores_documents_whose_ids_are_not_file_names(tmp_path, settings):
    # DBPedia-style ids ("<dbpedia:Paris>") and Touché-style ids ("a/b.c") get hashed file names in the eval
    # corpus; the ranking must still name the ids the judgments use.
    from qa.evaluation import evaluate

    docs = {"<dbpedia:Paris>": ("Paris", "Paris is the capital of France, on the Seine."),
            "arg/2019.v1": ("Penguins", "Emperor penguins breed on the Antarctic sea ice in winter."),
            "plain": ("Volcanoes", "Mount Etna is the most active volcano in Europe.")}
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text("\n".join(json.dumps({"_id": d, "title": t, "text": x})
                                                     for d, (t, x) in docs.items()), encoding="utf-8")
    questions = {"q1": "What is the capital of France?", "q2": "Where do emperor penguins breed?",
                 "q3": "Which volcano is the most active in Europe?"}
    (tmp_path / "queries.jsonl").write_text("\n".join(json.dumps({"_id": q, "text": t}) for q, t in questions.items()),
                                            encoding="utf-8")
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\t<dbpedia:Paris>\t1\n"
                                                 "q2\targ/2019.v1\t1\nq3\tplain\t1\n", encoding="utf-8")
    result = evaluate(tmp_path, settings, cache=tmp_path / "cache")
    assert result["ndcg@10"] == pytest.approx(1.0) and result["recall@10"] == 1.0
