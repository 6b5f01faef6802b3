"""Retrieve stage: dense (FAISS) and BM25 search over an index, fused, with a measured abstention cut-off."""
from __future__ import annotations

import functools
import re
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from qa.answering import AnswerModel, Evidence, confidence_features, content_terms, load_model, sentence_features
from qa.config import MODES, Settings
from qa.embedding import Embedder
from qa.errors import QuestionError
from qa.records import Chunk, Hit
from qa.rules import RULE_CONFIDENCE, asks_author, byline, defined, definition, expanded, expansion
from qa.shapes import LIST_ITEM, is_question
from qa.index.dense import dot_rows
from qa.index.keyword import bm25_tokenize
from qa.index.protocol import IndexReader

_WORD = re.compile(r"\w", re.UNICODE)


@functools.lru_cache(maxsize=1)
def _helper() -> ThreadPoolExecutor:
    # Two workers: two questions can be in flight at once (the web chat serves several people). A worker embeds a
    # question or searches the graph (Searcher._searched).
    return ThreadPoolExecutor(max_workers=2, thread_name_prefix="qa-search")


def fuse(dense: np.ndarray, keyword: np.ndarray, top_keyword: float, alpha: float) -> np.ndarray:
    """One score per candidate: its cosine and its BM25 score over the best candidate's, weighted by alpha
    (tuned on SciFact train; min-max and reciprocal-rank fusion measured worse, see docs/)."""
    norm = keyword / top_keyword if top_keyword > 0 else np.zeros(len(keyword), dtype=np.float32)
    return alpha * dense + (1 - alpha) * norm


@dataclass(frozen=True)
class SearchResult:
    """Hits best first; empty when the confidence that they answer is below the cut-off (it says how close)."""

    question: str
    mode: str
    hits: tuple[Hit, ...]
    confidence: float
    abstained: bool


def _highlight(chunk: Chunk, logits: np.ndarray, best: int, model: AnswerModel) -> tuple[int, int]:
    """The best sentence, joined by the better of its neighbours when the model scores that one nearly as high:
    one or two sentences; and when they end announcing a list ("these rules:"), the list's items after them."""
    first = last = best
    texts = chunk.sentence_texts  # built from the chunk at each call: once here
    near = [j for j in (best - 1, best + 1) if 0 <= j < len(logits)]
    if near:
        j = max(near, key=lambda n: logits[n])
        words = sum(len(texts[n].split()) for n in (best, j))
        if model.joins(float(logits[best] - logits[j]), words):
            first, last = sorted((best, j))
    return chunk.sentences[first][0], chunk.sentences[_list_end(texts, last)][1]


_LIST_ITEMS, _LIST_WORDS = 10, 120


def _list_end(texts: list[str], last: int) -> int:
    """The last sentence of the list `texts[last]` announces with a colon, or `last`: the announcement alone
    answers nothing ("Keep these rules in mind:"), its items do. At most 10 items and 120 words."""
    if not texts[last].rstrip().endswith(":"):
        return last
    end, words = last, 0
    while end + 1 < len(texts) and end - last < _LIST_ITEMS and LIST_ITEM.match(texts[end + 1]):
        words += len(texts[end + 1].split())
        if words > _LIST_WORDS:
            break
        end += 1
    return end


def _rule_first(hits: list[Hit], confidence: float, find, same_document: bool) -> tuple[list[Hit], float]:
    """The first sentence `find` (text, start) -> span accepts, in ranked order (in the best document only, if
    `same_document`), becomes the answer, its chunk first: the byline and abbreviation rules."""
    top = hits[0].chunk.source if hits else None
    for n, hit in enumerate(hits):
        if same_document and hit.chunk.source != top:
            continue
        for span, text in zip(hit.chunk.sentences, hit.chunk.sentence_texts):
            found = find(text, span[0])
            if found:
                first = Hit(hit.chunk, hit.score, hit.dense, hit.keyword, found, RULE_CONFIDENCE)
                return [first] + hits[:n] + hits[n + 1 :], max(confidence, RULE_CONFIDENCE)
    return hits, confidence


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


@dataclass(frozen=True)
class Gathered:
    """One question's candidates: the head (re-scored sentence by sentence) as Evidence, and the rows after it
    in fused order as (row, fused score, cosine)."""

    evidence: Evidence
    rest: tuple[tuple[int, float, float], ...]


