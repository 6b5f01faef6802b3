"""Retrieve stage: dense (FAISS) and BM25 search over an index, fused, with a measured abstention cut-off."""
from __future__ import annotations

import re
import threading
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from qa.config import MODES, Settings
from qa.embedding import Embedder
from qa.errors import QuestionError
from qa.records import Hit
from qa.store import IndexData, bm25_tokenize

_WORD = re.compile(r"\w", re.UNICODE)
_SENTENCE_END = tuple(".!?。！？…\"”’')»")


def _is_heading(text: str) -> bool:
    """A short line with no closing punctuation: a title or section heading rather than a sentence."""
    return "\n" not in text and len(text.split()) <= 10 and not text.rstrip().endswith(_SENTENCE_END)


def _fuse(dense: np.ndarray, keyword: np.ndarray, top_keyword: float, alpha: float, fusion: str) -> np.ndarray:
    """One score per candidate from its cosine and its BM25 score (see Settings.fusion)."""
    norm = keyword / top_keyword if top_keyword > 0 else np.zeros(len(keyword), dtype=np.float32)
    if fusion == "rrf":  # reciprocal rank fusion, scaled so the best candidate scores 1
        ranks_d = np.argsort(np.argsort(-dense, kind="stable"), kind="stable")
        ranks_k = np.argsort(np.argsort(-keyword, kind="stable"), kind="stable")
        rrf = alpha / (60 + ranks_d) + (1 - alpha) / (60 + ranks_k)
        return rrf / rrf.max()
    if fusion == "minmax":  # both signals stretched to [0, 1] over the candidates
        span = float(dense.max() - dense.min())
        dense = (dense - dense.min()) / span if span > 0 else np.ones_like(dense)
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
        self._vocab: dict[str, int] = dict(data.bm25.vocab_dict)
        # Document frequency per term straight from BM25's sparse matrix: idf for sentence-level matching.
        df = np.diff(np.asarray(data.bm25.scores["indptr"]))
        n = max(len(data.chunks), 1)
        self._idf = np.log(1.0 + (n - df + 0.5) / (df + 0.5)).astype(np.float32)
        # Sentence vectors of recently shown chunks: popular passages are not embedded again for every question.
        self._sentence_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._document_ids: np.ndarray | None = None

    def search(self, question: str, k: int | None = None, mode: str | None = None,
               rerank: int | None = None) -> SearchResult:
        """The k best chunks; the best `rerank` of them (default k + rerank_extra) re-scored by their best
        sentence, the rest in fused order after them."""
        s = self.settings
        k = s.k if k is None else k
        rerank = k + s.rerank_extra if rerank is None else rerank
        mode = mode or s.mode
        if mode not in MODES:
            raise QuestionError(f"unknown mode '{mode}': use one of {', '.join(MODES)}")
        if k < 1:
            raise QuestionError("k must be at least 1")
        question = clean_question(question, s.max_question_chars)
        n = len(self.data.chunks)
        pool = min(n, max(s.candidates, k))

        # The question is tokenized once: its terms feed BM25, the sentence matching and the keyword highlight.
        terms = bm25_tokenize([question])[0]
        term_ids = [self._vocab[t] for t in terms if t in self._vocab]
        keyword = self._bm25_scores(term_ids)
        top_keyword = float(keyword.max()) if n else 0.0
        if mode == "keyword":
            order = [i for i in np.argsort(-keyword, kind="stable")[:k] if keyword[i] > 0]
            hits = [self._keyword_hit(i, float(keyword[i]), set(terms)) for i in order]
            return SearchResult(question, mode, tuple(hits), top_keyword, not hits)

        query = self._encode([question])[0]
        rows = self._candidates(query, pool, keyword if mode == "hybrid" and top_keyword > 0 else None)
        vectors = np.asarray(self.data.vectors[rows], dtype=np.float32)
        dense = cosines = vectors @ query
        fused = _fuse(dense, keyword[rows], top_keyword, s.alpha, s.fusion) if mode == "hybrid" else dense
        if s.feedback_weight > 0 and len(rows) > s.feedback_depth:
            # Pseudo-relevance feedback: the question moved towards its best candidates' vectors, then the
            # candidates scored again (the sentence scores and the cut-off still use the question itself).
            top = np.argpartition(-fused, s.feedback_depth)[: s.feedback_depth]
            moved = query + s.feedback_weight * vectors[top].mean(axis=0)
            dense = vectors @ (moved / np.linalg.norm(moved))
            fused = _fuse(dense, keyword[rows], top_keyword, s.alpha, s.fusion) if mode == "hybrid" else dense
        if s.document_weight > 0 and len(rows) > 1:
            # Evidence from the rest of the document: each chunk gains the mean score of its document's other
            # candidates, so a passage from a document that matches throughout ranks above a lone match.
            _, inverse, counts = np.unique(self._documents()[rows], return_inverse=True, return_counts=True)
            others = (np.bincount(inverse, weights=fused)[inverse] - fused) / np.maximum(counts[inverse] - 1, 1)
            fused = fused + s.document_weight * np.where(counts[inverse] > 1, others, 0.0)
        # The few best chunks are re-scored with their best sentence: a chunk that holds the one sentence
        # answering the question beats a chunk that is only broadly on topic.
        order = np.argsort(-fused, kind="stable")[: max(k, rerank)]
        picked = [(int(rows[i]), float(fused[i]), float(cosines[i])) for i in order]
        head = picked[:rerank]
        sentence_scores = self._sentence_scores(query, set(term_ids), [r for r, _, _ in head])
        hits = []
        for (row, score, cosine), (span, span_score, span_cosine) in zip(head, sentence_scores):
            final = (1 - s.sentence_weight) * score + s.sentence_weight * span_score
            hits.append(Hit(self.data.chunks[row], final, cosine, float(keyword[row]), span, span_cosine))
        hits.sort(key=lambda h: -h.score)
        for row, score, cosine in picked[rerank:]:  # beyond the re-scored head: no highlight was computed
            chunk = self.data.chunks[row]
            hits.append(Hit(chunk, score, cosine, float(keyword[row]), chunk.sentences[0], cosine))
        hits = hits[:k]
        relevance = max((h.highlight_score for h in hits), default=0.0)
        if relevance < s.min_relevance:
            return SearchResult(question, mode, (), relevance, True)
        return SearchResult(question, mode, tuple(hits), relevance, False)

    def _candidates(self, query: np.ndarray, pool: int, keyword: np.ndarray | None) -> np.ndarray:
        """Rows to score: the `pool` nearest chunks, and (given BM25 scores, some above 0) the `pool` best
        keyword matches."""
        _, ids = self.data.dense.search(query[None, :], pool)
        candidates = {int(i) for i in ids[0] if i >= 0}
        if keyword is not None:
            candidates.update(int(i) for i in np.argpartition(-keyword, pool - 1)[:pool] if keyword[i] > 0)
        return np.fromiter(candidates, dtype=np.int64)

    def _documents(self) -> np.ndarray:
        """Each row's document as a number (made on first use: only the document weight needs it)."""
        if self._document_ids is None:
            numbers: dict[str, int] = {}
            self._document_ids = np.fromiter((numbers.setdefault(c.source, len(numbers)) for c in self.data.chunks),
                                             dtype=np.int64, count=len(self.data.chunks))
        return self._document_ids

    def _encode(self, texts: list[str]) -> np.ndarray:
        if self.embedder is None:
            raise QuestionError("this search needs the embedding model; use mode 'keyword' or load the model")
        return self.embedder.encode(texts)

    def _bm25_scores(self, term_ids: list[int]) -> np.ndarray:
        if not term_ids or not self.data.chunks:
            return np.zeros(len(self.data.chunks), dtype=np.float32)
        return np.asarray(self.data.bm25.get_scores_from_ids(term_ids), dtype=np.float32)

    def _sentence_scores(self, query: np.ndarray, terms: set[int],
                         rows: list[int]) -> list[tuple[tuple[int, int], float, float]]:
        """Each chunk's best sentence (the highlight): cosine plus the idf-weighted share of the question's
        terms it contains, which separates sentences the model finds almost equally close.
        Returns (span, combined score, cosine)."""
        chunks = [self.data.chunks[r] for r in rows]
        spans = [span for c in chunks for span in c.sentences]
        texts = [t for c in chunks for t in c.sentence_texts]
        if not texts:
            return []
        cosines = self._sentence_vectors(rows) @ query
        weight = self.settings.sentence_terms_weight
        combined = cosines  # term matching tokenizes every sentence: skipped when its weight is 0 (the default)
        if weight:
            combined = (cosines + weight * self._term_coverage(terms, texts)) / (1 + weight)  # stays in [-1, 1]
        # Headings echo the question's words but answer nothing; they win only where there is nothing else.
        # The document's own title (its first line) is an answer to questions about the whole document.
        headings = np.array([_is_heading(t) and span[0] > 0 for t, span in zip(texts, spans)])
        result, at = [], 0
        for c in chunks:
            part = slice(at, at + len(c.sentences))
            ranked = np.where(headings[part], combined[part] - 10.0, combined[part])
            best = at + int(np.argmax(ranked))
            result.append((spans[best], float(combined[best]), float(cosines[best])))
            at += len(c.sentences)
        return result

    def _sentence_vectors(self, rows: list[int]) -> np.ndarray:
        if self.data.sentence_vectors is not None:  # pooled from the chunk's own pass when it was indexed
            return np.concatenate([self.data.chunk_sentence_vectors(r) for r in rows]).astype(np.float32)
        # Indexes made before sentence vectors were kept: embed them now, and remember the popular ones.
        chunks = [self.data.chunks[r] for r in rows]
        with self._cache_lock:
            cached = {c.id: self._sentence_cache[c.id] for c in chunks if c.id in self._sentence_cache}
        missing = [c for c in {c.id: c for c in chunks}.values() if c.id not in cached]
        if missing:
            texts = [t for c in missing for t in c.sentence_texts]
            vectors = self._encode(texts)
            at = 0
            for c in missing:
                cached[c.id] = vectors[at : at + len(c.sentences)]
                at += len(c.sentences)
        with self._cache_lock:
            for c in chunks:
                self._sentence_cache[c.id] = cached[c.id]
                self._sentence_cache.move_to_end(c.id)
            while len(self._sentence_cache) > self.settings.sentence_cache_chunks:
                self._sentence_cache.popitem(last=False)
        return np.concatenate([cached[c.id] for c in chunks])

    def _term_coverage(self, terms: set[int], texts: list[str]) -> np.ndarray:
        total = float(sum(self._idf[t] for t in terms))
        if not terms or total <= 0:
            return np.zeros(len(texts), dtype=np.float32)
        found = [{self._vocab[t] for t in tokens if t in self._vocab} & terms for tokens in bm25_tokenize(texts)]
        return np.array([sum(self._idf[t] for t in f) / total for f in found], dtype=np.float32)

    def _keyword_hit(self, row: int, score: float, terms: set[str]) -> Hit:
        # Without the model, the highlight is the sentence sharing the most question terms.
        chunk = self.data.chunks[row]
        overlaps = [len(terms & set(t)) for t in bm25_tokenize(chunk.sentence_texts)]
        best = int(np.argmax(overlaps))
        return Hit(chunk, score, 0.0, score, chunk.sentences[best], float(overlaps[best]))
