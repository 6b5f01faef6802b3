"""The command line end to end, as a user runs it: a mixed folder, JSON output, one-line errors."""
from __future__ import annotations

import json
import os
import re
import subprocess

import numpy as np
import pytest

from pathlib import Path

from conftest import QA, ROOT, STORES, make_mixed_folder, new_store, open_store
from qa.config import Settings

QUESTIONS = {
    "notes.txt": "How many storms did the lighthouse keeper log?",
    "guide.md": "How many bees live in a healthy hive in summer?",
    "page.html": "What is the most active volcano in Europe?",
    "report.pdf": "How far did the glacier retreat in one year?",
    "memo.docx": "What will the cafeteria serve on Thursdays?",
    "nested/deeper/utf16.txt": "What does the orchestra rehearse on Tuesdays?",
}


def run(*args, check=True):
    result = subprocess.run([*QA, *args], capture_output=True, text=True, cwd=ROOT, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mixed")
    phrases = make_mixed_folder(folder)
    index = tmp_path_factory.mktemp("mixed-index")
    result = run("index", str(folder), "--index", str(index), "--json")
    return folder, index, phrases, json.loads(result.stdout), result.stderr


@pytest.fixture(scope="module", params=STORES)
def any_store(request, mixed):
    """The mixed folder indexed by the CLI into each store: the folder above, and a PostgreSQL database."""
    if request.param == "folder":
        return mixed
    folder, _, phrases, _, _ = mixed
    store = new_store(request.getfixturevalue("postgres"))
    result = run("index", str(folder), "--store", store, "--json")
    return folder, store, phrases, json.loads(result.stdout), result.stderr


def test_index_reports_every_file(any_store):
    _, index, phrases, report, stderr = any_store
    assert sorted(report["added"]) == sorted(phrases)
    assert {f["source"] for f in report["failed"]} == {"broken.pdf", "binary.txt", "empty.txt"}
    assert all(f["reason"] for f in report["failed"])
    assert report["skipped"] == [{"source": "image.png", "reason": "unsupported file type '.png'"}]
    # Which backend embedded, and why: under auto, measured on this machine (or the only one installed).
    model = open_store(Settings(index_dir=index) if isinstance(index, Path) else Settings(store=index)).manifest.model
    assert report["backend"] == model["backend"] and report["backend_reason"]
    assert report["backend_reason"].startswith(("measured on this CPU", "OpenVINO is not installed"))


def test_ask_json_schema_and_answers_from_each_format(any_store):
    from qa.api import Retriever

    folder, index, phrases, _, _ = any_store
    out = json.loads(run("ask", QUESTIONS["report.pdf"], "--index", str(index), "--json", "--k", "3").stdout)
    assert set(out) == {"question", "answer", "confidence", "passages"}
    assert set(out["answer"]) == {"text", "source", "start", "end", "page", "line", "page_label"}
    assert 0.5 <= out["confidence"] <= 1
    top = out["passages"][0]
    assert out["answer"]["text"] == top["text"][top["highlight"][0] - top["start"] : top["highlight"][1] - top["start"]]
    assert set(top) == {"source", "page", "page_label", "line", "start", "end", "text", "score", "highlight"}
    assert top["source"] == "report.pdf" and top["page"] == 2 and "thirty metres" in top["text"]
    assert isinstance(top["line"], int) and isinstance(top["score"], float)
    retriever = Retriever(index)
    # The same passages, places and highlights from the API; scores agree to 4 decimals (every process runs an
    # int8 question on the same fixed-shape copy of the model; threads may still order float sums differently).
    api = [p.to_dict() for p in retriever.retrieve(QUESTIONS["report.pdf"], k=3)]
    assert [{**p, "score": None} for p in api] == [{**p, "score": None} for p in out["passages"]]
    assert np.allclose([p["score"] for p in api], [p["score"] for p in out["passages"]], atol=1e-4)
    for source, question in QUESTIONS.items():
        passages = retriever.retrieve(question)
        assert passages and passages[0].source == source, question
        assert phrases[source] in passages[0].text
    html_text = " ".join(p.text for p in retriever.retrieve("volcano Etna javascript secret"))
    assert "hidden-js" not in html_text


def test_second_index_run_embeds_nothing(any_store):
    folder, index, _, _, _ = any_store
    report = json.loads(run("index", str(folder), "--index", str(index), "--json").stdout)
    assert report["chunks_embedded"] == 0 and len(report["unchanged"]) == 7


def test_human_output_and_progress(mixed, tmp_path):
    folder, index, _, _, stderr = mixed
    out = run("ask", QUESTIONS["notes.txt"], "--index", str(index)).stdout
    assert out.startswith("Answer: The lighthouse keeper logged forty storms in 1893.\n  (notes.txt, line 1, confidence")
    assert "\n[1] notes.txt, line 1" in out and ">>" in out
    result = run("index", str(folder), "--index", str(tmp_path / "fresh"))
    assert "7 added" in result.stdout and "failed: broken.pdf" in result.stdout
    assert "embedded with " in result.stdout
    # stderr is a pipe here: no progress bars, so a log file gets no carriage returns or cursor codes.
    assert "\r" not in result.stderr and "\x1b[" not in result.stderr


def test_output_into_a_closed_pipe_is_quiet(any_store):
    # `qa ask ... | head -n 1`: the reader is gone before the answer is written.
    _, index, _, _, _ = any_store
    proc = subprocess.Popen([*QA, "ask", QUESTIONS["notes.txt"], "--index", str(index)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    stderr = proc.stderr.read()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr and "Exception ignored" not in stderr


def test_progress_bars_on_a_terminal(mixed, tmp_path):
    import pty

    folder = mixed[0]
    import fcntl
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a terminal 120 wide
    proc = subprocess.Popen([*QA, "index", str(folder), "--index", str(tmp_path / "tty")], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=follower, text=True)
    os.close(follower)
    shown = b""
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        shown += data
    assert proc.wait(timeout=120) == 0
    text = shown.decode("utf-8", "replace")
    assert "reading files" in text and "embedding chunks" in text
    # The last state of the embedding bar: every chunk embedded, out of a total that no longer grows.
    last = re.findall(r"embedding chunks: [^\r\n]*?(\d+)/(\d+)(\+?)", text)[-1]
    assert last[0] == last[1] and last[2] == ""


@pytest.mark.parametrize("args,message", [
    (["index", "/no/such/folder"], "does not exist"),
    (["ask", "anything", "--index", "/no/such/index"], "no index"),
    (["ask", "   ", "--index", "{index}"], "empty"),
    (["ask", "anything", "--store", "postgresql://postgres@127.0.0.1:1/postgres"], "cannot connect"),
    (["index", "--store", "mysql://x"], "unknown store"),
])
def test_errors_are_one_line_and_nonzero(any_store, args, message):
    _, index, _, _, _ = any_store
    result = run(*[a.format(index=index) for a in args], check=False)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]


def test_empty_corpus_error(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run("index", str(tmp_path / "empty"), "--index", str(tmp_path / "i"), check=False)
    assert result.returncode == 2 and "no documents" in result.stderr
