"""One question at a time through OpenVINO: first-seen shapes against padded ones, and what padding does to the
vectors (int8 and fp32), for issue #17's per-question latency. Prints p50/p95 ms and cosine percentiles.
Since #17 one question runs on a fixed-shape model from a process's second question on, so "first-seen shapes"
measures what a user gets now, and the padded run pads again before the fixed shape.

Usage: .venv/bin/python experiments/question_shapes.py   (reads SciFact and SQuAD questions from ../shared)
"""
import sys
import time
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qa.config import Settings  # noqa: E402
from qa.backends import load_embedder  # noqa: E402
from qa.evaluation import load_beir  # noqa: E402

SHARED = ROOT.parent / "shared"
s = Settings()
qs = list(load_beir(SHARED / "eval" / "scifact", "test").queries.values())[:200]
d = json.loads((SHARED / "squad" / "dev-half.json").read_text(encoding="utf-8"))["data"]
qs += [qa["question"] for a in d[3:6] for p in a["paragraphs"][:10] for qa in p["qas"]][:200]
fp32 = load_embedder(s.model_path, s.model_name, "openvino", s.cache_dir)
reference = np.array([fp32.encode([q])[0] for q in qs])
for backend in ("openvino-int8", "openvino"):
    e = load_embedder(s.model_path, s.model_name, backend, s.cache_dir)

    def run(multiple, questions):
        if multiple:
            e.tokenizer.enable_padding(pad_to_multiple_of=multiple)
        else:
            e.tokenizer.enable_padding()
        times, vectors = [], []
        for q in questions:
            began = time.perf_counter()
            vectors.append(e.encode([q])[0])
            times.append((time.perf_counter() - began) * 1000)
        return np.percentile(times, 50), np.percentile(times, 95), np.array(vectors)

    half = len(qs) // 2
    fresh_dynamic, fresh_padded = run(None, qs[:half]), run(32, qs[half:])  # shapes never seen before
    seen_dynamic, seen_padded = run(None, qs), run(32, qs)
    print(f"{backend}: first-seen shapes p50/p95 {fresh_dynamic[0]:.2f}/{fresh_dynamic[1]:.2f} ms, padded to 32 "
          f"{fresh_padded[0]:.2f}/{fresh_padded[1]:.2f} ms; seen shapes {seen_dynamic[0]:.2f}/{seen_dynamic[1]:.2f}, "
          f"padded {seen_padded[0]:.2f}/{seen_padded[1]:.2f} ms")
    for name, vectors in (("dynamic", seen_dynamic[2]), ("padded", seen_padded[2])):
        cos = (vectors * reference).sum(axis=1)
        print(f"  {name} vs fp32 unpadded, cosine min/p1/p5/p50: "
              + "/".join(f"{v:.4f}" for v in np.percentile(cos, [0, 1, 5, 50])))
