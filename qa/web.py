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
from qa.chat import (ask, example_questions, loaded_line, put_back, remove_document, save_upload,  # noqa: E402
                     set_aside, set_aside_sources)
from qa.formats.pdfview import page_image  # noqa: E402
from qa.loaders import file_sha256  # noqa: E402
from qa.records import IndexReport  # noqa: E402
from qa.reply import render_question, render_source, render_turn  # noqa: E402
from qa.webpage import CSS, PAGE_SCRIPT, SCROLL_TO_REPLY, SCROLL_TO_SOURCE  # noqa: E402
from qa.citations import page_place  # noqa: E402
from qa.config import Settings  # noqa: E402
from qa.errors import IndexMismatchError, QAError  # noqa: E402
from qa.loaders import SUPPORTED_EXTENSIONS  # noqa: E402

MAX_UPLOAD_MB = 50
def build_app(retriever: Retriever, settings: Settings, report: IndexReport | None = None) -> gr.Blocks:
    corpus = settings.corpus_dir
    index_lock = threading.Lock()  # one indexing run at a time from this server; others wait their turn
    last = {"report": report}  # the latest indexing run's failures and notes, for the documents panel

    def documents() -> list[list[object]]:
        """Every document the folder holds, with what happened to it: indexed (and what was left out), failed
        and why, or set aside."""
        files = retriever.refresh().data.manifest.files
        run = last["report"]
        notes = {n.source: n.reason for n in run.notes} if run else {}
        rows = [[source, f"indexed; {notes[source]}" if source in notes else "indexed", entry.chunks,
                 f"{entry.bytes / 1024:.1f} KiB"] for source, entry in sorted(files.items())]
        rows += [[f.source, f"failed: {f.reason}", 0, ""] for f in (run.failed if run else ()) if f.source not in files]
        rows += [[source, "set aside: not indexed, file kept", 0, ""] for source in set_aside_sources(corpus)]
        return rows

    def doc_choices():
        return gr.update(choices=retriever.sources() + set_aside_sources(corpus), value=None)

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
        last["report"] = result
        retriever.refresh()
        return result.describe()

    def reply(message: str, history: list, asked: list[str], k: float, mode: str, *, literal: bool = False,
              closest: bool = False):
        """The chat after one more question, the typed questions so far, which of the two follow-up buttons
        apply to this reply (search only what was typed; show the closest passages), and both to keep in the
        browser: saved with the reply itself, so a reload right after it cannot lose it."""
        history = list(history or [])
        message = (message or "").strip()
        if not message:
            return "", history, asked, gr.update(), gr.update(), gr.update()
        previous = asked[-1] if asked else None
        rewritten = refused = False
        try:
            turn = ask(retriever, message, previous, int(k), mode, literal=literal, closest=closest)
            body = render_turn(turn.asked, turn.searched, turn.answer, retriever)
            rewritten, refused = turn.searched != turn.asked, not turn.answer.passages
        except QAError as exc:
            body = f'<div class="qa-answer qa-error">⚠️ {html.escape(str(exc))}</div>'
        history += [{"role": "user", "content": render_question(message)}, {"role": "assistant", "content": body}]
        asked = [*asked, message]
        return ("", history, asked, gr.update(visible=rewritten, value=f"Search only “{message[:60]}”"),
                gr.update(visible=refused), {"history": history, "asked": asked})

    def respond(message, history, asked, k, mode):
        return reply(message, history, asked, k, mode)

    def literal_again(history, asked, k, mode):
        return reply(asked[-1] if asked else "", history, asked[:-1], k, mode, literal=True)

    def closest_again(history, asked, k, mode):
        return reply(asked[-1] if asked else "", history, asked[:-1], k, mode, closest=True)

    def save_documents(paths: list[str] | None):
        """Step one of an upload, quick: the files saved into the corpus folder and the upload area emptied,
        ready for the next drop while this one is indexed."""
        notes = []
        for path in paths or []:
            name = Path(path).name
            try:
                saved = save_upload(Path(path), name, corpus, MAX_UPLOAD_MB * 2**20)
                notes.append(f"saved {saved.name}")
            except QAError as exc:
                notes.append(f"refused: {exc}")
        return None, "\n".join(notes)

    def index_documents(notes: str, progress: gr.Progress = gr.Progress()):
        """Step two: index what was saved (one run at a time; a run picks up every file saved before it)."""
        if "saved " in notes:
            try:
                notes += "\n" + reindex(progress)
            except QAError as exc:
                notes += f"\nindexing failed: {exc}"
        return [notes, *welcome()]

    def change(action, verb: str):
        def run(source: str | None, progress: gr.Progress = gr.Progress()):
            if not source:
                return [f"Pick a document to {verb}.", gr.update(visible=False), *welcome()]
            try:
                action(source, corpus)
                note = f"{verb}: {source}\n" + reindex(progress)
            except QAError as exc:
                note = f"could not {verb} {source}: {exc}"
            return [note, gr.update(visible=False), *welcome()]
        return run

    def ask_to_delete(source: str | None):
        if not source:
            return "Pick a document to delete.", gr.update(visible=False), gr.update()
        return "", gr.update(visible=True), f"Delete **{source}** from the folder? This cannot be undone."

    def open_source(request: str):
        """The source viewer for one passage, and for a PDF its page drawn with the sentence marked."""
        try:
            spec = json.loads(request or "{}")
            source, start, end = str(spec["source"]), int(spec["start"]), int(spec["end"])
            highlight = (int(spec["highlight"][0]), int(spec["highlight"][1]))
        except (ValueError, KeyError, TypeError, IndexError):
            return '<p class="qa-note">That source link is damaged.</p>', gr.update(visible=False, value=None)
        data = retriever.refresh().data
        chunk = data.chunk_at(source, start)
        try:
            if source not in data.manifest.files:
                raise QAError(f"'{source[:80]}' is not in the index")
            text = data.document_text(source)
            view = render_source(source, text, start, end, highlight, chunk)
        except QAError as exc:
            return f'<p class="qa-note">{html.escape(str(exc))}</p>', gr.update(visible=False, value=None)
        image = pdf_page(data, source, chunk, text[highlight[0] : highlight[1]])
        return view, gr.update(visible=image is not None, value=image[0] if image else None,
                               label=image[1] if image else "Page")

    def pdf_page(data, source: str, chunk, sentence: str):
        """(image, label) of the PDF page a passage is on, or None: only files of the index, read from the
        corpus folder, and only if unchanged since they were indexed."""
        entry = data.manifest.files.get(source)
        if entry is None or not source.lower().endswith(".pdf"):
            return None
        root = corpus.resolve()
        path = (root / source).resolve()
        if root not in path.parents or not path.is_file() or file_sha256(path) != entry.sha256:
            return None
        if chunk is None or not chunk.page:
            return None
        try:
            image = page_image(path.read_bytes(), chunk.page, sentence)
        except QAError:
            return None
        return image, f"{source}, {page_place(chunk)}"

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
                    table = gr.Dataframe(headers=["document", "status", "chunks", "size"], interactive=False,
                                         label="Documents in the folder", elem_id="documents", wrap=True)
                    pick = gr.Dropdown([], value=None, label="Document", elem_id="pick")
                    with gr.Row():
                        aside = gr.Button("Remove from index (keep the file)", size="sm", elem_id="aside")
                        back = gr.Button("Put back", size="sm", elem_id="back")
                        delete = gr.Button("Delete file…", size="sm", variant="stop", elem_id="delete")
                    with gr.Row(visible=False, elem_id="confirm") as confirm:
                        confirm_text = gr.Markdown()
                        yes = gr.Button("Delete", variant="stop", size="sm", elem_id="delete-yes")
                        no = gr.Button("Cancel", size="sm", elem_id="delete-no")

        events = dict(api_visibility="private")
        chat_io = ([box, chat, asked, k, mode], [box, chat, asked, literal, closest, saved])

        def after(event) -> None:
            """What follows every change to the conversation: show the new reply."""
            event.then(None, js=SCROLL_TO_REPLY, **events)

        # The chat itself is callable by clients (undocumented) so that scripts see exactly what people see.
        after(box.submit(respond, *chat_io, api_name="chat", api_visibility="undocumented"))
        after(send.click(respond, *chat_io, **events))
        for button in examples:
            after(button.click(respond, [button, chat, asked, k, mode], chat_io[1], **events))
        after(literal.click(literal_again, [chat, asked, k, mode], chat_io[1], **events))
        after(closest.click(closest_again, [chat, asked, k, mode], chat_io[1], **events))
        after(clear.click(lambda: ([], [], gr.update(visible=False), gr.update(visible=False),
                                   {"history": [], "asked": []}), None, [chat, asked, literal, closest, saved], **events))
        demo.load(lambda kept: (kept.get("history", []), kept.get("asked", [])) if isinstance(kept, dict)
                  else ([], []), saved, [chat, asked], show_progress="hidden", **events)
        page = [loaded, table, pick, *examples]
        # Every page load, and so every tab, sees the documents as they are now.
        demo.load(welcome, None, page, show_progress="hidden", **events)
        # A file dropped while another is being indexed is queued, not ignored ("multiple"), and the upload area
        # is emptied as soon as the files are saved, so that it takes the next drop at once.
        upload.upload(save_documents, [upload], [upload, status], trigger_mode="multiple", **events).then(
            index_documents, [status], [status, *page], show_progress_on=[status], trigger_mode="multiple",
            **events)
        for button, action, verb in ((aside, set_aside, "remove from the index"), (back, put_back, "put back"),
                                     (yes, remove_document, "delete")):
            button.click(change(action, verb), [pick], [status, confirm, *page], show_progress_on=[status], **events)
        delete.click(ask_to_delete, [pick], [status, confirm, confirm_text], **events)
        no.click(lambda: gr.update(visible=False), None, confirm, **events)
        open_go.click(open_source, [open_request], [viewer, page_view], **events).then(
            None, js=SCROLL_TO_SOURCE, **events)
        demo.load(None, js=PAGE_SCRIPT, **events)
        gr.api(api_ask, api_name="ask")
    return demo


