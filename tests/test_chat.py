"""Chat logic without a server: follow-up rewriting, escaping, upload names and storage."""
from __future__ import annotations

import pytest

from qa.chat import UploadError, follow_up_query, remove_document, safe_name, save_upload

PREVIOUS = "How much did Japan invest in Taiwan?"


@pytest.mark.parametrize("question,expected", [
    ("what about in 2020?", f"{PREVIOUS} in 2020?"),
    ("and in 2020?", f"{PREVIOUS} in 2020?"),
    ("in 2020?", f"{PREVIOUS} in 2020?"),
    ("how much did it invest?", f"{PREVIOUS} how much did it invest?"),
    ("and how much did Taiwan invest in Japan?", "how much did Taiwan invest in Japan?"),
    ("What is the recipe for banana bread?", "What is the recipe for banana bread?"),
])
def test_follow_up_query(question, expected):
    assert follow_up_query(question, PREVIOUS) == expected


def test_first_question_is_never_rewritten():
    assert follow_up_query("and in 2020?", None) == "and in 2020?"


def test_follow_up_answers_from_the_conversation(seed_retriever):
    from qa.chat import ask

    first = ask(seed_retriever, "What was the bilateral trade volume in 2020?", None, 3, "hybrid")
    follow = ask(seed_retriever, "and how much did Taiwan invest in Japan?", first.asked, 3, "hybrid")
    assert follow.searched == "how much did Taiwan invest in Japan?"  # a full question: searched on its own
    assert any("9.22 billion" in p.highlighted_text for p in follow.answer.passages)
    thin = ask(seed_retriever, "what about Japanese FDI cases?", first.asked, 3, "hybrid")
    assert "33,023" in thin.answer.passages[0].text
    off = ask(seed_retriever, "What is the recipe for banana bread?", first.asked, 3, "hybrid")
    assert off.answer.passages == () and off.answer.answer is None
    closest = ask(seed_retriever, "What is the recipe for banana bread?", None, 3, "hybrid", closest=True)
    assert closest.answer.passages and closest.answer.low_confidence and closest.answer.answer is None


def test_follow_ups_do_not_snowball(seed_retriever):
    from qa.chat import ask

    questions = ["What is the meal allowance in Tokyo?", "Who wrote this message?", "Who is the author of it?"]
    turns, previous = [], None
    for question in questions:
        turns.append(ask(seed_retriever, question, previous, 3, "hybrid"))
        previous = question  # what was typed, as the web chat passes it
    assert turns[2].searched == "Who wrote this message? Who is the author of it?"  # the previous question only
    literal = ask(seed_retriever, questions[2], questions[1], 3, "hybrid", literal=True)
    assert literal.searched == questions[2]


def test_example_questions_come_from_the_documents_and_are_answered(seed_retriever):
    from qa.chat import example_questions, loaded_line

    examples = example_questions(seed_retriever.data)
    assert len(examples) == 3
    text = seed_retriever.data.document_text("japan-taiwan-relations-taitra.txt")
    for question in examples:
        topic = question.removeprefix("What does the document say about ").removesuffix("?")
        assert topic in text
        assert seed_retriever.ask(question).answer is not None, question
    assert loaded_line(seed_retriever.data) == "1 document loaded: japan-taiwan-relations-taitra.txt"


@pytest.mark.parametrize("name,expected", [
    ("report.pdf", "report.pdf"),
    ("../../etc/passwd.txt", "passwd.txt"),
    ("/absolute/path/Notes.MD", "Notes.md"),
    ("Field Report (final).pdf", "Field_Report_final.pdf"),
    ("C:\\Users\\me\\memo.docx", "memo.docx"),
    ("nul\x00byte.txt", "nulbyte.txt"),
    ("<script>alert(1)</script>.html", "script.html"),
    ("x" * 500 + ".txt", "x" * 100 + ".txt"),
    (".txt", "document.txt"),
])
def test_safe_name(name, expected):
    assert safe_name(name) == expected


@pytest.mark.parametrize("name", ["run.sh", "image.png", "..", "passwd", "archive.tar.gz", "x.pdf.exe"])
def test_refused_types(name):
    with pytest.raises(UploadError, match="not a supported type"):
        safe_name(name)


def test_save_upload_never_overwrites_and_stays_inside(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("original")
    upload = tmp_path / "upload"
    upload.write_text("new text")
    saved = save_upload(upload, "../a.txt", corpus, 1000)
    assert saved == (corpus / "a-1.txt").resolve() and (corpus / "a.txt").read_text() == "original"
    assert save_upload(upload, "a.txt", corpus, 1000) == saved  # same content again: no duplicate
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["a-1.txt", "a.txt", "upload"]
    with pytest.raises(UploadError, match="limit"):
        save_upload(upload, "big.txt", corpus, 3)


def test_remove_document_only_inside_corpus(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("x")
    (tmp_path / "outside.txt").write_text("keep")
    with pytest.raises(UploadError):
        remove_document("../outside.txt", corpus)
    assert (tmp_path / "outside.txt").exists()
    remove_document("a.txt", corpus)
    assert not (corpus / "a.txt").exists()


def test_set_aside_keeps_the_file_and_put_back_restores_it(tmp_path):
    from qa.chat import SET_ASIDE, put_back, set_aside, set_aside_sources

    corpus = tmp_path / "corpus"
    (corpus / "sub").mkdir(parents=True)
    (corpus / "sub" / "a.txt").write_text("alpha", encoding="utf-8")
    set_aside("sub/a.txt", corpus)
    assert not (corpus / "sub" / "a.txt").exists()
    assert (corpus / SET_ASIDE / "sub" / "a.txt").read_text(encoding="utf-8") == "alpha"
    assert set_aside_sources(corpus) == ["sub/a.txt"]
    with pytest.raises(UploadError):
        set_aside("../outside.txt", corpus)
    put_back("sub/a.txt", corpus)
    assert (corpus / "sub" / "a.txt").is_file() and set_aside_sources(corpus) == []
    set_aside("sub/a.txt", corpus)
    remove_document("sub/a.txt", corpus)  # deleting works on a set-aside file too
    assert set_aside_sources(corpus) == [] and not (corpus / "sub" / "a.txt").exists()
