"""Index one very large text file and report the indexer's peak memory: `python experiments/big_file.py [--size-mb 100]`.

The file is generated (deterministic pseudo-words, paragraphs of five sentences, one known sentence planted at 70%),
indexed by a child process, and checked: the planted sentence must come back from a keyword search with its exact
character offset and line. The child's peak RSS comes from the kernel (wait4), so nothing is sampled or guessed.

`--fake-embedder` swaps the model for random vectors of the same width (384): everything else (reading, decoding,
chunking, BM25, HNSW, writing) is the real pipeline, and a 100 MB file takes minutes instead of the half hour the
model needs on two cores. The test suite uses it; without it, the real `qa index` command runs.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
NEEDLE = "The lighthouse keeper of Vardo island is named Quillon Marbury."
QUESTION = "lighthouse keeper Vardo Quillon Marbury"

# The child for --fake-embedder: the real index_paths with random unit vectors instead of the model.
_FAKE_CHILD = """
import sys
import numpy as np
from pathlib import Path
from qa.config import Settings
from qa.index.sync import index_paths

class RandomEmbedder:
    name, backend, dim = "random-384", "fake", 384

    def __init__(self):
        self.rng = np.random.default_rng(0)

    def _rows(self, n):
        rows = self.rng.standard_normal((n, self.dim), dtype=np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    def encode(self, texts, progress=None):
        return self._rows(len(texts))

    def encode_spans(self, texts, spans, progress=None):
        return self._rows(len(texts)), self._rows(sum(len(s) for s in spans))

report = index_paths([Path(sys.argv[1])], Settings().with_(index_dir=Path(sys.argv[2])), embedder=RandomEmbedder())
print(report.describe())
"""


def write_text(path: Path, size: int, needle: str = NEEDLE, at: float = 0.7) -> tuple[int, int]:
    """About `size` characters of ASCII text; returns the planted sentence's character offset and line."""
    rng = np.random.default_rng(1)
    syllables = ["ka", "to", "ri", "mo", "sen", "la", "ver", "din", "pa", "el", "or", "quin", "sta", "bel", "nor",
                 "ti", "gra", "phe", "lu", "man"]
    vocabulary = np.array(["".join(rng.choice(syllables, rng.integers(1, 4))) for _ in range(20_000)])
    zipf = 1 / np.arange(1, len(vocabulary) + 1)
    zipf /= zipf.sum()
    written, line, section, planted = 0, 1, 0, None
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        while written < size:
            words = vocabulary[rng.choice(len(vocabulary), 4000, p=zipf)]
            sentences, used = [], 0
            for length in rng.integers(8, 20, 300):
                if used + length > len(words):
                    break
                sentences.append(" ".join(words[used : used + length]).capitalize() + ".")
                used += length
            paragraphs = []
            for i in range(0, len(sentences), 5):
                section += 1
                paragraphs.append(f"Section {section}. " + " ".join(sentences[i : i + 5]))
            text = "\n\n".join(paragraphs) + "\n\n"
            if planted is None and written + len(text) > at * size:
                planted = (written, line)
                text = needle + "\n\n" + text
            handle.write(text)
            written += len(text)
            line += text.count("\n")
    assert planted is not None
    return planted


def run(size_mb: float, fake: bool, work: Path) -> dict[str, object]:
    corpus, index = work / "corpus", work / "index"
    corpus.mkdir(parents=True, exist_ok=True)
    offset, line = write_text(corpus / "big.txt", int(size_mb * 2**20))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = ([sys.executable, "-c", _FAKE_CHILD, str(corpus), str(index)] if fake
               else [sys.executable, "-m", "qa", "index", str(corpus), "--index", str(index), "--quiet"])
    began = time.perf_counter()
    with open(work / "index.log", "w+", encoding="utf-8") as log:  # a file, not a pipe: wait4 cannot deadlock
        child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)  # the child's own peak RSS, as the kernel counted it
        seconds = time.perf_counter() - began
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            log.seek(0)
            raise SystemExit(f"indexing failed ({child.returncode}):\n{log.read()}")

    from qa.config import Settings
    from qa.retrieval import Searcher
    from qa.index.store import read_index

    data = read_index(index)
    hits = Searcher(data, Settings(), None).ask(QUESTION, k=1, mode="keyword").hits
    top = hits[0].chunk if hits else None
    text = data.document_text("big.txt")
    found = top is not None and NEEDLE in top.text
    at = top.text.index(NEEDLE) if found else 0
    # The chunk's own line is where the chunk starts; the planted sentence may come a paragraph later.
    exact = found and top.start + at == offset and top.line + top.text[:at].count("\n") == line
    return {
        "size_mb": round((corpus / "big.txt").stat().st_size / 2**20, 1), "embedder": "random (fake)" if fake else
        str(data.manifest.model.get("backend")), "chunks": len(data.chunks), "seconds": round(seconds, 1),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "index_mib": round(_size(index) / 2**20, 1),
        "needle_found": found, "needle_offset_and_line_exact": exact,
        "stored_text_matches": text == (corpus / "big.txt").read_text(encoding="utf-8"),
    }


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=100)
    parser.add_argument("--fake-embedder", action="store_true", help="random vectors instead of the model")
    parser.add_argument("--work", type=Path, help="keep the file and index here (default: a temporary folder)")
    args = parser.parse_args()
    if args.work:
        result = run(args.size_mb, args.fake_embedder, args.work)
    else:
        with tempfile.TemporaryDirectory(prefix="qa-big-") as temp:
            result = run(args.size_mb, args.fake_embedder, Path(temp))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
