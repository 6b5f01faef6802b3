"""Retrieve stage: dense (FAISS) and BM25 search over an index, fused, with a measured abstention cut-off."""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import numpy as np

from qa.config import MODES, Settings
from qa.embedding import Embedder
from qa.errors import QuestionError
from qa.records import Hit
from qa.index.keyword import bm25_tokenize
from qa.index.store import IndexData

_WORD = re.compile(r"\w", re.UNICODE)
_SENTENCE_END = tuple(".!?。！？…\"”’')»")


def _is_heading(text: str) -> bool:
    """A short line with no closing punctuation: a title or section heading rather than a sentence."""
    return "\n" not in text and len(text.split()) <= 10 and not text.rstrip().endswith(_SENTENCE_END)


def fuse(dense: np.ndarray, keyword: np.ndarray, top_keyword: float, alpha: float) -> np.ndarray:
    """One score per candidate: its cosine and its BM25 score over the best candidate's, weighted by alpha
    (tuned on SciFact train; min-max and reciprocal-rank fusion measured worse, see docs/)."""
    norm = keyword / top_keyword if top_keyword > 0 else np.zeros(len(keyword), dtype=np.float32)
    return alpha * dense + (1 - alpha) * norm


@dataclass(frozen=True)
class SearchResult:
    """Hits best first; empty when the best evidence is below the cut-off (`relevance` says how close it came)."""

    question: str
    mode: str
    hits: tuple[Hit, ...]
    relevance: float
    abstained: bool


def clean_question(question: str, max_chars: int) -> str:
    """Strip control characters and white space; refuse what cannot be a question."""
    if not isinstance(question, str):
        raise QuestionError("the question must be text")
    text = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in question)
    text = " ".join(text.split())
    if not text:
        raise QuestionError("the question is empty: type a question about your documents")
    if len(text) > max_chars:
        raise QuestionError(f"the question is {len(text):,} characters long; the limit is {max_chars:,}: "
                            "ask something shorter")
    if not _WORD.search(text):
        raise QuestionError("the question has no words in it: ask something about your documents")
    return text


