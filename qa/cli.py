"""Command line: `qa index`, `qa ask`, `qa serve`, `qa calibrate`; library errors become one-line messages."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from qa.config import MODES, Settings, is_database
from qa.errors import QAError, SettingsError


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings()
    if getattr(args, "index", None):  # a folder, or a database named where a folder could be
        store = is_database(args.index)
        settings = settings.with_(store=args.index) if store else settings.with_(index_dir=Path(args.index))
    if getattr(args, "store", None) is not None:
        settings = settings.with_(store=args.store)
    if getattr(args, "mode", None):
        settings = settings.with_(mode=args.mode)
    return settings


_STORE_HELP = ("a PostgreSQL database instead of the index folder: postgresql://user@host:port/db[#name] "
               "(default: $QA_STORE; see docs/postgresql.md)")

# While files are still being read, the number of chunks to embed is not known yet: no ETA, and a "+".
_GROWING = "{desc}: {n_fmt}/{total_fmt}+{unit} [{elapsed}, {rate_fmt}]"


class _Bars:
    """tqdm bars for the two indexing stages, on stderr so that --json output stays clean; none when stderr is
    not a terminal (a log file gets no cursor codes)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.bars: dict[str, object] = {}
        self.reading = True

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if stage not in self.bars:
            label = {"read": "reading files", "embed": "embedding chunks", "query": "asking"}.get(stage, stage)
            unit = {"read": " files", "embed": " chunks", "query": " queries"}.get(stage, "")
            self.bars[stage] = tqdm(total=total, desc=label, unit=unit, file=sys.stderr, dynamic_ncols=True,
                                    bar_format=_GROWING if stage == "embed" and self.reading else None)
        bar = self.bars[stage]
        if stage == "read" and done >= total:
            self.reading = False
        if stage == "embed":
            bar.total = total  # grows while files are read; final, with an ETA, once they all are
            if not self.reading and bar.bar_format == _GROWING:
                bar.bar_format = None
        bar.update(done - bar.n)
        if done >= total and not (stage == "embed" and self.reading):
            bar.close()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def cmd_index(args: argparse.Namespace) -> int:
    from qa.api import build_index

    bars = _Bars(not args.json and not args.quiet)
    try:
        report = build_index(args.paths or None, settings=_settings(args), progress=bars, rebuild=args.rebuild,
                             wait=args.wait)
    finally:
        bars.close()
    if args.json:
        print(json.dumps({"index": report.index_dir, "added": report.added, "changed": report.changed,
                          "removed": report.removed, "unchanged": report.unchanged,
                          "failed": [{"source": f.source, "reason": f.reason} for f in report.failed],
                          "skipped": [{"source": f.source, "reason": f.reason} for f in report.skipped],
                          "chunks_embedded": report.chunks_embedded, "total_chunks": report.total_chunks,
                          "backend": report.backend, "backend_reason": report.backend_reason,
                          "seconds": round(report.seconds, 3)}, ensure_ascii=False))
    else:
        print(f"index {report.index_dir}: {report.describe()}")
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    from qa.api import Retriever
    from qa.citations import to_plain

    retriever = Retriever(args.index, settings=_settings(args), progress=_Bars(not args.json))
    answer = retriever.ask(args.question, args.k, args.mode)
    if args.json:
        print(json.dumps(answer.to_dict(), ensure_ascii=False))
    else:
        print(to_plain(list(answer.passages), answer.question, answer.answer, answer.confidence))
    return 0


def _auth() -> list[tuple[str, str]] | None:
    """Optional login: QA_AUTH="user:password" or QA_AUTH_FILE (one user:password per line)."""
    lines = []
    if os.environ.get("QA_AUTH"):
        lines.append(os.environ["QA_AUTH"])
    if os.environ.get("QA_AUTH_FILE"):
        lines += Path(os.environ["QA_AUTH_FILE"]).read_text(encoding="utf-8").splitlines()
    pairs = [tuple(line.strip().split(":", 1)) for line in lines if ":" in line]
    return [(u, p) for u, p in pairs if u and p] or None


def cmd_serve(args: argparse.Namespace) -> int:
    from qa.web import serve

    settings = _settings(args)
    if args.corpus:
        settings = settings.with_(corpus_dir=Path(args.corpus))
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {args.host}: other machines on the network can reach this page"
              + ("" if _auth() else " and read your documents (set QA_AUTH=user:password to require a login)"),
              file=sys.stderr)
    bars = _Bars(True)
    print(f"indexing {settings.corpus_dir} into {settings.store or settings.index_dir} ...", file=sys.stderr)
    serve(settings, host=args.host, port=args.port, progress=bars, auth=_auth())
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from qa.calibration import beir_questions, calibrate

    unrelated = beir_questions(Path(args.unrelated), args.split) if args.unrelated else None
    report = calibrate(Path(args.questions), _settings(args), args.index is None, unrelated)
    print(json.dumps(report, indent=1) if args.json else report["text"])
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from qa.evaluation import evaluate

    bars = _Bars(not args.json and not args.quiet)
    try:
        result = evaluate(Path(args.dataset), _settings(args), split=args.split, mode=args.mode,
                          max_queries=args.max_queries, max_docs=args.max_docs, rerank=args.rerank, progress=bars,
                          **({"cache": Path(args.cache)} if args.cache else {}))
    finally:
        bars.close()
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['dataset']} {result['split']} ({result['queries']} queries, {result['documents']} documents, "
              f"{result['chunks']} chunks), mode {result['mode']}")
        for key in ("ndcg@10", "recall@10", "recall@100", "mrr@10"):
            print(f"  {key:11} {result[key]:.4f}")
        if result["refused_at_cutoff"] is not None:
            print(f"  answerable queries the cut-off {result['cutoff']} would refuse: {result['refused_at_cutoff']}")
        print(f"  index {result['index_seconds']} s ({result['embedded_now']} chunks embedded this run); "
              f"query p50 {result['query_ms_p50']} ms, p95 {result['query_ms_p95']} ms")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from qa.bench import bench, dumps, to_text

    say = (lambda _: None) if args.json else (lambda line: print(line, file=sys.stderr, flush=True))
    try:  # "" measures no query sizes: the ingest alone
        sizes = tuple(int(s) for s in args.sizes.split(",") if s.strip())
    except ValueError:
        raise SettingsError(f"--sizes takes index sizes in chunks, comma-separated (10000,100000), "
                            f"not {args.sizes!r}") from None
    result = bench(Path(args.data) if args.data else None, _settings(args), args.files, sizes, say)
    print(dumps(result) if args.json else to_text(result))
    return 0