class Searcher:
    """Searches one loaded index. The embedder is only needed for the semantic and hybrid modes."""

    def __init__(self, data: IndexReader, settings: Settings, embedder: Embedder | None,
                 model: AnswerModel | None = None) -> None:
        self.data = data
        self.settings = settings
        self.embedder = embedder
        self.model = model or load_model()

    def ask(self, question: str, k: int | None = None, mode: str | None = None,
            rerank: int | None = None, refuse: bool = True) -> SearchResult:
        """The k best chunks; the best `rerank` of them (default k + rerank_extra) re-scored by their best
        sentence as the answer model judges it, the rest in fused order after them. `confidence` is the model's
        confidence that the documents answer the question (semantic, hybrid), or the share of the question's
        terms in the best chunk (keyword): 0 to 1 either way. `refuse=False` returns the closest chunks even when
        the confidence is below the cut-off (still marked `abstained`)."""
        s = self.settings
        k = s.k if k is None else k
        mode = mode or s.mode
        if mode not in MODES:
            raise QuestionError(f"unknown mode '{mode}': use one of {', '.join(MODES)}")
        if k < 1:
            raise QuestionError("k must be at least 1")
        question = clean_question(question, s.max_question_chars)
        with self.data.reading():
            if mode == "keyword":
                terms = bm25_tokenize([question], self.data.manifest.bm25)[0]
                hits = self._keyword_hits(terms, k)
                confidence = hits[0].highlight_score if hits else 0.0
                return SearchResult(question, mode, tuple(hits), confidence, not hits)
            gathered = self.gather(question, mode, k, k + s.rerank_extra if rerank is None else rerank)
            hits, confidence = self.judge(gathered)
        below = confidence < s.min_confidence
        return SearchResult(question, mode, () if below and refuse else tuple(hits[:k]), confidence, below)

    def gather(self, question: str, mode: str, k: int, rerank: int) -> Gathered:
        """The candidates of a cleaned question: the nearest and best-keyword chunks, fused, the best `rerank`
        with their sentences' cosines."""
        # The question is tokenized once, as the index's chunks were: its terms feed BM25 and the answer model.
        terms = bm25_tokenize([question], self.data.manifest.bm25)[0]
        pool = min(self.data.size, max(self.settings.candidates, k))
        query, nearest, (keyword_rows, keyword_top) = self._searched(question, terms, pool)
        rows, fused, cosines, keyword, top_keyword = self._fused_candidates(query, terms, mode, nearest, keyword_rows,
                                                                            keyword_top)
        if asks_author(question) and not expanded(question):  # a byline is in a document's first chunk
            rows, fused, cosines, keyword = self._with_first_chunks(query, terms, rows, fused, cosines, keyword)
        order = np.argsort(-fused, kind="stable")[: max(k, rerank)]
        head, tail = order[:rerank], order[rerank:]
        head_rows = [int(rows[i]) for i in head]
        sentence_cosines = tuple(dot_rows(v.astype(np.float32), query)
                                 for v in self.data.sentence_vectors_of(head_rows))
        content = content_terms(terms, self.data.manifest.bm25)
        evidence = Evidence(
            question, content, self.data.idf(list(content)), self._unknown_idf,
            tuple(self.data.chunks_at(head_rows)), cosines[head].astype(np.float64),
            fused[head].astype(np.float64),
            (keyword[head] / top_keyword if top_keyword > 0 else np.zeros(len(head))).astype(np.float64),
            sentence_cosines, self.data.manifest.bm25)
        rest = tuple((int(rows[i]), float(fused[i]), float(cosines[i])) for i in tail)
        return Gathered(evidence, rest)

    @property
    def _unknown_idf(self) -> float:
        """The idf of a term in no chunk: rarer than any the index holds."""
        total = self.data.size
        return float(np.log(1.0 + (total + 0.5) / 0.5))

    def _with_first_chunks(self, query: np.ndarray, terms: list[str], rows: np.ndarray, fused: np.ndarray,
                           cosines: np.ndarray, keyword: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The candidates plus the first chunk of each of the three best documents, scored like the others and
        placed just after their document's best chunk, so that they make the re-scored head."""
        order = np.argsort(-fused, kind="stable")[:64]
        best: dict[str, float] = {}
        for i, chunk in zip(order, self.data.chunks_at([int(rows[i]) for i in order])):
            best.setdefault(chunk.source, float(fused[i]))
            if len(best) == 3:
                break
        have = set(rows.tolist())
        firsts = self.data.first_rows(list(best))
        extra = [(firsts[s], s) for s in best if s in firsts and firsts[s] not in have]
        if not extra:
            return rows, fused, cosines, keyword
        extra_rows = [r for r, _ in extra]
        extra_fused = np.array([best[s] - 1e-6 for _, s in extra], dtype=fused.dtype)
        return (np.concatenate([rows, np.asarray(extra_rows, dtype=np.int64)]), np.concatenate([fused, extra_fused]),
                np.concatenate([cosines, self.data.cosines(extra_rows, query)]),
                np.concatenate([keyword, self.data.keyword_scores(terms, extra_rows)]))

    def judge(self, gathered: Gathered) -> tuple[list[Hit], float]:
        """Hits best first and the confidence that they answer: each head chunk's highlight is the sentence the
        answer model scores best, and its score mixes the fused score, its sentences' best cosine and the
        highlight's probability (a chunk holding the one sentence that answers beats one only on topic); the rest
        follow in fused order."""
        ev, model = gathered.evidence, self.model
        logits = model.sentence_scores(sentence_features(ev)) if ev.chunks else np.zeros(0)
        hits, at, best = [], 0, -np.inf
        form = "question" if is_question(ev.question) else "statement"
        for c, chunk in enumerate(ev.chunks):
            part = logits[at : at + len(chunk.sentences)]
            i = int(np.argmax(part))
            p = float(1.0 / (1.0 + np.exp(-part[i])))
            best = max(best, float(part[i]))
            score = model.passage_score(form, float(ev.fused[c]), float(ev.sentence_cosines[c].max()),
                                        float(part[i]))
            hits.append(Hit(chunk, score, float(ev.chunk_cosines[c]), float(ev.keyword[c]),
                            _highlight(chunk, part, i, model), p))
            at += len(chunk.sentences)
        hits.sort(key=lambda h: -h.score)
        confidence = model.probability(confidence_features(ev, best)) if ev.chunks else 0.0
        short = expanded(ev.question)
        if short:
            hits, confidence = _rule_first(hits, confidence, lambda t, at: expansion(t, at, short), False)
        elif asks_author(ev.question):
            hits, confidence = _rule_first(hits, confidence, byline, True)
        elif term := defined(ev.question):
            hits, confidence = _rule_first(hits, confidence, lambda t, at: definition(t, at, term), False)
        rest = self.data.chunks_at([row for row, _, _ in gathered.rest])
        for chunk, (_, score, cosine) in zip(rest, gathered.rest):  # beyond the re-scored head: no highlight
            hits.append(Hit(chunk, score, cosine, 0.0, chunk.sentences[0], 0.0))
        return hits, confidence

    def _searched(self, question: str, terms: list[str], pool: int
                  ) -> tuple[np.ndarray, list[int], tuple[list[int], np.ndarray]]:
        """The question's vector, its `pool` nearest rows and its `pool` best keyword rows with their BM25 scores.
        The keyword search runs on the caller's thread (it holds the question's snapshot); what the store allows
        runs beside it on a helper thread (IndexReader.beside_keywords): at a million chunks, the graph search
        beside BM25 took the folder index from 15.96 to 13.27 ms p50, questions alternating (experiments/README.md)."""
        def keywords() -> tuple[list[int], np.ndarray]:
            return self.data.keyword_top(terms, pool) if pool else ([], np.zeros(0))

        def nearest(query: np.ndarray) -> list[int]:
            return self.data.nearest(query, pool) if pool else []

        beside = self.data.beside_keywords
        if beside == "encode":
            encoding = _helper().submit(self._encode, [question])
            found = keywords()
            query = encoding.result()[0]
            return query, nearest(query), found
        query = self._encode([question])[0]
        if beside == "nearest":
            searching = _helper().submit(nearest, query)
            found = keywords()
            return query, searching.result(), found
        return query, nearest(query), keywords()

    def _fused_candidates(self, query: np.ndarray, terms: list[str], mode: str, nearest: list[int],
                          keyword_rows: list[int], keyword_top: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
        """Candidate rows: the nearest chunks and, in hybrid mode, the best keyword matches; with their fused
        scores, cosines, BM25 scores and the best BM25 score of any chunk."""
        top_keyword = float(keyword_top[0]) if len(keyword_top) else 0.0
        known = dict(zip(keyword_rows, keyword_top.tolist()))
        candidates = dict.fromkeys(nearest)
        if mode == "hybrid":
            candidates.update(dict.fromkeys(keyword_rows))
        rows = np.fromiter(candidates, dtype=np.int64, count=len(candidates))
        cosines = self.data.cosines(rows.tolist(), query) if len(rows) else np.zeros(0, dtype=np.float32)
        missing = [r for r in candidates if r not in known]
        if missing and top_keyword > 0:  # the nearest chunks' BM25 scores where they are not among the best
            known.update(zip(missing, self.data.keyword_scores(terms, missing).tolist()))
        keyword = np.array([known.get(r, 0.0) for r in candidates], dtype=np.float32)
        if mode == "hybrid":
            return rows, fuse(cosines, keyword, top_keyword, self.settings.alpha), cosines, keyword, top_keyword
        return rows, cosines, cosines, keyword, top_keyword

    def _encode(self, texts: list[str]) -> np.ndarray:
        if self.embedder is None:
            raise QuestionError("this search needs the embedding model; use mode 'keyword' or load the model")
        return self.embedder.encode(texts)

    def _keyword_hits(self, terms: list[str], k: int) -> list[Hit]:
        """Without the model, the highlight is the sentence sharing the most question terms; its score is the
        share of the question's terms it holds."""
        hits, wanted = [], set(terms)
        rows, scores = self.data.keyword_top(terms, k)
        for chunk, score in zip(self.data.chunks_at(rows), scores.tolist()):
            overlaps = [len(wanted & set(t)) for t in bm25_tokenize(chunk.sentence_texts, self.data.manifest.bm25)]
            best = int(np.argmax(overlaps))
            hits.append(Hit(chunk, score, 0.0, score, chunk.sentences[best], overlaps[best] / max(len(wanted), 1)))
        return hits
