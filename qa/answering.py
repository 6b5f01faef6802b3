"""Which sentence answers, and whether anything does: features of candidate sentences and the learned weights."""
from __future__ import annotations

import functools
import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qa.errors import ModelError
from qa.index.keyword import stemmer_for, stopword_list
from qa.records import Chunk
from qa.shapes import KINDS, is_heading, question_kind

MODEL_FILE = Path(__file__).parent / "data" / "answer_model.json"

# Numbers and dates, found from a sentence's words and digits (one pass of simple patterns: this runs for
# every sentence of every re-scored chunk).
_NUMBER_WORDS = frozenset("one two three four five six seven eight nine ten eleven twelve twenty thirty hundred "
                          "thousand million billion trillion dozen half percent".split())
_DATE_WORDS = frozenset("january february march april may june july august september october november december "
                        "century centuries decade".split())
_DIGIT = re.compile(r"\d")
_DATE = re.compile(r"\b(?:1\d{3}|20\d{2})s?\b|\b\d{1,2}(?:st|nd|rd|th)\b")
_AMOUNT_SIGNS = frozenset("$€£¥%")
_AMOUNT_WORDS = frozenset("million billion trillion percent".split())
_MEASURE = re.compile(r"\d\s?(?:km|kg|mi|lb|ton|acre|hectare|metre|meter|mile|feet|foot|hour|minute|year|day)s?\b",
                      re.IGNORECASE)
_CAPITALISED = re.compile(r"(?<=[\s(\"'“‘])[A-Z][\w'’-]+")
_TOKEN = re.compile(r"(?u)\b\w\w+\b")
# How questions are asked, not what they ask about: left out of the terms the answer model weighs.
_QUESTION_WORDS = ("who whom whose what which when where why how do does did doing can could would should shall "
                   "may might must is are was were am be been has have had i me my we our you your please tell "
                   "explain describe show give list find know about any there much many").split()

# One row per candidate sentence; the model file names them, so a file for other features is refused.
SENTENCE_FEATURES = (
    "cosine", "cosine_below_best", "cosine_below_chunk_best", "chunk_cosine", "fused_below_best", "keyword",
    "overlap", "overlap_previous", "overlap_next", "overlap_window", "bigrams", "terms_matched", "best_in_chunk",
    "novel_words", "restates", "log_words", "short", "heading",
    "table_row", "document_title", "first_in_chunk", "question_mark", "has_number", "has_date", "has_name",
    "has_amount", *(f"{kind}_{has}" for kind in KINDS for has in ("number", "date", "name", "amount")),
)
_HEADING, _TITLE = SENTENCE_FEATURES.index("heading"), SENTENCE_FEATURES.index("document_title")
HEADING_PENALTY = 20.0
# One row per question, from its best candidates: is the question answered here at all?
CONFIDENCE_FEATURES = ("best_sentence", "best_cosine", "top_chunk_cosine", "top_overlap", "known_terms",
                       "log_terms")


def content_terms(terms: list[str], params: dict[str, object]) -> tuple[str, ...]:
    """The question's terms without its question words (stemmed as the terms are)."""
    asking = _asking(str(params.get("stemmer", "")), str(params.get("stopwords", "")))
    return tuple(t for t in terms if t not in asking)


@functools.lru_cache(maxsize=4)
def _asking(stemmer: str, stopwords: str) -> frozenset[str]:
    return frozenset(_tokenizer(stemmer, stopwords)[0](_QUESTION_WORDS))


@functools.lru_cache(maxsize=4)
def _tokenizer(stemmer: str, stopwords: str):  # -> (stem, stop words)
    stem = stemmer_for(stemmer)
    return (stem.stemWords if stem else (lambda words: words)), frozenset(stopword_list(stopwords))


def words(texts: list[str], params: dict[str, object], lowered: list[list[str]] | None = None) -> list[list[str]]:
    """The BM25 tokenizer's terms of each text (lower-cased, stop words out, stemmed), for many short texts at
    once: one stemmer call, not one per sentence. `lowered`: the texts' lower-cased words, if already split."""
    key = (str(params.get("stemmer", "")), str(params.get("stopwords", "")))
    stem, stop = _tokenizer(*key)
    lowered = lowered if lowered is not None else [_TOKEN.findall(t.lower()) for t in texts]
    split = [[w for w in ws if w not in stop] for ws in lowered]
    # Each word is stemmed once per process: a dict lookup costs less than the stemmer's call. A full dict is
    # replaced, not cleared, so that a thread reading the old one still finds its words.
    stems = _stems.get(key)
    if stems is None or len(stems) > _STEMS_KEPT:
        stems = _stems[key] = {}
    new = list({w for ws in split for w in ws if w not in stems})
    if new:
        stems.update(zip(new, stem(new)))
    return [[stems[w] for w in ws] for ws in split]


