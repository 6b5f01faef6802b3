"""A folder index of a million chunks on disk: how long `qa ask` takes to start, its peak memory, retrieve() latency.

    .venv/bin/python experiments/million.py build DIR [--chunks 1000000]
    .venv/bin/python experiments/million.py measure DIR [--code TREE] [--questions 200]

`build` indexes 100 files of real SciFact text (50 abstracts each) with the real pipeline and model, then writes
copies of them until DIR holds `--chunks` rows, through the index writer (row files, BM25, HNSW): the text is real
and repeats, each copy's vectors are its original mixed with another row's plus noise (as `qa bench` makes them),
sentence vectors are the originals'. It also writes DIR-format2: the same files, hard-linked, as the previous
index format had them (no row table), which the code before the row table reads.

`measure` runs, in new processes, with the `qa` of `--code` (a checkout; default this one), once with the page
cache dropped first (root only; said in the output when it could not be) and twice with the index's files in it:
opening the index alone (seconds, peak RSS), then the `qa ask` command (seconds to its answer, peak RSS from
wait4); then retrieve() p50/p95 over SciFact questions in one process. One JSON object per line; the machine first.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "eval" / "scifact"
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def say(**fields) -> None:
    print(json.dumps(fields), flush=True)


def build(target: Path, chunks: int) -> None:
    from qa.api import shared_embedder
    from qa.bench import _machine
    from qa.config import Settings
    from qa.evaluation import load_beir
    from qa.index.store import read_index
    from qa.index.sync import index_paths
    from qa.index.writer import GenerationWriter

    say(section="machine", **_machine())
    dataset = load_beir(DATA, "test")
    docs = list(dataset.corpus.values())
    settings = Settings()
    with tempfile.TemporaryDirectory(prefix="qa-million-") as temp:
        corpus = Path(temp) / "corpus"
        corpus.mkdir()
        for f in range(100):
            group = docs[f * 50 : (f + 1) * 50]
            (corpus / f"part{f:03d}.txt").write_text("\n\n".join(f"{t}\n\n{x}" for t, x in group), encoding="utf-8")
        began = time.perf_counter()
        embedder = shared_embedder(settings)
        index_paths([corpus], settings.with_(index_dir=Path(temp) / "base"), embedder=embedder, rebuild=True)
        base = read_index(Path(temp) / "base", searchable=False)
        say(section="base", chunks=base.size, files=len(base.manifest.files),
            seconds=round(time.perf_counter() - began, 1))

        shutil.rmtree(target, ignore_errors=True)
        (target / "docs").mkdir(parents=True)
        for text in (Path(temp) / "base" / "docs").iterdir():
            shutil.copy(text, target / "docs" / text.name)
        began = time.perf_counter()
        rng = np.random.default_rng(0)
        writer = GenerationWriter(target, settings.bm25_settings())
        sources = sorted(base.manifest.files)
        files, copy = {}, 0
        while writer.rows < chunks:
            for source in sources:
                rows = base.source_rows(source)
                if writer.rows >= chunks:
                    break
                name = source if copy == 0 else f"copy{copy:05d}/{source}"
                batch = [replace(c, id=f"{c.id}~{copy}", source=name) for c in base.chunks[rows.start : rows.stop]]
                writer.add_rows(batch)
                real = np.asarray(base.vectors[rows.start : rows.stop], dtype=np.float32)
                if copy:  # the same kind of text, not copies: an approximate index must tell neighbours apart
                    real = 0.6 * real + 0.4 * np.asarray(base.vectors[rng.integers(0, base.size, len(real))])
                    real += rng.normal(0, 0.03, real.shape).astype(np.float32)
                    real /= np.linalg.norm(real, axis=1, keepdims=True)
                first, last = base.sentence_rows[rows.start][0], base.sentence_rows[rows.stop - 1][1]
                writer.add_vectors(real, np.asarray(base.sentence_vectors[first:last]))
                entry = base.manifest.files[source]
                files[name] = replace(entry, sha256=hashlib.sha256(name.encode()).hexdigest())
            copy += 1
            say(section="writing", rows=writer.rows, seconds=round(time.perf_counter() - began, 1))
        manifest = replace(base.manifest, generation=writer.gen, files=files, chunk_count=writer.rows,
                           updated=time.time())
        writer.commit(manifest)
    say(section="built", chunks=manifest.chunk_count, files=len(files), seconds=round(time.perf_counter() - began, 1),
        bytes=sum(p.stat().st_size for p in target.rglob("*") if p.is_file()))
    older = target.with_name(target.name + "-format2")
    shutil.rmtree(older, ignore_errors=True)
    older.mkdir()
    for item in target.rglob("*"):
        relative = item.relative_to(target)
        if item.is_dir():
            (older / relative).mkdir(exist_ok=True)
        elif not item.name.startswith(("rows.", "manifest", ".lock")):
            os.link(item, older / relative)
    data = json.loads((target / "manifest.json").read_text())
    data["format_version"] = 2
    for entry in data["files"].values():
        del entry["row"]
    (older / "manifest.json").write_text(json.dumps(data))


_OPEN = """
import sys, time
began = time.perf_counter()
from qa.index.store import read_index
imported = time.perf_counter()
data = read_index(__import__("pathlib").Path(sys.argv[1]))
opened = time.perf_counter()
peak = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(round(imported - began, 2), round(opened - imported, 2), int(peak) // 1024, data.size,
      __import__("qa").__file__)
