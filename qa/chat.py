"""Chat logic behind the web page, free of gradio: follow-ups, safe HTML answers, uploads into the corpus."""
from __future__ import annotations

import html
import re
import shutil
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from qa.api import Answer, Retriever
from qa.citations import highlighted_html, where
from qa.errors import QAError
from qa.loaders import SUPPORTED_EXTENSIONS, file_sha256
from qa.records import Passage

NOT_FOUND = "I could not find anything about this in the documents."
_FOLLOW_UP = re.compile(r"^\s*(?:and|but|also|so|then|ok(?:ay)?|what about|how about|and what about|"
                        r"and how about|same for|what of)\b[\s,]*", re.IGNORECASE)
_PRONOUNS = {"it", "its", "they", "them", "their", "this", "that", "these", "those", "there", "he", "she", "his",
             "her", "then"}
# Words that carry no topic of their own: a follow-up made only of these (plus a year or a name) needs context.
_FUNCTION_WORDS = _PRONOUNS | set(
    "a an the of in on at to for from by with about and or but so also too what which who whom whose when where why "
    "how much many is are was were be been being do does did done has have had can could will would should may might "
    "more less than as any some all there here yes no not".split())


class UploadError(QAError):
    """An uploaded file was refused (type, size or name)."""


@dataclass(frozen=True)
class Turn:
    """One answered question: what was asked, what was searched for, and the answer."""

    asked: str
    searched: str
    answer: Answer


def follow_up_query(question: str, previous: str | None) -> str:
    """The question to search for. A follow-up ("and in 2020?", "what about it?") too thin to stand alone is
    joined to the previous searched question, so its topic carries over: no LLM, just the conversation's words."""
    if not previous:
        return question
    rest = _FOLLOW_UP.sub("", question, count=1)
    marked = rest != question
    words = re.findall(r"\w+", rest.lower())
    content = [w for w in words if w not in _FUNCTION_WORDS]
    leans_back = (bool(_PRONOUNS & set(words)) and len(words) <= 8) or len(content) < 2
    if (marked or leans_back) and len(content) < 3:
        return f"{previous} {rest or question}".strip()
    return rest if marked and rest.strip() else question


def ask(retriever: Retriever, question: str, previous: str | None, k: int, mode: str) -> Turn:
    searched = follow_up_query(question, previous)
    return Turn(question, searched, retriever.ask(searched, k, mode))


def render_question(question: str) -> str:
    """The user's own message, escaped like document text: a question cannot add markup either."""
    return f'<div class="qa-question">{_html_text(question)}</div>'


def _html_text(text: str) -> str:
    return _with_breaks(html.escape(text))


def render_turn(turn: Turn, retriever: Retriever, context_sentences: int = 3) -> str:
    """The reply as HTML. Every piece of document text is escaped: a document can never add markup."""
    if not turn.answer.passages:
        return f'<div class="qa-answer qa-none">{_html_text(NOT_FOUND)}</div>'
    parts = ['<div class="qa-answer">']
    if turn.searched != turn.asked:
        parts.append(f'<div class="qa-note">Searched for: <i>{_html_text(turn.searched)}</i></div>')
    for n, p in enumerate(turn.answer.passages, 1):
        parts.append(f'<div class="qa-cite" data-cite="{n}">')
        parts.append(f'<div class="qa-head"><b>[{n}]</b> {_location_html(p)}</div>')
        parts.append(f'<div class="qa-text">{_with_breaks(highlighted_html(p))}</div>')
        ctx = retriever.context(p, context_sentences, turn.answer)
        around = (f'{_html_text(ctx.before)}<span class="qa-passage">{_with_breaks(highlighted_html(p))}</span>'
                  f'{_html_text(ctx.after)}')
        parts.append(f'<details class="qa-context"><summary>Show in context</summary><div>{around}</div></details>')
        parts.append("</div>")
    parts.append("</div>")
    return "".join(parts)


def _with_breaks(escaped: str) -> str:
    # One line only, so the reply stays a single HTML block that Markdown leaves alone; a paragraph break
    # shows as a line break, and a lone newline (a PDF's line wrap) as a space.
    return re.sub(r"\n", " ", re.sub(r"\n\s*\n\s*", "<br>", escaped))


def _location_html(p: Passage) -> str:
    return (f'<span class="qa-source">{html.escape(p.source)}</span> · {html.escape(where(p))} · '
            f'chars {p.start}–{p.end} · score {p.score:.3f}')


def safe_name(name: str) -> str:
    """A plain file name from whatever the browser sent: no folders, no NULs, no odd characters, bounded."""
    base = unicodedata.normalize("NFC", name.replace("\x00", "")).replace("\\", "/").split("/")[-1]
    stem, dot, ext = base.rpartition(".")
    if not dot:
        stem, ext = base, ""
    ext = f".{ext.lower()}"
    if ext not in SUPPORTED_EXTENSIONS:
        raise UploadError(f"'{name[:80]}' is not a supported type: upload {', '.join(SUPPORTED_EXTENSIONS)} files")
    stem = re.sub(r"_+", "_", re.sub(r"[^\w.\-]", "_", stem)).strip("._-")[:100] or "document"
    return stem + ext


def save_upload(source: Path, original_name: str, corpus: Path, max_bytes: int) -> Path:
    """Copy an uploaded file into the corpus folder, never over another file and never outside the folder."""
    name = safe_name(original_name)
    size = source.stat().st_size
    if size > max_bytes:
        raise UploadError(f"'{name}' is {size / 2**20:.1f} MiB; the upload limit is {max_bytes / 2**20:.0f} MiB")
    corpus.mkdir(parents=True, exist_ok=True)
    root = corpus.resolve()
    digest = file_sha256(source)
    stem, ext = name[: -len(Path(name).suffix)], Path(name).suffix
    for n in range(1000):
        target = root / (name if n == 0 else f"{stem}-{n}{ext}")
        if target.parent != root:
            raise UploadError(f"'{original_name[:80]}' is not a valid file name")
        if target.exists():
            if target.is_file() and file_sha256(target) == digest:
                return target  # the same document again: nothing to add
            continue
        try:
            with open(target, "xb") as out, open(source, "rb") as src:
                shutil.copyfileobj(src, out)
        except FileExistsError:
            continue  # someone else took the name a moment ago
        return target
    raise UploadError(f"too many files named like '{name}' in the corpus folder")


def remove_document(source: str, corpus: Path) -> Path:
    """Delete a document from the corpus folder (only from inside it)."""
    root = corpus.resolve()
    target = (root / source).resolve()
    if root not in target.parents or not target.is_file():
        raise UploadError(f"'{source}' is not a document in {corpus}")
    target.unlink()
    return target
