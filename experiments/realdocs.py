"""Index a folder of real documents and ask its question file: what a new user would meet, in figures.

Usage: .venv/bin/python experiments/realdocs.py [DOCS_DIR] [QUESTIONS_JSON] [--index DIR] [--json] [--no-pypdf]
Defaults: ../shared/realdocs/docs and ../shared/realdocs/questions.json; a fresh temporary index.

Prints: the answer in the top passage, in the top 5, inside the rank-1 highlight, the page right for PDF answers,
abstentions, every failed file with its reason, chunks, ingest pages/s and chunks/s, PDF extraction speed of
ours against pypdf side by side, and what is left in the chunks that should not be (ligatures, /gNNN glyph runs,
lines repeated on many pages).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qa.api import Retriever, build_index, shared_embedder  # noqa: E402
from qa.backends import machine  # noqa: E402
from qa.config import Settings  # noqa: E402

SHARED = ROOT.parent / "shared" / "realdocs"
_LIGATURES = re.compile("[\ufb00-\ufb06]")
_GLYPHS = re.compile(r"(?:/g\d+){3,}")


def _squash(text: str) -> str:
    return " ".join(text.split()).lower()


def pdf_speed(folder: Path) -> dict[str, object]:
    """Pages per second of our PDF reader and of pypdf on the same files, file by file in one run: over all
    files, and over the files PDFium opens (the others go to pypdf in our reader too). Like for like, ours
    reads text layers only, as pypdf does; "ours_with_ocr" is the same reader as `qa index` runs it, OCR on."""
    import pypdfium2 as pdfium
    from pypdf import PdfReader

    from qa.formats import ocr
    from qa.loaders import load

    totals = {"ours": [0, 0.0], "pypdf": [0, 0.0], "ours_pdfium": [0, 0.0], "pypdf_same_files": [0, 0.0],
              "ours_with_ocr": [0, 0.0]}
    can_ocr, ocr_pages = ocr.available, 0
    for path in sorted(folder.rglob("*.pdf")):
        data = path.read_bytes()
        try:
            pdfium.PdfDocument(data).close()
            opens = True
        except pdfium.PdfiumError:
            opens = False
        began = time.perf_counter()
        try:
            document = load(path, path.name, data)
            with_ocr = len(document.page_starts)
            ocr_pages += sum(_pages_in(note) for note in document.notes if note.endswith("read by OCR"))
        except Exception:  # noqa: BLE001 (an unreadable file counts its time, not its pages)
            with_ocr = 0
        with_ocr_s = time.perf_counter() - began
        ocr.available = lambda: False
        began = time.perf_counter()
        try:
            ours = len(load(path, path.name, data).page_starts)
        except Exception:  # noqa: BLE001
            ours = 0
        ours_s = time.perf_counter() - began
        ocr.available = can_ocr
        began, theirs = time.perf_counter(), 0
        try:
            reader = PdfReader(str(path))
            if reader.is_encrypted:
                reader.decrypt("")
            for page in reader.pages:
                page.extract_text()
                theirs += 1
        except Exception:  # noqa: BLE001
            pass
        theirs_s = time.perf_counter() - began
        for key, pages, seconds, wanted in (("ours", ours, ours_s, True), ("pypdf", theirs, theirs_s, True),
                                            ("ours_pdfium", ours, ours_s, opens),
                                            ("pypdf_same_files", theirs, theirs_s, opens),
                                            ("ours_with_ocr", with_ocr, with_ocr_s, True)):
            if wanted:
                totals[key][0] += pages
                totals[key][1] += seconds
    result: dict[str, object] = {}
    for key, (pages, seconds) in totals.items():
        result[key] = {"pages": pages, "seconds": round(seconds, 2), "pages_per_s": round(pages / seconds, 1)}
    result["ours_with_ocr"]["pages_read_by_ocr"] = ocr_pages
    result["speedup_all"] = round(result["ours"]["pages_per_s"] / result["pypdf"]["pages_per_s"], 1)
    result["speedup_pdfium_files"] = round(result["ours_pdfium"]["pages_per_s"]
                                           / result["pypdf_same_files"]["pages_per_s"], 1)
    return result


def _pages_in(note: str) -> int:
    """How many pages a note names: "pages 2-22, 30: ..." is 22."""
    count = 0
    for part in note.split(":", 1)[0].split(" ", 1)[1].split(","):
        first, _, last = part.strip().partition("-")
        count += int(last or first) - int(first) + 1
    return count


def residue(retriever: Retriever) -> dict[str, int]:
    """What the chunks still hold that extraction should have removed."""
    data = retriever.data
    ligatures = sum(len(_LIGATURES.findall(c.text)) for c in data.chunks)
    glyphs = sum(len(_GLYPHS.findall(c.text)) for c in data.chunks)
    # A short line that recurs on many pages of one PDF is a running head, footer or page stamp.
    repeated = 0
    for source, entry in data.manifest.files.items():
        if len(entry.page_starts) < 6:
            continue
        text = data.document_text(source)
        bounds = list(entry.page_starts) + [len(text)]
        seen: Counter[str] = Counter()
        for a, b in zip(bounds, bounds[1:]):
            lines = {re.sub(r"\d+", "#", line.strip().lower()) for line in text[a:b].split("\n")}
            seen.update(line for line in lines if 3 <= len(line) <= 80 and len(line.split()) >= 2)
        pages = len(entry.page_starts)
        repeated += sum(1 for count in seen.values() if count >= max(4, pages // 3))
    return {"ligatures": ligatures, "glyph_runs": glyphs, "repeated_page_lines": repeated}


def ask(retriever: Retriever, questions: list[dict]) -> dict[str, object]:
    rows, top1, top5, highlight, page_ok, page_total, refused_answerable, refused_unanswerable = [], 0, 0, 0, 0, 0, 0, 0
    answerable = [q for q in questions if q.get("source")]
    unanswerable = [q for q in questions if not q.get("source")]
    for q in questions:
        passages = retriever.retrieve(q["question"], k=5)
        row = {"question": q["question"], "passages": len(passages)}
        if not q.get("source"):
            refused_unanswerable += not passages
            row["refused"] = not passages
            if passages:
                row["got"] = f"{passages[0].source}: {passages[0].highlighted_text[:100]}"
            rows.append(row)
            continue
        want = _squash(q["expected_substring"])
        hit = [p.source == q["source"] and want in _squash(p.text) for p in passages]
        refused_answerable += not passages
        row["top1"] = bool(hit and hit[0])
        row["top5"] = any(hit)
        row["highlight"] = bool(passages) and want in _squash(passages[0].highlighted_text)
        top1 += row["top1"]
        top5 += row["top5"]
        highlight += row["highlight"]
        if q.get("page") and row["top1"]:
            page_total += 1
            row["page"] = passages[0].page
            page_ok += passages[0].page == q["page"]
        if passages and not row["highlight"]:
            row["got"] = f"{passages[0].source} p{passages[0].page}: {passages[0].highlighted_text[:100]}"
        rows.append(row)
    return {"answerable": len(answerable), "top1": top1, "top5": top5, "highlight": highlight,
            "page_right": f"{page_ok}/{page_total}", "answerable_refused": refused_answerable,
            "unanswerable": len(unanswerable), "unanswerable_refused": refused_unanswerable, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("docs", nargs="?", default=str(SHARED / "docs"))
    parser.add_argument("questions", nargs="?", default=str(SHARED / "questions.json"))
    parser.add_argument("--index", help="index folder (default: a fresh temporary one)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-pypdf", action="store_true", help="skip the side-by-side PDF speed run")
    args = parser.parse_args()
    docs = Path(args.docs)
    if not docs.is_dir():
        print(f"no documents at {docs}: nothing to measure", file=sys.stderr)
        return
    questions = json.loads(Path(args.questions).read_text(encoding="utf-8"))["questions"]
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(index_dir=Path(args.index) if args.index else Path(tmp) / "index")
        shared_embedder(settings)  # model load is not ingest
        began = time.perf_counter()
        report = build_index([docs], settings=settings, rebuild=True)
        ingest_s = time.perf_counter() - began
        retriever = Retriever(settings.index_dir, settings=settings)
        pages = sum(max(1, len(e.page_starts)) for e in retriever.data.manifest.files.values()
                    if e.page_starts)
        result = {
            "cpu": _cpu(),
            "files": len(report.added) + len(report.failed),
            "indexed": len(report.added),
            "failed": [{"source": f.source, "reason": f.reason} for f in report.failed],
            "notes": [{"source": f.source, "reason": f.reason} for f in getattr(report, "notes", ())],
            "chunks": report.total_chunks,
            "ingest_seconds": round(ingest_s, 1),
            "pdf_pages": pages,
            "ingest_pages_per_s": round(pages / ingest_s, 1),
            "ingest_chunks_per_s": round(report.total_chunks / ingest_s, 1),
            "backend": report.backend,
            # The share of the ingest the model was not embedding (reading, parsing and chunking it waited for).
            "non_embedding_share": round(1 - float(report.extra.get("embed_seconds", 0.0)) / ingest_s, 3),
            "residue": residue(retriever),
            "questions": ask(retriever, questions),
        }
    if not args.no_pypdf:
        result["pdf_extraction"] = pdf_speed(docs)
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=1))
        return
    q = result["questions"]
    print(f"CPU: {result['cpu']}")
    print(f"files {result['files']}: indexed {result['indexed']}, failed {len(result['failed'])}; "
          f"{result['chunks']} chunks in {result['ingest_seconds']} s "
          f"({result['ingest_chunks_per_s']} chunks/s; {result['pdf_pages']} PDF pages, "
          f"{result['ingest_pages_per_s']} pages/s of the whole ingest; {result['backend']}, "
          f"{result['non_embedding_share']:.1%} of it not embedding)")
    for f in result["failed"]:
        print(f"  failed: {f['source']}: {f['reason']}")
    for f in result["notes"]:
        print(f"  note: {f['source']}: {f['reason']}")
    print(f"residue in chunks: {result['residue']}")
    if "pdf_extraction" in result:
        print(f"PDF extraction: {result['pdf_extraction']}")
    print(f"answerable {q['answerable']}: answer in top passage {q['top1']}, in top 5 {q['top5']}, inside the "
          f"highlight {q['highlight']}, page right {q['page_right']}, refused {q['answerable_refused']}")
    print(f"unanswerable {q['unanswerable']}: refused {q['unanswerable_refused']}")
    for row in q["rows"]:
        marks = "".join(("1" if row.get("top1") else "-", "5" if row.get("top5") else "-",
                         "H" if row.get("highlight") else "-")) if "top1" in row else (
            "refused" if row["refused"] else "ANSWERED")
        print(f"  [{marks}] {row['question'][:70]}" + (f"\n        got {row['got']}" if "got" in row else ""))


def _cpu() -> str:
    m = machine()
    caps = "".join(f", {k}={v}" for k, v in m["caps"].items())
    return f"{m['cpu']} (family/model {m['family_model']}; {' '.join(m['isa'])}{caps}), {m['cores']} cores"


if __name__ == "__main__":
    main()
