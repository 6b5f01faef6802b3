"""tesserocr (in process, Tesseract 5.5 bundled in its wheel) against the `tesseract` command (Debian's 5.3, what
pytesseract runs) on the TAM review's 21 garbled pages drawn at 300 dpi: seconds a page, and how alike the texts are.

Usage: .venv/bin/python experiments/ocr_compare.py   (needs `apt install tesseract-ocr` for the command)
"""
import difflib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pypdfium2 as pdfium
import tesserocr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from qa.formats import ocr  # noqa: E402

PDF = Path(__file__).resolve().parent.parent.parent / "shared" / "realdocs" / "docs" / "pdfjs__TAMReview.pdf"
if not PDF.exists() or not shutil.which("tesseract") or not ocr.available():
    sys.exit("needs ../shared/realdocs, the tesseract command and Tesseract's English model")
threads = os.environ.get("OMP_THREAD_LIMIT", "unset")
doc = pdfium.PdfDocument(str(PDF))
images = [doc[i].render(scale=300/72, grayscale=True).to_pil() for i in range(1, 22)]
api = tesserocr.PyTessBaseAPI(path=ocr.tessdata(), lang="eng")
t = time.perf_counter(); a = []
for im in images:
    api.SetImage(im); api.SetSourceResolution(300); a.append(api.GetUTF8Text())
ta = time.perf_counter() - t
t = time.perf_counter(); b = []
with tempfile.TemporaryDirectory() as d:
    for i, im in enumerate(images):
        f = os.path.join(d, f"{i}.png"); im.save(f)
        b.append(subprocess.run(["tesseract", f, "-", "--dpi", "300", "-l", "eng"], capture_output=True, text=True).stdout)
tb = time.perf_counter() - t
same = sum(difflib.SequenceMatcher(None, x, y).ratio() for x, y in zip(a, b)) / len(a)
print(f"tesserocr {ta:.1f} s ({ta/21:.2f} s/page); tesseract command (OMP_THREAD_LIMIT={threads}) {tb:.1f} s ({tb/21:.2f} s/page); text similarity {same:.3f}")
