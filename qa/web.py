"""The Gradio web chat: cited answers with highlights, follow-ups, settings, documents panel, and an /ask API."""
from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no phoning home

import gradio as gr  # noqa: E402

from qa.api import Retriever, build_index  # noqa: E402
from qa.chat import ask, remove_document, render_question, render_turn, save_upload  # noqa: E402
from qa.config import MODES, Settings  # noqa: E402
from qa.errors import IndexMismatchError, QAError  # noqa: E402
from qa.loaders import SUPPORTED_EXTENSIONS  # noqa: E402

MAX_UPLOAD_MB = 50
CSS = """
.qa-answer { display: flex; flex-direction: column; gap: 10px; }
.qa-cite { border-left: 3px solid var(--color-accent); padding: 4px 10px; }
.qa-head { font-size: 0.85em; opacity: 0.8; margin-bottom: 4px; }
.qa-text mark, .qa-context mark { background: #fde68a; color: #111; padding: 0 2px; border-radius: 2px; }
.qa-context summary { cursor: pointer; font-size: 0.85em; opacity: 0.8; }
.qa-context div { font-size: 0.9em; opacity: 0.9; margin-top: 4px; }
.qa-passage { background: rgba(253, 230, 138, 0.25); }
.qa-note { font-size: 0.85em; opacity: 0.7; }
"""


def build_app(retriever: Retriever, settings: Settings) -> gr.Blocks:
    corpus = settings.corpus_dir
    index_lock = threading.Lock()  # one indexing run at a time from this server; others wait their turn

    def documents() -> list[list[object]]:
        files = retriever.data.manifest.files
        return [[source, entry.chunks, f"{entry.bytes / 1024:.1f} KiB"] for source, entry in sorted(files.items())]

    def doc_choices():
        return gr.update(choices=retriever.sources(), value=None)

    def reindex(progress: gr.Progress) -> str:
        def report(stage: str, done: int, total: int) -> None:
            label = "Reading files" if stage == "read" else "Embedding new text"
            progress((done, total), desc=label)

        with index_lock:
            result = build_index([corpus], settings=settings, progress=report, wait=120)
        retriever.refresh()
        return result.describe()

    def respond(message: str, history: list, searched: list[str], k: float, mode: str):
        history = list(history or [])
        message = (message or "").strip()
        if not message:
            return "", history, searched
        previous = searched[-1] if searched else None
        try:
            turn = ask(retriever, message, previous, int(k), mode)
            reply = render_turn(turn, retriever)
            searched = [*searched, turn.searched]
        except QAError as exc:
            reply = f"⚠️ {exc}"
        history += [{"role": "user", "content": render_question(message)}, {"role": "assistant", "content": reply}]
        return "", history, searched

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
        return None, "\n".join(notes), documents(), doc_choices()

    def remove(source: str | None, progress: gr.Progress = gr.Progress()):
        if not source:
            return "Pick a document to remove.", documents(), doc_choices()
        try:
            remove_document(source, corpus)
            note = f"removed {source}\n" + reindex(progress)
        except QAError as exc:
            note = f"not removed: {exc}"
        return note, documents(), doc_choices()

    def api_ask(question: str, k: int = 5, mode: str = "hybrid") -> dict:
        """Cited passages for a question, as `qa ask --json` prints them."""
        try:
            return retriever.ask(question, int(k), mode).to_dict()
        except QAError as exc:
            raise gr.Error(str(exc)) from None

    with gr.Blocks(title="docqa: ask your documents") as demo:
        gr.Markdown("## Ask your documents\nEvery answer is quoted from your documents, with its source; "
                    "the sentence that answers is highlighted.")
        searched = gr.State([])
        with gr.Row():
            with gr.Column(scale=3):
                chat = gr.Chatbot(label="Conversation", height=560, latex_delimiters=[], sanitize_html=True,
                                  elem_id="chat", buttons=["copy"], feedback_options=None)
                with gr.Row():
                    box = gr.Textbox(placeholder="Ask a question about your documents…", show_label=False,
                                     scale=5, elem_id="question", max_length=settings.max_question_chars)
                    send = gr.Button("Ask", variant="primary", scale=1, elem_id="ask")
                clear = gr.Button("New conversation", size="sm")
            with gr.Column(scale=2):
                with gr.Accordion("Settings", open=False):
                    k = gr.Slider(1, 10, value=settings.k, step=1, label="Passages", elem_id="k")
                    mode = gr.Radio(list(MODES), value=settings.mode, label="Retrieval mode", elem_id="mode")
                with gr.Accordion("Documents", open=True):
                    upload = gr.File(label=f"Add documents ({', '.join(SUPPORTED_EXTENSIONS)}; "
                                     f"up to {MAX_UPLOAD_MB} MB each)", file_count="multiple",
                                     file_types=list(SUPPORTED_EXTENSIONS), elem_id="upload")
                    status = gr.Textbox(label="Status", interactive=False, lines=3, elem_id="status")
                    table = gr.Dataframe(documents(), headers=["document", "chunks", "size"], interactive=False,
                                         label="Indexed documents", elem_id="documents")
                    with gr.Row():
                        pick = gr.Dropdown(retriever.sources(), value=None, label="Remove a document", scale=3)
                        drop = gr.Button("Remove", variant="stop", scale=1)

        events = dict(api_visibility="private")
        # The chat itself is callable by clients (undocumented) so that scripts see exactly what people see.
        box.submit(respond, [box, chat, searched, k, mode], [box, chat, searched], api_name="chat",
                   api_visibility="undocumented")
        send.click(respond, [box, chat, searched, k, mode], [box, chat, searched], **events)
        clear.click(lambda: ([], []), None, [chat, searched], **events)
        upload.upload(add_documents, [upload], [upload, status, table, pick], **events)
        drop.click(remove, [pick], [status, table, pick], **events)
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
