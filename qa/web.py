"""The Gradio web chat: cited answers with highlights, follow-ups, settings, documents panel, and an /ask API."""
from __future__ import annotations

import html
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no phoning home

import gradio as gr  # noqa: E402

from qa.api import Retriever, build_index  # noqa: E402
from qa.chat import ask, example_questions, loaded_line, remove_document, save_upload  # noqa: E402
from qa.formats.pdf import page_image  # noqa: E402
from qa.loaders import file_sha256  # noqa: E402
from qa.reply import render_question, render_source, render_turn  # noqa: E402
from qa.config import MODES, Settings  # noqa: E402
from qa.errors import IndexMismatchError, QAError  # noqa: E402
from qa.loaders import SUPPORTED_EXTENSIONS  # noqa: E402

MAX_UPLOAD_MB = 50
# The highlight is shown by more than colour (an underline and weight too); text keeps at least 4.5:1 contrast.
CSS = """
.qa-answer { display: flex; flex-direction: column; gap: 10px; }
.qa-card { border: 2px solid var(--color-accent); border-radius: 8px; padding: 8px 12px; }
.qa-label { font-size: 0.8em; font-weight: 700; text-transform: uppercase; letter-spacing: 0.04em; }
.qa-quote { margin: 4px 0; font-size: 1.05em; }
.qa-meta, .qa-head, .qa-note { font-size: 0.85em; color: var(--body-text-color); }
.qa-sources { display: flex; flex-direction: column; gap: 8px; }
.qa-cite { border-left: 3px solid var(--color-accent); padding: 4px 10px; }
.qa-answer mark, .qa-view mark { background: #fde68a; color: #111; padding: 0 2px; border-radius: 2px; font-weight: 600;
  text-decoration: underline; text-decoration-thickness: 2px; text-underline-offset: 2px; }
.qa-context summary { cursor: pointer; font-size: 0.85em; }
.qa-context div { font-size: 0.9em; margin-top: 4px; }
.qa-passage { background: rgba(253, 230, 138, 0.25); }
.qa-warn { border-left: 4px solid #b45309; padding: 4px 10px; }
.qa-chip { font-weight: 700; color: var(--body-text-color); }
.qa-open { cursor: pointer; text-decoration: underline; font-weight: 600; white-space: nowrap; }
.qa-view-text { max-height: 420px; overflow-y: auto; white-space: pre-wrap; font-size: 0.9em; padding: 4px; }
#open-request, #open-go { display: none !important; }
.qa-sr { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
#ask { background: #c2410c; border-color: #c2410c; color: #fff; }
button.stop { background: #b91c1c; border-color: #b91c1c; color: #fff; }
#upload .or, #upload .wrap { color: var(--body-text-color); }
#examples button { white-space: normal; text-align: left; }
:focus-visible { outline: 3px solid #1d4ed8 !important; outline-offset: 2px; }
footer a, footer button { color: var(--body-text-color) !important; }
"""
# One script for the page, since the reply's HTML carries none:
# - "Open" on a source (a link: Enter works too) hands the passage in the link's fragment to a hidden textbox and
#   button, which ask the server for the source viewer;
# - Gradio names each message by its raw HTML (thousands of characters) and announces whole replies: messages
#   are renamed by their answer sentence, the chat's own live region is turned off, and one live region says
#   the answer sentence (or "not found") of each new reply;
# - the upload area gets a name that includes its visible text; "/" puts the cursor in the question box.
PAGE_SCRIPT = """() => {
  document.addEventListener('click', (e) => {
    const link = e.target.closest && e.target.closest('a.qa-open'); if (!link) return;
    e.preventDefault();
    const box = document.querySelector('#open-request textarea');
    box.value = decodeURIComponent(link.getAttribute('href').split('#qa-open=')[1] || '');
    box.dispatchEvent(new Event('input', {bubbles: true}));
    setTimeout(() => document.querySelector('#open-go').click(), 50); });
  document.addEventListener('keydown', (e) => {
    if (e.key === '/' && !(e.target.closest && e.target.closest('input, textarea, [contenteditable]'))) {
      e.preventDefault(); document.querySelector('#question textarea').focus(); } });
  const said = (el) => { const find = (sel) => el.querySelector(sel);
    if (find('.qa-quote')) return 'Answer: ' + find('.qa-quote').innerText;
    if (find('.qa-warn')) return find('.qa-warn').innerText;
    if (find('.qa-none p')) return find('.qa-none p').innerText;
    if (find('.qa-question')) return 'You asked: ' + find('.qa-question').innerText;
    return el.innerText.slice(0, 200); };
  const live = document.createElement('div');
  live.id = 'qa-announce'; live.className = 'qa-sr'; live.setAttribute('aria-live', 'polite');
  document.body.appendChild(live);
  let last = null;
  const tidy = () => {
    document.querySelectorAll('#chat [aria-label]').forEach((el) => {
      if ((el.getAttribute('aria-label') || '').includes('<')) el.setAttribute('aria-label', said(el)); });
    document.querySelectorAll('#chat [aria-live]:not([aria-live=off])').forEach((el) => el.setAttribute('aria-live', 'off'));
    document.querySelectorAll('#upload .boundedheight[aria-label]').forEach((el) => {
      const name = el.innerText.replace(/\\s+/g, ' ').trim() + ': add documents';
      if (el.getAttribute('aria-label') !== name) el.setAttribute('aria-label', name); });
    const replies = document.querySelectorAll('#chat .qa-answer');
    const newest = replies[replies.length - 1];
    if (newest && newest !== last) { last = newest; live.textContent = said(newest); } };
  new MutationObserver(tidy).observe(document.body, {subtree: true, childList: true, attributes: true,
                                                      attributeFilter: ['aria-label', 'aria-live']});
  tidy(); }"""