def cmd_postgres(args: argparse.Namespace) -> int:
    from qa import pgserver

    if args.action == "stop":
        pgserver.stop(Path(args.data))
        print(f"stopped the server in {args.data}")
        return 0
    server = pgserver.start(Path(args.data), args.port)
    print(server.url)
    print(f"PostgreSQL with pgvector is running from {server.data_dir} (127.0.0.1 only). Use it with:\n"
          f"  qa index --store {server.url}\n  export QA_STORE={server.url}\n"
          f"Stop it with: qa postgres stop {args.data}", file=sys.stderr)
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="qa", description="Offline question answering over your documents, "
                                  "with exact citations.")
    sub = top.add_subparsers(dest="command", required=True)

    p = sub.add_parser("index", help="build or update the index from files and folders")
    p.add_argument("paths", nargs="*", help="files or folders (default: the corpus/ folder)")
    p.add_argument("--index", help="index folder (default: index/)")
    p.add_argument("--store", metavar="URL", help=_STORE_HELP)
    p.add_argument("--rebuild", action="store_true", help="ignore the existing index and build it anew")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="wait this long for another indexer to finish instead of failing")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=cmd_index)

    p = sub.add_parser("ask", help="print the passages that answer a question")
    p.add_argument("question")
    p.add_argument("--index", help="index folder (default: index/, built first if missing)")
    p.add_argument("--store", metavar="URL", help=_STORE_HELP)
    p.add_argument("--k", type=int, help="number of passages (default: Settings.k, 5)")
    p.add_argument("--mode", choices=MODES, help="retrieval mode (default hybrid)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=cmd_ask)

    p = sub.add_parser("serve", help="start the web chat")
    p.add_argument("--index", help="index folder (default: index/)")
    p.add_argument("--store", metavar="URL", help=_STORE_HELP)
    p.add_argument("--corpus", help="documents folder, indexed at start and where uploads go (default: corpus/)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.set_defaults(run=cmd_serve)

    p = sub.add_parser("eval", help="measure retrieval quality on a BEIR-layout dataset")
    p.add_argument("dataset", help="folder with corpus.jsonl, queries.jsonl, qrels/<split>.tsv")
    p.add_argument("--store", metavar="URL", help=_STORE_HELP)
    p.add_argument("--mode", choices=MODES, help="retrieval mode (default hybrid)")
    p.add_argument("--split", default="test")
    p.add_argument("--max-queries", type=int, help="evaluate only the first N queries (a quick slice)")
    p.add_argument("--max-docs", type=int, help="index only N documents plus every judged one (a quick slice)")
    p.add_argument("--rerank", type=int, help="chunks re-scored by their best sentence (default k+3 = 8)")
    p.add_argument("--cache", help="where the dataset's index is kept between runs (default .qa-cache/eval)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=cmd_eval)

    p = sub.add_parser("bench", help="measure ingest speed, query latency by index size, re-index and start-up")
    p.add_argument("--data", metavar="BEIR_DIR", help="documents and questions (default ../shared/eval/scifact)")
    p.add_argument("--files", type=int, default=1000, help="files in the ingest test (default 1000)")
    p.add_argument("--sizes", default="10000,100000,1000000",
                   help="index sizes for query latency, in chunks (\"\" for none: the ingest alone)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=cmd_bench, index=None)

    p = sub.add_parser("postgres", help="start or stop a local PostgreSQL + pgvector server for --store")
    p.add_argument("action", choices=["start", "stop"])
    p.add_argument("data", help="the server's data folder (made on first start)")
    p.add_argument("--port", type=int, help="port on 127.0.0.1 (default: a free one; it is printed)")
    p.set_defaults(run=cmd_postgres)

    p = sub.add_parser("calibrate", help="measure the abstention cut-off on a question set")
    p.add_argument("questions", help="JSON file: {answerable: [{question, answer}], off_topic: [question]}")
    p.add_argument("--index", help="index folder (default: index/)")
    p.add_argument("--store", metavar="URL", help=_STORE_HELP)
    p.add_argument("--unrelated", metavar="BEIR_DIR", help="also ask this dataset's queries: none should be answered")
    p.add_argument("--split", default="test", help="which queries of --unrelated (default test)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_calibrate)
    return top


def main(argv: list[str] | None = None) -> int:
    # The application, not the library, decides what is shown: keep third-party chatter off the terminal.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("bm25s", "pypdf", "sentence_transformers", "transformers", "httpx"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    args = parser().parse_args(argv)
    try:
        code = args.run(args)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at exit
        return code
    except QAError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`qa ask ... | head`): nothing more to say, and no traceback about it.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
