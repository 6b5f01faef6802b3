"""The answer: the learned sentence scorer, the byline rule, the confidence, and the answer in the API and CLI."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from qa.answering import CONFIDENCE_FEATURES, MODEL_FILE, SENTENCE_FEATURES, AnswerModel, content_terms, load_model
from qa.errors import ModelError
from qa.records import Chunk
from qa.retrieval import _highlight
from qa.rules import asks_author, byline, defined, definition, expanded, expansion
from qa.shapes import is_heading, question_kind

PARAMS = {"stemmer": "english", "stopwords": "en"}


@pytest.mark.parametrize("line, heading", [
    ("Net Cash Income\t72,270\t73,600", False), ("Income Tax (€4,000@40%*)\t1,600\t0", False),  # data rows
    ("2006\t2007", True), ("Name\tAge", True), ("Q1 2020\tQ2 2020", True),  # rows that head a table
    ("Eddie", True), ("Results and discussion", True), ("He will gain €825 from the Budget.", False),
])
def test_a_table_row_of_figures_is_not_a_heading(line, heading):
    # A heading's logit is pushed below every sentence's: the row holding the figure asked for must not be.
    assert is_heading(line) is heading


@pytest.mark.parametrize("question, kind", [
    ("How many cases of Japanese FDI went to Taiwan?", "count"), ("How much has Taiwan invested?", "amount"),
    ("When was the council founded?", "date"), ("In what year did it open?", "date"),
    ("Who painted the Mona Lisa?", "person"), ("Where is TAITRA based?", "place"),
    ("What does TAITRA stand for?", "other"),
])
def test_question_kind(question, kind):
    assert question_kind(question) == kind


@pytest.mark.parametrize("text, start, expected", [
    ("A message from Chiu Hui-Li, Executive Director, Market Development Department", 56, "A message from"),
    ("Mohammad Chuttur", 120, "Mohammad Chuttur"),
    ("Andreas Gal∗+, Brendan Eich∗\n, Mike Shaver∗", 70, "Andreas Gal∗+, Brendan Eich∗"),
    ("By Jane Doe", 40, "By Jane Doe"),
    ("By Jane Doe", 0, None),  # the document's title line
    # an infobox: the author's label, not the "License Apache" line of two capitalised words below it
    ("PDF.js\nOriginal author(s) Andreas Gal\nDeveloper(s) Mozilla\nLicense Apache\nLicense 2.0", 0,
     "Original author(s) Andreas Gal"),
    # a title, then the author's line, then the affiliation, all one "sentence" of a PDF's first page
    ("Overview of the Technology Acceptance Model\nMohammad Chuttur\nIndiana University, USA", 0, "Mohammad Chuttur"),
    ("From the section US & Canada", 60, None),  # a news site's menu, not an author
    ("Indiana University, USA", 140, None),
    ("Developments and Future Directions", 100, None),
    ("Mohammad Chuttur", 0, None),  # the document's title line
    ("Mohammad Chuttur", 5000, None),  # far from the start: a name in the text, not a byline
])
def test_byline(text, start, expected):
    span = byline(text, start)
    if expected is None:
        assert span is None
    else:
        assert span is not None and text[span[0] - start : span[1] - start].startswith(expected)


@pytest.mark.parametrize("question, short", [("What does TAITRA stand for?", "TAITRA"),
                                             ("What does `mpsc` stand for in Rust?", "mpsc"),
                                             ("What is the capital of France?", None)])
def test_abbreviation_questions(question, short):
    assert expanded(question) == short


def test_expansion_finds_the_spelled_out_name():
    text = "A message from Chiu Hui-Li, The Taiwan External Trade Development Council (TAITRA)"
    assert expansion(text, 40, "TAITRA") == (40, 40 + len(text))
    assert expansion("`mpsc` stands for _multiple producer, single consumer_.", 0, "mpsc")
    assert expansion("TAITRA handles supply chain cooperation.", 0, "TAITRA") is None


def test_author_questions_and_content_terms():
    assert asks_author("Who wrote this message?") and asks_author("Who is the author?")
    assert not asks_author("Who won the 2018 World Cup?")
    assert content_terms(["who", "wrote", "messag", "doe", "stand"], PARAMS) == ("wrote", "messag", "stand")


def test_shipped_model_loads_and_names_its_features():
    model = load_model()
    assert model.sentence.names == SENTENCE_FEATURES and model.confidence.names == CONFIDENCE_FEATURES
    assert model.about.get("made_by"), "the model file says which command made it"
    assert set(model.passage_weights) == {"question", "statement"}
    assert all(0 <= c and 0 <= p and c + p <= 1 and t > 0 for c, p, t in model.passage_weights.values())


def test_passage_score_keeps_two_confident_sentences_apart():
    # At temperature 1 the probabilities of logits 3.9 and 5.2 differ by 0.015, less than a small fused gap;
    # at 3 they differ by 0.07: the passage whose sentence answers clearly comes first.
    model = load_model()
    cold = dataclasses.replace(model, passage_weights={"question": (0.3, 0.3, 1.0), "statement": (0.3, 0.0, 1.0)})
    warm = dataclasses.replace(model, passage_weights={"question": (0.3, 0.3, 3.0), "statement": (0.3, 0.0, 1.0)})
    first, second = (0.80, 0.5, 3.9), (0.76, 0.5, 5.2)  # (fused, cosine, best logit)
    assert cold.passage_score("question", *first) > cold.passage_score("question", *second)
    assert warm.passage_score("question", *first) < warm.passage_score("question", *second)
    assert warm.passage_score("question", 0.5, 0.5, -1e6) == pytest.approx(0.4 * 0.5 + 0.3 * 0.5)  # no overflow


def test_a_model_file_of_weight_pairs_takes_its_probability_at_temperature_one():
    data = json.loads(MODEL_FILE.read_text(encoding="utf-8"))
    data["passage_weights"] = {"question": [0.3, 0.3], "statement": [0.3, 0.0]}
    data.pop("short_pair")
    model = AnswerModel.from_dict(data)
    assert model.passage_weights["question"] == (0.3, 0.3, 1.0) and model.short_pair == (0.0, 0)


@pytest.mark.parametrize("damage", ["names", "weights", "scale", "temperature", "json"])
def test_a_damaged_model_file_is_refused(tmp_path, damage):
    data = json.loads(MODEL_FILE.read_text(encoding="utf-8"))
    if damage == "names":
        data["sentence"]["names"] = data["sentence"]["names"][::-1]
    elif damage == "weights":
        data["confidence"]["weights"] = data["confidence"]["weights"][:-1]
    elif damage == "scale":
        data["sentence"]["scale"][0] = 0.0
    elif damage == "temperature":
        data["passage_weights"]["question"][2] = 0.0
    path = tmp_path / "model.json"
    path.write_text("{" if damage == "json" else json.dumps(data), encoding="utf-8")
    with pytest.raises(ModelError, match="reinstall"):
        load_model.__wrapped__(path)


def test_model_round_trips_through_its_file(tmp_path):
    model = load_model()
    again = AnswerModel.from_dict(json.loads(json.dumps(model.to_dict())))
    x = np.linspace(-1, 1, len(SENTENCE_FEATURES))[None, :]
    assert np.allclose(again.sentence.logits(x), model.sentence.logits(x), atol=1e-5)
    assert (again.pair_margin, again.short_pair) == (model.pair_margin, model.short_pair)


def _chunk(sentences: list[str]) -> Chunk:
    text = " ".join(sentences)
    spans, at = [], 0
    for s in sentences:
        spans.append((at, at + len(s)))
        at += len(s) + 1
    return Chunk("c", "doc.txt", 0, len(text), text, None, 1, tuple(spans))


@pytest.mark.parametrize("gap, long_words, joined", [
    (0.5, False, True), (0.5, True, True),  # within the margin: joined whatever their length
    (2.5, False, True),  # two short sentences further apart still read as one answer
    (2.5, True, False),  # two long ones do not: the highlight stays short
    (3.5, False, False),
])
def test_highlight_joins_a_neighbour_by_gap_and_length(gap, long_words, joined):
    model = dataclasses.replace(load_model(), pair_margin=1.0, short_pair=(3.0, 35))
    filler = " and it goes on about other things" * 4 if long_words else ""
    chunk = _chunk(["Patrick is single, employed as a waiter and earning 8.65 an hour" + filler + ".",
                    "He will gain 825 from the Budget" + filler + ".", "Mary is a teacher."])
    span = _highlight(chunk, np.array([6.0, 6.0 - gap, -3.0]), 0, model)
    assert span == ((chunk.sentences[0][0], chunk.sentences[1][1]) if joined else chunk.sentences[0])


def test_abbreviation_question_is_answered_by_its_expansion(seed_retriever):
    answer = seed_retriever.ask("What does TAITRA stand for?")
    assert "Taiwan External Trade Development Council (TAITRA)" in answer.answer.text


@pytest.mark.parametrize("question", ["Who wrote this message?", "Who is the author?",
                                      "Who wrote the message about Japan-Taiwan relations?"])
def test_author_questions_are_answered_by_the_byline(seed_retriever, question):
    answer = seed_retriever.ask(question)
    assert answer.answer is not None, "the article names its author on line 3"
    assert "Chiu Hui-Li" in answer.answer.text
    assert answer.passages[0].highlighted_text == answer.answer.text


@pytest.mark.parametrize("question, expected, within", [
    # A near tie on every backend (fused 0.820 against 0.819 on torch and OpenVINO fp32): the passage with the
    # amount comes second, behind one on Japan and Taiwan's investment ties (issue #13 is open on such misses).
    ("How much has Japan invested in Taiwan?", "48.7 billion", 2),
    ("What was the bilateral trade volume between Japan and Taiwan in 2020?", "71.18 billion", 1),
    # Two confident sentences (logits 5.2 and 3.9) in passages whose fused scores differ by 0.04: the highlight's
    # probability at temperature 3 puts the one that answers first (at 1 both are near 1 and it came second).
    ("In which industries do Taiwanese manufacturers cooperate with Japan?", "semiconductors", 1),
])
def test_the_answer_sentence_holds_the_amount(seed_retriever, question, expected, within):
    answer = seed_retriever.ask(question)
    highlights = [p.highlighted_text for p in answer.passages[:within]]
    assert answer.answer.text == highlights[0]
    assert any(expected in h for h in highlights)


def test_answer_is_quoted_exactly_with_its_place(seed_retriever, seed_index):
    answer = seed_retriever.ask("How many cases of Japanese FDI went to Taiwan?")
    quote, top = answer.answer, answer.passages[0]
    text = seed_retriever.data.document_text(quote.source)
    assert text[quote.start : quote.end] == quote.text == top.highlighted_text
    assert top.start <= quote.start < quote.end <= top.end
    assert quote.line == text.count("\n", 0, quote.start) + 1  # a text file: lines from the document's start
    assert 0.5 <= answer.confidence <= 1.0


def test_refused_question_has_no_answer_and_a_low_confidence(seed_retriever):
    answer = seed_retriever.ask("What is the recipe for banana bread?")
    assert answer.answer is None and answer.passages == ()
    assert 0.0 <= answer.confidence < 0.5


def test_cli_json_carries_the_answer_and_confidence(seed_index):
    out = subprocess.run([sys.executable, "-m", "qa", "ask", "--index", str(seed_index), "--json",
                          "How much has Taiwan invested directly in Japan?"], capture_output=True, text=True,
                         cwd=ROOT, timeout=300, check=True).stdout
    data = json.loads(out)
    assert "9.22 billion" in data["answer"]["text"]
    assert data["answer"]["source"] == data["passages"][0]["source"]
    assert 0.5 <= data["confidence"] <= 1
    plain = subprocess.run([sys.executable, "-m", "qa", "ask", "--index", str(seed_index),
                            "How much has Taiwan invested directly in Japan?"], capture_output=True, text=True,
                           cwd=ROOT, timeout=300, check=True).stdout
    assert plain.startswith("Answer: Meanwhile, Taiwan has made over US$ 9.22 billion")


def test_sentence_terms_are_the_index_tokenizers_the_second_time_too():
    # The answer model's words are BM25's terms (stemmed once per process and kept): the same on every call.
    from qa.answering import words
    from qa.index.keyword import bm25_tokenize

    params = {"stemmer": "english", "stopwords": "en"}
    texts = ["The fishermen were counting their nets twice.", "Running heads and footers", "", "an of the"]
    expected = bm25_tokenize(texts, params)
    assert words(texts, params) == expected and words(list(reversed(texts)), params) == expected[::-1]
    assert expected[0] == ["fishermen", "were", "count", "net", "twice"]  # bm25s keeps "were"


_PEOPLE = {"Patrick": (17542, 18441), "Siobhan": (41200, 42480), "Eddie": (72270, 73600), "Mary": (21042, 22140),
           "John": (50310, 51250)}


def _budget_report(path) -> None:
    """A Word report in the shape of a real one: each household's name on a line of its own, a sentence about
    them, then a table whose rows never name them again."""
    from conftest import make_docx

    paragraphs = ["Illustrative cases", "These cases show what the budget means for a few households."]
    for n, (name, (before, after)) in enumerate(_PEOPLE.items()):
        paragraphs += [name, f"{name} works in the town and pays tax at the standard rate. Their income is "
                             "set out below for both years.", "2006\t2007"]
        paragraphs += [f"{label}\t{1000 * (n + 2) + 37 * i:,}\t{1100 * (n + 2) + 41 * i:,}" for i, label in
                       enumerate(["Gross Income", "Standard Rate Band", "Income Tax liability", "Less Tax Credits",
                                  "Total Income Tax Due", "PRSI", "Levies", "Total Liability"])]
        paragraphs.append(f"Net Cash Income\t{before:,}\t{after:,}")
    make_docx(path, paragraphs)


@pytest.mark.parametrize("heading_context", [True, False])
def test_a_table_is_found_by_the_heading_of_its_section(tmp_path, settings, heading_context):
    from qa.api import Retriever, build_index

    (tmp_path / "docs").mkdir()
    _budget_report(tmp_path / "docs" / "cases.docx")
    chosen = settings.with_(index_dir=tmp_path / "idx", chunk_tokens=64, overlap_tokens=8,
                            heading_context=heading_context)
    build_index([tmp_path / "docs"], settings=chosen)
    retriever = Retriever(chosen.index_dir, settings=chosen)
    found = 0
    for name, (_, after) in _PEOPLE.items():
        passages = retriever.retrieve(f"What is {name}'s net cash income in 2007?", k=1)
        found += bool(passages) and f"{after:,}" in passages[0].text
    # With the heading carried, the tables are found by the household's name (the first household's opening chunk,
    # which names it twice, may still win); without it, by luck at most (0 of 5 when this was written).
    assert found >= len(_PEOPLE) - 1 if heading_context else found <= 1


@pytest.mark.parametrize("question,term", [
    ("What is a topological space?", "topological space"), ("Was ist ein topologischer Raum?", "topologischer Raum"),
    ("Who is Andreas Gal?", "Andreas Gal"), ("What are hash tables", "hash tables"),
    ("What is the OMB number of the 2010 Form 1040?", None),  # a number asked for, in too many words
    ("Why is the sky blue?", None), ("What does mpsc stand for?", None),
])
def test_definition_questions(question, term):
    assert defined(question) == term


@pytest.mark.parametrize("text,found", [
    ("A topological space (X, T) is a set X with a family T of subsets.", 0),
    ("Topological spaces are sets with a topology.", None),  # not the term asked ("topological space")
    ("1.1 Topologische Räume\nDefinition 1\nEin topologischer Raum ist ein Paar (X, T).", 36),
    ("Every metric space is also a topological space.", None),  # the term, but not defined here
])
def test_definition_sentence(text, found):
    term = "topologischer Raum" if "Raum" in text else "topological space"
    span = definition(text, 100, term)
    assert (span is None) if found is None else span == (100 + found, 100 + len(text))


def test_a_definition_question_is_answered_by_the_definition(tmp_path, settings):
    """The passage that defines the term comes first, with the definition highlighted, even where passages that
    only use the term rank above it; in a PDF-like layout its headings run into the sentence."""
    from qa.api import Retriever, build_index

    docs = tmp_path / "docs"
    docs.mkdir()
    uses = " ".join(f"Lemma {i}. Every compact topological space in example {i} is a topological space whose "
                    f"open cover has a finite subcover, as a topological space should." for i in range(6))
    (docs / "lemmas.txt").write_text("Topological space lemmas\n\n" + uses, encoding="utf-8")
    (docs / "notes.txt").write_text(
        "Lecture notes\n\nChapter 1\n1.1 Basic notions\nDefinition 1\nA topological space is a pair (X, T) of a "
        "set X and a family T of its subsets, closed under unions and finite intersections.\n\nThe exercises "
        "follow at the end of the chapter.", encoding="utf-8")
    chosen = settings.with_(index_dir=tmp_path / "idx")
    build_index([docs], settings=chosen)
    answer = Retriever(chosen.index_dir, settings=chosen).ask("What is a topological space?")
    assert answer.answer is not None and answer.answer.text.startswith("A topological space is a pair")
    assert answer.passages[0].source == "notes.txt"


@pytest.mark.parametrize("sentences, best, last", [
    # A sentence that announces a list with a colon is highlighted with the items that follow it.
    (["First, the rules.", "Keep these rules in mind:", "- Each value has an owner.", "- One owner at a time.",
      "- The value is dropped with its owner.", "Now the examples."], 1, 4),
    (["The steps are:", "1. Unplug it.", "2) Wait ten seconds.", "Then it restarts."], 0, 2),
    # No colon, or no list after it: the sentence alone.
    (["Keep these rules in mind.", "- Each value has an owner."], 0, 0),
    (["He said:", "We will win."], 0, 0),
    # A list too long to read as one answer stops at 120 words.
    (["The items:"] + [f"- item {n} " + "word " * 30 for n in range(6)], 0, 3),
])
def test_a_highlight_that_announces_a_list_takes_its_items(sentences, best, last):
    model = dataclasses.replace(load_model(), pair_margin=0.0, short_pair=(0.0, 0))
    chunk = _chunk(sentences)
    logits = np.full(len(sentences), -5.0)
    logits[best] = 5.0
    assert _highlight(chunk, logits, best, model) == (chunk.sentences[best][0], chunk.sentences[last][1])


def test_a_list_answer_keeps_one_line_per_item_in_the_terminal_and_the_chat():
    from qa.citations import to_plain
    from qa.records import Passage, Quote
    from qa.reply import _html_text

    text = ("Keep these rules in mind as we\nwork through the examples:\n\n- Each value has an owner.\n"
            "- There can only be one owner\n  at a time.\n1. Then the value is dropped.")
    quote = Quote(text, "own.md", 0, len(text), None, 1)
    passage = Passage("own.md", None, 1, 0, len(text), text, 0.9, (0, len(text)))
    lines = to_plain([passage], "What are the rules?", quote, 0.9).splitlines()
    assert lines[:4] == ["Answer: Keep these rules in mind as we work through the examples:",
                         "  - Each value has an owner.", "  - There can only be one owner at a time.",
                         "  1. Then the value is dropped."]
    shown = _html_text(text)
    assert shown.count("<br>") == 3 and "\n" not in shown and "as we work through" in shown
