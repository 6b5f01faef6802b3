"""The folder index's chunk table on disk: opening reads no chunk row; rows are found by offset and by document."""
from __future__ import annotations

import json

import numpy as np
import pytest

import qa.index.rows as rows_module
from conftest import make_mixed_folder
from qa.config import Settings
from qa.errors import IndexCorruptError
from qa.index.rows import parse_chunk
from qa.index.store import MANIFEST, read_index
from qa.index.sync import index_paths

LONG = "\n\n".join(f"Paragraph {i} tells of harbour number {i} and the boats moored there. It is quiet at night."
                   for i in range(400))


@pytest.fixture
def built(tmp_path, fake_embedder):
    docs = tmp_path / "docs"
    make_mixed_folder(docs)
    (docs / "long.txt").write_text(LONG, encoding="utf-8")
    s = Settings(index_dir=tmp_path / "idx")
    index_paths([docs], s, embedder=fake_embedder)
    return docs, s


def _every_row(s: Settings) -> list:
    gen = json.loads((s.index_dir / MANIFEST).read_text())["generation"]
    with open(s.index_dir / f"chunks.{gen}.jsonl", "rb") as lines:
        return [parse_chunk(line) for line in lines]


def _check_rows(s: Settings) -> None:
    """Every document's rows, first row and chunk-at-offset agree with a plain read of the whole chunk file."""
    everything = _every_row(s)
    data = read_index(s.index_dir)
    assert list(data.chunks) == everything and data.size == len(everything)
    for source in data.manifest.files:
        expected = [c for c in everything if c.source == source]
        assert data.document_chunks(source) == expected
        if expected:
            assert data.first_rows([source]) == {source: everything.index(expected[0])}
            for chunk in (expected[0], expected[len(expected) // 2], expected[-1]):
                assert data.chunk_at(source, chunk.end - 1) == next(c for c in expected if c.end > chunk.end - 1)
        assert data.chunk_at(source, 10**9) is None
    for row in (0, len(everything) // 2, len(everything) - 1):
        start, stop = data.sentence_rows[row]
        assert stop - start == len(everything[row].sentences)


def test_opening_parses_no_chunk_row_and_finding_one_parses_few(built, monkeypatch):
    _, s = built
    parsed = []
    monkeypatch.setattr(rows_module, "parse_chunk", lambda line: parsed.append(1) or parse_chunk(line))
    data = read_index(s.index_dir)
    assert parsed == []
    rows = data.source_rows("long.txt")
    assert len(rows) > 50
    wanted = LONG.index("harbour number 377")
    chunk = data.chunk_at("long.txt", wanted)
    assert chunk is not None and chunk.start <= wanted < chunk.end and "harbour number 377" in chunk.text
    assert len(parsed) <= 2 * int(np.log2(len(rows))) + 2  # a binary search, not a scan of the document


def test_rows_stay_right_through_changes_removals_and_failures(built, fake_embedder):
    docs, s = built
    _check_rows(s)
    (docs / "long.txt").write_text(LONG.replace("quiet", "loud"), encoding="utf-8")
    (docs / "notes.txt").write_bytes(b"\x00\x01\x02" * 100)  # turns bad: its last good rows are kept
    (docs / "memo.docx").unlink()
    (docs / "new.txt").write_text("A new note about lighthouses. It has two sentences.", encoding="utf-8")
    report = index_paths([docs], s, embedder=fake_embedder)
    assert "long.txt" in report.changed and "new.txt" in report.added and "memo.docx" in report.removed
    _check_rows(s)
    assert any("forty storms" in c.text for c in read_index(s.index_dir).document_chunks("notes.txt"))


def test_an_index_of_format_2_is_read_and_written_again_as_3(built, fake_embedder):
    docs, s = built
    before = _every_row(s)
    manifest = json.loads((s.index_dir / MANIFEST).read_text())
    manifest["format_version"] = 2  # as the previous qa wrote it: no row table, no first rows
    for entry in manifest["files"].values():
        del entry["row"]
    (s.index_dir / MANIFEST).write_text(json.dumps(manifest))
    (s.index_dir / f"rows.{manifest['generation']}.npy").unlink()
    data = read_index(s.index_dir)
    assert list(data.chunks) == before and data.document_chunks("long.txt") == [c for c in before
                                                                                if c.source == "long.txt"]
    fake_embedder.calls.clear()
    generation = manifest["generation"]
    report = index_paths([docs], s, embedder=fake_embedder)  # nothing changed: written again, nothing embedded
    assert not report.added and not report.changed and fake_embedder.calls == []
    manifest = json.loads((s.index_dir / MANIFEST).read_text())
    assert manifest["generation"] > generation and manifest["format_version"] == 3 and (s.index_dir / f"rows.{manifest['generation']}.npy").is_file()
    assert _every_row(s) == before
    _check_rows(s)
    index_paths([docs], s, embedder=fake_embedder)  # now current: nothing is written
    assert json.loads((s.index_dir / MANIFEST).read_text())["generation"] == manifest["generation"]


def test_an_old_generation_stays_readable_after_a_new_one_replaces_it(built, fake_embedder):
    docs, s = built
    old = read_index(s.index_dir)
    first = old.chunks[0]
    (docs / "long.txt").write_text("Replaced entirely.", encoding="utf-8")
    index_paths([docs], s, embedder=fake_embedder)
    assert not (s.index_dir / f"chunks.{old.manifest.generation}.jsonl").exists()
    assert old.chunks[0] == first and len(old.document_chunks("long.txt")) > 50  # a server answering meanwhile


def test_a_damaged_chunk_file_or_row_table_is_refused_with_the_rebuild_command(built):
    _, s = built
    gen = read_index(s.index_dir).manifest.generation
    chunk_file, table_file = s.index_dir / f"chunks.{gen}.jsonl", s.index_dir / f"rows.{gen}.npy"
    good_chunks, good_table = chunk_file.read_bytes(), table_file.read_bytes()
    chunk_file.write_bytes(good_chunks[:-10])
    with pytest.raises(IndexCorruptError, match="qa index --rebuild"):
        read_index(s.index_dir)
    chunk_file.write_bytes(good_chunks.replace(b'"source"', b'"sourcX"', 1))  # same length, row 0 unreadable
    data = read_index(s.index_dir)
    with pytest.raises(IndexCorruptError, match="row 0 .* is damaged.*qa index --rebuild"):
        data.chunks[0]
    chunk_file.write_bytes(good_chunks)
    np.save(table_file, np.load(table_file)[:-1])
    with pytest.raises(IndexCorruptError, match="qa index --rebuild"):
        read_index(s.index_dir)
    table_file.write_bytes(good_table)
    assert read_index(s.index_dir).chunks[0].source
