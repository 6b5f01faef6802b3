"""The web chat against a live server: gradio_client calls, and Playwright driving Debian's Chromium."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import QA, ROOT, SEED, STORES, make_pdf, new_store

CHROMIUM = "/usr/bin/chromium"
AXE = ROOT / ".cache" / "axe" / "node_modules" / "axe-core" / "axe.min.js"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
HOSTILE = """# Payload notes

The payload document mentions the aurora borealis research station at Tromsø.

<script>window.__pwned = 1; alert('script ran')</script>
<img src="x" onerror="window.__pwned = 2; alert('img ran')">
![tracker](http://127.0.0.1:9/tracker.png) and [click me](javascript:alert('link'))
<iframe src="http://127.0.0.1:9/frame"></iframe> The aurora station budget is $5 and $x^2$ dollars.
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(tmp_path_factory, extra_env=None, host=None, store=None):
    corpus = tmp_path_factory.mktemp("web-corpus")
    index = store or tmp_path_factory.mktemp("web-index")  # a folder, or a database's address
    shutil.copy(SEED, corpus / SEED.name)
    port = _free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "NO_PROXY": "127.0.0.1,localhost", **(extra_env or {})}
    log = open(tmp_path_factory.mktemp("log") / "server.log", "w+")
    where = ["--store", store] if store else ["--index", str(index)]
    cmd = [*QA, "serve", "--port", str(port), *where, "--corpus", str(corpus)]
    proc = subprocess.Popen(cmd + (["--host", host] if host else []), cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://{host or '127.0.0.1'}:{port}/"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"server did not start: {log.read()[-3000:]}")
            time.sleep(0.5)
    return proc, log, {"url": url, "corpus": corpus, "index": index, "where": where}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc, _, info = _start(tmp_path_factory)
    yield info
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def pg_server(tmp_path_factory, postgres):
    """The same web chat with its index in PostgreSQL."""
    proc, _, info = _start(tmp_path_factory, store=new_store(postgres))
    yield info
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module", params=STORES)
def web(request):
    """The server with each store."""
    return request.getfixturevalue("server" if request.param == "folder" else "pg_server")


def test_login_required_when_configured(tmp_path_factory):
    from gradio_client import Client

    proc, log, info = _start(tmp_path_factory, {"QA_AUTH": "alice:s3cret-pw", "NO_PROXY": "127.0.0.1,127.0.0.2,localhost"},
                                host="127.0.0.2")  # not the default address (so it warns), still loopback
    try:
        request = urllib.request.Request(info["url"] + "gradio_api/call/ask", method="POST",
                                         data=b'{"data": ["trade volume", 3, "hybrid"]}',
                                         headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code in (401, 403)
        with pytest.raises(Exception):
            Client(info["url"], verbose=False).predict("trade volume", 3, "hybrid", api_name="/ask")
        out = Client(info["url"], auth=("alice", "s3cret-pw"), verbose=False).predict(
            "What was the bilateral trade volume in 2020?", 3, "hybrid", api_name="/ask")
        assert "71.18" in out["passages"][0]["text"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    log.seek(0)
    assert "warning: serving on 127.0.0.2" in log.read()


@pytest.fixture(scope="module")
def client(web):
    from gradio_client import Client

    return Client(web["url"], verbose=False)


def test_api_ask_returns_cited_passage(client):
    out = client.predict("How many cases of Japanese FDI reached Taiwan?", 3, "hybrid", api_name="/ask")
    top = out["passages"][0]
    text = SEED.read_text(encoding="utf-8")
    assert top["source"] == SEED.name and "33,023" in top["text"]
    assert text[top["start"] : top["end"]] == top["text"]
    assert "33,023" in text[top["highlight"][0] : top["highlight"][1]]


def test_api_matches_cli_json(client, web):
    question = "What was the bilateral trade volume in 2020?"
    api = client.predict(question, 5, "hybrid", api_name="/ask")
    cli = subprocess.run([*QA, "ask", question, *web["where"], "--json"], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    assert api == json.loads(cli.stdout)


def test_chat_off_topic_says_not_found_and_on_topic_cites(client):
    from qa.reply import NOT_FOUND

    history = client.predict("What is the capital of France?", [], 5, "hybrid", api_name="/chat")[1]
    assert NOT_FOUND in json.dumps(history[-1]["content"], ensure_ascii=False)
    history = client.predict("How much has Taiwan invested in Japan?", [], 5, "hybrid", api_name="/chat")[1]
    reply = json.dumps(history[-1]["content"])
    assert "qa-card" in reply and "[1]" in reply and SEED.name in reply and "<mark>" in reply
    assert "9.22 billion" in reply


def test_api_error_is_clear(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="empty"):
        client.predict("   ", 5, "hybrid", api_name="/ask")


# ---------------------------------------------------------------- browser

@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: run `make test` (it installs it) or scripts/install-system-deps.sh")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    yield from _page(browser, server)


def _page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.outside, page.dialogs = [], []
    page.on("request", lambda r: page.outside.append(r.url)
            if not r.url.startswith((server["url"], "data:", "blob:")) else None)
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    page.goto(server["url"])
    page.wait_for_selector("#question textarea", timeout=60_000)
    yield page
    context.close()


def _pick(page, name: str) -> None:
    """Choose a document in the documents panel's drop-down."""
    box = page.locator("#pick input")
    box.scroll_into_view_if_needed()
    box.click()
    box.fill(name)
    page.wait_for_selector(f"[role=option][aria-label='{name}']", state="attached")
    box.press("Enter")
    page.wait_for_function(f"document.querySelector('#pick input').value == '{name}'")


def _ask(page, question: str, answers_before: int | None = None) -> None:
    before = page.locator(".qa-answer").count() if answers_before is None else answers_before
    page.fill("#question textarea", question)
    page.click("#ask")
    page.wait_for_function(f"document.querySelectorAll('.qa-answer').length > {before}", timeout=60_000)


def test_browser_question_shows_cited_highlight_and_context(page, tmp_path_factory):
    _ask(page, "How much has Taiwan invested directly in Japan?")
    first = page.locator(".qa-cite").first
    assert SEED.name in first.locator(".qa-head").inner_text()
    assert "9.22 billion" in first.locator(".qa-text mark").inner_text()
    context = first.locator("details.qa-context")
    assert not context.evaluate("d => d.open")
    context.locator("summary").click()
    assert context.evaluate("d => d.open")
    assert "9.22 billion" in context.inner_text() and len(context.inner_text()) > len(first.locator(".qa-text").inner_text())
    # A follow-up carries the topic over.
    _ask(page, "what about Japan's investment in Taiwan?")
    assert page.locator(".qa-answer").count() == 2
    _ask(page, "What is the recipe for banana bread?")
    assert "could not find" in page.locator(".qa-answer").last.inner_text()
    assert page.outside == [] and page.dialogs == []
    # The README's screenshot: a fresh conversation, one answered question, its source open beside the chat.
    page.get_by_role("button", name="New conversation").click()
    page.wait_for_function("document.querySelectorAll('.qa-answer').length == 0")
    _ask(page, "What was the bilateral trade volume between Japan and Taiwan in 2020?", answers_before=0)
    page.locator(".qa-card .qa-open").click()
    page.wait_for_selector("#viewer #qa-view-passage mark", timeout=30_000)
    page.wait_for_timeout(300)
    # Written into the source tree only when asked (QA_SCREENSHOT=docs/screenshot.png), so that a test run leaves
    # `git status` clean; the file is looked at after every run either way.
    target = Path(os.environ.get("QA_SCREENSHOT") or tmp_path_factory.mktemp("shots") / "screenshot.png")
    page.screenshot(path=str(target))
    assert target.stat().st_size > 10_000


def test_browser_answer_card_first_examples_follow_ups_and_closest(page):
    # A newcomer sees what is loaded and three questions drawn from it; one click answers.
    page.wait_for_selector("#example-0", state="visible")
    assert page.locator("#loaded").inner_text().strip() == f"1 document loaded: {SEED.name}"
    examples = [page.locator(f"#example-{n}").inner_text() for n in range(3)]
    assert all(e.startswith("What does the document say about") for e in examples)
    page.click("#example-0")
    page.wait_for_function("document.querySelectorAll('.qa-answer').length == 1", timeout=60_000)
    assert page.locator(".qa-answer").first.locator(".qa-card mark").count() == 1  # answered, not "not found"
    # The answer card comes first, quoting the answering sentence, with a numbered source chip.
    _ask(page, "How much has Taiwan invested directly in Japan?")
    reply = page.locator(".qa-answer").last
    card = reply.locator(".qa-card")
    assert "9.22 billion" in card.locator("mark").inner_text() and "[1]" in card.inner_text()
    assert reply.evaluate("r => r.firstElementChild.classList.contains('qa-card')")
    assert reply.locator(".qa-cite").first.get_attribute("id") == "qa-src-1"
    assert "chars" not in reply.inner_text() and "score" not in reply.inner_text()
    # The chat is scrolled to the new question, its reply starting right below, not to the reply's bottom.
    page.wait_for_function("""() => { const log = document.querySelector('#chat [role=log]');
        const a = [...document.querySelectorAll('#chat .qa-answer')].pop();
        if (log.scrollHeight <= log.clientHeight + 1) return false;  // by now two replies overflow the box
        const top = a.getBoundingClientRect().top - log.getBoundingClientRect().top;
        return top >= 0 && top <= 200; }""", timeout=10_000)
    # "Open" shows the document beside the chat, scrolled to the passage, the answering sentence marked.
    card.locator(".qa-open").click()
    page.wait_for_selector("#viewer .qa-view", timeout=30_000)
    assert "9.22 billion" in page.locator("#viewer #qa-view-passage mark").inner_text()
    assert SEED.name in page.locator("#viewer .qa-head").inner_text()
    assert page.locator("#page-view").is_hidden()  # a text file has no page to draw
    # A follow-up is joined to the previous question only, and can be searched as typed.
    _ask(page, "What is the meal allowance in Tokyo?")
    _ask(page, "Who wrote this message?")
    _ask(page, "Who is the author of it?")
    note = page.locator(".qa-answer").last.locator(".qa-note").first.inner_text()
    assert note == "Searched for: Who wrote this message? Who is the author of it?"
    page.click("#literal")
    page.wait_for_function("document.querySelectorAll('.qa-answer').length == 6", timeout=60_000)
    assert page.locator(".qa-answer").last.locator(".qa-note").count() == 0 or \
        "Searched for" not in page.locator(".qa-answer").last.inner_text()
    # Nothing answers: said so, and the closest passages are one click away, marked as low confidence.
    _ask(page, "What is the recipe for banana bread?")
    assert "could not find" in page.locator(".qa-answer").last.inner_text()
    page.click("#closest")
    page.wait_for_function("document.querySelectorAll('.qa-answer').length == 8", timeout=60_000)
    last = page.locator(".qa-answer").last
    assert "Low confidence" in last.locator(".qa-warn").inner_text() and last.locator(".qa-cite").count() >= 1
    assert last.locator(".qa-card").count() == 0
    # The question box has an accessible name.
    assert page.get_by_label("Your question").count() >= 1
    # The conversation survives a reload.
    replies = page.locator(".qa-answer").count()
    page.reload()
    page.wait_for_function(f"document.querySelectorAll('.qa-answer').length == {replies}", timeout=60_000)
    assert "Low confidence" in page.locator(".qa-answer").last.inner_text()
    # A new conversation is kept too: a reload does not bring the old one back.
    page.get_by_role("button", name="New conversation").click()
    page.wait_for_function("document.querySelectorAll('.qa-answer').length == 0", timeout=30_000)
    page.reload()
    page.wait_for_selector("#example-0", state="visible")
    page.wait_for_timeout(2_000)  # the stored conversation is restored by then (within 0.2 s here)
    assert page.locator(".qa-answer").count() == 0
    assert page.outside == [] and page.dialogs == []


def _axe(page) -> list[str]:
    """axe-core's serious and critical violations on the page as it is now (WCAG 2.2 A and AA rules)."""
    if not AXE.is_file():
        pytest.fail("axe-core is missing: run `make test` (it installs it) or scripts/install-system-deps.sh")
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("""async () => await axe.run(document, {resultTypes: ['violations'],
        runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa', 'best-practice']}})""")
    return [f"{v['impact']} {v['id']}: {v['help']} at {[n['target'] for n in v['nodes'][:3]]}"
            for v in result["violations"] if v["impact"] in ("serious", "critical")]


@pytest.mark.parametrize("width", [1280, 390])
def test_browser_accessibility_and_phone_width(browser, server, width):
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    page.goto(server["url"])
    page.wait_for_selector("#example-0", state="visible", timeout=60_000)
    _ask(page, "What was the bilateral trade volume between Japan and Taiwan in 2020?")
    page.locator(".qa-card .qa-open").click()
    page.wait_for_selector("#viewer .qa-view", timeout=30_000)
    assert page.evaluate("document.documentElement.scrollWidth") <= width  # no sideways scrolling
    assert _axe(page) == []
    # Messages are named by their answer, not by their HTML; the reply is announced by its answer sentence.
    names = page.evaluate("() => [...document.querySelectorAll('#chat [aria-label]')].map(e => e.getAttribute('aria-label'))")
    assert not [n for n in names if "<" in n or len(n) > 400], names
    assert page.locator("#qa-announce").inner_text().startswith("Answer: As Japan’s fourth largest trading partner")
    # Keyboard: "/" puts the cursor in the question box, and a visible focus ring shows where it is.
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement === document.querySelector('#question textarea')")
    page.keyboard.press("Tab")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"
    context.close()


def test_browser_upload_pdf_then_ask_about_it(page, server, browser, tmp_path):
    _upload_then_ask(page, server, browser, tmp_path)


def test_browser_upload_and_removal_with_the_index_in_postgresql(browser, pg_server, tmp_path):
    for page in _page(browser, pg_server):
        _upload_then_ask(page, pg_server, browser, tmp_path)


def _upload_then_ask(page, server, browser, tmp_path):
    pdf = tmp_path / "Field Report (final).pdf"
    make_pdf(pdf, ["Introduction to the survey.", "The expedition counted 412 emperor penguins on the ice shelf."])
    notes = tmp_path / "harbour notes.md"
    notes.write_text("# Harbour notes\n\nThe harbour master counted 37 fishing boats at dawn.\n", encoding="utf-8")
    page.set_input_files("#upload input[type=file]", [str(pdf), str(notes)])  # two files at once
    page.wait_for_function("document.querySelector('#status textarea').value.includes('added')", timeout=120_000)
    status = page.input_value("#status textarea")
    assert "saved Field_Report_final.pdf" in status and "saved harbour_notes.md" in status
    assert (server["corpus"] / "Field_Report_final.pdf").is_file()
    assert "Field_Report_final.pdf" in page.locator("#documents").inner_text()
    assert "harbour_notes.md" in page.locator("#documents").inner_text()
    _ask(page, "How many emperor penguins did the expedition count?")
    head = page.locator(".qa-answer").last.locator(".qa-cite").first
    assert "Field_Report_final.pdf" in head.inner_text() and "page 2" in head.inner_text()
    assert "412 emperor penguins" in head.locator(".qa-text mark").inner_text()
    # A PDF source opens as its page, drawn, with the sentence marked.
    page.locator(".qa-answer").last.locator(".qa-card .qa-open").click()
    page.wait_for_selector("#page-view img", timeout=30_000)
    assert "page 2" in page.locator("#page-view").inner_text()
    assert page.locator("#page-view img").evaluate("i => i.naturalWidth") > 300
    assert "412 emperor penguins" in page.locator("#viewer #qa-view-passage mark").inner_text()
    _ask(page, "How many fishing boats did the harbour master count?")
    assert "37 fishing boats" in page.locator(".qa-answer").last.locator(".qa-card mark").inner_text()
    # Removing from the index keeps the file; putting back indexes it again; deleting asks first.
    _pick(page, "harbour_notes.md")
    page.click("#aside")
    page.wait_for_function("document.querySelector('#status textarea').value.startsWith('remove from the index')",
                           timeout=120_000)
    assert (server["corpus"] / ".not-indexed" / "harbour_notes.md").is_file()
    assert not (server["corpus"] / "harbour_notes.md").exists()
    assert "set aside" in page.locator("#documents").inner_text()
    _ask(page, "How many fishing boats did the harbour master count?")
    assert "harbour_notes.md" not in page.locator(".qa-answer").last.inner_text()
    _pick(page, "harbour_notes.md")
    page.click("#back")
    page.wait_for_function("document.querySelector('#status textarea').value.startsWith('put back')",
                           timeout=120_000)
    assert (server["corpus"] / "harbour_notes.md").is_file()
    _pick(page, "harbour_notes.md")
    page.click("#delete")
    page.wait_for_selector("#confirm", state="visible")
    assert "cannot be undone" in page.locator("#confirm").inner_text()
    page.click("#delete-no")
    page.wait_for_selector("#confirm", state="hidden")
    assert (server["corpus"] / "harbour_notes.md").is_file()
    page.click("#delete")
    page.click("#delete-yes")
    page.wait_for_function("document.querySelector('#status textarea').value.startsWith('delete')", timeout=120_000)
    assert not (server["corpus"] / "harbour_notes.md").exists()
    page.set_input_files("#upload input[type=file]", str(notes))  # back for the checks below
    page.wait_for_function("document.querySelector('#status textarea').value.includes('saved harbour_notes.md')",
                           timeout=120_000)
    page.wait_for_function("document.querySelector('#documents').innerText.includes('harbour_notes.md')",
                           timeout=60_000)
    # A file dropped while another is being indexed is queued, not lost; the chat answers meanwhile.
    first, second = tmp_path / "tide table.md", tmp_path / "lamp log.md"
    # The first is long enough (about 2,000 sentences) to keep the index busy when the second arrives.
    log = "".join(f"On day {n} the tide rose {n % 7} metres and the keeper noted gull number {n}.\n\n"
                  for n in range(2000))
    first.write_text("# Tides\n\nThe spring tide rose 4.2 metres at the north pier.\n\n" + log, encoding="utf-8")
    second.write_text("# Lamp\n\nThe lamp burned 311 litres of oil that winter.\n", encoding="utf-8")
    page.set_input_files("#upload input[type=file]", str(first))
    page.wait_for_function("document.querySelector('#status textarea').value.startsWith('saved tide_table.md')",
                           timeout=60_000)
    page.set_input_files("#upload input[type=file]", str(second))
    _ask(page, "How many fishing boats did the harbour master count?")
    page.wait_for_function("['tide_table.md', 'lamp_log.md'].every(n => "
                           "document.querySelector('#documents').innerText.includes(n))", timeout=120_000)
    assert (server["corpus"] / "tide_table.md").is_file() and (server["corpus"] / "lamp_log.md").is_file()
    # A reload, and a second tab, list what was added.
    page.reload()
    page.wait_for_function("document.querySelector('#documents') && "
                           "document.querySelector('#documents').innerText.includes('lamp_log.md')", timeout=60_000)
    other = browser.new_context().new_page()
    other.goto(server["url"])
    other.wait_for_function("document.querySelector('#documents') && "
                            "document.querySelector('#documents').innerText.includes('harbour_notes.md')",
                            timeout=60_000)
    assert "Field_Report_final.pdf" in other.locator("#documents").inner_text()
    assert other.locator("#loaded").inner_text().startswith("5 documents loaded")
    other.context.close()


def test_browser_hostile_document_renders_as_text(page, tmp_path):
    hostile = tmp_path / "payload.md"
    hostile.write_text(HOSTILE, encoding="utf-8")
    page.set_input_files("#upload input[type=file]", str(hostile))
    page.wait_for_function("document.querySelector('#status textarea').value.includes('payload.md') && "
                           "document.querySelector('#status textarea').value.includes('added')",
                           timeout=120_000)
    _ask(page, "What does the payload document say about the aurora station <img src=x onerror=alert(1)>?",
         answers_before=0)
    answer = page.locator(".qa-answer").last
    text = answer.inner_text()
    assert "<script>" in text and "onerror" in text and "![tracker]" in text
    assert page.evaluate("window.__pwned") is None
    assert answer.locator("img, script, iframe, a[href^='javascript']").count() == 0
    assert page.locator("#chat img[src='x'], #chat iframe").count() == 0
    assert "$x^2$" in text  # no maths rendering of dollar signs either
    page.wait_for_timeout(500)
    assert page.dialogs == [] and page.outside == []