_stems: dict[tuple[str, str], dict[str, str]] = {}
_STEMS_KEPT = 200_000


@dataclass(frozen=True)
class Evidence:
    """The re-scored chunks of one question, what the answer model reads: per chunk its cosine, fused score and
    BM25 share; per sentence its cosine with the question."""

    question: str
    terms: tuple[str, ...]  # content terms only (content_terms)
    idf: dict[str, float]  # of the terms the index holds; the others count as rarer than any
    unknown_idf: float
    chunks: tuple[Chunk, ...]
    chunk_cosines: np.ndarray
    fused: np.ndarray
    keyword: np.ndarray  # BM25 over the best candidate's
    sentence_cosines: tuple[np.ndarray, ...]
    params: dict[str, object]


@dataclass(frozen=True)
class _Sentences:
    """What a chunk's sentences are, whatever the question: worked out once per chunk and kept."""

    counts: tuple[Counter[str], ...]  # each sentence's terms with how often they occur
    sizes: tuple[int, ...]  # terms per sentence
    tokens: tuple[tuple[str, ...], ...]  # each sentence's terms in order, for the question's word pairs
    capitals: tuple[frozenset[str], ...]  # capitalised words after the first, lower-cased
    fixed: np.ndarray  # per sentence: log_words, short, heading, table_row, document_title, first, question_mark,
    # has_number, has_date, has_amount
    index_terms: frozenset[str]  # the whole chunk's, with its title context


@functools.lru_cache(maxsize=20000)
def _sentences(chunk: Chunk, stemmer: str, stopwords: str) -> _Sentences:
    texts = chunk.sentence_texts
    lowered = [_TOKEN.findall(t.lower()) for t in texts]
    tokens = words(texts, {"stemmer": stemmer, "stopwords": stopwords}, lowered)
    rows = []
    for i, (t, span, low) in enumerate(zip(texts, chunk.sentences, lowered)):
        count = len(t.split())
        digits = _DIGIT.search(t) is not None
        rows.append((math.log1p(count), count < 4, is_heading(t, count),
                     "\t" in t, span[0] == 0, i == 0, t.rstrip().endswith("?"),
                     digits or not _NUMBER_WORDS.isdisjoint(low),
                     (digits and _DATE.search(t) is not None) or not _DATE_WORDS.isdisjoint(low),
                     not _AMOUNT_SIGNS.isdisjoint(t) or not _AMOUNT_WORDS.isdisjoint(low)
                     or (digits and _MEASURE.search(t) is not None)))
    fixed = np.array(rows, dtype=np.float64).reshape(len(texts), 10)
    return _Sentences(tuple(map(Counter, tokens)), tuple(map(len, tokens)), tuple(map(tuple, tokens)),
                      tuple(frozenset(map(str.lower, _CAPITALISED.findall(" " + t))) for t in texts),
                      fixed, _context_terms(chunk.context, stemmer, stopwords).union(*tokens))


@functools.lru_cache(maxsize=1024)
def _context_terms(context: str, stemmer: str, stopwords: str) -> frozenset[str]:
    # One title is the context of every chunk of its document.
    return frozenset(words([context], {"stemmer": stemmer, "stopwords": stopwords})[0])


def _table(ev: Evidence, chunk: Chunk) -> _Sentences:
    return _sentences(chunk, str(ev.params.get("stemmer", "")), str(ev.params.get("stopwords", "")))


