"""Chunking: exact offsets in every format (property-tested), token limits, overlap, coverage."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from conftest import make_docx, make_pdf
from qa.abbreviations import defined_abbreviations
from qa.chunking import ABBREVIATIONS_MAX_TOKENS, HEADING_MAX_TOKENS, MODEL_MAX_TOKENS, TITLE_MAX_TOKENS, Chunker
from qa.config import Settings
from qa.loaders import load
from qa.sentences import sentence_spans
from qa.records import Document

SETTINGS = Settings()
# Titles, section headings and abbreviations on: the budget code and the headings' offsets are exercised.
CHUNKER = Chunker(SETTINGS.model_path, 48, 12, title_context=True, heading_context=True, abbreviation_context=True)

_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFG0123456789éü-'", min_size=1, max_size=14)
_sentence = st.builds(lambda ws, end: " ".join(ws) + end, st.lists(_word, min_size=1, max_size=30),
                      st.sampled_from([".", "!", "?", "", ":"]))
_paragraph = st.builds(" ".join, st.lists(_sentence, min_size=1, max_size=6))
_document = st.lists(_paragraph, min_size=1, max_size=8)
_unicode_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=3000)


def _check(document: Document, chunker: Chunker = CHUNKER) -> list:
    chunks = chunker.chunk(document)
    for chunk in chunks:
        assert document.text[chunk.start : chunk.end] == chunk.text
        assert chunk.sentences[0][0] == chunk.start and chunk.sentences[-1][1] == chunk.end
        assert chunker.count_tokens([chunk.index_text])[0] <= MODEL_MAX_TOKENS
        # A section heading is context beyond the chunk size (it takes the model's spare room), never more.
        limit = chunker.chunk_tokens + (HEADING_MAX_TOKENS + 1 if chunker.heading_context and chunk.context else 0) \
            + (ABBREVIATIONS_MAX_TOKENS + 1 if chunker.abbreviation_context and chunk.context else 0)
        assert chunker.count_tokens([chunk.index_text])[0] <= limit or len(chunk.sentences) == 1
        assert chunk.page == document.page_at(chunk.start)
    for before, after in zip(chunks, chunks[1:]):
        assert after.start > before.start  # always moves forward
    covered = {span for chunk in chunks for span in chunk.sentences}
    # Every sentence is in some chunk whole, unless it exceeded the budget (chunk size less the title) and was cut.
    smallest_budget = chunker.chunk_tokens - TITLE_MAX_TOKENS - 1
    assert covered == {(s, e) for s, e, _ in sentence_spans(document)} or any(
        chunker.count_tokens([document.text[s:e]])[0] > smallest_budget for s, e, _ in sentence_spans(document))
    return chunks


@hsettings(max_examples=60, deadline=None)
@given(_unicode_text)
def test_offsets_exact_on_arbitrary_text(text):
    _check(Document("x.txt", text))


@hsettings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(paragraphs=_document, fmt=st.sampled_from(["txt", "md", "html", "pdf", "docx"]))
def test_offsets_exact_in_every_format(tmp_path, paragraphs, fmt):
    path = tmp_path / f"doc.{fmt}"
    if fmt in ("txt", "md"):
        path.write_text("\n\n".join(paragraphs), encoding="utf-8")
    elif fmt == "html":
        path.write_text("<html><body>" + "".join(f"<p>{p}</p>" for p in paragraphs) + "</body></html>")
    elif fmt == "pdf":
        make_pdf(path, ["\n\n".join(paragraphs[i : i + 2]) for i in range(0, len(paragraphs), 2)])
    else:
        make_docx(path, paragraphs)
    document = load(path, path.name, path.read_bytes())
    chunks = _check(document)
    assert chunks, "every non-empty document gives chunks"
    if fmt == "pdf":
        pages = (len(paragraphs) + 1) // 2
        assert 1 <= min(c.page for c in chunks) and max(c.page for c in chunks) <= pages
        if pages < 3:  # from three pages on, a line on every page is a running head and is dropped
            assert max(c.page for c in chunks) == pages


def test_chunk_size_respected_and_overlap_present():
    sentences = [f"Sentence number {i} talks about topic {i % 7} in some detail." for i in range(60)]
    doc = Document("s.txt", " ".join(sentences))
    chunks = _check(doc)
    assert len(chunks) > 5
    for chunk in chunks:
        assert CHUNKER.count_tokens([chunk.index_text])[0] <= 48
    overlaps = [b.start < a.end for a, b in zip(chunks, chunks[1:])]
    assert all(overlaps), "consecutive chunks share trailing sentences"


def test_sentence_longer_than_chunk_is_split_not_truncated():
    long_sentence = " ".join(f"word{i}" for i in range(400)) + "."
    doc = Document("l.txt", "Short intro. " + long_sentence + " Short outro.")
    chunks = _check(doc)
    assert all(CHUNKER.count_tokens([c.index_text])[0] <= 48 for c in chunks)
    joined = "".join(doc.text[s:e] for c in chunks for s, e in c.sentences)
    assert "word0" in joined and "word399" in joined


def test_pages_never_share_a_chunk():
    text = "Page one sentence.\n\nPage two sentence."
    doc = Document("p.pdf", text, (0, text.index("Page two")))
    chunks = _check(doc)
    assert [c.page for c in chunks] == [1, 2]


def test_ids_are_stable_and_distinct():
    doc = Document("s.txt", " ".join(f"Fact {i} is here." for i in range(100)))
    first, second = CHUNKER.chunk(doc), CHUNKER.chunk(doc)
    assert [c.id for c in first] == [c.id for c in second]
    assert len({c.id for c in first}) == len(first)


def test_default_settings_fit_the_model():
    chunker = Chunker(SETTINGS.model_path, SETTINGS.chunk_tokens, SETTINGS.overlap_tokens)
    doc = Document("r.txt", " ".join(f"Repeated sentence {i} with several more words in it." for i in range(300)))
    assert all(chunker.count_tokens([c.index_text])[0] <= SETTINGS.chunk_tokens for c in chunker.chunk(doc))


def test_title_travels_with_every_chunk_but_is_never_part_of_the_text():
    doc = Document("t.md", "# Owl migration survey\n\n" + " ".join(f"Owl {i} flew north in spring." for i in range(80)))
    chunks = CHUNKER.chunk(doc)
    assert chunks[0].context == "" and chunks[0].text.startswith("# Owl migration survey")
    assert all(c.context == "Owl migration survey" for c in chunks[1:])
    assert all(doc.text[c.start : c.end] == c.text and "Owl migration survey" not in c.text for c in chunks[1:])
    # The spans the model pools sentence vectors from are the same sentences, inside the text it is given.
    assert all([c.index_text[a:b] for a, b in c.index_sentences] == c.sentence_texts for c in chunks)
    assert CHUNKER.chunk(Document("s.txt", "A sentence that ends.\n\nAnother one.")) [0].context == ""


def _sections(*names: str, rows: int = 12) -> str:
    """A report whose sections each hold a table long enough to fill chunks of their own."""
    parts = ["Budget illustrative cases", "These cases show what the budget means for a few households."]
    for name in names:
        parts += [name, f"{name.lstrip('# ')} is single and earns a salary.",
                  *(f"Line item {i}\t{1000 + i * 7:,}\t{1200 + i * 9:,}" for i in range(rows))]
    return "\n\n".join(parts)


def test_a_section_heading_travels_with_the_chunks_of_its_section():
    doc = Document("cases.docx", _sections("Eddie", "## Mary Smith"))
    chunks = CHUNKER.chunk(doc)
    eddie, mary = doc.text.index("Eddie"), doc.text.index("## Mary Smith")
    for chunk in chunks:
        heading = "Mary Smith" if chunk.start >= mary else "Eddie" if chunk.start >= eddie else ""
        in_text = heading in chunk.text
        assert chunk.context == "\n".join(c for c in ("Budget illustrative cases", heading if not in_text else "")
                                          if c and c not in chunk.text), chunk.text[:40]
    assert sum("\nEddie" in c.context for c in chunks) >= 1 and sum("Mary Smith" in c.context for c in chunks) >= 1
    _check(doc)


def test_a_section_starts_a_chunk_once_the_chunk_before_is_mostly_full():
    # Without the break, Mary's opening sentence sat at the tail of Eddie's last chunk, away from her table: a
    # question about her figures found Eddie's (issue #12, the Illustrative Cases document).
    doc = Document("cases.docx", _sections("Eddie", "## Mary Smith"))
    chunks = CHUNKER.chunk(doc)
    plain = Chunker(SETTINGS.model_path, 48, 12, title_context=True).chunk(doc)  # no headings to go by
    opening = doc.text.index("Mary Smith is single")
    assert not any(c.start == opening for c in plain)  # the document is made so that the break matters
    [mary] = [c for c in chunks if c.start == opening]
    assert "Line item 0" in mary.text  # her table, with the sentence that names her
    assert mary.context == "Budget illustrative cases"  # the heading is not repeated: her name opens the text
    before = chunks[chunks.index(mary) - 1]
    # The heading line closes the chunk before it, with no overlap back into Eddie's section.
    assert before.text.endswith("## Mary Smith") and before.end < opening
    assert all(c.end <= before.end for c in chunks[: chunks.index(mary)])
    _check(doc)


@pytest.mark.parametrize("line", [
    "- a list item", "Next, the figures:", "Total\t1,200\t1,300", "2006", "<b>bold</b>", "x = 1",
    "Day          Month          Year", "Signature ____________",
    "This line ends a sentence.",
])
def test_lines_that_are_not_headings_give_no_context(line):
    doc = Document("n.txt", "Report title\n\n" + line + "\n\n" + " ".join(f"Fact {i} holds." for i in range(40)))
    assert all("\n" not in c.context and c.context in ("", "Report title") for c in CHUNKER.chunk(doc))


def test_headings_are_not_guessed_in_pdfs_or_from_repeated_lines():
    text = _sections("Eddie", "Mary")
    pdf = Document("cases.pdf", text, (0, text.index("Mary\n")))
    assert all("Eddie" not in c.context for c in CHUNKER.chunk(pdf))
    repeated = text.replace("Line item 3", "Eddie\n\nLine item 3")  # "Eddie" twice: furniture, not a section
    assert all("Eddie" not in c.context for c in CHUNKER.chunk(Document("r.txt", repeated)))


def test_a_streamed_text_carries_its_heading_into_the_next_block():
    text = _sections("Eddie")
    cut = text.index("Line item 9")
    blocks = list(CHUNKER.chunk_stream("big.txt", [text[:cut], text[cut:]]))
    assert blocks[1] and all(c.context.endswith("\nEddie") for c in blocks[1])


def test_a_long_title_is_not_taken_for_a_section_heading():
    title = "Defective replication stress response inhibits lymphomagenesis and impairs lymphocyte reconstitution"
    doc = Document("t.txt", title + "\n\n" + " ".join(f"Finding {i} was replicated in mice." for i in range(60)))
    chunks = CHUNKER.chunk(doc)
    assert len(chunks) > 2 and all("\n" not in c.context for c in chunks)  # the (cut) title once, no heading


def test_no_heading_context_where_the_model_has_no_room_for_it():
    wide = Chunker(SETTINGS.model_path, MODEL_MAX_TOKENS - 1, 12, title_context=True, heading_context=True,
                   abbreviation_context=True)
    doc = Document("w.txt", _sections("Eddie", "Mary", rows=80))
    chunks = wide.chunk(doc)
    assert len(chunks) > 2 and all("Eddie" not in c.context and "Mary" not in c.context for c in chunks)
    text = _abbreviated() * 8
    streamed = [c for block in wide.chunk_stream("w.txt", [text[: len(text) // 2], text[len(text) // 2 :]])
                for c in block]
    assert len(streamed) > 2 and all("PC:" not in c.context for c in streamed)
    assert all(wide.count_tokens([c.index_text])[0] <= MODEL_MAX_TOKENS for c in streamed + chunks)


@pytest.mark.parametrize("text,expected", [
    ("the probability of causation (PC) exceeds", {"PC": "probability of causation"}),
    ("exposure to polychlorinated biphenyls (PCBs) and the aryl hydrocarbon receptor (AhR)",
     {"PCBs": "polychlorinated biphenyls", "AhR": "aryl hydrocarbon receptor"}),
    ("the Hypertext Transfer Protocol (HTTP) is", {"HTTP": "Hypertext Transfer Protocol"}),
    ("risk in Denmark (Denmark) and the results (NS)", {}),  # one capital; no word before starts with "n"
    ("the weight (kg) and the figure (A)", {}),
])
def test_abbreviations_a_document_defines(text, expected):
    assert defined_abbreviations(text) == expected


def _abbreviated() -> str:
    sentences = [f"Study {i} measured how often the PC stayed above the threshold." for i in range(40)]
    return ("Causation report\n\nThe probability of causation (PC) is the share of cases due to the exposure. "
            + " ".join(sentences))


def test_an_abbreviation_is_spelled_out_where_a_chunk_uses_it_without_its_definition():
    doc = Document("pc.txt", _abbreviated())
    chunks = _check(doc)
    assert len(chunks) > 3 and "(PC)" in chunks[0].text and "probability of causation" not in chunks[0].context
    assert all(c.context.endswith("PC: probability of causation") for c in chunks[1:] if "(PC)" not in c.text)
    plain = Chunker(SETTINGS.model_path, 48, 12, title_context=True, heading_context=True).chunk(doc)
    assert [(c.start, c.end) for c in chunks] == [(c.start, c.end) for c in plain]  # nothing moves
    assert all("PC:" not in c.context for c in plain)


def test_a_streamed_text_spells_out_what_an_earlier_block_defined():
    text = _abbreviated()
    cut = text.index("Study 20")
    blocks = list(CHUNKER.chunk_stream("big.txt", [text[:cut], text[cut:]]))
    assert blocks[1] and all(c.context.endswith("PC: probability of causation") for c in blocks[1])


def test_bad_chunk_settings():
    with pytest.raises(ValueError):
        Chunker(SETTINGS.model_path, 400, 10)
    with pytest.raises(ValueError):
        Chunker(SETTINGS.model_path, 64, 64)
