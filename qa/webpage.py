"""The web chat's style sheet and page script: plain text, kept apart from the app that serves them."""

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
    document.querySelectorAll('#chat [aria-live]:not([aria-live=off])')
      .forEach((el) => el.setAttribute('aria-live', 'off'));
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
# After a reply: scroll the chat to the question just asked, the start of its reply right below it, not to the
# bottom of the reply's last source.
SCROLL_TO_REPLY = """() => { setTimeout(() => { const all = document.querySelectorAll('#chat .qa-question');
  if (all.length) all[all.length - 1].scrollIntoView({block: 'start'}); }, 50); }"""
