"""Embed stage, backend choice: `auto` times the backends this CPU can run and keeps the fastest whose vectors agree
with torch's; measured once per CPU, instruction set and library versions, and cached."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from qa.config import Settings
from qa.embedding import Embedder, SentenceTransformerEmbedder
from qa.errors import ModelError
from qa.openvino_embedder import EXPORT_VERSION, PRECISIONS, OpenVINOEmbedder, calibration_texts, openvino_usable

BACKENDS = ("auto", *PRECISIONS, "torch")
CHOICE_VERSION = 1  # bumped when the trial or the rule changes: cached choices are then measured again
# A backend qualifies when its lowest cosine to torch, over the trial's chunks and questions, is at least this:
# the floor the int8 model has always been tested against (tests/test_embedding.py).
AGREEMENT = 0.98
# Backends within this share of the fastest ingest count as equally fast (repeat timings on a busy 2-core
# machine differ by up to ~10%); among them the one that answers a question soonest wins.
SPEED_MARGIN = 0.85
TRIAL_SECONDS = 6.0  # time spent embedding chunks per backend, at most (a slow candidate is cut short)
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8",
             "asimd", "sve")
# Variables that cap the kernels libraries may use (they change the timings as much as the CPU does).
ISA_CAPS = ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY", "FAISS_OPT_LEVEL",
            "OPENBLAS_CORETYPE")


@dataclass(frozen=True)
class Trial:
    """One backend timed on this machine."""

    backend: str
    chunks_per_s: float = 0.0
    question_ms: float = 0.0  # median, one question at a time, shapes already seen
    min_cosine: float = 0.0  # lowest cosine to torch over the trial's chunks and questions
    load_s: float = 0.0
    error: str = ""


@dataclass(frozen=True)
class Choice:
    """The backend to use and why; `machine` and `trials` are filled when it was measured."""

    backend: str
    reason: str
    machine: dict
    trials: tuple[Trial, ...]
    seconds: float = 0.0  # what measuring took

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "trials": [asdict(t) for t in self.trials]}

    @classmethod
    def from_dict(cls, data: dict) -> Choice:
        return cls(data["backend"], data["reason"], data["machine"], tuple(Trial(**t) for t in data["trials"]),
                   data.get("seconds", 0.0))


def machine() -> dict[str, object]:
    """The CPU as the libraries see it: model name, the instruction-set flags that pick kernels, and any caps."""
    info = Path("/proc/cpuinfo").read_text(errors="replace") if Path("/proc/cpuinfo").exists() else ""
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    family = "/".join(fields[k] for k in ("cpu family", "model") if k in fields)  # e.g. "6/143": Sapphire Rapids
    return {"cpu": fields.get("model name") or platform.processor() or platform.machine(), "family_model": family,
            "arch": platform.machine(), "cores": os.cpu_count(),
            "isa": [f for f in ISA_FLAGS if f in flags],
            "caps": {k: os.environ[k] for k in ISA_CAPS if os.environ.get(k)}}


def candidates(model_path: str, isa: list[str]) -> list[str]:
    if not openvino_usable(model_path):
        return ["torch"]
    bf16 = {"avx512_bf16", "amx_bf16"} & set(isa)
    return ["torch", "openvino-int8", "openvino", *(["openvino-bf16"] if bf16 else [])]


def trial_texts() -> tuple[list[str], list[str]]:
    """48 chunk-sized texts (about 160 tokens, the default chunk) and 24 question-sized ones, from the prose
    shipped in the package: the same on every machine."""
    lines = calibration_texts(300)
    chunks, current = [], ""
    for line in lines:
        current = f"{current} {line}".strip()
        if len(current) >= 700:
            chunks.append(current[:900])
            current = ""
    questions = [" ".join(line.split()[:4 + i % 12]).rstrip(".") + "?" for i, line in enumerate(lines[-24:])]
    return chunks[:48], questions


def _trial(backend: str, model_path: str, name: str, cache_dir: Path, chunks: list[str], questions: list[str],
           reference: tuple[np.ndarray, np.ndarray] | None) -> tuple[Trial, tuple[np.ndarray, np.ndarray] | None]:
    began = time.perf_counter()
    try:
        embedder = load_embedder(model_path, name, backend, cache_dir)
        embedder.encode(chunks[:4])  # first call: memory and kernels set up
    except (ModelError, RuntimeError, OSError) as exc:
        return Trial(backend, error=str(exc)[:300]), None
    load = time.perf_counter() - began
    spent, rows = 0.0, []
    for start in range(0, len(chunks), 16):
        t = time.perf_counter()
        rows.append(embedder.encode(chunks[start : start + 16]))
        spent += time.perf_counter() - t
        if spent > TRIAL_SECONDS:
            break
    done = np.vstack(rows)
    asked = np.vstack([embedder.encode([q]) for q in questions])  # first pass: any new shapes are set up
    times = []
    for q in questions:
        t = time.perf_counter()
        embedder.encode([q])
        times.append((time.perf_counter() - t) * 1000)
    cosine = 1.0
    if reference is not None:
        # The chunks both embedded: either may have been cut short by the time limit (a busy machine).
        both = min(len(done), len(reference[0]))
        cosine = float(min((done[:both] * reference[0][:both]).sum(axis=1).min(),
                           (asked * reference[1]).sum(axis=1).min()))
    return Trial(backend, round(len(done) / spent, 1), round(float(np.median(times)), 2), round(cosine, 4),
                 round(load, 2)), (done, asked)


def decide(trials: list[Trial]) -> tuple[str, str]:
    """The backend and why, from the trials (the first one, torch, is the reference)."""
    agree = [t for t in trials if not t.error and t.min_cosine >= AGREEMENT]
    if not agree:
        return "torch", "no faster backend ran here with vectors agreeing with torch's"
    fastest = max(agree, key=lambda t: t.chunks_per_s)
    near = [t for t in agree if t.chunks_per_s >= SPEED_MARGIN * fastest.chunks_per_s]
    best = min(near, key=lambda t: t.question_ms)
    others = ", ".join(f"{t.backend} {t.chunks_per_s:g}/s {t.question_ms:g} ms" for t in trials
                       if t is not best and not t.error)
    why = ("the fastest to index" if best is fastest else
           f"within {1 - SPEED_MARGIN:.0%} of the fastest to index ({fastest.backend}) and the quickest to answer")
    return best.backend, (f"measured on this CPU: {best.chunks_per_s:g} chunks/s and {best.question_ms:g} ms a "
                          f"question, {why} of the backends whose vectors agree with torch's (cosine >= "
                          f"{AGREEMENT}); others: {others or 'none'}")


def _versions() -> dict[str, str]:
    out = {}
    for package in ("openvino", "nncf", "torch", "sentence-transformers", "numpy"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = ""
    return out


def choose_backend(model_path: str, name: str, cache_dir: Path) -> Choice:
    """The measured choice for this machine, from the cache or measured now (seconds; the first OpenVINO
    build, once per machine, takes a minute more)."""
    from filelock import FileLock

    here = machine()
    model = Path(model_path)
    files = sorted((p.name, p.stat().st_size) for p in model.iterdir() if p.is_file()) if model.is_dir() else []
    key = hashlib.sha256(json.dumps([CHOICE_VERSION, EXPORT_VERSION, here, _versions(), str(model.resolve()), files],
                                    sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir / "backend-choice" / f"{key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):  # processes starting together measure once
        try:
            return Choice.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError):
            pass
        began = time.perf_counter()
        chunks, questions = trial_texts()
        trials, reference = [], None
        for backend in candidates(model_path, here["isa"]):
            result, vectors = _trial(backend, model_path, name, cache_dir, chunks, questions, reference)
            if backend == "torch":
                reference = vectors
            trials.append(result)
        chosen, reason = decide(trials)
        choice = Choice(chosen, reason, here, tuple(trials), round(time.perf_counter() - began, 1))
        temp = path.with_suffix(f".{os.getpid()}.tmp")
        temp.write_text(json.dumps(choice.to_dict(), indent=1), encoding="utf-8")
        os.replace(temp, path)
        return choice


def resolve_backend(settings: Settings, recorded: str | None = None) -> str:
    """The backend to use. "auto" keeps an existing index's backend (its vector space), else takes the one
    measured fastest on this machine."""
    return explain_backend(settings, recorded).backend


def explain_backend(settings: Settings, recorded: str | None = None) -> Choice:
    """The backend to use and why, in words for `qa index` and the manifest; with the trials when measured."""
    return _explain(settings.backend, settings.model_path, recorded, settings.cache_dir, settings.model_name)


def _explain(requested: str, model_path: str, recorded: str | None, cache_dir: Path, name: str) -> Choice:
    if requested not in BACKENDS:
        raise ModelError(f"unknown backend '{requested}': use one of {', '.join(BACKENDS)}")
    if requested != "auto":
        return Choice(requested, "chosen by QA_BACKEND / --backend", {}, ())
    if recorded in BACKENDS[1:] and (recorded == "torch" or openvino_usable(model_path)):
        return Choice(str(recorded), "kept from the existing index: its vectors were made with it", {}, ())
    if not openvino_usable(model_path):
        return Choice("torch", "OpenVINO is not installed (or the model is not mean-pooled): torch is the only "
                      "backend", {}, ())
    return choose_backend(model_path, name, cache_dir)


def load_embedder(model_path: str, name: str = "all-MiniLM-L6-v2", backend: str = "auto",
                  cache_dir: Path | None = None) -> Embedder:
    cache_dir = cache_dir or Settings().cache_dir
    backend = _explain(backend, model_path, None, cache_dir, name).backend
    if backend == "torch":
        return SentenceTransformerEmbedder(model_path, name)
    return OpenVINOEmbedder(model_path, name, cache_dir, backend)
