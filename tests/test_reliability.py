"""Reliability: concurrent writers, pathological documents, bad questions in bounded time."""
from __future__ import annotations

import subprocess
import time

import pytest

from conftest import QA, ROOT
from qa.chunking import MODEL_MAX_TOKENS, Chunker
from qa.config import Settings
from qa.index.sync import index_paths
from qa.index.store import read_index


def _corpus(folder, files=40):
    folder.mkdir()
    for i in range(files):
        (folder / f"f{i}.txt").write_text(f"File {i} describes the lighthouse number {i}. It is {i} metres tall.")
    return folder


@pytest.mark.slow
def test_two_writers_one_fails_clearly_or_waits(tmp_path):
    corpus, index = _corpus(tmp_path / "c"), tmp_path / "i"
    cmd = [*QA, "index", str(corpus), "--index", str(index), "--quiet"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert "another `qa index` is writing" in loser and "--wait" in loser
    assert len(read_index(index).chunks) == 40
    # With --wait, the second writer waits its turn and then finds nothing left to embed.
    (corpus / "f0.txt").write_text("File zero was rewritten about a windmill.")
    waiting = [*cmd, "--wait", "120", "--json"]
    procs = [subprocess.Popen(waiting, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sorted('"chunks_embedded": 1' in out for out, _ in outs) == [False, True]


def test_ten_thousand_identical_sentences(tmp_path, fake_embedder):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "same.txt").write_text("The same sentence again. " * 10_000)
    (folder / "other.txt").write_text("A normal document about owls.")
    began = time.perf_counter()
    report = index_paths([folder], Settings(index_dir=tmp_path / "i"), embedder=fake_embedder)
    assert time.perf_counter() - began < 60
    assert set(report.added) == {"same.txt", "other.txt"}
    data = read_index(tmp_path / "i")
    assert len({c.id for c in data.chunks}) == len(data.chunks)  # same text at other offsets: distinct ids


def test_very_long_lines_and_words_are_chunked_within_limits():
    chunker = Chunker(Settings().model_path, 128, 32)
    from qa.records import Document

    text = "x" * 50_000 + "\n" + ("word " * 20_000) + "\n" + "é" * 3000
    doc = Document("long.txt", text)
    chunks = chunker.chunk(doc)
    assert chunks and all(text[c.start : c.end] == c.text for c in chunks)
    assert max(chunker.count_tokens([c.text for c in chunks])) <= MODEL_MAX_TOKENS


@pytest.mark.parametrize("question", ["日本と台湾の貿易額は？", "台湾对日本的投资是多少？", "\x00\x01\x02 trade",
                                      "!!! ??? ... trade volume", "a" * 1999])
def test_odd_questions_answer_in_bounded_time(seed_retriever, question):
    began = time.perf_counter()
    assert isinstance(seed_retriever.retrieve(question), list)
    assert time.perf_counter() - began < 10


def test_broken_link_unreadable_and_vanishing_files_are_reported(tmp_path, fake_embedder, monkeypatch):
    import builtins

    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "good.txt").write_text("A good file about herons.")
    (folder / "locked.txt").write_text("Nobody may read this.")
    (folder / "dangling.txt").symlink_to(folder / "nowhere.txt")
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):
        # Root can read any file, so the refusal a normal user would get is injected at the read itself.
        if str(file).endswith("locked.txt"):
            raise PermissionError(13, "Permission denied")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    from qa.index import sync as indexing
    from qa.loaders import SourceFile, discover

    found, skipped = discover([folder])
    monkeypatch.setattr(indexing, "discover", lambda paths: (
        found + [SourceFile(folder / "vanished.txt", "vanished.txt")], skipped))
    report = index_paths([folder], Settings(index_dir=tmp_path / "i"), embedder=fake_embedder)
    reasons = {f.source: f.reason for f in report.failed}
    assert "permission" in reasons["locked.txt"] and "chmod" in reasons["locked.txt"]
    assert "disappeared" in reasons["vanished.txt"]
    assert {f.source: f.reason for f in report.skipped}["dangling.txt"].startswith("broken link")
    assert report.added == ("good.txt",)


def test_answers_and_their_context_survive_commits_from_another_thread(tmp_path, settings):
    # The web chat answers while an upload or a removal commits a new version of the index. An answer's
    # passages and their context come from one version; asking about a removed document is a QAError at worst.
    import threading

    from qa.api import Retriever, build_index
    from qa.errors import QAError

    corpus, index = tmp_path / "corpus", tmp_path / "index"
    corpus.mkdir()
    (corpus / "a.txt").write_text("Apples grow in orchards. They ripen in autumn.", encoding="utf-8")
    (corpus / "b.txt").write_text("Bees make honey from nectar. A hive holds thousands of bees.", encoding="utf-8")
    s = settings.with_(index_dir=index)
    build_index([corpus], settings=s)
    retriever = Retriever(index, settings=s)
    stop, errors, answered = threading.Event(), [], [0]

    def ask() -> None:
        while not stop.is_set():
            try:
                answer = retriever.ask("How do bees make honey?")
                for passage in answer.passages:
                    retriever.context(passage, answer=answer)
                    answered[0] += 1
                    retriever.context(passage)  # the newest version: may no longer hold it
            except QAError:
                pass
            except Exception as exc:  # noqa: BLE001 (what the test is about)
                errors.append(exc)
                return

    readers = [threading.Thread(target=ask) for _ in range(3)]
    for reader in readers:
        reader.start()
    hidden = tmp_path / "b.txt"
    for _ in range(6):
        (corpus / "b.txt").replace(hidden)
        build_index([corpus], settings=s, wait=30)
        hidden.replace(corpus / "b.txt")
        build_index([corpus], settings=s, wait=30)
    stop.set()
    for reader in readers:
        reader.join()
    assert errors == [] and answered[0] > 0
