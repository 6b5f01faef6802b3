"""Shared fixtures: the real model once per session, a tiny fake embedder for index logic, sample folders."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "corpus" / "japan-taiwan-relations-taitra.txt"
QUESTIONS = json.loads((Path(__file__).parent / "data" / "seed_questions.json").read_text(encoding="utf-8"))
QA = [sys.executable, "-m", "qa"]


class HashEmbedder:
    """Deterministic bag-of-words vectors: words hash into 64 buckets. Counts what it was asked to embed."""

    name = "hash-64"
    backend = "fake"
    dim = 64

    def __init__(self) -> None:
        self.calls: list[str] = []

    def encode(self, texts, progress=None):
        self.calls.extend(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1.0
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)
        if progress:
            progress(len(texts), len(texts))
        return out

    def encode_spans(self, texts, spans, progress=None):
        """Sentence vectors are the hash vectors of the spans' own text: no extra calls are counted."""
        calls = len(self.calls)
        pieces = [text[a:b] for text, row in zip(texts, spans) for a, b in row]
        sentence = self.encode(pieces) if pieces else np.zeros((0, self.dim), dtype=np.float32)
        del self.calls[calls:]
        return self.encode(texts, progress), sentence


@pytest.fixture
def fake_embedder() -> HashEmbedder:
    return HashEmbedder()


@pytest.fixture(scope="session")
def settings():
    from qa.config import Settings

    return Settings()


STORES = ["folder", "postgres"]


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL 18 + pgvector server for the session (the bundled binaries; as a dedicated user when the
    tests run as root), in a folder of its own that is removed afterwards."""
    from qa import pgserver

    folder = Path(tempfile.mkdtemp(prefix="docqa-pg-"))
    folder.chmod(0o755)  # the server's own user must reach its data folder inside
    server = pgserver.start(folder / "primary")
    yield server
    pgserver.stop(server)
    shutil.rmtree(folder, ignore_errors=True)


def new_store(server) -> str:
    """A fresh, empty index in the server (a schema of its own)."""
    return f"{server.url}#t{uuid.uuid4().hex[:16]}"


@pytest.fixture(params=STORES)
def where(request, tmp_path):
    """Settings whose index lives in a new folder, or in a new index of the tests' PostgreSQL server."""
    from qa.config import Settings

    settings = Settings(index_dir=tmp_path / "idx")
    if request.param == "postgres":
        settings = settings.with_(store=new_store(request.getfixturevalue("postgres")))
    return settings


def index_into(paths, settings, **options):
    """The store's own indexer, called directly (tests pass a fake embedder)."""
    if settings.store:
        from qa.index.pgsync import index_into_postgres

        options.pop("wait", None)
        return index_into_postgres(paths, settings, **options)
    from qa.index.sync import index_paths

    return index_paths(paths, settings, **options)


def open_store(settings):
    """The index's reading side (qa/index/protocol.py), without a model."""
    if settings.store:
        from qa.index.postgres import PostgresIndex, StoreAddress

        return PostgresIndex(StoreAddress.parse(settings.store))
    from qa.index.store import read_index

    return read_index(settings.index_dir)


def stored_chunks(settings) -> list:
    """Every chunk of the index, document by document in source order."""
    reader = open_store(settings)
    return [c for source in sorted(reader.manifest.files) for c in reader.document_chunks(source)]


def stored_vectors(settings) -> dict[str, np.ndarray]:
    """Every chunk's vector by chunk id, as stored."""
    if not settings.store:
        from qa.index.store import read_index

        data = read_index(settings.index_dir)
        return {c.id: np.asarray(data.vectors[i]) for i, c in enumerate(data.chunks)}
    reader = open_store(settings)
    rows = reader.conn.execute(f"SELECT chunk_id, embedding::text FROM {reader.name}.chunks").fetchall()
    return {i: np.array(json.loads(v), dtype=np.float32) for i, v in rows}


@pytest.fixture(scope="session")
def seed_corpus(tmp_path_factory) -> Path:
    corpus = tmp_path_factory.mktemp("seed-corpus")
    shutil.copy(SEED, corpus / SEED.name)
    return corpus


@pytest.fixture(scope="session")
def seed_folder(tmp_path_factory, seed_corpus, settings) -> Path:
    """The default article indexed with the real model into a folder, once for the session."""
    from qa.api import build_index

    path = tmp_path_factory.mktemp("seed-index")
    build_index([seed_corpus], settings=settings.with_(index_dir=path))
    return path


@pytest.fixture(scope="session")
def seed_store(postgres, seed_corpus) -> str:
    """The default article indexed with the real model into PostgreSQL, once for the session (its address)."""
    from qa.api import build_index

    store = new_store(postgres)
    build_index([seed_corpus], store)
    return store


@pytest.fixture(scope="session", params=STORES)
def seed_index(request) -> Path | str:
    """The default article's index in each store: the folder, and PostgreSQL."""
    return request.getfixturevalue("seed_folder" if request.param == "folder" else "seed_store")


@pytest.fixture(scope="session")
def seed_retriever(seed_index, settings):
    from qa.api import Retriever

    return Retriever(seed_index, settings=settings)


def make_pdf(path: Path, pages: list[str]) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=11)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 6, text)
    pdf.output(str(path))


def make_docx(path: Path, paragraphs: list[str]) -> None:
    import docx

    document = docx.Document()
    for text in paragraphs:
        document.add_paragraph(text)
    document.save(str(path))


def make_mixed_folder(folder: Path) -> dict[str, str]:
    """One file per supported format, plus bad files. Returns {source: a phrase only that file contains}."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.txt").write_text("The lighthouse keeper logged forty storms in 1893.\n\nHe kept the lamp lit "
                                      "with whale oil until the harbour board switched to kerosene.", encoding="utf-8")
    (folder / "guide.md").write_text("# Beekeeping\n\nA healthy hive holds about fifty thousand bees in summer.\n\n"
                                     "- Queens live for up to five years.\n", encoding="utf-8")
    (folder / "page.html").write_text("<html><head><title>Volcano facts</title><script>var secret='hidden-js';"
                                      "</script><style>p{color:red}</style></head><body><h1>Volcanoes</h1><p>Mount "
                                      "<b>Etna</b> is the most active volcano in Europe.</p></body></html>",
                                      encoding="utf-8")
    make_pdf(folder / "report.pdf", ["Page one is about the glacier survey of 2019.",
                                     "The survey found the glacier retreated thirty metres in a single year."])
    make_docx(folder / "memo.docx", ["Memo to staff.", "The cafeteria will serve ramen every Thursday from March."])
    sub = folder / "nested" / "deeper"
    sub.mkdir(parents=True)
    (sub / "legacy.txt").write_bytes("Die Bäckerei öffnet um sechs Uhr früh und schließt mittags.".encode("cp1252"))
    (sub / "utf16.txt").write_text("The orchestra rehearses Mahler's fifth symphony on Tuesdays.", encoding="utf-16")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\ntrailer\n<<")
    (folder / "binary.txt").write_bytes(bytes(range(256)) * 64)
    (folder / "empty.txt").write_bytes(b"")
    (folder / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32)
    return {
        "notes.txt": "forty storms",
        "guide.md": "fifty thousand bees",
        "page.html": "most active volcano in Europe",
        "report.pdf": "retreated thirty metres",
        "memo.docx": "ramen every Thursday",
        "nested/deeper/legacy.txt": "Bäckerei öffnet um sechs Uhr",
        "nested/deeper/utf16.txt": "Mahler's fifth symphony",
    }
