"""BM25 over an index's chunks (bm25s): the tokenizer the manifest records, built from stored terms, searched by term."""
from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np


def _bm25s():
    import bm25s

    # bm25s sets its own logger to DEBUG on import; put it back under the application's logging settings.
    logging.getLogger("bm25s").setLevel(logging.NOTSET)
    return bm25s


@functools.lru_cache(maxsize=4)
def stemmer_for(language: str):  # -> Stemmer.Stemmer | None; built once, not for every question
    if not language:
        return None
    import Stemmer

    return Stemmer.Stemmer(language)


def bm25_tokenize(texts: list[str], params: dict[str, object]) -> list[list[str]]:
    """Lower-cased word tokens, stemmed and without stop words as the index's BM25 settings say (the manifest's
    "bm25"); the same for chunks and questions."""
    stopwords = str(params.get("stopwords", "")) or None
    return _bm25s().tokenize(texts, stopwords=stopwords, stemmer=stemmer_for(str(params.get("stemmer", ""))),
                             return_ids=False, show_progress=False)


def stopword_list(name: str) -> list[str]:
    """The stop words bm25s drops for this setting (none for "")."""
    if not name:
        return []
    from bm25s.tokenization import _infer_stopwords

    return list(_infer_stopwords(name))


def bm25_from_terms(terms_file: Path, params: dict[str, object]):  # -> bm25s.BM25
    """BM25 over a generation's stored terms (one line of tokens per chunk): nothing is tokenised again."""
    vocab: dict[str, int] = {}
    ids = []
    with open(terms_file, encoding="utf-8") as lines:
        for line in lines:
            # Each token becomes the vocabulary's int: millions of separate strings would take gigabytes.
            ids.append([vocab.setdefault(token, len(vocab)) for token in line.split()])
    if not vocab:
        vocab[""] = 0  # no chunk has a word bm25s keeps (say, only numbers of one digit): still a valid index
    retriever = _bm25s().BM25(k1=float(params["k1"]), b=float(params["b"]))
    retriever.index((ids, vocab), show_progress=False)
    return retriever


class KeywordIndex:
    """BM25 scores of every chunk for a question's terms; retrieval never sees bm25s itself."""

    def __init__(self, bm25) -> None:  # bm25: bm25s.BM25
        self.bm25 = bm25
        self.vocab: dict[str, int] = dict(bm25.vocab_dict)

    @classmethod
    def load(cls, folder: Path) -> KeywordIndex:
        # Mapped: a question reads its terms' postings only, and opening a large index reads none. Plain arrays
        # over the same map: numpy's memmap subclass costs half a millisecond a question in slicing alone.
        bm25 = _bm25s().BM25.load(str(folder), mmap=True, load_corpus=False)
        for key in ("data", "indices", "indptr"):
            bm25.scores[key] = np.asarray(bm25.scores[key])
        return cls(bm25)

    @classmethod
    def from_tokens(cls, tokens: list[list[str]], params: dict[str, object]) -> KeywordIndex:
        bm25 = _bm25s().BM25(k1=float(params["k1"]), b=float(params["b"]))
        bm25.index(tokens, show_progress=False)
        return cls(bm25)

    def scores(self, terms: list[str], rows: int) -> np.ndarray:
        """One BM25 score per chunk (`rows` of them) for the question's terms; zeros when none is indexed."""
        ids = [self.vocab[t] for t in terms if t in self.vocab]
        if not ids or not rows:
            return np.zeros(rows, dtype=np.float32)
        return np.asarray(self.bm25.get_scores_from_ids(ids), dtype=np.float32)

    def idf(self, terms: list[str]) -> dict[str, float]:
        """Each indexed term's inverse document frequency over the chunks (BM25's, Lucene form); terms the index
        does not hold are left out."""
        indptr, total = self.bm25.scores["indptr"], float(self.bm25.scores["num_docs"])
        ends = len(self.bm25.scores["indices"])  # bm25s may leave out the last term's end offset
        result = {}
        for term in terms:
            if term in self.vocab:
                at = self.vocab[term]
                df = float((indptr[at + 1] if at + 1 < len(indptr) else ends) - indptr[at])
                result[term] = float(np.log(1.0 + (total - df + 0.5) / (df + 0.5)))
        return result
