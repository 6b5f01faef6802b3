"""Embed stage, OpenVINO backend: the model exported once, compiled as int8, fp32 or bf16, and short questions run
on fixed-shape copies so that every new question length costs no new shape."""
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
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from qa.embedding import _Batched, check_model
from qa.errors import ModelError

# Bumped whenever the export or the calibration changes, so cached models are rebuilt, never reused stale.
EXPORT_VERSION = 2  # 2: calibrated on the shipped qa/data/calibration.txt
CALIBRATION_SAMPLES = 300
PRECISIONS = {"openvino-int8": "int8", "openvino": "fp32", "openvino-bf16": "bf16"}
# In int8, one text of at most this many tokens runs on a model compiled for exactly that shape (padded). A
# dynamic shape costs OpenVINO new kernels at every new length: on an 8th of first-seen question lengths it took
# 25-38 ms, against 2-4 ms once seen (experiments/question_shapes.py). In fp32 and bf16 one question runs on the
# dynamic model at its own length instead, every length up to the largest bucket seen once by `warm`: each fixed
# copy held its own weights (peak RSS 746 against 386 MiB), and the padded tokens cost more than the shapes did
# (fp32 capped to AVX2: p95 6.8-7.7 against 8.2-9.1 ms a question; in int8 the copies were 0.3 ms faster at p50;
# experiments/README.md, session 14).
QUESTION_BUCKETS = (16, 32, 64)
FIXED_SHAPES = ("int8",)


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


