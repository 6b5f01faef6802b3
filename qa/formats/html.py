"""HTML to text: the page's main content (trafilatura) with its title and figure captions, or all visible text."""
from __future__ import annotations

import re

from qa.formats.text import check_text, normalise

VERSION = "trafilatura-2"
# Block-level tags get line breaks around them so that their text does not run together.
_BLOCK_TAGS = (
    "p", "div", "li", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "table", "section",
    "article", "header", "footer", "blockquote", "pre", "dd", "dt", "dl", "title", "figcaption", "hr", "main",
    "aside", "nav", "td", "th",
)
_INVISIBLE_TAGS = ("script", "style", "noscript", "template", "svg", "iframe", "object", "head")
# Below this share of the visible text, "main content" is more likely a caption than the page: keep everything.
_MIN_SHARE = 0.05
_MIN_CHARS = 200
# Screen-reader labels inside captions ("Media caption"): not shown on the page.
_HIDDEN = re.compile(r"off-?screen|visually-?hidden|sr-only|screen-?reader", re.IGNORECASE)
_MIN_CAPTION, _MIN_PARAGRAPH = 20, 40
_TEASER_TAGS = ("a", "nav", "aside", "header", "footer")


def read_html(markup: str) -> str:
    """The article of a saved web page without its menus, banners and other stories; pages that have no
    article (a list, a form, a short note) keep all their visible text."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(markup, "html.parser")  # parsed once: the captions are read before visible_text edits it
    figures = _figures(soup) if "<figcaption" in markup else []
    visible = visible_text(soup)
    main = _main_content(markup, figures)
    if len(main) >= _MIN_CHARS and len(main) >= _MIN_SHARE * len(visible):
        return check_text(main, "the page")
    return check_text(visible, "the page")


def _main_content(markup: str, figures: list[tuple[str, str]]) -> str:
    import logging

    import trafilatura

    logging.getLogger("trafilatura").setLevel(logging.CRITICAL)  # it logs every page it finds nothing in
    try:
        document = trafilatura.bare_extraction(markup, include_comments=False, include_tables=True,
                                               include_formatting=False, with_metadata=True, deduplicate=True)
    except Exception:  # noqa: BLE001 (a page it cannot parse falls back to its visible text)
        return ""
    if document is None:
        return ""
    text = normalise(document.text or "").strip()
    title = " ".join(normalise(document.title or "").split())
    if not text:
        return ""
    if title and not text.startswith(title):
        text = f"{title}\n{text}"
    # One line per block in trafilatura's text: each becomes its own paragraph, so that a heading is never read
    # as the start of the sentence under it.
    text = re.sub(r"[ \t]*\n+[ \t]*", "\n\n", text)
    return _with_captions(text, figures) if figures else text


def _figures(soup) -> list[tuple[str, str]]:
    """Each figure caption that may be the article's, with the first paragraph after it: not inside a link or
    the page's menus (other stories' teasers), screen-reader labels left out."""
    import copy

    found = []
    for caption in soup.find_all("figcaption"):
        if caption.find_parent(_TEASER_TAGS):  # a link to another story, or the page's menus
            continue
        shown = copy.copy(caption)  # the labels go from a copy: the page's visible text keeps its tree
        for label in shown.find_all(class_=_HIDDEN):
            label.decompose()
        line = " ".join(normalise(shown.get_text(" ")).split())
        if len(line) < _MIN_CAPTION:
            continue
        following = (" ".join(normalise(p.get_text(" ")).split()) for p in caption.find_all_next("p", limit=8))
        found.append((line, next((p for p in following if len(p) >= _MIN_PARAGRAPH), "")))
    return found


def _with_captions(text: str, figures: list[tuple[str, str]]) -> str:
    """The article's figure captions put back where the figures stand (trafilatura drops them, and a news
    photo's caption often says what the story is about in one sentence). A caption belongs to the article when
    the first paragraph after it is in the article."""
    paragraphs = text.split("\n\n")
    squashed = [" ".join(p.split()) for p in paragraphs]
    before: dict[int, list[str]] = {}
    kept: list[str] = []
    for line, first in figures:
        if any(line in k or k in line for k in kept) or any(line in p for p in squashed):
            continue
        at = next((i for i, p in enumerate(squashed) if first and p.startswith(first[:80])), None)
        if at is not None:
            before.setdefault(at, []).append(line)
            kept.append(line)
    if not before:
        return text
    return "\n\n".join(part for i, p in enumerate(paragraphs) for part in (*before.get(i, ()), p))


def visible_text(soup) -> str:
    """Every piece of text a browser would show, block by block (edits the parsed page)."""
    for tag in soup.find_all(_INVISIBLE_TAGS):
        if tag.name == "head":  # keep the title, drop everything else that is not shown
            title = tag.find("title")
            tag.replace_with(f"{title.get_text(' ', strip=True)}\n\n" if title else "")
        else:
            tag.decompose()
    for tag in soup.find_all("br"):
        tag.replace_with("\n")
    for tag in soup.find_all(_BLOCK_TAGS):
        tag.insert_before("\n\n")
        tag.insert_after("\n\n")
    text = normalise(soup.get_text())
    text = re.sub(r"[ \t\u00a0]+", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()
