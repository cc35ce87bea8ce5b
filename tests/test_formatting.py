"""Formatting: the Markdown subset, and XSS payloads that must never run or become markup."""

import json
from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from playwright.sync_api import expect
from websockets.sync.client import connect

from core.formatting import _is_plain, markdown, render
from helpers import VISIBLE_LIST, ChatClient, Person, token_issued_at

TAGS = {"p", "br", "em", "strong", "s", "code", "pre", "blockquote", "ul", "ol", "li", "a"}
LINK_ATTRIBUTES = {"href", "target", "rel"}

# From OWASP's XSS filter evasion cheat sheet, and what Markdown adds: links with javascript: and
# data: targets, markup inside code spans and fences, unbalanced fences and backticks.
PAYLOADS = [
    "<script>alert('XSS')</script>",
    "<SCRIPT SRC=http://xss.rocks/xss.js></SCRIPT>",
    "<IMG SRC=\"javascript:alert('XSS');\">",
    "<IMG SRC=JaVaScRiPt:alert('XSS')>",
    "<IMG SRC=`javascript:alert(\"RSnake says, 'XSS'\")`>",
    '<a onmouseover="alert(document.cookie)">xxs link</a>',
    '<IMG """><SCRIPT>alert("XSS")</SCRIPT>"\\>',
    "<IMG SRC=# onerror=\"alert('xxs')\">",
    "<img src=x onerror=&#x61;&#x6C;&#x65;&#x72;&#x74;&#x28;&#x27;&#x58;&#x53;&#x53;&#x27;&#x29;>",
    "<IMG SRC=\"jav&#x09;ascript:alert('XSS');\">",
    "<BODY ONLOAD=alert('XSS')>",
    "<svg/onload=alert('XSS')>",
    "<iframe src=\"javascript:alert('XSS');\"></iframe>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)></style></mglyph></table>",
    "<div style=\"background-image: url(javascript:alert('XSS'))\">",
    '<object data="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg=="></object>',
    '<meta http-equiv="refresh" content="0;url=javascript:alert(1);">',
    '<<SCRIPT>alert("XSS");//\\<</SCRIPT>',
    '"><script>alert(1)</script>',
    "[click](javascript:alert(1))",
    "[click](JAVASCRIPT:alert(1))",
    "[click](  javascript:alert(1)  )",
    "[click](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "[click](vbscript:msgbox(1))",
    "<javascript:alert(1)>",
    "![x](javascript:alert(1))",
    '[x](http://example.com "onmouseover=alert(1)")',
    "`<img src=x onerror=alert(1)>`",
    "```\n<script>alert(1)</script>\n```",
    "```html\n<img src=x onerror=alert(1)>",
    "``` unbalanced ` fence <b>bold</b>",
    "**<script>alert(1)</script>**",
    "> <img src=x onerror=alert(1)>",
    "- <a href=javascript:alert(1)>x</a>",
    "http://example.com/<script>alert(1)</script>",
    "&lt;script&gt;alert(1)&lt;/script&gt;",
]


class Elements(HTMLParser):
    """Every start tag and its attributes, in order."""

    def __init__(self, html):
        super().__init__()
        self.found = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.found.append((tag, dict(attrs)))


@pytest.mark.parametrize("payload", PAYLOADS)
def test_no_payload_becomes_markup_beyond_the_subset(payload):
    for tag, attributes in Elements(markdown(payload)).found:
        assert tag in TAGS
        if tag == "a":
            assert set(attributes) == LINK_ATTRIBUTES
            assert attributes["href"].startswith(("http://", "https://", "mailto:"))
            assert attributes["rel"] == "noopener noreferrer nofollow"
        elif tag == "ol":
            assert set(attributes) <= {"start"}
        else:
            assert attributes == {}


@pytest.mark.parametrize(
    ("text", "html"),
    [
        ("plain text", None),
        ("a & b < c", None),  # Plain, even where the parser had to escape it.
        ("*em* **strong** ~~gone~~", "<p><em>em</em> <strong>strong</strong> <s>gone</s></p>"),
        ("`a <b> c`", "<p><code>a &lt;b&gt; c</code></p>"),
        ("line one\nline two", "<p>line one<br>\nline two</p>"),
        ("```\nx = 1\n```", "<pre><code>x = 1\n</code></pre>"),
        ("> quoted", "<blockquote>\n<p>quoted</p>\n</blockquote>"),
        ("- a\n- b", "<ul>\n<li>a</li>\n<li>b</li>\n</ul>"),
        ("2. b\n3. c", '<ol start="2">\n<li>b</li>\n<li>c</li>\n</ol>'),
        ("# not a heading", None),
        ("<b>raw</b>", None),  # Raw HTML is text.
    ],
)  # fmt: skip
def test_the_subset_renders_as_a_chat_expects(text, html):
    assert render(text) == html


