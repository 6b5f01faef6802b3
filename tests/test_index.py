"""Incremental, crash-safe index logic. The fake embedder counts exactly what gets embedded."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from conftest import index_into, make_mixed_folder, open_store, stored_chunks, stored_vectors
from qa.chunking import VERSION as CHUNKS_VERSION
from qa.config import Settings
from qa.errors import EmptyCorpusError, IndexCorruptError, IndexLockedError, IndexMismatchError, IndexMissingError
from qa.index.sync import index_paths
from qa.index.store import MANIFEST, _top_rows, read_index, read_manifest
from qa.index.writer import lock


@pytest.fixture
def folder(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(5):
        (docs / f"d{i}.txt").write_text(f"Document {i} is about subject {i}. It has a second sentence.\n\nAnd more.")
    return docs


def _settings(tmp_path, **changes):
    return Settings(index_dir=tmp_path / "idx").with_(**changes)


def test_second_run_embeds_nothing_and_ids_are_stable(folder, fake_embedder, where):
    first = index_into([folder], where, embedder=fake_embedder)
    assert len(first.added) == 5 and first.chunks_embedded == len(fake_embedder.calls) > 0
    ids = [c.id for c in stored_chunks(where)]
    fake_embedder.calls.clear()
    second = index_into([folder], where, embedder=fake_embedder)
    assert fake_embedder.calls == [] and len(second.unchanged) == 5 and not second.wrote
    assert [c.id for c in stored_chunks(where)] == ids


def test_changed_file_alone_is_reembedded_and_deleted_file_disappears(folder, fake_embedder, where):
    index_into([folder], where, embedder=fake_embedder)
    kept = stored_vectors(where)
    sources = {c.id: c.source for c in stored_chunks(where)}
    (folder / "d1.txt").write_text("Document one now talks about zebras only.")
    (folder / "d3.txt").unlink()
    fake_embedder.calls.clear()
    report = index_into([folder], where, embedder=fake_embedder)
    assert report.changed == ("d1.txt",) and report.removed == ("d3.txt",)
    assert fake_embedder.calls == ["Document one now talks about zebras only."]
    after = stored_vectors(where)
    assert "d3.txt" not in {c.source for c in stored_chunks(where)}
    for chunk_id, vector in kept.items():
        if sources[chunk_id] not in ("d1.txt", "d3.txt"):  # reused rows keep their vectors exactly
            assert np.array_equal(after[chunk_id], vector)
    reader = open_store(where)
    assert len(stored_chunks(where)) == reader.size == len(after) == 4  # one chunk for each file left


def test_bad_file_does_not_stop_others_and_previous_version_is_kept(tmp_path, fake_embedder, where):
    docs = tmp_path / "mixed"
    expected = make_mixed_folder(docs)
    report = index_into([docs], where, embedder=fake_embedder)
    assert set(report.added) == set(expected)
    reasons = {f.source: f.reason for f in report.failed}
    assert set(reasons) == {"broken.pdf", "binary.txt", "empty.txt"}
    assert "PDF" in reasons["broken.pdf"] and "binary" in reasons["binary.txt"] and "empty" in reasons["empty.txt"]
    assert [f.source for f in report.skipped] == ["image.png"]
    # A good file turning bad keeps its last good version searchable.
    (docs / "notes.txt").write_bytes(b"\x00\x01\x02" * 100)
    report = index_into([docs], where, embedder=fake_embedder)
    assert any(f.source == "notes.txt" and "kept" in f.reason for f in report.failed)
    assert any("forty storms" in c.text for c in stored_chunks(where))


def test_empty_corpus_and_missing_index(tmp_path, fake_embedder, where):
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmptyCorpusError, match="no documents"):
        index_into([tmp_path / "empty"], where, embedder=fake_embedder)
    with pytest.raises(IndexMissingError, match="qa index"):
        open_store(where)


def test_all_files_bad_leaves_existing_index_intact(tmp_path, folder, fake_embedder, where):
    index_into([folder], where, embedder=fake_embedder)
    before = stored_chunks(where)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.txt").write_bytes(b"")
    with pytest.raises(EmptyCorpusError, match="could be read"):
        index_into([bad], where, embedder=fake_embedder)
    if not where.store:  # the folder index's manifest is not even rewritten
        assert read_manifest(where.index_dir).files.keys() == {f"d{i}.txt" for i in range(5)}
    assert stored_chunks(where) == before


def test_other_settings_or_model_refused_with_rebuild_hint(folder, fake_embedder, where):
    index_into([folder], where, embedder=fake_embedder)
    with pytest.raises(IndexMismatchError, match="--rebuild"):
        index_into([folder], where.with_(chunk_tokens=64), embedder=fake_embedder)
    with pytest.raises(IndexMismatchError, match="model"):
        index_into([folder], where, embedder=None)  # would use the real model: refused before loading it
    report = index_into([folder], where.with_(chunk_tokens=64), embedder=fake_embedder, rebuild=True)
    assert len(report.added) == 5
    assert open_store(where).manifest.settings["chunk_tokens"] == 64


def test_leftovers_of_a_crash_are_ignored_then_removed(tmp_path, folder, fake_embedder):
    s = _settings(tmp_path)
    index_paths([folder], s, embedder=fake_embedder)
    gen = json.loads((s.index_dir / MANIFEST).read_text())["generation"]
    # What a writer killed mid-way leaves: half a next generation and a temp manifest.
    (s.index_dir / f"chunks.{gen + 1}.jsonl").write_text('{"broken":')
    (s.index_dir / f"vectors.{gen + 1}.npy").write_bytes(b"\x93NUMPY")
    (s.index_dir / "manifest.json.123.tmp").write_text("{")
    assert len(read_index(s.index_dir).chunks) > 0
    (folder / "d0.txt").write_text("Changed text.")
    index_paths([folder], s, embedder=fake_embedder)
    names = sorted(p.name for p in s.index_dir.iterdir())
    new_gen = json.loads((s.index_dir / MANIFEST).read_text())["generation"]
    assert new_gen > gen + 1
    assert names == sorted([".lock", "bm25.%d" % new_gen, "chunks.%d.jsonl" % new_gen, "docs", MANIFEST,
                            "rows.%d.npy" % new_gen, "sentences.%d.npy" % new_gen, "terms.%d.txt" % new_gen,
                            "vectors.%d.npy" % new_gen])


def test_corrupt_manifest_message(tmp_path, folder, fake_embedder):
    s = _settings(tmp_path)
    index_paths([folder], s, embedder=fake_embedder)
    (s.index_dir / MANIFEST).write_text("{not json")
    with pytest.raises(IndexCorruptError, match="--rebuild"):
        read_index(s.index_dir)


def test_second_writer_is_refused_clearly(tmp_path, folder, fake_embedder):
    s = _settings(tmp_path)
    held = lock(s.index_dir)
    try:
        with pytest.raises(IndexLockedError, match="another `qa index`"):
            index_paths([folder], s, embedder=fake_embedder)
    finally:
        held.release()
    assert index_paths([folder], s, embedder=fake_embedder).added


def test_no_pickle_anywhere(tmp_path, folder, fake_embedder):
    s = _settings(tmp_path)
    index_paths([folder], s, embedder=fake_embedder)
    for root, _, files in os.walk(s.index_dir):
        for name in files:
            data = open(os.path.join(root, name), "rb").read()
            if name.endswith(".npy"):
                np.load(os.path.join(root, name), allow_pickle=False)
            assert not data.startswith(b"\x80\x04") and not data.startswith(b"\x80\x05"), name


def test_bm25_parameters_change_without_reembedding(tmp_path, folder, fake_embedder):
    s = _settings(tmp_path)
    index_paths([folder], s, embedder=fake_embedder)
    before = read_index(s.index_dir)
    fake_embedder.calls.clear()
    report = index_paths([folder], s.with_(bm25_k1=0.5, bm25_b=0.3), embedder=fake_embedder)
    assert not (report.added or report.changed or report.removed)
    assert fake_embedder.calls == [] and report.total_chunks == len(before.chunks)
    after = read_index(s.index_dir)
    assert after.manifest.bm25 == {"k1": 0.5, "b": 0.3, "stemmer": "english", "stopwords": "en"}
    assert after.manifest.generation > before.manifest.generation
    assert (after.bm25.bm25.k1, after.bm25.bm25.b) == (0.5, 0.3)
    assert np.array_equal(after.vectors, before.vectors)


def test_bm25_tokenizer_is_recorded_and_a_change_retokenizes_without_reembedding(tmp_path, fake_embedder):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("The runners were running through the gardens.", encoding="utf-8")
    (docs / "b.txt").write_text("A quiet library of old maps.", encoding="utf-8")
    s = _settings(tmp_path)
    index_paths([docs], s, embedder=fake_embedder)
    terms = (s.index_dir / f"terms.{read_index(s.index_dir).manifest.generation}.txt").read_text()
    assert "run" in terms.split() and "the" not in terms.split()  # stemmed, stop words out
    fake_embedder.calls.clear()
    plain = s.with_(bm25_stemmer="", bm25_stopwords="")
    report = index_paths([docs], plain, embedder=fake_embedder)
    assert report.wrote is False and fake_embedder.calls == []
    data = read_index(plain.index_dir)
    assert data.manifest.bm25["stemmer"] == "" and data.manifest.bm25["stopwords"] == ""
    terms = (plain.index_dir / f"terms.{data.manifest.generation}.txt").read_text().split()
    assert "running" in terms and "the" in terms and "run" not in terms


def test_an_index_of_an_older_format_is_refused_with_the_rebuild_command(tmp_path, folder, fake_embedder):
    s = _settings(tmp_path)
    index_paths([folder], s, embedder=fake_embedder)
    data = json.loads((s.index_dir / MANIFEST).read_text())
    data["format_version"] = 1
    (s.index_dir / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(IndexMismatchError, match="qa index --rebuild"):
        read_index(s.index_dir)
    with pytest.raises(IndexMismatchError, match="qa index --rebuild"):
        index_paths([folder], s, embedder=fake_embedder)
    assert index_paths([folder], s, embedder=fake_embedder, rebuild=True).wrote


def test_the_web_chat_rebuilds_an_index_made_with_other_settings(tmp_path, settings):
    from qa.web import prepare_index

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("The ferry to Tromso leaves at nine. It returns at noon.", encoding="utf-8")
    s = settings.with_(index_dir=tmp_path / "idx", corpus_dir=corpus)
    prepare_index(s.with_(chunk_tokens=64, overlap_tokens=8))  # as an older version would have built it
    with pytest.raises(IndexMismatchError):
        index_paths([corpus], s)
    prepare_index(s)
    assert read_index(s.index_dir).manifest.settings["chunk_tokens"] == s.chunk_tokens


def test_a_changed_reader_re_extracts_exactly_its_files(tmp_path, fake_embedder):
    # Indexes made by an older reader of a format (recorded per file in the manifest) are re-read by the new one
    # on the next run; a file whose text comes out the same keeps its rows and embeds nothing.
    docs = tmp_path / "mixed"
    make_mixed_folder(docs)
    s = _settings(tmp_path)
    index_paths([docs], s, embedder=fake_embedder)
    manifest = json.loads((s.index_dir / MANIFEST).read_text())
    assert manifest["files"]["memo.docx"]["extractor"].startswith("ooxml-")
    manifest["files"]["memo.docx"]["extractor"] = "python-docx-0"  # as written by an older qa
    manifest["files"]["report.pdf"]["extractor"] = "pypdf-0"
    manifest["files"]["report.pdf"]["text_sha256"] = "0" * 64  # that reader gave other text
    manifest["files"]["notes.txt"]["extractor"] = "text-2"  # before the chunker was versioned: chunked again,
    # and the same chunks came out, so nothing is embedded
    (s.index_dir / MANIFEST).write_text(json.dumps(manifest))
    fake_embedder.calls.clear()
    report = index_paths([docs], s, embedder=fake_embedder)
    assert report.changed == ("report.pdf",) and {"memo.docx", "notes.txt"} <= set(report.unchanged)
    assert fake_embedder.calls and all("glacier" in text for text in fake_embedder.calls)
    after = json.loads((s.index_dir / MANIFEST).read_text())["files"]
    assert after["memo.docx"]["extractor"].startswith("ooxml-") and after["report.pdf"]["extractor"].startswith("pdfium-")
    assert all(entry["extractor"].endswith(f"/{CHUNKS_VERSION}") for entry in after.values())
    fake_embedder.calls.clear()
    assert not index_paths([docs], s, embedder=fake_embedder).wrote and fake_embedder.calls == []
    data = read_index(s.index_dir)
    assert {c.source for c in data.chunks} == set(after)


def test_default_folders_are_never_next_to_site_packages(tmp_path, monkeypatch):
    from qa.config import PROJECT_DIR, home

    assert home() == PROJECT_DIR  # run from the repository: its own index/ and corpus/
    installed = tmp_path / "site-packages"  # a plain `pip install`: no pyproject.toml beside the package
    (installed / "qa").mkdir(parents=True)
    work = tmp_path / "work"
    (work / "corpus").mkdir(parents=True)
    assert home(installed, work) == work
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert home(installed, tmp_path / "elsewhere") == tmp_path / "data" / "docqa"


def test_damaged_sentence_vectors_are_refused_not_dropped(tmp_path, folder, fake_embedder):
    s = _settings(tmp_path)
    index_paths([folder], s, embedder=fake_embedder)
    gen = read_index(s.index_dir).manifest.generation
    path = s.index_dir / f"sentences.{gen}.npy"
    np.save(path, np.load(path)[:-1])  # one sentence vector short of the chunks' sentences
    with pytest.raises(IndexCorruptError, match="qa index --rebuild"):
        read_index(s.index_dir)


def test_max_file_size_comes_from_the_environment(tmp_path, monkeypatch, fake_embedder):
    monkeypatch.setenv("QA_MAX_FILE_MB", "0.001")  # about 1 KB
    s = _settings(tmp_path)
    assert s.max_file_bytes == int(0.001 * 2**20)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "big.txt").write_text("A sentence about the harbour. " * 100, encoding="utf-8")
    (docs / "small.txt").write_text("A short note.", encoding="utf-8")
    report = index_paths([docs], s, embedder=fake_embedder)
    assert report.added == ("small.txt",) and "QA_MAX_FILE_MB" in report.failed[0].reason


@pytest.mark.parametrize("size", [3, 5_000, 300_000, 1_000_003])
@pytest.mark.parametrize("share", [0.0, 0.0001, 0.3])
def test_top_keyword_rows_are_the_best_positive_scores(size, share):
    # The million-row path ranks only the rows at or above the k-th best block maximum: it must give the same
    # scores in the same order as ranking every row, with ties (integer scores) and mostly zeros.
    rng = np.random.default_rng(size)
    scores = np.where(rng.random(size) < share, rng.integers(1, 4, size), 0).astype(np.float32)
    scores[rng.integers(0, size)] = 9.0
    k = min(100, size)
    top = _top_rows(scores, k)
    expected = np.sort(scores[scores > 0])[::-1][:k]
    assert np.array_equal(scores[top], expected) and len(set(top.tolist())) == len(top)