def prepare_index(settings: Settings, progress=None) -> IndexReport:
    """Bring the index in line with the corpus folder. The index only mirrors that folder, so one made with
    other settings (an upgrade that changed the chunk size, another backend) is rebuilt from it, not refused."""
    try:
        return build_index([settings.corpus_dir], settings=settings, progress=progress, wait=120)
    except IndexMismatchError:
        return build_index([settings.corpus_dir], settings=settings, progress=progress, wait=120, rebuild=True)


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 7860, *,
          progress: Callable[[str, int, int], None] | None = None,
          auth: list[tuple[str, str]] | None = None, block: bool = True) -> tuple[gr.Blocks, str]:
    """Bring the index up to date with the corpus folder, then serve the chat. Returns (app, local URL)."""
    report = prepare_index(settings, progress)
    retriever = Retriever(settings=settings, build_if_missing=False)  # the folder or the database just indexed
    retriever.warm()
    demo = build_app(retriever, settings, report)
    demo.queue(default_concurrency_limit=8)
    _, url, _ = demo.launch(server_name=host, server_port=port, prevent_thread_lock=not block, quiet=not block,
                            theme=gr.themes.Default(), css=CSS, footer_links=["api"], auth=auth,
                            max_file_size=f"{MAX_UPLOAD_MB}mb", show_error=True)
    return demo, url
