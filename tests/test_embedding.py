"""Embedding backends and dense index types: the fast paths must give the answers the reference paths give."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from qa.backends import load_embedder
from qa.embedding import pool_spans
from qa.errors import IndexMismatchError

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = json.loads((ROOT / "tests" / "data" / "seed_questions.json").read_text())["answerable"]
TEXTS = [
    "Japan is Taiwan's third-largest trading partner, and Taiwan is Japan's fourth-largest.",
    "The council promotes exports through trade shows, market research and overseas offices.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "A short one.",
    "Semiconductors, machinery and electronic components dominate the bilateral trade between the two.",
]


@pytest.fixture(scope="module")
def embedders(settings):
    return {b: load_embedder(settings.model_path, backend=b, cache_dir=settings.cache_dir)
            for b in ("torch", "openvino", "openvino-int8")}


def test_pool_spans_is_the_mean_of_the_tokens_inside_each_span():
    hidden = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [3.0, 0.0]])
    offsets = np.array([[0, 3], [4, 9], [10, 12], [13, 20]])
    whole = np.array([0.6, 0.8], dtype=np.float32)
    out = pool_spans(hidden, offsets, [(0, 9), (10, 20), (21, 30)], whole)
    expected = [np.array([0.5, 0.5]), np.array([2.0, 0.5])]
    for row, want in zip(out[:2], expected):
        assert np.allclose(row, want / np.linalg.norm(want), atol=1e-6)
    assert np.allclose(out[2], whole)  # nothing inside (cut off by truncation): the whole text's vector


@pytest.mark.parametrize("backend, floor", [("openvino", 0.9999), ("openvino-int8", 0.98)])
def test_openvino_vectors_match_torch(embedders, backend, floor):
    reference = embedders["torch"].encode(TEXTS)
    vectors = embedders[backend].encode(TEXTS)
    assert vectors.shape == reference.shape and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert (vectors * reference).sum(axis=1).min() >= floor


def test_sentence_vectors_from_one_pass_agree_across_backends(embedders):
    text = " ".join(TEXTS)
    spans, at = [], 0
    for sentence in TEXTS:
        spans.append((at, at + len(sentence)))
        at += len(sentence) + 1
    _, reference = embedders["torch"].encode_spans([text], [spans])
    for backend in ("openvino", "openvino-int8"):
        _, pooled = embedders[backend].encode_spans([text], [spans])
        assert pooled.shape == (len(TEXTS), reference.shape[1])
        assert (pooled * reference).sum(axis=1).min() >= 0.97
    # Each pooled sentence is closest to its own sentence embedded alone, but for a very short one, which the
    # words around it dominate (why the highlight adds term matching to the cosine).
    alone = embedders["torch"].encode(TEXTS)
    own = [i for i, t in enumerate(TEXTS) if len(t.split()) >= 8]
    assert [int(np.argmax(reference[i] @ alone.T)) for i in own] == own


def test_int8_backend_answers_the_seed_questions_like_torch(seed_folder, settings, tmp_path):
    from qa.api import Retriever, build_index

    corpus = tmp_path / "corpus"
    shutil.copytree(ROOT / "corpus", corpus)
    torch_settings = settings.with_(index_dir=tmp_path / "torch", backend="torch")
    build_index([corpus], settings=torch_settings)
    fast = Retriever(seed_folder, settings=settings.with_(index_dir=seed_folder))
    if fast.data.manifest.model["backend"] != "openvino-int8":  # auto chose another backend on this CPU
        int8_settings = settings.with_(index_dir=tmp_path / "int8", backend="openvino-int8")
        build_index([corpus], settings=int8_settings)
        fast = Retriever(int8_settings.index_dir, settings=int8_settings)
    slow = Retriever(torch_settings.index_dir, settings=torch_settings)
    same = sum(fast.retrieve(c["question"])[0].start == slow.retrieve(c["question"])[0].start for c in QUESTIONS)
    assert same >= len(QUESTIONS) - 1


def test_backend_is_recorded_and_never_mixed(tmp_path, settings):
    from qa.api import Retriever, build_index
    from qa.index.sync import index_paths

    corpus = tmp_path / "corpus"
    shutil.copytree(ROOT / "corpus", corpus)
    index = tmp_path / "index"
    build_index([corpus], settings=settings.with_(index_dir=index, backend="torch"))
    assert json.loads((index / "manifest.json").read_text())["model"]["backend"] == "torch"
    # "auto" keeps the index's backend, so questions are embedded the way its passages were.
    assert Retriever(index, settings=settings.with_(index_dir=index)).searcher.embedder.backend == "torch"
    # An index from before reasons were recorded, brought up to date under auto: the reason given is the one that
    # applies (its backend kept), not the one a new index would get.
    manifest = json.loads((index / "manifest.json").read_text())
    del manifest["model"]["backend_reason"]
    (index / "manifest.json").write_text(json.dumps(manifest))
    (corpus / "extra.txt").write_text("Ceramic tiles are among the goods Taiwan sells to Japan.")
    report = index_paths([corpus], settings.with_(index_dir=index))
    assert report.backend == "torch" and report.backend_reason.startswith("kept from the existing index")
    (corpus / "extra.txt").unlink()
    with pytest.raises(IndexMismatchError, match="rebuild"):
        Retriever(index, settings=settings.with_(index_dir=index, backend="openvino-int8"))
    (corpus / "more.txt").write_text("A new document about ceramic tiles and their export.")
    with pytest.raises(IndexMismatchError):
        build_index([corpus], settings=settings.with_(index_dir=index, backend="openvino-int8"))
    report = build_index([corpus], settings=settings.with_(index_dir=index, backend="openvino-int8"), rebuild=True)
    assert report.chunks_embedded == report.total_chunks
    model = json.loads((index / "manifest.json").read_text())["model"]
    assert model["backend"] == report.backend == "openvino-int8"
    assert model["backend_reason"] == report.backend_reason == "chosen by QA_BACKEND / --backend"


def test_one_question_on_a_fixed_shape_gets_the_vector_of_the_dynamic_model(embedders):
    from qa.openvino_embedder import QUESTION_BUCKETS

    questions = ["Who?", "What does the Taiwan External Trade Development Council do for its exporters abroad?",
                 " ".join(["trade"] * 40) + "?", " ".join(["trade"] * 90) + "?"]
    for backend in ("openvino", "openvino-int8"):
        model = embedders[backend]
        model.encode(["a first question"])
        single = np.vstack([model.encode([q]) for q in questions])
        lengths = [len(model.tokenizer.encode(q).ids) for q in questions]
        assert [n > 64 for n in lengths] == [False, False, False, True] and len(set(lengths)) == 4
        # int8 runs one question on fixed-shape copies; fp32 on the dynamic model at the question's own length.
        fixed = {min(b for b in QUESTION_BUCKETS if b >= n) for n in lengths if n <= 64}
        assert set(model._fixed) == (fixed if backend == "openvino-int8" else set())
        batch = model.encode(questions)  # one padded batch: the dynamic model
        # The shape a question runs on never changes its vector: padding is masked out (precision pinned to f32).
        assert (single * batch).sum(axis=1).min() >= 0.999, backend
        if backend == "openvino":
            assert (single * embedders["torch"].encode(questions)).sum(axis=1).min() >= 0.9999


def test_auto_measures_the_backends_once_and_keeps_the_fastest_that_agrees(settings, tmp_path):
    from qa.backends import choose_backend

    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "openvino").symlink_to(settings.cache_dir / "openvino")  # the built models: not rebuilt here
    choice = choose_backend(settings.model_path, settings.model_name, cache)
    trials = {t.backend: t for t in choice.trials}
    assert {"torch", "openvino", "openvino-int8"} <= set(trials) and trials["torch"].min_cosine == 1.0
    chosen = trials[choice.backend]
    assert chosen.min_cosine >= 0.98 and not chosen.error
    assert chosen.chunks_per_s >= 0.85 * max(t.chunks_per_s for t in trials.values() if t.min_cosine >= 0.98)
    assert all(t.chunks_per_s > 0 and t.question_ms > 0 for t in trials.values() if not t.error)
    assert "avx2" in choice.machine["isa"] or choice.machine["arch"] != "x86_64"
    assert choice.backend in choice.reason.split(":")[0] or "measured on this CPU" in choice.reason
    again = choose_backend(settings.model_path, settings.model_name, cache)  # from the cache: nothing timed
    assert again == choice and len(list((cache / "backend-choice").glob("*.json"))) == 1


def test_a_reference_cut_short_by_the_time_limit_is_compared_on_the_chunks_both_embedded(settings, tmp_path):
    # On a busy machine torch (the reference) may embed fewer chunks in its time than a faster backend.
    from qa.backends import _trial, trial_texts

    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "openvino").symlink_to(settings.cache_dir / "openvino")
    chunks, questions = trial_texts()
    trial, (done, asked) = _trial("openvino", settings.model_path, settings.model_name, cache, chunks, questions, None)
    assert len(done) == len(chunks) == 48
    short = (done[:16], asked)
    again, _ = _trial("openvino", settings.model_path, settings.model_name, cache, chunks, questions, short)
    assert not again.error and again.min_cosine >= 0.999
    flipped = (short[0][::-1].copy(), asked)  # rows that do not match: the comparison must see it
    assert _trial("openvino", settings.model_path, settings.model_name, cache, chunks, questions,
                  flipped)[0].min_cosine < 0.9


def test_the_rule_keeps_only_agreeing_backends_and_breaks_near_ties_on_question_time():
    from qa.backends import Trial, decide

    torch = Trial("torch", 20.0, 12.0, 1.0)
    assert decide([torch, Trial("openvino-int8", 90.0, 3.0, 0.90), Trial("openvino", 30.0, 6.0, 1.0)])[0] == "openvino"
    assert decide([torch, Trial("openvino-int8", 70.0, 3.0, 0.99), Trial("openvino-bf16", 75.0, 4.5, 1.0)])[0] \
        == "openvino-int8"  # within 15% of the fastest, and quicker to answer
    assert decide([torch, Trial("openvino-int8", 50.0, 3.0, 0.99), Trial("openvino-bf16", 75.0, 4.5, 1.0)])[0] \
        == "openvino-bf16"
    assert decide([torch, Trial("openvino-bf16", error="cannot compile")])[0] == "torch"
    assert decide([Trial("torch", error="broken"), Trial("openvino", 30.0, 6.0, 0.5)])[0] == "torch"


def test_hnsw_beyond_the_limit_finds_what_exact_search_finds(monkeypatch, tmp_path, fake_embedder):
    import qa.index.dense
    from qa.config import Settings
    from qa.index.dense import DenseIndex
    from qa.index.store import read_index
    from qa.index.sync import index_paths

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(50, 64))
    vectors = (centres[rng.integers(0, 50, 5000)] + rng.normal(0, 0.3, (5000, 64))).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[rng.integers(0, 5000, 200)] + rng.normal(0, 0.1, (200, 64)).astype(np.float32)
    exact = DenseIndex.build(vectors)
    approximate = DenseIndex.build(vectors, exact_limit=1000)
    assert not exact.approximate_search and approximate.approximate_search
    _, truth = exact.search(queries, 10)
    _, found = approximate.search(queries, 10)
    assert np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found)]) >= 0.95

    # Written with the index beyond the limit, read back, and it answers as exact search does.
    monkeypatch.setattr(qa.index.dense, "EXACT_SEARCH_LIMIT", 20)
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(40):
        (folder / f"d{i}.txt").write_text(f"Document {i} is about topic {i % 7} and item {i}.")
    s = Settings().with_(index_dir=tmp_path / "index")
    index_paths([folder], s, embedder=fake_embedder)
    data = read_index(s.index_dir)
    gen = data.manifest.generation
    assert (s.index_dir / f"dense.{gen}.faiss").is_file() and data.dense.approximate_search
    flat = DenseIndex.build(np.asarray(data.vectors), exact_limit=len(data.vectors))
    query = fake_embedder.encode(["topic 3 item 10"])
    # Hash vectors tie often, so the scores are compared: the same best five, whichever of the tied rows.
    assert np.allclose(data.dense.search(query, 5)[0], flat.search(query, 5)[0], atol=1e-5)

    # A question searches the graph on a helper thread while BM25 runs: the same passages, in the same order and
    # with the same scores, as the two searches one after the other.
    from qa.retrieval import Searcher

    assert data.beside_keywords == "nearest"
    searcher = Searcher(data, s, fake_embedder)
    beside = [searcher.ask(q, k=5, refuse=False).hits for q in ("topic 3 item 10", "Document 7", "item 39")]
    monkeypatch.setattr(type(data), "beside_keywords", property(lambda self: ""))
    alone = [searcher.ask(q, k=5, refuse=False).hits for q in ("topic 3 item 10", "Document 7", "item 39")]
    assert [[(h.chunk.id, h.score) for h in hits] for hits in beside] == \
           [[(h.chunk.id, h.score) for h in hits] for hits in alone]
    assert all(len(hits) == 5 for hits in beside)


def test_one_question_on_an_exact_index_gets_what_faiss_gets():
    from qa.index.dense import DenseIndex

    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(3000, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    dense = DenseIndex.build(vectors)
    for row in range(25):
        query = vectors[row : row + 1] + rng.normal(0, 0.05, (1, 64)).astype(np.float32)
        scores, rows = dense.search(query, 50)  # numpy: one matrix-vector product
        want_scores, want_rows = dense.index.search(query, 50)  # FAISS itself
        assert np.array_equal(rows, want_rows) and np.allclose(scores, want_scores, atol=1e-5)
    assert dense.search(vectors[:1], 5000)[1].shape == (1, 5000)  # more than there are: FAISS pads with -1


def test_warm_makes_int8_copies_and_runs_fp32_at_every_question_length(settings):
    # A server warms its embedder before taking questions: in int8 the fixed-shape copies are made, in fp32 the
    # dynamic model meets every length up to 64 tokens once, and keeps no copy (each held the model's weights).
    from qa.openvino_embedder import QUESTION_BUCKETS

    for backend, copies in (("openvino", set()), ("openvino-int8", set(QUESTION_BUCKETS))):
        model = load_embedder(settings.model_path, backend=backend, cache_dir=settings.cache_dir)
        model.warm()
        assert set(model._fixed) == copies
        question = "What does the council do for exporters?"
        assert float(model.encode([question])[0] @ model.encode([question, "a longer text " * 5])[0]) >= 0.999


THREADS, ROUNDS = 24, 12


@pytest.mark.parametrize("backend", ["torch", "openvino-int8"])
def test_backends_are_safe_across_threads(embedders, backend):
    # The web chat encodes from several threads at once. Mixed lengths, some past the model's 256 tokens so that
    # truncation is exercised, from many threads: every call must succeed and give what it gives alone. On
    # OpenVINO, single texts also compile their fixed-shape models while other threads use them.
    import threading

    model = embedders[backend]
    texts = [("word " * n).strip() + f" number {n}." for n in (1, 7, 30, 120, 400, 3, 60, 300)]
    expected = [model.encode([t])[0] for t in texts]
    errors: list[BaseException] = []
    results: dict[tuple[int, int], np.ndarray] = {}

    def work(thread: int) -> None:
        try:
            for round_ in range(ROUNDS):
                batch = [texts[(thread + round_ + i) % len(texts)] for i in range(1 + (thread + round_) % 8)]
                vectors = model.encode(batch)
                results[(thread, round_)] = vectors
                for text, vector in zip(batch, vectors):
                    assert float(vector @ expected[texts.index(text)]) > 0.999
        except BaseException as exc:  # noqa: BLE001 (reported below, with the thread's error)
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(results) == THREADS * ROUNDS


def test_loading_a_model_sets_no_environment_variables(settings, monkeypatch):
    import os
    import sys

    for name in ("TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_PROGRESS_BARS"):
        monkeypatch.delenv(name, raising=False)
    before = set(os.environ), set(sys.modules)
    from qa.openvino_embedder import calibration_texts

    texts = calibration_texts(300)
    assert len(texts) == 300 and len(set(texts)) == 300 and texts == calibration_texts(300)
    load_embedder(settings.model_path, backend="openvino-int8", cache_dir=settings.cache_dir)
    assert set(os.environ) == before[0]
    # The calibration text is read from the package, not gathered by importing the standard library.
    assert not {"antigravity", "turtle", "tkinter", "idlelib"} & (set(sys.modules) - before[1])