SCROLL_TO_SOURCE = """() => { setTimeout(() => { const p = document.querySelector('#qa-view-passage');
  if (p) { p.scrollIntoView({block: 'center'}); } }, 100); }"""
# After a reply: scroll the chat to the start of the newest answer, not to the bottom of its last passage.
SCROLL_TO_REPLY = """() => { setTimeout(() => { const all = document.querySelectorAll('#chat .qa-answer');
  if (all.length) all[all.length - 1].scrollIntoView({block: 'start'}); }, 50); }"""


def build_app(retriever: Retriever, settings: Settings) -> gr.Blocks:
    corpus = settings.corpus_dir
    index_lock = threading.Lock()  # one indexing run at a time from this server; others wait their turn

    def documents() -> list[list[object]]:
        files = retriever.refresh().data.manifest.files
        return [[source, entry.chunks, f"{entry.bytes / 1024:.1f} KiB"] for source, entry in sorted(files.items())]

    def doc_choices():
        return gr.update(choices=retriever.sources(), value=None)

    def welcome():
        """What a page shows when it opens, and after every change: the documents as they are now."""
        data = retriever.refresh().data
        examples = example_questions(data)
        buttons = [gr.update(value=q, visible=True) for q in examples]
        buttons += [gr.update(value="", visible=False)] * (3 - len(examples))
        return [loaded_line(data), documents(), doc_choices(), *buttons]

    def reindex(progress: gr.Progress) -> str:
        def report(stage: str, done: int, total: int) -> None:
            label = "Reading files" if stage == "read" else "Embedding new text"
            progress((done, total), desc=label)

        with index_lock:
            result = build_index([corpus], settings=settings, progress=report, wait=120)
        retriever.refresh()
        return result.describe()

    def reply(message: str, history: list, asked: list[str], k: float, mode: str, *, literal: bool = False,
              closest: bool = False):
        """The chat after one more question, the typed questions so far, and which of the two follow-up buttons
        apply to this reply (search only what was typed; show the closest passages)."""
        history = list(history or [])
        message = (message or "").strip()
        if not message:
            return "", history, asked, gr.update(), gr.update()
        previous = asked[-1] if asked else None
        rewritten = refused = False
        try:
            turn = ask(retriever, message, previous, int(k), mode, literal=literal, closest=closest)
            body = render_turn(turn.asked, turn.searched, turn.answer, retriever)
            rewritten, refused = turn.searched != turn.asked, not turn.answer.passages
        except QAError as exc:
            body = f'<div class="qa-answer qa-error">⚠️ {html.escape(str(exc))}</div>'
        history += [{"role": "user", "content": render_question(message)}, {"role": "assistant", "content": body}]
        return ("", history, [*asked, message], gr.update(visible=rewritten, value=f"Search only “{message[:60]}”"),
                gr.update(visible=refused))

    def respond(message, history, asked, k, mode):
        return reply(message, history, asked, k, mode)

    def literal_again(history, asked, k, mode):
        return reply(asked[-1] if asked else "", history, asked[:-1], k, mode, literal=True)

    def closest_again(history, asked, k, mode):
        return reply(asked[-1] if asked else "", history, asked[:-1], k, mode, closest=True)

    def add_documents(paths: list[str] | None, progress: gr.Progress = gr.Progress()):
        notes = []
        for path in paths or []:
            name = Path(path).name
            try:
                saved = save_upload(Path(path), name, corpus, MAX_UPLOAD_MB * 2**20)
                notes.append(f"saved {saved.name}")
            except QAError as exc:
                notes.append(f"refused: {exc}")
        if any(n.startswith("saved") for n in notes):
            try:
                notes.append(reindex(progress))
            except QAError as exc:
                notes.append(f"indexing failed: {exc}")
        return [None, "\n".join(notes), *welcome()]

    def remove(source: str | None, progress: gr.Progress = gr.Progress()):
        if not source:
            return ["Pick a document to remove.", *welcome()]
        try:
            remove_document(source, corpus)
            note = f"removed {source}\n" + reindex(progress)
        except QAError as exc:
            note = f"not removed: {exc}"
        return [note, *welcome()]

    def open_source(request: str):
        """The source viewer for one passage, and for a PDF its page drawn with the sentence marked."""
        try:
            spec = json.loads(request or "{}")
            source, start, end = str(spec["source"]), int(spec["start"]), int(spec["end"])
            highlight = (int(spec["highlight"][0]), int(spec["highlight"][1]))
            data = retriever.refresh().data
            view = render_source(data, source, start, end, highlight)
        except (ValueError, KeyError, TypeError, IndexError):
            return '<p class="qa-note">That source link is damaged.</p>', gr.update(visible=False, value=None)
        except QAError as exc:
            return f'<p class="qa-note">{html.escape(str(exc))}</p>', gr.update(visible=False, value=None)
        image = pdf_page(data, source, start, highlight)
        return view, gr.update(visible=image is not None, value=image[0] if image else None,
                               label=image[1] if image else "Page")

    def pdf_page(data, source: str, start: int, highlight: tuple[int, int]):
        """(image, label) of the PDF page a passage is on, or None: only files of the index, read from the
        corpus folder, and only if unchanged since they were indexed."""
        entry = data.manifest.files.get(source)
        if entry is None or not source.lower().endswith(".pdf"):
            return None
        root = corpus.resolve()
        path = (root / source).resolve()
        if root not in path.parents or not path.is_file() or file_sha256(path) != entry.sha256:
            return None
        chunk = next((data.chunks[r] for r in data.source_rows.get(source, ())
                      if data.chunks[r].start <= start < data.chunks[r].end), None)
        if chunk is None or not chunk.page:
            return None
        sentence = data.document_text(source)[highlight[0] : highlight[1]]
        try:
            image = page_image(path.read_bytes(), chunk.page, sentence)
        except QAError:
            return None
        printed = f" (printed {chunk.page_label})" if chunk.page_label and chunk.page_label != str(chunk.page) else ""
        return image, f"{source}, page {chunk.page}{printed}"

    def api_ask(question: str, k: int = 5, mode: str = "hybrid") -> dict:
        """The answer and its cited passages for a question, as `qa ask --json` prints them."""
        try:
            return retriever.ask(question, int(k), mode).to_dict()
        except QAError as exc:
            raise gr.Error(str(exc)) from None

    with gr.Blocks(title="docqa: ask your documents") as demo:
        gr.Markdown("# Ask your documents\nEvery answer is quoted from your documents, with its source; "
                    "the sentence that answers is marked.")
        loaded = gr.Markdown(elem_id="loaded")
        asked = gr.State([])
        # The conversation survives a reload: kept in the browser's own storage, never on the server.
        saved = gr.BrowserState({"history": [], "asked": []}, storage_key="docqa-conversation")
        with gr.Row():
            with gr.Column(scale=3):
                chat = gr.Chatbot(label="Conversation", height=560, latex_delimiters=[], sanitize_html=True,
                                  elem_id="chat", buttons=["copy"], feedback_options=None, autoscroll=False)
                with gr.Row(elem_id="examples"):
                    examples = [gr.Button(visible=False, size="sm", variant="secondary", elem_id=f"example-{n}")
                                for n in range(3)]
                with gr.Row():
                    box = gr.Textbox(label="Your question", placeholder="Ask a question about your documents…",
                                     show_label=False, scale=5, elem_id="question",
                                     max_length=settings.max_question_chars)
                    send = gr.Button("Ask", variant="primary", scale=1, elem_id="ask")
                with gr.Row():
                    literal = gr.Button("Search only what I typed", visible=False, size="sm", elem_id="literal")
                    closest = gr.Button("Show the closest passages anyway (low confidence)", visible=False,
                                        size="sm", elem_id="closest")
                    clear = gr.Button("New conversation", size="sm")
            with gr.Column(scale=2):
                with gr.Accordion("Source", open=True, elem_id="source-panel"):
                    viewer = gr.HTML('<p class="qa-note">Choose “Open ↗” on a source to read it here.</p>',
                                     elem_id="viewer")
                    page_view = gr.Image(visible=False, label="Page", interactive=False, elem_id="page-view",
                                         type="pil", buttons=["fullscreen"])
                    open_request = gr.Textbox(elem_id="open-request", show_label=False, container=False)
                    open_go = gr.Button("open", elem_id="open-go")
                with gr.Accordion("Settings", open=False):
                    k = gr.Slider(1, 10, value=settings.k, step=1, label="How many sources", elem_id="k")
                    mode = gr.Radio([("meaning and exact words", "hybrid"), ("meaning", "semantic"),
                                     ("exact words", "keyword")], value=settings.mode, label="Match by",
                                    elem_id="mode")
                with gr.Accordion("Documents", open=True):
                    upload = gr.File(label=f"Add documents ({', '.join(SUPPORTED_EXTENSIONS)}; "
                                     f"up to {MAX_UPLOAD_MB} MB each)", file_count="multiple",
                                     file_types=list(SUPPORTED_EXTENSIONS), elem_id="upload")
                    status = gr.Textbox(label="Status", interactive=False, lines=3, elem_id="status")
                    table = gr.Dataframe(headers=["document", "chunks", "size"], interactive=False,
                                         label="Indexed documents", elem_id="documents")
                    with gr.Row():
                        pick = gr.Dropdown([], value=None, label="Remove a document", scale=3)
                        drop = gr.Button("Remove", variant="stop", scale=1)

        events = dict(api_visibility="private")
        chat_io = ([box, chat, asked, k, mode], [box, chat, asked, literal, closest])

        def after(event) -> None:
            """What follows every change to the conversation: keep it in the browser, show the new reply."""
            event.then(lambda h, a: {"history": h, "asked": a}, [chat, asked], saved, **events).then(
                None, js=SCROLL_TO_REPLY, **events)

        # The chat itself is callable by clients (undocumented) so that scripts see exactly what people see.
        after(box.submit(respond, *chat_io, api_name="chat", api_visibility="undocumented"))
        after(send.click(respond, *chat_io, **events))
        for button in examples:
            after(button.click(respond, [button, chat, asked, k, mode], chat_io[1], **events))
        after(literal.click(literal_again, [chat, asked, k, mode], chat_io[1], **events))
        after(closest.click(closest_again, [chat, asked, k, mode], chat_io[1], **events))
        after(clear.click(lambda: ([], [], gr.update(visible=False), gr.update(visible=False)), None,
                          [chat, asked, literal, closest], **events))
        demo.load(lambda kept: (kept.get("history", []), kept.get("asked", [])) if isinstance(kept, dict)
                  else ([], []), saved, [chat, asked], show_progress="hidden", **events)
        page = [loaded, table, pick, *examples]
        demo.load(welcome, None, page, show_progress="hidden", **events)  # every page load and every tab sees the documents as they are
        upload.upload(add_documents, [upload], [upload, status, *page], show_progress_on=[status], **events)
        drop.click(remove, [pick], [status, *page], show_progress_on=[status], **events)
        open_go.click(open_source, [open_request], [viewer, page_view], **events).then(
            None, js=SCROLL_TO_SOURCE, **events)
        demo.load(None, js=PAGE_SCRIPT, **events)
        gr.api(api_ask, api_name="ask")
    return demo


def prepare_index(settings: Settings, progress=None) -> None:
    """Bring the index in line with the corpus folder. The index only mirrors that folder, so one made with
    other settings (an upgrade that changed the chunk size, another backend) is rebuilt from it, not refused."""
    try:
        build_index([settings.corpus_dir], settings=settings, progress=progress, wait=120)
    except IndexMismatchError:
        build_index([settings.corpus_dir], settings=settings, progress=progress, wait=120, rebuild=True)


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 7860, *,
          progress: Callable[[str, int, int], None] | None = None,
          auth: list[tuple[str, str]] | None = None, block: bool = True) -> tuple[gr.Blocks, str]:
    """Bring the index up to date with the corpus folder, then serve the chat. Returns (app, local URL)."""
    prepare_index(settings, progress)
    retriever = Retriever(settings.index_dir, settings=settings)
    demo = build_app(retriever, settings)
    demo.queue(default_concurrency_limit=8)
    _, url, _ = demo.launch(server_name=host, server_port=port, prevent_thread_lock=not block, quiet=not block,
                            theme=gr.themes.Default(), css=CSS, footer_links=["api"], auth=auth,
                            max_file_size=f"{MAX_UPLOAD_MB}mb", show_error=True)
    return demo, url
