"""Python API: build an index, and a Retriever that keeps one index open for many questions."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from qa.citations import Context, cite, context
from qa.config import Settings
from qa.embedding import Embedder, load_embedder, resolve_backend
from qa.errors import IndexMissingError, QAError
from qa.indexing import IndexProgress, index_paths, model_info
from qa.records import IndexReport, Passage
from qa.retrieval import Searcher
from qa.store import MANIFEST, check_compatible, read_index, read_manifest

_embedders: dict[tuple[str, str], Embedder] = {}
_embedders_lock = threading.Lock()


def shared_embedder(settings: Settings, recorded_backend: str | None = None) -> Embedder:
    """One model per process and backend: loading it takes seconds and its weights are read-only.
    With backend "auto", an index's recorded backend is used so that questions and passages match."""
    backend = resolve_backend(settings.backend, settings.model_path, recorded_backend)
    with _embedders_lock:
        key = (settings.model_path, backend)
        if key not in _embedders:
            _embedders[key] = load_embedder(settings.model_path, settings.model_name, backend, settings.cache_dir)
        return _embedders[key]


@dataclass(frozen=True)
class Answer:
    question: str
    mode: str
    passages: tuple[Passage, ...]
    relevance: float

    def to_dict(self) -> dict[str, object]:
        return {"question": self.question, "passages": [p.to_dict() for p in self.passages]}


def build_index(paths: list[str | Path] | None = None, index: str | Path | None = None, *,
                settings: Settings | None = None, progress: IndexProgress | None = None,
                rebuild: bool = False, wait: float = 0.0) -> IndexReport:
    """Index files/folders (default: the corpus folder) into `index` (default: the project's index/)."""
    settings = _settings(settings, index)
    roots = [Path(p) for p in paths] if paths else [settings.corpus_dir]
    # A model this process already loaded is reused; otherwise it is loaded only if something needs embedding.
    backend = resolve_backend(settings.backend, settings.model_path,
                              None if rebuild else _recorded_backend(settings.index_dir))
    embedder = _embedders.get((settings.model_path, backend))
    return index_paths(roots, settings, embedder=embedder, progress=progress, rebuild=rebuild, wait=wait)


def _recorded_backend(path: Path) -> str | None:
    try:
        manifest = read_manifest(path)
    except QAError:
        return None
    return str(manifest.model.get("backend")) if manifest else None


class Retriever:
    """An open index. It reloads by itself when another process commits a new version of the index."""

    def __init__(self, index: str | Path | None = None, *, settings: Settings | None = None,
                 build_if_missing: bool | None = None, progress: IndexProgress | None = None) -> None:
        self.settings = _settings(settings, index)
        if build_if_missing is None:
            build_if_missing = index is None  # only the project's default index is built on demand
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        if build_if_missing and not (self.settings.index_dir / MANIFEST).is_file():
            build_index(settings=self.settings, progress=progress)
        self._load()

    @property
    def path(self) -> Path:
        return self.settings.index_dir

    def _manifest_stamp(self) -> tuple[int, int]:
        try:
            st = (self.path / MANIFEST).stat()
        except FileNotFoundError:
            raise IndexMissingError(f"no index at {self.path} yet: build it with `qa index --index {self.path}`") from None
        return st.st_mtime_ns, st.st_ino

    def _load(self) -> None:
        stamp = self._manifest_stamp()
        data = read_index(self.path)
        embedder = shared_embedder(self.settings, str(data.manifest.model.get("backend")))
        check_compatible(data.manifest, model_info(self.settings, embedder), self.settings.chunk_settings(), self.path)
        self.data = data
        self.searcher = Searcher(data, self.settings, embedder)
        self._stamp = stamp

    def refresh(self) -> None:
        """Pick up a newer index written by another process or thread, if there is one."""
        with self._lock:
            if self._manifest_stamp() != self._stamp:
                self._load()

    def ask(self, question: str, k: int | None = None, mode: str | None = None) -> Answer:
        self.refresh()
        searcher = self.searcher
        result = searcher.search(question, k, mode)
        return Answer(result.question, result.mode, tuple(cite(h) for h in result.hits), result.relevance)

    def retrieve(self, question: str, k: int | None = None, mode: str | None = None) -> list[Passage]:
        return list(self.ask(question, k, mode).passages)

    def context(self, passage: Passage, sentences: int = 3) -> Context:
        return context(self.data, passage, sentences)

    def sources(self) -> list[str]:
        self.refresh()
        return sorted(self.data.manifest.files)


_retrievers: dict[Path, Retriever] = {}


def retrieve(question: str, k: int = 5, index: str | Path | None = None, mode: str | None = None) -> list[Passage]:
    """Cited passages answering `question`, best first; empty when the documents do not answer it."""
    settings = _settings(None, index)
    key = settings.index_dir.resolve()
    if key not in _retrievers:
        _retrievers[key] = Retriever(index, settings=settings)
    return _retrievers[key].retrieve(question, k, mode)


def _settings(settings: Settings | None, index: str | Path | None) -> Settings:
    settings = settings or Settings()
    return settings.with_(index_dir=Path(index)) if index is not None else settings