def test_links_and_bare_urls_open_safely_in_a_new_tab():
    rel = 'target="_blank" rel="noopener noreferrer nofollow"'
    assert render("[docs](https://example.com/a?b=1&c=2)") == (
        f'<p><a href="https://example.com/a?b=1&amp;c=2" {rel}>docs</a></p>'
    )
    assert render("see https://example.com.") == (
        f'<p>see <a href="https://example.com" {rel}>https://example.com</a>.</p>'
    )
    assert render("mail a@example.com") == (
        f'<p>mail <a href="mailto:a@example.com" {rel}>a@example.com</a></p>'
    )


# ---- In a real browser -------------------------------------------------------------------------


@pytest.fixture
def app_config(app_config):
    """Room for the whole corpus in one burst: as messages, edits and replies."""
    app_config["CHAT_MESSAGE_BURST"] = 300
    app_config["CHAT_FRAME_BURST"] = 500
    return app_config


SHOWN_MARKUP = """() => {
    const tags = new Set(__TAGS__);
    const found = [];
    for (const element of document.querySelectorAll(".messages .text *")) {
        const tag = element.tagName.toLowerCase();
        const mention = tag === "span" && element.className === "mention";
        if (!tags.has(tag) && !mention) found.push(tag);
        for (const { name } of element.attributes) {
            const allowed = tag === "a" ? ["href", "target", "rel"] : tag === "ol" ? ["start"]
                : mention ? ["class", "data-user-id"] : [];
            if (!allowed.includes(name)) found.push(`${tag}[${name}]`);
        }
        if (tag === "a" && !/^(https?:|mailto:)/.test(element.getAttribute("href"))) {
            found.push(`a[href=${element.getAttribute("href")}]`);
        }
    }
    // A reply's quote of its parent is text only.
    for (const element of document.querySelectorAll(".messages .reply-excerpt *")) {
        found.push(`excerpt ${element.tagName.toLowerCase()}`);
    }
    return found;
}""".replace("__TAGS__", json.dumps(sorted(TAGS)))

# Before the page loads: the tab is hidden (so every message is notified) and each
# notification made is recorded; the real constructor still makes it.
CAPTURE_NOTIFICATIONS = """
window.__notifications = [];
window.Notification = new Proxy(window.Notification, {
    construct(target, args) {
        const [title, options] = args;
        window.__notifications.push({ title, body: options?.body, type: typeof options?.body });
        return Reflect.construct(target, args);
    },
});
Object.defineProperty(Document.prototype, "hidden", { get: () => true });
Object.defineProperty(Document.prototype, "visibilityState", { get: () => "hidden" });
"""
NOTIFICATION_CHARS = 120  # static/js/notify.js


def truncated(text):
    """A notification's body, as notify.js cuts it (in code points)."""
    return text if len(text) <= NOTIFICATION_CHARS else text[: NOTIFICATION_CHARS - 1] + "…"


def saved(chat, frame, kind):
    """Send ``frame``; the frame of type ``kind`` that answers its client_id."""
    chat.send(frame)
    while True:
        answer = chat.recv()
        if answer.get("client_id") == frame["client_id"]:
            assert answer["type"] == kind, answer
            return answer


