"""Load test: N concurrent gradio_client clients x M questions against a live server on this machine.

Usage: .venv/bin/python experiments/load_test.py [--clients 16] [--questions 50] [--url URL]
Without --url it starts `qa serve` on a free port over a copy of corpus/ and stops it afterwards. Every answer is
checked against its own question (the expected passage, or nothing for off-topic questions). Prints errors,
wrong answers and p50/p95 latency; exits non-zero on any error or wrong answer.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def start_server(tmp: Path) -> tuple[subprocess.Popen, str]:
    shutil.copytree(ROOT / "corpus", tmp / "corpus")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "NO_PROXY": "127.0.0.1,localhost"}
    proc = subprocess.Popen([sys.executable, "-m", "qa", "serve", "--port", str(port), "--index", str(tmp / "index"),
                             "--corpus", str(tmp / "corpus")], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(240):
        try:
            urllib.request.urlopen(url, timeout=2)
            return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("the server did not start")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--questions", type=int, default=50)
    parser.add_argument("--url")
    args = parser.parse_args()
    from gradio_client import Client

    data = json.loads((ROOT / "tests" / "data" / "seed_questions.json").read_text(encoding="utf-8"))
    cases = [(c["question"], c["answer"], c.get("hard", False)) for c in data["answerable"]]
    cases += [(q, None, False) for q in data["off_topic"]]
    tmp = Path(tempfile.mkdtemp())
    proc, url = (None, args.url) if args.url else start_server(tmp)
    latencies: list[float] = []
    errors: list[str] = []
    wrong: list[str] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        client = Client(url, verbose=False)
        for i in range(args.questions):
            question, answer, hard = cases[(n * 7 + i) % len(cases)]
            began = time.perf_counter()
            try:
                out = client.predict(question, 5, "hybrid", api_name="/ask")
            except Exception as exc:  # any failure of a request counts; the run goes on
                with lock:
                    errors.append(f"{question}: {exc}")
                continue
            elapsed = (time.perf_counter() - began) * 1000
            texts = [p["text"] for p in out["passages"]]
            ok = out["question"] == question and (
                not texts if answer is None else any(answer in t for t in texts[: 3 if hard else 1]))
            with lock:
                latencies.append(elapsed)
                if not ok:
                    wrong.append(question)

    began = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=1800)
    total = time.perf_counter() - began
    if proc:
        proc.terminate()
        proc.wait(timeout=30)
    shutil.rmtree(tmp, ignore_errors=True)
    latencies.sort()
    print(f"clients {args.clients} x questions {args.questions} = {args.clients * args.questions} requests "
          f"in {total:.1f} s")
    print(f"errors {len(errors)}, wrong answers {len(wrong)}")
    if latencies:
        from qa.evaluation import p50_p95

        p50, p95 = p50_p95(latencies)
        print(f"latency p50 {p50:.0f} ms, p95 {p95:.0f} ms, throughput {len(latencies) / total:.1f} answers/s")
    for line in (errors + wrong)[:10]:
        print("  ", line)
    return 1 if errors or wrong else 0


if __name__ == "__main__":
    sys.exit(main())
