"""Python API: build an index, and a Retriever that keeps one index open for many questions."""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from qa.citations import Context, cite, context, quote
from qa.config import Settings, is_database
from qa.backends import explain_backend, load_embedder, resolve_backend
from qa.embedding import Embedder
from qa.errors import IndexChangedError, IndexMissingError, QAError
from qa.index.sync import IndexProgress, index_paths, model_info
from qa.records import IndexReport, Passage, Quote
from qa.retrieval import Searcher
from qa.index.protocol import IndexReader
from qa.index.store import MANIFEST, check_compatible, read_index, read_manifest

_embedders: dict[tuple[str, str], Embedder] = {}
_embedders_lock = threading.Lock()


def shared_embedder(settings: Settings, recorded_backend: str | None = None) -> Embedder:
    """One model per process and backend: loading it takes seconds and its weights are read-only.
    With backend "auto", an index's recorded backend is used so that questions and passages match."""
    backend = resolve_backend(settings, recorded_backend)
    with _embedders_lock:
        key = (settings.model_path, backend)
        if key not in _embedders:
            _embedders[key] = load_embedder(settings.model_path, settings.model_name, backend, settings.cache_dir)
        return _embedders[key]


@dataclass(frozen=True)
class Snapshot:
    """One committed version of an index, loaded, with the searcher over it: replaced whole, in one assignment,
    when another version is committed, so that a reader never sees the data of one and the searcher of another."""

    data: IndexReader
    searcher: Searcher
    stamp: tuple[int, int]


@dataclass(frozen=True)
class Answer:
    """The reply to one question: the answering sentence (None when the documents do not answer), the passages
    it and the other evidence come from, and the confidence (0 to 1) that the documents answer at all."""

    question: str
    mode: str
    passages: tuple[Passage, ...]
    confidence: float
    answer: Quote | None = None
    # True when the confidence is below the cut-off: passages are then empty, or the closest ones if asked for.
    low_confidence: bool = False
    # The version of the index the passages come from: their context is read from the same one.
    snapshot: Snapshot | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, object]:
        return {"question": self.question, "answer": self.answer.to_dict() if self.answer else None,
                "confidence": round(self.confidence, 4), "passages": [p.to_dict() for p in self.passages]}


def build_index(paths: list[str | Path] | None = None, index: str | Path | None = None, *,
                settings: Settings | None = None, progress: IndexProgress | None = None,
                rebuild: bool = False, wait: float = 0.0) -> IndexReport:
    """Index files/folders (default: the corpus folder) into `index` (default: the project's index/)."""
    settings = _settings(settings, index)
    roots = [Path(p) for p in paths] if paths else [settings.corpus_dir]
    # A model this process already loaded is reused; otherwise it is loaded only if something needs embedding.
    choice = explain_backend(settings, None if rebuild else _recorded_backend(settings))
    with _embedders_lock:
        embedder = _embedders.get((settings.model_path, choice.backend))
    if settings.store:  # several writers may share a database: no lock to wait for
        from qa.index.pgsync import index_into_postgres

        return index_into_postgres(roots, settings, embedder=embedder, progress=progress, rebuild=rebuild,
                                   backend_reason=choice.reason)
    return index_paths(roots, settings, embedder=embedder, progress=progress, rebuild=rebuild, wait=wait,
                       backend_reason=choice.reason)


def _recorded_backend(settings: Settings) -> str | None:
    try:
        if settings.store:
            meta = _store_meta(settings)
            return str(meta["model"]["backend"]) if meta else None
        manifest = read_manifest(settings.index_dir)
    except QAError:
        return None
    return str(manifest.model.get("backend")) if manifest else None


def _store_meta(settings: Settings) -> dict | None:
    """The recorded model and settings of the index in the database; None when there is none yet."""
    from qa.index.postgres import StoreAddress, connect, read_meta

    address = StoreAddress.parse(settings.store)
    with connect(address) as conn:
        return read_meta(conn, address.name)