@pytest.mark.browser
def test_the_corpus_in_a_browser_runs_nothing_and_shows_the_text(
    app, browser, gunicorn_server, make_user
):
    reader = Person(browser, gunicorn_server.url)
    reader.context.grant_permissions(["notifications"])
    reader.context.add_init_script(CAPTURE_NOTIFICATIONS)
    reader.register("reader@example.com")
    me = int(reader.page.locator("#chat").get_attribute("data-user-id"))
    # Every message is to become a notification: general tells all of them, not only mentions.
    reader.page.get_by_role("button", name="Room menu").click()
    reader.page.get_by_role("menuitem", name="Notifications").click()
    levels = reader.page.get_by_role("dialog", name="Notifications")
    levels.get_by_label("All messages").check()
    levels.get_by_role("button", name="Save").click()
    expect(levels).to_be_hidden()
    corpus = [
        *PAYLOADS,
        f"<@{me}> <img src=x onerror=alert(1)>",  # A mention, then markup: both as text.
        f'<span class="mention" data-user-id="{me}" onclick="alert(1)">@reader</span>',
        f"[<@{me}>](javascript:alert(1))",
        "**formatted** and https://example.com",
    ]
    writer, _ = make_user("writer@example.com")
    host = gunicorn_server.url.removeprefix("http://")
    with connect(f"ws://{host}/ws?token={token_issued_at(app, writer)}", open_timeout=5) as ws:
        chat = ChatClient(ws)
        chat.recv_type("hello")
        posted = [
            saved(chat, {"type": "message", "text": payload, "client_id": f"x{n}"}, "message")
            for n, payload in enumerate(corpus)
        ]
        # Each payload again through an edit, and quoted by a reply.
        for n, payload in enumerate(corpus):
            draft = saved(
                chat, {"type": "message", "text": f"draft {n}", "client_id": f"d{n}"}, "message"
            )
            edit = {"type": "edit", "id": draft["id"], "text": payload, "client_id": f"e{n}"}
            saved(chat, edit, "message_changed")
        replies = [
            saved(chat, {"type": "message", "text": f"reply {n}", "reply_to": parent["id"],
                         "client_id": f"r{n}"}, "message")
            for n, parent in enumerate(posted)
        ]  # fmt: skip
    shown = reader.page.locator(f"{VISIBLE_LIST} .message > .text")
    count = len(corpus)
    expect(shown).to_have_count(3 * count)
    expect(reader.page.locator(f"{VISIBLE_LIST} .message time.edited")).to_have_count(count)
    assert reader.page.evaluate(SHOWN_MARKUP) == []
    assert reader.dialogs == []  # No alert() ran...
    assert reader.problems == []  # ...and nothing tried: a blocked handler is a CSP error.
    # Raw HTML stays the text it was typed as (unless Markdown's own ` or \\ changed it).
    texts = shown.all_text_contents()
    assert texts[count : 2 * count] == texts[:count]  # An edit shows exactly what a post does.
    raw = [p for p in PAYLOADS if p.startswith("<") and not set("`\\") & set(p)]
    assert len(raw) > 15
    for payload in raw:
        if not payload.startswith("<javascript:"):  # An autolink, refused: its <> go.
            assert payload in texts
    mention = reader.page.locator(f"{VISIBLE_LIST} .message > .text .mention")
    expect(mention.first).to_have_text("@reader")
    excerpts = reader.page.locator(f"{VISIBLE_LIST} .reply-excerpt")
    expect(excerpts).to_have_text([reply["reply_to"]["excerpt"] for reply in replies])
    assert "@reader <img src=x onerror=alert(1)>" in excerpts.all_text_contents()
    last = shown.nth(count - 1)
    expect(last.locator("strong")).to_have_text("formatted")
    link = last.get_by_role("link", name="https://example.com")
    expect(link).to_have_attribute("href", "https://example.com/")
    expect(link).to_have_attribute("target", "_blank")
    expect(link).to_have_attribute("rel", "noopener noreferrer nofollow")
    # Every message was notified (the tab is hidden), its body plain text: the text as sent,
    # mentions as @name.
    notified = reader.page.evaluate("window.__notifications")
    assert len(notified) == 3 * count
    assert {note["type"] for note in notified} == {"string"}
    bodies = [note["body"] for note in notified]
    for payload in corpus:
        assert truncated(payload.replace(f"<@{me}>", "@reader")) in bodies
    titles = {note["title"] for note in notified}
    assert titles == {"writer in #general", "writer mentioned you in #general"}
    assert reader.dialogs == []
    assert reader.problems == []
    reader.context.close()


PLAINISH = st.text(
    alphabet=st.sampled_from(list("ab xyzAZ019.,;:?'\"é-*_`[]<>!&#+()@/~\n\t\u00a0wh.tpsm")),
    max_size=40,
) | st.text(alphabet=st.sampled_from(list("0123456789.: abcomwh/@-")), max_size=30)


@settings(max_examples=3000, deadline=None)
@given(PLAINISH)
def test_the_shortcut_for_plain_text_is_what_the_parser_says(text):
    # render() skips the parser for text no rule can change: it must agree with it exactly.
    if _is_plain(text):
        assert markdown(text) == f"<p>{text}</p>"
        assert render(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "Hello there, how are you?",
        "12345.3:1764800000000000000:12",  # What bench/load.py sends.
        "Ça va ? Très bien.",
        'say "hi"',
        "pi is 3.14, ok",
    ],
)
def test_plain_chat_lines_take_the_shortcut(text):
    assert _is_plain(text)
    assert render(text) is None
    assert markdown(text) == f"<p>{text}</p>"