def calibration_texts(count: int) -> list[str]:
    """Varied English prose shipped with the package (300 docstrings of Python's standard library, taken once),
    the same on every machine: the int8 model is calibrated on it, and nothing is imported or downloaded."""
    text = (Path(__file__).parent / "data" / "calibration.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()][:count]


class OpenVINOEmbedder(_Batched):
    """The same model compiled by OpenVINO: fp32, bf16 (CPUs with bf16 instructions), or int8 quantised
    (statically, calibrated on local text). Built once from the local model and cached; torch is needed only for
    that build."""

    def __init__(self, model_path: str, name: str, cache_dir: Path, backend: str = "openvino-int8") -> None:
        path = check_model(model_path)
        if backend not in PRECISIONS:
            raise ModelError(f"unknown OpenVINO backend '{backend}': use one of {', '.join(PRECISIONS)}")
        if not openvino_usable(model_path):
            raise ModelError("the OpenVINO backend needs `pip install openvino nncf` and a mean-pooled "
                             "sentence-transformers model; set QA_BACKEND=torch to use torch instead")
        import openvino as ov
        from tokenizers import Tokenizer

        self.name = name
        self.backend = backend
        int8 = PRECISIONS[backend] == "int8"
        config = json.loads((path / "sentence_bert_config.json").read_text()) \
            if (path / "sentence_bert_config.json").is_file() else {}
        self.max_tokens = int(config.get("max_seq_length", 256))
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.max_tokens)
        self.tokenizer.enable_padding()
        self._xml = self._cached_model(path, cache_dir, int8)
        self._core = ov.Core()
        # The precision is always stated: left alone, OpenVINO runs an "fp32" model in bf16 on CPUs that have
        # bf16 (Sapphire Rapids), so one backend name gave different vectors on different machines, and int8
        # with bf16 attention drifted (question cosine to fp32 down to 0.74; 0.99 in f32).
        self._config = {"PERFORMANCE_HINT": "LATENCY",
                        "INFERENCE_PRECISION_HINT": "bf16" if PRECISIONS[backend] == "bf16" else "f32"}
        try:
            self.compiled = self._core.compile_model(str(self._xml), "CPU", self._config)
        except RuntimeError as exc:  # e.g. bf16 asked of a CPU without it
            detail = str(exc).strip().splitlines()[-1]
            raise ModelError(f"OpenVINO cannot run the {backend} model on this CPU ({detail}): "
                             "set QA_BACKEND=auto or openvino") from None
        self.dim = int(self.compiled.output("last_hidden_state").get_partial_shape()[2].get_length())
        self._fixed: dict[int, object] = {}  # bucket -> compiled model, made on first use
        self._fixed_lock = threading.Lock()
        self._local = threading.local()  # infer requests per thread: requests are not thread-safe

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
                           for t in calibration_texts(CALIBRATION_SAMPLES)]
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

    def _compiled_for(self, tokens: int):  # -> (bucket or 0, fixed-shape model or None)
        """One text's bucket (0: it runs at its own length) and its fixed-shape model, compiled on first use
        (0.3-0.6 s; a server makes them all at start: `warm`). Every process runs a question on the same
        compiled shape: the dynamic int8 model gave the seed's top passage 0.7310 where the fixed-shape copy
        gave 0.7319 (session 15), and `qa ask` must rank as a server does."""
        bucket = next((b for b in QUESTION_BUCKETS if b >= tokens), 0)
        if PRECISIONS[self.backend] not in FIXED_SHAPES or not bucket:
            return 0, None
        with self._fixed_lock:
            return bucket, self._fixed_model(bucket)

    def _fixed_model(self, bucket: int):  # -> openvino.CompiledModel; the caller holds _fixed_lock
        if bucket not in self._fixed:
            model = self._core.read_model(str(self._xml))
            model.reshape({port.get_any_name(): [1, bucket] for port in model.inputs})
            self._fixed[bucket] = self._core.compile_model(model, "CPU", self._config)
        return self._fixed[bucket]

    def warm(self) -> None:
        """Make every question shape now (under a second), for a server about to take questions: the int8
        fixed-shape copies, or one run of the dynamic model at each length."""
        if PRECISIONS[self.backend] in FIXED_SHAPES:
            with self._fixed_lock:
                for bucket in QUESTION_BUCKETS:
                    self._fixed_model(bucket)
            return
        request = self._request(0, self.compiled)
        for words in range(QUESTION_BUCKETS[-1] - 1):  # with the two special tokens: 2 to 64 tokens
            request.infer(self._inputs([self.tokenizer.encode(" ".join(["word"] * words))]))

    def _request(self, key: int, compiled):  # -> openvino.InferRequest
        requests = getattr(self._local, "requests", None)
        if requests is None:
            requests = self._local.requests = {}
        if key not in requests:
            requests[key] = compiled.create_infer_request()
        return requests[key]

    def _forward(self, texts: list[str]) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        encoded = self.tokenizer.encode_batch(texts)
        inputs = self._inputs(encoded)
        bucket, fixed = self._compiled_for(len(encoded[0].ids)) if len(texts) == 1 else (0, None)
        compiled = fixed or self.compiled
        # A batch's length is padded to a multiple of 8: the CPU plugin prepares its kernels once per input shape,
        # and a first `qa index` met a new shape with almost every batch (first-run ingest 191 against 184
        # chunks/s, median of 7 fresh processes each, int8, Zen 5; experiments/README.md, session 15). One text
        # keeps its bucket's length (int8) or its own.
        length = inputs["input_ids"].shape[1]
        if bucket:
            pad = bucket - length
        else:
            pad = -length % 8 if len(texts) > 1 else 0
        if pad:
            pad_id = (self.tokenizer.padding or {}).get("pad_id", 0)
            inputs = {k: np.pad(v, ((0, 0), (0, pad)), constant_values=pad_id if k == "input_ids" else 0)
                      for k, v in inputs.items()}
        mask = inputs["attention_mask"]
        request = self._request(bucket, compiled)  # bucket is 0 exactly when the dynamic model runs
        request.infer(inputs)
        hidden = np.array(request.get_tensor(compiled.output("last_hidden_state")).data)  # reused by the next call
        pooled = (hidden * mask[..., None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1)
        pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        for row, e in enumerate(encoded):
            offsets = np.asarray(e.offsets, dtype=np.int64).reshape(-1, 2)
            real = (offsets[:, 1] > offsets[:, 0]) & (mask[row, : len(offsets)] > 0)
            yield pooled[row].astype(np.float32), hidden[row][: len(offsets)][real], offsets[real]