class Retriever:
    """An open index. It reloads by itself when another process commits a new version of the index."""

    def __init__(self, index: str | Path | None = None, *, settings: Settings | None = None,
                 build_if_missing: bool | None = None, progress: IndexProgress | None = None) -> None:
        self.settings = _settings(settings, index)
        if build_if_missing is None:
            # Only the project's default index folder is built on demand; a database is built by `qa index`.
            build_if_missing = index is None and not self.settings.store
        self._lock = threading.Lock()
        if build_if_missing and not self._exists():
            build_index(settings=self.settings, progress=progress)
        self._snapshot = self._load()

    @property
    def path(self) -> Path | str:
        return self.settings.store or self.settings.index_dir

    def _exists(self) -> bool:
        if self.settings.store:
            return _store_meta(self.settings) is not None
        return (self.settings.index_dir / MANIFEST).is_file()

    def _manifest_stamp(self) -> tuple[int, int]:
        if self.settings.store:  # the database counts its commits
            return self._snapshot.data.current_version(), 0
        try:
            st = (self.path / MANIFEST).stat()
        except FileNotFoundError:
            raise IndexMissingError(f"no index at {self.path} yet: build it with `qa index --index {self.path}`") from None
        return st.st_mtime_ns, st.st_ino

    def _load(self) -> Snapshot:
        if self.settings.store:
            from qa.index.postgres import PostgresIndex, StoreAddress

            data = PostgresIndex(StoreAddress.parse(self.settings.store))
            stamp = (data.version, 0)
        else:
            stamp = self._manifest_stamp()
            data = read_index(self.settings.index_dir)
        embedder = shared_embedder(self.settings, str(data.manifest.model.get("backend")))
        check_compatible(data.manifest, model_info(self.settings, embedder), self.settings.chunk_settings(), self.path,
                         "--store" if self.settings.store else "--index")
        return Snapshot(data, Searcher(data, self.settings, embedder), stamp)

    @property
    def data(self) -> IndexReader:
        return self._snapshot.data

    @property
    def searcher(self) -> Searcher:
        return self._snapshot.searcher

    def warm(self) -> None:
        """Get the model ready for a stream of questions (a server at start): about a second, once."""
        warm = getattr(self.searcher.embedder, "warm", None)
        if warm is not None:
            warm()

    def refresh(self) -> Snapshot:
        """Pick up a newer index written by another process or thread, if there is one; the current version."""
        with self._lock:
            if self._manifest_stamp() != self._snapshot.stamp:
                self._snapshot = self._load()
            return self._snapshot

    def ask(self, question: str, k: int | None = None, mode: str | None = None, *, closest: bool = False) -> Answer:
        """The answer and its passages; none when the documents do not answer, unless `closest` (then the
        closest passages come back with `low_confidence` set and no answer sentence)."""
        snapshot = self.refresh()
        result = snapshot.searcher.ask(question, k, mode, refuse=not closest)
        best = quote(result.hits[0]) if result.hits and not result.abstained else None
        return Answer(result.question, result.mode, tuple(cite(h) for h in result.hits), result.confidence, best,
                      result.abstained, snapshot)

    def retrieve(self, question: str, k: int | None = None, mode: str | None = None) -> list[Passage]:
        return list(self.ask(question, k, mode).passages)

    def context(self, passage: Passage, sentences: int = 3, answer: Answer | None = None) -> Context:
        """The sentences around a passage, from the version of the index its answer came from (given), else the
        current one."""
        snapshot = answer.snapshot if answer is not None and answer.snapshot is not None else self._snapshot
        try:
            return context(snapshot.data, passage, sentences)
        except (KeyError, FileNotFoundError):
            raise IndexChangedError(f"{passage.source} is no longer in the index: ask the question again") from None

    def sources(self) -> list[str]:
        return sorted(self.refresh().data.manifest.files)


# Open indexes of `retrieve`, the most recently used last; a few at most, each holds an index in memory.
_retrievers: OrderedDict[Path | str, Retriever] = OrderedDict()
_retrievers_lock = threading.Lock()
_RETRIEVERS_KEPT = 4


def retrieve(question: str, k: int | None = None, index: str | Path | None = None,
             mode: str | None = None) -> list[Passage]:
    """Cited passages answering `question`, best first; empty when the documents do not answer it."""
    settings = _settings(None, index)
    key = settings.store or settings.index_dir.resolve()
    with _retrievers_lock:
        retriever = _retrievers.get(key)
        if retriever is None:
            retriever = _retrievers[key] = Retriever(index, settings=settings)
        _retrievers.move_to_end(key)
        while len(_retrievers) > _RETRIEVERS_KEPT:
            _retrievers.popitem(last=False)
    return retriever.retrieve(question, k, mode)


def _settings(settings: Settings | None, index: str | Path | None) -> Settings:
    settings = settings or Settings()
    if index is None:
        return settings
    if is_database(index):  # a database named where a folder could be
        return settings.with_(store=str(index))
    return settings.with_(index_dir=Path(index), store="")