def sentence_features(ev: Evidence) -> np.ndarray:
    """One row of SENTENCE_FEATURES per sentence of every chunk, chunk after chunk."""
    tables = [_table(ev, c) for c in ev.chunks]
    sets = [ts for t in tables for ts in t.counts]
    if not sets:
        return np.zeros((0, len(SENTENCE_FEATURES)), dtype=np.float32)
    terms = list(dict.fromkeys(ev.terms))
    weight = np.array([ev.idf.get(t, ev.unknown_idf) for t in terms])
    total = float(weight.sum()) or 1.0
    has = np.array([[t in ts for t in terms] for ts in sets], dtype=np.float64).reshape(len(sets), len(terms))
    sizes = [len(t.counts) for t in tables]
    chunk_of = np.repeat(np.arange(len(tables)), sizes)
    position = np.concatenate([np.arange(n) for n in sizes])
    last = position == np.repeat(np.asarray(sizes) - 1, sizes)
    before = np.vstack([np.zeros((1, len(terms))), has[:-1]]) * (position > 0)[:, None]
    after = np.vstack([has[1:], np.zeros((1, len(terms)))]) * (~last)[:, None]
    overlap = has @ weight / total
    window = np.maximum(has, np.maximum(before, after)) @ weight / total
    held = has.sum(axis=1)  # question terms per sentence
    pairs = set(zip(ev.terms, ev.terms[1:]))
    bigrams = np.zeros(len(sets))
    if pairs:  # only a sentence holding both words of a pair can hold the pair: most are not looked at
        tokens = [ts for t in tables for ts in t.tokens]
        both = 1 if any(a == b for a, b in pairs) else 2
        for i in np.flatnonzero(held >= both).tolist():
            bigrams[i] = len(pairs.intersection(zip(tokens[i], tokens[i][1:]))) / len(pairs)
    matched = held / max(len(terms), 1)
    sizes_terms = np.array([n for t in tables for n in t.sizes], dtype=np.float64)
    asked_count = np.array([sum(ts.get(w, 0) for w in terms) for ts in sets], dtype=np.float64)
    novel = np.where(sizes_terms > 0, 1.0 - asked_count / np.maximum(sizes_terms, 1), 0.0)
    asked = {w.lower() for w in _TOKEN.findall(ev.question)}
    has_name = np.array([bool(caps - asked) for t in tables for caps in t.capitals], dtype=np.float64)
    fixed = np.vstack([t.fixed for t in tables])
    cosines = np.concatenate(ev.sentence_cosines).astype(np.float64)
    best_chunk = np.array([float(c.max()) for c in ev.sentence_cosines])[chunk_of]
    asks = question_kind(ev.question)
    kind = np.array([k == asks for k in KINDS], dtype=np.float64)
    types = np.column_stack([fixed[:, 7], fixed[:, 8], has_name, fixed[:, 9]])
    columns = [
        cosines, cosines - cosines.max(), cosines - best_chunk, ev.chunk_cosines[chunk_of],
        (ev.fused - ev.fused.max())[chunk_of], ev.keyword[chunk_of], overlap, before @ weight / total,
        after @ weight / total, window, bigrams, matched, (cosines >= best_chunk).astype(np.float64), novel,
        overlap * (1.0 - novel), *fixed[:, :7].T, *types.T,
        *(kind[:, None, None] * types.T[None]).reshape(-1, len(sets)),
    ]
    return np.column_stack(columns).astype(np.float32)


def confidence_features(ev: Evidence, best_logit: float) -> np.ndarray:
    """One row of CONFIDENCE_FEATURES: how well the best candidates answer, and how much of the question the
    index knows at all (a question whose words are nowhere in the documents is rarely answered by them)."""
    cosines = np.concatenate(ev.sentence_cosines) if ev.sentence_cosines else np.zeros(1)
    weights = {t: ev.idf.get(t, ev.unknown_idf) for t in ev.terms}
    total = sum(weights.values()) or 1.0
    top = _table(ev, ev.chunks[int(np.argmax(ev.fused))]).index_terms if ev.chunks else frozenset()
    known = sum(1 for t in ev.terms if t in ev.idf) / max(len(ev.terms), 1)
    return np.array([best_logit, float(cosines.max()), float(ev.chunk_cosines.max()) if ev.chunks else 0.0,
                     sum(w for t, w in weights.items() if t in top) / total, known, math.log1p(len(ev.terms))],
                    dtype=np.float32)


