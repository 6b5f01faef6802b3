"""Where the embedding and search time goes, for issue #17: OpenVINO's per-operation profile of one batch of 32
chunk-sized texts, latency mode against throughput mode (two streams, two requests in flight), and one question's
exact search in numpy against FAISS's flat index. Prints figures and the CPU; run it capped to AVX2 too:

    .venv/bin/python experiments/openvino_probe.py [int8|fp32]
    experiments/avx2_emulated.sh .venv/bin/python experiments/openvino_probe.py [int8|fp32]
"""
import collections
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import faiss  # noqa: E402
import openvino as ov  # noqa: E402

from qa.backends import load_embedder, machine, trial_texts  # noqa: E402
from qa.config import Settings  # noqa: E402
from qa.evaluation import load_beir  # noqa: E402


def main() -> None:
    precision = sys.argv[1] if len(sys.argv) > 1 else "int8"
    s = Settings()
    m = machine()
    print(f"CPU: {m['cpu']} (family/model {m['family_model']}; {' '.join(m['isa'])}; caps {m['caps'] or 'none'})")
    embedder = load_embedder(s.model_path, s.model_name, "openvino-int8" if precision == "int8" else "openvino",
                             s.cache_dir)
    texts = [str(v)[:900] for v in load_beir(ROOT.parent / "shared" / "eval" / "scifact", "test").corpus.values()]
    texts = sorted(texts[:256], key=len, reverse=True) if len(texts) >= 256 else sorted(trial_texts()[0] * 6)[:256]
    batches = [embedder._inputs(embedder.tokenizer.encode_batch(texts[i : i + 32])) for i in range(0, 256, 32)]
    core, config = ov.Core(), dict(embedder._config)

    profiled = core.compile_model(str(embedder._xml), "CPU", {**config, "PERF_COUNT": "YES"})
    request = profiled.create_infer_request()
    request.infer(batches[0])
    began = time.perf_counter()
    request.infer(batches[0])
    print(f"{precision}: one batch of 32 texts {1000 * (time.perf_counter() - began):.0f} ms; by operation:")
    spent = collections.Counter()
    for op in request.profiling_info:
        spent[(op.node_type, op.exec_type)] += op.real_time.total_seconds() * 1000
    for (node, kernel), ms in spent.most_common(6):
        print(f"  {ms:7.1f} ms  {node} ({kernel})")

    for hint, jobs in (("LATENCY", 1), ("THROUGHPUT", 2)):
        compiled = core.compile_model(str(embedder._xml), "CPU", {**config, "PERFORMANCE_HINT": hint})
        queue = ov.AsyncInferQueue(compiled, jobs)
        for batch in batches[:2]:
            queue.start_async(batch)
        queue.wait_all()
        began = time.perf_counter()
        for batch in batches:
            queue.start_async(batch)
        queue.wait_all()
        print(f"{hint.lower()} mode, {jobs} request(s) in flight: {256 / (time.perf_counter() - began):.1f} texts/s")

    rng = np.random.default_rng(0)
    for rows in (10_000, 50_000):
        vectors = rng.normal(size=(rows, 384)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        flat = faiss.IndexFlatIP(384)
        flat.add(vectors)
        query = vectors[:1] + 0.01
        began = time.perf_counter()
        for _ in range(200):
            flat.search(query, 100)
        faiss_ms = (time.perf_counter() - began) * 5
        began = time.perf_counter()
        for _ in range(200):
            scores = vectors @ query[0]
            top = np.argpartition(-scores, 99)[:100]
            top[np.argsort(-scores[top])]
        numpy_ms = (time.perf_counter() - began) * 5
        print(f"one question, exact search over {rows:,} rows: FAISS {faiss_ms:.2f} ms, numpy {numpy_ms:.2f} ms")


if __name__ == "__main__":
    main()
