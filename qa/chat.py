"""Chat logic behind the web page, free of gradio: follow-ups, example questions, uploads into the corpus."""
from __future__ import annotations

import re
import shutil
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from qa.shapes import is_heading
from qa.api import Answer, Retriever
from qa.errors import QAError
from qa.index.protocol import IndexReader
from qa.loaders import SUPPORTED_EXTENSIONS, file_sha256

# A heading worth asking about: it starts with a capital and has lower-case words (not "A0.0 COVER PAGE").
_TOPIC = re.compile(r"[A-Z][a-z]+[\s\w’'-]*[a-z]{3}")
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


def ask(retriever: Retriever, question: str, previous: str | None, k: int, mode: str, *, literal: bool = False,
        closest: bool = False) -> Turn:
    """Answer `question`; `previous` is the question typed before it (never what was searched for it, so that
    rewrites do not snowball). `literal`: search only what was typed; `closest`: show the nearest passages even
    when nothing answers."""
    searched = question if literal else follow_up_query(question, previous)
    return Turn(question, searched, retriever.ask(searched, k, mode, closest=closest))


def example_questions(data: IndexReader, n: int = 3) -> list[str]:
    """Questions the loaded documents can answer, for a newcomer to click: about their section headings (one
    document after another, the longest documents first), else about their titles. Drawn from the text."""
    topics: dict[str, list[str]] = {}
    for source, chunks in data.documents_by_size():
        heads = [t.strip().lstrip("#").strip().rstrip(":") for c in chunks
                 for t, span in zip(c.sentence_texts, c.sentences) if span[0] > 0 and _is_topic(t)]
        title = (chunks[0].context or chunks[0].sentence_texts[0]).strip() if chunks else ""
        about = [f"What does the document say about {h}?" for h in dict.fromkeys(heads)]
        fits = _TOPIC.match(title) and is_heading(title) and len(title.split()) >= 2
        topics[source] = about or ([f"What is “{title}” about?"] if fits else [])
    questions: list[str] = []
    for depth in range(n):
        for asked in topics.values():
            if depth < len(asked) and len(questions) < n:
                questions.append(asked[depth])
    return questions


def _is_topic(text: str) -> bool:
    """A section heading worth asking about: a markdown heading, or a short line in title case or with a colon
    that ends like a heading (not a PDF line cut mid-sentence: "As Lessing described it,")."""
    line = text.strip()
    words = line.lstrip("#").split()
    if not is_heading(line) or not 3 <= len(words) <= 8 or not _TOPIC.match(line.lstrip("#").strip()):
        return False
    capitals = sum(w[:1].isupper() for w in words) / len(words)
    return line[-1:].isalnum() and (line.startswith("#") or ":" in line or capitals >= 0.5)


def loaded_line(data: IndexReader, names: int = 5) -> str:
    """"3 documents loaded: a.txt, b.pdf, c.docx" (a few names, then how many more)."""
    files = sorted(data.manifest.files)
    if not files:
        return "No documents loaded yet: add some below."
    shown = ", ".join(files[:names]) + (f" and {len(files) - names} more" if len(files) > names else "")
    return f"{len(files)} document{'s' if len(files) != 1 else ''} loaded: {shown}"


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


# Documents taken out of the index but kept: a hidden folder of the corpus, which indexing never reads.
SET_ASIDE = ".not-indexed"


def _inside(corpus: Path, source: str, hidden: bool = False) -> Path:
    root = corpus.resolve() / SET_ASIDE if hidden else corpus.resolve()
    target = (root / source).resolve()
    if root not in target.parents or not target.is_file():
        raise UploadError(f"'{source}' is not a document in {corpus}")
    return target


def remove_document(source: str, corpus: Path) -> Path:
    """Delete a document's file from the corpus folder, indexed or set aside (only from inside the folder)."""
    try:
        target = _inside(corpus, source)
    except UploadError:
        target = _inside(corpus, source, hidden=True)
    target.unlink()
    return target


def set_aside(source: str, corpus: Path) -> Path:
    """Take a document out of the index and keep its file (in the corpus's hidden SET_ASIDE folder)."""
    target = _inside(corpus, source)
    kept = corpus.resolve() / SET_ASIDE / source
    kept.parent.mkdir(parents=True, exist_ok=True)
    if kept.exists():
        raise UploadError(f"'{source}' is already set aside: put that one back or delete it first")
    return target.rename(kept)


def put_back(source: str, corpus: Path) -> Path:
    """Return a set-aside document to the corpus folder, to be indexed again."""
    kept = _inside(corpus, source, hidden=True)
    target = corpus.resolve() / source
    if target.exists():
        raise UploadError(f"'{source}' is in the folder again already: delete the set-aside copy instead")
    target.parent.mkdir(parents=True, exist_ok=True)
    return kept.rename(target)


def set_aside_sources(corpus: Path) -> list[str]:
    folder = corpus / SET_ASIDE
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