@dataclass(frozen=True)
class Linear:
    """A logistic model over standardised features: weights, bias, and each feature's mean and scale."""

    names: tuple[str, ...]
    weights: np.ndarray
    bias: float
    mean: np.ndarray
    scale: np.ndarray

    def logits(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale) @ self.weights + self.bias

    def to_dict(self) -> dict[str, object]:
        return {"names": list(self.names), "weights": self.weights.round(6).tolist(), "bias": round(self.bias, 6),
                "mean": self.mean.round(6).tolist(), "scale": self.scale.round(6).tolist()}

    @classmethod
    def from_dict(cls, data: dict, expected: tuple[str, ...]) -> Linear:
        names = tuple(data["names"])
        if names != expected:
            raise ModelError("the answer model file was made for other features: reinstall docqa")
        arrays = [np.asarray(data[key], dtype=np.float64) for key in ("weights", "mean", "scale")]
        if any(a.shape != (len(names),) or not np.isfinite(a).all() for a in arrays) or (arrays[2] <= 0).any():
            raise ModelError("the answer model file is damaged: reinstall docqa")
        return cls(names, arrays[0], float(data["bias"]), arrays[1], arrays[2])


@dataclass(frozen=True)
class AnswerModel:
    """The answer-sentence scorer; a passage's score as its fused score, its sentences' best cosine and its
    highlight's probability mixed by `passage_weights` (cosine, probability, temperature), one triple for questions
    and one for statements; the confidence model."""

    sentence: Linear
    confidence: Linear
    # The probability is taken at a temperature: above 1 it keeps two high logits apart where it saturates near 1.
    passage_weights: dict[str, tuple[float, float, float]]
    # A neighbouring sentence joins the highlight when its logit is within `pair_margin` of the best one's, or
    # within short_pair[0] when the two hold at most short_pair[1] words together: two short sentences read as one.
    pair_margin: float
    short_pair: tuple[float, int]
    about: dict

    def to_dict(self) -> dict[str, object]:
        return {"about": self.about, "sentence": self.sentence.to_dict(), "confidence": self.confidence.to_dict(),
                "passage_weights": {k: list(v) for k, v in self.passage_weights.items()},
                "pair_margin": self.pair_margin, "short_pair": list(self.short_pair)}

    @classmethod
    def from_dict(cls, data: dict) -> AnswerModel:
        weights = {}
        for form in ("question", "statement"):
            given = [float(v) for v in data["passage_weights"][form]]
            weights[form] = (given[0], given[1], given[2] if len(given) > 2 else 1.0)
        if not all(0 <= c and 0 <= p and c + p <= 1 and t > 0 for c, p, t in weights.values()):
            raise ModelError("the answer model's passage weights are out of range: reinstall docqa")
        short = data.get("short_pair", [0.0, 0])
        return cls(Linear.from_dict(data["sentence"], SENTENCE_FEATURES),
                   Linear.from_dict(data["confidence"], CONFIDENCE_FEATURES), weights,
                   float(data["pair_margin"]), (float(short[0]), int(short[1])), dict(data.get("about", {})))

    def joins(self, gap: float, words: int) -> bool:
        """Whether a neighbour `gap` below the best sentence's logit, `words` words with it, joins the highlight."""
        return joins(gap, words, self.pair_margin, self.short_pair)

    def passage_score(self, form: str, fused: float, cosine: float, logit: float) -> float:
        w_cos, w_p, temperature = self.passage_weights[form]
        probability = 1.0 / (1.0 + math.exp(min(-logit / temperature, 700.0)))  # no overflow for any logit
        return (1 - w_cos - w_p) * fused + w_cos * cosine + w_p * probability

    def sentence_scores(self, x: np.ndarray) -> np.ndarray:
        """Each sentence's logit; a heading (not the document's title) only where nothing else is: it names a
        topic and answers nothing, however well it matches the question's words."""
        heading = (x[:, _HEADING] > 0) & (x[:, _TITLE] == 0)
        return self.sentence.logits(x) - HEADING_PENALTY * heading

    def probability(self, x: np.ndarray) -> float:
        return float(1.0 / (1.0 + np.exp(-self.confidence.logits(x[None, :])[0])))


def joins(gap: float, words: int, margin: float, short_pair: tuple[float, int]) -> bool:
    return gap <= margin or (gap <= short_pair[0] and words <= short_pair[1])


@functools.lru_cache(maxsize=4)
def load_model(path: Path = MODEL_FILE) -> AnswerModel:
    try:
        return AnswerModel.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ModelError(f"cannot read the answer model {path} ({error}): reinstall docqa") from None