class Searcher:
    """Searches one loaded index. The embedder is only needed for the semantic and hybrid modes."""

    def __init__(self, data: IndexData, settings: Settings, embedder: Embedder | None) -> None:
        self.data = data
        self.settings = settings
        self.embedder = embedder

    def ask(self, question: str, k: int | None = None, mode: str | None = None,
               rerank: int | None = None) -> SearchResult:
        """The k best chunks; the best `rerank` of them (default k + rerank_extra) re-scored by their best
        sentence, the rest in fused order after them. `relevance` is the best sentence's cosine with the question
        (semantic, hybrid) or the share of the question's terms in the best chunk (keyword): 0 to 1 either way."""
        s = self.settings
        k = s.k if k is None else k
        rerank = k + s.rerank_extra if rerank is None else rerank
        mode = mode or s.mode
        if mode not in MODES:
            raise QuestionError(f"unknown mode '{mode}': use one of {', '.join(MODES)}")
        if k < 1:
            raise QuestionError("k must be at least 1")
        question = clean_question(question, s.max_question_chars)
        # The question is tokenized once, as the index's chunks were: its terms feed BM25 and the keyword highlight.
        terms = bm25_tokenize([question], self.data.manifest.bm25)[0]
        keyword = self.data.bm25.scores(terms, len(self.data.chunks))
        if mode == "keyword":
            hits = self._keyword_hits(keyword, k, set(terms))
            relevance = hits[0].highlight_score if hits else 0.0
            return SearchResult(question, mode, tuple(hits), relevance, not hits)
        query = self._encode([question])[0]
        rows, fused, cosines = self._fused_candidates(query, keyword, mode, k)
        hits = self._rescored(query, rows, fused, cosines, keyword, k, rerank)
        relevance = max((h.highlight_score for h in hits), default=0.0)
        if relevance < s.min_relevance:
            return SearchResult(question, mode, (), relevance, True)
        return SearchResult(question, mode, tuple(hits), relevance, False)

    def _fused_candidates(self, query: np.ndarray, keyword: np.ndarray, mode: str,
                          k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Candidate rows with their fused scores and cosines."""
        top_keyword = float(keyword.max()) if len(keyword) else 0.0
        pool = min(len(self.data.chunks), max(self.settings.candidates, k))
        rows = self._candidates(query, pool, keyword if mode == "hybrid" and top_keyword > 0 else None)
        cosines = np.asarray(self.data.vectors[rows], dtype=np.float32) @ query
        if mode == "hybrid":
            return rows, fuse(cosines, keyword[rows], top_keyword, self.settings.alpha), cosines
        return rows, cosines, cosines

    def _rescored(self, query: np.ndarray, rows: np.ndarray, fused: np.ndarray, cosines: np.ndarray,
                  keyword: np.ndarray, k: int, rerank: int) -> list[Hit]:
        """The few best chunks re-scored with their best sentence: a chunk that holds the one sentence answering
        the question beats a chunk that is only broadly on topic. The others follow in fused order."""
        weight = self.settings.sentence_weight
        order = np.argsort(-fused, kind="stable")[: max(k, rerank)]
        picked = [(int(rows[i]), float(fused[i]), float(cosines[i])) for i in order]
        head = picked[:rerank]
        hits = []
        for (row, score, cosine), (span, span_cosine) in zip(head, self._best_sentences(query, [r for r, _, _ in head])):
            hits.append(Hit(self.data.chunks[row], (1 - weight) * score + weight * span_cosine, cosine,
                            float(keyword[row]), span, span_cosine))
        hits.sort(key=lambda h: -h.score)
        for row, score, cosine in picked[rerank:]:  # beyond the re-scored head: no highlight was computed
            chunk = self.data.chunks[row]
            hits.append(Hit(chunk, score, cosine, float(keyword[row]), chunk.sentences[0], cosine))
        return hits[:k]

    def _candidates(self, query: np.ndarray, pool: int, keyword: np.ndarray | None) -> np.ndarray:
        """Rows to score: the `pool` nearest chunks, and (given BM25 scores, some above 0) the `pool` best
        keyword matches."""
        _, ids = self.data.dense.search(query[None, :], pool)  # rows of -1 where the index holds fewer
        candidates = {int(i) for i in ids[0] if i >= 0}
        if keyword is not None:
            candidates.update(int(i) for i in np.argpartition(-keyword, pool - 1)[:pool] if keyword[i] > 0)
        return np.fromiter(candidates, dtype=np.int64)

    def _encode(self, texts: list[str]) -> np.ndarray:
        if self.embedder is None:
            raise QuestionError("this search needs the embedding model; use mode 'keyword' or load the model")
        return self.embedder.encode(texts)

    def _best_sentences(self, query: np.ndarray, rows: list[int]) -> list[tuple[tuple[int, int], float]]:
        """Each chunk's best sentence (the highlight) by its cosine with the question: (span, cosine).
        Headings echo the question's words but answer nothing; they win only where there is nothing else. The
        document's own title (its first line) is an answer to questions about the whole document."""
        chunks = [self.data.chunks[r] for r in rows]
        if not chunks:
            return []
        spans = [span for c in chunks for span in c.sentences]
        texts = [t for c in chunks for t in c.sentence_texts]
        cosines = np.concatenate([self.data.chunk_sentence_vectors(r) for r in rows]).astype(np.float32) @ query
        headings = np.array([_is_heading(t) and span[0] > 0 for t, span in zip(texts, spans)])
        result, at = [], 0
        for c in chunks:
            part = slice(at, at + len(c.sentences))
            best = at + int(np.argmax(np.where(headings[part], cosines[part] - 10.0, cosines[part])))
            result.append((spans[best], float(cosines[best])))
            at += len(c.sentences)
        return result

    def _keyword_hits(self, keyword: np.ndarray, k: int, terms: set[str]) -> list[Hit]:
        """Without the model, the highlight is the sentence sharing the most question terms; its score is the
        share of the question's terms it holds."""
        hits = []
        for row in (i for i in np.argsort(-keyword, kind="stable")[:k] if keyword[i] > 0):
            chunk = self.data.chunks[row]
            overlaps = [len(terms & set(t)) for t in bm25_tokenize(chunk.sentence_texts, self.data.manifest.bm25)]
            best = int(np.argmax(overlaps))
            hits.append(Hit(chunk, float(keyword[row]), 0.0, float(keyword[row]), chunk.sentences[best],
                            overlaps[best] / max(len(terms), 1)))
        return hits
