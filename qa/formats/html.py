"""HTML to text: the page's main content (trafilatura) with its title, or all visible text when it finds none."""
from __future__ import annotations

import re

from qa.formats.text import check_text, normalise

VERSION = "trafilatura-1"
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


def read_html(markup: str) -> str:
    """The article of a saved web page without its menus, banners and other stories; pages that have no
    article (a list, a form, a short note) keep all their visible text."""
    visible = visible_text(markup)
    main = _main_content(markup)
    if len(main) >= _MIN_CHARS and len(main) >= _MIN_SHARE * len(visible):
        return check_text(main, "the page")
    return check_text(visible, "the page")


def _main_content(markup: str) -> str:
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
    return re.sub(r"[ \t]*\n+[ \t]*", "\n\n", text)


def visible_text(markup: str) -> str:
    """Every piece of text a browser would show, block by block."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(markup, "html.parser")
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