"""

_LATENCY = """
import json, sys, time
from qa import Retriever
from qa.citations import cite
retriever = Retriever(sys.argv[1])
questions = json.loads(sys.argv[2])
for q in questions[:10]:
    retriever.ask(q)
times = []
for q in questions:
    began = time.perf_counter()
    [cite(h) for h in retriever.searcher.ask(q).hits]
    times.append((time.perf_counter() - began) * 1000)
times.sort()
print(round(times[len(times) // 2], 2), round(times[int(len(times) * 0.95)], 2))
"""


def _drop_caches() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3")
        return True
    except OSError:
        return False


def _fill_page_cache(index: Path) -> None:
    """Read every file of the index once, so that "warm" figures do not depend on what ran before."""
    for file in index.rglob("*"):
        if file.is_file():
            with open(file, "rb") as handle:
                while handle.read(1 << 24):
                    pass


def _child(args: list[str], env: dict[str, str]) -> tuple[str, float, int]:
    """Run a process; its output, wall seconds and peak RSS in MiB (from the kernel, at exit)."""
    began = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
                            cwd=env["PYTHONPATH"])  # the current folder comes first on sys.path
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - began
    out, err = proc.stdout.read(), proc.stderr.read()
    if status:
        raise SystemExit(f"{args[:3]} failed: {err[-2000:]}")
    return out, seconds, usage.ru_maxrss // 1024


def measure(index: Path, code: Path, questions: int) -> None:
    from qa.bench import _machine
    from qa.evaluation import load_beir

    say(section="machine", **_machine())
    env = {**os.environ, "PYTHONPATH": str(code), "HF_HUB_OFFLINE": "1"}
    asked = list(load_beir(DATA, "test").queries.values())[:questions]
    manifest = json.loads((index / "manifest.json").read_text())
    common = dict(code=str(code), index=str(index), format=manifest["format_version"], chunks=manifest["chunk_count"])
    # "dropped": the page cache emptied first (disk reads count); "warm": the files already in the page cache, as
    # after indexing or any recent use (run once before, not counted).
    for cache in ("dropped", "warm", "warm"):
        if cache == "dropped" and not _drop_caches():
            say(section="open", note="the page cache could not be dropped (not root): no cold figures")
            continue
        if cache == "warm":
            _fill_page_cache(index)
        out, seconds, rss = _child([sys.executable, "-c", _OPEN, str(index)], env)
        imports, opened, peak, size, package = out.split()
        assert package.startswith(str(code)), f"{package} is not the code asked for ({code})"
        say(section="open", page_cache=cache, import_s=float(imports), open_s=float(opened),
            process_s=round(seconds, 2), peak_rss_mib=max(int(peak), rss), **common)
        if cache == "dropped":
            _drop_caches()
        out, seconds, rss = _child([sys.executable, "-m", "qa", "ask", "--index", str(index), asked[0]], env)
        say(section="qa ask", page_cache=cache, seconds_to_answer=round(seconds, 2), peak_rss_mib=rss,
            answered=bool(out.strip()), **common)
    _fill_page_cache(index)
    out, seconds, rss = _child([sys.executable, "-c", _LATENCY, str(index), json.dumps(asked)], env)
    p50, p95 = out.split()
    say(section="retrieve", questions=len(asked), p50_ms=float(p50), p95_ms=float(p95), peak_rss_mib=rss, **common)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("build", "measure"))
    parser.add_argument("index", type=Path)
    parser.add_argument("--chunks", type=int, default=1_000_000)
    parser.add_argument("--code", type=Path, default=ROOT)
    parser.add_argument("--questions", type=int, default=200)
    args = parser.parse_args()
    if not (DATA / "corpus.jsonl").is_file():
        print(f"skipped: {DATA} is absent")
        return
    if args.action == "build":
        build(args.index, args.chunks)
    else:
        measure(args.index, args.code.resolve(), args.questions)


if __name__ == "__main__":
    main()
